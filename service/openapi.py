"""Every change made to the OpenAPI document Litestar generates, in one place.

Litestar has no parameters for response links nor for a security scheme that only some
operations require, and derives a response header's schema from an example string, so
``complete_document`` adds and corrects them in the generated document at startup, before it
is first served. Operations are found by their ``operation_id``, or by their method
for the writes, never by path strings.
"""

from __future__ import annotations

from collections.abc import Iterator

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType

from service.errors import ERROR_DESCRIPTIONS
from service.security import WRITE_METHODS

NEW_HERO_LINKS = {
    operation_id: Link(
        operation_id=operation_id,
        parameters={"hero_id": "$response.body#/id"},
        description=f"The id in the answer is the hero_id of {operation_id}.",
    )
    for operation_id in ("getHero", "updateHero", "deleteHero")
}
"""createHero's answer leads to the new hero's get, update and delete."""

API_KEY_SCHEME = "apiKey"
UNAUTHORIZED = OpenAPIResponse(
    description=ERROR_DESCRIPTIONS[401],
    content={"application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/Error"))},
)


def complete_document(app: Litestar, *, api_key: bool) -> None:
    """Startup hook: add the links, and the API-key scheme if the service requires a key."""
    document = app.openapi_schema
    link_new_hero(document)
    count_as_integer(document)
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


def link_new_hero(document: OpenAPI) -> None:
    """Document that createHero's 201 answer leads to the new hero's get, update and delete."""
    response(document, "createHero", "201").links = dict(NEW_HERO_LINKS)


def count_as_integer(document: OpenAPI) -> None:
    """ListHeroes' ``X-Total-Count`` is an integer (Litestar made it a string, from its example)."""
    total = (response(document, "listHeroes", "200").headers or {}).get("X-Total-Count")
    if not isinstance(total, OpenAPIHeader):
        raise TypeError("listHeroes documents no X-Total-Count header")
    total.schema = Schema(type=OpenAPIType.INTEGER, minimum=0)


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
