"""SQLite: reads inline on the event loop, writes on one group-committing writer thread.

- Reads run inline on the loop (about 10 µs) on a connection that never waits for a lock
  (``busy_timeout = 0``); a read that would wait moves to a thread that may, and so does a
  statement marked ``slow`` (one that reads much of the table, like a count).
- Writes go to one writer thread per worker (SQLite has one writer anyway), which waits for the
  write lock and the fsync of the commit off the loop, and commits the writes that queued up
  meanwhile together (group commit): one fsync for many acknowledged writes.

When the engine is traced, a statement run off the loop (the writer thread, a waiting read) runs
in the request's ``contextvars`` context, so its span is a child of the request's.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from service.database.statements import (
    Database,
    Row,
    Statement,
    raise_as_database_error,
    run_on_driver,
    run_through_sqlalchemy,
    traced,
)

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection


class SqliteDatabase(Database):
    """SQLite: reads inline on a connection that never waits, writes on the writer thread."""

    def __init__(self, engine: sa.Engine, *, in_memory: bool) -> None:
        self.engine = engine
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
            raise_as_database_error(exc)
            raise

    def _read(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        if traced(self.engine):
            # A connection kept for traced reads, as _reader is for the others: checking one
            # out and setting its busy timeout twice per read cost more than the read.
            if self._traced_reader is None:
                self._traced_reader = self.engine.connect()
                _set_busy_timeout(self._traced_reader.connection.driver_connection, 0)
            try:
                return run_through_sqlalchemy(self._traced_reader, statement, params)
            except Exception:
                self._traced_reader.rollback()
                raise
        if self._reader is None:
            self._reader = self.engine.raw_connection()
            _set_busy_timeout(self._reader.driver_connection, 0)
        return run_on_driver(self.engine.dialect, self._reader.driver_connection, statement, params)

    def _read_waiting(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        with self.engine.connect() as connection:
            if traced(self.engine):
                return run_through_sqlalchemy(connection, statement, params)
            driver = connection.connection.driver_connection
            return run_on_driver(self.engine.dialect, driver, statement, params)

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
        self.engine.dispose()  # see PostgresDatabase.close


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
                    run_on_driver(self.engine.dialect, driver, write.statement, write.params)
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
