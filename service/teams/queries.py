"""The team SQL: the teams' records and list, the keyed create, and the delete; domain errors.

What every resource does alike is built by ``service.database.records``, ``pages`` and
``keyed``; here is what only teams do: the delete, which sets the team's heroes' ``team_id`` to
null in the same transaction (one statement on PostgreSQL, a unit of two on SQLite).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from service.database.keyed import KeyedCreates
from service.database.pages import Listing, equal, starts_with, text_key
from service.database.records import Records, Versions, now
from service.database.statements import Database, Run, Statement
from service.database.tables import NAME_MAX_LENGTH, Hero, Team
from service.http.idempotency import DAY, Created, RequestKey, create_once
from service.teams.schemas import TeamCreate, TeamPublic

teams = cast(sa.Table, Team.__table__)
heroes = cast(sa.Table, Hero.__table__)


class TeamNotFound(LookupError):
    """No team has the requested id."""


class TeamChanged(Exception):
    """The team's current version is not one the client named in ``If-Match``."""


TEAMS = Records(teams, TeamPublic, not_found=TeamNotFound, changed=TeamChanged)
"""The teams by id: read, created, and changed at a version."""
CREATES = KeyedCreates(TEAMS, ("name", "headquarters"))
"""The create, and the create at most once per ``Idempotency-Key``."""

LIST = Listing(
    teams,
    TeamPublic,
    keys={"name": text_key(teams.c.name, NAME_MAX_LENGTH)},
    filters=[equal("name", teams.c.name), starts_with("name_prefix", teams.c.name)],
)
"""The list of teams: by id or name (A-Z folded), filtered by name and name prefix."""


class Filters(NamedTuple):
    """What the list is narrowed to; None leaves a filter out."""

    name: str | None = None
    name_prefix: str | None = None


async def insert_team(
    db: Database, team: TeamCreate, key: RequestKey | None = None, retention: timedelta = DAY
) -> Created[TeamPublic]:
    """Store a new team and return it with its id; with a ``key``, at most once.

    See ``service.http.idempotency.create_once``.
    """
    values = {"name": team.name, "headquarters": team.headquarters}
    return await create_once(db, CREATES, values, key, retention)


_BY_ID = teams.c.id == sa.bindparam("row_id")
_AT_VERSION = teams.c.version == sa.bindparam("expected_version")
_FREED = {
    heroes.c.team_id: None,
    heroes.c.version: heroes.c.version + 1,
    heroes.c.updated_at: sa.bindparam("now", type_=heroes.c.updated_at.type),
}
"""What the delete does to each of the team's heroes: a write to the hero, its version up."""


def _delete_statement(*, conditional: bool) -> Statement[int]:
    """PostgreSQL: the team's delete and its heroes' update, one statement (data-modifying CTEs).

    The foreign key is checked at the end of the statement, when the heroes no longer name it.
    """
    where = [_BY_ID, *([_AT_VERSION] if conditional else [])]
    gone = sa.delete(teams).where(*where).returning(teams.c.id).cte("gone")
    freed = (
        sa.update(heroes)
        .where(heroes.c.team_id.in_(sa.select(gone.c.id)))
        .values(_FREED)
        .cte("freed")
    )
    return Statement(sa.select(gone.c.id).add_cte(freed), row=int, writes=True)


DELETES = {conditional: _delete_statement(conditional=conditional) for conditional in (False, True)}
"""The delete on PostgreSQL, without or with the version condition."""


def _free_statement(*, conditional: bool) -> Statement[Any]:
    """SQLite: the team's heroes' update, if the team is there (at the expected version)."""
    team = sa.select(teams.c.id).where(_BY_ID, *([_AT_VERSION] if conditional else []))
    return Statement(
        sa.update(heroes)
        .where(heroes.c.team_id == sa.bindparam("row_id"), sa.exists(team))
        .values(_FREED)
    )


FREES = {conditional: _free_statement(conditional=conditional) for conditional in (False, True)}


def _delete_unit(conditional: bool, params: dict[str, Any], run: Run) -> bool:
    """SQLite: the heroes freed, then the team deleted, in the writer's transaction."""
    run(FREES[conditional], params)
    return bool(run(TEAMS.deletes[conditional], params))


async def delete_team(db: Database, team_id: int, if_match: Versions) -> None:
    """Delete the team, if at a version ``if_match`` allows, and set its heroes' team to null.

    Both in one transaction: no hero is left naming a team that is gone, and none loses its
    team unless the team is deleted. Each freed hero's version goes up (its ``ETag`` changes).
    """
    for expected in [None] if if_match is None else if_match:
        conditional = expected is not None
        params = {"row_id": team_id, "expected_version": expected, "now": now()}
        if db.runs_units:
            unit = functools.partial(_delete_unit, conditional, params)
            deleted = await db.run_unit(unit)
        else:
            deleted = await db.fetch_one(DELETES[conditional], **params) is not None
        if deleted:
            return
    await TEAMS.get(db, team_id)
    raise TeamChanged
