"""Behind a pooler that keeps prepared statements (``DB_POOLER_PREPARED=true``): asyncpg's cache.

PgBouncer 1.21 and later, with ``max_prepared_statements`` above 0 (200 by default from 1.24),
keeps the statements a client prepares under a name at the protocol level: it prepares each on
the server sessions under a name of its own (``PGBOUNCER_<n>``, one per statement text), on
whichever session the client's next transaction gets, and renames the client's Bind and Close to
it. Through such a pooler the service runs as it does straight to PostgreSQL, on asyncpg with its
statement cache (each statement parsed and planned once per server session), but as in the
pooler mode otherwise: no startup parameter, nothing set on a session, each statement bounded by
the service (``service.database.pooled``).

A pooler that does not keep them (PgBouncer before 1.21 or with ``max_prepared_statements = 0``;
a session pooler; no pooler) passes the client's names through to whichever server session the
transaction gets, where they may meet another worker's statement of the same name
(``__asyncpg_stmt_1__`` in every worker): "already exists", "does not exist", or worse, a Bind
that runs the other worker's statement. So the engine looks before its first connection
(``keeps_prepared_statements``): a name of its own, prepared in a transaction, either reaches
the server session as it was sent (nothing keeps it) or does not (the pooler renamed it). Where
nothing keeps them, the engine connects as the pooler mode does on asyncpg (statement cache off,
SQLAlchemy's statements unnamed: nothing stays on a session under a name), and says so once in
the log, naming the setting. The same happens at the first "does not exist" or "already exists"
later (the pooler was restarted without the setting): PostgreSQL refused that statement before
running it, so it runs again at once on a new, unprepared connection, and every connection made
prepared is replaced as it is next taken from the pool.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.util import await_only

if TYPE_CHECKING:
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import ConnectionPoolEntry

logger = logging.getLogger("service")

LOST = frozenset({"26000", "42P05"})
"""SQLSTATEs of a prepared statement the session does not hold as the client prepared it:
``invalid_sql_statement_name`` ("prepared statement ... does not exist") and
``duplicate_prepared_statement`` ("... already exists"). PostgreSQL refuses the statement before
running it."""
SQLALCHEMY_ARGUMENTS = frozenset(
    {"async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func"}
)
"""The connect arguments SQLAlchemy's asyncpg dialect takes for itself, not asyncpg."""
_MADE_PREPARED = "made_prepared"
"""A connection's ``info`` key: whether it was made with the statement cache on."""


def unnamed() -> str:
    """The name of every statement SQLAlchemy's asyncpg dialect prepares, when unprepared.

    The empty name is the unnamed statement, which the next one replaces: nothing stays on the
    session under a name.
    """
    return ""


UNPREPARED: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": unnamed,
}
"""asyncpg's connect arguments for a pooler that keeps no prepared statement."""
_KEPT = weakref.WeakKeyDictionary["sa.Engine", "PreparedStatements"]()


class PreparedStatements:
    """Whether the pooler in front of an engine keeps prepared statements; its connections follow.

    ``kept`` is None until the engine's first connect has looked, then True, or False from the
    first sign that the pooler does not keep them (for good: the worker runs unprepared on).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.kept: bool | None = None
        events = engine.sync_engine
        sa.event.listen(events, "do_connect", self._connect)
        sa.event.listen(events, "connect", self._remember)
        sa.event.listen(events, "checkout", self._replace_if_prepared)
        sa.event.listen(events, "handle_error", self._failed)
        _KEPT[events] = self

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the session lacks a statement the service prepared.

        The first time, the worker goes on unprepared, and says so.
        """
        native = getattr(exc, "orig", None) or exc
        if getattr(native, "sqlstate", None) not in LOST:
            return False
        if self.kept is not False:
            self.kept = False
            logger.warning(
                "DB_POOLER_PREPARED=true, but a prepared statement was lost (%s: %s): the "
                "pooler does not keep them. This worker goes on with none prepared (asyncpg's "
                "statement cache off, slower). Set max_prepared_statements above 0 on PgBouncer "
                "1.21 or later, or DB_POOLER_PREPARED=false.",
                type(native).__name__,
                (str(native).strip().splitlines() or [""])[0],
            )
        return True

    def _connect(
        self, _dialect: Any, _record: Any, cargs: Sequence[Any], cparams: dict[str, Any]
    ) -> None:
        # Called by the pool in the greenlet where the connect is awaited.
        if self.kept is None:
            arguments = {k: v for k, v in cparams.items() if k not in SQLALCHEMY_ARGUMENTS}
            kept = await_only(keeps_prepared_statements(cargs, arguments))
            if self.kept is None:
                self.kept = kept
                if not kept:
                    logger.warning(
                        "DB_POOLER_PREPARED=true, but the pooler does not keep prepared "
                        "statements (a statement prepared under a name reached the server "
                        "session with that name): the service runs with none prepared "
                        "(asyncpg's statement cache off, slower). Set max_prepared_statements "
                        "above 0 on PgBouncer 1.21 or later, or DB_POOLER_PREPARED=false."
                    )
        if not self.kept:
            cparams.update(UNPREPARED)

    def _remember(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_MADE_PREPARED] = bool(self.kept)

    def _replace_if_prepared(
        self, _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        if not self.kept and record.info.get(_MADE_PREPARED):
            raise sa.exc.DisconnectionError("made with prepared statements the pooler lost")

    def _failed(self, context: ExceptionContext) -> None:
        # What runs through SQLAlchemy (plugin sessions, the startup check, migrations).
        self.lost(context.original_exception)


def prepared_statements(engine: AsyncEngine) -> PreparedStatements | None:
    """What ``engine`` knows of its pooler's prepared statements; None if it prepares none."""
    return _KEPT.get(engine.sync_engine)


async def keeps_prepared_statements(cargs: Sequence[Any], arguments: dict[str, Any]) -> bool:
    """Whether the pooler at ``arguments`` (asyncpg's connect arguments) keeps prepared statements.

    A statement is prepared under a name of its own, in a transaction (so on one server session
    throughout), and the session's ``pg_prepared_statements`` is read: a pooler that keeps
    prepared statements prepares it there under a name of its own. A name found as it was sent
    is deallocated, leaving nothing behind on a session that outlives this connection.
    """
    import asyncpg  # noqa: PLC0415 (the postgres extra's)

    connection = await asyncpg.connect(*cargs, **{**arguments, "statement_cache_size": 0})
    name = f"hero_probe_{uuid.uuid4().hex}"
    try:
        async with connection.transaction():
            # Held until the check: once dropped, asyncpg closes the statement.
            statement = await connection.prepare("SELECT 1", name=name)
            sent_as_named = await connection.fetchval(
                "SELECT count(*) > 0 FROM pg_prepared_statements WHERE name = $1", name
            )
            if sent_as_named:
                await connection.execute(f'DEALLOCATE "{name}"')
            del statement
    finally:
        await connection.close()
    return not sent_as_named
