"""What ``DB_POOLER=transaction`` costs: the drivers alone, and the service called in-process.

Starts its own two PgBouncers (transaction mode, ``default_pool_size`` 10, as
``deploy/pgbouncer.ini`` has it) in front of the PostgreSQL server of the tests, on a fresh
database of 1,000 heroes, dropped afterwards: the machine's (Debian 12's 1.18), which keeps no
prepared statement, and Debian 13's (1.24, from the root ``tools/debian_root.py`` makes), which
keeps them (``max_prepared_statements``). The measurements, each the best of ``--repeats`` rounds
(CPU time is the least noisy figure on a shared machine):

- ``drivers``: 10 connections, each running ``--queries``/10 selects by id one after the other;
  queries per second, and the client's CPU time per query. asyncpg with its statement cache
  (the direct mode, and ``DB_POOLER_PREPARED=true``), asyncpg without it, psycopg 3 unprepared
  (``prepare_threshold=None``, the pooler mode) and prepared (``prepare_threshold=0``), each
  straight to PostgreSQL and through each PgBouncer.
- ``service``: the app built by ``create_app`` and called as an ASGI app in this process (no
  HTTP server, no socket to the client), 10 requests in flight; requests per second and the
  process's CPU time per request, for get-one, list-20 and create, in the direct mode, in the
  pooler mode on each driver, straight to PostgreSQL and through PgBouncer 1.18, and in the
  prepared pooler mode through PgBouncer 1.24.
- ``instructions`` (``--instructions``): each mode's instructions per request, counted by
  callgrind in a process of its own.

Run it from the repository root: ``python -m tests.benchmarks.pooler [--help]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import msgspec
import psycopg
import sqlalchemy as sa
import uvloop
from litestar import Litestar

from service.app import create_app
from service.settings import Settings
from tests.benchmarks.run import cpu_model, package_versions, service_revision
from tests.conftest import POSTGRES_SERVER, migrate
from tests.pgbouncer import PgBouncer, missing, version

KEEPING = "trixie"
"""The Debian root whose PgBouncer (1.24) keeps prepared statements."""

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS-pooler.md"
"""The report kept in the repository: what a run printed, with what it was run on (a run of
``--only instructions`` alone goes to ``RESULTS-pooler-instructions.md``, as it takes long)."""
REPORT: list[str] = []
"""What this run has printed so far."""


def emit(text: str) -> None:
    """Print a line of the report, and keep it for the results file."""
    print(text, flush=True)
    REPORT.append(text)


CONNECTIONS = 10
ROWS = 1000
SELECT_BY_ID = "SELECT id, name, age, created_at, updated_at FROM heroes WHERE id = {}"


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh migrated database with ``ROWS`` heroes, dropped afterwards."""
    name = f"hero_pooler_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        with psycopg.connect(url) as connection:
            with connection.cursor().copy(
                "COPY heroes (name, age, secret_name) FROM STDIN"
            ) as copy:
                for number in range(1, ROWS + 1):
                    copy.write_row((f"Hero {number}", 18 + number % 60, f"Secret {number}"))
            connection.execute("ANALYZE heroes")
        yield url
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


Measure = tuple[float, float]
"""Operations per second, and CPU microseconds per operation."""


async def timed(count: int, run: Callable[[int], Awaitable[None]]) -> Measure:
    """Run ``CONNECTIONS`` loops of ``run(i)`` sharing ``count`` operations; rate and CPU."""
    each = count // CONNECTIONS
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(_loop(run, each, seed) for seed in range(CONNECTIONS)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = each * CONNECTIONS
    return done / wall, cpu / done * 1e6


async def _loop(run: Callable[[int], Awaitable[None]], count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        await run(rng.randint(1, ROWS))


def best(rounds: list[Measure]) -> Measure:
    """The highest rate and the lowest CPU time of the rounds."""
    return max(r for r, _ in rounds), min(c for _, c in rounds)


# The drivers alone --------------------------------------------------------------------------

Query = Callable[[Any, int], Awaitable[None]]
"""One select by id on a driver's connection."""


async def asyncpg_query(connection: Any, hero_id: int) -> None:
    """asyncpg's ``fetch``: from its cache, or prepared unnamed and bound (cache off)."""
    await connection.fetch(SELECT_BY_ID.format("$1"), hero_id)


async def psycopg_query(connection: Any, hero_id: int) -> None:
    """psycopg's cursor, nothing prepared: Parse, Bind and Execute sent together."""
    async with connection.cursor() as cursor:
        await cursor.execute(SELECT_BY_ID.format("%s"), (hero_id,))
        await cursor.fetchall()


DRIVERS: list[tuple[str, Callable[[str], Awaitable[Any]], Query]] = [
    ("asyncpg, cache on", asyncpg.connect, asyncpg_query),
    ("asyncpg, cache off", lambda url: asyncpg.connect(url, statement_cache_size=0), asyncpg_query),
    (
        "psycopg 3, unprepared",
        lambda url: psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None),
        psycopg_query,
    ),
    (
        "psycopg 3, prepared",
        lambda url: psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0),
        psycopg_query,
    ),
]


