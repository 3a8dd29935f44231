"""The HTTP/1.1 connections uvicorn serves: bounded in time, in size and in number.

Over 300 lines on purpose: one protocol class and the per-worker book of deadlines it keeps.

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
- once a request is in whole and not yet answered, nothing more is read; an answer given here
  (400, 408, 414, 431, 503) on such a connection waits until that response is complete, and
  the times of a pipelined head or body start once the requests before it are answered;
- every byte after the end of the previous request counts toward the head, in every read;
- with TLS, the connection starts its handshake itself (:meth:`BoundedHttpProtocol._start_tls`):
  it is counted from accept, the handshake is within the head's time, and a connection closed
  before the handshake is over is simply closed;
- at most ``max_connections`` per worker: beyond it the connection that has waited longest
  without a request in progress (an idle keep-alive one, or one still sending its head) is
  closed to make room, as nginx reuses idle connections; when every connection has a request
  in progress, the new one is answered 503 with ``Retry-After`` and closed.

Every answer given here has the ``Error`` shape and a request id, as the app's answers do. The
deadlines are checked by one timer per worker, every ``SWEEP_SECONDS``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import ssl
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
import msgspec
import uvicorn
from litestar.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

try:
    import uvloop.loop
except ImportError:  # Windows, PyPy: uvicorn runs asyncio's loop
    uvloop = None  # type: ignore[assignment]

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
SWEEP_SECONDS = 0.25
"""How often a worker looks for heads and bodies past their time: each times out within this
much of its deadline."""
WARN_EVERY_SECONDS = 10.0
AT_CAPACITY = "The server is at its connection limit; retry shortly."
HEAD_TOO_LARGE = "The request's header fields are too large."
URL_TOO_LONG = "The request target is too long."
BODY_TOO_SLOW = "The request body did not arrive in time."
LONGEST_METHOD = b"MKCALENDAR "
REQUEST_LINE_ENDS = tuple(b" HTTP/1.1\r"[:n] for n in range(11))
"""What can follow a request's target on its line before the line ends."""


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
        self.tls: ssl.SSLContext | None = None
        """The TLS context, which each connection starts itself (uvicorn's server does not)."""

    def load(self) -> None:
        """Load as uvicorn does; then take the TLS context from the server to the connections.

        A server given the context makes a connection only once its TLS handshake is over:
        until then it is not counted, cannot be closed to make room, and has uvicorn's 60 s to
        finish. Started by :class:`BoundedHttpProtocol`, a handshake is part of the head's time.
        """
        super().load()
        if self.ssl is not None:
            self.tls, self.ssl = self.ssl, None


class ConnectionBook:
    """What a server's connections share: who waits, the deadlines, and the one timer for them.

    Deadlines are kept in a dict and checked every ``SWEEP_SECONDS`` by a single timer, rather
    than a timer armed and cancelled per request, which cost more than the rest of the
    accounting together.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[BoundedHttpProtocol, None] = {}
        """Connections with no request in progress, the longest waiting first."""
        self.deadlines: dict[BoundedHttpProtocol, float] = {}
        """When each connection's head or body is due, on the loop's clock."""
        self.sweeper: asyncio.TimerHandle | None = None
        self.warned_at = -WARN_EVERY_SECONDS

    def due(self, protocol: BoundedHttpProtocol, when: float) -> None:
        """Have ``protocol``'s head or body due at ``when``."""
        self.deadlines[protocol] = when
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(SWEEP_SECONDS, self.sweep)

    def sweep(self) -> None:
        """Tell each connection whose deadline has passed; then wait for the next ones."""
        self.sweeper = None
        now = self.loop.time()
        for protocol in [p for p, when in self.deadlines.items() if when <= now]:
            protocol.deadline_passed(now)
        if self.deadlines:
            self.sweeper = self.loop.call_later(SWEEP_SECONDS, self.sweep)


