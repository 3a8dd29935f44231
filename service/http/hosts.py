"""The Host check: a request for a host the service does not serve is 400 (``ALLOWED_HOSTS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from litestar.response.base import ASGIResponse

from service.http.errors import Error

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import HTTPScope

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
    return host_matches(host, allowed)


def host_matches(host: str, allowed: Iterable[str]) -> bool:
    """Whether a Host header value (port and case aside) is one of the lower-case ``allowed``."""
    name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host.lower()
    return any(
        name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )
