"""One migrator at a time, each migration in a transaction of its own: what env.py runs.

Every way of migrating (``python -m service migrate``, ``litestar database upgrade``, the
SQLite upgrade at startup) goes through env.py, and so through here:

- **PostgreSQL**: a session-level advisory lock (``ADVISORY_LOCK``). A second migrator waits,
  then finds the schema at the revision asked for and has nothing to do. It waits by trying
  the lock again every ``POLL_SECONDS`` rather than in one blocking call: a call blocked on the
  lock keeps a snapshot open, and an index being built ``CONCURRENTLY`` by the first migrator
  would wait for that snapshot to end, while the second waits for the first: a deadlock.
  Migrations run on a connection of their own (not the service's pool), with the migration's
  session settings: ``lock_timeout`` (see ``online``) and no ``statement_timeout`` (an index on
  a large table takes longer than a request may).
- **SQLite**: an exclusive ``flock`` on a file beside the database (``<database>.migrate.lock``),
  since the migrations commit step by step (see ``online``) and a transaction can no longer
  hold the write lock throughout. Each migration is one ``BEGIN IMMEDIATE`` transaction, but
  for its ``online.steps()``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

ADVISORY_LOCK = int.from_bytes(b"heroesdb", "big") >> 1
"""The key of the PostgreSQL advisory lock a migrator holds (any bigint no one else uses)."""
POLL_SECONDS = 0.5
"""How often a waiting migrator tries the lock again."""
LOCK_TIMEOUT = "2s"
"""The migration session's ``lock_timeout``: how long a strong lock is waited for before the
statement gives up and is tried again (``online.locked``)."""
LOCK_ATTEMPTS = 8
"""Tries of a statement that waits for a lock (on SQLite, for the write lock)."""
FIRST_PAUSE = 0.5
"""Seconds between the first two tries; doubled after each, up to ``LONGEST_PAUSE``."""
LONGEST_PAUSE = 8.0

log = logging.getLogger("service.migrations")


async def on_postgres(service: AsyncEngine, migrate: Callable[[sa.Connection], None]) -> None:
    """Run ``migrate`` on a connection of its own, holding the migrators' lock.

    Then the engines are disposed of: the migrator's, and the service's it was made from.
    """
    engine = _migration_engine(service)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            await connection.exec_driver_sql("SET statement_timeout = 0")
            await connection.commit()
            await _take_lock(connection)
            try:
                await connection.run_sync(migrate)
                await connection.commit()
            finally:
                await connection.rollback()
                unlock = sa.text("SELECT pg_advisory_unlock(:key)")
                await connection.scalar(unlock, {"key": ADVISORY_LOCK})
                await connection.commit()
    finally:
        await engine.dispose()
        await service.dispose()


def _migration_engine(engine: AsyncEngine) -> AsyncEngine:
    """An engine on ``engine``'s database for the migrator alone: no pool, no service settings.

    The service's engine gives its connections a ``statement_timeout``, and, behind a
    transaction pooler, opens SQLAlchemy's transactions itself, which ``CONCURRENTLY`` cannot
    run in.
    """
    arguments: dict[str, Any] = {}
    if engine.dialect.driver == "psycopg":
        arguments["connect_args"] = {"prepare_threshold": None}
    return create_async_engine(engine.url, poolclass=NullPool, hide_parameters=True, **arguments)


async def _take_lock(connection: AsyncConnection) -> None:
    query = sa.text("SELECT pg_try_advisory_lock(:key)")
    waited = False
    while not await connection.scalar(query, {"key": ADVISORY_LOCK}):
        await connection.commit()
        if not waited:
            log.info("another migrator is at work on this database: waiting for it to finish")
            waited = True
        await asyncio.sleep(POLL_SECONDS)
    await connection.commit()


@contextmanager
def on_sqlite(connection: sa.Connection) -> Iterator[None]:
    """Hold the migrators' lock file, and make each migration's transaction BEGIN IMMEDIATE."""
    database = connection.engine.url.database
    with lock_file(None if database in (None, "", ":memory:") else Path(database)):
        sa.event.listen(connection, "begin", begin_immediate)
        try:
            yield
        finally:
            sa.event.remove(connection, "begin", begin_immediate)


@contextmanager
def lock_file(database: Path | None) -> Iterator[None]:
    """Hold the migrators' lock file of the SQLite file ``database`` (None: in memory)."""
    if database is None:  # in memory: the process is the only one that sees it
        yield
        return
    path = database.with_name(database.name + ".migrate.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another migrator is at work on %s: waiting for it to finish", database)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def begin_immediate(connection: sa.Connection) -> None:
    """Open a SQLite transaction with the write lock, trying again while another holds it.

    The service's SQLite connections are in the driver's autocommit, so SQLAlchemy's
    transactions (here, Alembic's one per migration) begin nothing by themselves.
    """
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    while_locked(
        lambda: connection.exec_driver_sql("BEGIN IMMEDIATE"),
        lambda exc: "locked" in str(exc.orig),
        "the database is locked",
    )


def while_locked(
    run: Callable[[], object], refused: Callable[[sa.exc.DBAPIError], bool], what: str
) -> None:
    """Run ``run``, again while it fails because another holds a lock (``refused`` says so).

    Up to ``LOCK_ATTEMPTS`` times, pausing longer each time and saying so in the log.
    """
    pause = FIRST_PAUSE
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            run()
        except sa.exc.DBAPIError as exc:
            if not refused(exc) or attempt == LOCK_ATTEMPTS:
                raise
            log.info("%s (try %d of %d); again in %.1f s", what, attempt, LOCK_ATTEMPTS, pause)
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        else:
            return
