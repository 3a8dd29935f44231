"""Load benchmarks: the service against the FastAPI tutorial app and a framework-free ceiling.

Each app runs in its own uvicorn process (one worker, uvloop, httptools, no access log) pinned
to CPU 1, on a fresh SQLite file in a temporary directory (or, with ``--database postgresql``,
a fresh PostgreSQL database of its own, dropped afterwards; the server's processes are not
pinned), seeded with the same heroes. wrk, pinned to CPU 0, then drives each scenario against
each app in turn, after a warm-up:

- ``get-one``: ``GET /heroes/{id}`` for random ids of the seeded heroes;
- ``list-20``: ``GET /heroes/?offset=0&limit=20``;
- ``create``: ``POST /heroes/`` with a JSON body;
- ``create-keyed``: ``create`` with an ``Idempotency-Key``, new for every request (ours only):
  what the key costs;
- ``by-name``: ``GET /heroes/?name=...&limit=20`` for random seeded names (ours only: the
  tutorial app and the ceiling have no filters);
- ``mixed``: 60% get one, 20% list, 10% create, 10% patch (ours only), for ``--workers``.
- ours only, each to be compared with ``list-20`` (the first page by id): ``last-page-cursor``
  (the last 20 heroes, by the cursor a walk reaches them with), ``sorted-name`` and
  ``sorted-minus-age`` (first pages of ``order_by=name`` and ``order_by=-age``) and
  ``name-prefix`` (``name_prefix=hero <random seeded number>``, case folded, by id);
- ours only, teams: ``team-get-one`` (``GET /teams/{id}`` for random ids, each team with its
  first heroes) and ``team-list-20`` (``GET /teams/?limit=20``). Before the first of them the
  service gets ``TEAMS`` teams and every other seeded hero joins one, after the hero scenarios
  have been measured on heroes without a team, as the peers' are.

The report (a markdown table of requests per second and latency, the service's fraction of the
ceiling, and every error wrk saw) is printed and written to ``results/latest.md`` (not
committed) and ``RESULTS.md`` (committed, with the machine and versions it was measured on;
``RESULTS-<rows>-rows.md`` for a run with ``--rows`` other than 1,000; ``--save-as NAME`` for
a partial run kept beside them).
The run fails if the service answered any request with an error.

``--memory-seconds N`` adds a resident-memory check: N seconds of mixed load on the service
while its RSS is sampled.

With ``--database postgresql`` the run also serves the service through PgBouncer, in front of
the same PostgreSQL server, started from ``deploy/pgbouncer.ini``, one worker like the others:
``ours-pgbouncer`` through the machine's PgBouncer (Debian 12's 1.18, which keeps no prepared
statement: ``DB_POOLER=transaction``, psycopg unprepared), and ``ours-pgbouncer-prepared``
through Debian 13's (1.24, from the root ``tools/debian_root.py`` makes, which keeps them:
``DB_POOLER_PREPARED=true`` too, asyncpg with its statement cache). It reports each against the
service straight to PostgreSQL; then the mixed load through each with 1, 2 and 4 workers
(``--pgbouncer-workers``; none to skip).

``--only ours ours-traced`` (or any selection with ``ours-traced``) also runs the service with
``TRACING=true``, exporting its spans over OTLP/HTTP to a sink in this process that accepts and
discards them, and reports the cost of tracing: requests per second with tracing off and on.

Run it from the repository root: ``just bench`` or ``python -m tests.benchmarks.run --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import importlib.util
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from service.database.pages import Position, Sort
from service.http.cursors import encode_cursor
from tests import pgbouncer
from tests.live import free_port
from tests.pgbouncer import PgBouncer

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LATEST = HERE / "results" / "latest.md"


def committed_report(rows: int, database: str = "sqlite") -> Path:
    """The report kept in the repository for a run on ``rows`` heroes in ``database``."""
    parts = [] if database == "sqlite" else [database]
    parts += [] if rows == SEED_THROUGH_API_MAX else [f"{rows}-rows"]
    return HERE / ("-".join(["RESULTS", *parts]) + ".md")


SEED_THROUGH_API_MAX = 1000
"""Up to this many rows are seeded through ``POST /heroes/``; more are bulk-inserted."""
TEAMS = 50
"""Teams made for the team scenarios; every other seeded hero joins one, in turn."""
SERVER_CPU, WRK_CPU = 1, 0
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
ANSWER_TIMEOUT = 5.0
"""An app that takes longer than this to answer one request after a load run counts as hung."""
MEMORY_SAMPLE_EVERY = 2.0
PEER_RETRIES = 2
"""How many times a peer that hung during a measured run is restarted and measured again."""
PACKAGES = (
    "litestar",
    "advanced-alchemy",
    "sqlalchemy",
    "msgspec",
    "fastapi",
    "sqlmodel",
    "pydantic",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "opentelemetry-sdk",
)
"""Packages whose versions the report names."""

INSTALL_WRK = "apt-get update && apt-get install -y wrk  (or run `just bench`, which does it)"
POSTGRES_SERVER = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The PostgreSQL server the ``--database postgresql`` runs create their databases on."""


@dataclass(frozen=True)
class App:
    """An app under load: what uvicorn serves and how it is configured."""

    key: str
    label: str
    target: str
    url_variable: str
    """The environment variable that names its SQLite file."""
    table: str
    """The table its heroes are stored in, for bulk seeding."""
    create_status: int
    postgres_scheme: str = "postgresql"
    """How its URL names PostgreSQL: the tutorial app's SQLModel needs the driver spelt out."""
    plays: str = ""
    """The app whose scenarios it runs, when it is a variant of one (default: itself)."""
    environment: tuple[tuple[str, str], ...] = ()
    """Settings of its own."""
    pooled: bool = False
    """Reaches PostgreSQL through one of the run's PgBouncers (its database is migrated
    straight)."""
    suite: str | None = None
    """When pooled: the Debian root whose PgBouncer it goes through (``trixie``: 1.24, which
    keeps prepared statements), or None for the machine's own (1.18 here, which keeps none)."""

    @property
    def role(self) -> str:
        """The app whose scenarios it runs."""
        return self.plays or self.key


