"""The hero routes: parse the request, call the queries, shape the answer; the ``RESOURCE``."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Tag
from litestar.params import Body, Parameter

from service.database.statements import Database
from service.database.tables import AGE_MAX, ID_MAX, NAME_MAX_LENGTH
from service.heroes import errors, openapi
from service.heroes.detail import HeroPublicWithTeam, hero_with_team
from service.heroes.openapi import DOCS
from service.heroes.queries import HEROES, LIST, Filters, insert_hero, update_hero
from service.heroes.schemas import HeroCreate, HeroPublic, HeroUpdate
from service.http import etags, idempotency, parameters
from service.http.cursors import Pages
from service.http.decoding import NO_NUL
from service.http.errors import documented_errors
from service.http.parameters import MAX_PAGE, bounded
from service.http.resources import Resource
from service.http.responses import Deleted, JsonResponse

PAGES = Pages(LIST)
"""The list's answers."""
ORDERS = PAGES.orders
"""The list's orders and cursors."""

documented = partial(documented_errors, descriptions=errors.ERROR_DESCRIPTIONS)
"""OpenAPI entries for the errors a hero operation can answer, in the heroes' words."""

HeroId = Annotated[int, parameters.row_id("hero")]


class HeroController(Controller):
    """Create, read, update and delete heroes."""

    path = "/heroes"
    tags = ["heroes"]
    response_class = JsonResponse

    @post(
        operation_id="createHero",
        summary="Create a hero",
        response_headers=DOCS.created_headers,
        responses=documented(400, 409, 413, 415, 422, 503),
        opt={idempotency.HONOURS_KEYS: True},
    )
    async def create_hero(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        data: Annotated[HeroCreate, Body(examples=[openapi.CREATE_EXAMPLE])],
    ) -> JsonResponse[HeroPublic]:
        """Create a hero. The answer carries its id, its URL in ``Location`` and its ``ETag``.

        Send an ``Idempotency-Key`` (a UUID, new for each hero) to make the create safe to
        retry: the same key with the same body, within 24 hours by default, creates nothing
        and answers the first result again, with ``Idempotent-Replayed: true``. Each API key
        has keys of its own.
        """
        keyed = idempotency.key_for(request, "createHero", data)
        (hero, version), replayed = await insert_hero(db, data, *keyed)
        return idempotency.created(hero, version, replayed, f"/heroes/{hero.id}")

    @get(
        operation_id="listHeroes",
        summary="List heroes",
        response_headers=DOCS.page_headers,
        responses=documented(400, 503),
    )
    async def list_heroes(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        offset: Annotated[int, parameters.offset("heroes")] = 0,
        limit: Annotated[int, parameters.limit("heroes")] = MAX_PAGE,
        name: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=NAME_MAX_LENGTH,
                pattern=NO_NUL,
                description="Only heroes with exactly this name.",
            ),
        ] = None,
        name_prefix: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=NAME_MAX_LENGTH,
                pattern=NO_NUL,
                description=(
                    "Only heroes whose name starts with this, ignoring the case of A-Z "
                    "(`dead` finds Deadpond; other letters match exactly)."
                ),
            ),
        ] = None,
        min_age: Annotated[
            int | None, bounded(0, AGE_MAX, "Only heroes at least this old.")
        ] = None,
        max_age: Annotated[int | None, bounded(0, AGE_MAX, "Only heroes at most this old.")] = None,
        team_id: Annotated[
            int | None, bounded(1, ID_MAX, "Only the heroes of the team with this id.")
        ] = None,
        order_by: Annotated[str, parameters.order_by(ORDERS, openapi.ORDER_BY_DESCRIPTION)] = "id",
        cursor: Annotated[str | None, parameters.CURSOR] = None,
        count: Annotated[bool, parameters.COUNT] = False,
    ) -> JsonResponse[list[HeroPublic]]:
        """List heroes, 100 at most per page, ordered by ``order_by`` (id by default).

        Every full page carries a ``Link: <...>; rel="next"`` header: follow it to the next page
        until a page comes without one. That walk lists every hero that exists throughout it
        exactly once, even while heroes are created and deleted. ``offset`` pages work too, but
        skip or repeat heroes when earlier ones are deleted or created meanwhile.
        """
        filters = Filters(name, name_prefix, min_age, max_age, team_id)._asdict()
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
        "/{hero_id:int}",
        operation_id="getHero",
        summary="Get a hero",
        response_headers=[DOCS.etag_header],
        responses={**documented(400, 404, 503), **DOCS.not_modified},
    )
    async def get_hero(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        hero_id: HeroId,
    ) -> JsonResponse[HeroPublicWithTeam]:
        """Get one hero by id, with its ``team`` (absent without one) and its ``ETag``.

        The ``ETag`` changes when the hero or its team does (``"3.7"``: the hero at 3, its team
        at 7); ``If-Match`` on a write compares the hero's version alone.
        """
        hero, version, shown = await hero_with_team(db, hero_id)
        return etags.read_answer(request.scope, hero, version, *shown)

    @patch(
        "/{hero_id:int}",
        operation_id="updateHero",
        summary="Update a hero",
        response_headers=[DOCS.etag_header],
        responses=documented(400, 404, 412, 413, 415, 422, 503),
    )
    async def update_hero(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        hero_id: HeroId,
        data: Annotated[HeroUpdate, Body(examples=[openapi.UPDATE_EXAMPLE])],
    ) -> JsonResponse[HeroPublic]:
        """Change some of a hero's fields. Omitted fields stay; null clears the age or the team."""
        versions = etags.if_match(request.scope)
        hero, version = await update_hero(db, hero_id, data.changes(), versions)
        return JsonResponse(hero, headers={"ETag": etags.etag(version)})

    @delete(
        "/{hero_id:int}",
        operation_id="deleteHero",
        summary="Delete a hero",
        status_code=200,
        responses=documented(400, 404, 412, 503),
    )
    async def delete_hero(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        hero_id: HeroId,
    ) -> Deleted:
        """Delete a hero for good."""
        await HEROES.delete(db, hero_id, etags.if_match(request.scope))
        return Deleted()


RESOURCE = Resource(
    route_handlers=[HeroController],
    exception_handlers=errors.EXCEPTION_HANDLERS,
    tag=Tag(name="heroes", description="The heroes of the SQL tutorial."),
    complete_document=DOCS.complete_document,
    overview="The heroes of the SQL tutorial: create, list, read, update and delete them.",
)
"""The heroes, as ``create_app`` serves them."""
