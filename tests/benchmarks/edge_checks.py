"""What issue 27's stricter edge costs per request, in-process, before and after.

Each figure is CPU microseconds, the best of ``--rounds`` rounds (``time.process_time``):

- the client address behind a trusted proxy (``TrustedProxies.client``), the baseline's code
  (``git show BASELINE:service/http/proxies.py``) beside today's, for a ``Forwarded`` header of
  two elements, the same with a client's unclosed quote before the proxy's element, and an
  ``X-Forwarded-For`` of two entries;
- the checks added to every request: canonical integer and boolean query values (for
  ``GET /heroes/?offset=0&limit=20`` and a query of every typed parameter), the health checks'
  path test before the ``Host`` check, ``Content-Length`` as digits, and the leaving flag,
  read on every answer;
- whole requests through the app on a SQLite file of 1,000 heroes (``list-20``: ``GET
  /heroes/?offset=0&limit=20``; ``get-one``), each tree in a process of its own: the baseline
  exported by ``git archive`` and today's;
- what runs once per process: reading the settings, parsing ``DATABASE_URL``.

    python -m tests.benchmarks.edge_checks [--baseline main] [--rounds 7]

It writes ``tests/benchmarks/RESULTS-edge-checks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
RESULTS = HERE / "RESULTS-edge-checks.md"
CREATE_BODY = b'{"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}'


def best(rounds: int, count: int, run: Callable[[], object]) -> float:
    """CPU microseconds per call of ``run``: the best of ``rounds`` rounds of ``count`` calls."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            run()
        times.append((time.process_time() - started) / count)
    return min(times) * 1e6


def git(*args: str) -> bytes:
    """The output of ``git args`` in the repository."""
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def baseline_module(baseline: str, path: str, name: str) -> ModuleType:
    """The module at ``path`` as the ``baseline`` revision has it, loaded under ``name``."""
    folder = Path(tempfile.mkdtemp(prefix="edge-baseline-"))
    file = folder / Path(path).name
    file.write_bytes(git("show", f"{baseline}:{path}"))
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scope(headers: list[tuple[bytes, bytes]], path: str = "/heroes/", query: bytes = b"") -> Any:
    """An HTTP scope from a trusted proxy's address."""
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
    }


def proxy_rows(baseline: str, rounds: int) -> list[tuple[str, float, float]]:
    """The client address behind a trusted proxy: (case, baseline µs, today's µs)."""
    from service.http import proxies  # noqa: PLC0415

    old = baseline_module(baseline, "service/http/proxies.py", "baseline_proxies")
    cases = {
        'Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:443"': (
            "forwarded",
            b'for=203.0.113.7;proto=https, for="[2001:db8::1]:443"',
        ),
        'Forwarded: for=203.0.113.7;x=", for="198.51.100.1:5555" (unclosed quote)': (
            "forwarded",
            b'for=203.0.113.7;x=", for="198.51.100.1:5555"',
        ),
        "X-Forwarded-For: 203.0.113.7, 10.1.2.3": (
            "x-forwarded-for",
            b"203.0.113.7, 10.1.2.3",
        ),
    }
    rows = []
    for case, (header, value) in cases.items():
        request = scope([(header.encode(), value)])
        before = old.TrustedProxies("127.0.0.1, 10.0.0.0/8", header).client
        after = proxies.TrustedProxies("127.0.0.1, 10.0.0.0/8", header).client
        rows.append(
            (
                case,
                best(rounds, 20_000, functools.partial(before, request)),
                best(rounds, 20_000, functools.partial(after, request)),
            )
        )
    return rows


def check_rows(rounds: int) -> list[tuple[str, float]]:
    """Today's checks added to a request, each alone: (case, µs)."""
    from litestar.routes import HTTPRoute  # noqa: PLC0415
    from litestar.testing import TestClient  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415
    from service.http.request_line import canonical_query_values  # noqa: PLC0415
    from service.ops.health import LEAVING, PROBE_PATHS, Leaving  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    app = create_app(Settings(database_url="sqlite:///:memory:", access_log=False))
    with TestClient(app):
        (route,) = [r for r in app.routes if r.path == "/heroes" and isinstance(r, HTTPRoute)]
        handler = route.route_handler_map["GET"][0]
    list_20: Any = {**scope([], query=b"offset=0&limit=20"), "route_handler": handler}
    every = b"offset=0&limit=20&min_age=1&max_age=99&count=true&order_by=name"
    typed: Any = {**scope([], query=every), "route_handler": handler}
    length = b"62"
    flag = shutting_down = threading.Event()
    shared = Leaving()
    shared.share(multiprocessing.get_context("spawn").RawValue(ctypes.c_bool, False))
    return [
        (
            "canonical query values, `offset=0&limit=20`",
            best(rounds, 50_000, lambda: canonical_query_values(list_20)),
        ),
        (
            "canonical query values, every typed parameter and order_by",
            best(rounds, 50_000, lambda: canonical_query_values(typed)),
        ),
        (
            "the health checks' path test before the Host check",
            best(rounds, 200_000, lambda: "/heroes/" in PROBE_PATHS),
        ),
        (
            "Content-Length as digits (a create)",
            best(rounds, 200_000, lambda: length.isascii() and length.isdigit()),
        ),
        (
            "the leaving flag, read on every answer (Connection: close while leaving), one worker",
            best(rounds, 200_000, lambda: shutting_down.is_set() or LEAVING.is_set()),
        ),
        (
            "the same in a worker of several (the flag in shared memory)",
            best(rounds, 200_000, lambda: shutting_down.is_set() or shared.is_set()),
        ),
        (
            "before: the shutting-down flag alone (a threading.Event)",
            best(rounds, 200_000, flag.is_set),
        ),
    ]


