"""Earlier releases from git history, served while today's ``migrate`` runs: the N-1 harness.

For a migration, the release before it is the code as it was just before the migration first
appeared (``migration_history.release_before``). ``release(commit)`` exports that commit's tree
and builds its virtual environment with that commit's ``constraints.txt`` (or, for a commit from
before the file existed, the first one after it), cached under
``~/.cache/hero-service/releases/<commit>/`` (``HERO_RELEASES_CACHE`` moves it). Then
``upgrade_under_load`` serves the release on PostgreSQL holding many heroes, drives it with
concurrent clients while today's ``python -m service migrate --to <revision>`` runs, and reports
what the clients saw: failed requests, the longest wait during the migration, and whether every
write acknowledged is still there, as acknowledged. Last, the release's own API checks run
against it, on the migrated schema: its ``tests/sdk_scenario.py`` (every operation, through the
Python client generated from the document it serves).

Used by tests/test_upgrades.py and ``python -m tests.benchmarks.migration --releases``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import psycopg
import sqlalchemy as sa

from tests.live import free_port
from tests.migration_history import REPO, git

CACHE = Path(
    os.environ.get("HERO_RELEASES_CACHE", Path.home() / ".cache" / "hero-service" / "releases")
)
"""Where each release's tree, venv and generated client are kept, by commit."""
CLIENTS = 8
"""Concurrent clients of the load: enough to keep one worker busy, on two cores."""
REQUEST_TIMEOUT = 30.0
BUILD_TIMEOUT = 1800


class Release(NamedTuple):
    """An earlier release, ready to run: its tree and its venv's Python."""

    commit: str
    tree: Path
    python: Path

    @property
    def name(self) -> str:
        """The short commit, for reports."""
        return self.commit[:7]


def release(commit: str) -> Release:
    """The release at ``commit``, built on first use (minutes) and cached.

    Builders of the same commit in other processes wait for the first (a lock file).
    """
    folder = CACHE / commit
    built = Release(commit, folder / "tree", folder / "venv" / "bin" / "python")
    ready = folder / "ready"
    if ready.exists():
        return built
    CACHE.mkdir(parents=True, exist_ok=True)
    with _exclusive(CACHE / f"{commit}.lock"):
        if ready.exists():
            return built
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        built.tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit],
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(built.tree, filter="data")
        constraints = folder / "constraints.txt"
        constraints.write_text(constraints_of(commit))
        _run([sys.executable, "-m", "venv", str(folder / "venv")])
        _run([str(built.python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        install = ["install", "-q", "-c", str(constraints), "-e", f"{built.tree}[dev]"]
        _run([str(built.python), "-m", "pip", *install])
        ready.write_text(f"built {datetime.now(UTC).isoformat()} from {commit}\n")
    return built


def constraints_of(commit: str) -> str:
    """``constraints.txt`` at ``commit``, or the first one committed after it."""
    try:
        return git("show", f"{commit}:constraints.txt")
    except RuntimeError:
        later = git("log", "--reverse", "--format=%H", f"{commit}..HEAD", "--", "constraints.txt")
        if not later.split():
            raise RuntimeError(f"no constraints.txt at or after {commit}") from None
        return git("show", f"{later.split()[0]}:constraints.txt")


def _run(command: list[str]) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stdout}{result.stderr}")


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


class ServedRelease:
    """``python -m service`` of a release, in its tree, on a free port."""

    def __init__(
        self, built: Release, database_url: str, log: Path, settings: dict[str, str] | None = None
    ) -> None:
        self.release = built
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = {
            name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ
        }
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(built.python), "-m", "service", "--port", str(self.port)],
                cwd=built.tree,
                env={
                    **environment,
                    "DATABASE_URL": database_url,
                    "ACCESS_LOG": "false",
                    **(settings or {}),
                },
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self._wait_until_serving()

    def _wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.release.name} exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/heroes?limit=1", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.release.name} did not serve in time: {self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@contextmanager
def served(built: Release, database_url: str, **settings: str) -> Iterator[ServedRelease]:
    """The release serving ``database_url`` for the ``with`` block (``settings``: variables)."""
    log = Path(tempfile.mkstemp(prefix=f"release-{built.name}-", suffix=".log")[1])
    server = ServedRelease(built, database_url, log, settings)
    try:
        yield server
    finally:
        server.stop()
        log.unlink(missing_ok=True)


CHECKS_KEY = "release-checks-key"
"""The API key of the server a release's keyed checks run against."""