class Poolers(NamedTuple):
    """The run's two PgBouncers: the machine's (1.18), and Debian 13's (1.24), which keeps
    prepared statements."""

    plain: PgBouncer
    keeping: PgBouncer


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used (user and system), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(connections: list[Any], bouncer: PgBouncer | None) -> list[int]:
    """The PostgreSQL backends serving ``connections``, or those behind ``bouncer``."""
    if bouncer is not None:
        return bouncer.server_pids()
    return [
        c.get_server_pid() if isinstance(c, asyncpg.Connection) else c.info.backend_pid
        for c in connections
    ]


class DriverMeasure(NamedTuple):
    """A driver's best round: queries/s, and CPU µs per query of each process involved."""

    rate: float
    client: float
    pooler: float | None
    server: float


async def driver_rounds(
    url: str, connect: Callable[[str], Awaitable[Any]], query: Query, args: argparse.Namespace,
    bouncer: PgBouncer | None,
) -> DriverMeasure:  # fmt: skip
    """Run ``query`` on ``CONNECTIONS`` connections of a driver: the best of the rounds."""
    connections = [await connect(url) for _ in range(CONNECTIONS)]
    free = list(connections)

    async def run(hero_id: int) -> None:
        connection = free.pop()
        try:
            await query(connection, hero_id)
        finally:
            free.append(connection)

    rounds, pooler, server = [], [], []
    try:
        await timed(args.queries // 10, run)  # warm-up: PgBouncer opens its server connections
        backends = server_pids(connections, bouncer)
        processes = [bouncer.pid] if bouncer else []
        for _ in range(args.repeats):
            before = [cpu_seconds(pid) for pid in [*processes, *backends]]
            rounds.append(await timed(args.queries, run))
            after = [cpu_seconds(pid) for pid in [*processes, *backends]]
            spent = [(a - b) / args.queries * 1e6 for a, b in zip(after, before, strict=True)]
            if bouncer:
                pooler.append(spent.pop(0))
            server.append(sum(spent))
    finally:
        for connection in connections:
            await connection.close()
    rate, client = best(rounds)
    return DriverMeasure(rate, client, min(pooler) if pooler else None, min(server))


def drivers(direct: str, poolers: Poolers, args: argparse.Namespace) -> None:
    """The table of the drivers alone, each cell measured in an event loop of its own (a driver
    that failed through one PgBouncer leaves nothing behind for the next)."""
    emit(
        f"\nDrivers alone, {CONNECTIONS} connections, select by id, {args.queries} queries "
        f"per round, best of {args.repeats}: queries/s, and CPU µs per query of the client, "
        "PgBouncer and the PostgreSQL backends\n"
    )
    emit(
        "| driver | direct q/s | client / server CPU | through PgBouncer 1.18 q/s "
        "| client / PgBouncer / server CPU | through PgBouncer 1.24 q/s "
        "| client / PgBouncer / server CPU |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|")
    for name, connect, query in DRIVERS:
        there = uvloop.run(driver_rounds(direct, connect, query, args, None))
        cells = []
        for bouncer in poolers:
            try:
                m = uvloop.run(driver_rounds(bouncer.url(direct), connect, query, args, bouncer))
                cells.append(f"{m.rate:,.0f} | {m.client:.0f} / {m.pooler:.0f} / {m.server:.0f}")
            except (asyncpg.PostgresError, psycopg.Error) as exc:
                said = (str(exc).strip().splitlines() or [""])[0][:80]
                cells.append(f"fails: {type(exc).__name__} ({said}) | -")
        emit(
            f"| {name} | {there.rate:,.0f} | {there.client:.0f} / {there.server:.0f} "
            f"| {' | '.join(cells)} |"
        )


# The service in-process ---------------------------------------------------------------------


class Call:
    """One request to an ASGI app, in-process."""

    def __init__(self, method: str, path: str, body: bytes = b"") -> None:
        self.method = method
        self.path, _, query = path.partition("?")
        self.query = query.encode()
        self.body = body

    def scope(self) -> dict[str, Any]:
        """The HTTP scope uvicorn would build."""
        headers = [(b"host", b"127.0.0.1:8000")]
        if self.body:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()),
            ]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": self.query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

    async def __call__(self, app: Litestar) -> int:
        """Send the request; return the status."""
        status = 0
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(self.scope(), receive, send)  # type: ignore[arg-type]
        return status


