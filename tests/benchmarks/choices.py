"""The measurements behind choices the code makes, which its docstrings point to.

Each choice in ``service/`` that was made because the other way cost more is measured here, the
two ways side by side, in-process, and written to ``tests/benchmarks/RESULTS-choices.md``:

- the service's own requests (SQLite file, 1,000 heroes, access log off): get-one and create,
  the yardsticks the others are compared with;
- a read by id on SQLite: the compiled statement on sqlite3's connection against SQLAlchemy's
  ``Connection.execute`` (``service/database/statements.py``, ``sqlite.py``);
- a SQLite timestamp read back: one ``fromisoformat`` of the text with its offset appended,
  against SQLAlchemy's generic path (``service/database/tables.py``), and appending the offset
  against ``replace(tzinfo=UTC)``;
- a request id: a counter after a per-process random prefix against ``uuid4``
  (``service/ops/requests.py``);
- an access log line: written by a ``StreamHandler`` against handed to a queue listener's thread
  (``service/ops/requests.py``);
- Litestar's header map, built for a create's request, against decoding its body
  (``service/http/decoding.py``, ``service/http/idempotency.py``);
- an answer: Litestar's ``Response`` against ``JsonResponse`` (``service/http/responses.py``);
- a no-op guard on a route, against none (``service/http/request_line.py``);
- on PostgreSQL (``--database-url``, a migrated database): a pooled connection checked out and
  in through SQLAlchemy's greenlet against directly (``service/database/postgres.py``), and a
  read by id's round trip (``service/settings.py``: ``DB_STATEMENT_TIMEOUT_MS``).

Times are CPU time (the process's, every thread's), the best of ``--rounds`` rounds, one thing
at a time, so that a busy machine's other work falls out; compare the two sides of a row,
measured back to back. The one wall-clock figure is PostgreSQL's round trip.

    just bench-choices
    just bench-choices --database-url postgresql://postgres@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import platform
import queue
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from litestar import Litestar, Request, Response, get
from litestar.connection.base import empty_receive
from litestar.params import Parameter
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import greenlet_spawn

from service.app import create_app
from service.database.postgres import idle_connection
from service.database.statements import run_on_driver
from service.database.tables import Base, UTCDateTime
from service.heroes.queries import SELECT_HERO
from service.heroes.schemas import HeroCreate, HeroPublic
from service.http.responses import JsonResponse
from service.settings import Settings
from tests.benchmarks.pooler import Call
from tests.benchmarks.run import service_revision

HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS-choices.md"
CREATE_BODY = b'{"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}'
STORED_TEXT = "2026-11-27 11:00:00.123456"
"""A timestamp as SQLite stores it (DateTime's text, without a zone)."""

Row = tuple[str, float, str]
"""One figure: what was measured, microseconds, and what it is compared with."""


Clock = Callable[[], float]


def best(rounds: int, count: int, run: Callable[[], object]) -> float:
    """CPU microseconds per call of ``run``: the best of ``rounds`` rounds of ``count`` calls."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            run()
        times.append((time.process_time() - started) / count)
    return min(times) * 1e6


async def best_async(
    rounds: int,
    count: int,
    run: Callable[[], Awaitable[object]],
    clock: Clock = time.process_time,
) -> float:
    """:func:`best` for a coroutine function, awaited one call at a time (CPU, or ``clock``)."""
    times = []
    for _ in range(rounds):
        started = clock()
        for _ in range(count):
            await run()
        times.append((clock() - started) / count)
    return min(times) * 1e6


async def service_requests(rounds: int) -> dict[str, float]:
    """Microseconds per get-one and per create of the service, in-process, on a SQLite file."""
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(database_url=f"sqlite:///{directory}/h.db", access_log=False)
        app = create_app(settings)
        async with app.lifespan():
            for _ in range(1000):
                await Call("POST", "/heroes/", CREATE_BODY)(app)
            get_one = Call("GET", "/heroes/500")
            create = Call("POST", "/heroes/", CREATE_BODY)
            return {
                "get-one": await best_async(rounds, 1000, lambda: get_one(app)),
                "create": await best_async(rounds, 300, lambda: create(app)),
            }


def sqlite_read(rounds: int) -> dict[str, float]:
    """A read by id on SQLite: the compiled statement on the driver, and through SQLAlchemy."""
    with tempfile.TemporaryDirectory() as directory:
        engine = sa.create_engine(f"sqlite:///{directory}/h.db")
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO heroes (name, secret_name) VALUES ('Deadpond', 'Dive')")
            )
        raw: Any = engine.raw_connection()
        driver = raw.driver_connection
        with engine.connect() as connection:
            params = {"row_id": 1}
            found = {
                "driver": best(rounds, 5000, lambda: run_on_driver(
                    engine.dialect, driver, SELECT_HERO, params
                )),
                "sqlalchemy": best(rounds, 5000, lambda: connection.execute(
                    SELECT_HERO.statement, params
                ).all()),
            }  # fmt: skip
        raw.close()
        engine.dispose()
        return found


def timestamps(rounds: int) -> dict[str, float]:
    """A SQLite timestamp read back, the service's way and SQLAlchemy's generic one."""
    dialect = sqlite_dialect.dialect()
    column: Any = UTCDateTime().dialect_impl(dialect)
    ours = column.result_processor(dialect, None)
    # What UTCDateTime would do without its own result_processor: SQLite's DATETIME parser,
    # then process_result_value.
    generic = sa.types.TypeDecorator.result_processor(column, dialect, None)
    assert ours is not None
    assert generic is not None
    parsed = datetime.fromisoformat(STORED_TEXT)
    return {
        "ours": best(rounds, 100_000, lambda: ours(STORED_TEXT)),
        "generic": best(rounds, 100_000, lambda: generic(STORED_TEXT)),
        "append offset": best(rounds, 100_000, lambda: STORED_TEXT + "+00:00"),
        "replace tzinfo": best(rounds, 100_000, lambda: parsed.replace(tzinfo=UTC)),
    }


def request_ids(rounds: int) -> dict[str, float]:
    """A new request id: the process's prefix and a counter, or a ``uuid4``."""
    prefix = uuid.uuid4().hex[:20]
    counter = iter(range(10**9))
    return {
        "counter": best(rounds, 100_000, lambda: f"{prefix}{next(counter):012x}"),
        "uuid4": best(rounds, 100_000, lambda: uuid.uuid4().hex),
    }


def access_lines(rounds: int) -> dict[str, float]:
    """An access log line written on the spot, or handed to a queue listener's thread.

    The queue's round includes the listener writing every line it was handed (it is stopped,
    and so drained, before the round's clock stops): the work the process does either way.
    """
    line = '{"method":"GET","path":"/heroes/1","status":200,"duration_ms":0.2}'

    def direct() -> float:
        logger = logging.Logger("direct")
        logger.addHandler(logging.StreamHandler(io.StringIO()))
        return best(rounds, 20_000, lambda: logger.info(line))

    def queued() -> float:
        times = []
        for _ in range(rounds):
            lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
            logger = logging.Logger("queued")
            logger.addHandler(QueueHandler(lines))
            listener = QueueListener(lines, logging.StreamHandler(io.StringIO()))
            listener.start()
            started = time.process_time()
            for _ in range(20_000):
                logger.info(line)
            listener.stop()
            times.append((time.process_time() - started) / 20_000)
        return min(times) * 1e6

    return {"direct": direct(), "queue listener": queued()}


def create_scope(app: Litestar) -> dict[str, Any]:
    """A create's HTTP scope as uvicorn builds it, with a browser's usual headers."""
    scope = Call("POST", "/heroes/", CREATE_BODY).scope()
    scope["headers"] += [
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"connection", b"keep-alive"),
    ]
    scope["app"] = app
    scope["state"] = {}
    return scope


