"""The team routes: parse the request, call the queries, shape the answer; the ``RESOURCE``."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Tag
from litestar.params import Body, Parameter

from service.database.statements import Database
from service.database.tables import NAME_MAX_LENGTH
from service.http import etags, idempotency, parameters
from service.http.cursors import Pages
from service.http.decoding import NO_NUL
from service.http.errors import documented_errors
from service.http.parameters import MAX_PAGE
from service.http.resources import Resource
from service.http.responses import Deleted, JsonResponse
from service.teams import errors, openapi, queries
from service.teams.detail import TeamPublicWithHeroes, team_with_heroes
from service.teams.openapi import DOCS
from service.teams.queries import LIST, TEAMS, Filters, insert_team
from service.teams.schemas import TeamCreate, TeamPublic, TeamUpdate

PAGES = Pages(LIST)
"""The list's answers."""
ORDERS = PAGES.orders
"""The list's orders and cursors."""

documented = partial(documented_errors, descriptions=errors.ERROR_DESCRIPTIONS)
"""OpenAPI entries for the errors a team operation can answer, in the teams' words."""

TeamId = Annotated[int, parameters.row_id("team")]
TeamName = Annotated[
    str | None,
    Parameter(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NO_NUL,
        description="Only teams with exactly this name.",
    ),
]
TeamNamePrefix = Annotated[
    str | None,
    Parameter(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NO_NUL,
        description="Only teams whose name starts with this, ignoring the case of A-Z.",
    ),
]


class TeamController(Controller):
    """Create, read, update and delete teams."""

    path = "/teams"
    tags = ["teams"]
    response_class = JsonResponse

    @post(
        operation_id="createTeam",
        summary="Create a team",
        response_headers=DOCS.created_headers,
        responses=documented(400, 409, 413, 415, 422, 503),
        opt={idempotency.HONOURS_KEYS: True},
    )
    async def create_team(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        data: Annotated[TeamCreate, Body(examples=[openapi.CREATE_EXAMPLE])],
    ) -> JsonResponse[TeamPublic]:
        """Create a team. The answer carries its id, its URL in ``Location`` and its ``ETag``.

        Send an ``Idempotency-Key`` (a UUID, new for each team) to make the create safe to
        retry, as for heroes.
        """
        keyed = idempotency.key_for(request, "createTeam", data)
        (team, version), replayed = await insert_team(db, data, *keyed)
        return idempotency.created(team, version, replayed, f"/teams/{team.id}")

    @get(
        operation_id="listTeams",
        summary="List teams",
        response_headers=DOCS.page_headers,
        responses=documented(400, 503),
    )
    async def list_teams(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        offset: Annotated[int, parameters.offset("teams")] = 0,
        limit: Annotated[int, parameters.limit("teams")] = MAX_PAGE,
        name: TeamName = None,
        name_prefix: TeamNamePrefix = None,
        order_by: Annotated[str, parameters.order_by(ORDERS, openapi.ORDER_BY_DESCRIPTION)] = "id",
        cursor: Annotated[str | None, parameters.CURSOR] = None,
        count: Annotated[bool, parameters.COUNT] = False,
    ) -> JsonResponse[list[TeamPublic]]:
        """List teams, 100 at most per page, ordered by ``order_by`` (id by default).

        Pages as heroes' do: follow the ``Link: <...>; rel="next"`` header until a page comes
        without one.
        """
        filters = Filters(name, name_prefix)._asdict()
        return await PAGES.answer(
            request.scope,
            db,
            filters,
            order_by=order_by,
            cursor=cursor,
            offset=offset,
            limit=limit,
            count=count,
        )

    @get(
        "/{team_id:int}",
        operation_id="getTeam",
        summary="Get a team, with its first heroes",
        response_headers=[DOCS.etag_header, openapi.HEROES_LINK_HEADER],
        responses={**documented(400, 404, 503), **DOCS.not_modified},
    )
    async def get_team(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        team_id: TeamId,
    ) -> JsonResponse[TeamPublicWithHeroes]:
        """Get one team by id, with its first 20 heroes (by id) and its ``ETag``.

        When it has more heroes, ``Link: </heroes?team_id=N>; rel="related"`` lists them all.
        The ``ETag`` changes when the team or the heroes shown do; ``If-Match`` on a write
        compares the team's version alone.
        """
        team, version, shown, more = await team_with_heroes(db, team_id)
        related = {"Link": f'</heroes?team_id={team_id}>; rel="related"'} if more else None
        return etags.read_answer(request.scope, team, version, *shown, headers=related)

    @patch(
        "/{team_id:int}",
        operation_id="updateTeam",
        summary="Update a team",
        response_headers=[DOCS.etag_header],
        responses=documented(400, 404, 412, 413, 415, 503),
    )
    async def update_team(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        team_id: TeamId,
        data: Annotated[TeamUpdate, Body(examples=[openapi.UPDATE_EXAMPLE])],
    ) -> JsonResponse[TeamPublic]:
        """Change some of a team's fields. Omitted fields stay."""
        versions = etags.if_match(request.scope)
        team, version = await TEAMS.update(db, team_id, data.changes(), versions)
        return JsonResponse(team, headers={"ETag": etags.etag(version)})

    @delete(
        "/{team_id:int}",
        operation_id="deleteTeam",
        summary="Delete a team",
        status_code=200,
        responses=documented(400, 404, 412, 503),
    )
    async def delete_team(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        team_id: TeamId,
    ) -> Deleted:
        """Delete a team for good. Its heroes stay, without a team.

        In the same transaction each of its heroes gets ``team_id`` null, at a new version (a
        new ``ETag``).
        """
        await queries.delete_team(db, team_id, etags.if_match(request.scope))
        return Deleted()


RESOURCE = Resource(
    route_handlers=[TeamController],
    exception_handlers=errors.EXCEPTION_HANDLERS,
    tag=Tag(name="teams", description="The heroes' teams, as the SQLModel tutorial adds them."),
    complete_document=DOCS.complete_document,
    overview="Teams of heroes: create, list, read (with their heroes), update and delete them.",
)
"""The teams, as ``create_app`` serves them."""
