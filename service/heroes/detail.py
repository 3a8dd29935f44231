"""A hero as ``GET /heroes/{hero_id}`` shows it: with its team, read in one statement (a join)."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from service.database.statements import Database, Statement
from service.database.tables import Team
from service.heroes.queries import HEROES, heroes
from service.heroes.schemas import HeroPublic
from service.teams.schemas import TeamPublic

teams = cast(sa.Table, Team.__table__)

_HERO_COLUMNS = len(HEROES.columns) - 1
_TEAM_FIELDS = TeamPublic.__struct_fields__


class HeroPublicWithTeam(HeroPublic, kw_only=True):
    """A hero with its team, as ``GET /heroes/{hero_id}`` shows it; ``team`` absent without one."""

    team: TeamPublic | None = None


class HeroWithTeam(NamedTuple):
    """A row of ``SELECT_HERO``: the hero with its team, the hero's version, the team's."""

    hero: HeroPublicWithTeam
    version: int
    team_version: int | None


def _row(*values: Any) -> HeroWithTeam:
    hero = values[:_HERO_COLUMNS]
    version = values[_HERO_COLUMNS]
    team_values = values[_HERO_COLUMNS + 1 :]
    team = None if team_values[0] is None else TeamPublic(*team_values[:-1])
    return HeroWithTeam(HeroPublicWithTeam(*hero, team=team), version, team_values[-1])


SELECT_HERO = Statement(
    sa.select(*HEROES.columns, *(teams.c[field] for field in _TEAM_FIELDS), teams.c.version)
    .select_from(heroes.outerjoin(teams, heroes.c.team_id == teams.c.id))
    .where(heroes.c.id == sa.bindparam("row_id")),
    row=_row,
)
"""The hero and its team, one statement: the get-one stays one round trip."""


async def hero_with_team(db: Database, hero_id: int) -> HeroWithTeam:
    """The hero with ``hero_id`` and its team, or ``HeroNotFound``."""
    found = await db.fetch_one(SELECT_HERO, row_id=hero_id)
    if found is None:
        raise HEROES.not_found
    return found