def headers_and_body(rounds: int) -> dict[str, float]:
    """Litestar's header map built for a create, against decoding the create's body."""
    app = Litestar()
    scope = create_scope(app)
    return {
        "header map": best(rounds, 50_000, lambda: Request(scope).headers),  # type: ignore[arg-type]
        "body": best(rounds, 50_000, lambda: msgspec.json.decode(CREATE_BODY, type=HeroCreate)),
    }


def answers(rounds: int) -> dict[str, float]:
    """A hero answered with its ETag: Litestar's ``Response``, or ``JsonResponse``."""
    app = Litestar()
    request: Request[Any, Any, Any] = Request(create_scope(app))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    hero = HeroPublic(1, "Deadpond", 30, now, now)
    headers = {"ETag": '"1"', "Cache-Control": "no-cache"}

    async def send(_: Any) -> None:
        return None

    async def litestar() -> None:
        response = Response(hero, headers=headers)
        await response.to_asgi_response(app, request)(request.scope, empty_receive, send)

    async def ours() -> None:
        response = JsonResponse(hero, headers=headers)
        await response.to_asgi_response(app, request)(request.scope, empty_receive, send)

    async def both() -> dict[str, float]:
        return {
            "Response": await best_async(rounds, 20_000, litestar),
            "JsonResponse": await best_async(rounds, 20_000, ours),
        }

    return asyncio.run(both())


