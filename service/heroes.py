"""The heroes API: a thin controller over the hero queries."""

from __future__ import annotations

from typing import Annotated, cast

import sqlalchemy as sa
from litestar import Controller, Litestar, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import Example, Link, OpenAPIResponse
from litestar.params import Body, Parameter, ParameterKwarg
from sqlalchemy.orm import Session

from service.errors import documented_errors
from service.models import AGE_MAX, ID_MAX, NAME_MAX_LENGTH, Hero
from service.schemas import NO_NUL, Deleted, HeroCreate, HeroPublic, HeroUpdate

MAX_PAGE = 100
"""Most heroes one list request returns."""

heroes = cast(sa.Table, Hero.__table__)
PUBLIC_COLUMNS = (heroes.c.id, heroes.c.name, heroes.c.age)


def bounded(ge: int, le: int, description: str) -> ParameterKwarg:
    """An integer parameter in ``[ge, le]``.

    The bounds are restated as ``schema_extra`` because Litestar writes them to the OpenAPI
    document as floats, which cannot hold 2**63 - 1 exactly.
    """
    kwarg: ParameterKwarg = Parameter(
        ge=ge, le=le, description=description, schema_extra={"minimum": ge, "maximum": le}
    )
    return kwarg


HeroId = Annotated[int, bounded(1, ID_MAX, "The hero's id.")]


class HeroNotFound(NotFoundException):
    """No hero has the requested id."""

    def __init__(self) -> None:
        super().__init__(detail="Hero not found")


def select_hero(session: Session, hero_id: int) -> HeroPublic:
    """The hero with ``hero_id``, or :class:`HeroNotFound`."""
    row = session.execute(sa.select(*PUBLIC_COLUMNS).where(heroes.c.id == hero_id)).first()
    if row is None:
        raise HeroNotFound
    return HeroPublic(*row)


def select_heroes(
    session: Session,
    *,
    offset: int,
    limit: int,
    name: str | None,
    min_age: int | None,
    max_age: int | None,
) -> list[HeroPublic]:
    """One page of heroes matching the filters, ordered by id."""
    query = sa.select(*PUBLIC_COLUMNS).order_by(heroes.c.id).offset(offset).limit(limit)
    if name is not None:
        query = query.where(heroes.c.name == name)
    if min_age is not None:
        query = query.where(heroes.c.age >= min_age)
    if max_age is not None:
        query = query.where(heroes.c.age <= max_age)
    return [HeroPublic(*row) for row in session.execute(query)]


def insert_hero(session: Session, hero: HeroCreate) -> HeroPublic:
    """Store a new hero and return it with its id."""
    row = session.execute(
        sa.insert(heroes)
        .values(name=hero.name, age=hero.age, secret_name=hero.secret_name)
        .returning(*PUBLIC_COLUMNS)
    ).one()
    return HeroPublic(*row)


def patch_hero(session: Session, hero_id: int, changes: dict[str, object]) -> HeroPublic:
    """Apply ``changes`` to the hero with ``hero_id`` and return the result."""
    if not changes:
        return select_hero(session, hero_id)
    row = session.execute(
        sa.update(heroes)
        .where(heroes.c.id == hero_id)
        .values({**changes, heroes.c.version: heroes.c.version + 1})
        .returning(*PUBLIC_COLUMNS)
    ).first()
    if row is None:
        raise HeroNotFound
    return HeroPublic(*row)


def remove_hero(session: Session, hero_id: int) -> None:
    """Delete the hero with ``hero_id``."""
    deleted = session.execute(
        sa.delete(heroes).where(heroes.c.id == hero_id).returning(heroes.c.id)
    ).first()
    if deleted is None:
        raise HeroNotFound


CREATE_EXAMPLE = Example(
    summary="A hero with an age",
    value={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30},
)
UPDATE_EXAMPLE = Example(summary="Rename a hero", value={"name": "Deadpool"})


NEW_HERO_LINKS = {
    operation_id: Link(
        operation_id=operation_id,
        parameters={"hero_id": "$response.body#/id"},
        description=f"The id in the answer is the hero_id of {operation_id}.",
    )
    for operation_id in ("getHero", "updateHero", "deleteHero")
}