APPS = {
    "ours": App("ours", "ours", "service.app:app", "DATABASE_URL", "heroes", 201),
    "ours-traced": App(
        "ours-traced",
        "ours, tracing on",
        "service.app:app",
        "DATABASE_URL",
        "heroes",
        201,
        plays="ours",
        environment=(("TRACING", "true"), ("OTEL_SERVICE_NAME", "hero-service-bench")),
    ),
    "ours-pgbouncer": App(
        "ours-pgbouncer",
        "ours, through PgBouncer, unprepared",
        "service.app:app",
        "DATABASE_URL",
        "heroes",
        201,
        plays="ours",
        environment=(("DB_POOLER", "transaction"),),
        pooled=True,
    ),
    "ours-pgbouncer-prepared": App(
        "ours-pgbouncer-prepared",
        "ours, through PgBouncer, prepared",
        "service.app:app",
        "DATABASE_URL",
        "heroes",
        201,
        plays="ours",
        environment=(("DB_POOLER", "transaction"), ("DB_POOLER_PREPARED", "true")),
        pooled=True,
        suite="trixie",
    ),
    "fastapi": App(
        "fastapi",
        "FastAPI",
        "tests.benchmarks.fastapi_app:app",
        "BENCH_DATABASE_URL",
        "hero",
        200,
        postgres_scheme="postgresql+psycopg",
    ),
    "ceiling": App(
        "ceiling",
        "ceiling",
        "tests.benchmarks.ceiling_app:app",
        "BENCH_DATABASE_URL",
        "heroes",
        201,
    ),
}

PEERS = ("ours", "fastapi", "ceiling")
"""The apps of the main table: the service, the tutorial app, the framework-free ceiling."""
POOLED = tuple(key for key, app in APPS.items() if app.pooled)
"""The service through each PgBouncer, with ``--database postgresql``."""
PREPARED_TARGET = 0.85
"""Through the PgBouncer that keeps prepared statements, at least this fraction of the service
straight to PostgreSQL is wanted on get-one, list-20 and create (issue 29)."""
PREPARED_TARGET_SCENARIOS = ("get-one", "list-20", "create")

CREATE_BODY = '{"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}'


@dataclass(frozen=True)
class Scenario:
    """A request pattern: a URL path and, when the requests vary, a wrk Lua script."""

    name: str
    path: str
    script: str | None = None
    """Lua source; ``{rows}`` is replaced with the number of seeded heroes (in ``path`` too, and
    ``{last_page_cursor}`` with the cursor of the last page of 20 by id)."""
    apps: tuple[str, ...] = ("ours", "fastapi", "ceiling")
    """The apps that serve it."""


def random_hero_script(path: str) -> str:
    """A wrk script that GETs ``path`` followed by the number of a random seeded hero.

    The seed is fixed: every app gets the same sequence of heroes.
    """
    return f"""
    local rows = {{rows}}
    math.randomseed(42)
    request = function()
      return wrk.format("GET", "{path}" .. math.random(rows))
    end
    """


KEYED_CREATE_SCRIPT = f"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end
local function uuid4()
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0xfff), r(0x8000, 0xbfff),
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
end
request = function()
  local headers = {{["Content-Type"] = "application/json", ["Idempotency-Key"] = uuid4()}}
  return wrk.format("POST", nil, headers, '{CREATE_BODY}')
end
"""
"""``create`` with an Idempotency-Key, a random UUID for every request (ours only): what the key
costs, as clients that follow the advice (a UUID per hero) use it."""


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("get-one", "/", random_hero_script("/heroes/")),
        Scenario("list-20", "/heroes/?offset=0&limit=20"),
        Scenario(
            "create",
            "/heroes/",
            f"""
            wrk.method = "POST"
            wrk.body = '{CREATE_BODY}'
            wrk.headers["Content-Type"] = "application/json"
            """,
        ),
        Scenario("create-keyed", "/heroes/", KEYED_CREATE_SCRIPT, apps=("ours",)),
        Scenario(
            "by-name", "/", random_hero_script("/heroes/?limit=20&name=Hero%20"), apps=("ours",)
        ),
        Scenario("mixed", "/", "{mixed}", apps=("ours",)),
        Scenario("last-page-cursor", "/heroes/?limit=20&cursor={last_page_cursor}", apps=("ours",)),
        Scenario("sorted-name", "/heroes/?limit=20&order_by=name", apps=("ours",)),
        Scenario("sorted-minus-age", "/heroes/?limit=20&order_by=-age", apps=("ours",)),
        Scenario(
            "name-prefix",
            "/",
            random_hero_script("/heroes/?limit=20&name_prefix=hero%20"),
            apps=("ours",),
        ),
        Scenario(
            "team-get-one",
            "/",
            random_hero_script("/teams/").replace("{rows}", str(TEAMS)),
            apps=("ours",),
        ),
        Scenario("team-list-20", "/teams/?limit=20", apps=("ours",)),
    )
}
TEAM_SCENARIOS = ("team-get-one", "team-list-20")
"""The scenarios that need teams: ``seed_teams`` runs before the first of them."""
AGAINST_FIRST_PAGE = ("last-page-cursor", "sorted-name", "sorted-minus-age", "name-prefix")
"""Scenarios that must cost at most ``AGAINST_FIRST_PAGE_LIMIT`` times ``list-20``."""
AGAINST_FIRST_PAGE_LIMIT = 1.5


def placeholders(rows: int) -> dict[str, str]:
    """What ``{rows}`` and ``{last_page_cursor}`` stand for in scenarios on ``rows`` heroes."""
    last = Position(max(0, rows - 20), max(0, rows - 20))
    return {
        "{rows}": str(rows),
        "{last_page_cursor}": encode_cursor(Sort("id", descending=False), last),
    }


def filled(text: str, rows: int) -> str:
    """``text`` with its placeholders replaced."""
    for placeholder, value in placeholders(rows).items():
        text = text.replace(placeholder, value)
    return text


MIXED_LOAD = "60% get one, 20% list 20 at a random offset, 10% create, 10% patch"
MIXED_SCRIPT = f"""
local rows = {{rows}}
local last_offset = {{last_offset}}
local json = {{["Content-Type"] = "application/json"}}
local counter = 0
math.randomseed(42)
request = function()
  counter = counter + 1
  local pick = counter % 10
  if pick < 6 then
    return wrk.format("GET", "/heroes/" .. math.random(rows))
  elseif pick < 8 then
    return wrk.format("GET", "/heroes/?offset=" .. math.random(0, last_offset) .. "&limit=20")
  elseif pick < 9 then
    return wrk.format("POST", "/heroes/", json, '{CREATE_BODY}')
  else
    local age = math.random(1, 99)
    return wrk.format("PATCH", "/heroes/" .. math.random(rows), json, '{{"age": ' .. age .. '}}')
  end
