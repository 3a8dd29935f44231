"""Who may write: the optional API key (service.http.openapi documents it)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.types import Guard

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
"""The methods that need the API key, when there is one; the OpenAPI document says so too."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="heroes"'}


def api_key_guard(api_keys: Sequence[str]) -> Guard:
    """A guard that lets writes through only with ``Authorization: Bearer <key>``.

    Any key of ``api_keys`` is accepted: while a key is rotated, the old and the new one work.

    The header is compared with every key, in constant time, and all comparisons run whatever
    their outcome, so the answer's timing tells neither which key nor how much of one matched.
    """
    expected = [f"Bearer {key}".encode() for key in api_keys]
    if not expected:
        raise ValueError("api_key_guard needs at least one key")

    # Async: Litestar would run a sync guard in a worker thread, on every request.
    async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: object) -> None:
        if connection.scope.get("method") not in WRITE_METHODS:
            return
        sent = connection.headers.get("authorization", "").encode()
        accepted = False
        for key in expected:
            accepted |= hmac.compare_digest(sent, key)
        if not accepted:
            raise NotAuthorizedException(
                detail="Writes need the header Authorization: Bearer <API key>.", headers=CHALLENGE
            )

    return require_api_key
