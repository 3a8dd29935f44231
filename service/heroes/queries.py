"""The hero SQL: the heroes' records and list, and the keyed create; values or domain errors.

Statements are built once, in SQLAlchemy Core: by ``service.database.records`` (a hero by id,
with its version) and ``service.database.pages`` (the list's pages, sorts and filters) for what
every resource does alike, and here for what only heroes do (a create with an
``Idempotency-Key``). They run through ``service.database.statements``, which compiles them for
the database's driver and commits each before it returns.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from service.database.faults import WriteRefused
from service.database.pages import (
    Listing,
    at_least,
    at_most,
    equal,
    integer_key,
    starts_with,
    text_key,
)
from service.database.records import FIRST_VERSION, Records, Stored, now
from service.database.statements import Database, InProgress, Run, Statement
from service.database.tables import (
    AGE_MAX,
    ANY_CREDENTIAL,
    NAME_MAX_LENGTH,
    Hero,
    IdempotencyKey,
)
from service.heroes.schemas import HeroCreate, HeroPublic
from service.http.idempotency import KeyInProgress, KeyReused, RequestKey

heroes = cast(sa.Table, Hero.__table__)
keys = cast(sa.Table, IdempotencyKey.__table__)


class HeroNotFound(LookupError):
    """No hero has the requested id."""


class HeroChanged(Exception):
    """The hero's current version is not one the client named in ``If-Match``."""


HEROES = Records(heroes, HeroPublic, not_found=HeroNotFound, changed=HeroChanged)
"""The heroes by id: read, created, and changed or deleted at a version."""
SELECT_HERO = HEROES.select
INSERT_HERO = HEROES.insert_statement(("name", "age", "secret_name"))
ROW = HEROES.columns
"""What the hero statements return: the public fields, then the version."""

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
    ],
)
"""The list of heroes: by id, name (A-Z folded) or age, filtered by name, name prefix and age."""


class Filters(NamedTuple):
    """What the list is narrowed to; None leaves a filter out."""

    name: str | None = None
    name_prefix: str | None = None
    min_age: int | None = None
    max_age: int | None = None


DAY = timedelta(days=1)


class Created(NamedTuple):
    """A create's answer: the hero, and whether it is the first answer given again."""

    stored: Stored[HeroPublic]
    replayed: bool


class StoredKey(NamedTuple):
    """A row of ``SELECT_KEY``: an idempotency key as stored, with the hero it created."""

    request_hash: bytes
    hero_id: int
    created_at: datetime


