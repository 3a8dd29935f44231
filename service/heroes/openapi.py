"""What the heroes add to the generated OpenAPI document (see ``service.http.openapi``)."""

from __future__ import annotations

from litestar.openapi.spec import Link, OpenAPI, OpenAPIHeader, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.http.openapi import response

NEW_HERO_LINKS = {
    operation_id: Link(
        operation_id=operation_id,
        parameters={"hero_id": "$response.body#/id"},
        description=f"The id in the answer is the hero_id of {operation_id}.",
    )
    for operation_id in ("getHero", "updateHero", "deleteHero")
}
"""createHero's answer leads to the new hero's get, update and delete."""


def complete_document(document: OpenAPI) -> None:
    """Add createHero's links and make listHeroes' ``X-Total-Count`` an integer."""
    link_new_hero(document)
    count_as_integer(document)


def link_new_hero(document: OpenAPI) -> None:
    """Document that createHero's 201 answer leads to the new hero's get, update and delete."""
    response(document, "createHero", "201").links = dict(NEW_HERO_LINKS)


def count_as_integer(document: OpenAPI) -> None:
    """ListHeroes' ``X-Total-Count`` is an integer (Litestar made it a string, from its example)."""
    total = (response(document, "listHeroes", "200").headers or {}).get("X-Total-Count")
    if not isinstance(total, OpenAPIHeader):
        raise TypeError("listHeroes documents no X-Total-Count header")
    total.schema = Schema(type=OpenAPIType.INTEGER, minimum=0)
