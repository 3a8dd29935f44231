"""The SQLite writer thread under faults: it never dies, never runs a write twice, never hangs.

Each fault is the real one: the process out of file descriptors while the writer opens its
connection; a trigger that rolls the whole transaction back (``RAISE(ROLLBACK)``, as
``SQLITE_FULL`` or ``SQLITE_IOERR`` can), installed from a second connection, inside a group of
writes committed together; a conversion of the service's own that fails mid-group. Every answer
must match the rows: a 2xx is stored once, a 4xx or 503 not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.database.engines import database_config, open_database
from service.database.statements import Database, Statement
from service.settings import Settings
from tests.helpers import assert_error, create, new_hero, serving, sqlite_write_lock

ANSWER_WITHIN = 10.0
"""Seconds after which a request that has not been answered is taken to hang."""

ROLLBACK_ALL = "rollback-all"
ROLLBACK_TRIGGER = f"""CREATE TRIGGER rollback_all BEFORE INSERT ON heroes
    WHEN NEW.name = '{ROLLBACK_ALL}' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END"""
"""A write that undoes the whole transaction it runs in, not only its own statement."""


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "heroes.db"


@pytest.fixture
def settings(sqlite_file: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{sqlite_file}", access_log=False)


def install(sqlite_file: Path, sql: str) -> None:
    """Run ``sql`` on a connection of its own, behind the service's back."""
    connection = sqlite3.connect(sqlite_file, isolation_level=None)
    try:
        connection.execute(sql)
    finally:
        connection.close()


def stored(sqlite_file: Path) -> dict[str, Any]:
    """How many heroes of each name are stored, and each hero's version by id."""
    connection = sqlite3.connect(sqlite_file)
    try:
        rows = connection.execute("SELECT id, name, version FROM heroes").fetchall()
    finally:
        connection.close()
    return {"names": Counter(name for _, name, _ in rows), "versions": {i: v for i, _, v in rows}}


