"""The keyed create of any resource: a row and its ``Idempotency-Key``, in one transaction.

A :class:`KeyedCreates` of a resource's :class:`~service.database.records.Records` creates its
rows at most once per key (``service.http.idempotency`` is the protocol, and answers what this
returns). The keys table is shared by every resource: a key is its credential's, whatever it
created, and the fingerprint of the request (which names the operation) tells a key sent to
another resource's create apart, as one sent with another body. The column ``hero_id`` holds the
id of the row the key created, of whichever resource: it is named for the first resource, and
renaming it would take a contract step for nothing.

On SQLite a keyed create is a unit of statements in the writer's transaction; on PostgreSQL it
is one statement (:attr:`KeyedCreates.create_once`), so that it works through a transaction
pooler.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

import sqlalchemy as sa

from service.database.records import FIRST_VERSION, Records, Stored
from service.database.statements import Database, InProgress, Run, Statement
from service.database.tables import ANY_CREDENTIAL, IdempotencyKey

T = TypeVar("T")

keys = cast(sa.Table, IdempotencyKey.__table__)


class Key(Protocol):
    """What a keyed create needs of a key (``service.http.idempotency.RequestKey`` is one)."""

    @property
    def key(self) -> str:
        """The key, as the client sent it (unquoted)."""
        ...

    @property
    def request_hash(self) -> bytes:
        """The fingerprint of the request that came with it."""
        ...

    @property
    def credential(self) -> str:
        """Whose key it is."""
        ...


class StoredKey(NamedTuple):
    """A key as stored: the fingerprint of its request, the row it created and when."""

    request_hash: bytes
    row_id: int
    created_at: datetime


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
        hero_id=sa.bindparam("row_id"),
        created_at=sa.bindparam("now", type_=KEY_TIME),
    )
)
BUSY = None
"""A keyed create that did not run: one with the same key is running."""

# PostgreSQL only, and clearer as SQL. The key's row is inserted first, under an id taken from
# the table's sequence, and the row only if the key's row was: the unique index on
# (credential, key) decides, even for a key committed by another create after this statement's
# snapshot. An expired key's row is taken over. The advisory lock (held to the end of the
# statement's transaction) tells a create still running with the same key ("busy"), without
# waiting; it is taken on the key alone, as the release before migration 0004 takes it, so that
# the two agree while both serve. {table}, {fields}, {values}, {returning}, {found} and {busy}
# are the resource's names, from its Records: never input.
_CREATE_ONCE = """
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0)) AS free
), found AS (
    SELECT request_hash, hero_id, created_at FROM idempotency_keys
    WHERE key = :key AND credential IN (:credential, '*') AND created_at > :cutoff
    ORDER BY credential = '*' LIMIT 1
), new_id AS (
    SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id FROM lock
    WHERE free AND NOT EXISTS (SELECT FROM found)
), new_key AS (
    INSERT INTO idempotency_keys (credential, key, request_hash, hero_id, created_at)
    SELECT :credential, :key, :request_hash, id, :now FROM new_id
    ON CONFLICT (credential, key) DO UPDATE SET request_hash = excluded.request_hash,
        hero_id = excluded.hero_id, created_at = excluded.created_at
    WHERE idempotency_keys.created_at <= :cutoff
    RETURNING hero_id
), new_row AS (
    INSERT INTO {table} (id, {fields}, created_at, updated_at)
    SELECT hero_id, {values}, :now, :now FROM new_key
    RETURNING {returning}
), forgotten AS (
    DELETE FROM idempotency_keys WHERE (credential, key) IN (
        SELECT credential, key FROM idempotency_keys
        WHERE created_at <= :cutoff AND NOT (credential = :credential AND key = :key)
        ORDER BY created_at LIMIT :forget FOR UPDATE SKIP LOCKED
    )
)
SELECT 'created' AS outcome, {returning}, NULL::bytea AS request_hash
FROM new_row
UNION ALL
SELECT 'found', {found}, request_hash
FROM found
UNION ALL
SELECT 'busy', {busy}, NULL
FROM lock WHERE NOT free AND NOT EXISTS (SELECT FROM found)
"""


class KeyedCreates(Generic[T]):
    """The keyed create of ``records``' rows, inserting ``fields`` (each bound by its name)."""

    def __init__(self, records: Records[T], fields: Sequence[str]) -> None:
        self.records = records
        self.fields = tuple(fields)
        self.insert = records.insert_statement(self.fields)
        """The create without a key."""
        self.create_once = Statement(self._create_once_sql(), row=self._row, writes=True)
        """The keyed create on PostgreSQL, one statement."""

    def _create_once_sql(self) -> sa.TextualSelect:
        table = self.records.table
        columns = [column.name for column in self.records.columns]
        stand_ins = {"id": "hero_id", "created_at": "created_at", "updated_at": "created_at"}
        return (
            sa.text(
                _CREATE_ONCE.format(
                    table=table.name,
                    fields=", ".join(self.fields),
                    values=", ".join(f":{field}" for field in self.fields),
                    returning=", ".join(columns),
                    found=", ".join(stand_ins.get(name, "NULL") for name in columns),
                    busy=", ".join("NULL" for _ in columns),
                )
            )
            .bindparams(
                sa.bindparam("key", type_=keys.c.key.type),
                sa.bindparam("credential", type_=keys.c.credential.type),
                sa.bindparam("request_hash", type_=keys.c.request_hash.type),
                sa.bindparam("now", type_=KEY_TIME),
                sa.bindparam("cutoff", type_=KEY_TIME),
                *(sa.bindparam(field, type_=table.c[field].type) for field in self.fields),
                sa.bindparam("forget", FORGET_AT_ONCE, type_=sa.Integer),
            )
            .columns(
                sa.column("outcome", sa.String),
                *(sa.column(column.name, column.type) for column in self.records.columns),
                sa.column("request_hash", keys.c.request_hash.type),
            )
        )

    def _row(self, outcome: str, *values: Any) -> Stored[T] | StoredKey | None:
        """A row of :attr:`create_once`: the row created, the key found stored, or ``BUSY``."""
        *columns, request_hash = values
        if outcome == "created":
            return self.records.stored(*columns)
        if outcome == "found":
            return StoredKey(request_hash, columns[0], columns[self._created_at])
        return BUSY

    @functools.cached_property
    def _created_at(self) -> int:
        return [column.name for column in self.records.columns].index("created_at")

    async def create(
        self, db: Database, values: dict[str, Any], key: Key, *, now: datetime, cutoff: datetime
    ) -> Stored[T] | StoredKey:
        """The row created with ``values``, or the key found stored within ``cutoff``.

        Raises ``InProgress`` while a create with the key is running; ``WriteRefused`` (until
        migration 0005) when another credential holds the key.
        """
        params = {
            **values,
            "key": key.key,
            "credential": key.credential,
            "request_hash": key.request_hash,
            "now": now,
            "cutoff": cutoff,
        }
        if db.runs_units:
            return await db.run_unit(functools.partial(self._unit, params), claim=key.key)
        for _ in range(3):
            rows = await db.fetch_all(self.create_once, **params)
            if rows and rows[0] is BUSY:
                raise InProgress
            if rows and rows[0] is not None:
                return rows[0]
            # Nothing: the key was committed by another create between this statement's
            # snapshot and its insert, which then did nothing. Run again, it is found.
        raise InProgress

    def _unit(self, params: dict[str, Any], run: Run) -> Stored[T] | StoredKey:
        """The keyed create on SQLite: several statements in the writer's transaction."""
        found = run(SELECT_KEY, params)
        if found:
            return found[0]
        run(FORGET_KEYS, params)  # expired ones, this key's included
        created = run(self.insert, params)[0]
        run(INSERT_KEY, {**params, "row_id": cast(Any, created.public).id})
        return created

    def first_answer(self, found: StoredKey, values: dict[str, Any]) -> Stored[T]:
        """The first create's answer again, from its key and the request's ``values``.

        The public fields come from the request (the same, as the fingerprint says), the id and
        the time from the key: the row may have changed or gone since.
        """
        public = self.records.public
        fields: Sequence[str] = public.__struct_fields__  # type: ignore[attr-defined]
        known = {
            **values,
            "id": found.row_id,
            "created_at": found.created_at,
            "updated_at": found.created_at,
        }
        return Stored(public(**{f: known[f] for f in fields if f in known}), FIRST_VERSION)
