"""What operators see: health checks, request ids, the access log, metrics, response headers."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, cast

import msgspec
from litestar import Controller, Litestar, Response, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.logging import LoggingConfig
from litestar.response.base import ASGIResponse
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_405_METHOD_NOT_ALLOWED

from service.errors import REQUEST_ID_KEY, TRACE_ID_KEY, documented_errors
from service.heroes.queries import SELECT_ONE
from service.proxies import TrustedProxies
from service.schemas import Error
from service.settings import Settings
from service.sql import Database

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.config.app import AppConfig
    from litestar.types import (
        HTTPScope,
        LifeSpanReceive,
        LifeSpanScope,
        LifeSpanSend,
        Message,
        Receive,
        Scope,
        Send,
    )

access_logger = logging.getLogger("service.access")

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""Request ids a client may choose; anything else is replaced, so it cannot forge log lines."""
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]
SHUTTING_DOWN = threading.Event()
"""Set when the server begins a graceful shutdown: answers then close their connection."""


class Health(msgspec.Struct):
    """The answer of a health check."""

    status: Annotated[str, msgspec.Meta(examples=["ok"])]


class HealthController(Controller):
    """Liveness and readiness for load balancers and orchestrators."""

    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="checkLive", summary="Process is up", sync_to_thread=False)
    def live(self) -> Health:
        """Answers 200 while the process serves requests; it does not touch the database."""
        return Health("ok")

    @get(
        "/ready",
        operation_id="checkReady",
        summary="Database is reachable",
        responses=documented_errors(503),
    )
    async def ready(self, db: NamedDependency[Database]) -> Response[Health]:
        """Answers 200 when the database answers a query, 503 otherwise."""
        await db.fetch(SELECT_ONE)
        return Response(Health("ready"))


class ServiceApp(Litestar):
    """Litestar, with what every answer carries, routed or not (404, 405 and 413 too).

    Each request gets an id (the client's ``X-Request-ID`` when it is a sane token, else a new
    one), returned in ``X-Request-ID`` beside the security headers, and one JSON line in the
    access log (with the trace id too when tracing is on). A request for a host not in
    ``served_hosts`` gets 400 in the ``Error`` shape.
    An answer to ``OPTIONS`` (or a 405) lists every method of its path in ``Allow``: Litestar
    2.25 lists only those of the first handler registered on the path (``OPTIONS, POST`` on
    /heroes). ``HEAD`` is answered wherever ``GET`` is, as a ``GET`` without its body.
    """

    access_log: bool = True
    served_hosts: tuple[str, ...] = ("*",)
    proxies: TrustedProxies = TrustedProxies("")

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        http_send = cast("Send", send)
        http_scope = cast("HTTPScope", scope)
        started = time.perf_counter()
        request_id = _request_id(http_scope)
        http_scope[REQUEST_ID_KEY] = request_id  # type: ignore[literal-required]
        status = 500
        method = http_scope["method"]
        peer = (http_scope.get("client") or (None, 0))[0]
        client = self.proxies.client(http_scope) if self.proxies else peer
        if method == "HEAD" or client != peer:
            # HEAD is served as GET with the body left out (RFC 9110, 9.3.2); the client
            # address behind trusted proxies replaces the peer's for every layer below.
            http_scope = cast(
                "HTTPScope",
                {
                    **http_scope,
                    "method": "GET" if method == "HEAD" else method,
                    "client": (client, 0) if client != peer else http_scope.get("client"),
                },
            )

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                if method == "OPTIONS" and "path_template" in http_scope:
                    headers = self._allow_every_method(headers, http_scope["path_template"])
                elif status == HTTP_405_METHOD_NOT_ALLOWED:
                    headers = [(k, _with_head(v) if k == b"allow" else v) for k, v in headers]
                message["headers"] = [
                    *headers,
                    (b"x-request-id", request_id),
                    *SECURITY_HEADERS,
                    *([(b"connection", b"close")] if SHUTTING_DOWN.is_set() else []),
                ]
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await http_send(message)

        try:
            if host_allowed(http_scope, self.served_hosts):
                await super().__call__(http_scope, receive, send_with_headers)
            else:
                await WRONG_HOST(http_scope, cast("Receive", receive), send_with_headers)
        finally:
            if self.access_log:
                access_logger.info(
                    msgspec.json.encode(
                        {
                            "method": method,
                            "path": http_scope["path"],
                            "status": status,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                            "request_id": request_id.decode(),
                            "client": client,
                            **_trace_id(http_scope),
                        }
                    ).decode()
                )

    @staticmethod
    def _patch_opentelemetry_middleware(config: AppConfig) -> AppConfig:
        # Litestar imports its OpenTelemetry plugin, and with it opentelemetry when installed, to
        # move an OpenTelemetry middleware passed as a plain one; the service passes none (with
        # TRACING on, service.tracing adds the plugin), so with tracing off nothing is imported.
        return config

    @cached_property
    def _methods_by_path(self) -> dict[str, bytes]:
        return {
            route.path_format: ", ".join(
                sorted(route.methods | ({"HEAD"} if "GET" in route.methods else set()))
            ).encode()
            for route in self.routes
            if isinstance(route, HTTPRoute)
        }

    def _allow_every_method(
        self, headers: Iterable[tuple[bytes, bytes]], path_template: str
    ) -> list[tuple[bytes, bytes]]:
        methods = self._methods_by_path.get(path_template)
        return [
            (name, methods if name == b"allow" and methods else value) for name, value in headers
        ]


WRONG_HOST = ASGIResponse(
    body=msgspec.json.encode(
        Error(400, "The Host header names a host this service does not serve.")
    ),
    status_code=400,
    media_type="application/json",
)


def host_allowed(scope: HTTPScope, allowed: tuple[str, ...]) -> bool:
    """Whether the request's Host is one of ``allowed`` (``*`` for any, ``*.example.com``)."""
    if "*" in allowed:
        return True
    host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
    name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host.lower()
    return any(
        name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


def _trace_id(scope: HTTPScope) -> dict[str, str]:
    trace_id = scope.get(TRACE_ID_KEY)
    return {"trace_id": trace_id} if isinstance(trace_id, str) else {}


def _with_head(allow: bytes) -> bytes:
    """An ``Allow`` value with ``HEAD`` added beside ``GET``."""
    methods = [m.strip() for m in allow.split(b",")]
    return b", ".join([*methods, b"HEAD"]) if b"GET" in methods else allow


def _request_id(scope: HTTPScope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


def logging_config(settings: Settings) -> LoggingConfig:
    """The service's logs at ``LOG_LEVEL``; the access log as bare JSON lines."""
    return LoggingConfig(
        log_exceptions="never",
        formatters={
            "standard": {"format": "%(levelname)s %(asctime)s %(name)s %(message)s"},
            "json": {"format": "%(message)s"},
        },
        handlers={
            "queue_listener": {
                "class": "litestar.logging.standard.QueueListenerHandler",
                "formatter": "standard",
            },
            # Written on the spot, as uvicorn writes its own access log: handing each line to a
            # queue listener's thread cost a fifth of the throughput of a read (CPU-bound, the
            # GIL passed back and forth per line); a direct write costs a few microseconds.
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        loggers={
            "service": {
                "level": settings.log_level,
                "handlers": ["queue_listener"],
                "propagate": False,
            },
            "service.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    )
