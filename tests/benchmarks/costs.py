"""What one request costs in-process, split into framework, service code and database.

The ASGI app is called directly (no server, no network, access log off) on a fresh SQLite file
(or ``--database-url``, a migrated PostgreSQL database, left with the heroes it creates), seeded
with 1,000 heroes through the API. Each scenario runs ``--rounds`` rounds of ``--requests``
requests, one at a time; the best round gives the time per request:

- ``get-one``: ``GET /heroes/{id}`` for random ids;
- ``list-20``: ``GET /heroes/?offset=0&limit=20``;
- ``create``: ``POST /heroes/`` with a JSON body.

Then one more round runs under ``cProfile``, and each function's own time is put in one of
three parts by the file it is in: the database (SQLAlchemy, the drivers, ``service/database/``),
the service's code (the rest of ``service/``) or the framework (everything else: Litestar,
msgspec, asyncio). Time in the standard library and in builtins goes to the part of whoever
called it. The parts' shares of the profiled round split the unprofiled time per request.
The profiler costs most where calls are many and short, the framework's, so the framework's share
is an upper bound; the time per request itself is measured without it.

CPU time of the process is what is counted, so that waits (a commit's fsync, PostgreSQL's round
trips) are left out and the figures hold on a busy machine better than a wall clock would; the
profile counts the event loop's thread, and the CPU of other threads (SQLite's writer) goes to the
database. The wall time per request is printed beside it.

    just bench-costs                                  # a SQLite file
    just bench-costs --database-url postgresql://postgres@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import Settings
from tests.benchmarks.pooler import Call

PARTS = ("framework", "service", "database")
DATABASE_FILES = ("/sqlalchemy/", "/advanced_alchemy/", "/asyncpg/", "/psycopg", "/sqlite3/")
DATABASE_BUILTINS = ("sqlite3.", "_sqlite3", "psycopg", "asyncpg")
STDLIB = sysconfig.get_paths()["stdlib"]
CREATE_BODY = b'{"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}'


Request = Callable[[], Awaitable[int]]


def scenarios(app: Any, rows: int) -> dict[str, Request]:
    """Each scenario's next request."""
    return {
        "get-one": lambda: Call("GET", f"/heroes/{random.randint(1, rows)}")(app),
        "list-20": lambda: Call("GET", "/heroes/?offset=0&limit=20")(app),
        "create": lambda: Call("POST", "/heroes/", CREATE_BODY)(app),
    }


async def timed_round(request: Request, count: int) -> tuple[float, float, float]:
    """Seconds per request over ``count`` requests: the process's CPU, this thread's, wall."""
    cpu, own, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for _ in range(count):
        status = await request()
        if status >= 300:
            raise RuntimeError(f"a request answered {status}")
    return (
        (time.process_time() - cpu) / count,
        (time.thread_time() - own) / count,
        (time.perf_counter() - wall) / count,
    )


def part_of_file(filename: str, function: str) -> str | None:  # noqa: PLR0911 (one rule a line)
    """The part a function belongs to by where it is; None for the standard library."""
    if filename == "~":  # a builtin: by its name
        if any(name in function for name in DATABASE_BUILTINS):
            return "database"
        return None
    if "/service/database/" in filename or any(part in filename for part in DATABASE_FILES):
        return "database"
    if "/service/" in filename and "/site-packages/" not in filename:
        return "service"
    if filename.startswith(STDLIB) and "/site-packages/" not in filename:
        return None
    if filename.startswith("<"):  # frozen modules, generated code
        return None
    return "framework"


def split(stats: pstats.Stats) -> dict[str, float]:
    """Each part's own time in ``stats``, the standard library's given to its callers' parts."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    own: dict[Any, float] = {}
    parts: dict[Any, dict[str, float]] = {}

    def shares(key: Any, depth: int = 0) -> dict[str, float]:
        """Which parts ``key``'s time goes to, as fractions."""
        if key in parts:
            return parts[key]
        filename, _, function = key
        part = part_of_file(filename, function)
        if part is not None:
            parts[key] = {part: 1.0}
            return parts[key]
        callers = table[key][4]
        result: dict[str, float] = {}
        total = sum(caller[3] for caller in callers.values()) or 0.0
        if depth > 30 or not callers or total == 0:
            parts[key] = {"framework": 1.0}
            return parts[key]
        parts[key] = {"framework": 1.0}  # breaks cycles while resolving
        for caller, caller_stats in callers.items():
            for part, fraction in shares(caller, depth + 1).items():
                result[part] = result.get(part, 0.0) + fraction * caller_stats[3] / total
        parts[key] = result
        return result

    totals = dict.fromkeys(PARTS, 0.0)
    for key, (_, _, tottime, _, _) in table.items():
        own[key] = tottime
        for part, fraction in shares(key).items():
            totals[part] += fraction * tottime
    return totals


async def measure(app: Any, rows: int, count: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per scenario: CPU and wall µs per request, and the parts' µs."""
    results = {}
    for name, request in scenarios(app, rows).items():
        await timed_round(request, count // 5)  # warm-up
        best = min([await timed_round(request, count) for _ in range(rounds)])
        profile = cProfile.Profile(time.thread_time)  # CPU, not waits
        profile.enable()
        await timed_round(request, count)
        profile.disable()
        totals = split(pstats.Stats(profile))
        whole = sum(totals.values())
        cpu, own, wall = (seconds * 1e6 for seconds in best)
        parts = {part: own * totals[part] / whole for part in PARTS}
        parts["database"] += cpu - own  # other threads: SQLite's writer, drivers' threads
        results[name] = {"cpu": cpu, "wall": wall, **parts}
    return results


async def run(database_url: str, count: int, rounds: int, rows: int) -> dict[str, Any]:
    """Start the app, seed it, measure it, stop it."""
    app = create_app(Settings(database_url=database_url, access_log=False))
    async with app.lifespan():
        for _ in range(rows):
            if await Call("POST", "/heroes/", CREATE_BODY)(app) != 201:
                raise RuntimeError("seeding failed")
        return await measure(app, rows, count, rounds)


def report(results: dict[str, dict[str, float]]) -> str:
    """A markdown table of the results."""
    lines = [
        "| scenario | CPU µs/request | framework | service code | database | wall µs/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in results.items():
        cells = [f"{figures[key]:.0f}" for key in ("cpu", *PARTS, "wall")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse the command line, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a migrated database (default: a new SQLite file)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best one counts")
    parser.add_argument("--rows", type=int, default=1000, help="heroes seeded first")
    args = parser.parse_args()
    random.seed(1)
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'heroes.db'}"
        results = asyncio.run(run(url, args.requests, args.rounds, args.rows))
    print(report(results))


if __name__ == "__main__":
    main()
