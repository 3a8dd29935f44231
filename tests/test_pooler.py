"""Behind a transaction pooler (``DB_POOLER=transaction``): nothing is left on a server session.

PgBouncer in ``pool_mode = transaction`` gives each transaction whichever server session is free,
one that other clients, or this service before it restarted, used before. The API suite runs
there too (the ``pgbouncer`` parameter of ``database_url``); these tests check what only a pooler
shows: a restarted, several-worker service starts and serves, a server session holds no
prepared statement and no setting of the service afterwards, and migrations run through it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from service.app import create_app
from service.database.engines import create_engine, database_config
from service.settings import Settings
from tests import pgbouncer
from tests.conftest import IN_CI, POSTGRES_SERVER
from tests.helpers import create, settings_for
from tests.live import running_server

PGBOUNCER_SETTINGS = frozenset(
    {"client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name"}
)
"""The settings PgBouncer itself gives each server session, as each client asked for them."""


@pytest.mark.live
def test_two_workers_behind_pgbouncer_start_and_serve_again_after_a_restart(
    pgbouncer_database: str,
) -> None:
    served = []
    for start in ("first", "second"):
        # A connection per request, so that both workers answer.
        with (
            running_server(pgbouncer_database, workers=2) as server,
            httpx.Client(base_url=server.url, headers={"Connection": "close"}) as http,
        ):
            for n in range(4):
                body = {"name": f"{start} start {n}", "secret_name": "s"}
                hero = http.post("/heroes", json=body).json()
                served.append(http.get(f"/heroes/{hero['id']}").json())
            assert http.get("/heroes?count=true").headers["x-total-count"] == str(len(served))

    assert [hero["name"] for hero in served] == [
        f"{start} start {n}" for start in ("first", "second") for n in range(4)
    ]


@pytest.fixture
def one_session(postgres_database: str) -> Iterator[pgbouncer.PgBouncer]:
    """A PgBouncer of its own with a single server session, so every transaction meets it."""
    if reason := pgbouncer.missing():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    url = sa.make_url(postgres_database)
    target = (url.host or "127.0.0.1", url.port or 5432)
    with pgbouncer.PgBouncer(target, user=url.username, pool_size=1) as bouncer:
        yield bouncer


def left_on_the_session(url: str) -> tuple[list[str], set[str]]:
    """The prepared statements and the session-level settings of the pooler's one session."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as connection:
        prepared = connection.execute("SELECT name FROM pg_prepared_statements").fetchall()
        settings = connection.execute(
            "SELECT name FROM pg_settings WHERE source = 'session'"
        ).fetchall()
    return [name for (name,) in prepared], {name for (name,) in settings}


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+asyncpg"])
def test_every_operation_leaves_nothing_on_the_server_session(
    postgres_database: str, one_session: pgbouncer.PgBouncer, driver: str
) -> None:
    url = one_session.url(postgres_database).replace("postgresql", driver, 1)
    settings = Settings(database_url=url, db_pooler="transaction")
    with TestClient[Litestar](create_app(settings)) as client:  # the startup's schema check
        hero = create(client, "Session")
        create(client, "Session too")
        path = f"/heroes/{hero['id']}"
        etag = client.get(path).headers["etag"]
        answers = [
            client.get("/heroes?limit=1&count=true&name_prefix=ses&order_by=-age"),
            client.get(client.get("/heroes?limit=1").links["next"]["url"]),
            client.patch(path, json={"age": 3}, headers={"If-Match": etag}),
            client.get(path),
            client.get("/health/ready"),
            client.delete(path),
        ]
        prepared, session_settings = left_on_the_session(url.replace(driver, "postgresql", 1))

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200], answers
    assert prepared == []
    assert session_settings <= PGBOUNCER_SETTINGS


def test_migrations_run_through_the_pooler(
    postgres_url: str, session_pgbouncer: pgbouncer.PgBouncer
) -> None:
    name = f"hero_pooled_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    direct = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    url = session_pgbouncer.url(direct)
    pgbouncer.POOLED_URLS.add(url)
    try:
        AlembicCommands(sqlalchemy_config=database_config(settings_for(url))).upgrade("head")
        with TestClient[Litestar](create_app(settings_for(url))) as client:
            hero = create(client, "Migrated through PgBouncer")
            assert client.get(f"/heroes/{hero['id']}").json() == hero
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_connection_given_back_in_a_transaction_frees_the_server_session(
    postgres_database: str, one_session: pgbouncer.PgBouncer
) -> None:
    url = one_session.url(postgres_database)
    engine = create_engine(Settings(database_url=url, db_pooler="transaction", db_pool_size=1))
    assert isinstance(engine, AsyncEngine)

    async def scenario() -> None:
        connection = await engine.raw_connection()
        driver: Any = connection.driver_connection
        await driver.execute("BEGIN")  # holds the pooler's only server session until it ends
        await driver.execute("SELECT 1")
        await greenlet_spawn(connection.close)
        other = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
        try:
            async with asyncio.timeout(3):  # PgBouncer would queue it for 5 s, then refuse it
                await other.execute("SELECT 1")
        finally:
            await other.close()
            await engine.dispose()

    asyncio.run(scenario())
