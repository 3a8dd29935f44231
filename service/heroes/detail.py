"""A hero as ``GET /heroes/{hero_id}`` shows it: with its team, read in one statement (a join).

The SELECT names its columns one by one, and :func:`_row` takes them by name in that order:
each column a row carries costs the driver a conversion, so the team's id is not read again (it
is the hero's ``team_id``), and the row is made without slicing it.

On SQLite a column costs more: sqlite3 makes its name and asks its type with the GIL let go,
on every read, and each time is parsed by a call of its own. There the same columns come as one
JSON array (SQLite's ``json_array``, built in since SQLite 3.38), which msgspec decodes in one
call, times included (stored as UTC without a zone: ``Z`` is appended to the text).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

import msgspec
import sqlalchemy as sa

from service.database.statements import Database, Statement
from service.database.tables import Team, UTCDateTime
from service.heroes.queries import HEROES, heroes
from service.heroes.schemas import HeroPublic
from service.teams.schemas import TeamPublic

teams = cast(sa.Table, Team.__table__)


class HeroPublicWithTeam(HeroPublic):
    """A hero with its team, as ``GET /heroes/{hero_id}`` shows it; ``team`` absent without one."""

    team: TeamPublic | None = None


class HeroWithTeam(NamedTuple):
    """A row of ``SELECT_HERO``: the hero with its team, and their versions."""

    hero: HeroPublicWithTeam
    version: int
    shown: tuple[int, ...]
    """What the ETag holds besides the hero's version: its team's, if it has one."""


def _row(
    hero_id: int,
    name: str,
    age: int | None,
    created_at: datetime,
    updated_at: datetime,
    team_id: int | None,
    version: int,
    team_name: Any,
    headquarters: Any,
    team_created_at: Any,
    team_updated_at: Any,
    team_version: Any,
) -> HeroWithTeam:
    # The team's columns are null together, when team_id is: then there is no team.
    if team_id is None:
        hero = HeroPublicWithTeam(hero_id, name, age, created_at, updated_at)
        return HeroWithTeam(hero, version, ())
    team = TeamPublic(team_id, team_name, headquarters, team_created_at, team_updated_at)
    hero = HeroPublicWithTeam(hero_id, name, age, created_at, updated_at, team_id, team)
    return HeroWithTeam(hero, version, (team_version,))


_COLUMNS = (
    *HEROES.columns,
    teams.c.name,
    teams.c.headquarters,
    teams.c.created_at,
    teams.c.updated_at,
    teams.c.version,
)
_JOIN = heroes.outerjoin(teams, heroes.c.team_id == teams.c.id)
_BY_ID = heroes.c.id == sa.bindparam("row_id")

SELECT_HERO = Statement(sa.select(*_COLUMNS).select_from(_JOIN).where(_BY_ID), row=_row)
"""The hero and its team, one statement: the get-one stays one round trip."""


def _as_json(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """``column`` as a JSON value: a time as RFC 3339 text (SQLite stores it without its zone)."""
    if isinstance(column.type, UTCDateTime):
        return sa.type_coerce(column, sa.String).concat(sa.literal_column("'Z'"))
    return column


def _json_type(column: sa.Column[Any]) -> Any:
    """What msgspec reads ``column``'s value as; any of the team's may be null (no team)."""
    kind = datetime if isinstance(column.type, UTCDateTime) else column.type.python_type
    return kind | None if column.nullable or column.table is teams else kind


_JSON_ROW: msgspec.json.Decoder[tuple[Any, ...]] = msgspec.json.Decoder(
    tuple[tuple(map(_json_type, _COLUMNS))]  # type: ignore[misc]
)


def _row_from_json(text: str) -> HeroWithTeam:
    return _row(*_JSON_ROW.decode(text))


SELECT_HERO_ON_SQLITE = Statement(
    sa.select(sa.func.json_array(*map(_as_json, _COLUMNS), type_=sa.String))
    .select_from(_JOIN)
    .where(_BY_ID),
    row=_row_from_json,
)
"""SELECT_HERO as SQLite runs it: its columns in one JSON array (see the module's docstring)."""

if (*HeroPublic.__struct_fields__, "version") != tuple(c.name for c in HEROES.columns) or (
    TeamPublic.__struct_fields__ != ("id", "name", "headquarters", "created_at", "updated_at")
):
    raise TypeError("SELECT_HERO's columns and _row's parameters no longer match the structs")


async def hero_with_team(db: Database, hero_id: int) -> HeroWithTeam:
    """The hero with ``hero_id`` and its team, or ``HeroNotFound``."""
    statement = SELECT_HERO_ON_SQLITE if db.dialect_name == "sqlite" else SELECT_HERO
    found = await db.fetch_one(statement, row_id=hero_id)
    if found is None:
        raise HEROES.not_found
    return found
