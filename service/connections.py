"""The HTTP/1.1 connections uvicorn serves: bounded in time, in size and in number.

uvicorn's httptools protocol closes idle keep-alive connections, but waits for ever for a request
head that never ends or a body that stalls, buffers a header line of any length, and accepts
connections until the worker runs out of file descriptors, after which no client, a health check
included, can connect at all. :class:`BoundedHttpProtocol` adds, per connection:

- a request head must arrive whole within ``REQUEST_HEAD_TIMEOUT`` of the connection, or of its
  first byte on a kept-alive connection (nginx's ``client_header_timeout``, Node's
  ``headersTimeout``): 408 if some of it came, else the connection is closed;
- a request body must arrive within ``REQUEST_BODY_TIMEOUT`` of its head, plus a second per
  ``MIN_BODY_RATE`` bytes received (Apache's ``mod_reqtimeout``): the app answers 408;
- a head of more than ``MAX_HEADER_SIZE`` bytes: 431 (414 when the request line alone is);
- an absolute-form target's authority takes the place of ``Host`` (RFC 9112, 3.2.2), which
  the app then checks as any ``Host``;
- at most ``max_connections`` per worker: beyond it the connection that has waited longest
  without a request in progress (an idle keep-alive one, or one still sending its head) is
  closed to make room, as nginx reuses idle connections; when every connection has a request
  in progress, the new one is answered 503 with ``Retry-After`` and closed.

Every answer given here has the ``Error`` shape and a request id, as the app's answers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
import msgspec
import uvicorn
from litestar.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.http.errors import REQUEST_ID_STATE, Error
from service.http.hosts import UnsupportedTarget, target_authority
from service.ops.requests import SECURITY_HEADERS, access_log_line, choose_request_id

if TYPE_CHECKING:
    from uvicorn.server import ServerState

logger = logging.getLogger("uvicorn.error")
access_logger = logging.getLogger("service.access")

MIN_BODY_RATE = 500
"""Bytes per second a body must keep up, on average, once its first ``REQUEST_BODY_TIMEOUT``
has run out (mod_reqtimeout's ``MinRate=500``): each byte received adds 1/500 s to the time."""
LINGER_SECONDS = 1.0
"""How long a connection answered and closed here keeps reading (and dropping) what the client
still sends, so that closing it does not reset it before the client has read the answer."""
LINGERING_PAST_THE_CAP = 32
"""Connections past the cap that may linger so; past them an answered connection is closed at
once (the file descriptors a worker keeps in reserve leave room for these)."""
RETRY_AFTER_SECONDS = 1
WARN_EVERY_SECONDS = 10.0
AT_CAPACITY = "The server is at its connection limit; retry shortly."
HEAD_TOO_LARGE = "The request's header fields are too large."
URL_TOO_LONG = "The request target is too long."
BODY_TOO_SLOW = "The request body did not arrive in time."


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds of one worker's connections (see the module's docstring)."""

    head_timeout: float = 10.0
    body_timeout: float = 10.0
    max_head_size: int = 16 * 1024
    max_connections: int = 1000
    access_log: bool = True


class BoundedConfig(uvicorn.Config):
    """uvicorn's configuration, carrying the connections' bounds to every worker."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **config: Any) -> None:
        super().__init__(app, http=BoundedHttpProtocol, **config)
        self.limits = limits


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds of :class:`ConnectionLimits`."""

    waiting: dict[BoundedHttpProtocol, None] = {}
    """This worker's connections with no request in progress, the longest waiting first."""
    warned_at = -WARN_EVERY_SECONDS

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, BoundedConfig) else ConnectionLimits()
        self.in_head = False
        """Between the first byte of a request and the end of its head."""
        self.in_body = False
        """Between the end of a request's head and the end of its body."""
        self.message_ended = False
        """Whether the read being parsed ended a request."""
        self.head_bytes = 0
        """Bytes of the current head received in reads that held nothing else."""
        self.read_size = 0
        """Bytes of the read being parsed."""
        self.since = 0.0
        """When the head being waited for began to be (the connection, or its first byte)."""
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_deadline = 0.0
        self.timed_out: object = None
        """The request cycle whose body did not arrive in time."""
        self.answered = False

    # The connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection against the cap, then wait for its first request head."""
        super().connection_made(transport)
        self.since = time.monotonic()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._warn_at_cap("new connections are answered 503")
            self.answer(503, AT_CAPACITY, retry=True)
            return
        self.waiting[self] = None
        self.head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and its timers."""
        self.waiting.pop(self, None)
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; then bound the head or the body still to come."""
        if self.answered:
            return  # answered here: what the client still sends is dropped
        was_in_head, was_in_body = self.in_head, self.in_body
        self.message_ended = False
        self.read_size = len(data)
        HttpToolsProtocol.data_received(self, data)
        if self.answered or not (self.in_head or self.in_body or not self.message_ended):
            return  # the common case: the read held whole requests
        if self.transport.is_closing():
            return
        if self.in_head or not self.in_body:
            # A head in progress, or bytes that began none (blank lines): the head's time runs.
            if was_in_head:
                self.head_bytes += len(data)
            limit = self.limits.max_head_size
            if self.head_bytes > limit or (self.in_head and self.head_size() > limit):
                self.answer(431, HEAD_TOO_LARGE)
            elif self.head_timer is None:
                self.since = time.monotonic()
                self.head_timer = self.loop.call_later(
                    self.limits.head_timeout, self._head_timed_out
                )
        elif self.in_body:
            if self.body_timer is None:
                self._start_body_timer()
            elif was_in_body:
                self.body_deadline += len(data) / MIN_BODY_RATE

    def on_response_complete(self) -> None:
        """Back to waiting: uvicorn's keep-alive timeout bounds the wait for the next request."""
        HttpToolsProtocol.on_response_complete(self)
        if not (self.in_body or self.pipeline or self.transport.is_closing()):
            self.waiting[self] = None

    def head_size(self) -> int:
        """Bytes of the current head parsed so far: its request target and finished headers."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # The parser's callbacks

    def on_message_begin(self) -> None:
        """A new request: its head starts."""
        HttpToolsProtocol.on_message_begin(self)
        self.in_head = True

    def on_headers_complete(self) -> None:
        """Check the head whole, put an absolute-form target's authority in ``Host``, serve."""
        if self.answered:
            return
        limit = self.limits.max_head_size
        # The head is within this read and the earlier ones that held nothing else: only when
        # those are larger than the bound is the head itself measured.
        if self.head_bytes + self.read_size > limit and (
            self.head_bytes > limit or self.head_size() > limit
        ):
            too_long = len(self.url) > limit
            self.answer(414 if too_long else 431, URL_TOO_LONG if too_long else HEAD_TOO_LARGE)
            return
        if self.url[:1] != b"/":
            try:
                authority = target_authority(self.url)
            except UnsupportedTarget:
                self.answer(400, "The request target is a URL of a scheme other than http(s).")
                return
            if authority is not None:
                self._use_authority(authority)
        self.in_head = False
        self.in_body = True
        self.head_bytes = 0
        self.since = 0.0
        self.waiting.pop(self, None)
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        """A part of the body, for the app (none once the request is answered here)."""
        if not self.answered:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        """The request's body is in: the next bytes begin a new head."""
        if self.answered:
            return
        HttpToolsProtocol.on_message_complete(self)
        self.in_body = False
        self.message_ended = True
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read: 400 in the Error shape (unless already answered)."""
        if not (self.answered or self.transport.is_closing()):
            self.answer(400, "The request is not valid HTTP/1.1.")

    # Answers given here

    def answer(self, status: int, detail: str, *, retry: bool = False) -> None:
        """Answer ``status`` in the Error shape and close the connection.

        The connection first keeps reading for a moment (unless the worker is well past its cap),
        so that what the client is still sending does not make the close reset the answer away.
        """
        self.answered = True
        self.waiting.pop(self, None)
        self._cancel_timers()
        request_id = choose_request_id(self.headers or [])
        body = msgspec.json.encode(Error(status, detail))
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS),
            *([(b"retry-after", str(RETRY_AFTER_SECONDS).encode())] if retry else []),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[status] + head + b"\r\n" + body)
        self._log(status, request_id)
        room = self.limits.max_connections + LINGERING_PAST_THE_CAP
        if len(self.connections) <= room and self.transport.can_write_eof():
            self.flow.resume_reading()
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _log(self, status: int, request_id: str) -> None:
        if not self.limits.access_log:
            return
        method = path = None
        if self.url:
            method = self.parser.get_method().decode("latin-1")
            with contextlib.suppress(httptools.HttpParserError):
                path = httptools.parse_url(self.url).path.decode("latin-1")
        scope: dict[str, Any] = {
            "path": path,
            "headers": [],
            "state": {REQUEST_ID_STATE: request_id},
            "client": self.client,
        }
        duration = time.monotonic() - self.since if self.since else 0.0
        access_logger.info(
            access_log_line(cast("Any", scope), cast("str", method), status, duration)
        )

    # Timeouts

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.answered or self.transport.is_closing():
            return
        if self.in_head:
            self.answer(408, "The request head did not arrive in time.")
        else:
            self.waiting.pop(self, None)
            self.transport.close()

    def _start_body_timer(self) -> None:
        self.body_deadline = self.loop.time() + self.limits.body_timeout
        self.body_timer = self.loop.call_at(self.body_deadline, self._body_timed_out)
        cycle = self.cycle
        receive = cycle.receive

        async def receive_in_time() -> Any:
            message = await receive()
            if self.timed_out is cycle:
                raise HTTPException(status_code=408, detail=BODY_TOO_SLOW)
            return message

        # uvicorn starts the request's task on a later turn of the loop, and it then calls this.
        cycle.receive = receive_in_time  # type: ignore[method-assign]

    def _body_timed_out(self) -> None:
        if self.loop.time() < self.body_deadline:
            self.body_timer = self.loop.call_at(self.body_deadline, self._body_timed_out)
            return
        self.body_timer = None
        cycle = self.cycle
        if self.answered or self.transport.is_closing():
            return
        cycle.keep_alive = False
        if cycle.response_complete:
            self.transport.close()
        elif not cycle.response_started:
            self.timed_out = cycle
            cycle.message_event.set()  # wakes the app's receive, which then raises the 408

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None

    # The cap

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request, if there is one."""
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return False
        if oldest.in_head:
            oldest.answer(503, AT_CAPACITY, retry=True)
        else:
            oldest.waiting.pop(oldest, None)
            oldest._cancel_timers()
            oldest.transport.close()
        self._warn_at_cap("the connections that waited longest are closed")
        return True

    def _warn_at_cap(self, what: str) -> None:
        now = time.monotonic()
        if now - BoundedHttpProtocol.warned_at >= WARN_EVERY_SECONDS:
            BoundedHttpProtocol.warned_at = now
            logger.warning(
                "%d connections, the most this worker keeps open: %s", len(self.connections), what
            )

    def _use_authority(self, authority: bytes) -> None:
        hosts = [i for i, (name, _) in enumerate(self.headers) if name == b"host"]
        if len(hosts) == 1:
            self.headers[hosts[0]] = (b"host", authority)
        elif not hosts and self.parser.get_http_version() != "1.1":
            self.headers.append((b"host", authority))