_BOOKS: weakref.WeakKeyDictionary[ServerState, ConnectionBook] = weakref.WeakKeyDictionary()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds of :class:`ConnectionLimits`."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, BoundedConfig) else ConnectionLimits()
        book = _BOOKS.get(server_state)
        if book is None:
            book = _BOOKS[server_state] = ConnectionBook(self.loop)
        self.book = book
        self.in_head = False
        """Between the first byte of a request and the end of its head."""
        self.in_body = False
        """Between the end of a request's head and the end of its body."""
        self.message_ended = False
        """Whether the read being parsed ended a request."""
        self.head_bytes = 0
        """Bytes of the current head received in earlier reads."""
        self.head_estimated = False
        """Whether ``head_bytes`` were counted in a read that ended a request before the head."""
        self.read_size = 0
        """Bytes of the read being parsed."""
        self.since = 0.0
        """When the head being waited for began to be (the connection, or its first byte)."""
        self.timed_out: object = None
        """The request cycle whose body did not arrive in time."""
        self.answered = False
        self.deferred: tuple[int, bytes, str] | None = None
        self.handshake: asyncio.Future[None] | None = None
        """The TLS handshake in progress, started by the connection (see :meth:`_start_tls`)."""
        """An answer given while an earlier request was served: sent once that one is answered."""

    # The connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection against the cap, then wait for its first request head.

        With TLS, this is the accepted TCP connection: it is counted, and the head's time runs,
        from here, through the TLS handshake; a connection closed to make room, or out of time,
        before the handshake is over is simply closed.
        """
        if self.handshake is not None:
            # The handshake is over: this is the TLS connection, counted and timed since accept.
            self.handshake = None
            self.answered = False
            HttpToolsProtocol.connection_made(self, transport)
            return
        tls = self.config.tls if isinstance(self.config, BoundedConfig) else None
        if tls is not None:
            self.transport = transport  # the TCP connection, until the handshake is over
            self.connections.add(self)
            if not self._admitted():
                self._warn_at_cap("new connections are closed")
                self._forget()
                transport.close()
                return
            self.answered = True  # nothing to parse until the handshake is over
            self.handshake = self._start_tls(transport, tls)
            return
        super().connection_made(transport)
        if not self._admitted():
            self._warn_at_cap("new connections are answered 503")
            self.answer(503, AT_CAPACITY, retry=True)

    def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> asyncio.Future[None]:
        """Put the loop's TLS protocol between ``transport`` and this one, as a TLS server does.

        Done here rather than by ``loop.start_tls()``, whose protocol takes over on a later turn
        of the loop: by then uvloop may have read the client's hello and given it to this one.
        The TLS protocol calls :meth:`connection_made` again once the handshake is over; if it
        fails, is cut short, or the connection is closed first, the returned future fails.
        """
        handshake: asyncio.Future[None] = self.loop.create_future()
        tls_protocol_class: Any = (
            uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
            if uvloop is not None and isinstance(self.loop, uvloop.Loop)
            else asyncio.sslproto.SSLProtocol
        )
        tls_protocol = tls_protocol_class(
            self.loop,
            self,
            tls,
            handshake,
            server_side=True,
            ssl_handshake_timeout=self.limits.head_timeout,
        )
        transport.set_protocol(tls_protocol)
        tls_protocol.connection_made(transport)
        handshake.add_done_callback(self._handshake_done)
        return handshake

    def _handshake_done(self, handshake: asyncio.Future[None]) -> None:
        if handshake.cancelled() or handshake.exception() is not None:
            self._forget()
            self.transport.close()

    def _forget(self) -> None:
        self.book.waiting.pop(self, None)
        self.book.deadlines.pop(self, None)
        self.connections.discard(self)

    def _admitted(self) -> bool:
        """Count the connection against the cap (making room if need be), start the head's time."""
        self.since = time.monotonic()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            return False
        self.book.waiting[self] = None
        self.book.due(self, self.loop.time() + self.limits.head_timeout)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and its deadline."""
        self.book.waiting.pop(self, None)
        self.book.deadlines.pop(self, None)
        if self.flow is None:  # lost in its TLS handshake
            self.connections.discard(self)
            return
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
        deadlines = self.book.deadlines
        if self.in_head or not self.in_body:
            # A head in progress, or bytes that began none (blank lines).
            self._count_head(data, was_in_head)
            limit = self.limits.max_head_size
            if self.head_bytes > limit or (self.in_head and self.head_size() > limit):
                # 414 while the request line is all the head has: it alone is too long.
                line_open = not self.headers and data.endswith(self.url[-16:] or b"\n")
                too_long = len(self.url) > limit or (self.in_head and line_open)
                self.answer(414 if too_long else 431, URL_TOO_LONG if too_long else HEAD_TOO_LARGE)
            elif self.serving():
                return  # its time starts once the requests before it are answered
            elif self not in deadlines:
                self.since = time.monotonic()
                self.book.due(self, self.loop.time() + self.limits.head_timeout)
        elif self.serving():
            return  # a body read while an earlier request is served: its time starts after
        elif was_in_body and self in deadlines:
            deadlines[self] += len(data) / MIN_BODY_RATE
        else:
            self._wait_for_body()

    def _count_head(self, data: bytes, was_in_head: bool) -> None:
        """Add the bytes of ``data`` that are the head's: every byte after the previous message."""
        if self.message_ended:
            # A request ended in this read and the next head began after it.
            self.head_bytes = self._pipelined_head_bytes(data) if self.in_head else 0
            self.head_estimated = self.in_head
        elif was_in_head:
            self.head_bytes += len(data)
        else:
            # The head began in this read, which ended no request before it: all of it is the
            # head's (a head split over two reads is measured as a whole, never as two halves
            # under the bound).
            self.head_bytes = len(data)

    def serving(self) -> bool:
        """Whether a request of this connection is in whole and its response not yet complete.

        Then nothing more is read, and an answer given here waits for that response.
        """
        cycle = self.cycle
        return bool(self.pipeline) or (
            cycle is not None and not cycle.response_complete and not cycle.more_body
        )

    def on_response_complete(self) -> None:
        """Start the next request, or give the answer that waited, or wait for the next head."""
        HttpToolsProtocol.on_response_complete(self)
        if self.transport.is_closing():
            return
        if self.serving():
            self.flow.pause_reading()  # the next request, pipelined, is served now
        elif self.deferred is not None:
            self._send_answer(*self.deferred)
        elif self.in_body:
            self._wait_for_body()  # the pipelined request that was started has its body to come
        else:
            # Back to waiting: uvicorn's keep-alive timeout bounds the wait for the next request.
            self.book.waiting[self] = None
            if self.in_head:
                self.since = time.monotonic()
                self.book.due(self, self.loop.time() + self.limits.head_timeout)

    def _pipelined_head_bytes(self, data: bytes) -> int:
        """Bytes of the head in progress that began after a request ended within ``data``.

        The head is the end of ``data``: its request line (``METHOD target HTTP/x.y``), its
        header lines, and the line not yet ended. Counted exactly for what clients send; a
        request line or header written otherwise is counted short by a byte or two, never long
        (which would refuse a head within the bound), and the head is measured whole anyway
        once it ends.
        """
        if not self.url:
            return min(len(data), len(LONGEST_METHOD))  # the method, not yet its target
        started = self.parser.get_method() + b" " + self.url
        last_line = data[data.rfind(b"\n") + 1 :]
        # While the line ends with the request's target so far, the request line is not over,
        # and it is all the head has (the line may hold the end of the body before it).
        for version in REQUEST_LINE_ENDS:
            if last_line.endswith(started + version):
                return len(started) + len(version)
        headers = sum(len(name) + len(value) + 3 for name, value in self.headers)
        return len(started) + len(b" HTTP/1.1\r\n") + headers + len(last_line)

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
        if (self.head_estimated or self.head_bytes + self.read_size > limit) and (
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
        self.head_estimated = False
        self.since = 0.0
        self.book.waiting.pop(self, None)
        self.book.deadlines.pop(self, None)
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
        self.book.deadlines.pop(self, None)
        if not self.cycle.response_complete:
            self.flow.pause_reading()  # the next request is read once this one is answered

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read: 400 in the Error shape (unless already answered)."""
        if not (self.answered or self.transport.is_closing()):
            self.answer(400, "The request is not valid HTTP/1.1.")

    # Answers given here

    def answer(self, status: int, detail: str, *, retry: bool = False) -> None:
        """Answer ``status`` in the Error shape and close the connection.

        On a connection that is serving a request (pipelined before this one), the answer waits
        until that request's response is complete: a client is never told a request failed
        while the one before it is still being stored, nor left without that one's answer.
        """
        self.answered = True
        self.book.waiting.pop(self, None)
        self.book.deadlines.pop(self, None)
        request_id = choose_request_id(self.headers or [])
        body = msgspec.json.encode(Error(status, detail))
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *SECURITY_HEADERS,
            *([(b"retry-after", str(RETRY_AFTER_SECONDS).encode())] if retry else []),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        response = STATUS_LINE[status] + head + b"\r\n" + body
        if self.flow is not None and self.serving():
            self.flow.pause_reading()
            self.deferred = (status, response, request_id)
        else:
            self._send_answer(status, response, request_id)

    def _send_answer(self, status: int, response: bytes, request_id: str) -> None:
        """Write ``response`` and close, first reading for a moment (unless well past the cap).

        The lingering read drops what the client is still sending, so that the close does not
        reset the answer away before the client has read it.
        """
        self.deferred = None
        self.transport.write(response)
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

    def deadline_passed(self, now: float) -> None:
        """The head or the body was due by now (called by the book's sweep)."""
        self.book.deadlines.pop(self, None)
        if self.answered or self.transport.is_closing() or self.serving():
            return
        if self.in_body:
            self._body_timed_out()
        elif self.in_head:
            self.answer(408, "The request head did not arrive in time.")
        else:
            self.book.waiting.pop(self, None)
            self.transport.close()

    def _wait_for_body(self) -> None:
        """Have the body due in time, and the app's next read of it fail with 408 if it is not."""
        self.book.due(self, self.loop.time() + self.limits.body_timeout)
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
        cycle = self.cycle
        cycle.keep_alive = False
        if cycle.response_complete:
            self.transport.close()
        elif not cycle.response_started:
            self.timed_out = cycle
            cycle.message_event.set()  # wakes the app's receive, which then raises the 408

    # The cap

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request, if there is one."""
        oldest = next(iter(self.book.waiting), None)
        if oldest is None:
            return False
        if oldest.in_head:
            oldest.answer(503, AT_CAPACITY, retry=True)
        else:
            self.book.waiting.pop(oldest, None)
            self.book.deadlines.pop(oldest, None)
            oldest.transport.close()
        self._warn_at_cap("the connections that waited longest are closed")
        return True

    def _warn_at_cap(self, what: str) -> None:
        now = time.monotonic()
        if now - self.book.warned_at >= WARN_EVERY_SECONDS:
            self.book.warned_at = now
            logger.warning(
                "%d connections, the most this worker keeps open: %s", len(self.connections), what
            )

    def _use_authority(self, authority: bytes) -> None:
        hosts = [i for i, (name, _) in enumerate(self.headers) if name == b"host"]
        if len(hosts) == 1:
            self.headers[hosts[0]] = (b"host", authority)
        elif not hosts and self.parser.get_http_version() != "1.1":
            self.headers.append((b"host", authority))
