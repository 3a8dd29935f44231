"""The app's sqlite3 connections: closed when it stops, and in the transaction control it chose."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from litestar.testing import TestClient

from service.app import create_app
from service.database.backup import backup
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
