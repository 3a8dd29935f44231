"""The hero SQL: each function is one or two statements, returning values or raising domain errors.

Statements are built once here, in SQLAlchemy Core, and run through ``service.sql``, which
compiles them for the database's driver and commits each before it returns.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from service.heroes.etags import Versions
from service.models import Hero
from service.schemas import HeroCreate, HeroPublic
from service.sql import Database, Row, Statement

heroes = cast(sa.Table, Hero.__table__)


class HeroNotFound(LookupError):
    """No hero has the requested id."""


class HeroChanged(Exception):
    """The hero's current version is not one the client named in ``If-Match``."""


class Stored(NamedTuple):
    """A hero as stored: its public form and its version (the ETag)."""

    hero: HeroPublic
    version: int

    @classmethod
    def from_row(cls, row: Row) -> Stored:
        """Split a (id, name, age, version) row."""
        return cls(HeroPublic(row[0], row[1], row[2]), row[3])


ROW = (heroes.c.id, heroes.c.name, heroes.c.age, heroes.c.version)
BY_ID = heroes.c.id == sa.bindparam("hero_id")
AT_VERSION = heroes.c.version == sa.bindparam("expected_version")

SELECT_HERO = Statement(sa.select(*ROW).where(BY_ID))
INSERT_HERO = Statement(
    sa.insert(heroes)
    .values(
        name=sa.bindparam("name"),
        age=sa.bindparam("age"),
        secret_name=sa.bindparam("secret_name"),
    )
    .returning(*ROW)
)
DELETE_HERO = {
    conditional: Statement(
        sa.delete(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .returning(heroes.c.id)
    )
    for conditional in (False, True)
}
SELECT_ONE = Statement(sa.select(sa.literal_column("1")))
"""The readiness probe's query."""


@functools.cache
def list_statement(*, by_name: bool, min_age: bool, max_age: bool) -> Statement:
    """The page query for one combination of filters."""
    filters = [
        heroes.c.name == sa.bindparam("name") if by_name else None,
        heroes.c.age >= sa.bindparam("min_age") if min_age else None,
        heroes.c.age <= sa.bindparam("max_age") if max_age else None,
    ]
    return Statement(
        sa.select(*ROW[:3])
        .where(*(f for f in filters if f is not None))
        .order_by(heroes.c.id)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )


@functools.cache
def update_statement(fields: frozenset[str], *, conditional: bool) -> Statement:
    """The UPDATE for one set of changed fields, optionally only at an expected version."""
    values: dict[Any, Any] = {heroes.c[f]: sa.bindparam(f) for f in sorted(fields)}
    values[heroes.c.version] = heroes.c.version + 1
    return Statement(
        sa.update(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .values(values)
        .returning(*ROW)
    )


async def select_hero(db: Database, hero_id: int) -> Stored:
    """The hero with ``hero_id``, or :class:`HeroNotFound`."""
    row = await db.fetch_one(SELECT_HERO, hero_id=hero_id)
    if row is None:
        raise HeroNotFound
    return Stored.from_row(row)


async def select_heroes(
    db: Database,
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
    rows = await db.fetch(
        query, offset=offset, limit=limit, name=name, min_age=min_age, max_age=max_age
    )
    return [HeroPublic(*row) for row in rows]


async def insert_hero(db: Database, hero: HeroCreate) -> Stored:
    """Store a new hero and return it with its id."""
    rows = await db.fetch(INSERT_HERO, name=hero.name, age=hero.age, secret_name=hero.secret_name)
    return Stored.from_row(rows[0])


async def patch_hero(
    db: Database, hero_id: int, changes: dict[str, Any], if_match: Versions
) -> Stored:
    """Apply ``changes`` to the hero with ``hero_id``, if it is at a version ``if_match`` allows."""
    if not changes:
        current = await select_hero(db, hero_id)
        if if_match is not None and current.version not in if_match:
            raise HeroChanged
        return current
    for expected in [None] if if_match is None else if_match:
        statement = update_statement(frozenset(changes), conditional=expected is not None)
        row = await db.fetch_one(statement, hero_id=hero_id, expected_version=expected, **changes)
        if row is not None:
            return Stored.from_row(row)
    await select_hero(db, hero_id)
    raise HeroChanged


async def remove_hero(db: Database, hero_id: int, if_match: Versions) -> None:
    """Delete the hero with ``hero_id``, if it is at a version ``if_match`` allows."""
    for expected in [None] if if_match is None else if_match:
        statement = DELETE_HERO[expected is not None]
        if await db.fetch_one(statement, hero_id=hero_id, expected_version=expected):
            return
    await select_hero(db, hero_id)
    raise HeroChanged
