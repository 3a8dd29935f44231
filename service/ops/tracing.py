"""OpenTelemetry traces for ``TRACING=true``; imported only then, from the ``otel`` extra.

Each request gets a server span, named after its route template (``GET /heroes/{hero_id}``,
never the path with the id) once Litestar has routed it, with the HTTP attributes of the
current semantic conventions (``http.request.method``, ``url.path``, ``http.route``,
``http.response.status_code``, ...). Each SQL statement gets a client span, a child of the
request's, from opentelemetry-instrumentation-sqlalchemy on the app's engine:
``service.database.statements`` sends every statement through SQLAlchemy while the engine has
listeners, and runs the ones it moves to a thread in the request's context. A ``traceparent``
header makes the request part of the caller's trace.

The SDK is set up from the standard ``OTEL_*`` variables, each read by the SDK component it
configures: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the resource),
``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the
other ``OTEL_EXPORTER_OTLP_*`` (the exporter), ``OTEL_BSP_*`` (batching), ``OTEL_PROPAGATORS``,
``OTEL_SDK_DISABLED``; ``OTEL_TRACES_EXPORTER`` picks the exporters (default ``otlp``, over
HTTP). A process whose tracer provider is already set up (by ``opentelemetry-instrument``, or
a test) keeps its own.

No span holds a statement's parameters: ``db.statement`` is the SQL with its placeholders, and
the instrumentation records nothing else of a statement.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from litestar.plugins import InitPlugin
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_version
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import format_trace_id
from opentelemetry.util.http import sanitize_method
from sqlalchemy.ext.asyncio import AsyncEngine

from service.http.errors import TRACE_ID_KEY
from service.settings import SettingsError, comma_list

if TYPE_CHECKING:
    import sqlalchemy as sa
    from litestar.config.app import AppConfig
    from litestar.plugins import PluginProtocol
    from litestar.types import Message, Scope
    from opentelemetry.trace import Span

SERVER_SPAN_KEY = "hero.server_span"
"""Where the request's server span waits in the ASGI scope to be named after its route."""

OTLP_EXPORTERS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
"""The exporter ``otlp`` stands for, by ``OTEL_EXPORTER_OTLP_PROTOCOL`` (default HTTP)."""


def tracing_plugins(engine: sa.Engine | AsyncEngine) -> list[PluginProtocol]:
    """The plugins that trace every request, and every statement run on ``engine``."""
    _use_current_http_conventions()
    provider = tracer_provider()
    trace_statements(engine, provider)
    config = OpenTelemetryConfig(
        tracer_provider=provider,
        scope_span_details_extractor=_name_before_routing,
        server_request_hook_handler=_remember_server_span,
        # The spans of the ASGI messages (receive the body, send the answer) say nothing the
        # server span does not, and would outnumber the statements' spans.
        exclude_spans=["receive", "send"],
    )
    return [OpenTelemetryPlugin(config), _NameSpansAfterRoutes()]


def tracer_provider() -> trace.TracerProvider:
    """The process's tracer provider, set up from the ``OTEL_*`` variables on first use."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "hero-service"}))
    provider = TracerProvider(resource=resource)
    for exporter in span_exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def span_exporters() -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (``otlp``, ``console``, ``none``, ...)."""
    exporters: list[SpanExporter] = []
    for name in comma_list(os.environ.get("OTEL_TRACES_EXPORTER", "otlp")):
        if name == "none":
            continue
        if name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            name = OTLP_EXPORTERS.get(protocol.strip(), name)  # noqa: PLW2901
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise SettingsError(
                f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed "
                "(the otel extra brings otlp over HTTP, and console)"
            )
        exporters.append(next(iter(found)).load()())
    return exporters


def trace_statements(engine: sa.Engine | AsyncEngine, provider: trace.TracerProvider) -> None:
    """A client span for every statement ``engine`` runs, holding its SQL but no parameter.

    ``EngineTracer`` is what ``SQLAlchemyInstrumentor().instrument(engine=...)`` attaches, without
    that call's process-wide patches: those would trace every engine created afterwards (every
    app's, traced or not) and open a ``connect`` span for each ``Engine.connect``.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    scope = "opentelemetry.instrumentation.sqlalchemy"
    tracer = trace.get_tracer(scope, sqlalchemy_version, provider)
    connections = metrics.get_meter(scope, sqlalchemy_version).create_up_down_counter(
        name="db.client.connections.usage",
        unit="connections",
        description="Connections in the state described by the state attribute.",
    )
    EngineTracer(tracer, sync_engine, connections)  # type: ignore[no-untyped-call]


def _use_current_http_conventions() -> None:
    # The HTTP instrumentation writes the attributes of the stable conventions
    # (http.request.method, url.path, http.response.status_code) only when opted in; the
    # operator's own choice of conventions, if any, is kept.
    opted = comma_list(os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""))
    if not any(name.startswith("http") for name in opted):
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = ",".join([*opted, "http"])


def _method(scope: Scope | dict[str, Any]) -> str:
    method = sanitize_method(str(scope.get("method", "")).strip())
    return "HTTP" if method == "_OTHER" else method


def _name_before_routing(scope: Scope) -> tuple[str, dict[str, Any]]:
    # The semantic conventions' name for a request not routed (yet): its method alone. Litestar's
    # default extractor names it after the raw path, id included, and sets it as http.route.
    return _method(scope), {}


def _remember_server_span(span: Span, scope: dict[str, Any]) -> None:
    scope[SERVER_SPAN_KEY] = span
    context = span.get_span_context()
    if context.is_valid:
        scope[TRACE_ID_KEY] = format_trace_id(context.trace_id)


async def _name_span_after_route(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    span: Span | None = scope.get(SERVER_SPAN_KEY)  # type: ignore[assignment]
    template = scope.get("path_template")
    if span is not None and template is not None and span.is_recording():
        span.update_name(f"{_method(scope)} {template}")
        span.set_attribute(HTTP_ROUTE, template)


class _NameSpansAfterRoutes(InitPlugin):
    """Renames the server span after the route template once Litestar has routed the request."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.before_send.append(_name_span_after_route)
        return app_config
