"""The schema's revision: migrating it (``python -m service migrate``), checking it at startup.

Each migration is of a phase (docs/database.md, "Changing the schema while serving"): *expand*
migrations only add what the release before ignores, *contract* migrations drop what only the
release before needed. A release therefore serves on its schema before its contract migrations
have run, and on a schema a later release has migrated: during a rolling upgrade the old and
the new release serve the same database. The order of an upgrade:
``python -m service migrate --expand``, roll the new release out, ``python -m service migrate``.

The migrations themselves run one migrator at a time (``migrations/migrator.py``), each in a
transaction of its own, their long steps online (``migrations/online.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.database.engines import MIGRATIONS, DatabaseConfig, database_config

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from service.settings import Settings

VERSION_TABLE = "alembic_version"
APPLIED = "applied"
"""Where env.py lists, in the Alembic config's attributes, the revisions it applied."""
CONTRACT = "contract"

log = logging.getLogger("service.migrations")


class MigrationError(Exception):
    """The database could not be migrated; the message says why, without secrets."""


def script() -> ScriptDirectory:
    """The migrations."""
    return ScriptDirectory(str(MIGRATIONS))


def pending(current: str | None) -> list[Script] | None:
    """The migrations after revision ``current``, oldest first; None if it is not one of ours.

    A revision this release does not know was written by a later release, which migrated the
    schema past what this one knows.
    """
    migrations = script()
    if current is not None:
        try:
            migrations.get_revision(current)
        except CommandError:
            return None
    after = list(migrations.iterate_revisions("heads", current))
    after.reverse()
    return after


def phase(migration: Script) -> str:
    """``expand`` or ``contract``: what the migration says it is."""
    return str(getattr(migration.module, "phase", "expand"))


async def prepare_schema(config: DatabaseConfig) -> None:
    """Make sure the schema is one this release serves on, before the first request.

    SQLite databases are migrated in place, so the Quick start needs no migration step.
    PostgreSQL is migrated by the operator (``just migrate``) before deploying. An app started on
    a PostgreSQL database that misses one of its expand migrations refuses to start; one whose
    contract migrations have not run yet, or that a later release has migrated, starts.
    """
    engine = config.get_engine()
    if not isinstance(engine, AsyncEngine):
        _upgrade_sqlite(engine, config)
        return
    async with engine.connect() as connection:
        current = await connection.run_sync(current_revision)
    waiting = pending(current)
    if waiting is None:
        log.warning(
            "The database schema is at revision %s, which a later release wrote: serving on it.",
            current,
        )
        return
    needed = [migration.revision for migration in waiting if phase(migration) != CONTRACT]
    if needed:
        raise RuntimeError(
            f"The database schema is at revision {current or 'none'}, the service needs "
            f"{needed[-1]}: run `python -m service migrate` (`just migrate`) first."
        )
    if waiting:
        log.info(
            "Contract migrations still to run: %s (`python -m service migrate` once every host "
            "runs this release).",
            ", ".join(migration.revision for migration in waiting),
        )


def migrate(settings: Settings, *, to: str = "heads", expand: bool = False) -> list[str]:
    """Bring the database at ``settings.database_url`` to revision ``to``; report in lines.

    What ``python -m service migrate`` and ``just migrate`` run, as ``litestar database upgrade``
    does. With ``expand``, it stops before the first contract migration: what a rolling upgrade
    runs before the new release serves. A second migrator started meanwhile waits for the first,
    then finds the schema migrated.
    """
    if settings.db_pooler == "transaction":
        raise MigrationError(
            "migrations need a session of their own (a lock held across transactions, indexes "
            "built outside any): point DATABASE_URL straight at PostgreSQL, without DB_POOLER"
        )
    config = database_config(settings)
    engine = config.get_engine()
    try:
        target = _expand_target(_read_revision(config)) if expand else to
        commands = AlembicCommands(sqlalchemy_config=config)
        if isinstance(engine, AsyncEngine):
            commands.upgrade(target)  # disposes the engine too
        else:
            try:
                _upgrade_sqlite(engine, config, target, commands)
            finally:
                engine.dispose()
        current = _read_revision(database_config(settings))
    except (sa.exc.SQLAlchemyError, OSError, CommandError) as exc:
        # The driver's first line only: a statement's text could carry more than it should.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MigrationError(f"{type(exc).__name__}: {reason}") from None
    applied = commands.config.attributes.get(APPLIED) or []
    shown = engine.url.render_as_string(hide_password=True)
    lines = [f"applied {', '.join(applied)}" if applied else "nothing to apply"]
    waiting = pending(current) or []
    if not waiting:
        lines.append(f"{shown}: at the latest schema, revision {current}")
    else:
        left = ", ".join(f"{migration.revision} ({phase(migration)})" for migration in waiting)
        lines.append(f"{shown}: at revision {current}; still to run: {left}")
    return lines


def _expand_target(current: str | None) -> str:
    """The last revision before the first pending contract migration (or the head)."""
    waiting = pending(current)
    if waiting is None:
        raise CommandError(f"revision {current} is not one of this release's")
    target = current or "base"
    for migration in waiting:
        if phase(migration) == CONTRACT:
            break
        target = migration.revision
    return target


def _read_revision(config: DatabaseConfig) -> str | None:
    """The database's revision, on a connection closed afterwards with its engine."""
    engine = config.get_engine()
    if not isinstance(engine, AsyncEngine):
        try:
            with engine.connect() as connection:
                return current_revision(connection)
        finally:
            engine.dispose()

    async def read() -> str | None:
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(current_revision)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _upgrade_sqlite(
    engine: Engine,
    config: DatabaseConfig,
    target: str = "heads",
    commands: AlembicCommands | None = None,
) -> None:
    with engine.connect() as connection:
        current = current_revision(connection)
        connection.commit()
        waiting = pending(current)
        if waiting is None:
            log.warning(
                "The database schema is at revision %s, which a later release wrote: "
                "serving on it.",
                current,
            )
            return
        if target == "heads" and commands is None and not waiting:
            return  # at the latest revision: nothing to apply, no need for Alembic's machinery
        commands = commands or AlembicCommands(sqlalchemy_config=config)
        commands.config.attributes["connection"] = connection
        commands.upgrade(target)
        connection.commit()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database's schema is at, or None before the first migration."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()
