"""What a create costs in-process, with and without an ``Idempotency-Key``.

The ASGI app is called directly (no server, no network) on a fresh database, ``concurrency``
creates at a time (so that SQLite commits them in groups, as under load); each of ``rounds``
rounds times ``creates`` creates without a key and as many with one, and the best round of each
is kept. CPU time is the process's (every thread: the SQLite writer's too), so waits (the fsync
of a commit, PostgreSQL's round trips) are left out; the wall time per create is printed too.

    python -m tests.benchmarks.create_cost                      # a SQLite file
    python -m tests.benchmarks.create_cost --database-url postgresql://postgres@127.0.0.1/db

A PostgreSQL database must be migrated (``just migrate``) and is left with the heroes created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import Settings


async def post(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """POST /heroes through the ASGI app; the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/heroes",
        "raw_path": b"/heroes",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(
    database_url: str, rounds: int, creates: int, concurrency: int
) -> dict[str, tuple[float, float]]:
    """Best CPU and wall microseconds per create, without and with a key."""
    app = create_app(Settings(database_url=database_url, access_log=False))
    best: dict[str, tuple[float, float]] = {}
    async with app.lifespan():
        for _ in range(rounds):
            for mode in ("without key", "with key"):
                cpu, wall = time.process_time(), time.perf_counter()
                for start in range(0, creates, concurrency):
                    wave = []
                    for n in range(start, min(start + concurrency, creates)):
                        body = json.dumps({"name": f"Hero {n}", "secret_name": "s", "age": n % 90})
                        key = [(b"idempotency-key", str(uuid.uuid4()).encode())]
                        headers = key if mode == "with key" else []
                        wave.append(post(app, body.encode(), headers))
                    statuses = await asyncio.gather(*wave)
                    assert set(statuses) == {201}, statuses
                cpu_us = (time.process_time() - cpu) / creates * 1e6
                wall_us = (time.perf_counter() - wall) / creates * 1e6
                old = best.get(mode, (float("inf"), float("inf")))
                best[mode] = (min(old[0], cpu_us), min(old[1], wall_us))
    return best


def main() -> None:
    """Print the cost of a create without and with a key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'heroes.db'}"
        best = asyncio.run(measure(url, args.rounds, args.creates, args.concurrency))
    for mode, (cpu_us, wall_us) in best.items():
        print(f"{mode}: {cpu_us:.1f} µs CPU, {wall_us:.1f} µs wall per create")


if __name__ == "__main__":
    main()