def answered_in_time(request: Callable[[], httpx.Response]) -> httpx.Response:
    """``request``'s answer, which must come within ``ANSWER_WITHIN`` seconds."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(request()), daemon=True)
    thread.start()
    thread.join(ANSWER_WITHIN)
    assert answers, f"no answer within {ANSWER_WITHIN} s: the request hangs"
    return answers[0]


@contextlib.contextmanager
def out_of_file_descriptors() -> Iterator[None]:
    """No file can be opened in this process until the block ends (EMFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_writes_while_the_writer_cannot_open_its_connection_are_503_then_it_recovers(
    settings: Settings, sqlite_file: Path
) -> None:
    with TestClient[Litestar](create_app(settings)) as client:
        assert client.get("/heroes").status_code == 200  # the reads' connection is open
        with out_of_file_descriptors():
            refused = answered_in_time(lambda: client.post("/heroes", json=new_hero("Refused")))
            read = client.get("/heroes")
        after = answered_in_time(lambda: client.post("/heroes", json=new_hero("After")))

    error = assert_error(refused, 503)
    assert "nothing was stored" in error.detail
    assert read.json() == []
    assert after.status_code == 201, after.text
    assert stored(sqlite_file)["names"] == {"After": 1}


def test_a_lone_write_that_rolls_back_the_whole_transaction_is_409_with_its_own_error(
    settings: Settings, sqlite_file: Path
) -> None:
    with TestClient[Litestar](create_app(settings)) as client:
        create(client, "Before")
        install(sqlite_file, ROLLBACK_TRIGGER)

        refused = answered_in_time(lambda: client.post("/heroes", json=new_hero(ROLLBACK_ALL)))
        after = create(client, "After")

    assert_error(refused, 409)
    assert after["name"] == "After"
    assert stored(sqlite_file)["names"] == {"Before": 1, "After": 1}


SETTLE = 0.15
"""Seconds between two requests that must reach the writer's queue in order."""


async def queued_in_order(
    client: httpx.AsyncClient, requests: Sequence[Callable[[], Any]]
) -> list[asyncio.Future[httpx.Response]]:
    """Send ``requests`` one after the other, each given time to reach the writer's queue."""
    sent = []
    for request in requests:
        sent.append(asyncio.ensure_future(request()))
        await asyncio.sleep(SETTLE)
    return sent


def test_a_whole_transaction_rollback_in_a_group_runs_no_write_twice(
    settings: Settings, sqlite_file: Path
) -> None:
    """The issue's group: every answer is the one of the run that counts, and matches the rows."""

    async def scenario() -> dict[str, httpx.Response]:
        async with serving(create_app(settings)) as client:
            hero = (await client.post("/heroes", json=new_hero("H"))).json()
            install(sqlite_file, ROLLBACK_TRIGGER)
            writes: dict[str, Callable[[], Any]] = {
                # Waits for the lock alone, so that the others queue up into one group.
                "leader": lambda: client.post("/heroes", json=new_hero("leader")),
                "innocent-1": lambda: client.post("/heroes", json=new_hero("innocent-1")),
                ROLLBACK_ALL: lambda: client.post("/heroes", json=new_hero(ROLLBACK_ALL)),
                "patch": lambda: client.patch(
                    f"/heroes/{hero['id']}", json={"age": 7}, headers={"If-Match": '"1"'}
                ),
                "innocent-2": lambda: client.post("/heroes", json=new_hero("innocent-2")),
            }
            with sqlite_write_lock(settings) as release:
                sent = await queued_in_order(client, list(writes.values()))
                release()
                answers = await asyncio.wait_for(asyncio.gather(*sent), ANSWER_WITHIN)
            return dict(zip(writes, answers, strict=True))

    answers = asyncio.run(scenario())

    for name in ("leader", "innocent-1", "innocent-2"):
        assert answers[name].status_code == 201, (name, answers[name].text)
    assert_error(answers[ROLLBACK_ALL], 409)
    assert answers["patch"].status_code == 200, answers["patch"].text
    assert answers["patch"].headers["etag"] == '"2"'
    rows = stored(sqlite_file)
    assert rows["names"] == {"H": 1, "leader": 1, "innocent-1": 1, "innocent-2": 1}
    assert rows["versions"][1] == 2


def test_no_write_waits_for_the_lock_longer_than_the_busy_timeout(
    settings: Settings,
) -> None:
    """A write queued behind a group that waits for the lock waits only its own timeout."""
    timeout_ms = 1000
    patient = msgspec.structs.replace(settings, sqlite_busy_timeout_ms=timeout_ms)

    async def scenario() -> list[tuple[float, httpx.Response]]:
        async with serving(create_app(patient)) as client:

            async def timed(name: str) -> tuple[float, httpx.Response]:
                started = time.monotonic()
                response = await client.post("/heroes", json=new_hero(name))
                return time.monotonic() - started, response

            with sqlite_write_lock(patient):
                sent = []
                for n in range(4):
                    sent.append(asyncio.ensure_future(timed(f"Waiting {n}")))
                    await asyncio.sleep(0.3)
                return list(await asyncio.wait_for(asyncio.gather(*sent), ANSWER_WITHIN))

    for waited, response in asyncio.run(scenario()):
        assert_error(response, 503)
        assert waited < timeout_ms / 1000 + 0.4, waited


# The writer's own faults, driven through the statement layer: a column type whose conversion
# fails for one value (a bug of the service's code, not of the database).

metadata = sa.MetaData()


class Fragile(sa.types.TypeDecorator[str]):
    """Text whose conversion fails for the value ``fails-on-bind`` or ``fails-on-read``."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        if value == "fails-on-bind":
            raise ValueError("cannot store this")
        return value

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        if value == "fails-on-read":
            raise ValueError("cannot read this back")
        return value


notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", Fragile, nullable=False),
)
INSERT_NOTE = Statement(
    sa.insert(notes).values(text=sa.bindparam("text", type_=Fragile)).returning(notes.c.text)
)


async def write_notes(database_url: str, texts: list[str]) -> list[Any]:
    """Queue one insert per text together; each one's rows, or its exception."""
    settings = Settings(database_url=database_url)
    db: Database = open_database(database_config(settings), settings)
    try:
        writes = [db.fetch(INSERT_NOTE, text=text) for text in texts]
        together = asyncio.gather(*writes, return_exceptions=True)
        return list(await asyncio.wait_for(together, ANSWER_WITHIN))
    finally:
        await db.close()


@pytest.mark.parametrize("fault", ["fails-on-bind", "fails-on-read"])
def test_a_write_whose_conversion_fails_fails_alone_and_the_writer_serves_on(
    sqlite_file: Path, fault: str
) -> None:
    url = f"sqlite:///{sqlite_file}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    engine.dispose()

    first = asyncio.run(write_notes(url, ["a", fault, "b"]))
    second = asyncio.run(write_notes(url, ["c"]))

    assert [list(row) for row in first[0]] == [["a"]]
    assert isinstance(first[1], ValueError)
    assert [list(row) for row in first[2]] == [["b"]]
    assert [[list(row) for row in rows] for rows in second] == [[["c"]]]
    connection = sqlite3.connect(sqlite_file)
    texts = [text for (text,) in connection.execute("SELECT text FROM notes ORDER BY id")]
    connection.close()
    assert texts == ["a", "b", "c"]
