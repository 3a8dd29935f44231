"""The ASGI application: ``create_app(settings)`` builds one, ``app`` is the one uvicorn serves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from importlib.metadata import version

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol
from litestar.types import ControllerRouterHandler, LifespanHook, Middleware

from service.database.engines import DatabaseConfig, database_config, open_database
from service.database.schema import prepare_schema
from service.database.statements import Database
from service.heroes.controller import RESOURCE as HEROES
from service.http import decoding, docs
from service.http.errors import EXCEPTION_HANDLERS
from service.http.idempotency import KEY_RETENTION_STATE
from service.http.limits import docs_budget, rate_limit
from service.http.openapi import complete_document
from service.http.proxies import TrustedProxies
from service.http.request_line import strict_request_line
from service.http.resources import Resource, description, error_table, response_headers
from service.http.security import api_key_required
from service.ops.health import HEALTH
from service.ops.metrics import prometheus
from service.ops.requests import ServiceApp, logging_config
from service.settings import Settings, SettingsError, comma_list
from service.teams.controller import RESOURCE as TEAMS

ERRORS_OVERVIEW = """\
Every error answers with the same JSON body, `Error`: the HTTP `status_code`, a `detail` sentence
and, for invalid input, `extra`: one entry per wrong field, naming it (`key`), where it was
(`source`: body, query, path or header) and what is wrong with it (`message`). A request whose
`Accept` asks for `application/problem+json` gets the same error as RFC 9457 problem details
(`Problem`). Each operation documents every status it can answer, whatever the service's settings:
401 on writes (when API_KEY is set), 429 under the rate limit (RATE_LIMIT_PER_MINUTE).
"""
"""The API's description after the resources' overviews."""


UNLIMITED_PATHS = ["/health", "/metrics", "/schema", "/docs", "/redoc"]
"""Paths the rate limit leaves alone, so monitoring and docs keep working under a flood (the
docs have a budget of bytes of their own, ``DOCS_BYTES_PER_MINUTE``)."""

RESOURCES: list[Resource] = [HEROES, TEAMS, HEALTH]
"""What the app serves; a new resource is a folder beside ``service/heroes/`` and a line here."""


def create_app(
    settings: Settings | None = None, *, resources: Sequence[Resource] = RESOURCES
) -> Litestar:
    """Build the application for ``settings`` (default: read from the environment).

    ``resources``: what it serves, ``RESOURCES`` by default. Two of them answering one
    exception differently is an error here (``ErrorTableClash``), not a silent override.
    """
    settings = Settings.from_env() if settings is None else settings
    database = database_config(settings)
    db = open_database(database, settings)
    key_retention = timedelta(seconds=settings.idempotency_key_retention_seconds)
    handlers: list[ControllerRouterHandler] = [
        handler for resource in resources for handler in resource.route_handlers
    ]
    exception_handlers = error_table(EXCEPTION_HANDLERS, resources)
    middleware: list[Middleware] = []
    additions = [add for resource in resources if (add := resource.complete_document)]
    on_startup: list[LifespanHook] = [
        partial(prepare_schema, database),
        partial(
            complete_document,
            additions=additions,
            api_key=bool(settings.api_keys),
            unlimited=UNLIMITED_PATHS,
        ),
    ]
    on_shutdown: list[LifespanHook] = [db.close]
    # The first middleware is the outermost: metrics count every answer, 429s included. The
    # request line's checks and the API key come last, innermost, where a guard would run.
    if settings.metrics:
        metrics_middleware, metrics_controller = prometheus()
        middleware.append(metrics_middleware)
        handlers.append(metrics_controller)
    if settings.rate_limit_per_minute:
        limit, counter = rate_limit(settings, exclude=UNLIMITED_PATHS)
        middleware.append(limit)
        on_shutdown.append(counter.close)
    middleware.append(strict_request_line)
    if settings.api_keys:
        middleware.append(api_key_required(settings.api_keys))
    plugins: list[PluginProtocol] = [SQLAlchemyPlugin(config=database)]
    if settings.tracing:
        plugins += tracing(database)
    docs_pages = docs.render_plugins()
    docs_middleware: list[Middleware] = []
    if settings.docs_bytes_per_minute:
        budget, bytes_sent = docs_budget(settings)
        docs_middleware.append(budget)
        on_shutdown.append(bytes_sent.close)
    return ServiceApp(
        served_hosts=comma_list(settings.allowed_hosts),
        access_log=settings.access_log,
        proxies=TrustedProxies(settings.forwarded_allow_ips, settings.forwarded_header),
        route_handlers=[*handlers, docs.DocsAliases],
        plugins=plugins,
        signature_namespace={"Database": Database},
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        dependencies={"db": Provide(lambda: db, use_cache=True, sync_to_thread=False)},
        # Not a second dependency: Litestar resolves two in a task group, on every request.
        state=State({KEY_RETENTION_STATE: key_retention}),
        middleware=middleware,
        exception_handlers=exception_handlers,
        request_class=decoding.StrictRequest,
        request_max_body_size=settings.max_body_size,
        cors_config=cors(settings, resources),
        logging_config=logging_config(settings),
        openapi_config=OpenAPIConfig(
            title="Hero service",
            version=version("hero-service"),
            description=description(resources, ERRORS_OVERVIEW),
            tags=[resource.tag for resource in resources],
            use_handler_docstrings=True,
            path="/schema",
            openapi_router=docs.router(docs_pages, docs_middleware),
            render_plugins=docs_pages,
        ),
    )


SERVICE_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Policy",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]
"""Response headers the service sends of its own, on any route (the resources document theirs)."""


def cors(settings: Settings, resources: Sequence[Resource]) -> CORSConfig | None:
    """Cross-origin access for the origins in ``CORS_ALLOW_ORIGINS``, if any.

    A browser client may read the service's own response headers and every one the resources'
    operations document (``ETag``, ``Location``, ``Link``...).
    """
    origins = comma_list(settings.cors_allow_origins)
    if not origins:
        return None
    exposed = [*SERVICE_HEADERS, *response_headers(resources)]
    return CORSConfig(allow_origins=origins, expose_headers=exposed)


def tracing(database: DatabaseConfig) -> list[PluginProtocol]:
    """OpenTelemetry spans for every request and every statement (see ``service.ops.tracing``)."""
    try:
        from service.ops.tracing import tracing_plugins  # noqa: PLC0415
    except ImportError as exc:
        raise SettingsError(
            "TRACING: needs the OpenTelemetry packages: pip install 'hero-service[otel]'"
        ) from exc
    return tracing_plugins(database.get_engine())


app = create_app()
