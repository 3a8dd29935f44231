"""The statement layer: what it skips of SQLAlchemy for speed, it must not skip in meaning.

Statements run on the driver's own connection keep the column types' conversions, are compiled
once per driver, and go through SQLAlchemy whenever something listens to the engine, so that
SQL logging and tracing still see every query. On SQLite, a statement marked slow runs off the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from service.app import create_app
from service.database.engines import create_engine, database_config, open_database
from service.database.sqlite import SqliteDatabase
from service.database.statements import Database, Statement
from service.settings import Settings
from tests.helpers import create, direct_engine, settings_for

metadata = sa.MetaData()
typed = sa.Table(
    "typed_values",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key", sa.Uuid, nullable=False),
)
INSERT_TYPED = Statement(
    sa.insert(typed)
    .values(id=sa.bindparam("id"), at=sa.bindparam("at"), key=sa.bindparam("key"))
    .returning(typed.c.at, typed.c.key)
)
SELECT_TYPED = Statement(
    sa.select(typed.c.at, typed.c.key).where(typed.c.key == sa.bindparam("key"))
)


@pytest.fixture
def typed_table(database_url: str) -> Iterator[str]:
    """A table with a DateTime and a UUID column beside the heroes."""
    engine = direct_engine(database_url)
    metadata.create_all(engine)
    yield database_url
    metadata.drop_all(engine)
    engine.dispose()


async def _round_trip(database_url: str, at: datetime, key: uuid.UUID) -> tuple[Any, Any]:
    settings = settings_for(database_url)
    db: Database = open_database(database_config(settings), settings)
    try:
        inserted = await db.fetch_one(INSERT_TYPED, id=1, at=at, key=key)
        selected = await db.fetch_one(SELECT_TYPED, key=key)
        return inserted, selected
    finally:
        await db.close()


def test_datetime_and_uuid_are_converted_both_ways(typed_table: str) -> None:
    at = datetime(2026, 11, 27, 11, 0, 0, 123456, tzinfo=UTC)
    key = uuid.uuid4()

    inserted, selected = asyncio.run(_round_trip(typed_table, at, key))

    assert inserted is not None
    assert selected is not None
    for row in (inserted, selected):
        assert isinstance(row[1], uuid.UUID)
        assert row[1] == key
        assert isinstance(row[0], datetime)
        assert row[0].replace(tzinfo=UTC) == at  # SQLite keeps no offset: it stores UTC


def test_each_driver_gets_its_own_compiled_sql() -> None:
    sqlite = sa.create_engine("sqlite://").dialect
    asyncpg = PGDialect_asyncpg()  # type: ignore[no-untyped-call]

    assert "?" in SELECT_TYPED.compiled(sqlite).sql
    assert "$1" in SELECT_TYPED.compiled(asyncpg).sql
    assert SELECT_TYPED.compiled(sqlite) is SELECT_TYPED.compiled(sqlite)


def _engine_of(app: Litestar) -> sa.Engine:
    """The engine the app's SQLAlchemy plugin owns (the sync face of an async one)."""
    (config,) = app.plugins.get(SQLAlchemyPlugin).config
    engine = config.get_engine()
    return engine if isinstance(engine, sa.Engine) else engine.sync_engine


def test_every_statement_of_every_operation_reaches_engine_listeners(
    settings: Settings,
) -> None:
    app = create_app(settings)
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2].split()[0].upper())

    with TestClient[Litestar](app) as client:
        sa.event.listen(_engine_of(app), "before_cursor_execute", record)
        hero = create(client, "Listened")
        client.get(f"/heroes/{hero['id']}")
        client.get("/heroes")
        client.patch(f"/heroes/{hero['id']}", json={"age": 3})
        client.delete(f"/heroes/{hero['id']}")
        sa.event.remove(_engine_of(app), "before_cursor_execute", record)
        client.get("/heroes")  # not seen: nothing listens any more

    statements = [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert statements == ["INSERT", "SELECT", "SELECT", "UPDATE", "DELETE"], seen


THREAD = sa.select(sa.func.thread_id())
"""A read that answers the id of the thread it ran on."""


def sqlite_database(url: str) -> SqliteDatabase:
    engine = create_engine(Settings(database_url=url))
    assert isinstance(engine, sa.Engine)

    @sa.event.listens_for(engine, "connect")
    def add_thread_id(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("thread_id", 0, threading.get_ident)

    return SqliteDatabase(engine, in_memory=url.endswith(":memory:"))


async def thread_of(database: SqliteDatabase, statement: Statement) -> int:
    try:
        row = await database.fetch_one(statement)
    finally:
        await database.close()
    assert row is not None
    thread: int = row[0]
    return thread


@pytest.mark.parametrize(("slow", "off_the_loop"), [(False, False), (True, True)])
def test_sqlite_runs_slow_reads_off_the_event_loop(
    tmp_path: Path, *, slow: bool, off_the_loop: bool
) -> None:
    database = sqlite_database(f"sqlite:///{tmp_path / 'heroes.db'}")

    thread = asyncio.run(thread_of(database, Statement(THREAD, slow=slow)))

    assert (thread != threading.get_ident()) is off_the_loop


def test_in_memory_sqlite_runs_slow_reads_inline_on_its_one_connection() -> None:
    database = sqlite_database("sqlite:///:memory:")

    thread = asyncio.run(thread_of(database, Statement(THREAD, slow=True)))

    assert thread == threading.get_ident()
