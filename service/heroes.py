"""The heroes API: a thin controller over the hero queries."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, NamedTuple, cast

import sqlalchemy as sa
from litestar import Controller, Litestar, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, Link, OpenAPIResponse
from litestar.params import Body, HeaderParameter, Parameter, ParameterKwarg
from sqlalchemy.orm import Session

from service.db import CompiledStatement
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


class HeroChanged(HTTPException):
    """The hero's current version is not one the client named in ``If-Match``."""

    status_code = 412

    def __init__(self) -> None:
        super().__init__(detail="The hero has changed since the ETag in If-Match was issued")


class Stored(NamedTuple):
    """A hero as stored: its public form and its version (the ETag)."""

    hero: HeroPublic
    version: int

    @classmethod
    def from_row(cls, row: tuple[int, str, int | None, int]) -> Stored:
        """Split a (id, name, age, version) row."""
        return cls(HeroPublic(row[0], row[1], row[2]), row[3])


ROW = (heroes.c.id, heroes.c.name, heroes.c.age, heroes.c.version)
BY_ID = heroes.c.id == sa.bindparam("hero_id")
AT_VERSION = heroes.c.version == sa.bindparam("expected_version")

SELECT_HERO = CompiledStatement(sa.select(*ROW).where(BY_ID))
INSERT_HERO = CompiledStatement(
    sa.insert(heroes)
    .values(
        name=sa.bindparam("name"),
        age=sa.bindparam("age"),
        secret_name=sa.bindparam("secret_name"),
    )
    .returning(*ROW)
)
DELETE_HERO = {
    conditional: CompiledStatement(
        sa.delete(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .returning(heroes.c.id)
    )
    for conditional in (False, True)
}


@functools.cache
def list_statement(*, by_name: bool, min_age: bool, max_age: bool) -> CompiledStatement:
    """The page query for one combination of filters."""
    filters = [
        heroes.c.name == sa.bindparam("name") if by_name else None,
        heroes.c.age >= sa.bindparam("min_age") if min_age else None,
        heroes.c.age <= sa.bindparam("max_age") if max_age else None,
    ]
    return CompiledStatement(
        sa.select(*ROW[:3])
        .where(*(f for f in filters if f is not None))
        .order_by(heroes.c.id)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )


@functools.cache
def update_statement(fields: frozenset[str], *, conditional: bool) -> CompiledStatement:
    """The UPDATE for one set of changed fields, optionally only at an expected version."""
    values: dict[Any, Any] = {heroes.c[f]: sa.bindparam(f) for f in sorted(fields)}
    values[heroes.c.version] = heroes.c.version + 1
    return CompiledStatement(
        sa.update(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .values(values)
        .returning(*ROW)
    )


def select_hero(session: Session, hero_id: int) -> Stored:
    """The hero with ``hero_id``, or :class:`HeroNotFound`."""
    row = SELECT_HERO.execute(session, hero_id=hero_id).fetchone()
    if row is None:
        raise HeroNotFound
    return Stored.from_row(row)


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
    query = list_statement(
        by_name=name is not None, min_age=min_age is not None, max_age=max_age is not None
    )
    rows = query.execute(
        session, offset=offset, limit=limit, name=name, min_age=min_age, max_age=max_age
    ).fetchall()
    return [HeroPublic(*row) for row in rows]


def insert_hero(session: Session, hero: HeroCreate) -> Stored:
    """Store a new hero and return it with its id."""
    row = INSERT_HERO.execute(
        session, name=hero.name, age=hero.age, secret_name=hero.secret_name
    ).fetchone()
    return Stored.from_row(row)


def patch_hero(
    session: Session, hero_id: int, changes: dict[str, Any], if_match: Versions
) -> Stored:
    """Apply ``changes`` to the hero with ``hero_id``, if it is at a version ``if_match`` allows."""
    if not changes:
        current = select_hero(session, hero_id)
        if if_match is not None and current.version not in if_match:
            raise HeroChanged
        return current
    for expected in [None] if if_match is None else if_match:
        statement = update_statement(frozenset(changes), conditional=expected is not None)
        row = statement.execute(
            session, hero_id=hero_id, expected_version=expected, **changes
        ).fetchone()
        if row is not None:
            return Stored.from_row(row)
    select_hero(session, hero_id)
    raise HeroChanged


def remove_hero(session: Session, hero_id: int, if_match: Versions) -> None:
    """Delete the hero with ``hero_id``, if it is at a version ``if_match`` allows."""
    for expected in [None] if if_match is None else if_match:
        statement = DELETE_HERO[expected is not None]
        if statement.execute(session, hero_id=hero_id, expected_version=expected).fetchone():
            return
    select_hero(session, hero_id)
    raise HeroChanged


Versions = list[int] | None
"""The versions an ``If-Match`` header allows, or None for any (no header, or ``*``)."""


def etag(version: int) -> str:
    """The strong entity tag of a hero version."""
    return f'"{version}"'


def allowed_versions(if_match: str | None) -> Versions:
    """The versions named in an ``If-Match`` header; weak or malformed tags match none."""
    if if_match is None or if_match.strip() == "*":
        return None
    tags = (tag.strip() for tag in if_match.split(","))
    return [int(tag[1:-1]) for tag in tags if ETAG.fullmatch(tag)]


def matches_any(if_none_match: str, version: int) -> bool:
    """Whether ``If-None-Match`` names ``version`` (weak comparison) or is ``*``."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag(version) in tags


ETAG = re.compile(r'"[0-9]{1,18}"')


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


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Write only if the hero is still at this ETag; otherwise 412.",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-None-Match",
        description="Answer 304 without a body if the hero is still at this ETag.",
    ),
]
ETAG_HEADER = ResponseHeader(
    name="ETag",
    value='"1"',  # an example, from which the schema is derived: never sent
    description="The hero's version; send it in If-Match to update or delete only that version.",
    required=True,
    documentation_only=True,
)


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
            ETAG_HEADER,
        ],
        responses=documented_errors(400, 413, 503),
        sync_to_thread=False,
    )
    def create_hero(
        self,
        transaction: NamedDependency[Session],
        data: Annotated[HeroCreate, Body(examples=[CREATE_EXAMPLE])],
    ) -> Response[HeroPublic]:
        """Create a hero. The answer carries its id, its URL in ``Location`` and its ``ETag``."""
        hero, version = insert_hero(transaction, data)
        headers = {"Location": f"/heroes/{hero.id}", "ETag": etag(version)}
        return Response(hero, status_code=201, headers=headers)

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
        response_headers=[ETAG_HEADER],
        responses={
            **documented_errors(400, 404, 503),
            304: ResponseSpec(None, description="The hero is still at the ETag in If-None-Match."),
        },
        sync_to_thread=False,
    )
    def get_hero(
        self,
        db_session: NamedDependency[Session],
        hero_id: HeroId,
        if_none_match: IfNoneMatch = None,
    ) -> Response[HeroPublic]:
        """Get one hero by id, with its ``ETag``."""
        hero, version = select_hero(db_session, hero_id)
        headers = {"ETag": etag(version), "Cache-Control": "no-cache"}
        if if_none_match is not None and matches_any(if_none_match, version):
            return Response(None, status_code=304, headers=headers)  # type: ignore[arg-type]
        return Response(hero, headers=headers)

    @patch(
        "/{hero_id:int}",
        operation_id="updateHero",
        summary="Update a hero",
        response_headers=[ETAG_HEADER],
        responses=documented_errors(400, 404, 412, 413, 503),
        sync_to_thread=False,
    )
    def update_hero(
        self,
        transaction: NamedDependency[Session],
        hero_id: HeroId,
        data: Annotated[HeroUpdate, Body(examples=[UPDATE_EXAMPLE])],
        if_match: IfMatch = None,
    ) -> Response[HeroPublic]:
        """Change some of a hero's fields. Omitted fields stay; ``"age": null`` clears the age."""
        hero, version = patch_hero(transaction, hero_id, data.changes(), allowed_versions(if_match))
        return Response(hero, headers={"ETag": etag(version)})

    @delete(
        "/{hero_id:int}",
        operation_id="deleteHero",
        summary="Delete a hero",
        status_code=200,
        responses=documented_errors(400, 404, 412, 503),
        sync_to_thread=False,
    )
    def delete_hero(
        self,
        transaction: NamedDependency[Session],
        hero_id: HeroId,
        if_match: IfMatch = None,
    ) -> Deleted:
        """Delete a hero for good."""
        remove_hero(transaction, hero_id, allowed_versions(if_match))
        return Deleted()
