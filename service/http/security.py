"""Who may write: the optional API key (service.http.openapi documents it)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Middleware, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
"""The methods that need the API key, when there is one; the OpenAPI document says so too."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="heroes"'}


def api_key_required(api_keys: Sequence[str]) -> Middleware:
    """An app-level middleware that lets writes through only with ``Authorization: Bearer <key>``.

    Any key of ``api_keys`` is accepted: while a key is rotated, the old and the new one work.

    The header is compared with every key, in constant time, and all comparisons run whatever
    their outcome, so the answer's timing tells neither which key nor how much of one matched.
    A middleware runs after routing, as a guard would (an unknown path is 404, a wrong method
    405), without the copy of the route handler Litestar 2 makes for each guard call.
    """
    expected = [f"Bearer {key}".encode() for key in api_keys]
    if not expected:
        raise ValueError("api_key_required needs at least one key")

    def middleware(app: ASGIApp) -> ASGIApp:
        async def require_api_key(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and scope["method"] in WRITE_METHODS:
                authorized(scope["headers"], expected)
            await app(scope, receive, send)

        return require_api_key

    return middleware


def authorized(headers: Iterable[tuple[bytes, bytes]], expected: Sequence[bytes]) -> None:
    """Nothing if the request's one ``Authorization`` header is one of ``expected``; else 401."""
    sent = [value for name, value in headers if name == b"authorization"]
    header = sent[0] if len(sent) == 1 else b""
    accepted = False
    for key in expected:
        accepted |= hmac.compare_digest(header, key)
    if not accepted:
        raise NotAuthorizedException(
            detail="Writes need the header Authorization: Bearer <API key>.", headers=CHALLENGE
        )