def api_checks(
    built: Release, database_url: str, base_url: str
) -> subprocess.CompletedProcess[str]:
    """The release's own API checks against ``base_url``: its ``tests/sdk_scenario.py``.

    The client they use is generated by the release's openapi-python-client from the document
    the server serves (once per release, then cached). A release whose checks take an API key
    (from issue 30 on) runs them against a server of its own with ``API_KEY`` set, on the same
    database: the one under load serves without keys.
    """
    scenario = (built.tree / "tests" / "sdk_scenario.py").read_text(encoding="utf-8")
    if "api_key" in scenario:
        with served(built, database_url, API_KEY=CHECKS_KEY) as keyed:
            return _run_checks(built, keyed.url, CHECKS_KEY)
    return _run_checks(built, base_url)


def _run_checks(built: Release, base_url: str, *key: str) -> subprocess.CompletedProcess[str]:
    client = CACHE / built.commit / "client"
    if not (client / "hero_service_client").is_dir():
        client.mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=client))
        document = scratch / "openapi.json"
        document.write_text(httpx.get(f"{base_url}/schema/openapi.json", timeout=30).text)
        generate = [str(built.python), "-m", "openapi_python_client", "generate", "--meta", "none"]
        generated = subprocess.run(
            [*generate, "--path", str(document), "--output-path", str(scratch / "package")],
            env={**os.environ, "PATH": f"{built.python.parent}{os.pathsep}{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if generated.returncode != 0:
            return generated
        with contextlib.suppress(OSError):  # another process generated it meanwhile
            (scratch / "package").rename(client / "hero_service_client")
    return subprocess.run(
        [str(built.python), "-m", "tests.sdk_scenario", base_url, *key],
        cwd=built.tree,
        env={"PATH": os.environ["PATH"], "HOME": str(Path.home()), "PYTHONPATH": str(client)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def fill(database_url: str, heroes: int) -> None:
    """Insert ``heroes`` heroes (ids 1 to ``heroes``) in one statement, then ANALYZE."""
    plain = sa.make_url(database_url).render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO heroes (name, age, secret_name)"
            " SELECT 'Hero ' || n, n %% 100, 'secret of hero ' || n"
            " FROM generate_series(1, %s) AS n",
            (heroes,),
        )
        connection.execute("ANALYZE heroes")


@dataclass
class Load:
    """Clients mixing every operation against a server, in a thread, until stopped.

    Reads go to the heroes stored before (ids 1 to ``known``), writes to the clients' own
    heroes; half the creates carry an ``Idempotency-Key`` (a release that predates the header
    ignores it). Each request's start and duration are kept, and every write acknowledged.
    """

    base_url: str
    known: int
    clients: int = CLIENTS
    done: list[tuple[float, float]] = field(default_factory=list)
    """(start, seconds) of every request answered as expected."""
    failures: list[str] = field(default_factory=list)
    acknowledged: dict[int, dict[str, Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the clients; return once they have made some requests."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()
        self.wait_for(50)

    def wait_for(self, answered: int, timeout: float = 120.0) -> None:
        """Return once ``answered`` more requests have been answered (or failed)."""
        target = len(self.done) + len(self.failures) + answered
        deadline = time.monotonic() + timeout
        while len(self.done) + len(self.failures) < target and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the clients and wait for them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT + 10)

    def worst_wait(self, start: float, end: float) -> float:
        """The longest request among those in flight at some moment between start and end."""
        overlapping = [
            seconds for began, seconds in self.done if began < end and began + seconds > start
        ]
        return max(overlapping, default=0.0)

    def lost(self) -> list[str]:
        """Acknowledged writes the server does not hold as acknowledged."""
        wrong = []
        with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT) as http:
            for hero_id, hero in self.acknowledged.items():
                stored = http.get(f"/heroes/{hero_id}")
                if stored.status_code != 200 or stored.json() != hero:
                    wrong.append(f"hero {hero_id}: {stored.status_code} {stored.text[:200]}")
        return wrong

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(self.base_url, connector=connector, timeout=timeout) as h:
            await asyncio.gather(*(self._client(h, seed) for seed in range(self.clients)))

    async def _client(self, http: aiohttp.ClientSession, seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        while not self._stop.is_set():
            action = rng.choice(["create", "keyed", "read", "read", "list", "patch", "delete"])
            if action in ("patch", "delete") and not mine:
                action = "create"
            began = time.monotonic()
            try:
                expected, status, text = await self._act(http, rng, mine, action)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.failures.append(f"{action}: {exc!r}")
                continue
            if status != expected:
                self.failures.append(f"{action}: {status} {text[:200]}")
                continue
            self.done.append((began, time.monotonic() - began))

    async def _act(
        self, http: aiohttp.ClientSession, rng: random.Random, mine: list[int], action: str
    ) -> tuple[int, int, str]:
        if action in ("create", "keyed"):
            body = {"name": f"Load {rng.randrange(10**9)}", "secret_name": "load", "age": 7}
            headers = {"Idempotency-Key": str(uuid.uuid4())} if action == "keyed" else {}
            async with http.post("/heroes", json=body, headers=headers) as response:
                text = await response.text()
                if response.status == 201:
                    hero = json.loads(text)
                    mine.append(hero["id"])
                    self.acknowledged[hero["id"]] = hero
                return 201, response.status, text
        if action == "read":
            async with http.get(f"/heroes/{rng.randint(1, self.known)}") as response:
                return 200, response.status, await response.text()
        if action == "list":
            params = {"limit": 20, "offset": rng.randrange(100)}
            async with http.get("/heroes", params=params) as response:
                return 200, response.status, await response.text()
        if action == "patch":
            hero_id = rng.choice(mine)
            async with http.patch(f"/heroes/{hero_id}", json={"age": rng.randrange(99)}) as r:
                text = await r.text()
                if r.status == 200:
                    self.acknowledged[hero_id] = json.loads(text)
                return 200, r.status, text
        hero_id = mine.pop(rng.randrange(len(mine)))
        async with http.delete(f"/heroes/{hero_id}") as response:
            text = await response.text()
            if response.status == 200:
                del self.acknowledged[hero_id]
            return 200, response.status, text


class UpgradeReport(NamedTuple):
    """What the release's clients saw while migrate ran, and what its checks said."""

    migrator: str
    """Whose ``migrate`` ran: ``today`` or a release's short commit."""
    release: str
    start: str
    target: str
    heroes: int
    requests: int
    failures: list[str]
    worst_wait: float
    """Seconds: the longest request in flight while migrate ran."""
    migrate_seconds: float
    migrate_output: str
    lost: list[str]
    checks: subprocess.CompletedProcess[str]

    @property
    def ok(self) -> bool:
        """Nothing failed, nothing lost, the checks passed."""
        return not self.failures and not self.lost and self.checks.returncode == 0

    def line(self) -> str:
        """One line for humans."""
        return (
            f"release {self.release} on {self.heroes:,} heroes, migrate {self.start} -> "
            f"{self.target}: {self.migrate_seconds:.1f} s; {self.requests:,} requests, "
            f"{len(self.failures)} failed, worst wait {self.worst_wait * 1000:.0f} ms; "
            f"{len(self.lost)} writes lost; its API checks "
            + ("passed" if self.checks.returncode == 0 else "FAILED")
        )


def migrate(
    database_url: str, target: str, migrator: Release | None = None
) -> subprocess.CompletedProcess[str]:
    """Today's ``python -m service migrate --to target``, or the ``migrator`` release's own
    ``migrate`` (which, in releases before ``--to``, goes to its head)."""
    if migrator is None:
        command = [sys.executable, "-m", "service", "migrate", "--to", target]
    else:
        command = [str(migrator.python), "-m", "service", "migrate"]
    return subprocess.run(
        command,
        cwd=REPO if migrator is None else migrator.tree,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def upgrade_under_load(
    built: Release,
    database_url: str,
    *,
    start: str,
    target: str,
    heroes: int,
    migrator: Release | None = None,
) -> UpgradeReport:
    """Serve ``built`` on a database at ``start`` holding ``heroes`` heroes, under load, while
    today's migrate (or ``migrator``'s, to compare) brings it to ``target``; then run the
    release's API checks on it."""
    prepared = migrate(database_url, start)
    if prepared.returncode != 0:
        raise RuntimeError(f"migrate --to {start}: {prepared.stdout}{prepared.stderr}")
    fill(database_url, heroes)
    with served(built, database_url) as server:
        load = Load(server.url, known=heroes)
        load.start()
        began = time.monotonic()
        migrated = migrate(database_url, target, migrator)
        ended = time.monotonic()
        load.wait_for(50)
        load.stop()
        checks = api_checks(built, database_url, server.url)
        lost = load.lost()
    if migrated.returncode != 0:
        raise RuntimeError(f"migrate --to {target}: {migrated.stdout}{migrated.stderr}")
    return UpgradeReport(
        migrator="today" if migrator is None else migrator.name,
        release=built.name,
        start=start,
        target=target,
        heroes=heroes,
        requests=len(load.done) + len(load.failures),
        failures=load.failures,
        worst_wait=load.worst_wait(began, ended),
        migrate_seconds=ended - began,
        migrate_output=migrated.stdout,
        lost=lost,
        checks=checks,
    )
