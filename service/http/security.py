"""Who may write: the optional API key (service.http.openapi documents it), and who wrote."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Middleware, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
"""The methods that need the API key, when there is one; the OpenAPI document says so too."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="heroes"'}
ANONYMOUS = "anonymous"
"""The credential of every write when the service runs without API keys."""
CREDENTIAL_STATE = "credential"
"""Where the request's scope state keeps the credential of a write that passed the key check."""


def credential_of(api_key: str) -> str:
    """What the service stores of an API key to tell its writes apart: a digest, never the key.

    The SHA-256 of the key, in hex (64 characters); ``ANONYMOUS`` is never one.
    """
    return hashlib.sha256(api_key.encode()).hexdigest()


def credential(scope: Scope) -> str:
    """The credential the request was let through with: its API key's digest, or ``ANONYMOUS``.

    Each credential has idempotency keys of its own (``service.http.idempotency``).
    """
    found: str = scope["state"].get(CREDENTIAL_STATE, ANONYMOUS)
    return found


def api_key_required(api_keys: Sequence[str]) -> Middleware:
    """An app-level middleware that lets writes through only with ``Authorization: Bearer <key>``.

    Any key of ``api_keys`` is accepted: while a key is rotated, the old and the new one work.

    The header is compared with every key, in constant time, and all comparisons run whatever
    their outcome, so the answer's timing tells neither which key nor how much of one matched.
    A middleware runs after routing, as a guard would (an unknown path is 404, a wrong method
    405), without the copy of the route handler Litestar 2 makes for each guard call.
    """
    expected = {f"Bearer {key}".encode(): credential_of(key) for key in api_keys}
    if not expected:
        raise ValueError("api_key_required needs at least one key")

    def middleware(app: ASGIApp) -> ASGIApp:
        async def require_api_key(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and scope["method"] in WRITE_METHODS:
                scope["state"][CREDENTIAL_STATE] = authorized(scope["headers"], expected)
            await app(scope, receive, send)

        return require_api_key

    return middleware


def authorized(headers: Iterable[tuple[bytes, bytes]], expected: Mapping[bytes, str]) -> str:
    """The credential of the request's one ``Authorization`` header; 401 if it is none.

    ``expected`` maps each accepted header value to its key's credential.
    """
    sent = [value for name, value in headers if name == b"authorization"]
    header = sent[0] if len(sent) == 1 else b""
    accepted = None
    for key, its_credential in expected.items():
        if hmac.compare_digest(header, key):
            accepted = its_credential
    if accepted is None:
        raise NotAuthorizedException(
            detail="Writes need the header Authorization: Bearer <API key>.", headers=CHALLENGE
        )
    return accepted
