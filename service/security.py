"""Who may write: the optional API key (service.openapi documents it)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.types import Guard

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
"""The methods that need the API key, when there is one; the OpenAPI document says so too."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="heroes"'}


def api_key_guard(api_key: str) -> Guard:
    """A guard that lets writes through only with ``Authorization: Bearer <api_key>``."""
    expected = f"Bearer {api_key}".encode()

    def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: object) -> None:
        if connection.scope.get("method") not in WRITE_METHODS:
            return
        sent = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, expected):
            raise NotAuthorizedException(
                detail="Writes need the header Authorization: Bearer <API key>.", headers=CHALLENGE
            )

    return require_api_key
