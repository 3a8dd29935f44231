"""The changes made to the OpenAPI document Litestar generates, run at startup.

Litestar has no parameters for response links nor for a security scheme that only some
operations require, and derives a response header's schema from an example string, so
``complete_document`` adds and corrects them in the generated document at startup, before it
is first served: the API-key scheme here, and what each resource adds of its own (its
``Resource.complete_document``). Operations are found by their ``operation_id``, or by their
method for the writes, never by path strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    SecurityScheme,
)

from service.http.errors import ERROR_DESCRIPTIONS
from service.http.security import WRITE_METHODS

API_KEY_SCHEME = "apiKey"
UNAUTHORIZED = OpenAPIResponse(
    description=ERROR_DESCRIPTIONS[401],
    content={"application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/Error"))},
)


def complete_document(
    app: Litestar, *, additions: Iterable[Callable[[OpenAPI], None]], api_key: bool
) -> None:
    """Startup hook: the resources' ``additions``, and the API-key scheme if a key is required."""
    document = app.openapi_schema
    for add in additions:
        add(document)
    if api_key:
        document_api_key(document)


def operations(document: OpenAPI) -> Iterator[tuple[str, Operation]]:
    """Every operation of the document, with its HTTP method in capitals."""
    for item in (document.paths or {}).values():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            if (operation := getattr(item, method)) is not None:
                yield method.upper(), operation


def operation(document: OpenAPI, operation_id: str) -> Operation:
    """The operation with ``operation_id``; KeyError if the document has none."""
    for _, found in operations(document):
        if found.operation_id == operation_id:
            return found
    raise KeyError(f"no operation {operation_id!r} in the document")


def response(document: OpenAPI, operation_id: str, status: str) -> OpenAPIResponse:
    """The documented ``status`` answer of the operation ``operation_id``."""
    found = (operation(document, operation_id).responses or {}).get(status)
    if not isinstance(found, OpenAPIResponse):
        raise TypeError(f"{operation_id} has no documented {status} response")
    return found


def document_api_key(document: OpenAPI) -> None:
    """Declare the bearer scheme and require it, with its 401, on every write operation."""
    components = document.components or Components()
    components.security_schemes = {
        **(components.security_schemes or {}),
        API_KEY_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="The service's API_KEY; needed for POST, PATCH and DELETE.",
        ),
    }
    document.components = components
    for method, write in operations(document):
        if method in WRITE_METHODS:
            write.security = [{API_KEY_SCHEME: []}]
            write.responses = {**(write.responses or {}), "401": UNAUTHORIZED}
