"""The rate limit: requests per client address per minute, counted in Redis or in the worker.

With ``REDIS_URL`` every worker on every host counts in the same Redis key per client, with
one atomic script per request, so the limit is exact however many processes serve. Without it
each worker counts alone: the limit a client sees is the workers times ``RATE_LIMIT_PER_MINUTE``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware

from service.http.errors import error_body, wants_problem
from service.settings import Settings, SettingsError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("service")

WINDOW_SECONDS = 60
REDIS_TIMEOUT_SECONDS = 2.0
"""How long a request waits for Redis before it is let through uncounted.

Not much less: the wait includes the time the worker's event loop is busy with other requests,
and under a burst a tight timeout would let requests through uncounted."""
MAX_CLIENTS_BEFORE_SWEEP = 10_000
"""Windows a worker keeps before dropping the ended ones, so memory stays bounded."""
WARN_EVERY_SECONDS = 10.0
"""Least time between two warnings that Redis is unreachable, so an outage does not flood logs."""


class Window(NamedTuple):
    """A client's current window: requests counted in it, and seconds until it ends."""

    hits: int
    reset: int


class Counter(Protocol):
    """Where the hits are counted."""

    async def hit(self, client: str, amount: int = 1) -> Window | None:
        """Count ``amount`` (one request, or its bytes) for ``client``; None when unavailable."""

    async def close(self) -> None:
        """Release connections."""


class WorkerCounter:
    """Fixed windows counted in this process only."""

    def __init__(self, seconds: int = WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self.windows: dict[str, tuple[int, float]] = {}

    async def hit(self, client: str, amount: int = 1) -> Window:
        """Count ``amount`` for ``client`` in its current window."""
        now = time.monotonic()
        count, ends = self.windows.get(client, (0, 0.0))
        if now >= ends:
            if len(self.windows) > MAX_CLIENTS_BEFORE_SWEEP:
                self.windows = {k: w for k, w in self.windows.items() if w[1] > now}
            count, ends = 0, now + self.seconds
        self.windows[client] = (count + amount, ends)
        # At most the window: (now + 60) - now can come out a hair above 60 in floating point.
        return Window(count + amount, min(self.seconds, max(1, math.ceil(ends - now))))

    async def close(self) -> None:
        """Nothing to release."""


HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) or redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {count, redis.call('PTTL', KEYS[1])}
"""
"""Count a hit (``ARGV[2]``: 1, or bytes) and start the window on the first, atomically: Redis
runs a script alone.

The window starts at the client's first request and lasts by Redis's clock, so hosts with
skewed clocks still agree on it.
"""


class RedisCounter:
    """Fixed windows counted in Redis, shared by every worker and host that uses the same keys."""

    def __init__(self, url: str, prefix: str, seconds: int = WINDOW_SECONDS) -> None:
        from redis.asyncio import Redis  # noqa: PLC0415 (the redis extra is optional)

        self.redis = Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.script = self.redis.register_script(HIT_SCRIPT)
        self.prefix = prefix
        self.milliseconds = seconds * 1000
        self.warned_at = -math.inf

    async def hit(self, client: str, amount: int = 1) -> Window | None:
        """Count ``amount`` for ``client``; None, with a warning logged, if Redis fails."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            count, ttl_ms = await self.script(
                keys=[f"{self.prefix}:{client}"], args=[self.milliseconds, amount]
            )
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self.warned_at >= WARN_EVERY_SECONDS:
                self.warned_at = now
                logger.warning("rate limit not applied, Redis is unreachable: %r", exc)
            return None
        return Window(int(count), max(1, math.ceil(int(ttl_ms) / 1000)))

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def counter(settings: Settings, kind: str = "") -> Counter:
    """The counter ``settings`` ask for: Redis when ``REDIS_URL`` is set, else this worker.

    ``kind`` names a count kept apart from the requests' (``docs-bytes``): its own Redis keys.
    """
    if not settings.redis_url:
        return WorkerCounter()
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError as exc:
        raise SettingsError(
            "REDIS_URL: needs the redis package: pip install 'hero-service[redis]'"
        ) from exc
    prefix = f"{settings.redis_key_prefix}:{kind}" if kind else settings.redis_key_prefix
    return RedisCounter(settings.redis_url, prefix)


