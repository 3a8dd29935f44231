"""The heroes' own rows of the error table: each domain error and the answer it gets.

``create_app`` merges them with the generic rows of ``service.http.errors``; the descriptions
are what the OpenAPI document says of these answers on the hero operations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.heroes.queries import HeroChanged, HeroNotFound
from service.http.errors import answer

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HeroNotFound: answer(404, "Hero not found"),
    HeroChanged: answer(412, "The hero has changed since the ETag in If-Match was issued"),
}
"""How the resource's domain errors are answered."""

ERROR_DESCRIPTIONS = {
    404: "No hero has this id.",
    412: "The hero is no longer at the ETag sent in If-Match; GET it again and retry.",
}
"""The OpenAPI document's words for the answers above, where the generic ones say less."""
