"""What a migration uses to change a populated table while the service serves it.

The rules these carry out are in docs/database.md ("Changing the schema while serving"). Inside
``with steps():`` each call below is its own short transaction, committed before the next, so
that no lock outlives the statement that needed it:

- PostgreSQL: the migration's transaction is committed and the steps run in autocommit
  (Alembic's ``autocommit_block``). Indexes are built and dropped ``CONCURRENTLY``; a statement
  that takes a strong lock (``ALTER TABLE``) waits at most ``LOCK_TIMEOUT`` for it, and is tried
  again after a pause that doubles, so that a migration queued behind a long transaction never
  holds up the requests queued behind it.
- SQLite: each step takes the write lock (``BEGIN IMMEDIATE``) and commits; a backfill commits
  every ``BATCH_ROWS`` rows, so that the service's writes get the lock in between. SQLite builds
  an index in one transaction (writes wait for it, reads do not).

Each step can run again after an interruption (``IF NOT EXISTS``, an invalid index left by a
failed build is dropped first), since the steps before it stay committed. With ``alembic
upgrade --sql`` (the lint) the same statements are written out, ``COMMIT`` and ``BEGIN`` around
the steps. Long steps say what they do on the ``service.migrations`` logger, which ``python -m
service migrate`` prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import op

from service.database.migrations.migrator import (
    LOCK_TIMEOUT,
    begin_immediate,
    while_locked,
)

BATCH_ROWS = 10_000
"""Rows a backfill changes per transaction."""
LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE for a lock not had within ``lock_timeout``."""

log = logging.getLogger("service.migrations")


def is_sqlite() -> bool:
    """Whether the migration runs on SQLite (else PostgreSQL)."""
    return bool(op.get_context().dialect.name == "sqlite")


def is_offline() -> bool:
    """Whether the statements are written out (``alembic upgrade --sql``) rather than run."""
    return bool(op.get_context().as_sql)


def lint_ignore(rules: str, reason: str, *, whole_migration: bool = False) -> None:
    """Let the lint (squawk) pass ``rules`` for the next statement, saying why.

    The only way an exception to the lint is made: in the migration, with its reason, written
    into the output of ``alembic upgrade --sql`` that the lint reads (and nowhere else). A
    statement over several lines (a ``CREATE TABLE``) needs ``whole_migration``.
    """
    if is_offline() and not is_sqlite():
        scope = "squawk-ignore-file" if whole_migration else "squawk-ignore"
        # On the line right above the statement, where squawk looks for it.
        output = op.get_context().impl.output_buffer
        assert output is not None
        output.write(f"-- {scope} {rules} -- {reason}\n")


@contextmanager
def steps() -> Iterator[None]:
    """Run the block's steps outside the migration's transaction, each committed by itself.

    What the migration did before the block is committed first; after it a new transaction
    holds what follows, and Alembic's record of the new revision.
    """
    context = op.get_context()
    if not is_sqlite():
        with context.autocommit_block():
            yield
        return
    # The migration's transaction is a BEGIN IMMEDIATE (see migrator.begin_immediate): ended
    # here and started again after the steps, behind Alembic's back (it commits at the end).
    bind = op.get_bind()
    bind.exec_driver_sql("COMMIT")
    try:
        yield
    finally:
        begin_immediate(bind)


@contextmanager
def transaction() -> Iterator[sa.Connection | None]:
    """One step of several statements, inside ``steps()``: they commit or fail together.

    Yields the connection, or None when the statements are only written out.
    """
    if is_offline():
        op.execute("BEGIN")
        yield None
        op.execute("COMMIT")
        return
    bind = op.get_bind()
    if is_sqlite():
        begin_immediate(bind)
    else:
        bind.exec_driver_sql("BEGIN")
    try:
        yield bind
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    bind.exec_driver_sql("COMMIT")


def locked(sql: str, what: str) -> None:
    """Run ``sql``, which takes a strong lock on a table, inside ``steps()``.

    On PostgreSQL it waits for the lock ``LOCK_TIMEOUT`` at most, set for the migration's session
    (see ``migrator``), and is tried again up to ``LOCK_ATTEMPTS`` times, pausing longer each
    time. On SQLite it is a transaction of its own.
    """
    if is_offline():
        op.execute(sql)
        return
    _check_outside_transaction()
    bind = op.get_bind()
    if is_sqlite():
        with transaction():
            bind.exec_driver_sql(sql)
        return
    while_locked(
        lambda: bind.exec_driver_sql(sql),
        lambda exc: _sqlstate(exc) == LOCK_NOT_AVAILABLE,
        f"{what}: the table is locked by another transaction",
    )


