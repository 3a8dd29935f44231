"""PostgreSQL behind a transaction pooler (``DB_POOLER=transaction``): nothing left on a session.

A transaction pooler (PgBouncer with ``pool_mode = transaction``; RDS Proxy, Supavisor and the
poolers of Neon and Azure behave the same way) lends a client's connection a server session for
one transaction at a time. The next transaction of the same connection may run on another
session, one that other clients, or this worker before it restarted, have used. So the service
leaves nothing on a session beyond the transaction that made it:

- **No named prepared statement.** psycopg 3 runs with ``prepare_threshold=None``: every
  statement goes out as the unnamed statement, Parse, Bind and Execute in one round trip, and
  the next Parse on that session replaces it. (asyncpg, for an explicit ``postgresql+asyncpg://``,
  runs with its statement cache off and SQLAlchemy's prepared statements unnamed: a Parse and
  Describe first, then Bind and Execute, two round trips, the session held by the pooler
  between them because no Sync ends the first.)
- **No session setting.** Startup options (the statement timeout, in the direct mode) are refused
  by PgBouncer and would be lost by any pooler, and a ``SET`` would stay on a session other
  clients then get. The service bounds each statement itself instead (``bound``): past
  ``DB_POOL_TIMEOUT`` (waiting in the pooler's queue for a session) plus
  ``DB_STATEMENT_TIMEOUT_MS`` (running), the statement is cancelled and the request gets 503.
- **One statement, one transaction.** psycopg's connections are in autocommit: each API
  statement is its own transaction, committed when it answers, with no ``BEGIN`` and
  ``COMMIT`` round trips, and the pooler hands the session back at once. Where SQLAlchemy opens
  a transaction (plugin sessions, ``db_session``; the startup schema check; migrations), an
  explicit ``BEGIN`` opens it, and its ``COMMIT`` or ``ROLLBACK`` ends it: the pooler keeps one
  session for it in between.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from service.database.postgres import PostgresDatabase
from service.database.prepared import UNPREPARED, PreparedStatements
from service.database.statements import Row, Statement
from service.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolResetState

DRIVER = "postgresql+psycopg"
"""The driver a plain ``postgresql://`` URL runs on behind a transaction pooler."""
POOLED_DRIVERS = frozenset({"psycopg", "asyncpg"})
_IDLE = 0
"""libpq's ``PQTRANS_IDLE``: no transaction open on the connection."""
NOT_FORWARDED = ("query_wait_timeout", "server login has been failing")
"""How PgBouncer's errors begin (SQLSTATE 08P01, the connection then closed) when it answers a
statement itself instead of sending it on: no server connection came free within its
``query_wait_timeout``, or it cannot log in to PostgreSQL. Nothing was stored. (Its other 08P01
errors, such as "server conn crashed?", may come after the statement reached PostgreSQL.)"""


def statement_bound(settings: Settings) -> float | None:
    """Seconds a statement may take from being sent to its answer; None: no bound."""
    if not settings.db_statement_timeout_ms:
        return None
    return settings.db_pool_timeout + settings.db_statement_timeout_ms / 1000


def engine_arguments(url: URL, settings: Settings) -> dict[str, Any]:
    """``create_async_engine``'s arguments for ``url`` behind a transaction pooler."""
    driver = url.get_driver_name()
    if driver not in POOLED_DRIVERS:
        raise SettingsError(
            f"DB_POOLER: a transaction pooler needs psycopg or asyncpg, not {url.drivername}"
        )
    if importlib.util.find_spec(driver) is None:
        raise SettingsError(
            f"DB_POOLER: {url.drivername} needs {driver}: pip install 'hero-service[postgres]'"
        )
    if settings.db_pooler_prepared:
        if driver != "asyncpg":
            raise SettingsError(
                f"DB_POOLER_PREPARED: runs on asyncpg (postgresql://), not {url.drivername}"
            )
        # asyncpg's statement cache and SQLAlchemy's named statements, unless the pooler turns
        # out not to keep them (service.database.prepared); no startup parameter.
        return {"connect_args": {"timeout": settings.db_connect_timeout}}
    if driver == "asyncpg":
        return {"connect_args": {"timeout": settings.db_connect_timeout, **UNPREPARED}}
    return {
        # Positional parameters, so that the statements run on psycopg's cursor as compiled.
        "paramstyle": "format",
        # Connections come back in autocommit, with nothing to roll back but for a transaction
        # SQLAlchemy did not end (see psycopg_connections).
        "pool_reset_on_return": None,
        "connect_args": {
            "connect_timeout": settings.db_connect_timeout,
            "prepare_threshold": None,
            "autocommit": True,
        },
    }


