"""The Host check: what a request says it is addressed to, before anything reads it.

RFC 9112, section 3.2: an HTTP/1.1 request without ``Host``, with two ``Host`` header lines, or
with a value that is not ``host[:port]`` is answered 400. Then a host the service does not serve
(``ALLOWED_HOSTS``) is 400 too. Once a request has passed, its URL can be built from ``Host``
(Litestar's ``request.url`` does, and fails on a port that is not a number).

An absolute-form target (``GET http://other/heroes HTTP/1.1``) names its own authority, which
wins over ``Host`` (section 3.2.2); :func:`target_authority` reads it, and the server puts it in
the place of the ``Host`` header before the app sees the request, so that it is checked here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, NamedTuple

from litestar.response.base import ASGIResponse

from service.http.errors import VARY, error_body, wants_problem

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import HTTPScope


class Refusal(NamedTuple):
    """A 400 for the Host, made once: as an ``Error``, and as a ``Problem`` (see ``errors``)."""

    error: ASGIResponse
    problem: ASGIResponse

    def answer(self, scope: HTTPScope) -> ASGIResponse:
        """The refusal in the media type the request's ``Accept`` asks for."""
        return self.problem if wants_problem(scope["headers"]) else self.error


def _refusal(detail: str, *, close: bool = True) -> Refusal:
    """A 400; one for a malformed request closes the connection: it comes from a broken client."""
    headers = {**VARY, "connection": "close"} if close else VARY

    def response(problem: bool) -> ASGIResponse:
        body, media_type = error_body(400, detail, problem=problem)
        return ASGIResponse(body=body, status_code=400, media_type=media_type, headers=headers)

    return Refusal(response(problem=False), response(problem=True))


WRONG_HOST = _refusal("The Host header names a host this service does not serve.", close=False)
NO_HOST = _refusal("HTTP/1.1 requests need a Host header; this one has none.")
TWO_HOSTS = _refusal("The request has more than one Host header; send one.")
INVALID_HOST = _refusal(
    "The Host header is not a host name or address with an optional port from 1 to 65535."
)

_HOST = re.compile(
    rb"(?P<name>(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
    rb"(?::(?P<port>[0-9]{1,5}))?"
)
"""RFC 3986's ``host [":" port]``: a reg-name (an IPv4 address is one) or an IPv6 literal."""
_VALID_HOSTS: dict[bytes, bool] = {}
"""Host values already judged, so that the clients' few hosts are parsed once per worker."""
_VALID_HOSTS_KEPT = 1024


def host_refusal(scope: HTTPScope, allowed: tuple[str, ...]) -> ASGIResponse | None:
    """The 400 answer for the request's ``Host``, or None when the request may be served.

    ``allowed`` holds the lower-case host names of ``ALLOWED_HOSTS`` (``*`` for any).
    """
    host: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"host":
            if host is not None:
                return TWO_HOSTS.answer(scope)
            host = value
    if host is None:
        if scope.get("http_version") == "1.1":
            return NO_HOST.answer(scope)
        host = b""
    if not valid_host(host):
        return INVALID_HOST.answer(scope)
    if "*" in allowed or host_matches(host.decode("latin-1"), allowed):
        return None
    return WRONG_HOST.answer(scope)


def valid_host(value: bytes) -> bool:
    """Whether a ``Host`` value is ``host[:port]``, the port (if any) a number from 1 to 65535.

    An empty value is valid (RFC 9112 has clients send one when the target has no authority).
    """
    known = _VALID_HOSTS.get(value)
    if known is not None:
        return known
    match = _HOST.fullmatch(value)
    valid = match is not None
    if match is not None:
        port = match["port"]
        if port is not None and not 1 <= int(port) <= 65535:  # noqa: PLR2004
            valid = False
        elif match["ipv6"] is not None:
            try:
                ipaddress.IPv6Address(match["ipv6"].decode("ascii"))
            except ValueError:
                valid = False
    if len(_VALID_HOSTS) >= _VALID_HOSTS_KEPT:
        _VALID_HOSTS.clear()
    _VALID_HOSTS[value] = valid
    return valid


def host_matches(host: str, allowed: Iterable[str]) -> bool:
    """Whether a Host header value (port and case aside) is one of the lower-case ``allowed``."""
    name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host.lower()
    return any(
        name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


class UnsupportedTarget(ValueError):
    """An absolute-form request target whose scheme is not ``http`` or ``https``."""


def target_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form request target, or None for any other form.

    ``http://heroes.example:8000/heroes?limit=1`` -> ``heroes.example:8000``. Raises
    :class:`UnsupportedTarget` for another scheme (``ftp://...``): not a request for this server.
    """
    if target[:1] == b"/" or b"://" not in target:
        return None
    scheme, _, rest = target.partition(b"://")
    if scheme.lower() not in (b"http", b"https"):
        raise UnsupportedTarget(scheme.decode("latin-1"))
    end = min(
        (i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0), default=-1
    )
    return rest if end < 0 else rest[:end]
