"""Alembic environment: runs the migrations on the engine advanced-alchemy's config built.

Used by ``litestar database upgrade`` (``just migrate``) and by the SQLite startup upgrade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from alembic import context

from service.models import Base

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
else:
    # The app's own engine: not disposed here, since an in-memory SQLite database lives in it.
    with config.engine.connect() as connection:  # type: ignore[union-attr]
        run_migrations(connection)
        connection.commit()
