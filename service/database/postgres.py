"""PostgreSQL: asyncpg on the plugin's ``AsyncEngine``, every wait awaited.

A wait for a lock, a slow statement, a pooled connection or a connect is awaited, so the event
loop serves the worker's other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import traceback
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from service.database.faults import database_errors
from service.database.statements import FAST_DRIVERS, Database, Row, Statement, traced

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolProxiedConnection


# When the idle connection taken without a greenlet turns out dead, SQLAlchemy's reconnect makes
# the driver's connect coroutine, refuses to wait for it outside a greenlet (MissingGreenlet), and
# closes it unawaited, which Python reports; the connection is then made in a greenlet. (The
# driver's own coroutine, which SQLAlchemy leaves to the collector, idle_connection closes.)
warnings.filterwarnings(
    "ignore",
    message=r"coroutine '[\w.]*connect' was never awaited",
    category=RuntimeWarning,
    module=r"sqlalchemy\.util\.concurrency",
)


class PostgresDatabase(Database):
    """PostgreSQL on the plugin's ``AsyncEngine``: every wait is awaited, never blocking the loop.

    With asyncpg, each statement checks a connection out of the engine's pool and runs on the
    asyncpg connection itself, outside any transaction block: PostgreSQL commits the one
    statement before answering, with no BEGIN and COMMIT round trips. A read that finds its
    pooled connection dead (the server restarted) is run once more on a new connection.

    The one retry loop of both PostgreSQL modes: the pooler mode
    (``service.database.pooled``) overrides how a statement runs on its driver and what a
    failure means, not the loop. ``bound``: seconds a statement may take from being sent to its
    answer before it is cancelled and the request gets 503 (None: the server's own
    ``statement_timeout`` ends it, as in the direct mode).
    """

    dialect_name = "postgresql"

    def __init__(self, engine: AsyncEngine, bound: float | None = None) -> None:
        self.engine = engine
        self.bound = bound
        self._fast = engine.dialect.driver in FAST_DRIVERS

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Run ``statement`` on a pooled connection; return its rows."""
        try:
            if not self._fast or traced(self.engine.sync_engine):
                return await self._fetch_through_sqlalchemy(statement, params)
            return await self._fetch_on_driver(statement, params)
        except Exception as exc:
            with database_errors(sent=self._sent(exc)):
                raise

    async def _fetch_on_driver(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        compiled = statement.compiled(self.engine.dialect)
        arguments = compiled.arguments(params)
        retried = False
        while True:
            with database_errors(sent=False):  # no connection: the statement was never sent
                connection = idle_connection(self.engine) or await self.engine.raw_connection()
            driver: Any = connection.driver_connection
            try:
                rows = await self._run(driver, compiled.sql, arguments)
            except asyncio.CancelledError:
                # Abandoned mid-statement: the connection's state is unknown, so it is not reused.
                await greenlet_spawn(connection.invalidate)
                await greenlet_spawn(connection.close)
                raise
            except Exception as exc:
                dropped = is_closed(driver) or isinstance(exc, DROPPED)
                if dropped:
                    await greenlet_spawn(connection.invalidate, exc)
                await greenlet_spawn(connection.close)
                if retried or not self._retry(exc, statement, dropped=dropped):
                    raise
                retried = True
                continue
            if self._idle(driver) and returns_without_waiting(self.engine):
                connection.close()
            else:
                await greenlet_spawn(connection.close)
            return compiled.rows(rows)

    async def _run(self, driver: Any, sql: str, arguments: list[Any]) -> Sequence[Row]:
        """Run one statement on the driver's connection (asyncpg: from its statement cache)."""
        rows: Sequence[Row] = await driver.fetch(sql, *arguments, timeout=self.bound)
        return rows

    def _retry(self, exc: Exception, statement: Statement, *, dropped: bool) -> bool:
        """Whether to run ``statement`` once more, on another connection, after ``exc``.

        A read whose connection died, if the failure was not one that would come again at once
        (``worth_retrying``); never a write, which may have been stored.
        """
        return dropped and not statement.writes and worth_retrying(exc)

    def _idle(self, driver: Any) -> bool:
        """Whether no transaction is left open on ``driver`` (asyncpg opens none by itself)."""
        return True

    def _sent(self, exc: Exception) -> bool:
        """Whether the statement may have reached the database when ``exc`` was raised."""
        return True

    async def _fetch_through_sqlalchemy(
        self, statement: Statement, params: dict[str, Any]
    ) -> Sequence[Row]:
        # Traced (listeners on the engine see the statement), or a driver without a fast path:
        # as bounded as on the driver.
        async with asyncio.timeout(self.bound), self.engine.connect() as connection:
            result = await connection.execute(statement.statement, params)
            rows = result.all()
            await connection.commit()
            return rows

    async def close(self) -> None:
        """Close the pool's connections (at shutdown).

        The plugin's own shutdown disposes the engine only when its state key is the default
        one; advanced-alchemy 1.12 renames the key for every config after the first in a
        process (as the tests make), and those pools would stay open until garbage-collected.
        """
        await self.engine.dispose()


DROPPED = (OSError, ConnectionError, TimeoutError)
"""Failures after which a connection is not reused: the socket failed, or the statement ran
past its bound, leaving the connection in an unknown state."""


def is_closed(driver: Any) -> bool:
    """Whether the driver's connection is known closed, without a round trip.

    asyncpg's ``is_closed()``; psycopg's ``closed``.
    """
    asyncpg_is_closed = getattr(driver, "is_closed", None)
    if asyncpg_is_closed is not None:
        return bool(asyncpg_is_closed())
    return bool(getattr(driver, "closed", False))


def worth_retrying(exc: BaseException) -> bool:
    """Whether a read whose connection died may succeed at once on a new one.

    Not after its bound ran out, nor when a pooler refused it and closed the connection
    (PgBouncer answers SQLSTATE 08P01 when its queue wait, ``query_wait_timeout``, ran out or
    it cannot reach PostgreSQL): trying again would wait as long again, or fail as fast. The
    request gets 503 with ``Retry-After`` instead.
    """
    return not isinstance(exc, TimeoutError) and getattr(exc, "sqlstate", None) != "08P01"


def idle_connection(engine: AsyncEngine) -> PoolProxiedConnection | None:
    """A connection ``engine``'s pool holds idle, checked out without a greenlet; else None.

    SQLAlchemy's async engine runs every checkout and check-in in a greenlet, for the case where
    the pool must wait or connect, which costs a read by id much of its time in the worker
    (measured in ``tests/benchmarks/RESULTS-choices.md``). Taking a
    connection the pool holds idle awaits nothing, so it is done directly. When it would need
    more (the idle connection was dead, or is due for recycling), SQLAlchemy refuses with
    MissingGreenlet, having put the pool back as it was, and the caller takes the greenlet's way.
    """
    sync_engine = engine.sync_engine
    if not isinstance(sync_engine.pool, QueuePool) or not sync_engine.pool.checkedin():
        return None
    try:
        return sync_engine.raw_connection()
    except MissingGreenlet as refused:
        close_unstarted(refused)
        return None


def close_unstarted(refused: MissingGreenlet) -> None:
    """Close the coroutine left unstarted on the way to ``refused``.

    That is the driver's connect, made as the argument of the adapter's coroutine, which
    SQLAlchemy closes. From Python 3.12 on, closing a coroutine that never started keeps its
    arguments until it is collected: the driver's connect is then reported as never awaited
    wherever the collector happens to run, and where that is a frame without builtins (a
    namedtuple's ``__new__``), the report itself fails, as an exception Python cannot raise
    (pytest fails the test it lands in). Closed here, it is reported nowhere.
    """
    pending = [
        value
        for frame, _ in traceback.walk_tb(refused.__traceback__)
        for value in frame.f_locals.values()
        if inspect.iscoroutine(value)
    ]
    while pending:
        coroutine = pending.pop()
        pending.extend(held for held in gc.get_referents(coroutine) if inspect.iscoroutine(held))
        if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
            coroutine.close()


def returns_without_waiting(engine: AsyncEngine) -> bool:
    """Whether a check-in to ``engine``'s pool awaits nothing: no connection beyond its size.

    The check-in resets a connection with a rollback, which asyncpg's adapter skips when no
    transaction was begun on it (and the pooler mode's reset when none is open), then puts it
    back in the pool's queue, which never waits. Only a connection beyond the pool's size
    (overflow) is closed on its return, which is awaited.
    """
    pool = engine.sync_engine.pool
    return isinstance(pool, QueuePool) and pool.overflow() <= 0
