"""Alembic environment: one migrator at a time, each migration committed by itself.

Used by ``python -m service migrate`` (``just migrate``), ``litestar database upgrade``, the SQLite
startup upgrade and ``alembic upgrade --sql`` (the lint). ``migrator`` holds the lock that keeps
migrators from running together and opens the migration's session; ``online`` is what the
migrations use to change populated tables while the service serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, cast

from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine

from service.database.migrations import migrator
from service.database.schema import APPLIED
from service.database.tables import Base

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from alembic.runtime.migration import MigrationContext, MigrationInfo
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def run_migrations(connection: Connection) -> None:
    """Bring the database the connection points at up to the requested revision."""
    config.attributes[APPLIED] = []
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=config.version_table_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
        on_version_apply=record_applied,
    )
    with context.begin_transaction():
        context.run_migrations()


def record_applied(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """Note each migration as Alembic records it (``on_version_apply``)."""
    config.attributes[APPLIED].append(step.up_revision_id)


if context.is_offline_mode():
    context.configure(
        url=config.db_url,
        target_metadata=Base.metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    # As the migrator's session has them (see migrator.on_postgres).
    impl = context.get_context().impl
    impl.static_output(f"SET lock_timeout = '{migrator.LOCK_TIMEOUT}';")
    impl.static_output("SET statement_timeout = 0;")
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    with migrator.on_sqlite(given):
        run_migrations(given)
elif isinstance(config.engine, AsyncEngine):
    # PostgreSQL's engine is async; ``just migrate`` runs outside any event loop.
    asyncio.run(migrator.on_postgres(config.engine, run_migrations))
else:
    # The app's own engine: not disposed here, since an in-memory SQLite database lives in it.
    with config.engine.connect() as connection:
        with migrator.on_sqlite(connection):
            run_migrations(connection)
        connection.commit()