def psycopg_connections(engine: AsyncEngine) -> None:
    """How the pool keeps psycopg's autocommit connections: transactions, and dead ones.

    SQLAlchemy expects the driver to begin a transaction by itself before a statement; in
    autocommit psycopg does not, so each transaction SQLAlchemy begins gets an explicit
    ``BEGIN``. SQLAlchemy then ends it through psycopg's ``commit()`` or ``rollback()``, which
    send ``COMMIT`` or ``ROLLBACK`` while a transaction is open, autocommit or not. A connection
    given back to the pool is rolled back only if a transaction is still open on it: SQLAlchemy's
    rollback of every connection costs each statement of the API a call for nothing.

    psycopg learns that the other end closed (the pooler stopped or restarted) only when it next
    reads: a connection taken from the pool reads what is waiting, without waiting, so that a
    request finds out before it sends its statement, which then goes on a new connection (or
    nowhere, nothing stored, if none can be made).
    """
    if engine.dialect.driver != "psycopg":
        return
    import psycopg  # noqa: PLC0415 (the postgres extra's, needed only here)

    @sa.event.listens_for(engine.sync_engine, "checkout", insert=True)
    def replace_if_gone(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            dbapi_connection.driver_connection.pgconn.consume_input()
        except psycopg.OperationalError as exc:
            raise sa.exc.DisconnectionError(str(exc)) from exc

    @sa.event.listens_for(engine.sync_engine, "begin")
    def begin(connection: sa.Connection) -> None:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("BEGIN")
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "reset")
    def roll_back_if_open(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        if state.asyncio_safe and not state.terminate_only:
            status = dbapi_connection.driver_connection.info.transaction_status
            if status != _IDLE:
                dbapi_connection.rollback()


class PooledPostgresDatabase(PostgresDatabase):
    """PostgreSQL behind a transaction pooler: one autocommit statement per call, bounded.

    The direct mode's retry loop (``PostgresDatabase``), on psycopg: each statement checks a
    connection out of the engine's pool, runs on the driver's own connection in autocommit (the
    statement is its transaction), and gives it back. A statement that has not answered within
    ``bound`` seconds is cancelled and the request gets 503; a read whose connection turns out
    dead is run once more on a new connection.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bound: float | None,
        prepared: PreparedStatements | None = None,
    ) -> None:
        super().__init__(engine, bound)
        self.prepared = prepared
        self._psycopg = engine.dialect.driver == "psycopg"
        self._fast = self._fast or self._psycopg

    async def _run(self, driver: Any, sql: str, arguments: list[Any]) -> Sequence[Row]:
        if not self._psycopg:
            return await super()._run(driver, sql, arguments)
        # In autocommit (engine_arguments), the statement is its own transaction. Results come
        # in binary, which psycopg reads with less work than text.
        async with asyncio.timeout(self.bound), driver.cursor() as cursor:
            await cursor.execute(sql, arguments, binary=True)
            rows: Sequence[Row] = await cursor.fetchall()
            return rows

    def _retry(self, exc: Exception, statement: Statement, *, dropped: bool) -> bool:
        # A statement refused for a prepared statement the pooler lost never ran: it runs again
        # on a new connection, unprepared (service.database.prepared), write or read.
        if self.prepared is not None and self.prepared.lost(exc):
            return True
        return super()._retry(exc, statement, dropped=dropped)

    def _idle(self, driver: Any) -> bool:
        return not self._psycopg or driver.info.transaction_status == _IDLE

    def _sent(self, exc: Exception) -> bool:
        # psycopg raises PgBouncer's error itself; asyncpg a ConnectionDoesNotExistError caused
        # by it (the connection closed after it).
        error: BaseException | None = getattr(exc, "orig", None) or exc
        while error is not None:
            refused = getattr(error, "sqlstate", None) == "08P01"
            if refused and str(error).startswith(NOT_FORWARDED):
                return False
            error = error.__cause__
        return True
