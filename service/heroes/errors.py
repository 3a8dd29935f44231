"""The heroes' own rows of the error table: each domain error and the answer it gets.

``create_app`` merges them with the generic rows of ``service.http.errors``; the descriptions
are what the OpenAPI document says of these answers on the hero operations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.heroes.queries import HeroChanged, HeroNotFound, UnknownTeam
from service.http.errors import ErrorDetail, answer, error_response

if TYPE_CHECKING:
    from litestar import Request, Response
    from litestar.types import ExceptionHandlersMap


def _unknown_team(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    detail = f"Validation failed for {request.method} {request.scope['path']}"
    said = [ErrorDetail("No team has this id", "team_id", "body")]
    return error_response(request, 422, detail, said)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HeroNotFound: answer(404, "Hero not found"),
    HeroChanged: answer(412, "The hero has changed since the ETag in If-Match was issued"),
    UnknownTeam: _unknown_team,
}
"""How the resource's domain errors are answered."""

ERROR_DESCRIPTIONS = {
    404: "No hero has this id.",
    412: "The hero is no longer at the ETag sent in If-Match; GET it again and retry.",
    422: (
        "`team_id` names no team, or the Idempotency-Key was used with another request body "
        "(send a new key)."
    ),
}
"""The OpenAPI document's words for the answers above, where the generic ones say less."""
