"""A team as ``GET /teams/{team_id}`` shows it: with its first heroes, read in one statement.

The team's row and its first ``FIRST_HEROES`` heroes (by id) are one SELECT: the team, joined
to the page of heroes whose ``team_id`` names it (none: one row, the heroes' columns null). One
more hero than shown is read, to tell whether the rest is to be found at ``/heroes?team_id=N``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple, cast

import sqlalchemy as sa
from msgspec import Meta

from service.database.records import Stored
from service.database.statements import Database, Statement
from service.database.tables import Hero
from service.heroes.schemas import HeroPublic
from service.teams.queries import TEAMS, teams
from service.teams.schemas import TeamPublic

heroes = cast(sa.Table, Hero.__table__)

FIRST_HEROES = 20
"""Most heroes a team's answer shows; the rest are listed at ``/heroes?team_id=N``."""

_HERO_FIELDS: Sequence[str] = HeroPublic.__struct_fields__
_TEAM_COLUMNS = len(TEAMS.columns)


class TeamPublicWithHeroes(TeamPublic):
    """A team with its first heroes, by id; the ``Link`` header says where the rest are."""

    heroes: Annotated[
        list[HeroPublic],
        Meta(
            max_length=FIRST_HEROES,
            description=(
                f"The team's first heroes by id, {FIRST_HEROES} at most. When it has more, the "
                'answer\'s `Link: </heroes?team_id=N>; rel="related"` lists them all.'
            ),
        ),
    ]


class TeamRow(NamedTuple):
    """A row of ``SELECT_TEAM``: the team as stored, and one of its heroes (or None)."""

    team: Stored[TeamPublic]
    hero: Stored[HeroPublic] | None


def _row(*values: Any) -> TeamRow:
    team = TEAMS.stored(*values[:_TEAM_COLUMNS])
    hero_values = values[_TEAM_COLUMNS:]
    if hero_values[0] is None:
        return TeamRow(team, None)
    return TeamRow(team, Stored(HeroPublic(*hero_values[:-1]), hero_values[-1]))


_first = (
    sa.select(*(heroes.c[field] for field in _HERO_FIELDS), heroes.c.version)
    .where(heroes.c.team_id == sa.bindparam("row_id"))
    .order_by(heroes.c.id)
    .limit(FIRST_HEROES + 1)
    .subquery("first_heroes")
)
SELECT_TEAM = Statement(
    sa.select(*TEAMS.columns, *_first.c)
    .select_from(teams.outerjoin(_first, sa.true()))
    .where(teams.c.id == sa.bindparam("row_id"))
    .order_by(_first.c.id),
    row=_row,
)


class TeamDetail(NamedTuple):
    """What ``GET /teams/{team_id}`` answers: the team with its first heroes, and more to see."""

    team: TeamPublicWithHeroes
    version: int
    shown: tuple[int, ...]
    """What the ETag holds besides the team's version: a digest of the heroes shown."""
    more: bool
    """Whether the team has more heroes than shown."""


async def team_with_heroes(db: Database, team_id: int) -> TeamDetail:
    """The team with ``team_id`` and its first heroes, or ``TeamNotFound``."""
    rows = await db.fetch_all(SELECT_TEAM, row_id=team_id)
    if not rows:
        raise TEAMS.not_found
    team, version = rows[0].team
    found = [row.hero for row in rows if row.hero is not None]
    shown = found[:FIRST_HEROES]
    with_heroes = TeamPublicWithHeroes(
        team.id,
        team.name,
        team.headquarters,
        team.created_at,
        team.updated_at,
        [hero.public for hero in shown],
    )
    digest = (
        (zlib.crc32(",".join(f"{h.public.id}:{h.version}" for h in found).encode()),)
        if found
        else ()
    )
    return TeamDetail(with_heroes, version, digest, more=len(found) > FIRST_HEROES)
