"""The app's sqlite3 connections: closed when it stops, patient with workers that
start together on one new file, and in the transaction control it chose."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from litestar.testing import TestClient
from sqlalchemy.engine import Engine

from service.app import create_app
from service.database.backup import backup
from service.database.engines import create_engine
from service.settings import Settings
from tests.conftest import PLUGIN_KEY_REGISTRIES
from tests.helpers import create


def files_open_under(directory: Path) -> list[str]:
    """The files under ``directory`` this process holds open (the database, its WAL...)."""
    opened = []
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(f"{directory}/"):
            opened.append(target)
    return opened


@pytest.fixture
def first_app_of_its_process() -> None:
    """The app made next gets the plugin's default keys, as a server's one app does: the plugin
    then disposes of the engine's pool when the app stops (before the app's shutdown hooks)."""
    for config in (SQLAlchemyAsyncConfig, SQLAlchemySyncConfig):
        for registry in PLUGIN_KEY_REGISTRIES:
            getattr(config, registry).clear()


@pytest.mark.usefixtures("first_app_of_its_process")
def test_an_app_closes_its_sqlite_connections_when_it_stops(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'heroes.db'}")
    with TestClient(create_app(settings)) as client:
        hero = create(client)  # on the writer thread's connection
        assert client.get(f"/heroes/{hero['id']}").status_code == 200  # on the reader's
        assert files_open_under(tmp_path)

    assert files_open_under(tmp_path) == []


@pytest.fixture
def implicit_transactions_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite3 with the default a later Python gives it: ``autocommit=False``, implicit
    transactions, whatever ``isolation_level`` says."""
    connect = sqlite3.connect

    def connect_as_later_pythons_do(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("autocommit", False)
        connection: sqlite3.Connection = connect(*args, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_as_later_pythons_do)
    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect_as_later_pythons_do)  # SQLAlchemy's


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3 has no autocommit before 3.12")
@pytest.mark.usefixtures("implicit_transactions_by_default")
def test_the_app_keeps_its_transaction_control_when_sqlite3s_default_changes(
    tmp_path: Path,
) -> None:
    database = tmp_path / "heroes.db"
    with TestClient(create_app(Settings(database_url=f"sqlite:///{database}"))) as client:
        hero = create(client)
        assert client.patch(f"/heroes/{hero['id']}", json={"age": 40}).status_code == 200
        assert client.get(f"/heroes/{hero['id']}").json()["age"] == 40

    report = backup(Settings(database_url=f"sqlite:///{database}"), tmp_path / "copy.db")
    assert "1 heroes" in report


def start_a_worker(database: Path, start: Any) -> str:
    """What one worker process does first: connect to the file, as every worker does at once."""
    engine = create_engine(Settings(database_url=f"sqlite:///{database}"))
    assert isinstance(engine, Engine)  # SQLite's is synchronous
    start.wait()
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
    except Exception as exc:
        return repr(exc)
    finally:
        engine.dispose()


def test_workers_starting_together_on_a_new_file_all_connect(tmp_path: Path) -> None:
    """Several workers switch one new file to WAL at the same moment. SQLite answers all but one
    "database is locked" at once, without waiting; before the retry, most runs of this test
    failed a worker's startup (tests/test_several_workers.py met it on Python 3.14)."""
    workers = 4
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(workers) as pool:
        for round_ in range(20):
            start = manager.Barrier(workers)
            database = tmp_path / f"heroes-{round_}.db"
            assert pool.starmap(start_a_worker, [(database, start)] * workers) == ["wal"] * workers