class RateLimitMiddleware(ASGIMiddleware):
    """Answers 429, in the ``Error`` shape, to a client past its limit in the current window.

    Every answer it lets through carries the ``RateLimit-*`` headers of the client's window.
    When the counter is unavailable (Redis down), requests go through uncounted: refusing every
    client, or answering 500, would turn a Redis outage into an outage of the service.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, counter: Counter, limit: int, exclude: list[str]) -> None:
        """Refuse past ``limit`` requests per window, except on paths starting with ``exclude``."""
        self.counter = counter
        self.limit = limit
        self.policy = f"{limit}; w={WINDOW_SECONDS}".encode()
        prefixes = tuple(exclude)
        self.should_bypass_for_scope = lambda scope: scope["path"].startswith(prefixes)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Count the request, then serve it or refuse it."""
        client = client_key((scope.get("client") or ("unknown", 0))[0])
        window = await self.counter.hit(client)
        if window is None:
            await next_app(scope, receive, send)
            return
        headers = [
            (b"ratelimit-policy", self.policy),
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(max(0, self.limit - window.hits)).encode()),
            (b"ratelimit-reset", str(window.reset).encode()),
        ]
        if window.hits > self.limit:
            await too_many_requests(window, headers, scope, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await next_app(scope, receive, send_with_headers)


IPV6_PREFIX = 64
"""IPv6 clients are counted per /64: one subscriber, host or VM usually gets a whole /64 (RFC
6177's advice to ISPs is a /56 or /48), so one client could otherwise change its address at will
to escape the limit."""


@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The key a client address is counted under: the address, written one way, or its /64.

    ``::ffff:203.0.113.7`` (an IPv4 client of a dual-stack socket) counts as ``203.0.113.7``;
    ``2001:db8:1:2::7`` as ``2001:db8:1:2::/64``. What is not an address is kept as it is.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    prefix = int(ip) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX)
    return str(ipaddress.IPv6Network((prefix, IPV6_PREFIX)))


async def too_many_requests(
    window: Window,
    headers: list[tuple[bytes, bytes]],
    scope: Scope,
    send: Send,
    what: str = "Too many requests",
) -> None:
    """Answer 429, saying when to come back, as an ``Error`` or as the ``Accept`` asks."""
    detail = f"{what}: retry in {window.reset} seconds."
    body, media_type = error_body(429, detail, problem=wants_problem(scope["headers"]))
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                *headers,
                (b"retry-after", str(window.reset).encode()),
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Accept"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def rate_limit(settings: Settings, exclude: list[str]) -> tuple[RateLimitMiddleware, Counter]:
    """The rate limit middleware for ``settings``, and its counter (to close at shutdown)."""
    hits = counter(settings)
    return RateLimitMiddleware(hits, settings.rate_limit_per_minute, exclude), hits


class ByteBudgetMiddleware(ASGIMiddleware):
    """Answers 429 once a client's answers on these routes pass ``budget`` bytes in the window.

    For the docs pages and their assets (a 4.9 MB script among them): each answer is counted by
    its ``Content-Length`` before it is sent, and the one that would take the client past its
    budget is replaced by a 429 in the ``Error`` shape, so however many requests a client makes,
    the service sends it at most ``budget`` bytes of these per window.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, counter: Counter, budget: int) -> None:
        """Allow ``budget`` bytes per client address and window, counted in ``counter``."""
        self.counter = counter
        self.budget = budget

    def __deepcopy__(self, memo: dict[int, object]) -> ByteBudgetMiddleware:
        """Itself: Litestar copies a router when it registers it, and the count is one."""
        return self

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Serve the request; count its answer's bytes, and refuse it if over the budget."""
        client = client_key((scope.get("client") or ("unknown", 0))[0])
        refused = False

        async def send_within_budget(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                length = next(
                    (
                        int(v)
                        for k, v in message.get("headers", ())
                        if k.lower() == b"content-length"
                    ),
                    0,
                )
                window = await self.counter.hit(client, length) if length else None
                if window is not None and window.hits > self.budget:
                    refused = True
                    await too_many_requests(window, [], scope, send, "Too much of the docs")
                    return
            elif refused:
                return
            await send(message)

        await next_app(scope, receive, send_within_budget)


def docs_budget(settings: Settings) -> tuple[ByteBudgetMiddleware, Counter]:
    """The docs' byte budget for ``settings``, and its counter (to close at shutdown)."""
    bytes_sent = counter(settings, "docs-bytes")
    return ByteBudgetMiddleware(bytes_sent, settings.docs_bytes_per_minute), bytes_sent
