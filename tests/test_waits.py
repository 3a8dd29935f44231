"""A request waiting on the database never holds up the other requests of its worker.

Each test serves the app with uvicorn (one worker, one event loop, in a thread of the test
process), makes one request wait on a real second connection (the SQLite write lock, a
PostgreSQL row lock, a statement that cannot finish, a pool whose connections are all taken, a
server that does not answer the connect; on PostgreSQL straight and through PgBouncer) and,
while it waits, sends other requests over HTTP. Those must answer while the first is still
waiting: an app that blocked its loop would answer them only after the wait ends, and these
tests would fail. Nothing here is timed; the proof is the order in which the answers arrive.
(Litestar's test clients run one request at a time, so they cannot show this.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from service.app import create_app
from service.settings import Settings
from tests.helpers import (
    assert_error,
    new_hero,
    serving,
    settings_for,
    slow_inserts,
    sqlite_write_lock,
)

AsyncClient = httpx.AsyncClient
Write = Callable[[AsyncClient, int], Awaitable[httpx.Response]]

WRITES: dict[str, Write] = {
    "create": lambda client, _: client.post("/heroes", json=new_hero("Waiting")),
    "update": lambda client, hero_id: client.patch(f"/heroes/{hero_id}", json={"age": 99}),
    "delete": lambda client, hero_id: client.delete(f"/heroes/{hero_id}"),
}
SETTLE = 0.3
"""Seconds given to the waiting request to reach the database before the others are sent."""


class Observed:
    """What the other requests got while the first one waited, and how that one ended."""

    def __init__(self) -> None:
        self.probes: dict[str, httpx.Response] = {}
        self.probe_ms: dict[str, float] = {}
        self.waiting_throughout = False
        self.waited: httpx.Response | None = None

    def check(self, *, waited_status: int) -> None:
        """Every probe answered 200 while the first request was still waiting."""
        print(
            f"answered during the wait: { {k: round(v, 1) for k, v in self.probe_ms.items()} } ms"
        )
        for path, response in self.probes.items():
            assert response.status_code == 200, (path, response.text)
        assert self.waiting_throughout, "the waiting request finished before the others answered"
        assert self.waited is not None
        if waited_status >= 400:
            assert_error(self.waited, waited_status)
        else:
            assert self.waited.status_code == waited_status, self.waited.text


async def while_waiting(
    client: AsyncClient,
    wait: Awaitable[httpx.Response],
    probes: list[str],
    release: Callable[[], None] | None = None,
) -> Observed:
    """Start ``wait``, send the ``probes`` while it waits, then ``release`` it and let it end."""
    observed = Observed()
    waiting = asyncio.ensure_future(wait)
    try:
        await asyncio.sleep(SETTLE)
        for path in probes:
            started = time.perf_counter()
            observed.probes[path] = await client.get(path)
            observed.probe_ms[path] = (time.perf_counter() - started) * 1000
        observed.waiting_throughout = not waiting.done()
    finally:
        if release is not None:
            release()
        observed.waited = await waiting
    return observed


def probes_for(hero: dict[str, Any]) -> list[str]:
    """The liveness check, another hero, and a page of the list."""
    return ["/health/live", f"/heroes/{hero['id']}", "/heroes?limit=5"]


async def two_heroes(client: AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create the hero that will wait and another one to read meanwhile."""
    first = await client.post("/heroes", json=new_hero("Held"))
    second = await client.post("/heroes", json=new_hero("Free"))
    return first.json(), second.json()


# SQLite ------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'heroes.db'}", access_log=False)


@pytest.mark.parametrize("write", list(WRITES))
def test_sqlite_write_waiting_for_the_lock_holds_up_no_other_request(
    sqlite_settings: Settings, write: str
) -> None:
    async def scenario() -> Observed:
        async with serving(create_app(sqlite_settings)) as client:
            held, free = await two_heroes(client)
            with sqlite_write_lock(sqlite_settings) as release:
                wait = WRITES[write](client, held["id"])
                return await while_waiting(client, wait, probes_for(free), release)

    asyncio.run(scenario()).check(waited_status=201 if write == "create" else 200)


def test_sqlite_writes_queued_behind_the_lock_hold_up_no_read(sqlite_settings: Settings) -> None:
    async def scenario() -> tuple[Observed, list[httpx.Response]]:
        async with serving(create_app(sqlite_settings)) as client:
            _, free = await two_heroes(client)
            with sqlite_write_lock(sqlite_settings) as release:
                queued = [
                    asyncio.ensure_future(client.post("/heroes", json=new_hero(f"Queued {n}")))
                    for n in range(8)
                ]
                wait = client.post("/heroes", json=new_hero("Last"))
                observed = await while_waiting(client, wait, probes_for(free), release)
            return observed, list(await asyncio.gather(*queued))

    observed, queued = asyncio.run(scenario())

    observed.check(waited_status=201)
    assert [response.status_code for response in queued] == [201] * 8


def test_sqlite_write_that_outwaits_the_busy_timeout_is_503_and_holds_up_nothing(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'heroes.db'}",
        access_log=False,
        sqlite_busy_timeout_ms=1000,
    )

    async def scenario() -> Observed:
        async with serving(create_app(settings)) as client:
            _, free = await two_heroes(client)
            with sqlite_write_lock(settings):
                wait = client.post("/heroes", json=new_hero("Refused"))
                # Released only after the busy timeout has run out.
                return await while_waiting(client, wait, probes_for(free))

    observed = asyncio.run(scenario())

    observed.check(waited_status=503)


