"""Migrations that run while the service serves: the schema of their first versions, downgrades,
one migrator at a time, lock waits retried, and each migration's declared phase.

The first version of each migration comes from git history (tests/migration_history.py), so a
migration reworked later is held to the schema it first made, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar.testing import TestClient

from service.app import create_app
from service.database.engines import database_config
from service.database.migrations import migrator, online
from service.database.schema import current_revision
from service.settings import Settings
from tests.conftest import POSTGRES_SERVER
from tests.helpers import direct_engine, new_hero, schema
from tests.migration_history import Migration, first_versions_script, migrations

MIGRATIONS = migrations()
HEAD = MIGRATIONS[-1].revision
NewDatabase = Callable[[], str]


def alembic(url: str, script_location: Path | None = None) -> AlembicCommands:
    """The migration commands on the database at ``url``, with today's or other migrations."""
    commands = AlembicCommands(sqlalchemy_config=database_config(Settings(database_url=url)))
    if script_location is not None:
        commands.config.set_main_option("script_location", str(script_location))
    return commands


def revision_of(url: str) -> str | None:
    engine = direct_engine(url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which database the test migrates."""
    return str(request.param)


@pytest.fixture
def new_database(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[NewDatabase]:
    """A maker of empty databases of the test's kind (each PostgreSQL one dropped afterwards)."""
    made: list[str] = []

    def make() -> str:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / f'db{len(made)}.db'}"
        else:
            base = request.getfixturevalue("postgres_url")
            name = f"hero_online_{os.getpid()}_{len(made)}_{id(made)}"
            with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = sa.make_url(base).set(database=name).render_as_string(hide_password=False)
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgresql"):
            name = sa.make_url(url).database
            with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def first_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Alembic script directory of every migration as its first commit had it."""
    return first_versions_script(tmp_path_factory.mktemp("first-versions"))


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.revision)
def test_each_migration_makes_the_schema_its_first_version_made(
    migration: Migration, new_database: NewDatabase, first_versions: Path
) -> None:
    as_first, as_now = new_database(), new_database()

    alembic(as_first, first_versions).upgrade(migration.revision)
    alembic(as_now).upgrade(migration.revision)

    assert schema(as_now) == schema(as_first)


@pytest.mark.parametrize("migration", MIGRATIONS[:-1], ids=lambda m: m.revision)
def test_a_database_the_first_versions_made_upgrades_to_todays_head(
    migration: Migration, new_database: NewDatabase, first_versions: Path
) -> None:
    old, fresh = new_database(), new_database()
    alembic(old, first_versions).upgrade(migration.revision)

    alembic(old).upgrade("head")
    alembic(fresh).upgrade("head")

    assert revision_of(old) == HEAD
    assert schema(old) == schema(fresh)


@pytest.mark.parametrize("migration", MIGRATIONS[:-1], ids=lambda m: m.revision)
def test_downgrade_from_the_head_to_each_revision_and_back(
    migration: Migration, new_database: NewDatabase
) -> None:
    url, fresh = new_database(), new_database()
    alembic(url).upgrade("head")
    alembic(fresh).upgrade("head")

    alembic(url).downgrade(migration.revision)
    assert revision_of(url) == migration.revision
    alembic(url).upgrade("head")

    assert revision_of(url) == HEAD
    if url.startswith("postgresql"):  # SQLite's table copies write their definitions anew
        assert schema(url) == schema(fresh)


def test_sqlite_gives_every_stored_hero_its_timestamps_in_batches(tmp_path: Path) -> None:
    url, fresh = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    alembic(url).upgrade(MIGRATIONS[0].revision)
    heroes = 2 * online.BATCH_ROWS + 1
    with sqlite3.connect(tmp_path / "old.db") as connection:
        connection.executemany(
            "INSERT INTO heroes (name, age, secret_name) VALUES (?, ?, ?)",
            ((f"Hero {n}", n % 100, f"secret {n}") for n in range(heroes)),
        )

    migrating = migrate_command(url)
    code, out, err = migrating.wait(timeout=300), *migrating.communicate()
    alembic(fresh).upgrade("head")

    assert code == 0, err
    assert "storing the timestamps, batch 3 of 3" in out
    with sqlite3.connect(tmp_path / "old.db") as connection:
        stamps = connection.execute(
            "SELECT count(*), count(DISTINCT created_at), min(created_at = updated_at) FROM heroes"
        ).fetchone()
        checked = connection.execute("PRAGMA integrity_check").fetchall()
    assert stamps == (heroes, 1, 1)
    assert checked == [("ok",)]
    assert schema(url) == schema(fresh)


def migrate_command(url: str, *args: str) -> subprocess.Popen[str]:
    """``python -m service migrate`` on ``url``, started."""
    return subprocess.Popen(
        [sys.executable, "-m", "service", "migrate", *args],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("migrators", [2, 4])
def test_migrators_started_together_all_succeed_and_migrate_once(
    migrators: int, new_database: NewDatabase
) -> None:
    url, fresh = new_database(), new_database()
    alembic(fresh).upgrade("head")

    started = [migrate_command(url) for _ in range(migrators)]
    finished = [(process.wait(timeout=300), *process.communicate()) for process in started]

    assert [code for code, _, _ in finished] == [0] * migrators, finished
    applied = [out for _, out, _ in finished if f"applied {MIGRATIONS[0].revision}," in out]
    idle = [out for _, out, _ in finished if "nothing to apply" in out]
    assert (len(applied), len(idle)) == (1, migrators - 1), finished
    assert all(out.strip().endswith(f"revision {HEAD}") for _, out, _ in finished)
    assert revision_of(url) == HEAD
    assert schema(url) == schema(fresh)


def test_a_second_migrator_waits_for_the_first_then_migrates(new_database: NewDatabase) -> None:
    url = new_database()
    alembic(url).upgrade(MIGRATIONS[0].revision)

    with held_migrators_lock(url) as release:
        second = migrate_command(url)
        assert second.stdout is not None
        said = ""
        while "another migrator is at work" not in said and (line := second.stdout.readline()):
            said += line
        assert revision_of(url) == MIGRATIONS[0].revision
        release()
    code, out, err = second.wait(timeout=300), *second.communicate()

    assert "another migrator is at work" in said, said + out + err
    assert code == 0, err
    assert revision_of(url) == HEAD


def test_a_step_that_waits_for_a_lock_gives_up_and_tries_again(postgres_url: str) -> None:
    # 0002 adds its columns under ALTER TABLE, which waits for every transaction that has read
    # the table: one left open here, until migrate says it gave up waiting once.
    url = sa.make_url(postgres_url)
    name = f"hero_online_lock_{os.getpid()}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    database = url.set(database=name).render_as_string(hide_password=False)
    try:
        alembic(database).upgrade(MIGRATIONS[0].revision)
        with psycopg.connect(url.set(database=name).render_as_string(False)) as reader:
            reader.execute("SELECT count(*) FROM heroes")  # holds its lock until the commit
            migrating = migrate_command(database)
            assert migrating.stdout is not None
            said = ""
            while "locked by another transaction" not in said and (
                line := migrating.stdout.readline()
            ):
                said += line
            reader.commit()
        code, out, err = migrating.wait(timeout=300), *migrating.communicate()
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    assert "adding created_at and updated_at: the table is locked" in said, said + out + err
    assert code == 0, err
    assert out.strip().endswith(f"revision {HEAD}")


@contextmanager
def held_migrators_lock(url: str) -> Iterator[Callable[[], None]]:
    """The migrators' lock, held as a first migrator holds it until the caller releases it."""
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        if url.startswith("sqlite"):
            with migrator.lock_file(Path(sa.make_url(url).database or "")):
                held.set()
                release.wait(120)
            return
        with psycopg.connect(sa.make_url(url).render_as_string(False), autocommit=True) as c:
            c.execute("SELECT pg_advisory_lock(%s)", (migrator.ADVISORY_LOCK,))
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        yield release.set
    finally:
        release.set()
        holder.join(30)


