"""Behind a transaction pooler (``DB_POOLER=transaction``): nothing is left on a server session
but what the pooler keeps.

PgBouncer in ``pool_mode = transaction`` gives each transaction whichever server session is free,
one that other clients, or this service before it restarted, used before. The API suite runs
through two (the ``pgbouncer`` and ``pgbouncer-prepared`` parameters of ``database_url``), each
in its mode: Debian 12's 1.18, which keeps no prepared statement (the service prepares none
there), and Debian 13's 1.24, which keeps them (``DB_POOLER_PREPARED=true``: asyncpg's statement
cache, which PgBouncer prepares on the server under names of its own). These tests check what only
a pooler shows, through each: restarted services of several workers start and serve, a server
session holds no prepared statement but PgBouncer's and no setting of the service afterwards
(migrations, which would, are refused there); and ``DB_POOLER_PREPARED=true`` through a pooler
that does not keep prepared statements (1.18) goes on without them by itself, and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from service.app import create_app
from service.database.engines import create_engine
from service.database.schema import MigrationError, migrate
from service.settings import Settings
from tests import pgbouncer
from tests.conftest import POOLERS, CapturedLogs, start_pgbouncer
from tests.helpers import Client, create, new_hero
from tests.live import run_load, running_server

PGBOUNCER_SETTINGS = frozenset(
    {"client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name"}
)
"""The settings PgBouncer itself gives each server session, as each client asked for them."""
KEPT_BY_PGBOUNCER = "PGBOUNCER_"
"""How the names begin of the statements PgBouncer 1.21+ prepares on a server session."""
LOST_STATEMENT = ("DuplicatePreparedStatement", "InvalidSQLStatementName", "prepared statement")
"""What a worker's log says when a pooler mixes up prepared statements."""


@pytest.mark.live
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_behind_pgbouncer_start_serve_and_start_again_losing_no_prepared_statement(
    pooled_database: str, workers: int, tmp_path: Path
) -> None:
    served = []
    loads = []
    logs = []
    for start in ("first", "second"):
        log = tmp_path / f"{start}.log"
        # A connection per request, so that every worker answers.
        with (
            running_server(pooled_database, workers=workers, log=log) as server,
            httpx.Client(base_url=server.url, headers={"Connection": "close"}) as http,
        ):
            for n in range(4):
                body = {"name": f"{start} start {n}", "secret_name": "s"}
                hero = http.post("/heroes", json=body).json()
                served.append(http.get(f"/heroes/{hero['id']}").json())
            loads.append(asyncio.run(run_load(server.url, clients=16, seconds=3)))
        logs += log.read_text(errors="replace").splitlines()

    assert [hero["name"] for hero in served] == [
        f"{start} start {n}" for start in ("first", "second") for n in range(4)
    ]
    for load in loads:
        assert load.requests > 0, load.summary()
        assert load.server_errors == 0, load.summary()
    assert [line for line in logs if any(said in line for said in LOST_STATEMENT)] == []


class OneSession(NamedTuple):
    """A PgBouncer with a single server session, and the mode the service runs through it."""

    bouncer: pgbouncer.PgBouncer
    prepared: bool
    """Whether it keeps prepared statements: the service runs with ``DB_POOLER_PREPARED``."""

    def settings(self, database_url: str, **overrides: Any) -> Settings:
        """Settings for an app on ``database_url`` through this PgBouncer, in its mode."""
        mode = {"db_pooler": "transaction", "db_pooler_prepared": self.prepared}
        return Settings(database_url=self.bouncer.url(database_url), **{**mode, **overrides})


@pytest.fixture(params=list(POOLERS))
def one_session(request: pytest.FixtureRequest, postgres_database: str) -> Iterator[OneSession]:
    """Each of the suite's PgBouncers, of its own with one server session, so that every
    transaction meets it."""
    bouncer = start_pgbouncer(POOLERS[request.param], postgres_database, pool_size=1)
    yield OneSession(bouncer, prepared=request.param == "pgbouncer-prepared")
    bouncer.stop()