# PostgreSQL --------------------------------------------------------------------------------


@dataclass
class Postgres:
    """Where the app reaches the test's database, and the database itself for the test's own
    connections (the locks it holds)."""

    url: str
    direct: str

    def settings(self, **overrides: Any) -> Settings:
        """Settings for an app on ``url`` (in the pooler mode through PgBouncer)."""
        return settings_for(self.url, access_log=False, **overrides)


@pytest.fixture(params=["postgresql", "pgbouncer"])
def postgres(request: pytest.FixtureRequest, postgres_database: str) -> Postgres:
    """The test's PostgreSQL database, straight or through PgBouncer in transaction mode."""
    if request.param == "pgbouncer":
        return Postgres(request.getfixturevalue("pgbouncer_database"), postgres_database)
    return Postgres(postgres_database, postgres_database)


@contextlib.contextmanager
def row_lock(url: str, hero_id: int) -> Iterator[Callable[[], None]]:
    """A lock on one hero's row, held by another connection's transaction until released."""
    locker = psycopg.connect(url)
    locker.execute("SELECT id FROM heroes WHERE id = %s FOR UPDATE", (hero_id,))
    try:
        yield locker.rollback
    finally:
        locker.close()


@pytest.mark.parametrize("write", ["update", "delete"])
def test_postgres_write_waiting_for_a_row_lock_holds_up_no_other_request(
    postgres: Postgres, write: str
) -> None:
    async def scenario() -> Observed:
        async with serving(create_app(postgres.settings())) as client:
            held, free = await two_heroes(client)
            with row_lock(postgres.direct, held["id"]) as release:
                wait = WRITES[write](client, held["id"])
                probes = [*probes_for(free), f"/heroes/{held['id']}"]  # reads are not blocked
                return await while_waiting(client, wait, probes, release)

    asyncio.run(scenario()).check(waited_status=200)


@pytest.mark.alone  # the wait ends after 1 s: a probe held up longer by the other worker fails it
def test_postgres_statement_timeout_on_a_row_lock_is_503_and_holds_up_nothing(
    postgres: Postgres,
) -> None:
    # Through a pooler the service bounds each statement itself, by DB_POOL_TIMEOUT (a wait in
    # the pooler's queue) plus DB_STATEMENT_TIMEOUT_MS: 2 s here, then the statement is cancelled.
    settings = postgres.settings(db_statement_timeout_ms=1000, db_pool_timeout=1)

    async def scenario() -> Observed:
        async with serving(create_app(settings)) as client:
            held, free = await two_heroes(client)
            with row_lock(postgres.direct, held["id"]):
                wait = client.patch(f"/heroes/{held['id']}", json={"age": 1})
                return await while_waiting(client, wait, probes_for(free))

    asyncio.run(scenario()).check(waited_status=503)


def test_postgres_statement_running_long_holds_up_no_other_request(postgres: Postgres) -> None:
    async def scenario() -> Observed:
        async with serving(create_app(postgres.settings())) as client:
            _, free = await two_heroes(client)
            with slow_inserts(postgres.direct) as release:
                wait = client.post("/heroes", json=new_hero("Slow"))
                return await while_waiting(client, wait, probes_for(free), release)

    asyncio.run(scenario()).check(waited_status=201)


def test_postgres_requests_queued_for_a_full_pool_hold_up_no_other_request(
    postgres: Postgres,
) -> None:
    settings = postgres.settings(db_pool_size=2, db_max_overflow=0)

    async def scenario() -> tuple[Observed, list[httpx.Response]]:
        async with serving(create_app(settings)) as client:
            held, free = await two_heroes(client)
            with row_lock(postgres.direct, held["id"]) as release:
                # Both pooled connections wait on the row lock; the read queues for one.
                holders = [
                    asyncio.ensure_future(client.patch(f"/heroes/{held['id']}", json={"age": n}))
                    for n in (1, 2)
                ]
                wait = client.get(f"/heroes/{free['id']}")
                observed = await while_waiting(client, wait, ["/health/live"], release)
            return observed, list(await asyncio.gather(*holders))

    observed, holders = asyncio.run(scenario())

    observed.check(waited_status=200)
    assert [response.status_code for response in holders] == [200, 200]


class SilentServer:
    """A port that accepts connections and never answers, like a host behind a dead route."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.listener.accept()[0])

    def close(self) -> None:
        for sock in [*self.accepted, self.listener]:
            sock.close()


@pytest.mark.alone  # as the statement timeout's: its probe was once held up in a full parallel run
def test_postgres_connect_that_never_answers_is_503_and_holds_up_nothing(
    postgres: Postgres,
) -> None:
    silent = SilentServer()
    url = sa.make_url(postgres.url).set(port=silent.port).render_as_string(hide_password=False)
    pooler = postgres.settings().db_pooler
    unreachable = Settings(
        database_url=url, db_pooler=pooler, access_log=False, db_connect_timeout=1
    )
    app = create_app(unreachable)

    async def scenario() -> Observed:
        # No lifespan: the app's startup would itself wait to check the schema, and fail.
        async with serving(app, lifespan=False) as client:
            return await while_waiting(client, client.get("/heroes/1"), ["/health/live"])

    try:
        observed = asyncio.run(scenario())
    finally:
        silent.close()

    observed.check(waited_status=503)
