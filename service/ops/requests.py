"""Every request's frame: its id, the access log, the response headers, HEAD; ``ServiceApp``."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import msgspec
from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.logging import LoggingConfig
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_405_METHOD_NOT_ALLOWED

from service.http.errors import REQUEST_ID_STATE, TRACE_ID_KEY
from service.http.hosts import host_refusal
from service.http.proxies import TrustedProxies
from service.ops.health import LEAVING, PROBE_PATHS
from service.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.config.app import AppConfig
    from litestar.types import (
        HTTPResponseStartEvent,
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
ANY_HOST = ("*",)
"""The hosts served on ``PROBE_PATHS``: any (a malformed ``Host`` is still refused)."""
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]
SHUTTING_DOWN = threading.Event()
"""Set when the server begins a graceful shutdown: answers then close their connection."""


def add_response_headers(message: HTTPResponseStartEvent, scope: Scope) -> None:
    """Every answer carries its request id and the security headers (run on each answer's start).

    ``ServiceApp`` runs it on every answer of the app, routed or not (404, 405 and 413 too). An
    answer to ``OPTIONS`` or a 405 lists every method of its path in ``Allow``, ``HEAD`` beside
    ``GET``: Litestar 2.25 lists only those of the first handler registered on the path,
    ``OPTIONS, POST`` on /heroes (litestar#4169). During a graceful shutdown, answers close their
    connection.
    """
    message["headers"] = [
        *message.get("headers", ()),
        (b"x-request-id", request_id(scope).encode()),
        *SECURITY_HEADERS,
    ]
    status = message["status"]
    methods_listed = scope.get("method") == "OPTIONS" or status == HTTP_405_METHOD_NOT_ALLOWED
    # Leaving (any worker told SIGTERM, with several) closes connections as shutting down does.
    closing = SHUTTING_DOWN.is_set() or LEAVING.is_set()
    if not (methods_listed or closing):
        return
    headers = MutableScopeHeaders.from_message(message)
    if methods_listed and "allow" in headers:
        template = scope.get("path_template")
        methods = methods_of_path(Litestar.from_scope(scope), template) if template else ""
        headers["Allow"] = methods or with_head(headers["Allow"])
    if closing:
        headers["Connection"] = "close"


def methods_of_path(app: Litestar, path_template: str) -> str:
    """Every method the app answers on ``path_template`` (``/heroes/{hero_id}``), sorted."""
    methods = {
        method
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path_format == path_template
        for method in route.methods
    }
    if "GET" in methods:
        methods.add("HEAD")  # answered by ServiceApp wherever GET is
    return ", ".join(sorted(methods))


def with_head(allow: str) -> str:
    """An ``Allow`` value with ``HEAD`` beside ``GET``."""
    methods = {method.strip() for method in allow.split(",")}
    return ", ".join(sorted(methods | {"HEAD"} if "GET" in methods else methods))


class ServiceApp(Litestar):
    """Litestar, plus what must run before routing, which no hook nor middleware does.

    Why, one line each:
    - host check: 400 in the Error shape for any path, for a missing, repeated or malformed
      ``Host`` (before anything builds a URL from it) or one not served (but the health checks,
      ``PROBE_PATHS``, serve any); Litestar's ``allowed_hosts`` is a route middleware (an
      unknown path on a wrong host would get 404);
    - access log: timed from the request's arrival, for every answer, 404, 405 and 413 too;
      middleware and ``after_request`` run for routed requests only;
    - request id: chosen before anything can answer, so the log line and the header agree;
    - client address: taken from ``X-Forwarded-For`` behind trusted proxies before any layer
      (rate limit, access log) reads it;
    - HEAD: answered as a GET without its body wherever GET is (RFC 9110, 9.3.2); Litestar's
      ``@get`` routes answer HEAD with 405;
    - response headers: added in the one wrapper of ``send``, which also runs the plugins'
      ``before_send`` hooks, instead of Litestar's wrapper and a hook of its own.
    """

    def __init__(
        self,
        *,
        served_hosts: Iterable[str] = ("*",),
        access_log: bool = True,
        proxies: TrustedProxies | None = None,
        **config: Any,
    ) -> None:
        """Build the app from Litestar's ``config``, answering for ``served_hosts`` only."""
        super().__init__(**config)
        self.served_hosts = tuple(host.lower() for host in served_hosts)
        self.access_log = access_log
        self.proxies = proxies or TrustedProxies("")

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
        http_scope = cast("HTTPScope", scope)
        http_send = cast("Send", send)
        started = time.perf_counter()
        request_id(http_scope)
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

        hooks = self.before_send  # the plugins': the session closer, tracing's span name

        async def send_through_hooks(message: Message) -> None:
            # The one wrapper of ``send``: Litestar's own (one per app, running the before_send
            # hooks) is not used, as the app calls its ASGI handler itself.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                add_response_headers(message, http_scope)
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            for hook in hooks:
                await hook(message, http_scope)
            await http_send(message)

        try:
            served = ANY_HOST if http_scope["path"] in PROBE_PATHS else self.served_hosts
            refusal = host_refusal(http_scope, served)
            if refusal is None:
                http_scope["app"] = http_scope["litestar_app"] = self
                await self.asgi_handler(http_scope, cast("Receive", receive), send_through_hooks)
            else:
                await refusal(http_scope, cast("Receive", receive), send_through_hooks)
        finally:
            if self.access_log:
                duration = time.perf_counter() - started
                access_logger.info(access_log_line(http_scope, method, status, duration))

    @staticmethod
    def _patch_opentelemetry_middleware(config: AppConfig) -> AppConfig:
        # Litestar imports its OpenTelemetry plugin, and with it opentelemetry when installed, to
        # move an OpenTelemetry middleware passed as a plain one; the service passes none (with
        # TRACING on, service.ops.tracing adds the plugin), so with tracing off nothing is imported.
        return config


def access_log_line(scope: HTTPScope, method: str, status: int, duration: float) -> str:
    """The access log's JSON line for one answered request (``duration`` in seconds)."""
    trace_id = scope.get(TRACE_ID_KEY)
    return msgspec.json.encode(
        {
            "method": method,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "request_id": request_id(scope),
            "client": (scope.get("client") or (None, 0))[0],
            **({"trace_id": trace_id} if isinstance(trace_id, str) else {}),
        }
    ).decode()


def request_id(scope: Scope | HTTPScope) -> str:
    """The request's id, chosen once and kept in its scope's state (see ``choose_request_id``)."""
    state = scope.setdefault("state", {})
    chosen: str | None = state.get(REQUEST_ID_STATE)
    if chosen is None:
        chosen = state[REQUEST_ID_STATE] = choose_request_id(scope["headers"])
    return chosen


def choose_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new unique one."""
    for name, value in headers:
        if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return f"{_PROCESS_ID}{next(_REQUESTS):012x}"


_PROCESS_ID = secrets.token_hex(10)
"""20 random hex digits per process: with a counter, ids unique across workers and hosts.

A ``uuid4`` per request read the system's random source every time (what it cost:
``tests/benchmarks/RESULTS-choices.md``)."""
_REQUESTS = itertools.count()


def logging_config(settings: Settings) -> LoggingConfig:
    """The service's logs at ``LOG_LEVEL``; the access log as bare JSON lines.

    The service's logs go through Litestar's ``queue_listener`` handler, which Litestar defines
    for the running Python: its own queue handler up to 3.11, ``logging.handlers.QueueHandler``
    with a listener from 3.12 on (where dictConfig no longer lets its own one work).
    """
    return LoggingConfig(
        log_exceptions="never",
        formatters={
            "standard": {"format": "%(levelname)s %(asctime)s %(name)s %(message)s"},
            "json": {"format": "%(message)s"},
        },
        handlers={
            # Written on the spot, as uvicorn writes its own access log: handing each line to a
            # queue listener's thread costs about twice the direct write, the GIL passed back and
            # forth per line (measured in tests/benchmarks/RESULTS-choices.md).
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
