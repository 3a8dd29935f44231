"""The real server in a subprocess, and a load of many concurrent clients to drive it.

Used by tests/test_live_server.py (short runs) and by ``just load`` (full runs)::

    python -m tests.live --clients 256 --seconds 30 --workers 2 --database-url sqlite:///load.db
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.pgbouncer import pooler_environment

REQUEST_TIMEOUT = 30.0
"""A request that takes longer than this counts as a timeout, a failure of the run."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``python -m service`` running in a subprocess on a free local port."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 1,
        log: Path | None = None,
        open_files: tuple[int, int] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        **env: str,
    ) -> None:
        """Start the server; with ``log``, its stderr (access log included) goes to that file.

        ``open_files``: the soft and hard limits of open files it starts with (``ulimit -n``);
        ``args``: more command-line arguments (``--host``...);
        ``port``: where it listens (default: a free port), to start it again where it was.
        """
        self.port = port or free_port()
        scheme = "https" if env.get("TLS_CERT_FILE") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.workers = workers
        # Read to know when every worker has started, so never a pipe that could fill up.
        self.own_log = log is None
        self.log = log or Path(tempfile.mkstemp(prefix="hero-server-", suffix=".log")[1])
        command = [sys.executable, "-m", "service", "--port", str(self.port), *args]

        def limit_open_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

        with self.log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [*command, "--workers", str(workers)],
                env={
                    **os.environ,
                    "DATABASE_URL": database_url,
                    # Through the tests' PgBouncer; otherwise the environment's (`just load`).
                    **pooler_environment(database_url),
                    "ACCESS_LOG": "false",
                    **env,
                },
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=limit_open_files if open_files else None,  # noqa: PLW1509
            )
        self.wait_until_ready()

    def worker_pids(self) -> list[int]:
        """The worker processes of a server started with several workers."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        return [
            pid
            for pid in pids
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        ]

    def wait_until_ready(self, timeout: float = 60.0, started: int | None = None) -> None:
        """Block until every worker has started and ``/health/ready`` answers 200.

        ``started``: how many "startup complete" lines the log must hold (default: one per
        worker). Fails with the server's output if it dies.
        """
        started = self.workers if started is None else started
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process.wait()
                output = self.log.read_text(errors="replace")
                raise RuntimeError(f"server exited with {self.process.returncode}: {output}")
            try:
                if (
                    self.log.read_text(errors="replace").count("Application startup complete")
                    >= started
                    and httpx.get(f"{self.url}/health/ready", timeout=1, verify=False).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready in time")

    def kill(self) -> None:
        """SIGKILL the server and all its workers: a crash, no shutdown code runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.own_log:
            self.log.unlink(missing_ok=True)

    def stop(self) -> None:
        """Shut the server down gracefully (SIGTERM), or kill it if it does not stop."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.own_log:
            self.log.unlink(missing_ok=True)


@contextmanager
def running_server(
    database_url: str,
    *,
    workers: int = 1,
    log: Path | None = None,
    open_files: tuple[int, int] | None = None,
    args: tuple[str, ...] = (),
    **env: str,
) -> Iterator[Server]:
    """A server for the duration of the ``with`` block."""
    server = Server(
        database_url, workers=workers, log=log, open_files=open_files, args=args, port=None, **env
    )
    try:
        yield server
    finally:
        server.stop()


@dataclass
class LoadReport:
    """What the clients saw, and what they were told was stored."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    connection_errors: int = 0
    errors: list[str] = field(default_factory=list)
    """What went wrong, for the failure message."""
    expected: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Every hero acknowledged as created and not acknowledged as deleted, as last acknowledged."""

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"requests={self.requests} statuses={dict(sorted(self.statuses.items()))} "
            f"5xx={self.server_errors} timeouts={self.timeouts} "
            f"connection_errors={self.connection_errors} heroes_expected={len(self.expected)}"
            + (f" first errors: {self.errors[:5]}" if self.errors else "")
        )


async def _client(
    http: aiohttp.ClientSession,
    report: LoadReport,
    deadline: float,
    seed: int,
    stop: threading.Event | None,
) -> None:
    rng = random.Random(seed)
    mine: list[int] = []
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        action = rng.choice(["create", "create", "read", "list", "patch", "delete"])
        try:
            status = await _act(http, report, rng, mine, action)
        except TimeoutError as exc:
            report.timeouts += 1
            report.errors.append(f"{action}: {exc!r}")
        except aiohttp.ClientError as exc:
            report.connection_errors += 1
            report.errors.append(f"{action}: {exc!r}")
        else:
            report.requests += 1
            report.statuses[status] = report.statuses.get(status, 0) + 1


async def _act(
    http: aiohttp.ClientSession,
    report: LoadReport,
    rng: random.Random,
    mine: list[int],
    action: str,
) -> int:
    if action == "create" or not mine:
        body = {"name": f"Load {rng.randrange(10**9)}", "secret_name": "load", "age": 7}
        async with http.post("/heroes", json=body) as response:
            if response.status == 201:
                hero = await response.json()
                mine.append(hero["id"])
                report.expected[hero["id"]] = hero
            return response.status
    if action == "read":
        async with http.get(f"/heroes/{rng.choice(mine)}") as response:
            await response.read()
            return response.status
    if action == "list":
        params = {"limit": 20, "offset": rng.randrange(100)}
        async with http.get("/heroes", params=params) as response:
            await response.read()
            return response.status
    if action == "patch":
        hero_id = rng.choice(mine)
        async with http.patch(f"/heroes/{hero_id}", json={"age": rng.randrange(99)}) as response:
            if response.status == 200:
                report.expected[hero_id] = await response.json()
            return response.status
    hero_id = mine.pop(rng.randrange(len(mine)))
    async with http.delete(f"/heroes/{hero_id}") as response:
        await response.read()
        if response.status == 200:
            del report.expected[hero_id]
        return response.status


async def run_load(
    base_url: str, *, clients: int, seconds: float, stop: threading.Event | None = None
) -> LoadReport:
    """Drive the server with ``clients`` concurrent clients mixing every operation, for
    ``seconds`` or until ``stop`` is set."""
    report = LoadReport()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as http:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(http, report, deadline, seed, stop) for seed in range(clients))
        )
    return report


@dataclass
class SlowClientsReport:
    """What slow clients and a health check beside them saw."""

    opened: int = 0
    """Slow connections the server accepted (others were refused or reset at once)."""
    not_opened: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    """How the server ended each slow connection: the status it answered, or "closed"."""
    still_open: int = 0
    """Slow connections the server had not closed when the run ended."""
    closed_after: list[float] = field(default_factory=list)
    """Seconds from each slow connection's opening to its closing by the server."""
    health: list[tuple[str, float]] = field(default_factory=list)
    """Each health check: its status (or the error), and how long it took, in seconds."""

    def summary(self) -> str:
        """One line for humans."""
        latencies = sorted(seconds for _, seconds in self.health)
        statuses: dict[str, int] = {}
        for status, _ in self.health:
            statuses[status] = statuses.get(status, 0) + 1
        closed = sorted(self.closed_after)
        return (
            f"slow connections: opened={self.opened} not_opened={self.not_opened} "
            f"ended_by_server={dict(sorted(self.answers.items()))} still_open={self.still_open} "
            f"closed_after_s=[{closed[0] if closed else 0:.1f}..{closed[-1] if closed else 0:.1f}] "
            f"health: {dict(sorted(statuses.items()))} "
            f"max_s={latencies[-1] if latencies else 0:.3f}"
        )


