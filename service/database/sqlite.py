"""SQLite: reads inline on the event loop, writes on one group-committing writer thread.

Over 300 lines on purpose: the writer thread, its group transaction and its fault handling are
one piece whose invariants (a write answered once, from the run that counts) span all of it.

- Reads run inline on the loop (each takes microseconds: ``tests/benchmarks/RESULTS-choices.md``) on
  a connection that never waits for a lock (``busy_timeout = 0``); a read that would wait moves to a
  thread that may, and so does a statement marked ``slow`` (one that reads much of the table, like a
  count).
- Writes go to one writer thread per worker (SQLite has one writer anyway), which waits for the
  write lock and the fsync of the commit off the loop, and commits the writes that queued up
  meanwhile together (group commit): one fsync for many acknowledged writes.

When the engine is traced, a statement run off the loop (the writer thread, a waiting read) runs
in the request's ``contextvars`` context, so its span is a child of the request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa

from service.database.faults import DatabaseUnavailable, database_errors
from service.database.statements import (
    Database,
    InProgress,
    Row,
    RowT,
    Run,
    Statement,
    Unit,
    run_on_cursor,
    run_on_driver,
    run_through_sqlalchemy,
    traced,
)

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

T = TypeVar("T")
logger = logging.getLogger("service")


class SqliteDatabase(Database):
    """SQLite: reads inline on a connection that never waits, writes on the writer thread."""

    dialect_name = "sqlite"
    runs_units = True

    def __init__(self, engine: sa.Engine, *, in_memory: bool) -> None:
        self.engine = engine
        self._reader: PoolProxiedConnection | None = None
        self._reader_cursor: sqlite3.Cursor | None = None
        self._traced_reader: sa.Connection | None = None
        # An in-memory database is one connection, with no other to wait for: nothing to move.
        self._writer = None if in_memory else SqliteWriter(engine)
        self._claims: set[str] = set()
        """The claims of the units queued or running; touched on the event loop only."""

    async def run_unit(self, unit: Unit[T], *, claim: str | None = None) -> T:
        """Run ``unit`` in the writer's transaction (in-memory: inline), committed on return."""
        if claim is not None:
            if claim in self._claims:
                raise InProgress(claim)
            self._claims.add(claim)
        try:
            with database_errors():
                if self._writer is not None:
                    return await self._writer.run_unit(unit)
                return self._run_unit_inline(unit)
        finally:
            if claim is not None:
                self._claims.discard(claim)

    def _run_unit_inline(self, unit: Unit[T]) -> T:
        """An in-memory database's unit, on its one connection: nothing else runs meanwhile."""
        run: Run
        if traced(self.engine):
            connection = self._traced_connection()
            run = _RunThrough(connection)
            driver: Any = connection.connection.driver_connection
        else:
            driver = self._reader_driver()
            run = _RunOnDriver(self.engine.dialect, driver)
        driver.execute("BEGIN IMMEDIATE")
        try:
            result = unit(run)
            driver.execute("COMMIT")
        except Exception:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        return result

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Read inline, or in a thread if slow or locked; write on the writer thread."""
        with database_errors():
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

    def _read(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        if traced(self.engine):
            traced_reader = self._traced_connection()
            try:
                return run_through_sqlalchemy(traced_reader, statement, params)
            except Exception:
                traced_reader.rollback()
                raise
        return self._read_on_cursor(statement, params)

    def _read_on_cursor(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        # One cursor for every inline read: a cursor made and closed per read costs a get-one
        # more than a column does. Each read fetches all its rows, which ends its statement (no
        # read is left open); a cursor that failed is closed, and the next read makes another.
        cursor = self._reader_cursor
        if cursor is None:
            cursor = self._reader_cursor = self._reader_driver().cursor()
        try:
            return run_on_cursor(self.engine.dialect, cursor, statement, params)
        except BaseException:
            self._reader_cursor = None
            cursor.close()
            raise

    def _reader_driver(self) -> Any:
        if self._reader is None:
            self._reader = self.engine.raw_connection()
            _set_busy_timeout(self._reader.driver_connection, 0)
        return self._reader.driver_connection

    def _traced_connection(self) -> sa.Connection:
        # A connection kept for traced reads, as _reader is for the others: checking one out
        # and setting its busy timeout twice per read cost more than the read.
        if self._traced_reader is None:
            self._traced_reader = self.engine.connect()
            _set_busy_timeout(self._traced_reader.connection.driver_connection, 0)
        return self._traced_reader

    def _read_waiting(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        with self.engine.connect() as connection:
            if traced(self.engine):
                return run_through_sqlalchemy(connection, statement, params)
            driver = connection.connection.driver_connection
            return run_on_driver(self.engine.dialect, driver, statement, params)

    async def close(self) -> None:
        """Stop the writer thread and close the connections it and the reader kept."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
        # The reader's cursor goes with its connection (which, in memory, the plugin may have
        # closed already: a cursor of a closed connection cannot be closed again).
        self._reader_cursor = None
        if self._reader is not None:
            _close_for_good(self._reader)
            self._reader = None
        if self._traced_reader is not None:
            self._traced_reader.detach()
            self._traced_reader.close()
            self._traced_reader = None
        self.engine.dispose()  # see PostgresDatabase.close