def startup_rows(rounds: int) -> list[tuple[str, float]]:
    """What runs once per process: (case, µs)."""
    from service.database.engines import database_url  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    environ = {"ALLOW_ANONYMOUS_WRITES": "", "PORT": "8000", "DB_POOLER": "transaction"}
    multi = "postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write"
    return [
        (
            "Settings.from_env, 3 variables (one empty)",
            best(rounds, 2_000, lambda: Settings.from_env(environ)),
        ),
        ("database_url, libpq's two-host form", best(rounds, 2_000, lambda: database_url(multi))),
    ]


def requests_in_process(rounds: int) -> dict[str, float]:
    """CPU µs per list-20 and get-one of the app imported (today's, or the baseline's tree)."""
    from service.app import create_app  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415
    from tests.benchmarks.pooler import Call  # noqa: PLC0415

    logging.disable(logging.INFO)

    async def measure() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as directory:
            settings = Settings(database_url=f"sqlite:///{directory}/h.db", access_log=False)
            app = create_app(settings)
            async with app.lifespan():
                for _ in range(1000):
                    await Call("POST", "/heroes/", CREATE_BODY)(app)
                calls = {
                    "list-20": Call("GET", "/heroes/?offset=0&limit=20"),
                    "get-one": Call("GET", "/heroes/500"),
                }
                figures = {}
                for name, call in calls.items():
                    times = []
                    for _ in range(rounds):
                        started = time.process_time()
                        for _ in range(500):
                            await call(app)
                        times.append((time.process_time() - started) / 500)
                    figures[name] = min(times) * 1e6
                return figures

    return asyncio.run(measure())


def requests_of(tree: Path, rounds: int) -> dict[str, float]:
    """:func:`requests_in_process` run in a new process on the code in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "EDGE_CHECKS": str(Path(__file__).resolve())}
    # This file, loaded by path: the baseline's tree has none.
    script = (
        "import importlib.util, json, os; "
        "spec = importlib.util.spec_from_file_location('edge', os.environ['EDGE_CHECKS']); "
        "e = importlib.util.module_from_spec(spec); spec.loader.exec_module(e); "
        f"print(json.dumps(e.requests_in_process({rounds})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def export(revision: str) -> Path:
    """The files of ``revision``, in a new folder."""
    folder = Path(tempfile.mkdtemp(prefix="edge-tree-"))
    with tarfile.open(fileobj=io.BytesIO(git("archive", revision)), mode="r:") as archive:
        archive.extractall(folder, filter="data")
    return folder


def main() -> None:
    """Measure, print and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="the revision before the fixes (main)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the migrations' lines
    revision = git("rev-parse", "--short", "HEAD").decode().strip()
    baseline = git("rev-parse", "--short", args.baseline).decode().strip()
    proxies = proxy_rows(args.baseline, args.rounds)
    checks = check_rows(args.rounds)
    startup = startup_rows(args.rounds)
    before = requests_of(export(args.baseline), args.rounds)
    after = requests_of(ROOT, args.rounds)
    lines = [
        "# What issue 27's stricter edge costs per request",
        "",
        f"`python -m tests.benchmarks.edge_checks --baseline {args.baseline} --rounds "
        f"{args.rounds}`, {time.strftime('%Y-%m-%d')}, at {revision} (baseline {baseline}), on "
        f"{platform.machine()} with Python {platform.python_version()}; CPU microseconds, best of "
        f"{args.rounds} rounds, in-process (see the module's docstring). A shared 2-core machine: "
        "compare figures of one run.",
        "",
        "## The client address behind a trusted proxy (`FORWARDED_ALLOW_IPS` set)",
        "",
        "| header | baseline µs | today µs |",
        "|---|---:|---:|",
        *(f"| `{case}` | {old:.2f} | {new:.2f} |" for case, old, new in proxies),
        "",
        "## Checks added to each request",
        "",
        "| check | µs |",
        "|---|---:|",
        *(f"| {case} | {value:.3f} |" for case, value in checks),
        "",
        "## Whole requests, in-process, SQLite file of 1,000 heroes",
        "",
        "| request | baseline µs | today µs |",
        "|---|---:|---:|",
        *(f"| {name} | {before[name]:.1f} | {after[name]:.1f} |" for name in before),
        "",
        "## Once per process",
        "",
        "| step | µs |",
        "|---|---:|",
        *(f"| {case} | {value:.1f} |" for case, value in startup),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