async def _slow_client(
    port: int, report: SlowClientsReport, deadline: float, line_every: float
) -> None:
    """A client that sends a request head one header line at a time and never finishes it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /heroes HTTP/1.1\r\nHost: heroes.example\r\n")
        await writer.drain()
    except OSError:
        report.not_opened += 1
        return
    opened = time.monotonic()
    report.opened += 1
    received = b""
    try:
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=line_every)
            except TimeoutError:
                writer.write(b"X-Slow: 1\r\n")
                continue
            if data:
                received += data
                continue
            status = received.split(b" ", 2)[1].decode() if received else "closed"
            report.answers[status] = report.answers.get(status, 0) + 1
            report.closed_after.append(time.monotonic() - opened)
            return
        report.still_open += 1
    except OSError:
        report.answers["reset"] = report.answers.get("reset", 0) + 1
        report.closed_after.append(time.monotonic() - opened)
    finally:
        writer.close()


def _health_checks(url: str, report: SlowClientsReport, until: float, every: float) -> None:
    """``GET /health/live`` on a new connection every ``every`` seconds; each waits 1 s at most.

    Run in a thread of its own, so that its timings are not the slow clients' event loop's.
    """
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status = str(httpx.get(f"{url}/health/live", timeout=1.0).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        report.health.append((status, time.monotonic() - started))
        time.sleep(max(0.0, every - (time.monotonic() - started)))


async def run_slow_clients(
    url: str, *, connections: int, seconds: float, line_every: float = 1.0
) -> SlowClientsReport:
    """Open ``connections`` slow clients at once, and check health beside them for ``seconds``."""
    report = SlowClientsReport()
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + seconds
    checks = threading.Thread(target=_health_checks, args=(url, report, deadline, 0.25))
    checks.start()
    try:
        await asyncio.gather(
            *(_slow_client(port, report, deadline, line_every) for _ in range(connections))
        )
    finally:
        checks.join()
    return report


def stored_heroes(base_url: str) -> dict[int, dict[str, Any]]:
    """Every hero the server holds, read page by page through the API."""
    heroes: dict[int, dict[str, Any]] = {}
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT) as http:
        while page := http.get("/heroes", params={"offset": len(heroes), "limit": 100}).json():
            heroes.update((hero["id"], hero) for hero in page)
    return heroes


def main() -> None:
    """Run a load against a fresh server and check that nothing was lost or failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with running_server(args.database_url, workers=args.workers) as server:
        before = stored_heroes(server.url)
        report = asyncio.run(run_load(server.url, clients=args.clients, seconds=args.seconds))
        stored = stored_heroes(server.url)
        started = time.perf_counter()
        httpx.get(f"{server.url}/health/ready", timeout=5).raise_for_status()
        after_ms = (time.perf_counter() - started) * 1000
    new = {hero_id: hero for hero_id, hero in stored.items() if hero_id not in before}
    lost = len(report.expected.keys() - new.keys())
    unexpected = len(new.keys() - report.expected.keys())
    wrong = sum(1 for i, hero in report.expected.items() if new.get(i, hero) != hero)
    print(
        f"clients={args.clients} workers={args.workers} seconds={args.seconds} "
        f"database={args.database_url.split(':')[0]} {report.summary()} "
        f"lost={lost} unexpected={unexpected} wrong={wrong} ready_after_ms={after_ms:.1f}"
    )
    failures = report.server_errors + report.timeouts + report.connection_errors
    sys.exit(1 if failures or lost or unexpected or wrong else 0)


if __name__ == "__main__":
    main()
