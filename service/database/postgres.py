"""PostgreSQL: asyncpg on the plugin's ``AsyncEngine``, every wait awaited.

A wait for a lock, a slow statement, a pooled connection or a connect is awaited, so the event
loop serves the worker's other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.util import greenlet_spawn

from service.database.statements import (
    FAST_DRIVERS,
    Database,
    Row,
    Statement,
    raise_as_database_error,
    traced,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolProxiedConnection


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
            raise_as_database_error(exc)
            raise

    async def _fetch_on_driver(self, statement: Statement, params: dict[str, Any]) -> Sequence[Row]:
        compiled = statement.compiled(self.engine.dialect)
        arguments = compiled.arguments(params)
        retry = not statement.writes
        while True:
            try:
                connection = await self.engine.raw_connection()
            except Exception as exc:  # no connection: the statement was never sent
                raise_as_database_error(exc, sent=False)
                raise
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

    async def close(self) -> None:
        """Close the pool's connections (at shutdown).

        The plugin's own shutdown disposes the engine only when its state key is the default
        one; advanced-alchemy 1.12 renames the key for every config after the first in a
        process (as the tests make), and those pools would stay open until garbage-collected.
        """
        await self.engine.dispose()