def link_new_hero(app: Litestar) -> None:
    """Document in OpenAPI that createHero's answer leads to the new hero's get, update, delete.

    Litestar has no parameter for response links, so they are added to the generated document.
    """
    create_operation = app.openapi_schema.paths["/heroes"].post  # type: ignore[index]
    created = (
        create_operation.responses["201"]
        if create_operation and create_operation.responses
        else None
    )
    if not isinstance(created, OpenAPIResponse):
        raise TypeError("createHero has no documented 201 response to link from")
    created.links = dict(NEW_HERO_LINKS)


class HeroController(Controller):
    """Create, read, update and delete heroes."""

    path = "/heroes"
    tags = ["heroes"]

    @post(
        operation_id="createHero",
        summary="Create a hero",
        response_headers=[
            ResponseHeader(
                name="Location",
                value="/heroes/1",  # an example, from which the schema is derived: never sent
                description="The new hero's URL.",
                required=True,
                documentation_only=True,
            ),
        ],
        responses=documented_errors(400, 413, 503),
        sync_to_thread=False,
    )
    def create_hero(
        self,
        transaction: NamedDependency[Session],
        data: Annotated[HeroCreate, Body(examples=[CREATE_EXAMPLE])],
    ) -> Response[HeroPublic]:
        """Create a hero. The answer carries the hero's id and its URL in ``Location``."""
        hero = insert_hero(transaction, data)
        return Response(hero, status_code=201, headers={"Location": f"/heroes/{hero.id}"})

    @get(
        operation_id="listHeroes",
        summary="List heroes",
        responses=documented_errors(400, 503),
        sync_to_thread=False,
    )
    def list_heroes(
        self,
        db_session: NamedDependency[Session],
        offset: Annotated[int, bounded(0, ID_MAX, "Heroes to skip.")] = 0,
        limit: Annotated[int, bounded(1, MAX_PAGE, "Most heroes to return.")] = MAX_PAGE,
        name: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=NAME_MAX_LENGTH,
                pattern=NO_NUL,
                description="Only heroes with exactly this name.",
            ),
        ] = None,
        min_age: Annotated[
            int | None, bounded(0, AGE_MAX, "Only heroes at least this old.")
        ] = None,
        max_age: Annotated[int | None, bounded(0, AGE_MAX, "Only heroes at most this old.")] = None,
    ) -> list[HeroPublic]:
        """List heroes ordered by id. Walk the pages with ``offset`` and ``limit``."""
        return select_heroes(
            db_session, offset=offset, limit=limit, name=name, min_age=min_age, max_age=max_age
        )

    @get(
        "/{hero_id:int}",
        operation_id="getHero",
        summary="Get a hero",
        responses=documented_errors(400, 404, 503),
        sync_to_thread=False,
    )
    def get_hero(self, db_session: NamedDependency[Session], hero_id: HeroId) -> HeroPublic:
        """Get one hero by id."""
        return select_hero(db_session, hero_id)

    @patch(
        "/{hero_id:int}",
        operation_id="updateHero",
        summary="Update a hero",
        responses=documented_errors(400, 404, 413, 503),
        sync_to_thread=False,
    )
    def update_hero(
        self,
        transaction: NamedDependency[Session],
        hero_id: HeroId,
        data: Annotated[HeroUpdate, Body(examples=[UPDATE_EXAMPLE])],
    ) -> HeroPublic:
        """Change some of a hero's fields. Omitted fields stay; ``"age": null`` clears the age."""
        return patch_hero(transaction, hero_id, data.changes())

    @delete(
        "/{hero_id:int}",
        operation_id="deleteHero",
        summary="Delete a hero",
        status_code=200,
        responses=documented_errors(400, 404, 503),
        sync_to_thread=False,
    )
    def delete_hero(self, transaction: NamedDependency[Session], hero_id: HeroId) -> Deleted:
        """Delete a hero for good."""
        remove_hero(transaction, hero_id)
        return Deleted()