def _close_for_good(connection: PoolProxiedConnection) -> None:
    """Close a connection kept for the app's life, rather than give it back to its pool.

    At shutdown the plugin may have disposed of the engine's pool already (its lifespan ends
    before the app's shutdown hooks run): a connection given back to that pool would stay open
    until garbage-collected (a ResourceWarning from Python 3.13 on).
    """
    connection.detach()
    connection.close()


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
    statement: Statement | None
    params: dict[str, Any]
    unit: Unit[Any] | None
    """Several statements instead of ``statement``."""
    future: asyncio.Future[Any]
    context: contextvars.Context | None
    """The request's context, when the engine is traced: its span is the statement's parent."""
    queued_at: float
    """When it was queued (``time.monotonic``): its wait for the write lock ends a busy timeout
    later."""


class TransactionLost(sqlite3.OperationalError):
    """A statement of a unit found its transaction gone (SQLite rolled it back whole)."""


_PENDING: Any = object()
"""The outcome of a write that has not been settled yet."""


class SqliteWriter:
    """The thread that runs a worker's SQLite writes, committing those that queue up together.

    A write waits here, off the event loop, for the write lock and for the fsync of its commit.
    The writes that arrive meanwhile are committed together in one transaction (a group), so one
    fsync acknowledges all of them. What each write is answered is what it did in the run that
    counts, the one whose transaction committed:

    - A statement that fails while SQLite keeps the transaction (a constraint) was undone alone:
      its write gets its error, the others carry on.
    - A failure that undoes the whole transaction (``SQLITE_FULL`` or ``SQLITE_IOERR`` without a
      statement journal, a trigger's ``RAISE(ROLLBACK)``), any failure of a unit of several
      statements, and any exception that is not SQLite's (a failing conversion of the service's
      code): the failing write gets its error, the transaction is rolled back, and the writes
      that ran before it, now undone, run again with those after it in a new transaction.
      SQLite's state is checked after every statement, so nothing runs outside a transaction.
    - A failed ``COMMIT`` (a deferred constraint): the group is rolled back and its writes run
      again one by one, each in its own transaction, so only the one at fault fails.

    The thread never dies of a failure: one that cannot be given to a write (its connection
    cannot be opened, a ``ROLLBACK`` fails) is given to every write it concerns, the connection
    is replaced, and the thread serves on; a failure of the writer's own code is logged and its
    unsettled writes get 503. Every write's future is resolved.

    A write waits for the write lock at most the busy timeout counted from when it was queued
    (plus ``SLACK_MS``): a group that starts after its writes waited behind another lowers its
    busy timeout by that wait. It is answered after that wait, plus the time the groups ahead of
    it take to run and commit once they hold the lock (a statement takes microseconds, a commit
    one fsync; a group run again one by one, one fsync per write, ``MAX_BATCH`` at most).
    """

    MAX_BATCH = 256
    SLACK_MS = 10
    """A write queued this long or less still gets the whole busy timeout."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Used by the writer thread only:
        self._connection: PoolProxiedConnection | None = None
        self._busy_timeout_ms: int | None = None
        """The engine's busy timeout, read from the first connection the writer uses."""
        self._lowered = False
        """Whether the connection's busy timeout is lowered below the engine's."""

    async def run(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        """Queue the write and wait, without blocking the loop, until it is committed."""
        rows: Sequence[Row] = await self._queue(statement, params, None)
        return rows

    async def run_unit(self, unit: Unit[T]) -> T:
        """Queue ``unit`` and wait until its statements are committed; what it returned."""
        result: T = await self._queue(None, {}, unit)
        return result

    async def _queue(
        self, statement: Statement | None, params: dict[str, Any], unit: Unit[Any] | None
    ) -> Any:
        if self._thread is None or not self._thread.is_alive():
            self._start()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context() if traced(self.engine) else None
        self._writes.put(_Write(statement, params, unit, future, context, time.monotonic()))
        return await future

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        if self._thread is not None:
            self._writes.put(None)
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="sqlite-writer")
                self._thread.daemon = True
                self._thread.start()

    def _serve(self) -> None:
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
                    _settle(batch, self._commit(batch))
        finally:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    _close_for_good(self._connection)
                self._connection = None

    def _commit(self, batch: list[_Write]) -> list[Any]:
        """Run ``batch``; the outcome of each write, in order: its result or its exception."""
        outcomes: list[Any] = [_PENDING] * len(batch)
        try:
            if traced(self.engine):
                outcomes[:] = [self._traced(write) for write in batch]
            else:
                self._run_groups(batch, outcomes)
        except Exception as exc:  # a fault of the writer's own: it serves on
            logger.exception("The SQLite writer failed; its unsettled writes get 503")
            self._discard_connection()  # which rolls back what was not committed
            failed = DatabaseUnavailable(f"{type(exc).__name__}: the writer failed")
            outcomes = [failed if outcome is _PENDING else outcome for outcome in outcomes]
        return outcomes

    def _run_groups(self, batch: list[_Write], outcomes: list[Any]) -> None:
        """Run the writes in groups until every one has its outcome (see the class)."""
        todo = list(range(len(batch)))
        alone = False
        while todo:
            group = todo[:1] if alone else todo
            again, commit_failed = self._run_group(batch, group, outcomes)
            alone = alone or commit_failed
            todo = again + todo[len(group) :]

    def _run_group(
        self, batch: list[_Write], group: list[int], outcomes: list[Any]
    ) -> tuple[list[int], bool]:
        """Run ``group`` in one transaction and settle what it can.

        Returns the writes to run again (in order), and whether that is because the COMMIT
        failed. Each call settles at least one write, or fails a COMMIT of several.
        """
        try:
            driver = self._driver()
            self._begin(driver, batch[group[0]].queued_at)
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):
                self._discard_connection()
            for index in group:
                outcomes[index] = exc
            return [], False
        ran: list[tuple[int, Any]] = []
        for position, index in enumerate(group):
            write = batch[index]
            try:
                result = self._execute(driver, write)
            except Exception as exc:
                outcomes[index] = exc
                if write.unit is None and isinstance(exc, sqlite3.Error) and driver.in_transaction:
                    continue  # SQLite undid this statement alone
                self._rollback(driver)
                return [i for i, _ in ran] + group[position + 1 :], False
            if not driver.in_transaction:  # it ran by itself, after the transaction was undone
                outcomes[index] = result
                self._rollback(driver)
                return [i for i, _ in ran] + group[position + 1 :], False
            ran.append((index, result))
        try:
            driver.execute("COMMIT")
        except Exception as exc:
            self._rollback(driver)
            if len(ran) > 1:
                return [i for i, _ in ran], True
            for index, _ in ran:
                outcomes[index] = exc
            return [], False
        for index, result in ran:
            outcomes[index] = result
        return [], False

    def _execute(self, driver: Any, write: _Write) -> Any:
        if write.unit is None:
            assert write.statement is not None
            return run_on_driver(self.engine.dialect, driver, write.statement, write.params)
        return write.unit(_RunOnDriver(self.engine.dialect, driver))

    def _driver(self) -> Any:
        """The writer's sqlite3 connection, opened (again) if it has none."""
        if self._connection is None:
            connection = self.engine.raw_connection()
            try:
                self._base_timeout(connection.driver_connection)
            except Exception:
                connection.invalidate()
                raise
            self._connection = connection
            self._lowered = False
        return self._connection.driver_connection

    def _base_timeout(self, driver: Any) -> int:
        if self._busy_timeout_ms is None:
            cursor = driver.execute("PRAGMA busy_timeout")
            self._busy_timeout_ms = int(cursor.fetchone()[0])
            cursor.close()
        return self._busy_timeout_ms

    def _begin(self, driver: Any, queued_at: float) -> None:
        """BEGIN IMMEDIATE, waiting for the write lock until the first write's time is up.

        IMMEDIATE takes the write lock up front: a statement that starts reading and then
        writes would get SQLITE_BUSY at once.
        """
        waited_ms = (time.monotonic() - queued_at) * 1000
        if waited_ms > self.SLACK_MS:
            _set_busy_timeout(driver, max(0, int(self._base_timeout(driver) - waited_ms)))
            self._lowered = True
        elif self._lowered:
            _set_busy_timeout(driver, self._base_timeout(driver))
            self._lowered = False
        driver.execute("BEGIN IMMEDIATE")

    def _rollback(self, driver: Any) -> None:
        """Undo the transaction, if SQLite still holds one; a connection that cannot is replaced."""
        try:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
        except Exception:
            self._discard_connection()  # closing it rolls the transaction back

    def _discard_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            self._connection = None

    def _traced(self, write: _Write) -> Any:
        """Run one write through ``Connection.execute``, so the engine's listeners see it.

        It runs in the request's context, copied when the write was queued, so that its spans
        are children of the request's. Each write is a transaction of its own.
        """
        try:
            if write.context is None:  # traced since the write was queued
                return self._through_sqlalchemy(write)
            return write.context.run(self._through_sqlalchemy, write)
        except Exception as exc:  # handed to the request that made the write
            return exc

    def _through_sqlalchemy(self, write: _Write) -> Any:
        with self.engine.connect() as connection:
            driver: Any = connection.connection.driver_connection
            base = self._base_timeout(driver)
            waited_ms = (time.monotonic() - write.queued_at) * 1000
            if waited_ms > self.SLACK_MS:
                _set_busy_timeout(driver, max(0, int(base - waited_ms)))
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    if write.unit is None:
                        assert write.statement is not None
                        result: Any = connection.execute(
                            write.statement.statement, write.params
                        ).all()
                    else:
                        result = write.unit(_RunThrough(connection))
                    connection.exec_driver_sql("COMMIT")
                except Exception:
                    if driver.in_transaction:
                        connection.exec_driver_sql("ROLLBACK")
                    raise
            finally:
                if waited_ms > self.SLACK_MS:
                    _set_busy_timeout(driver, base)
            return result


