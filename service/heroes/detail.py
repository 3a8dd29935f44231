"""A hero as ``GET /heroes/{hero_id}`` shows it: with its team, read in one statement (a join).

The SELECT names its columns one by one, and :func:`_row` takes them by name in that order:
each column a row carries costs the driver a conversion, and on SQLite more (the column's
type and value are asked for each, the GIL let go around each ask), so the team's id is not
read again (it is the hero's ``team_id``), and the row is made without slicing it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from service.database.statements import Database, Statement
from service.database.tables import Team
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


SELECT_HERO = Statement(
    sa.select(
        *HEROES.columns,
        teams.c.name,
        teams.c.headquarters,
        teams.c.created_at,
        teams.c.updated_at,
        teams.c.version,
    )
    .select_from(heroes.outerjoin(teams, heroes.c.team_id == teams.c.id))
    .where(heroes.c.id == sa.bindparam("row_id")),
    row=_row,
)
"""The hero and its team, one statement: the get-one stays one round trip."""

if (*HeroPublic.__struct_fields__, "version") != tuple(c.name for c in HEROES.columns) or (
    TeamPublic.__struct_fields__ != ("id", "name", "headquarters", "created_at", "updated_at")
):
    raise TypeError("SELECT_HERO's columns and _row's parameters no longer match the structs")


async def hero_with_team(db: Database, hero_id: int) -> HeroWithTeam:
    """The hero with ``hero_id`` and its team, or ``HeroNotFound``."""
    found = await db.fetch_one(SELECT_HERO, row_id=hero_id)
    if found is None:
        raise HEROES.not_found
    return found