end
"""


def mixed_script(rows: int) -> str:
    """The mixed load's wrk script for ``rows`` seeded heroes."""
    last_offset = max(0, min(rows, 1000) - 20)
    return MIXED_SCRIPT.replace("{rows}", str(rows)).replace("{last_offset}", str(last_offset))


class BenchmarkError(RuntimeError):
    """The benchmark cannot go on: a tool is missing, an app failed to start or to answer."""


@dataclass(frozen=True)
class WrkResult:
    """What wrk measured in one run."""

    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    hung: bool = False
    """The app no longer answered after the run (it was restarted for the next one)."""
    hung_in_warmup: bool = False
    """The app no longer answered after the warm-up (it was restarted for this run)."""
    runs_lost_to_hangs: int = 0
    """Earlier runs of this scenario on a peer that hung in them, and were measured again."""
    connections: int = 0
    """The connections wrk kept open."""

    @property
    def errors(self) -> int:
        """Responses that were not 2xx or 3xx, plus socket errors, plus one per hang."""
        hangs = self.hung + self.hung_in_warmup + self.runs_lost_to_hangs
        return self.non_2xx + sum(self.socket_errors.values()) + hangs

    def describe_errors(self) -> str:
        """The errors in wrk's own words."""
        sockets = ", ".join(f"{kind} {count}" for kind, count in self.socket_errors.items())
        hung = (
            f"; HUNG: no answer within {ANSWER_TIMEOUT:g} s after the run, restarted"
            if self.hung
            else ""
        )
        if self.hung_in_warmup:
            hung += f"; HUNG in the warm-up (no answer within {ANSWER_TIMEOUT:g} s), restarted"
        if self.runs_lost_to_hangs:
            hung += (
                f"; HUNG in {self.runs_lost_to_hangs} earlier run(s) (no answer within "
                f"{ANSWER_TIMEOUT:g} s), restarted and measured again with half the connections"
            )
        return f"Non-2xx or 3xx responses: {self.non_2xx}; socket errors: {sockets}{hung}"


TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> WrkResult:
    """Read requests/sec, the 50% and 99% latencies and the error counts from wrk's output."""

    def number(pattern: str) -> re.Match[str]:
        found = re.search(pattern, output, re.MULTILINE)
        if found is None:
            raise BenchmarkError(f"wrk's output has no match for {pattern!r}:\n{output}")
        return found

    def latency_ms(percent: int) -> float:
        found = number(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        return float(found[1]) * TIME_UNITS_MS[found[2]]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(number(r"(\d+) requests in")[1]),
        requests_per_second=float(number(r"Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=latency_ms(50),
        p99_ms=latency_ms(99),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0),
                strict=True,
            )
        ),
    )


def pinned(cpu: int | None, command: Sequence[str]) -> list[str]:
    """``command`` run on ``cpu`` only, or anywhere when ``cpu`` is None."""
    return [*(["taskset", "-c", str(cpu)] if cpu is not None else []), *command]


class Store:
    """Where one app keeps its heroes for a run: a SQLite file, or a PostgreSQL database."""

    def __init__(
        self, kind: str, app: App, workdir: Path, bouncer: PgBouncer | None = None
    ) -> None:
        self.kind = kind
        self.app = app
        self.bouncer = bouncer if app.pooled else None
        self.path = workdir / f"{app.key}.db"
        self.name = f"hero_bench_{app.key}_{uuid.uuid4().hex[:8]}"
        if kind == "postgresql":
            with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')

    @property
    def url(self) -> str:
        """The app's database URL, as the app's own variable takes it."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        url = sa.make_url(POSTGRES_SERVER).set(drivername=self.app.postgres_scheme)
        return url.set(database=self.name).render_as_string(hide_password=False)

    @property
    def served_url(self) -> str:
        """Where the app reaches its database: ``url``, or ``url`` through the run's PgBouncer."""
        return self.bouncer.url(self.url) if self.bouncer else self.url

    def prepare(self) -> None:
        """Migrate the service's PostgreSQL database, as an operator would before starting it."""
        if self.kind == "postgresql" and self.app.role == "ours":
            command = [sys.executable, "-m", "litestar", "--app", self.app.target]
            subprocess.run(
                [*command, "database", "upgrade", "--no-prompt"],
                cwd=REPO,
                env={**os.environ, "DATABASE_URL": self.url},
                check=True,
                capture_output=True,
            )

    def insert(self, rows: int) -> tuple[int, int]:
        """Insert heroes 1..rows into the app's table; return the row count and the top id."""
        table = self.app.table
        batch = 100_000
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as connection, connection:
                for first in range(1, rows + 1, batch):
                    connection.executemany(
                        f"INSERT INTO {table} (name, age, secret_name) VALUES (?, ?, ?)",
                        _hero_rows(first, min(first + batch, rows + 1)),
                    )
                (count, top), *_ = connection.execute(f"SELECT count(*), max(id) FROM {table}")
            return count, top
        with psycopg.connect(self.url.replace(self.app.postgres_scheme, "postgresql", 1)) as pg:
            with pg.cursor().copy(f"COPY {table} (name, age, secret_name) FROM STDIN") as copy:
                for row in _hero_rows(1, rows + 1):
                    copy.write_row(row)
            pg.execute(f"ANALYZE {table}")
            found = pg.execute(f"SELECT count(*), max(id) FROM {table}").fetchone()
            assert found is not None
            return found[0], found[1]

    def drop(self) -> None:
        """Drop the PostgreSQL database (a SQLite file goes with the run's directory)."""
        if self.kind == "postgresql":
            with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _hero_rows(first: int, end: int) -> Iterator[tuple[str, int | None, str]]:
    for number in range(first, end):
        h = hero(number)
        yield h["name"], h["age"], h["secret_name"]


