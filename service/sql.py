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

Where each statement runs (``db.py`` builds the engines):

- PostgreSQL: asyncpg on the plugin's ``AsyncEngine``; waits for a lock, a slow statement, a
  pooled connection or a connect are awaited, so the event loop serves other requests meanwhile.
- SQLite reads run inline on the loop (about 10 µs) on a connection that never waits for a lock
  (``busy_timeout = 0``); a read that would wait moves to a thread that may, and so does a
  statement marked ``slow`` (one that reads much of the table, like a count).
- SQLite writes go to one writer thread per worker (SQLite has one writer anyway), which waits
  for the write lock and the fsync of the commit off the loop, and commits the writes that queued
  up meanwhile together (group commit): one fsync for many acknowledged writes.

When the engine is traced, a statement run off the loop (the writer thread, a waiting read) runs
in the request's ``contextvars`` context, so its span is a child of the request's.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolProxiedConnection

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
    result_processors: tuple[Processor | None, ...] | None

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        """The positional parameters for ``params``, converted by the column types."""
        values = [params[name] if name in params else self.defaults[name] for name in self.names]
        for index, process in self.bind_processors:
            values[index] = process(values[index])
        return values

    def rows(self, rows: Sequence[Row]) -> Sequence[Row]:
        """``rows`` as the driver returned them, converted by the column types."""
        processors = self.result_processors
        if processors is None:
            return rows
        return [
            tuple(
                value if p is None else p(value) for p, value in zip(processors, row, strict=True)
            )
            for row in rows
        ]


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
        results = tuple(
            column.type._cached_result_processor(dialect, None)
            for column in compiled._result_columns
        )
        self._compiled[key] = Compiled(
            sql=compiled.string,
            names=names,
            defaults=dict(compiled.params),
            bind_processors=tuple((i, binds[n]) for i, n in enumerate(names) if n in binds),
            result_processors=results if any(results) else None,
        )
        return self._compiled[key]


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


def _raise_as_database_error(exc: Exception) -> None:
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