def test_migrate_refuses_to_run_through_a_transaction_pooler() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env={
            **os.environ,
            "DATABASE_URL": "postgresql://hero@127.0.0.1:1/heroes",
            "DB_POOLER": "transaction",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert refused.returncode == 1
    assert "point DATABASE_URL straight at PostgreSQL" in refused.stderr


FIRST_CONTRACT = next(m for m in MIGRATIONS if m.phase == "contract")


def test_migrate_expand_stops_before_the_first_contract_migration(
    new_database: NewDatabase,
) -> None:
    url = new_database()

    expanded = migrate_command(url, "--expand")
    code, out, err = expanded.wait(timeout=300), *expanded.communicate()

    assert code == 0, err
    assert revision_of(url) == FIRST_CONTRACT.down_revision
    assert f"still to run: {FIRST_CONTRACT.revision} (contract)" in out


def test_the_app_serves_while_only_contract_migrations_are_left(empty_postgres_url: str) -> None:
    # Before the first contract migration; an expand migration after it (0006 after 0005) is
    # one the app needs, and is named: a release skipped is refused, not served half-migrated.
    alembic(empty_postgres_url).upgrade(FIRST_CONTRACT.down_revision or "base")
    later = MIGRATIONS[MIGRATIONS.index(FIRST_CONTRACT) + 1 :]
    needed = [m.revision for m in later if m.phase == "expand"]
    app = create_app(Settings(database_url=empty_postgres_url))

    if needed:
        refused = pytest.RaisesExc(RuntimeError, match=f"needs {needed[-1]}: run")
        with pytest.RaisesGroup(refused, flatten_subgroups=True), TestClient(app):
            pass
        return
    body, headers = new_hero(), {"Idempotency-Key": "k"}
    with TestClient(app) as client:
        created = client.post("/heroes", json=body, headers=headers)
        again = client.post("/heroes", json=body, headers=headers)

    assert created.status_code == 201, created.text
    assert again.headers["idempotent-replayed"] == "true"


def test_the_app_serves_on_a_schema_a_later_release_migrated(new_database: NewDatabase) -> None:
    url = new_database()
    alembic(url).upgrade("head")
    engine = direct_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'a-later-one'")
    engine.dispose()

    with TestClient(create_app(Settings(database_url=url))) as client:
        assert client.post("/heroes", json=new_hero()).status_code == 201

    assert revision_of(url) == "a-later-one"


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.revision)
def test_each_migration_says_its_phase(migration: Migration) -> None:
    text = migration.path.read_text(encoding="utf-8")

    assert migration.phase in {"expand", "contract"}
    assert f"Phase: {migration.phase}." in text