# Idempotency keys (see IdempotencyKey). On SQLite a keyed create is a unit of these statements
# in the writer's transaction; on PostgreSQL it is CREATE_ONCE, one statement.
KEY_TIME = keys.c.created_at.type
FORGET_AT_ONCE = 2
"""Expired keys a keyed create deletes: more than it adds, so they never pile up."""
MINE = keys.c.credential.in_([sa.bindparam("credential"), ANY_CREDENTIAL])
"""The keys a credential may find: its own, and those stored before keys had a credential."""
SELECT_KEY = Statement(
    sa.select(keys.c.request_hash, keys.c.hero_id, keys.c.created_at)
    .where(
        keys.c.key == sa.bindparam("key"),
        MINE,
        keys.c.created_at > sa.bindparam("cutoff", type_=KEY_TIME),
    )
    .order_by(keys.c.credential == ANY_CREDENTIAL)
    .limit(1),
    row=StoredKey,
)
EXPIRED = keys.c.created_at <= sa.bindparam("cutoff", type_=KEY_TIME)
FORGET_KEYS = Statement(
    sa.delete(keys).where(
        # This key's expired rows, whoever's: until migration 0005 a key is unique across
        # credentials, and an expired row would refuse this credential's.
        (keys.c.key == sa.bindparam("key")) & EXPIRED
        | sa.tuple_(keys.c.credential, keys.c.key).in_(
            sa.select(keys.c.credential, keys.c.key)
            .where(EXPIRED)
            .order_by(keys.c.created_at)
            .limit(FORGET_AT_ONCE)
        )
    )
)
INSERT_KEY = Statement(
    sa.insert(keys).values(
        credential=sa.bindparam("credential"),
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
) -> Stored[HeroPublic] | StoredKey | None:
    """A row of ``CREATE_ONCE``: the hero created, the key found stored, or ``BUSY``."""
    if outcome == "created":
        return HEROES.stored(id, name, age, created_at, updated_at, version)
    if outcome == "found":
        return StoredKey(request_hash, id, created_at)
    return BUSY


CREATE_ONCE = Statement(
    # PostgreSQL only, and clearer as SQL. The key's row is inserted first, under an id taken
    # from the heroes' sequence, and the hero only if the key's row was: the unique index on
    # (credential, key) decides, even for a key committed by another create after this
    # statement's snapshot. An expired key's row is taken over. The advisory lock (held to the
    # end of the statement's transaction) tells a create still running with the same key
    # ("busy"), without waiting; it is taken on the key alone, as the release before migration
    # 0004 takes it, so that the two agree while both serve.
    sa.text(
        """
        WITH lock AS (
            SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0)) AS free
        ), found AS (
            SELECT request_hash, hero_id, created_at FROM idempotency_keys
            WHERE key = :key AND credential IN (:credential, '*') AND created_at > :cutoff
            ORDER BY credential = '*' LIMIT 1
        ), new_id AS (
            SELECT nextval(pg_get_serial_sequence('heroes', 'id')) AS id FROM lock
            WHERE free AND NOT EXISTS (SELECT FROM found)
        ), new_key AS (
            INSERT INTO idempotency_keys (credential, key, request_hash, hero_id, created_at)
            SELECT :credential, :key, :request_hash, id, :now FROM new_id
            ON CONFLICT (credential, key) DO UPDATE SET request_hash = excluded.request_hash,
                hero_id = excluded.hero_id, created_at = excluded.created_at
            WHERE idempotency_keys.created_at <= :cutoff
            RETURNING hero_id
        ), new_hero AS (
            INSERT INTO heroes (id, name, age, secret_name, created_at, updated_at)
            SELECT hero_id, :name, :age, :secret_name, :now, :now FROM new_key
            RETURNING id, name, age, created_at, updated_at, version
        ), forgotten AS (
            DELETE FROM idempotency_keys WHERE (credential, key) IN (
                SELECT credential, key FROM idempotency_keys
                WHERE created_at <= :cutoff AND NOT (credential = :credential AND key = :key)
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
        sa.bindparam("credential", type_=keys.c.credential.type),
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


async def insert_hero(
    db: Database, hero: HeroCreate, key: RequestKey | None = None, retention: timedelta = DAY
) -> Created:
    """Store a new hero and return it with its id.

    With a ``key``: at most once. If the key's credential stored it within ``retention`` with
    the same request, nothing is stored and the first answer is returned again (``replayed``);
    with another request, :class:`KeyReused`; if a create with it is still running,
    :class:`KeyInProgress`. The key is stored with the hero, in the same transaction.
    """
    at = now()
    params: dict[str, Any] = {
        "name": hero.name,
        "age": hero.age,
        "secret_name": hero.secret_name,
        "now": at,
    }
    if key is None:
        (created,) = await db.fetch_all(INSERT_HERO, **params)
        return Created(created, replayed=False)
    params |= {
        "key": key.key,
        "credential": key.credential,
        "request_hash": key.request_hash,
        "cutoff": at - retention,
    }
    try:
        found = await _create_once(db, params)
    except InProgress:
        raise KeyInProgress from None
    except WriteRefused:
        # Until migration 0005 the key alone is unique: another credential holds this one.
        raise KeyReused from None
    if isinstance(found, Stored):
        return Created(found, replayed=False)
    if found.request_hash != key.request_hash:
        raise KeyReused
    first = HeroPublic(found.hero_id, hero.name, hero.age, found.created_at, found.created_at)
    return Created(Stored(first, FIRST_VERSION), replayed=True)


async def _create_once(db: Database, params: dict[str, Any]) -> Stored[HeroPublic] | StoredKey:
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


def _create_once_unit(params: dict[str, Any], run: Run) -> Stored[HeroPublic] | StoredKey:
    """The keyed create on SQLite: several statements in the writer's transaction."""
    found = run(SELECT_KEY, params)
    if found:
        return found[0]
    run(FORGET_KEYS, params)  # expired ones, this key's included
    created = run(INSERT_HERO, params)[0]
    run(INSERT_KEY, {**params, "hero_id": created.public.id})
    return created