class _RunOnDriver:
    """A unit's ``Run`` on the sqlite3 connection, which must still hold the transaction."""

    __slots__ = ("dialect", "driver")

    def __init__(self, dialect: sa.Dialect, driver: Any) -> None:
        self.dialect = dialect
        self.driver = driver

    def __call__(self, statement: Statement[RowT], params: dict[str, Any], /) -> Sequence[RowT]:
        """The rows of one statement of the unit, named."""
        rows = run_on_driver(self.dialect, self.driver, statement, params)
        if not self.driver.in_transaction:
            raise TransactionLost("the transaction was rolled back under the unit")
        return statement.named(rows)


class _RunThrough:
    """A unit's ``Run`` through SQLAlchemy, which must still hold the transaction."""

    __slots__ = ("connection",)

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

    def __call__(self, statement: Statement[RowT], params: dict[str, Any], /) -> Sequence[RowT]:
        """The rows of one statement of the unit, named."""
        result = self.connection.execute(statement.statement, params)
        rows = result.all() if result.returns_rows else []
        driver: Any = self.connection.connection.driver_connection
        if not driver.in_transaction:
            raise TransactionLost("the transaction was rolled back under the unit")
        return statement.named(rows)


def _settle(batch: list[_Write], outcomes: list[Any]) -> None:
    """Hand each write's outcome to its request, on the request's event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, Any]]] = {}
    for write, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(write.future.get_loop(), []).append((write, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[_Write, Any]]) -> None:
    for write, outcome in settled:
        if write.future.done():  # the request was cancelled (client gone); the write stands
            continue
        if isinstance(outcome, Exception):
            write.future.set_exception(outcome)
        else:
            write.future.set_result(outcome)
