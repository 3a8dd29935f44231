"""The statement layer: where SQLite runs a statement, on the event loop or off it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.db import create_engine
from service.settings import Settings
from service.sql import SqliteDatabase, Statement

THREAD = sa.select(sa.func.thread_id())
"""A read that answers the id of the thread it ran on."""


def sqlite_database(url: str) -> SqliteDatabase:
    engine = create_engine(Settings(database_url=url))
    assert isinstance(engine, sa.Engine)

    @sa.event.listens_for(engine, "connect")
    def add_thread_id(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("thread_id", 0, threading.get_ident)

    return SqliteDatabase(engine, 5000, in_memory=url.endswith(":memory:"))


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
