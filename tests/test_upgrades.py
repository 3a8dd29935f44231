"""The release before each migration keeps serving while today's migrate runs it (N-1).

For every migration but the first (which had no release before it), the code as it was just
before the migration first appeared is built from git history (tests/releases.py), served on
PostgreSQL holding ``HEROES`` heroes under load from concurrent clients, and today's ``python -m
service migrate --to <that migration>`` runs meanwhile. No request may fail, no acknowledged
write be lost, and the release's own API checks (its tests/sdk_scenario.py) must pass on the
migrated schema. The migrations are found, not listed: a new one is covered by being added.

The release that knew only the first migration serves 1,000,000 heroes while migrate runs all
the others: no request may wait a second. The roll of the idempotency keys' expand step (0004)
has both releases serve at once, each answering the other's keyed creates.

Each prints its report (run with ``-s`` to see it); ``python -m tests.benchmarks.migration
--releases`` writes the same reports to a results file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_SERVER
from tests.live import running_server
from tests.migration_history import Migration, migrations, release_before
from tests.releases import UpgradeReport, migrate, release, served, upgrade_under_load

pytestmark = [pytest.mark.alone, pytest.mark.upgrade, pytest.mark.live]

MIGRATIONS = migrations()
HEROES = 100_000
"""Heroes stored when each migration runs under the release before it."""
FIRST_RELEASE_HEROES = 1_000_000
WORST_WAIT = 1.0
"""Seconds: the longest a request may wait while migrate runs on 1,000,000 heroes."""


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of the test's own, dropped afterwards."""
    name = f"hero_upgrade_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def assert_kept_serving(report: UpgradeReport) -> None:
    print(f"\n{report.line()}")
    assert report.failures == [], report.line()
    assert report.lost == [], report.line()
    assert report.checks.returncode == 0, report.checks.stdout + report.checks.stderr


@pytest.mark.parametrize("migration", MIGRATIONS[1:], ids=lambda m: m.revision)
def test_the_release_before_a_migration_keeps_serving_while_it_runs(
    migration: Migration, database: str
) -> None:
    before = release(release_before(migration))

    report = upgrade_under_load(
        before,
        database,
        start=migration.down_revision or "base",
        target=migration.revision,
        heroes=HEROES,
    )

    assert_kept_serving(report)


def test_the_first_release_serves_1_000_000_heroes_while_migrate_runs_to_the_head(
    database: str,
) -> None:
    first = release(release_before(MIGRATIONS[1]))

    report = upgrade_under_load(
        first,
        database,
        start=MIGRATIONS[0].revision,
        target="heads",
        heroes=FIRST_RELEASE_HEROES,
    )

    assert_kept_serving(report)
    assert report.worst_wait < WORST_WAIT, report.line()


# The roll of migration 0004: the release before it and the one it came with serve the same
# database.

KEYS_EXPANDED = "0004"
REPLAYED = "idempotent-replayed"


@contextmanager
def release_of(migration: Migration, database: str, **settings: str) -> Iterator[Any]:
    """The release that came with ``migration``, serving ``database``: the code just before the
    next migration appeared (later code needs that one too), or today's if none came after."""
    later = MIGRATIONS[MIGRATIONS.index(migration) + 1 :]
    if not later:
        with running_server(database, **settings) as server:  # type: ignore[arg-type]  # variables
            yield server
        return
    with served(release(release_before(later[0])), database, **settings) as server:
        yield server


def keyed_create(base_url: str, key: str, name: str, api_key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = {"name": name, "secret_name": f"secret of {name}", "age": 30}
    return httpx.post(f"{base_url}/heroes", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("first_on", ["previous", "today"])
def test_a_keyed_create_retried_on_the_other_release_is_answered_once(
    first_on: str, database: str
) -> None:
    expand = next(m for m in MIGRATIONS if m.revision == KEYS_EXPANDED)
    previous = release(release_before(expand))
    migrate(database, expand.down_revision or "base")
    key = str(uuid.uuid4())

    with served(previous, database) as old:
        migrate(database, KEYS_EXPANDED)  # before the new release starts, as in a roll
        with release_of(expand, database) as new:
            first, retry = (old, new) if first_on == "previous" else (new, old)
            created = keyed_create(first.url, key, "Rolled")
            retried = keyed_create(retry.url, key, "Rolled")
            listed = httpx.get(f"{new.url}/heroes", params={"name": "Rolled"}).json()

    assert created.status_code == 201, created.text
    assert retried.status_code == 201, retried.text
    assert retried.headers[REPLAYED] == "true"
    assert retried.json()["id"] == created.json()["id"]
    assert len(listed) == 1


def test_during_the_roll_another_api_key_never_gets_the_hero_of_a_key(database: str) -> None:
    expand = next(m for m in MIGRATIONS if m.revision == KEYS_EXPANDED)
    migrate(database, KEYS_EXPANDED)
    key, api_keys = str(uuid.uuid4()), ("first-key-2c9f1b7e", "second-key-8d3a6e0f")

    with release_of(expand, database, API_KEY=", ".join(api_keys)) as new:
        created = keyed_create(new.url, key, "Guarded", api_keys[0])
        other = keyed_create(new.url, key, "Guarded", api_keys[1])
        again = keyed_create(new.url, key, "Guarded", api_keys[0])

    assert created.status_code == 201, created.text
    assert other.status_code == 422, other.text
    assert REPLAYED not in other.headers
    assert again.headers[REPLAYED] == "true"
