"""The schema comes from the Alembic migrations, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from litestar.testing import TestClient

from service.app import create_app
from service.db import MIGRATIONS
from service.models import Base
from service.settings import Settings
from tests.conftest import POSTGRES_SERVER
from tests.helpers import create, direct_engine

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped after the test."""
    name = f"hero_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


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


def test_models_match_the_migrations(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        engine = direct_engine(settings.database_url)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()

    assert differences == []
