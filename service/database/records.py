"""Rows by id, each with a version: read, created, and changed or deleted at a version.

Any resource's table with an ``id``, a ``version`` (the count of its writes, which backs the
``ETag``), ``created_at`` and ``updated_at`` is a :class:`Records` of it: one statement for each
operation, its rows named as the resource's public type and its version (:class:`Stored`). A
change or a delete can be asked for only at the versions the client allows (``If-Match``), and
the resource's own errors tell a missing row from one at another version.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import sqlalchemy as sa

from service.database.statements import Database, Statement

T = TypeVar("T")

Versions = list[int] | None
"""The versions a write is allowed at (from ``If-Match``), or None for any."""
FIRST_VERSION = 1
"""The version of a new row (the column's default)."""


class Stored(NamedTuple, Generic[T]):
    """A row as stored: its public form and its version (the ETag)."""

    public: T
    version: int


def now() -> datetime:
    """The time of a write, as both ``created_at`` and ``updated_at`` store it."""
    return datetime.now(UTC)


class Records(Generic[T]):
    """A table's rows by id, as ``public`` (a Struct whose fields are columns) and a version.

    ``not_found`` and ``changed`` are the resource's errors for a row that does not exist and
    for one that is not at a version the client allows.
    """

    def __init__(
        self,
        table: sa.Table,
        public: type[T],
        *,
        not_found: type[Exception],
        changed: type[Exception],
    ) -> None:
        self.table = table
        self.public = public
        self.not_found = not_found
        self.changed = changed
        fields: Sequence[str] = public.__struct_fields__  # type: ignore[attr-defined]
        self.columns = (*(table.c[field] for field in fields), table.c.version)
        """What each statement returns: the public fields, then the version."""
        # Not "id": a bind named as a column cannot stand in an UPDATE's WHERE.
        self._by_id = table.c.id == sa.bindparam("row_id")
        self._at_version = table.c.version == sa.bindparam("expected_version")
        self.select = Statement(sa.select(*self.columns).where(self._by_id), row=self.stored)
        self.deletes = {
            conditional: Statement(
                sa.delete(table)
                .where(self._by_id, *([self._at_version] if conditional else []))
                .returning(table.c.id),
                row=int,
            )
            for conditional in (False, True)
        }
        """The DELETE, without or with the version condition."""
        self.update_statement = functools.cache(self._update_statement)

    def stored(self, *values: Any) -> Stored[T]:
        """A row of :attr:`columns`, named: the public fields, then the version."""
        return Stored(self.public(*values[:-1]), values[-1])

    def insert_statement(self, fields: Iterable[str]) -> Statement[Stored[T]]:
        """An INSERT of ``fields`` (each bound by its name) at the time ``now``."""
        created = self.table.c.created_at.type
        updated = self.table.c.updated_at.type
        return Statement(
            sa.insert(self.table)
            .values(
                **{field: sa.bindparam(field) for field in fields},
                created_at=sa.bindparam("now", type_=created),
                updated_at=sa.bindparam("now", type_=updated),
            )
            .returning(*self.columns),
            row=self.stored,
        )

    def _update_statement(
        self, fields: frozenset[str], *, conditional: bool
    ) -> Statement[Stored[T]]:
        """The UPDATE for one set of changed fields, optionally only at an expected version."""
        table = self.table
        values: dict[Any, Any] = {table.c[f]: sa.bindparam(f) for f in sorted(fields)}
        values[table.c.version] = table.c.version + 1
        values[table.c.updated_at] = sa.bindparam("now", type_=table.c.updated_at.type)
        return Statement(
            sa.update(table)
            .where(self._by_id, *([self._at_version] if conditional else []))
            .values(values)
            .returning(*self.columns),
            row=self.stored,
        )

    async def get(self, db: Database, row_id: int) -> Stored[T]:
        """The row with ``row_id``, or the resource's ``not_found``."""
        found = await db.fetch_one(self.select, row_id=row_id)
        if found is None:
            raise self.not_found
        return found

    async def update(
        self, db: Database, row_id: int, changes: dict[str, Any], if_match: Versions
    ) -> Stored[T]:
        """Apply ``changes`` to the row with ``row_id``, if at a version ``if_match`` allows.

        No changes: the row as it is. Otherwise its version goes up by one. One conditional
        UPDATE per allowed version, in turn; when none matched, a read tells ``not_found`` from
        ``changed``.
        """
        if not changes:
            current = await self.get(db, row_id)
            if if_match is not None and current.version not in if_match:
                raise self.changed
            return current
        for expected in [None] if if_match is None else if_match:
            statement = self.update_statement(frozenset(changes), conditional=expected is not None)
            updated = await db.fetch_one(
                statement, row_id=row_id, expected_version=expected, now=now(), **changes
            )
            if updated is not None:
                return updated
        await self.get(db, row_id)
        raise self.changed

    async def delete(self, db: Database, row_id: int, if_match: Versions) -> None:
        """Delete the row with ``row_id``, if it is at a version ``if_match`` allows."""
        for expected in [None] if if_match is None else if_match:
            statement = self.deletes[expected is not None]
            if await db.fetch_one(statement, row_id=row_id, expected_version=expected) is not None:
                return
        await self.get(db, row_id)
        raise self.changed