def create_index(name: str, table: str, columns: str, *, unique: bool = False) -> None:
    """Build the index ``name`` on ``table`` (``columns`` as SQL), inside ``steps()``.

    On PostgreSQL ``CONCURRENTLY``: reads and writes go on while it is built. A build that
    failed leaves an invalid index behind, which is dropped and built again.
    """
    kind = "UNIQUE INDEX" if unique else "INDEX"
    if is_offline():
        op.execute(f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns})")
        return
    _check_outside_transaction()
    bind = op.get_bind()
    started = time.perf_counter()
    if is_sqlite():
        log.info("%s: building index %s", table, name)
        with transaction():
            bind.exec_driver_sql(f"CREATE {kind} IF NOT EXISTS {name} ON {table} ({columns})")
    else:
        valid = bind.scalar(
            sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
        if valid is True:
            return
        if valid is False:
            log.info("%s: dropping %s, left invalid by a build that failed", table, name)
            drop_index(name)
        rows = bind.scalar(
            sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:table)"),
            {"table": table},
        )
        size = f" (about {rows:,} rows)" if rows and rows > 0 else ""
        log.info("%s: building index %s concurrently%s", table, name, size)
        # The build waits for transactions that write the table without holding up any request
        # (CONCURRENTLY takes no lock that conflicts with reads or writes): no lock_timeout.
        bind.exec_driver_sql("SET lock_timeout = 0")
        try:
            bind.exec_driver_sql(
                f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns})"
            )
        finally:
            bind.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    log.info("%s: built index %s in %.1f s", table, name, time.perf_counter() - started)


def drop_index(name: str) -> None:
    """Drop the index ``name`` if it exists, inside ``steps()`` (``CONCURRENTLY`` on PostgreSQL)."""
    if is_offline():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        return
    _check_outside_transaction()
    if is_sqlite():
        with transaction() as bind:
            assert bind is not None
            bind.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        return
    op.get_bind().exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def backfill(table: str, assignments: str, what: str) -> None:
    """``UPDATE table SET assignments`` on every row, ``BATCH_ROWS`` ids at a time.

    Inside ``steps()``; each batch commits by itself. Rows added meanwhile are not visited: a
    backfill fills what the rows stored before the migration lack.
    """
    # Names and SQL from the migration's own source, never from input.
    update = f"UPDATE {table} SET {assignments} WHERE id > :low AND id <= :high"  # noqa: S608
    if is_offline():
        op.execute(sa.text(update).bindparams(low=0, high=BATCH_ROWS))
        return
    _check_outside_transaction()
    bind = op.get_bind()
    bounds = sa.text(f"SELECT min(id), max(id) FROM {table}")  # noqa: S608
    lowest, highest = bind.execute(bounds).one()
    if lowest is None:
        return
    batches = (highest - lowest) // BATCH_ROWS + 1
    started = time.perf_counter()
    for batch, low in enumerate(range(lowest - 1, highest, BATCH_ROWS), start=1):
        with transaction() as connection:
            assert connection is not None
            connection.execute(sa.text(update), {"low": low, "high": low + BATCH_ROWS})
        if batch % 10 == 0 or batch == batches:
            log.info("%s: %s, batch %d of %d", table, what, batch, batches)
    log.info("%s: %s in %.1f s", table, what, time.perf_counter() - started)


def scalar(sql: str, **params: Any) -> Any:
    """The one value ``sql`` reads, or None when the statements are only written out."""
    if is_offline():
        return None
    return op.get_bind().scalar(sa.text(sql), params)


def _check_outside_transaction() -> None:
    bind = op.get_bind()
    if is_sqlite():
        if bind.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            raise RuntimeError("a migration step runs inside online.steps()")
    elif bind.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        raise RuntimeError("a migration step runs inside online.steps()")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE under SQLAlchemy's and the driver adapter's wrappers, if any."""
    native: BaseException | None = exc
    while native is not None:
        sqlstate = getattr(native, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate
        native = native.orig if isinstance(native, sa.exc.DBAPIError) else native.__cause__
    return None
