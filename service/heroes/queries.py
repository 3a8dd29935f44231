"""The hero SQL: each function is one or two statements, returning values or raising domain errors.

Statements are built once here, in SQLAlchemy Core, and run through
``service.database.statements``, which compiles them for the database's driver and commits each
before it returns. One file past 300
lines on purpose: every statement the heroes resource sends, pages and cursors included, is
here, for the EXPLAIN tests and for a reader checking what reaches the database.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

import sqlalchemy as sa

from service.database.statements import Database, InProgress, Run, Statement
from service.database.tables import Hero, IdempotencyKey
from service.heroes.cursors import Position, Sort, prefix_range
from service.heroes.etags import Versions
from service.heroes.schemas import HeroCreate, HeroPublic
from service.http.idempotency import KeyInProgress, KeyReused, RequestKey

heroes = cast(sa.Table, Hero.__table__)
keys = cast(sa.Table, IdempotencyKey.__table__)


class HeroNotFound(LookupError):
    """No hero has the requested id."""


class HeroChanged(Exception):
    """The hero's current version is not one the client named in ``If-Match``."""


DAY = timedelta(days=1)


class Created(NamedTuple):
    """A create's answer: the hero, and whether it is the first answer given again."""

    stored: Stored
    replayed: bool


class Stored(NamedTuple):
    """A hero as stored: its public form and its version (the ETag)."""

    public: HeroPublic
    version: int


def stored(
    id: int, name: str, age: int | None, created_at: datetime, updated_at: datetime, version: int
) -> Stored:
    """A row of the ``ROW`` columns, named."""
    return Stored(HeroPublic(id, name, age, created_at, updated_at), version)


class StoredKey(NamedTuple):
    """A row of ``SELECT_KEY``: an idempotency key as stored, with the hero it created."""

    request_hash: bytes
    hero_id: int
    created_at: datetime


PUBLIC = tuple(heroes.c[field] for field in HeroPublic.__struct_fields__)
ROW = (*PUBLIC, heroes.c.version)
BY_ID = heroes.c.id == sa.bindparam("hero_id")
AT_VERSION = heroes.c.version == sa.bindparam("expected_version")

SELECT_HERO = Statement(sa.select(*ROW).where(BY_ID), row=stored)
INSERT_HERO = Statement(
    sa.insert(heroes)
    .values(
        name=sa.bindparam("name"),
        age=sa.bindparam("age"),
        secret_name=sa.bindparam("secret_name"),
        created_at=sa.bindparam("now", type_=heroes.c.created_at.type),
        updated_at=sa.bindparam("now", type_=heroes.c.updated_at.type),
    )
    .returning(*ROW),
    row=stored,
)
FIRST_VERSION = 1
"""The version of a new hero (the column's default)."""

# Idempotency keys (see IdempotencyKey). On SQLite a keyed create is a unit of these statements
# in the writer's transaction; on PostgreSQL it is CREATE_ONCE, one statement.
KEY_TIME = keys.c.created_at.type
FORGET_AT_ONCE = 2
"""Expired keys a keyed create deletes: more than it adds, so they never pile up."""
SELECT_KEY = Statement(
    sa.select(keys.c.request_hash, keys.c.hero_id, keys.c.created_at).where(
        keys.c.key == sa.bindparam("key"),
        keys.c.created_at > sa.bindparam("cutoff", type_=KEY_TIME),
    ),
    row=StoredKey,
)
FORGET_KEYS = Statement(
    sa.delete(keys).where(
        (keys.c.key == sa.bindparam("key"))
        | keys.c.key.in_(
            sa.select(keys.c.key)
            .where(keys.c.created_at <= sa.bindparam("cutoff", type_=KEY_TIME))
            .order_by(keys.c.created_at)
            .limit(FORGET_AT_ONCE)
        )
    )
)
INSERT_KEY = Statement(
    sa.insert(keys).values(
        key=sa.bindparam("key"),
        request_hash=sa.bindparam("request_hash"),
        hero_id=sa.bindparam("hero_id"),
        created_at=sa.bindparam("now", type_=KEY_TIME),
    )
)
BUSY = None
"""A keyed create that did not run: one with the same key is running."""


def keyed_create(
    outcome: str,
    id: Any,
    name: Any,
    age: Any,
    created_at: Any,
    updated_at: Any,
    version: Any,
    request_hash: Any,
) -> Stored | StoredKey | None:
    """A row of ``CREATE_ONCE``: the hero created, the key found stored, or ``BUSY``."""
    if outcome == "created":
        return stored(id, name, age, created_at, updated_at, version)
    if outcome == "found":
        return StoredKey(request_hash, id, created_at)
    return BUSY


