"""The hero SQL: the heroes' records and list, and the keyed create; values or domain errors.

Statements are built once, in SQLAlchemy Core: by ``service.database.records`` (a hero by id,
with its version), ``service.database.pages`` (the list's pages, sorts and filters) and
``service.database.keyed`` (the create with an ``Idempotency-Key``), for what every resource
does alike. They run through ``service.database.statements``, which compiles them for
the database's driver and commits each before it returns.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple, cast

import sqlalchemy as sa

from service.database.faults import ReferenceMissing
from service.database.keyed import KeyedCreates
from service.database.pages import (
    Listing,
    at_least,
    at_most,
    equal,
    integer_key,
    starts_with,
    text_key,
)
from service.database.records import Records, Stored, Versions
from service.database.statements import Database
from service.database.tables import AGE_MAX, NAME_MAX_LENGTH, Hero
from service.heroes.schemas import HeroCreate, HeroPublic
from service.http.idempotency import DAY, Created, RequestKey, create_once

heroes = cast(sa.Table, Hero.__table__)


class HeroNotFound(LookupError):
    """No hero has the requested id."""


class HeroChanged(Exception):
    """The hero's current version is not one the client named in ``If-Match``."""


class UnknownTeam(Exception):
    """The hero's ``team_id`` names no team (the foreign key said so: no read before)."""


TEAM_FOREIGN_KEY = "heroes_team_id_fkey"
"""The foreign key of ``heroes.team_id``, as migration 0006 names it on PostgreSQL."""


def _unknown_team(refused: ReferenceMissing, team_id: object) -> Exception:
    """``UnknownTeam`` if the foreign key that failed is the team's, else the refusal as it is.

    SQLite names no constraint: a team was sent, and it is the hero's one reference.
    """
    if team_id is not None and refused.constraint in {None, TEAM_FOREIGN_KEY}:
        return UnknownTeam()
    return refused


HEROES = Records(heroes, HeroPublic, not_found=HeroNotFound, changed=HeroChanged)
"""The heroes by id: read, created, and changed or deleted at a version."""
SELECT_HERO = HEROES.select

LIST = Listing(
    heroes,
    HeroPublic,
    keys={
        "name": text_key(heroes.c.name, NAME_MAX_LENGTH),
        "age": integer_key(heroes.c.age, 0, AGE_MAX),
    },
    filters=[
        equal("name", heroes.c.name),
        starts_with("name_prefix", heroes.c.name),
        at_least("min_age", heroes.c.age),
        at_most("max_age", heroes.c.age),
        equal("team_id", heroes.c.team_id),
    ],
)
"""The list of heroes: by id, name (A-Z folded) or age, filtered by name, name prefix, age and
team."""


class Filters(NamedTuple):
    """What the list is narrowed to; None leaves a filter out."""

    name: str | None = None
    name_prefix: str | None = None
    min_age: int | None = None
    max_age: int | None = None
    team_id: int | None = None


CREATES = KeyedCreates(HEROES, ("name", "age", "secret_name", "team_id"))
"""The create, and the create at most once per ``Idempotency-Key``."""


async def insert_hero(
    db: Database, hero: HeroCreate, key: RequestKey | None = None, retention: timedelta = DAY
) -> Created[HeroPublic]:
    """Store a new hero and return it with its id.

    With a ``key``, at most once: see ``service.http.idempotency.create_once``.
    """
    values = {
        "name": hero.name,
        "age": hero.age,
        "secret_name": hero.secret_name,
        "team_id": hero.team_id,
    }
    try:
        return await create_once(db, CREATES, values, key, retention)
    except ReferenceMissing as refused:
        raise _unknown_team(refused, hero.team_id) from None


async def update_hero(
    db: Database, hero_id: int, changes: dict[str, object], if_match: Versions
) -> Stored[HeroPublic]:
    """Apply ``changes`` to the hero, at a version ``if_match`` allows (``HEROES.update``)."""
    try:
        return await HEROES.update(db, hero_id, changes, if_match)
    except ReferenceMissing as refused:
        raise _unknown_team(refused, changes.get("team_id")) from None