def left_on_the_session(url: str) -> tuple[list[str], set[str]]:
    """The prepared statements and the session-level settings of the pooler's one session."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as connection:
        prepared = connection.execute("SELECT name FROM pg_prepared_statements").fetchall()
        settings = connection.execute(
            "SELECT name FROM pg_settings WHERE source = 'session'"
        ).fetchall()
    return [name for (name,) in prepared], {name for (name,) in settings}


def every_operation(client: Client) -> list[httpx.Response]:
    """Each operation of the API, and the readiness check, once or more: their answers."""
    hero = create(client, "Session")
    create(client, "Session too")
    path = f"/heroes/{hero['id']}"
    etag = client.get(path).headers["etag"]
    return [
        client.get("/heroes?limit=1&count=true&name_prefix=ses&order_by=-age"),
        client.get(client.get("/heroes?limit=1").links["next"]["url"]),
        client.patch(path, json={"age": 3}, headers={"If-Match": etag}),
        client.get(path),
        client.get("/health/ready"),
        client.post("/heroes", json=new_hero("Keyed"), headers={"Idempotency-Key": "k-1"}),
        client.delete(path),
    ]


@pytest.mark.parametrize(
    ("one_session", "driver"),
    [
        ("pgbouncer", "postgresql"),
        ("pgbouncer", "postgresql+asyncpg"),
        ("pgbouncer-prepared", "postgresql"),
    ],
    indirect=["one_session"],
)
def test_every_operation_leaves_nothing_on_the_server_session_but_what_the_pooler_keeps(
    postgres_database: str, one_session: OneSession, driver: str
) -> None:
    settings = one_session.settings(postgres_database.replace("postgresql", driver, 1))
    with TestClient[Litestar](create_app(settings)) as client:  # the startup's schema check
        answers = every_operation(client)
        prepared, session_settings = left_on_the_session(one_session.bouncer.url(postgres_database))

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 201, 200], answers
    assert [name for name in prepared if not name.startswith(KEPT_BY_PGBOUNCER)] == []
    assert bool(prepared) is one_session.prepared  # through 1.24, the statements were prepared
    assert session_settings <= PGBOUNCER_SETTINGS


@pytest.mark.parametrize("prepared", [False, True], ids=["unprepared", "prepared"])
def test_migrations_never_run_through_the_pooler_where_they_would_leave_session_state(
    prepared: bool,
) -> None:
    """A migrator holds a lock and settings across transactions (``service.database.migrations``):
    through a transaction pooler they would stay on a server session others get next."""
    settings = Settings(
        database_url="postgresql://hero@127.0.0.1:6432/heroes",
        db_pooler="transaction",
        db_pooler_prepared=prepared,
    )

    with pytest.raises(MigrationError, match="without DB_POOLER"):
        migrate(settings)


@pytest.mark.parametrize("one_session", ["pgbouncer"], indirect=True)
def test_a_connection_given_back_in_a_transaction_frees_the_server_session(
    postgres_database: str, one_session: OneSession
) -> None:
    settings = one_session.settings(postgres_database, db_pool_size=1)
    engine = create_engine(settings)
    assert isinstance(engine, AsyncEngine)
    url = settings.database_url

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


# DB_POOLER_PREPARED=true through a pooler that keeps no prepared statement ------------------


def said_once(logs: CapturedLogs) -> bool:
    """Whether the service warned, once, that the pooler keeps no prepared statement."""
    said = [r for r in logs.records if "DB_POOLER_PREPARED" in r.getMessage()]
    return [r.levelname for r in said] == ["WARNING"]


@pytest.mark.parametrize("one_session", ["pgbouncer"], indirect=True)
def test_the_prepared_mode_through_a_pooler_keeping_none_runs_unprepared_and_says_so(
    postgres_database: str, one_session: OneSession, all_logs: CapturedLogs
) -> None:
    settings = one_session.settings(postgres_database, db_pooler_prepared=True)
    with TestClient[Litestar](create_app(settings)) as client:
        answers = every_operation(client)
        prepared, session_settings = left_on_the_session(settings.database_url)

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 201, 200], answers
    assert prepared == []
    assert session_settings <= PGBOUNCER_SETTINGS
    assert said_once(all_logs)


def test_prepared_statements_the_pooler_loses_later_are_run_again_unprepared(
    postgres_database: str, all_logs: CapturedLogs
) -> None:
    """PgBouncer restarted without keeping prepared statements (1.18 where 1.24 was): the first
    statement refused for it runs again at once, unprepared, and so does every later one."""
    keeping = start_pgbouncer(POOLERS["pgbouncer-prepared"], postgres_database, pool_size=1)
    url = keeping.url(postgres_database)
    settings = Settings(database_url=url, db_pooler="transaction", db_pooler_prepared=True)
    try:
        with TestClient[Litestar](create_app(settings)) as client:
            path = f"/heroes/{create(client, 'Before')['id']}"
            keeping.stop()
            plain = start_pgbouncer(
                POOLERS["pgbouncer"], postgres_database, pool_size=1, port=keeping.port
            )
            try:
                # Prepared again, under asyncpg's names, on the one server session.
                warm = [client.get(path), client.post("/heroes", json=new_hero("Warm"))]
                with psycopg.connect(url, autocommit=True, prepare_threshold=None) as other:
                    other.execute("DEALLOCATE ALL")  # what a restart or another client does
                after = [client.get(path), client.post("/heroes", json=new_hero("After"))]
                names = [h["name"] for h in client.get("/heroes").json()]
                prepared, _ = left_on_the_session(url)
            finally:
                plain.stop()
    finally:
        keeping.stop()

    assert [a.status_code for a in warm] == [200, 201]
    assert [a.status_code for a in after] == [200, 201]
    assert names == ["Before", "Warm", "After"]
    assert prepared == []
    assert said_once(all_logs)