CREATE_ONCE = Statement(
    # PostgreSQL only, and clearer as SQL. The key's row is inserted first, under an id taken
    # from the heroes' sequence, and the hero only if the key's row was: the key's unique index
    # decides, even for a key committed by another create after this statement's snapshot. An
    # expired key's row is taken over. The advisory lock (held to the end of the statement's
    # transaction) tells a create still running with the same key ("busy"), without waiting.
    sa.text(
        """
        WITH lock AS (
            SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0)) AS free
        ), found AS (
            SELECT request_hash, hero_id, created_at FROM idempotency_keys
            WHERE key = :key AND created_at > :cutoff
        ), new_id AS (
            SELECT nextval(pg_get_serial_sequence('heroes', 'id')) AS id FROM lock
            WHERE free AND NOT EXISTS (SELECT FROM found)
        ), new_key AS (
            INSERT INTO idempotency_keys (key, request_hash, hero_id, created_at)
            SELECT :key, :request_hash, id, :now FROM new_id
            ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash,
                hero_id = excluded.hero_id, created_at = excluded.created_at
            WHERE idempotency_keys.created_at <= :cutoff
            RETURNING hero_id
        ), new_hero AS (
            INSERT INTO heroes (id, name, age, secret_name, created_at, updated_at)
            SELECT hero_id, :name, :age, :secret_name, :now, :now FROM new_key
            RETURNING id, name, age, created_at, updated_at, version
        ), forgotten AS (
            DELETE FROM idempotency_keys WHERE key IN (
                SELECT key FROM idempotency_keys WHERE created_at <= :cutoff AND key <> :key
                ORDER BY created_at LIMIT :forget FOR UPDATE SKIP LOCKED
            )
        )
        SELECT 'created' AS outcome, id, name, age, created_at, updated_at, version,
            NULL::bytea AS request_hash
        FROM new_hero
        UNION ALL
        SELECT 'found', hero_id, NULL, NULL, created_at, created_at, NULL, request_hash
        FROM found
        UNION ALL
        SELECT 'busy', NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM lock WHERE NOT free AND NOT EXISTS (SELECT FROM found)
        """
    )
    .bindparams(
        sa.bindparam("key", type_=keys.c.key.type),
        sa.bindparam("request_hash", type_=keys.c.request_hash.type),
        sa.bindparam("now", type_=KEY_TIME),
        sa.bindparam("cutoff", type_=KEY_TIME),
        sa.bindparam("name", type_=heroes.c.name.type),
        sa.bindparam("age", type_=heroes.c.age.type),
        sa.bindparam("secret_name", type_=heroes.c.secret_name.type),
        sa.bindparam("forget", FORGET_AT_ONCE, type_=sa.Integer),
    )
    .columns(
        sa.column("outcome", sa.String),
        *(sa.column(column.name, column.type) for column in ROW),
        sa.column("request_hash", keys.c.request_hash.type),
    ),
    row=keyed_create,
    writes=True,
)
DELETE_HERO = {
    conditional: Statement(
        sa.delete(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .returning(heroes.c.id),
        row=int,
    )
    for conditional in (False, True)
}


class Filters(NamedTuple):
    """What the list is narrowed to; None leaves a filter out."""

    name: str | None = None
    name_prefix: str | None = None
    min_age: int | None = None
    max_age: int | None = None

    def params(self) -> dict[str, Any]:
        """The statement parameters of the filters."""
        low, high = prefix_range(self.name_prefix) if self.name_prefix else (None, None)
        return {
            "name": self.name,
            "prefix_low": low,
            "prefix_high": high,
            "min_age": self.min_age,
            "max_age": self.max_age,
        }


folded_name = sa.func.lower(heroes.c.name)
"""The name as sorted and searched: A-Z folded, by ``lower()`` (see ``cursors.fold``)."""
SORT_KEYS = {"id": heroes.c.id, "name": folded_name, "age": heroes.c.age}

Part = Literal["all", "null", "not_null", "at", "after"]
"""Which heroes of the sort key a segment holds: all, those with a null or a non-null key, those
at the cursor's key, or those after it."""


class Segment(NamedTuple):
    """A run of one page walk that is a single index range: part of the key, maybe past an id."""

    part: Part
    past_id: bool = False


def segments(sort: Sort, after: Position | None) -> list[Segment]:
    """The index ranges that, read in turn, list the heroes after ``after`` in ``sort``.

    A hero without an age sorts before every age (first with ``age``, last with ``-age``), so
    ages are walked in two groups: null ages by id, then the others by (age, id). After a cursor
    the rest of its group comes first: the heroes at the cursor's key with a greater id (fewer
    id if descending), then those past its key. Each is a plain index range on both databases;
    a row comparison ``(key, id) > (:key, :id)`` would be one statement, but SQLite seeks on its
    first column only and scans every tie.
    """
    if sort.key == "id":
        return [Segment("all", past_id=after is not None)]
    groups: list[Part] = ["all"] if sort.key == "name" else ["null", "not_null"]
    if sort.descending:
        groups.reverse()
    if after is None:
        return [Segment(group) for group in groups]
    if after.value is None:
        rest = groups[groups.index("null") + 1 :]
        return [Segment("null", past_id=True), *(Segment(group) for group in rest)]
    rest = groups[groups.index("not_null" if sort.key == "age" else "all") + 1 :]
    return [Segment("at", past_id=True), Segment("after"), *(Segment(group) for group in rest)]


@functools.cache
def list_statement(
    filters: tuple[bool, ...], sort: Sort, segment: Segment, *, nulls_ordered: bool = False
) -> Statement[HeroPublic]:
    """The page query for one combination of filters, sort and segment.

    ``filters`` says which of the ``FILTER_PARAMS`` are given.
    ``nulls_ordered`` spells the null ages' place out in ORDER BY, for the offset walk, which
    reads every group in one statement.
    """
    key = SORT_KEYS[sort.key]
    beyond = key.__lt__ if sort.descending else key.__gt__
    past_id = heroes.c.id.__lt__ if sort.descending else heroes.c.id.__gt__
    conditions = [
        *_filtered(filters),
        {
            "all": None,
            "null": key.is_(None),
            "not_null": key.is_not(None),
            "at": key == sa.bindparam("key", type_=key.type),
            "after": beyond(sa.bindparam("key", type_=key.type)),
        }[segment.part],
        past_id(sa.bindparam("after_id")) if segment.past_id else None,
    ]
    # Within one key (a cursor's), the id alone orders: SQLite sorts rather than see that the
    # (lower(name), id) index is already in that order.
    order: list[Any] = [key] if sort.key != "id" and segment.part != "at" else []
    order.append(heroes.c.id)
    if sort.descending:
        order = [column.desc() for column in order]
    if nulls_ordered and sort.key == "age":
        order[0] = order[0].nulls_last() if sort.descending else order[0].nulls_first()
    return Statement(
        sa.select(*PUBLIC)
        .where(*(c for c in conditions if c is not None))
        .order_by(*order)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset")),
        row=HeroPublic,
    )


@functools.cache
def count_statement(filters: tuple[bool, ...]) -> Statement[int]:
    """The number of heroes the filters match; a scan, so off the event loop on SQLite."""
    query = sa.select(sa.func.count()).select_from(heroes).where(*_filtered(filters))
    return Statement(query, row=int, slow=True)


FILTER_PARAMS = ("name", "prefix_low", "prefix_high", "min_age", "max_age")


def given_filters(params: dict[str, Any]) -> tuple[bool, ...]:
    """Which of the ``FILTER_PARAMS`` are given: the key of the statements' caches."""
    return tuple(params[key] is not None for key in FILTER_PARAMS)


def _filtered(filters: tuple[bool, ...]) -> list[sa.ColumnElement[bool]]:
    conditions = [
        heroes.c.name == sa.bindparam("name"),
        # A prefix is a range of the folded name, which the (lower(name), id) index serves.
        folded_name >= sa.bindparam("prefix_low"),
        folded_name < sa.bindparam("prefix_high"),
        heroes.c.age >= sa.bindparam("min_age"),
        heroes.c.age <= sa.bindparam("max_age"),
    ]
    return [condition for condition, given in zip(conditions, filters, strict=True) if given]


@functools.cache
def update_statement(fields: frozenset[str], *, conditional: bool) -> Statement[Stored]:
    """The UPDATE for one set of changed fields, optionally only at an expected version."""
    values: dict[Any, Any] = {heroes.c[f]: sa.bindparam(f) for f in sorted(fields)}
    values[heroes.c.version] = heroes.c.version + 1
    values[heroes.c.updated_at] = sa.bindparam("now", type_=heroes.c.updated_at.type)
    return Statement(
        sa.update(heroes)
        .where(BY_ID, *([AT_VERSION] if conditional else []))
        .values(values)
        .returning(*ROW),
        row=stored,
    )


async def select_hero(db: Database, hero_id: int) -> Stored:
    """The hero with ``hero_id``, or :class:`HeroNotFound`."""
    found = await db.fetch_one(SELECT_HERO, hero_id=hero_id)
    if found is None:
        raise HeroNotFound
    return found


async def select_heroes(
    db: Database,
    filters: Filters,
    sort: Sort,
    *,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> list[HeroPublic]:
    """One page of heroes matching ``filters`` in ``sort``: after ``after``, or from ``offset``.

    A walk from a position reads its segments in turn until the page is full; an ``offset`` is
    read in one statement, whose cost grows with the offset.
    """
    params = filters.params()
    given = given_filters(params)
    if offset:
        query = list_statement(given, sort, Segment("all"), nulls_ordered=True)
        return list(await db.fetch_all(query, limit=limit, offset=offset, **params))
    heroes_: list[HeroPublic] = []
    key = None if after is None else after.value
    after_id = None if after is None else after.id
    for segment in segments(sort, after):
        page = await db.fetch_all(
            list_statement(given, sort, segment),
            limit=limit - len(heroes_),
            offset=0,
            key=key,
            after_id=after_id,
            **params,
        )
        heroes_.extend(page)
        if len(heroes_) == limit:
            break
    return heroes_


async def count_heroes(db: Database, filters: Filters) -> int:
    """How many heroes match ``filters``."""
    params = filters.params()
    count = await db.fetch_one(count_statement(given_filters(params)), **params)
    return count or 0


async def insert_hero(
    db: Database, hero: HeroCreate, key: RequestKey | None = None, retention: timedelta = DAY
) -> Created:
    """Store a new hero and return it with its id.

    With a ``key``: at most once. If the key was stored within ``retention`` with the same
    request, nothing is stored and the first answer is returned again (``replayed``); with
    another request, :class:`KeyReused`; if a create with it is still running,
    :class:`KeyInProgress`. The key is stored with the hero, in the same transaction.
    """
    now = _now()
    params: dict[str, Any] = {
        "name": hero.name,
        "age": hero.age,
        "secret_name": hero.secret_name,
        "now": now,
    }
    if key is None:
        (created,) = await db.fetch_all(INSERT_HERO, **params)
        return Created(created, replayed=False)
    params |= {"key": key.key, "request_hash": key.request_hash, "cutoff": now - retention}
    try:
        found = await _create_once(db, params)
    except InProgress:
        raise KeyInProgress from None
    if isinstance(found, Stored):
        return Created(found, replayed=False)
    if found.request_hash != key.request_hash:
        raise KeyReused
    first = HeroPublic(found.hero_id, hero.name, hero.age, found.created_at, found.created_at)
    return Created(Stored(first, FIRST_VERSION), replayed=True)


async def _create_once(db: Database, params: dict[str, Any]) -> Stored | StoredKey:
    """The hero created, or the key found stored (with the hero its first create made)."""
    if db.runs_units:
        return await db.run_unit(functools.partial(_create_once_unit, params), claim=params["key"])
    for _ in range(3):
        rows = await db.fetch_all(CREATE_ONCE, **params)
        if rows and rows[0] is BUSY:
            raise KeyInProgress
        if rows and rows[0] is not None:
            return rows[0]
        # Nothing: the key was committed by another create between this statement's snapshot
        # and its insert, which then did nothing. Run again, it is found.
    raise KeyInProgress


def _create_once_unit(params: dict[str, Any], run: Run) -> Stored | StoredKey:
    """The keyed create on SQLite: several statements in the writer's transaction."""
    found = run(SELECT_KEY, params)
    if found:
        return found[0]
    run(FORGET_KEYS, params)  # expired ones, this key's included
    created = run(INSERT_HERO, params)[0]
    run(INSERT_KEY, {**params, "hero_id": created.public.id})
    return created


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
        updated = await db.fetch_one(
            statement, hero_id=hero_id, expected_version=expected, now=_now(), **changes
        )
        if updated is not None:
            return updated
    await select_hero(db, hero_id)
    raise HeroChanged


async def remove_hero(db: Database, hero_id: int, if_match: Versions) -> None:
    """Delete the hero with ``hero_id``, if it is at a version ``if_match`` allows."""
    for expected in [None] if if_match is None else if_match:
        statement = DELETE_HERO[expected is not None]
        if await db.fetch_one(statement, hero_id=hero_id, expected_version=expected) is not None:
            return
    await select_hero(db, hero_id)
    raise HeroChanged


def _now() -> datetime:
    """The time of a write, as both created_at and updated_at store it."""
    return datetime.now(UTC)