def _run_on_driver(
    dialect: sa.Dialect, driver: Any, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` on a sqlite3 connection, closing its cursor."""
    compiled = statement.compiled(dialect)
    cursor = driver.execute(compiled.sql, compiled.arguments(params))
    try:
        return compiled.rows(cursor.fetchall())
    finally:
        cursor.close()


def _run_through_sqlalchemy(
    connection: sa.Connection, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    rows = connection.execute(statement.statement, params).all()
    connection.commit()
    return rows


class SqliteDatabase(Database):
    """SQLite: reads inline on a connection that never waits, writes on the writer thread."""

    def __init__(self, engine: sa.Engine, busy_timeout_ms: int, *, in_memory: bool) -> None:
        self.engine = engine
        self.busy_timeout_ms = busy_timeout_ms
        self._reader: PoolProxiedConnection | None = None
        self._traced_reader: sa.Connection | None = None
        # An in-memory database is one connection, with no other to wait for: nothing to move.
        self._writer = None if in_memory else SqliteWriter(engine)

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Read inline, or in a thread if slow or locked; write on the writer thread."""
        try:
            if self._writer is not None and statement.writes:
                return await self._writer.run(statement, params)
            if self._writer is not None and statement.slow:
                return await asyncio.to_thread(self._read_waiting, statement, params)
            try:
                return self._read(statement, params)
            except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
                if not _locked(exc):
                    raise
            return await asyncio.to_thread(self._read_waiting, statement, params)
        except Exception as exc:
            _raise_as_database_error(exc)
            raise

    def _read(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        if traced(self.engine):
            # A connection kept for traced reads, as _reader is for the others: checking one
            # out and setting its busy timeout twice per read cost more than the read.
            if self._traced_reader is None:
                self._traced_reader = self.engine.connect()
                _set_busy_timeout(self._traced_reader.connection.driver_connection, 0)
            try:
                return _run_through_sqlalchemy(self._traced_reader, statement, params)
            except Exception:
                self._traced_reader.rollback()
                raise
        if self._reader is None:
            self._reader = self.engine.raw_connection()
            _set_busy_timeout(self._reader.driver_connection, 0)
        return _run_on_driver(
            self.engine.dialect, self._reader.driver_connection, statement, params
        )

    def _read_waiting(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        with self.engine.connect() as connection:
            if traced(self.engine):
                return _run_through_sqlalchemy(connection, statement, params)
            driver = connection.connection.driver_connection
            return _run_on_driver(self.engine.dialect, driver, statement, params)

    async def close(self) -> None:
        """Stop the writer thread and give the reader's connection back."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._traced_reader is not None:
            self._traced_reader.close()
            self._traced_reader = None


def _locked(exc: Exception) -> bool:
    """Whether a read failed only because another connection holds a lock it would wait for."""
    native = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return isinstance(native, sqlite3.OperationalError) and (native.sqlite_errorcode & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def _set_busy_timeout(driver: Any, milliseconds: int) -> None:
    driver.execute(f"PRAGMA busy_timeout = {milliseconds:d}").close()


class _Write(NamedTuple):
    statement: Statement
    params: dict[str, Any]
    future: asyncio.Future[Sequence[Row]]
    context: contextvars.Context | None
    """The request's context, when the engine is traced: its span is the statement's parent."""


class SqliteWriter:
    """The thread that runs a worker's SQLite writes, committing those that queue up together.

    A write waits here, off the event loop, for the write lock (up to ``busy_timeout``) and for
    the fsync of its commit. The writes that arrive meanwhile are committed together in one
    transaction, so one fsync acknowledges all of them; each is still one statement, which
    SQLite undoes alone if it fails. If the shared COMMIT fails (a deferred constraint), the
    batch is rolled back and its writes are run again one by one, so only the one at fault fails.
    """

    MAX_BATCH = 256

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def run(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        """Queue the write and wait, without blocking the loop, until it is committed."""
        if self._thread is None:
            self._start()
        future: asyncio.Future[Sequence[Row]] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context() if traced(self.engine) else None
        self._writes.put(_Write(statement, params, future, context))
        return await future

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        if self._thread is not None:
            self._writes.put(None)
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="sqlite-writer")
                self._thread.daemon = True
                self._thread.start()

    def _serve(self) -> None:
        connection = self.engine.raw_connection()
        try:
            stopping = False
            while not stopping:
                batch: list[_Write] = []
                write = self._writes.get()
                while write is not None:
                    batch.append(write)
                    if len(batch) == self.MAX_BATCH or self._writes.empty():
                        break
                    write = self._writes.get_nowait()
                stopping = write is None
                if batch:
                    _settle(batch, self._commit(connection, batch))
        finally:
            connection.close()

    def _commit(
        self, connection: PoolProxiedConnection, batch: list[_Write]
    ) -> list[Sequence[Row] | Exception]:
        """Run ``batch`` in one transaction; the outcome of each write, in order."""
        if traced(self.engine):
            return [self._traced(write) for write in batch]
        driver: Any = connection.driver_connection
        try:
            # IMMEDIATE takes the write lock up front, waiting up to busy_timeout for it. A
            # statement that starts reading and then writes would get SQLITE_BUSY at once.
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [exc] * len(batch)
        outcomes: list[Sequence[Row] | Exception] = []
        for write in batch:
            try:
                outcomes.append(
                    _run_on_driver(self.engine.dialect, driver, write.statement, write.params)
                )
            except sqlite3.Error as exc:
                outcomes.append(exc)
        try:
            if not driver.in_transaction:  # an error undid the whole transaction, not one write
                raise sqlite3.OperationalError("the group commit was rolled back")
            driver.execute("COMMIT")
        except sqlite3.Error as exc:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            if len(batch) == 1:
                return [exc]
            return [outcome for write in batch for outcome in self._commit(connection, [write])]
        return outcomes

    def _traced(self, write: _Write) -> Sequence[Row] | Exception:
        """Run one write through ``Connection.execute``, so the engine's listeners see it.

        It runs in the request's context, copied when the write was queued, so that its spans
        are children of the request's.
        """
        try:
            if write.context is None:  # traced since the write was queued
                return self._through_sqlalchemy(write)
            return write.context.run(self._through_sqlalchemy, write)
        except Exception as exc:  # handed to the request that made the write
            return exc

    def _through_sqlalchemy(self, write: _Write) -> Sequence[Row]:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                rows = connection.execute(write.statement.statement, write.params).all()
                connection.exec_driver_sql("COMMIT")
            except Exception:
                if connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    connection.exec_driver_sql("ROLLBACK")
                raise
            return rows


def _settle(batch: list[_Write], outcomes: list[Sequence[Row] | Exception]) -> None:
    """Hand each write's outcome to its request, on the request's event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, Any]]] = {}
    for write, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(write.future.get_loop(), []).append((write, outcome))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[_Write, Any]]) -> None:
    for write, outcome in settled:
        if write.future.done():  # the request was cancelled (client gone); the write stands
            continue
        if isinstance(outcome, Exception):
            write.future.set_exception(outcome)
        else:
            write.future.set_result(outcome)


class PostgresDatabase(Database):
    """PostgreSQL on the plugin's ``AsyncEngine``: every wait is awaited, never blocking the loop.

    With asyncpg, each statement checks a connection out of the engine's pool and runs on the
    asyncpg connection itself, outside any transaction block: PostgreSQL commits the one
    statement before answering, with no BEGIN and COMMIT round trips. A read that finds its
    pooled connection dead (the server restarted) is run once more on a new connection.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._fast = engine.dialect.driver in FAST_DRIVERS

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Run ``statement`` on a pooled connection; return its rows."""
        try:
            if not self._fast or traced(self.engine.sync_engine):
                return await self._fetch_through_sqlalchemy(statement, params)
            return await self._fetch_on_driver(statement, params)
        except Exception as exc:
            _raise_as_database_error(exc)
            raise

    async def _fetch_on_driver(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        compiled = statement.compiled(self.engine.dialect)
        arguments = compiled.arguments(params)
        retry = not statement.writes
        while True:
            connection = await self.engine.raw_connection()
            try:
                rows = await connection.driver_connection.fetch(compiled.sql, *arguments)  # type: ignore[union-attr]
            except asyncio.CancelledError:
                # Abandoned mid-statement: the connection's state is unknown, so it is not reused.
                await greenlet_spawn(connection.invalidate)
                raise
            except Exception as exc:
                if not self._dropped(connection, exc):
                    raise
                await greenlet_spawn(connection.invalidate, exc)
                if not retry:
                    raise
                retry = False
                continue
            finally:
                await greenlet_spawn(connection.close)
            return compiled.rows(rows)

    def _dropped(self, connection: PoolProxiedConnection, exc: Exception) -> bool:
        driver: Any = connection.driver_connection
        return bool(driver.is_closed()) or isinstance(exc, OSError | ConnectionError)

    async def _fetch_through_sqlalchemy(
        self, statement: Statement, params: dict[str, Any]
    ) -> Sequence[Row]:
        async with self.engine.connect() as connection:
            result = await connection.execute(statement.statement, params)
            rows = result.all()
            await connection.commit()
            return rows
