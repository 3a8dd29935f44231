"""The teams' own rows of the error table: each domain error and the answer it gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.http.errors import answer
from service.teams.queries import TeamChanged, TeamNotFound

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    TeamNotFound: answer(404, "Team not found"),
    TeamChanged: answer(412, "The team has changed since the ETag in If-Match was issued"),
}
"""How the resource's domain errors are answered."""

ERROR_DESCRIPTIONS = {
    404: "No team has this id.",
    412: "The team is no longer at the ETag sent in If-Match; GET it again and retry.",
}
"""The OpenAPI document's words for the answers above, where the generic ones say less."""
