"""A 2xx means the write is stored; a write the database refuses or cannot take stores nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import (
    COMMIT_GUARD,
    FAILS_AT_COMMIT,
    Client,
    assert_error,
    create,
    direct_engine,
    new_hero,
    run_sql,
)


def test_failed_commit_is_an_error_and_stores_nothing(client: Client, settings: Settings) -> None:
    dialect = direct_engine(settings.database_url).dialect.name
    run_sql(settings, COMMIT_GUARD[dialect])

    assert_error(client.post("/heroes", json=new_hero(FAILS_AT_COMMIT)), 409)
    assert client.get("/heroes").json() == []
    assert create(client, "fine")["name"] == "fine"


@pytest.fixture
def sqlite_file(tmp_path: object) -> str:
    return f"{tmp_path}/locked.db"


@pytest.fixture
def impatient_client(sqlite_file: str) -> Iterator[TestClient[Litestar]]:
    settings = Settings(database_url=f"sqlite:///{sqlite_file}", sqlite_busy_timeout_ms=50)
    with TestClient(create_app(settings)) as client:
        yield client


def test_write_while_another_process_holds_the_sqlite_lock_is_503_then_recovers(
    impatient_client: Client, sqlite_file: str
) -> None:
    hero = create(impatient_client)
    locker = sqlite3.connect(sqlite_file, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")

    refused = impatient_client.post("/heroes", json=new_hero("Blocked"))
    read = impatient_client.get(f"/heroes/{hero['id']}")
    locker.execute("ROLLBACK")
    locker.close()

    assert_error(refused, 503)
    assert refused.headers["retry-after"] == "1"
    assert read.status_code == 200
    assert create(impatient_client, "After")["name"] == "After"
    assert [h["name"] for h in impatient_client.get("/heroes").json()] == ["Deadpond", "After"]


def test_tables_are_created_on_startup(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        engine = direct_engine(settings.database_url)
        assert "heroes" in sa.inspect(engine).get_table_names()
        engine.dispose()
