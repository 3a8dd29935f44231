"""The schema comes from the Alembic migrations, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from litestar.testing import TestClient

from service.app import create_app
from service.database.engines import MIGRATIONS, database_config
from service.database.tables import Base, Hero
from service.settings import Settings
from tests.helpers import create, direct_engine, moment, without_timestamps

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(settings: Settings) -> str | None:
    engine = direct_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(
                connection, opts={"version_table": "alembic_version"}
            ).get_current_revision()
    finally:
        engine.dispose()


def test_fresh_postgres_serves_after_the_documented_migration_command(
    empty_postgres_url: str,
) -> None:
    command = ["litestar", "--app", "service.app:app", "database", "upgrade", "--no-prompt"]
    env = {**os.environ, "DATABASE_URL": empty_postgres_url}
    bin_dir = os.path.dirname(sys.executable)

    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120, cwd=bin_dir)

    with TestClient(create_app(Settings(database_url=empty_postgres_url))) as client:
        hero = create(client, "Migrated")
        assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_python_m_service_migrate_brings_a_new_database_to_the_latest_schema(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'new.db'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")

    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip().endswith(f"at the latest schema, revision {HEAD}")
    assert current_revision(Settings(database_url=url)) == HEAD


def test_python_m_service_migrate_says_why_it_cannot_and_fails() -> None:
    # Nothing listens on port 1; the password must not be shown.
    url = "postgresql://hero:not-to-be-shown@127.0.0.1:1/heroes"

    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert migrated.returncode == 1
    assert migrated.stderr.startswith("python -m service migrate: ConnectionRefusedError")
    assert "Traceback" not in migrated.stderr
    assert "not-to-be-shown" not in migrated.stderr + migrated.stdout


def test_app_refuses_to_start_on_an_unmigrated_postgres_database(
    empty_postgres_url: str,
) -> None:
    app = create_app(Settings(database_url=empty_postgres_url))

    refused = pytest.RaisesExc(RuntimeError, match="just migrate")
    with pytest.RaisesGroup(refused, flatten_subgroups=True), TestClient(app):
        pass


def test_sqlite_database_is_migrated_at_startup(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'new.db'}")

    with TestClient(create_app(settings)):
        assert current_revision(settings) == HEAD


# SQLite's expression indexes cannot be reflected, so Alembic skips them (saying so); the next
# test checks that one by its SQL.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_models_match_the_migrations(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        engine = direct_engine(settings.database_url)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()

    assert differences == []


def test_sqlite_indexes_the_folded_name_as_the_model_says(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'new.db'}")

    with TestClient(create_app(settings)):
        engine = direct_engine(settings.database_url)
        with engine.connect() as connection:
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_heroes_name_lower_id'"
            ).scalar_one()
        engine.dispose()

    assert sql == "CREATE INDEX ix_heroes_name_lower_id ON heroes (lower(name), id)"


FIRST = "0001"
OLD_HEROES = [
    {"name": name, "age": age, "secret_name": f"secret-{n}"}
    for n, (name, age) in enumerate(
        [("Deadpond", 30), ("Spider-Boy", None), ("Rusty-Man", 48), ("Ünïcødé 🦸", 0)] * 5
    )
]
"""Heroes stored before the timestamps existed."""
KEPT = ("id", "name", "age", "secret_name", "version")
heroes = cast(sa.Table, Hero.__table__)


def alembic(url: str) -> AlembicCommands:
    """The migration commands, as ``just migrate`` runs them, on the database at ``url``."""
    return AlembicCommands(sqlalchemy_config=database_config(Settings(database_url=url)))


def rows(url: str, *columns: str) -> list[dict[str, Any]]:
    engine = direct_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(*(heroes.c[name] for name in columns)).order_by(heroes.c.id)
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def column_names(url: str) -> set[str]:
    engine = direct_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns("heroes")}
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the first revision, holding ``OLD_HEROES`` (some already changed)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    alembic(url).upgrade(FIRST)
    engine = direct_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.insert(heroes), OLD_HEROES)
        connection.execute(sa.update(heroes).where(heroes.c.id == 2).values(version=3))
    engine.dispose()
    return url


def test_upgrade_keeps_every_hero_and_fills_the_timestamps(old_database: str) -> None:
    before = rows(old_database, *KEPT)

    alembic(old_database).upgrade("head")

    after = rows(old_database, *KEPT, "created_at", "updated_at")
    assert [{key: row[key] for key in KEPT} for row in after] == before
    assert len(before) == len(OLD_HEROES)
    for row in after:
        assert row["created_at"].tzinfo is not None
        assert row["created_at"] == row["updated_at"]


def test_upgraded_heroes_are_served_with_their_timestamps(old_database: str) -> None:
    before = rows(old_database, "id", "name", "age")
    alembic(old_database).upgrade("head")

    with TestClient(create_app(Settings(database_url=old_database))) as client:
        listed = client.get("/heroes").json()

    assert [without_timestamps(hero) for hero in listed] == before
    assert all(moment(hero["created_at"]) == moment(hero["updated_at"]) for hero in listed)


def test_downgrade_to_the_first_revision_and_upgrade_again(old_database: str) -> None:
    before = rows(old_database, *KEPT)
    alembic(old_database).upgrade("head")

    alembic(old_database).downgrade(FIRST)

    assert current_revision(Settings(database_url=old_database)) == FIRST
    assert rows(old_database, *KEPT) == before
    assert column_names(old_database) == set(KEPT)

    alembic(old_database).upgrade("head")

    assert current_revision(Settings(database_url=old_database)) == HEAD
    assert [{key: row[key] for key in KEPT} for row in rows(old_database, *KEPT)] == before
    with TestClient(create_app(Settings(database_url=old_database))) as client:
        assert len(client.get("/heroes?order_by=-age").json()) == len(OLD_HEROES)


def test_sqlite_service_started_on_an_old_file_upgrades_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    alembic(url).upgrade(FIRST)
    engine = direct_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.insert(heroes), OLD_HEROES)
    engine.dispose()

    with TestClient(create_app(Settings(database_url=url))) as client:
        listed = client.get("/heroes", params={"name_prefix": "dead"}).json()

    assert current_revision(Settings(database_url=url)) == HEAD
    assert [hero["name"] for hero in listed] == ["Deadpond"] * 5
    assert all(hero["created_at"] for hero in listed)


def test_postgres_service_refuses_an_old_database_until_migrated(empty_postgres_url: str) -> None:
    alembic(empty_postgres_url).upgrade(FIRST)
    app = create_app(Settings(database_url=empty_postgres_url))

    refused = pytest.RaisesExc(RuntimeError, match="just migrate")
    with pytest.RaisesGroup(refused, flatten_subgroups=True), TestClient(app):
        pass

    alembic(empty_postgres_url).upgrade("head")
    with TestClient(create_app(Settings(database_url=empty_postgres_url))) as client:
        assert client.get("/heroes").status_code == 200


def table_names(url: str) -> set[str]:
    engine = direct_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_keys_added_by_0003_go_with_a_downgrade_to_0002_and_come_back_empty(
    old_database: str,
) -> None:
    alembic(old_database).upgrade("head")
    with TestClient(create_app(Settings(database_url=old_database))) as client:
        keyed = client.post(
            "/heroes",
            json={"name": "Keyed", "secret_name": "secret-keyed"},
            headers={"Idempotency-Key": "before-the-downgrade"},
        )
    assert keyed.status_code == 201
    before = rows(old_database, *KEPT)

    alembic(old_database).downgrade("0002")

    assert current_revision(Settings(database_url=old_database)) == "0002"
    assert "idempotency_keys" not in table_names(old_database)
    assert rows(old_database, *KEPT) == before

    alembic(old_database).upgrade("head")

    with TestClient(create_app(Settings(database_url=old_database))) as client:
        again = client.post(
            "/heroes",
            json={"name": "Keyed", "secret_name": "secret-keyed"},
            headers={"Idempotency-Key": "before-the-downgrade"},
        )
        replayed = client.post(
            "/heroes",
            json={"name": "Keyed", "secret_name": "secret-keyed"},
            headers={"Idempotency-Key": "before-the-downgrade"},
        )
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers  # the key went with the downgrade
    assert again.json()["id"] == len(OLD_HEROES) + 2
    assert replayed.headers["idempotent-replayed"] == "true"
    assert len(rows(old_database, "id")) == len(OLD_HEROES) + 2
