"""How the service runs SQL: statements compiled once per driver, run without blocking the loop.

Every API operation is one statement: a SELECT, or an INSERT, UPDATE or DELETE with RETURNING.
Each statement is its own transaction, so when :meth:`Database.fetch` returns, the database has
committed it: a 2xx always means the write is stored, and a write that fails is an exception
(mapped to an error response), never a half-written row.

Statements are written once, in SQLAlchemy Core, and compiled once for each (dialect, driver,
parameter style) they meet. On the drivers the service ships with (sqlite3 and asyncpg) they run
on the driver's own connection: SQLAlchemy's per-execution work costs several times a 10 µs
query. That fast path keeps what makes SQLAlchemy safe: the column types' bind and result
processors are applied (a DateTime or UUID is never written or read raw), cursors are closed, and
as soon as the engine has ``before_cursor_execute``/``after_cursor_execute`` listeners (SQL
logging, tracing) or echoes SQL, statements go through ``Connection.execute`` so those see every
query. Other drivers always take that path.

Where each statement runs is each database's own module (``db.py`` builds the engines):
``service.database.sqlite`` (reads inline, writes on a group-committing writer thread) and
``service.database.postgres`` (asyncpg on the plugin's ``AsyncEngine``, every wait awaited).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

Row = Sequence[Any]
Processor = Callable[[Any], Any]

FAST_DRIVERS = frozenset({"pysqlite", "asyncpg"})
"""Drivers whose own connection runs the compiled statements; others go through SQLAlchemy."""


class DatabaseUnavailable(Exception):
    """The database is busy, slow or unreachable: the request may succeed if retried shortly."""


class WriteRefused(Exception):
    """The database refused the write (a constraint failed); nothing was stored."""


class Compiled(NamedTuple):
    """A statement's SQL for one driver, with what turns values into parameters and back."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]
    bind_processors: tuple[tuple[int, Processor], ...]
    result_processors: tuple[tuple[int, Processor], ...]
    """The result columns that need converting, by position (often none or a few)."""

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        """The positional parameters for ``params``, converted by the column types."""
        values = [params[name] if name in params else self.defaults[name] for name in self.names]
        for index, process in self.bind_processors:
            values[index] = process(values[index])
        return values

    def rows(self, rows: Sequence[Row]) -> Sequence[Row]:
        """``rows`` as the driver returned them, converted by the column types."""
        processors = self.result_processors
        if not processors:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            converted.append(values)
        return converted


class Statement:
    """A Core statement, compiled once for each driver it runs on.

    ``slow=True`` marks a read whose cost grows with the table (a count): SQLite runs it on a
    pooled connection in a thread instead of inline on the event loop (but for an in-memory
    database, whose one connection cannot be shared with a thread that may wait).
    """

    __slots__ = ("_compiled", "slow", "statement")

    def __init__(self, statement: sa.Executable, *, slow: bool = False) -> None:
        self.statement = statement
        self.slow = slow
        self._compiled: dict[tuple[str, str, str], Compiled] = {}

    @property
    def writes(self) -> bool:
        """Whether the statement changes data (INSERT, UPDATE, DELETE)."""
        return bool(self.statement.is_dml)

    def compiled(self, dialect: sa.Dialect) -> Compiled:
        """The statement for ``dialect``'s driver and parameter style."""
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        return self._compiled.get(key) or self._compile(key, dialect)

    def _compile(self, key: tuple[str, str, str], dialect: sa.Dialect) -> Compiled:
        compiled: Any = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if not compiled.positional:
            raise TypeError(f"{dialect.driver} takes named parameters: run it through SQLAlchemy")
        names = tuple(compiled.positiontup)
        # SQLAlchemy's own tables of the types' converters; None where a type needs none.
        binds = compiled._bind_processors
        results = [
            column.type._cached_result_processor(dialect, None)
            for column in compiled._result_columns
        ]
        self._compiled[key] = Compiled(
            sql=compiled.string,
            names=names,
            defaults=dict(compiled.params),
            bind_processors=tuple((i, binds[n]) for i, n in enumerate(names) if n in binds),
            result_processors=tuple((i, p) for i, p in enumerate(results) if p is not None),
        )
        return self._compiled[key]


SELECT_ONE = Statement(sa.select(sa.literal_column("1")))
"""The readiness probe's query."""


def traced(engine: sa.Engine) -> bool:
    """Whether something watches the engine's statements (listeners, or ``echo``)."""
    events = engine.dispatch
    return bool(events.before_cursor_execute or events.after_cursor_execute or engine.echo)


# SQLite result codes of failures that a retry may get past (or an operator can fix): the
# database is locked or busy, out of memory or disk, read-only, or a file cannot be opened/read.
_UNAVAILABLE_SQLITE_CODES = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_NOMEM",
        "SQLITE_READONLY",
        "SQLITE_INTERRUPT",
        "SQLITE_IOERR",
        "SQLITE_FULL",
        "SQLITE_CANTOPEN",
        "SQLITE_PROTOCOL",
    )
)
# SQLSTATE classes of failures that a retry may get past: connection (08), resources (53),
# operator intervention, statement timeout included (57), lock not available (55P03),
# serialization failure and deadlock (40), system errors (58).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "55P03", "40", "58")


def database_error(exc: BaseException) -> Exception | None:
    """The service's error for a failure of the database, or None where it is a bug of ours.

    The driver's exception is found under SQLAlchemy's wrappers and described by its class and
    its first line alone: SQLAlchemy's own message holds the statement's parameters, which may
    hold a secret name and must not reach a log.
    """
    native: BaseException | None = exc
    while native is not None:
        sqlstate = getattr(native, "sqlstate", None)
        if isinstance(native, sqlite3.IntegrityError) or (sqlstate or "").startswith("23"):
            return WriteRefused(_describe(native))
        if (
            isinstance(native, OSError | TimeoutError)
            or (sqlstate or "").startswith(_UNAVAILABLE_SQLSTATES)
            or (
                isinstance(native, sqlite3.Error)
                and (native.sqlite_errorcode & 0xFF) in _UNAVAILABLE_SQLITE_CODES
            )
        ):
            return DatabaseUnavailable(_describe(native))
        native = native.orig if isinstance(native, sa.exc.DBAPIError) else native.__cause__
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError | sa.exc.OperationalError):
        return DatabaseUnavailable(_describe(exc if exc.__cause__ is None else exc.__cause__))
    return None


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def raise_as_database_error(exc: Exception) -> None:
    """Raise the service's error for ``exc`` if it is a database failure; return if a bug."""
    translated = database_error(exc)
    if translated is not None:
        raise translated from None


class Database:
    """Where the API's statements run: one per app, built by ``db.open_database``."""

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Run ``statement`` with ``params`` as one transaction, committed when this returns."""
        raise NotImplementedError

    async def fetch_one(self, statement: Statement, **params: Any) -> Row | None:
        """The first row of :meth:`fetch`, or None."""
        rows = await self.fetch(statement, **params)
        return rows[0] if rows else None

    async def close(self) -> None:
        """Give the connections back to the engine (at shutdown)."""


def run_on_driver(
    dialect: sa.Dialect, driver: Any, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` on a sqlite3 connection, closing its cursor."""
    compiled = statement.compiled(dialect)
    cursor = driver.execute(compiled.sql, compiled.arguments(params))
    try:
        return compiled.rows(cursor.fetchall())
    finally:
        cursor.close()


def run_through_sqlalchemy(
    connection: sa.Connection, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` through ``Connection.execute`` (events fire) and commit it."""
    rows = connection.execute(statement.statement, params).all()
    connection.commit()
    return rows