def bare_routes(rounds: int) -> dict[str, float]:
    """Requests to a bare app's routes: plain, with a no-op guard, with a header parameter."""

    def allow(_connection: Any, _handler: Any) -> None:
        return None

    @get("/plain", sync_to_thread=False)
    def plain() -> dict[str, int]:
        return {"id": 1}

    @get("/guarded", guards=[allow], sync_to_thread=False)
    def guarded() -> dict[str, int]:
        return {"id": 1}

    @get("/header", sync_to_thread=False)
    def header(
        key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> dict[str, int]:
        return {"id": 1}

    app = Litestar([plain, guarded, header])
    routes = {"plain": "/plain", "a guard": "/guarded", "a header": "/header"}

    async def each() -> dict[str, float]:
        found = {}
        for name, path in routes.items():
            call = Call("GET", path)
            found[name] = await best_async(rounds, 5000, lambda: call(app))  # noqa: B023
        return found

    return asyncio.run(each())


async def postgres(database_url: str, rounds: int) -> dict[str, float]:
    """On PostgreSQL: a checkout and check-in through the greenlet or directly; a read by id."""
    url = sa.make_url(database_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, pool_size=2)
    connection: Any = await engine.raw_connection()  # one idle connection in the pool
    await greenlet_spawn(connection.close)
    sql = SELECT_HERO.compiled(engine.dialect)

    async def through_greenlet() -> None:
        taken: Any = await engine.raw_connection()
        await greenlet_spawn(taken.close)

    async def direct() -> None:
        taken = idle_connection(engine)
        assert taken is not None
        taken.close()

    async def read() -> None:
        taken = idle_connection(engine)
        assert taken is not None
        await taken.driver_connection.fetch(sql.sql, *sql.arguments({"row_id": 1}))  # type: ignore[union-attr]
        taken.close()

    try:
        return {
            "greenlet": await best_async(rounds, 2000, through_greenlet),
            "direct": await best_async(rounds, 2000, direct),
            "read by id": await best_async(rounds, 2000, read),
            "round trip": await best_async(rounds, 2000, read, time.perf_counter),
        }
    finally:
        await engine.dispose()


def report(args: argparse.Namespace, found: dict[str, dict[str, float]]) -> str:
    """The results, in markdown."""
    service = found["service"]
    read, stamps, ids = found["sqlite read"], found["timestamps"], found["request ids"]
    lines, parse, answer = found["access lines"], found["headers"], found["answers"]
    bare = found["bare routes"]

    def share(extra: float, of: str) -> str:
        return f"{extra / service[of]:.1%} of a {of}"

    rows = [
        ("service: get-one, SQLite file, in-process", service["get-one"], "-"),
        ("service: create, SQLite file, in-process", service["create"], "-"),
        (
            "read by id, compiled statement on sqlite3",
            read["driver"],
            f"through Connection.execute: {read['sqlalchemy']:.1f} µs "
            f"({read['sqlalchemy'] / read['driver']:.1f}x)",
        ),
        (
            "SQLite timestamp read, fromisoformat with the offset appended",
            stamps["ours"],
            f"SQLAlchemy's generic path: {stamps['generic']:.2f} µs "
            f"({stamps['generic'] / stamps['ours']:.1f}x)",
        ),
        (
            "appending the offset to the text",
            stamps["append offset"],
            f"replace(tzinfo=UTC): {stamps['replace tzinfo']:.3f} µs "
            f"({stamps['append offset'] / stamps['replace tzinfo']:.2f} of it)",
        ),
        (
            "request id: prefix and counter",
            ids["counter"],
            f"uuid4: {ids['uuid4']:.2f} µs, {share(ids['uuid4'] - ids['counter'], 'get-one')}",
        ),
        (
            "access line written by a StreamHandler",
            lines["direct"],
            f"through a queue listener: {lines['queue listener']:.1f} µs "
            f"({share(lines['queue listener'] - lines['direct'], 'get-one')} more)",
        ),
        (
            "a create's body decoded (HeroCreate)",
            parse["body"],
            f"Litestar's header map for it: {parse['header map']:.1f} µs "
            f"({share(parse['header map'], 'create')})",
        ),
        (
            "a hero answered by JsonResponse",
            answer["JsonResponse"],
            f"by Litestar's Response: {answer['Response']:.1f} µs "
            f"({share(answer['Response'] - answer['JsonResponse'], 'get-one')} more)",
        ),
        (
            "a route of a bare app",
            bare["plain"],
            f"with a no-op guard: {bare['a guard']:.1f} µs "
            f"({share(bare['a guard'] - bare['plain'], 'get-one')} more); with an optional header "
            f"parameter: {bare['a header']:.1f} µs "
            f"({share(bare['a header'] - bare['plain'], 'create')} more)",
        ),
    ]
    if "postgres" in found:
        pg = found["postgres"]
        rows += [
            (
                "PostgreSQL: idle pooled connection out and in, directly",
                pg["direct"],
                f"through the greenlet: {pg['greenlet']:.1f} µs "
                f"({(pg['greenlet'] - pg['direct']) / pg['read by id']:.0%} of a read by id)",
            ),
            (
                "PostgreSQL: a read by id on asyncpg, the worker's CPU",
                pg["read by id"],
                f"its round trip (wall clock): {pg['round trip']:.0f} µs",
            ),
        ]
    command = "python -m tests.benchmarks.choices" + (
        " --database-url <a migrated PostgreSQL database>" if args.database_url else ""
    )
    table = "\n".join(f"| {what} | {us:,.2f} | {against} |" for what, us, against in rows)
    return f"""# What the code's choices save

`{command}`, {time.strftime("%Y-%m-%d")}, at {service_revision()}, on {platform.machine()}
with Python {platform.python_version()} and SQLite {sqlite3.sqlite_version}; best of
{args.rounds} rounds, microseconds per operation, in-process (see the module's docstring for
what each row runs).

| measured | µs | the other way |
|---|---:|---|
{table}
"""


def main() -> None:
    """Measure, print the report and write it to ``RESULTS-choices.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (5)")
    parser.add_argument("--database-url", help="a migrated PostgreSQL database, for its rows")
    args = parser.parse_args()
    found = {
        "service": asyncio.run(service_requests(args.rounds)),
        "sqlite read": sqlite_read(args.rounds),
        "timestamps": timestamps(args.rounds),
        "request ids": request_ids(args.rounds),
        "access lines": access_lines(args.rounds),
        "headers": headers_and_body(args.rounds),
        "answers": answers(args.rounds),
        "bare routes": bare_routes(args.rounds),
    }
    if args.database_url:
        found["postgres"] = asyncio.run(postgres(args.database_url, args.rounds))
    text = report(args, found)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