CREATE = msgspec.json.encode({"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30})
SCENARIOS: dict[str, Callable[[int], Call]] = {
    "get-one": lambda hero_id: Call("GET", f"/heroes/{hero_id}"),
    "list-20": lambda _: Call("GET", "/heroes?offset=0&limit=20"),
    "create": lambda _: Call("POST", "/heroes", CREATE),
}
EXPECTED = {"get-one": 200, "list-20": 200, "create": 201}


async def scenario_round(app: Litestar, name: str, requests: int) -> Measure:
    """``requests`` of scenario ``name`` on ``app``, ``CONNECTIONS`` at a time."""
    make = SCENARIOS[name]

    async def run(hero_id: int) -> None:
        status = await make(hero_id)(app)
        if status != EXPECTED[name]:
            raise RuntimeError(f"{name} answered {status}")

    return await timed(requests, run)


def service_variants(direct: str, through: str, keeping: str) -> dict[str, Settings]:
    """The modes measured: the direct mode, the pooler mode on each driver and path, and the
    prepared pooler mode through the PgBouncer that keeps prepared statements (at ``keeping``)."""
    base: dict[str, Any] = {"access_log": False, "db_pool_size": CONNECTIONS}
    asyncpg_direct = direct.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncpg_through = through.replace("postgresql://", "postgresql+asyncpg://", 1)
    pooled = {**base, "db_pooler": "transaction"}
    return {
        "direct mode (asyncpg, cache on), straight": Settings(database_url=direct, **base),
        "pooler mode, psycopg, straight": Settings(database_url=direct, **pooled),
        "pooler mode, psycopg, through PgBouncer 1.18": Settings(database_url=through, **pooled),
        "pooler mode, asyncpg (cache off), straight": Settings(
            database_url=asyncpg_direct, **pooled
        ),
        "pooler mode, asyncpg (cache off), through PgBouncer 1.18": Settings(
            database_url=asyncpg_through, **pooled
        ),
        "prepared pooler mode (asyncpg, cache on), through PgBouncer 1.24": Settings(
            database_url=keeping, db_pooler_prepared=True, **pooled
        ),
    }


async def service(direct: str, poolers: Poolers, args: argparse.Namespace) -> None:
    """The table of the service in-process: requests per second and CPU time."""
    variants = service_variants(direct, *(bouncer.url(direct) for bouncer in poolers))
    emit(
        f"\nThe service in-process, {CONNECTIONS} requests in flight, {args.requests} requests "
        f"per round, best of {args.repeats} (the modes take turns in each round): requests/s "
        "and µs of CPU per request\n"
    )
    names = list(SCENARIOS)
    rounds: dict[tuple[str, str], list[Measure]] = {}
    async with AsyncExitStack() as stack:
        apps = {}
        for label, settings in variants.items():
            apps[label] = app = create_app(settings)
            await stack.enter_async_context(app.lifespan())
            for name in names:  # warm-up: connections opened, statements compiled
                await scenario_round(app, name, CONNECTIONS * 20)
        for _ in range(args.repeats):
            for label, app in apps.items():
                for name in names:
                    rounds.setdefault((label, name), []).append(
                        await scenario_round(app, name, args.requests)
                    )
    emit("| mode | " + " | ".join(f"{n} rps | {n} µs CPU" for n in names) + " |")
    emit("|---|" + "---:|" * (2 * len(names)))
    for label in variants:
        measured = {name: best(rounds[label, name]) for name in names}
        cells = " | ".join(f"{measured[n][0]:,.0f} | {measured[n][1]:.0f}" for n in names)
        emit(f"| {label} | {cells} |")


def instructions(direct: str, poolers: Poolers, args: argparse.Namespace) -> None:
    """The table of instructions per request, each mode in a process of its own under callgrind."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    through, keeping = (bouncer.url(direct) for bouncer in poolers)
    emit(
        f"\nThe service in-process under callgrind, {CONNECTIONS} requests in flight: "
        f"instructions per request (thousands), over {args.requests} requests\n"
    )
    names = list(SCENARIOS)
    emit("| mode | " + " | ".join(names) + " |")
    emit("|---|" + "---:|" * len(names))
    for label in service_variants(direct, through, keeping):
        if args.mode and not any(wanted in label for wanted in args.mode):
            continue
        command = [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, "-m", "tests.benchmarks.pooler",
            "--child", label, "--direct", direct, "--through", through, "--keeping", keeping,
            "--requests", str(args.requests),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        cells = " | ".join(f"{counts[name] / 1000:,.0f}" for name in names)
        emit(f"| {label} | {cells} |")


def instructions_so_far() -> int:
    """Instructions this process has run, as callgrind counts them."""
    done = subprocess.run(
        ["callgrind_control", "-e", "Ir", str(os.getpid())],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = re.search(r"Th 1\s+([\d,]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"callgrind_control said: {done.stdout}{done.stderr}")
    return int(found[1].replace(",", ""))


async def child(args: argparse.Namespace) -> None:
    """Under callgrind: one mode's instructions per request, per scenario, as JSON."""
    settings = service_variants(args.direct, args.through, args.keeping)[args.child]
    app = create_app(settings)
    counts: dict[str, float] = {}
    async with app.lifespan():
        for name in SCENARIOS:
            await scenario_round(app, name, CONNECTIONS * 20)
            empty = instructions_so_far()
            empty = instructions_so_far() - empty  # what asking costs
            before = instructions_so_far()
            await scenario_round(app, name, args.requests)
            counts[name] = (instructions_so_far() - before - empty) / args.requests
    print(json.dumps(counts))


def main(argv: list[str] | None = None) -> None:
    """Measure and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="rounds per figure (5)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries per driver round")
    parser.add_argument("--requests", type=int, default=3_000, help="requests per service round")
    parser.add_argument(
        "--only", choices=["drivers", "service", "instructions"], help="one of the tables"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per request under callgrind (slow: minutes)",
    )
    parser.add_argument(
        "--mode",
        nargs="+",
        help="count instructions only for the modes whose name holds one of these words",
    )
    parser.add_argument(
        "--no-save", action="store_true", help=f"print only; leave {RESULTS.name} alone"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--direct", help=argparse.SUPPRESS)
    parser.add_argument("--through", help=argparse.SUPPRESS)
    parser.add_argument("--keeping", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        uvloop.run(child(args))
        return
    if reason := missing() or missing(KEEPING):
        raise SystemExit(f"tests.benchmarks.pooler runs both PgBouncers: {reason}")
    started = datetime.now(UTC)
    with bench_database() as direct:
        url = sa.make_url(direct)
        target = (url.host or "127.0.0.1", url.port or 5432)
        with (
            PgBouncer(target, pool_size=CONNECTIONS) as plain,
            PgBouncer(target, suite=KEEPING, pool_size=CONNECTIONS) as keeping,
        ):
            poolers = Poolers(plain, keeping)
            if args.only in (None, "drivers"):
                drivers(direct, poolers, args)
            if args.only in (None, "service"):
                uvloop.run(service(direct, poolers, args))
            if args.only == "instructions" or (args.only is None and args.instructions):
                instructions(direct, poolers, args)
            versions = [f"PgBouncer {'.'.join(map(str, version(b.suite)))}" for b in poolers]
    if not args.no_save:
        command = " ".join(["python -m tests.benchmarks.pooler", *sys.argv[1:]])
        header = [
            "# What the pooler modes cost: the drivers, and the service in-process",
            "",
            f"Measured {started:%Y-%m-%d %H:%M} UTC with `{command}`.",
            "",
            f"- Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, "
            f"Linux {platform.release()}; nothing pinned.",
            f"- Python {platform.python_version()}; {package_versions()}; "
            f"asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__}; "
            f"{' and '.join(versions)}.",
            f"- Service at {service_revision()}.",
        ]
        alone = args.only == "instructions"
        results = HERE / "RESULTS-pooler-instructions.md" if alone else RESULTS
        results.write_text("\n".join([*header, *REPORT]) + "\n")
        print(f"written to {results.relative_to(Path.cwd())}", file=sys.stderr)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
