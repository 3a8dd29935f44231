"""Alembic environment: runs the migrations on the engine advanced-alchemy's config built.

Used by ``python -m service migrate`` (``just migrate``), ``litestar database upgrade`` and the
SQLite startup upgrade.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine

from service.database.tables import Base

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def run_migrations(connection: Connection) -> None:
    """Bring the database the connection points at up to the requested revision."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=config.version_table_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.db_url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
elif isinstance(config.engine, AsyncEngine):
    # PostgreSQL's engine is async; ``just migrate`` runs outside any event loop.
    async def run_async(engine: AsyncEngine) -> None:
        """Migrate on one of the engine's connections, then close them all."""
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
        await engine.dispose()

    asyncio.run(run_async(config.engine))
else:
    # The app's own engine: not disposed here, since an in-memory SQLite database lives in it.
    with config.engine.connect() as connection:
        run_migrations(connection)
        connection.commit()
