"""The ASGI application: ``create_app(settings)`` builds one, ``app`` is the one uvicorn serves."""

from __future__ import annotations

from functools import partial
from importlib.metadata import version

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Tag
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ControllerRouterHandler, Guard, LifespanHook, Middleware

from service import decoding
from service.db import database_config, open_database, prepare_schema
from service.errors import EXCEPTION_HANDLERS
from service.heroes.controller import HeroController
from service.openapi import complete_document
from service.ops import HealthController, ServiceApp, add_response_headers, logging_config
from service.security import api_key_guard
from service.settings import Settings, SettingsError, comma_list
from service.sql import Database

DESCRIPTION = """\
The heroes of the SQL tutorial: create, list, read, update and delete them.

Every error answers with the same JSON body, `Error`: the HTTP `status_code`, a `detail` sentence
and, for invalid input, `extra`: one entry per wrong field, naming it (`key`), where it was
(`source`: body, query or path) and what is wrong with it (`message`).
"""


UNLIMITED_PATHS = ["/health", "/metrics", "/schema"]
"""Paths the rate limit leaves alone, so monitoring and docs keep working under a flood."""


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application for ``settings`` (default: read from the environment)."""
    settings = Settings.from_env() if settings is None else settings
    database = database_config(settings)
    db = open_database(database, settings)
    handlers: list[ControllerRouterHandler] = [HeroController, HealthController]
    middleware: list[Middleware] = []
    on_startup: list[LifespanHook] = [
        partial(prepare_schema, database),
        partial(complete_document, api_key=bool(settings.api_key)),
    ]
    guards: list[Guard] = list(decoding.GUARDS)
    if settings.api_key:
        guards.append(api_key_guard(settings.api_key))
    if settings.rate_limit_per_minute:
        limit = RateLimitConfig(("minute", settings.rate_limit_per_minute), exclude=UNLIMITED_PATHS)
        middleware.append(limit.middleware)
    if settings.metrics:
        metrics = prometheus(settings)
        middleware.append(metrics.middleware)
        handlers.append(PrometheusController)
    return ServiceApp(
        served_hosts=comma_list(settings.allowed_hosts),
        access_log=settings.access_log,
        route_handlers=handlers,
        plugins=[SQLAlchemyPlugin(config=database)],
        signature_namespace={"Database": Database},
        on_startup=on_startup,
        on_shutdown=[db.close],
        dependencies={"db": Provide(lambda: db, use_cache=True, sync_to_thread=False)},
        guards=guards,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=decoding.StrictRequest,
        before_send=[add_response_headers],
        request_max_body_size=settings.max_body_size,
        cors_config=cors(settings),
        logging_config=logging_config(settings),
        openapi_config=OpenAPIConfig(
            title="Hero service",
            version=version("hero-service"),
            description=DESCRIPTION,
            tags=[
                Tag(name="heroes", description="The heroes of the SQL tutorial."),
                Tag(name="health", description="Liveness and readiness checks."),
            ],
            use_handler_docstrings=True,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(), RedocRenderPlugin()],
        ),
    )


EXPOSED = ["ETag", "Location", "X-Request-ID", "Retry-After"]
"""Response headers a browser client may read across origins."""


def cors(settings: Settings) -> CORSConfig | None:
    """Cross-origin access for the origins in ``CORS_ALLOW_ORIGINS``, if any."""
    origins = comma_list(settings.cors_allow_origins)
    return CORSConfig(allow_origins=origins, expose_headers=EXPOSED) if origins else None


def prometheus(settings: Settings) -> PrometheusConfig:
    """Request counts and latency histograms per route, for ``/metrics``."""
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError as exc:
        raise SettingsError(
            "METRICS: needs the prometheus-client package: pip install 'hero-service[metrics]'"
        ) from exc
    return PrometheusConfig(app_name="hero_service", prefix="hero_service", group_path=True)


app = create_app()
