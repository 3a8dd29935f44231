"""Who may write: the optional API key, and the OpenAPI security scheme that documents it."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    SecurityScheme,
)
from litestar.types import Guard

from service.errors import ERROR_DESCRIPTIONS

UNAUTHORIZED = OpenAPIResponse(
    description=ERROR_DESCRIPTIONS[401],
    content={"application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/Error"))},
)

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
SCHEME = "apiKey"
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

    def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: object) -> None:
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


def document_api_key(app: Litestar) -> None:
    """Declare the bearer scheme in OpenAPI and require it on every write operation."""
    openapi = app.openapi_schema
    components = openapi.components or Components()
    components.security_schemes = {
        **(components.security_schemes or {}),
        SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="The service's API_KEY; needed for POST, PATCH and DELETE.",
        ),
    }
    openapi.components = components
    for item in (openapi.paths or {}).values():
        for operation in (item.post, item.patch, item.put, item.delete):
            if operation is not None:
                operation.security = [{SCHEME: []}]
                operation.responses = {**(operation.responses or {}), "401": UNAUTHORIZED}