class Server:
    """One app in its own uvicorn process, on its own database and port."""

    def __init__(
        self,
        app: App,
        store: Store,
        workdir: Path,
        cpu: int | None,
        workers: int = 1,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.environment = {**dict(app.environment), **(environment or {})}
        self.log = workdir / f"{app.key}.log"
        self.port = free_port()
        self.cpu = cpu
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Where the app answers."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The uvicorn process id (``taskset`` replaces itself with it)."""
        if self.process is None:
            raise BenchmarkError(f"{self.app.label} is not running")
        return self.process.pid

    def start(self) -> None:
        """Start uvicorn and wait until the app answers."""
        command = pinned(
            self.cpu,
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app.target,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
                "--workers",
                str(self.workers),
            ],
        )
        # No access log for any app: uvicorn's is off, and so is the service's own.
        env = {
            **os.environ,
            self.app.url_variable: self.store.served_url,
            "ACCESS_LOG": "false",
            **self.environment,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_ready()

    def stop(self) -> None:
        """Shut uvicorn down, gracefully if it lets us."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def check_alive(self) -> None:
        """Raise if the process has exited."""
        if self.process is None or self.process.poll() is not None:
            raise BenchmarkError(f"{self.app.label} exited.\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.app.label} server output ({self.log}) ---\n{tail or '(empty)'}"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if self.request("GET", "/heroes/?offset=0&limit=1")[0] == 200:
                    return
            time.sleep(0.1)
        raise BenchmarkError(f"{self.app.label} did not answer in {READY_TIMEOUT:.0f} s.")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        connection: http.client.HTTPConnection | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """Send one request; return the status and the decoded JSON body (None if empty)."""
        client = connection or http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {} if body is None else {"Content-Type": "application/json"}
            client.request(method, path, payload, headers)
            response = client.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            if connection is None:
                client.close()

    def answers(self) -> bool:
        """Whether the app still answers a read promptly."""
        try:
            status, _ = self.request("GET", "/heroes/1", timeout=ANSWER_TIMEOUT)
        except OSError:
            return False
        return status == 200

    def rss_kib(self) -> int:
        """The process's resident set size, from ``/proc/<pid>/status``."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if found is None:
            raise BenchmarkError(f"No VmRSS in /proc/{self.pid}/status")
        return int(found[1])


def hero(number: int) -> dict[str, Any]:
    """The ``number``-th seeded hero; every app gets the same ones."""
    return {
        "name": f"Hero {number}",
        "secret_name": f"Secret identity {number}",
        "age": None if number % 7 == 0 else 18 + number % 60,
    }


def seed_through_api(server: Server, rows: int) -> None:
    """Create heroes 1..rows with ``POST /heroes/``, checking each answer."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        for number in range(1, rows + 1):
            status, body = server.request("POST", "/heroes/", hero(number), connection)
            if status != server.app.create_status or body.get("id") != number:
                raise BenchmarkError(
                    f"{server.app.label}: creating hero {number} answered {status} {body}"
                )
    finally:
        connection.close()


def seed_teams(server: Server, rows: int) -> None:
    """Create teams 1..TEAMS with ``POST /teams/``; every even hero joins one, in turn."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        for number in range(1, TEAMS + 1):
            team = {"name": f"Team {number}", "headquarters": f"Tower {number}"}
            status, body = server.request("POST", "/teams/", team, connection)
            if status != HTTPStatus.CREATED or body.get("id") != number:
                raise BenchmarkError(f"creating team {number} answered {status} {body}")
        for number in range(2, rows + 1, 2):
            team_id = (number // 2 - 1) % TEAMS + 1
            path = f"/heroes/{number}"
            status, body = server.request("PATCH", path, {"team_id": team_id}, connection)
            if status != HTTPStatus.OK or body.get("team_id") != team_id:
                raise BenchmarkError(f"PATCH {path} to team {team_id} answered {status} {body}")
    finally:
        connection.close()


def seed_in_bulk(server: Server, rows: int) -> None:
    """Insert heroes 1..rows straight into the app's table.

    The app is started once so that it creates its table as it always does, then stopped for
    the insert and started again.
    """
    server.start()
    server.stop()
    count, top = server.store.insert(rows)
    if count != rows or top != rows:
        raise BenchmarkError(f"{server.app.label}: bulk seeding left {count} rows, ids up to {top}")
    server.start()


def check_seeded(server: Server, rows: int) -> None:
    """The first and last heroes read back as every app should show them."""
    for number in sorted({1, rows}):
        status, body = server.request("GET", f"/heroes/{number}")
        expected = {"id": number, "name": f"Hero {number}", "age": hero(number)["age"]}
        if status != 200 or {key: body.get(key) for key in expected} != expected:
            raise BenchmarkError(
                f"{server.app.label}: GET /heroes/{number} answered {status} {body}, "
                f"expected 200 {expected}"
            )


@contextlib.contextmanager
def running(
    app: App,
    workdir: Path,
    args: argparse.Namespace,
    cpu: int | None,
    environment: dict[str, str] | None = None,
    bouncer: PgBouncer | None = None,
    workers: int | None = None,
) -> Iterator[Server]:
    """The app serving ``args.rows`` seeded heroes on its own database; stopped on exit.

    ``workers``: the service's (default ``--workers``); the peers always get one.
    """
    rows = args.rows
    store = Store(args.database, app, workdir, bouncer)
    workers = (workers or args.workers) if app.role == "ours" else 1
    # Several workers get every CPU: pinned to one, they could only take turns on it.
    server = Server(app, store, workdir, cpu if workers == 1 else None, workers, environment)
    try:
        store.prepare()
        if rows > SEED_THROUGH_API_MAX:
            seed_in_bulk(server, rows)
        else:
            server.start()
            seed_through_api(server, rows)
        check_seeded(server, rows)
        yield server
    except BenchmarkError:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        store.drop()


class Wrk:
    """Runs wrk with the run's settings, pinned to its own CPU."""

    def __init__(self, workdir: Path, connections: int, rows: int, cpu: int | None) -> None:
        self.workdir = workdir
        self.connections = connections
        self.rows = rows
        self.cpu = cpu

    def command(
        self,
        url: str,
        seconds: float,
        script: str | None,
        name: str,
        connections: int | None = None,
    ) -> list[str]:
        """The wrk command line for ``seconds`` of load on ``url`` (the run's connections)."""
        connections = connections or self.connections
        options = ["-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        if script is not None:
            path = self.workdir / f"{name}.lua"
            path.write_text(script)
            options += ["-s", str(path)]
        return pinned(self.cpu, ["wrk", *options, url])

    def run(
        self, server: Server, scenario: Scenario, seconds: float, connections: int | None = None
    ) -> WrkResult:
        """Load ``server`` with ``scenario`` for ``seconds``.

        An app that no longer answers afterwards is restarted, so that one hang does not spoil
        the runs after it, and the result says it hung.
        """
        script = scenario.script
        if script == "{mixed}":
            script = mixed_script(self.rows)
        elif script is not None:
            script = filled(script, self.rows)
        url = server.base_url + filled(scenario.path, self.rows)
        command = self.command(url, seconds, script, scenario.name, connections)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise BenchmarkError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        server.check_alive()
        result = replace(parse_wrk(done.stdout), connections=connections or self.connections)
        if not server.answers():
            progress(f"  {server.app.label} stopped answering: restarting it")
            server.stop()
            server.start()
            result = replace(result, hung=True)
        return result


@dataclass(frozen=True)
class MemoryCheck:
    """The service's resident memory before and under mixed load."""

    seconds: float
    connections: int
    before_kib: int
    samples_kib: list[int]
    load: WrkResult


def check_memory(server: Server, wrk: Wrk, seconds: float) -> MemoryCheck:
    """Sample the server's RSS every few seconds under ``seconds`` of mixed load."""
    script = mixed_script(wrk.rows)
    before = server.rss_kib()
    command = wrk.command(server.base_url + "/", seconds, script, "mixed")
    samples: list[int] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as load:
        started = time.monotonic()
        while load.poll() is None:
            next_sample = started + MEMORY_SAMPLE_EVERY * (len(samples) + 1)
            time.sleep(max(0.0, next_sample - time.monotonic()))
            if load.poll() is None:
                samples.append(server.rss_kib())
        output = load.stdout.read() if load.stdout else ""
    if load.returncode != 0:
        raise BenchmarkError(f"wrk failed ({load.returncode}):\n{output}")
    server.check_alive()
    return MemoryCheck(
        seconds, wrk.connections, before, samples or [server.rss_kib()], parse_wrk(output)
    )


Results = dict[tuple[str, str], WrkResult]
"""wrk's result per (scenario, app key)."""


@dataclass(frozen=True)
class Run:
    """Everything one benchmark run measured, with what it was run with."""

    args: argparse.Namespace
    started: datetime
    pinning: bool
    results: Results
    memory: MemoryCheck | None
    scaling: dict[tuple[str, int], WrkResult] = field(default_factory=dict)
    """The mixed load through each PgBouncer, per (app key, number of workers)."""
    poolers: dict[str, str] = field(default_factory=dict)
    """Each pooled app's PgBouncer, as its version says (``PgBouncer 1.18``)."""


def format_rps(result: WrkResult | None, connections: int = 0) -> str:
    """Requests per second, rounded; with the connections if not the run's ``connections``."""
    if result is None:
        return "-"
    fewer = f" (at {result.connections} connections)" if result.connections != connections else ""
    return f"{result.requests_per_second:,.0f}{' (hung)' if result.hung else fewer}"


def format_latency(result: WrkResult | None) -> str:
    """The 50% and 99% latencies."""
    return f"{result.p50_ms:.2f} / {result.p99_ms:.2f} ms" if result else "-"


def format_mib(kib: int) -> str:
    """KiB as MiB."""
    return f"{kib / 1024:.1f} MiB"


def results_table(run: Run) -> list[str]:
    """The markdown table, one row per scenario."""
    lines = [
        "| scenario | ours rps | FastAPI rps | ratio | ours p50 / p99 | FastAPI p50 / p99 "
        "| ceiling rps |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    c = run.args.connections
    for name in run.args.scenarios:
        ours, peer, ceiling = (run.results.get((name, key)) for key in PEERS)
        ratio = (
            f"{ours.requests_per_second / peer.requests_per_second:.2f}x"
            if ours and peer and peer.requests_per_second and not peer.hung
            else "-"
        )
        lines.append(
            f"| {name} | {format_rps(ours, c)} | {format_rps(peer, c)} | {ratio} "
            f"| {format_latency(ours)} | {format_latency(peer)} | {format_rps(ceiling, c)} |"
        )
    lines += against_first_page(run)
    ours, ceiling = (run.results.get(("get-one", key)) for key in ("ours", "ceiling"))
    if ours and ceiling and ceiling.requests_per_second:
        fraction = ours.requests_per_second / ceiling.requests_per_second
        lines += [
            "",
            f"get-one: ours reaches **{fraction:.2f}** of the ceiling "
            f"({format_rps(ours, c)} of {format_rps(ceiling, c)} rps).",
        ]
    return lines


def tracing_section(run: Run) -> list[str]:
    """Ours with tracing off and on, per scenario, when both were measured."""
    c = run.args.connections
    rows = []
    for name in run.args.scenarios:
        off, on = (run.results.get((name, key)) for key in ("ours", "ours-traced"))
        if off and on and off.requests_per_second:
            rows.append(
                f"| {name} | {format_rps(off, c)} | {format_rps(on, c)} "
                f"| {on.requests_per_second / off.requests_per_second:.2f} "
                f"| {format_latency(off)} | {format_latency(on)} |"
            )
    if not rows:
        return []
    return [
        "Tracing (`TRACING=true`, every span exported over OTLP/HTTP to a local sink):",
        "",
        "| scenario | tracing off rps | tracing on rps | on / off | off p50 / p99 | on p50 / p99 |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def pgbouncer_section(run: Run) -> list[str]:
    """Ours direct and ours through each PgBouncer, per scenario, when measured."""
    c = run.args.connections
    pooled = [key for key in POOLED if any(k == key for _, k in run.results)]
    rows = []
    for name in run.args.scenarios:
        direct = run.results.get((name, "ours"))
        through = [run.results.get((name, key)) for key in pooled]
        if not direct or not direct.requests_per_second or not any(through):
            continue
        cells = [
            f"{format_rps(result, c)} | {ratio(result, direct)}" if result else "- | -"
            for result in through
        ]
        latencies = [format_latency(result) for result in (direct, *through)]
        rows.append(
            f"| {name} | {format_rps(direct, c)} | {' | '.join(cells)} | {' | '.join(latencies)} |"
        )
    if not rows:
        return []
    names = [f"{APPS[key].label} ({run.poolers.get(key, 'PgBouncer')})" for key in pooled]
    heads = [f"{APPS[key].label.removeprefix('ours, ')} rps | / direct" for key in pooled]
    lines = [
        "Through PgBouncer (`DB_POOLER=transaction`, PgBouncer as `deploy/pgbouncer.ini` has it, "
        "on the same machine) against straight to PostgreSQL (asyncpg, its statement cache on), "
        f"one worker each: {'; '.join(names)}. Unprepared: psycopg, nothing prepared; prepared: "
        "`DB_POOLER_PREPARED=true`, asyncpg with its statement cache, which PgBouncer keeps:",
        "",
        f"| scenario | direct rps | {' | '.join(heads)} | direct p50 / p99 | "
        + " | ".join(f"{APPS[key].label.removeprefix('ours, ')} p50 / p99" for key in pooled)
        + " |",
        "|---|---:|" + "---:|---:|" * len(pooled) + "---:|" * (1 + len(pooled)),
        *rows,
    ]
    return lines + prepared_target(run)


def ratio(result: WrkResult | None, base: WrkResult | None) -> str:
    """``result``'s requests per second over ``base``'s, or a dash."""
    if not result or not base or not base.requests_per_second:
        return "-"
    return f"{result.requests_per_second / base.requests_per_second:.2f}"


def prepared_target(run: Run) -> list[str]:
    """Whether the prepared mode reached ``PREPARED_TARGET`` of direct where it is wanted."""
    measured = [
        (name, direct, prepared)
        for name in PREPARED_TARGET_SCENARIOS
        if (direct := run.results.get((name, "ours")))
        and (prepared := run.results.get((name, "ours-pgbouncer-prepared")))
        and direct.requests_per_second
    ]
    if not measured:
        return []
    fractions = [
        (name, prepared.requests_per_second / direct.requests_per_second)
        for name, direct, prepared in measured
    ]
    met = all(fraction >= PREPARED_TARGET for _, fraction in fractions)
    said = ", ".join(f"{name} {fraction:.2f}" for name, fraction in fractions)
    return [
        "",
        f"Prepared through PgBouncer against direct, at least {PREPARED_TARGET:g} wanted: "
        f"{said} ({'met' if met else 'NOT MET'}).",
    ]


def scaling_section(run: Run) -> list[str]:
    """The mixed load through each PgBouncer with 1, 2, 4... workers."""
    if not run.scaling:
        return []
    c = run.args.connections
    pooled = list(dict.fromkeys(key for key, _ in run.scaling))
    counts = sorted({workers for _, workers in run.scaling})
    rows = []
    for workers in counts:
        cells = []
        for key in pooled:
            result = run.scaling.get((key, workers))
            first = run.scaling.get((key, counts[0]))
            cells.append(
                f"{format_rps(result, c)} | {ratio(result, first)}x | {format_latency(result)} "
                f"| {result.errors}"
                if result
                else "- | - | - | -"
            )
        rows.append(f"| {workers} | {' | '.join(cells)} |")
    heads = [APPS[key].label.removeprefix("ours, ") for key in pooled]
    return [
        f"Workers through PgBouncer, mixed load ({MIXED_LOAD}), the workers not pinned, sharing "
        f"the machine's {len(os.sched_getaffinity(0))} CPUs with wrk, PgBouncer and PostgreSQL "
        "(against the fewest: rps over that with the fewest workers):",
        "",
        "| workers | "
        + " | ".join(f"{h} rps | against the fewest | p50 / p99 | errors" for h in heads)
        + " |",
        "|---:|" + "---:|---:|---:|---:|" * len(pooled),
        *rows,
    ]


def against_first_page(run: Run) -> list[str]:
    """What each list scenario costs against ``list-20``: its rps over theirs, inverted."""
    first = run.results.get(("list-20", "ours"))
    compared = [
        (name, result)
        for name in AGAINST_FIRST_PAGE
        if (result := run.results.get((name, "ours"))) and result.requests_per_second
    ]
    if first is None or not compared:
        return []
    lines = [
        "",
        f"Cost against the first page by id (list-20 rps / scenario rps; at most "
        f"{AGAINST_FIRST_PAGE_LIMIT:g} wanted):",
        "",
    ]
    for name, result in compared:
        cost = first.requests_per_second / result.requests_per_second
        verdict = "ok" if cost <= AGAINST_FIRST_PAGE_LIMIT else "TOO SLOW"
        lines.append(f"- {name}: {cost:.2f}x ({verdict})")
    return lines


def errors_section(run: Run) -> list[str]:
    """Every non-2xx response and socket error wrk counted, or a line saying there were none."""
    lines = [
        f"- {name}, {APPS[key].label}: {result.describe_errors()}"
        for (name, key), result in run.results.items()
        if result.errors
    ]
    if run.memory and run.memory.load.errors:
        lines.append(f"- memory check, ours: {run.memory.load.describe_errors()}")
    lines += [
        f"- mixed, {APPS[key].label}, {workers} worker(s): {result.describe_errors()}"
        for (key, workers), result in run.scaling.items()
        if result.errors
    ]
    return (
        ["Errors:", "", *lines]
        if lines
        else ["Errors: none (no non-2xx responses, no socket errors)."]
    )


def memory_section(memory: MemoryCheck) -> list[str]:
    """First, last and largest RSS of the service under mixed load."""
    samples = memory.samples_kib
    return [
        f"Resident memory of ours over {memory.seconds:g} s of mixed load ({MIXED_LOAD}; "
        f"{memory.connections} connections, {memory.load.requests_per_second:,.0f} rps), "
        f"sampled every {MEMORY_SAMPLE_EVERY:g} s:",
        f"before load {format_mib(memory.before_kib)}, first {format_mib(samples[0])}, "
        f"last {format_mib(samples[-1])}, max {format_mib(max(samples))} "
        f"({len(samples)} samples).",
    ]


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def package_versions() -> str:
    """The installed versions of the packages that matter here."""

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return ", ".join(f"{name} {installed(name)}" for name in PACKAGES)


def tool_version(command: Sequence[str]) -> str:
    """The first line a tool prints about its version."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else "?"


def service_revision() -> str:
    """The git commit the service was measured at, marked when the tree had changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "service"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes to service/' if dirty else ''}"


def report(run: Run) -> str:
    """The whole report, in markdown."""
    args = run.args
    command = " ".join(["python -m tests.benchmarks.run", *args.argv])
    bulk = "in bulk with sqlite3" if args.database == "sqlite" else "in bulk with COPY"
    seeding = "through the API" if args.rows <= SEED_THROUGH_API_MAX else bulk
    store = (
        "a fresh SQLite file each"
        if args.database == "sqlite"
        else f"a fresh PostgreSQL database each on {sa.make_url(POSTGRES_SERVER).host} "
        "(the server's processes not pinned)"
    )
    workers = f"{args.workers} uvicorn workers for ours, one" if args.workers > 1 else "one"
    pinning = (
        f"server pinned to CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}"
        if run.pinning
        else "NOT pinned (fewer than 2 CPUs available)"
    )
    lines = [
        "# Benchmark results",
        "",
        f"Measured {run.started:%Y-%m-%d %H:%M} UTC with `{command}`.",
        "",
        f"- Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, "
        f"Linux {platform.release()}; {pinning}.",
        f"- Python {platform.python_version()}; {package_versions()}; "
        f"SQLite {sqlite3.sqlite_version}; {tool_version(['wrk', '-v'])}.",
        f"- Service at {service_revision()}.",
        f"- {args.rows:,} heroes seeded {seeding}; {workers} uvicorn worker per app (uvloop, "
        f"httptools, no access log), {store}.",
    ]
    if args.scenarios:
        lines += [
            f"- Load: `wrk -t1 -c{args.connections} -d{args.duration:g}s --latency` per scenario "
            f"and app, after {args.warmup:g} s of warm-up. ratio: ours rps / FastAPI rps. "
            "Absolute rps swing from run to run on shared machines; compare the ratios.",
        ]
    lines.append("")
    if run.results or run.scaling:
        tracing = tracing_section(run)
        pooled = pgbouncer_section(run)
        scaling = scaling_section(run)
        lines += [
            *results_table(run),
            "",
            *([*pooled, ""] if pooled else []),
            *([*scaling, ""] if scaling else []),
            *([*tracing, ""] if tracing else []),
            *errors_section(run),
        ]
    if run.memory:
        lines += ["", *memory_section(run.memory)]
    return "\n".join(lines) + "\n"


def pick_cpus() -> bool:
    """Whether the server and wrk can each have a CPU of their own."""
    available = os.sched_getaffinity(0)
    return {SERVER_CPU, WRK_CPU} <= available and shutil.which("taskset") is not None


def check_tools(apps: Sequence[str], pooled: bool = False) -> None:
    """Fail early, saying how to fix it, when wrk or the bench extra is missing."""
    if shutil.which("wrk") is None:
        raise BenchmarkError(f"wrk is not installed. Install it with: {INSTALL_WRK}")
    if "fastapi" in apps and not all(
        importlib.util.find_spec(name) for name in ("fastapi", "sqlmodel")
    ):
        raise BenchmarkError(
            "The FastAPI peer needs the bench extra: pip install -e '.[bench]' (or `just bench`)."
        )
    if "ours-traced" in apps and importlib.util.find_spec("opentelemetry") is None:
        raise BenchmarkError("ours-traced needs the otel extra: pip install -e '.[otel]'")
    for key in {
        *(key for key in apps if APPS[key].pooled),
        *(["ours-pgbouncer"] if pooled else []),
    }:
        if reason := pgbouncer.missing(APPS[key].suite):
            raise BenchmarkError(f"{APPS[key].label} needs its PgBouncer: {reason}")


def measure(args: argparse.Namespace) -> Run:
    """Start the apps, load them, return what was measured."""
    started = datetime.now(UTC)
    pinning = pick_cpus()
    if not pinning:
        print("warning: fewer than 2 CPUs (or no taskset): nothing is pinned", file=sys.stderr)
    server_cpu, wrk_cpu = (SERVER_CPU, WRK_CPU) if pinning else (None, None)
    memory = None
    with tempfile.TemporaryDirectory(prefix="hero-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        wrk = Wrk(workdir, args.connections, args.rows, wrk_cpu)
        servers = {}
        environment = {}
        if "ours-traced" in args.only:
            sink = stack.enter_context(otlp_sink())
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
        scaled = [key for key in POOLED if key in args.only] or ["ours-pgbouncer"]
        pooled = {*(key for key in args.only if APPS[key].pooled)}
        pooled |= set(scaled) if args.pgbouncer_workers else set()
        bouncers: dict[str | None, PgBouncer] = {}
        poolers: dict[str, str] = {}
        for key in sorted(pooled):
            suite = APPS[key].suite
            if suite not in bouncers:
                target = sa.make_url(POSTGRES_SERVER)
                progress(f"starting PgBouncer as {pgbouncer.EXAMPLE.relative_to(REPO)} has it")
                bouncers[suite] = stack.enter_context(
                    PgBouncer(
                        (target.host or HOST, target.port or 5432),
                        suite=suite,
                        user=target.username,
                    )
                )
            poolers[key] = "PgBouncer " + ".".join(map(str, pgbouncer.version(suite)))
        for key in args.only:
            progress(f"starting {APPS[key].label} and seeding {args.rows:,} heroes")
            bouncer = bouncers.get(APPS[key].suite) if APPS[key].pooled else None
            servers[key] = stack.enter_context(
                running(APPS[key], workdir, args, server_cpu, environment, bouncer)
            )
        results = measure_scenarios(wrk, servers, args)
        if args.memory_seconds:
            progress(f"memory check: {args.memory_seconds:g} s of mixed load on ours")
            memory = check_memory(servers["ours"], wrk, args.memory_seconds)
        scaling = {}
        for workers in args.pgbouncer_workers:
            for key in scaled:
                app = APPS[key]
                bouncer = bouncers[app.suite]
                progress(f"mixed on {app.label}, {workers} worker(s): starting, seeding")
                with running(app, workdir, args, None, environment, bouncer, workers) as server:
                    result = measure_scenario(wrk, server, SCENARIOS["mixed"], args)
                scaling[key, workers] = result
                progress(
                    f"  {result.requests_per_second:,.0f} rps, p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms"
                    + (f"; {result.describe_errors()}" if result.errors else "")
                )
    return Run(args, started, pinning, results, memory, scaling, poolers)


def measure_scenarios(wrk: Wrk, servers: dict[str, Server], args: argparse.Namespace) -> Results:
    """Each scenario on each app that serves it, in turn; teams made before the first team one."""
    results: Results = {}
    with_teams: set[str] = set()
    for name in args.scenarios:
        for key, server in servers.items():
            if server.app.role not in SCENARIOS[name].apps:
                continue
            if name in TEAM_SCENARIOS and key not in with_teams:
                progress(f"{server.app.label}: {TEAMS} teams, every other hero in one")
                seed_teams(server, args.rows)
                with_teams.add(key)
            progress(
                f"{name} on {server.app.label}: {args.warmup:g} s warm-up, then {args.duration:g} s"
            )
            result = measure_scenario(wrk, server, SCENARIOS[name], args)
            results[name, key] = result
            progress(
                f"  {result.requests_per_second:,.0f} rps, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms"
                + (f"; {result.describe_errors()}" if result.errors else "")
            )
    return results


def measure_scenario(
    wrk: Wrk, server: Server, scenario: Scenario, args: argparse.Namespace
) -> WrkResult:
    """Warm up, then measure; a peer that hangs is restarted and measured with fewer clients.

    The FastAPI tutorial app deadlocks under 64 connections on create (its sync session
    dependency waits for a pooled connection on a worker thread, while the threads that would
    give connections back wait for a worker thread), and answers nothing for the run. Its
    figure is then taken at half the connections, and half again, where it survives: its best,
    which favours the peer; the table says at how many. The service gets no second chance.
    """
    connections, lost = args.connections, 0
    while True:
        warmup = wrk.run(server, scenario, args.warmup, connections)
        result = replace(
            wrk.run(server, scenario, args.duration, connections),
            hung_in_warmup=warmup.hung,
            runs_lost_to_hangs=lost,
        )
        if server.app.role == "ours" or not result.hung or lost == PEER_RETRIES:
            return result
        lost += 1
        connections = max(1, connections // 2)
        progress(f"  {server.app.label} hung: measuring again with {connections} connections")


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that accepts every export and keeps nothing."""
    server = http.server.ThreadingHTTPServer((HOST, 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def progress(message: str) -> None:
    """Say what the run is doing, on stderr."""
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.run",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (10)")
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of warm-up before each (3)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--scenarios",
        nargs="*",
        choices=list(SCENARIOS),
        default=list(SCENARIOS),
        help="scenarios to run (all); none with --memory-seconds runs only the memory check",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(APPS),
        default=list(PEERS),
        help="apps to run (ours fastapi ceiling, and ours-pgbouncer ours-pgbouncer-prepared "
        "with --database postgresql); ours-traced is ours with TRACING=true",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=SEED_THROUGH_API_MAX,
        help=f"heroes to seed ({SEED_THROUGH_API_MAX}); more than that are inserted with sqlite3",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help=f"where each app keeps its heroes (sqlite); postgresql: {POSTGRES_SERVER}",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers for ours (1; the peers get 1)"
    )
    parser.add_argument(
        "--pgbouncer-workers",
        nargs="*",
        type=int,
        default=None,
        metavar="N",
        help="with --database postgresql: the mixed load through each PgBouncer selected "
        "(ours-pgbouncer by default) on N workers (1 2 4; none to skip)",
    )
    parser.add_argument(
        "--memory-seconds",
        type=float,
        default=0,
        metavar="N",
        help="also run N seconds of mixed load on ours and report its resident memory",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="write results/latest.md only, leaving the committed report alone",
    )
    parser.add_argument(
        "--save-as",
        metavar="NAME",
        help="keep the report as tests/benchmarks/NAME (a partial run: RESULTS-teams-http.md) "
        "instead of the full run's RESULTS*.md",
    )
    args = parser.parse_args(argv)
    only_given = any(arg == "--only" or arg.startswith("--only=") for arg in argv or sys.argv)
    if args.database == "postgresql" and not only_given:
        args.only = [*args.only, *POOLED]
    if args.pgbouncer_workers is None:
        args.pgbouncer_workers = [1, 2, 4] if args.database == "postgresql" else []
    pooled = args.pgbouncer_workers or any(APPS[key].pooled for key in args.only)
    if args.database != "postgresql" and pooled:
        parser.error("PgBouncer stands in front of PostgreSQL: add --database postgresql")
    if args.save_as and (Path(args.save_as).name != args.save_as or args.no_save):
        parser.error("--save-as takes a file name, kept in tests/benchmarks/ (not with --no-save)")
    if args.rows < 1 or args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rows and --connections must be at least 1, --duration positive")
    if args.memory_seconds and "ours" not in args.only:
        parser.error("--memory-seconds measures ours: keep it in --only")
    if not args.scenarios and not args.memory_seconds and not args.pgbouncer_workers:
        parser.error("nothing to run: give --scenarios, --memory-seconds or --pgbouncer-workers")
    args.only = [key for key in APPS if key in args.only]
    args.scenarios = [name for name in SCENARIOS if name in args.scenarios]
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if the service answered every request without error."""
    args = parse_args(argv)
    try:
        check_tools(args.only, pooled=bool(args.pgbouncer_workers))
        run = measure(args)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    text = report(run)
    print(text)
    LATEST.parent.mkdir(exist_ok=True)
    LATEST.write_text(text)
    written = [LATEST]
    if not args.no_save:
        written.append(
            HERE / args.save_as if args.save_as else committed_report(args.rows, args.database)
        )
        written[-1].write_text(text)
    progress(f"written to {' and '.join(str(path.relative_to(REPO)) for path in written)}")
    ours_errors = [
        f"{name}: {result.describe_errors()}"
        for (name, key), result in run.results.items()
        if APPS[key].role == "ours" and result.errors
    ]
    if run.memory and run.memory.load.errors:
        ours_errors.append(f"memory check: {run.memory.load.describe_errors()}")
    ours_errors += [
        f"mixed, {APPS[key].label}, {workers} worker(s): {result.describe_errors()}"
        for (key, workers), result in run.scaling.items()
        if result.errors
    ]
    if ours_errors:
        print("FAILED: the service answered with errors under load:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in ours_errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
