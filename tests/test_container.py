"""The container image, run with podman as users run it: non-root, SQLite in a volume under a
read-only root, PostgreSQL migrated by the image's own command, SIGTERM under load.

``just image-test`` builds the image on a Debian 13 base made by debootstrap, then runs these
tests (marker ``container``, which ``just test`` leaves out). Each container shares the host's
network, so it serves on 127.0.0.1 at a free port given as ``PORT``, and reaches the machine's
PostgreSQL there too. Writes carry an API key, which a service on 0.0.0.0 should have.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.helpers import IMAGE, built_image, container_limits, podman
from tests.live import free_port, stored_heroes

pytestmark = pytest.mark.container

API_KEY = "container-test-key"
WRITE = {"Authorization": f"Bearer {API_KEY}"}
STOP_GRACE_SECONDS = 10
"""``podman stop``'s wait before SIGKILL in these tests."""


def run_flags() -> list[str]:
    """Flags every ``podman run`` needs here: the host's network, and explicit limits.

    podman's implicit limits cannot be set on these machines; the container gets the open-file
    limit the tests run with.
    """
    files, processes = container_limits()
    return [
        "--network",
        "host",
        "--ulimit",
        f"nofile={files}:{files}",
        "--ulimit",
        f"nproc={processes}:{processes}",
    ]


@dataclass
class Container:
    """A container of the image, serving on 127.0.0.1 at ``port``."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command)

    def logs(self) -> str:
        shown = podman("logs", self.name)
        return shown.stdout + shown.stderr

    def state(self, field: str) -> str:
        return podman("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).stdout.strip()

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Until ``/health/ready`` answers 200; fails with the logs if the container stops."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            if self.state("Running") != "true":
                pytest.fail(f"{self.name} stopped:\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"{self.name} was not ready in {timeout} s:\n{self.logs()}")


@contextmanager
def running(*flags: str, **env: str) -> Iterator[Container]:
    """A container of the image with ``flags`` and ``env``, ready; removed after the block."""
    container = Container(f"hero-test-{uuid.uuid4().hex[:8]}", free_port())
    environment = {"PORT": str(container.port), "API_KEY": API_KEY, **env}
    started = podman(
        "run",
        "--detach",
        "--name",
        container.name,
        *run_flags(),
        *(f"--env={name}={value}" for name, value in environment.items()),
        *flags,
        IMAGE,
    )
    assert started.returncode == 0, started.stderr
    try:
        container.wait_until_ready()
        yield container
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", container.name)


@pytest.fixture(scope="session", autouse=True)
def image() -> str:
    """The image under test; ``just image-test`` builds it first."""
    return built_image()


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume of the test's own, for /data; removed after the test."""
    name = f"hero-test-{uuid.uuid4().hex[:8]}"
    assert podman("volume", "create", name).returncode == 0
    yield name
    podman("volume", "rm", "--force", name)


def new_hero(name: str) -> dict[str, Any]:
    return {"name": name, "secret_name": f"secret-{uuid.uuid4().hex}", "age": 30}


def test_python_is_pid_1_and_runs_as_a_user_who_is_not_root(volume: str) -> None:
    with running(f"--volume={volume}:/data") as container:
        status = container.exec("cat", "/proc/1/status").stdout
        command = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")

    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert command[:3] == ["python", "-m", "service"]
    assert len(uids) == 4  # real, effective, saved, filesystem
    assert "0" not in uids


def test_serves_sqlite_in_its_volume_with_a_read_only_root_filesystem(volume: str) -> None:
    # No writable /tmp either (podman adds one to --read-only by default; Docker does not).
    with running(f"--volume={volume}:/data", "--read-only", "--read-only-tmpfs=false") as container:
        created = httpx.post(f"{container.url}/heroes", json=new_hero("Deadpond"), headers=WRITE)
        read = httpx.get(f"{container.url}/heroes/{created.json()['id']}")
        refused = httpx.post(f"{container.url}/heroes", json=new_hero("Anonymous"))
        healthcheck = podman("healthcheck", "run", container.name)
        logs = container.logs()
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()

    assert created.status_code == 201, created.text
    assert read.json() == created.json()
    assert refused.status_code == 401
    assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr
    assert f"Uvicorn running on http://0.0.0.0:{container.port}" in logs
    assert (Path(mountpoint) / "heroes.db").is_file()


def test_heroes_survive_a_restart_and_a_new_container_on_the_volume(volume: str) -> None:
    with running(f"--volume={volume}:/data") as first:
        hero = httpx.post(f"{first.url}/heroes", json=new_hero("Kept"), headers=WRITE).json()
        restarted = podman("restart", "--time", str(STOP_GRACE_SECONDS), first.name)
        assert restarted.returncode == 0, restarted.stderr
        first.wait_until_ready()
        after_restart = httpx.get(f"{first.url}/heroes/{hero['id']}").json()
    with running(f"--volume={volume}:/data") as second:
        in_a_new_container = httpx.get(f"{second.url}/heroes/{hero['id']}").json()

    assert after_restart == hero
    assert in_a_new_container == hero


def test_serves_postgresql_migrated_by_its_own_command(empty_postgres_url: str) -> None:
    database = f"--env=DATABASE_URL={empty_postgres_url}"
    migrated = podman(
        "run", "--rm", *run_flags(), database, f"--env=API_KEY={API_KEY}", IMAGE, "migrate"
    )
    with running(database) as container:
        created = httpx.post(f"{container.url}/heroes", json=new_hero("Postgres"), headers=WRITE)
        listed = httpx.get(f"{container.url}/heroes").json()

    assert migrated.returncode == 0, migrated.stderr
    assert "at the latest schema" in migrated.stdout
    assert created.status_code == 201, created.text
    assert listed == [created.json()]


@dataclass
class Load:
    """What clients saw while the container was stopped under them."""

    stop_began: float = float("inf")
    answered: list[tuple[float, float, int]] = field(default_factory=list)
    """(sent, answered, status) of every request that got an answer."""
    failed: list[tuple[float, str]] = field(default_factory=list)
    """(sent, why) of every request that got none."""
    acknowledged: dict[int, dict[str, Any]] = field(default_factory=dict)


async def load_until_refused(url: str, load: Load, clients: int) -> None:
    """``clients`` creating and listing heroes, each until refused after the stop began."""

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for i in range(10**6):
            sent = time.monotonic()
            try:
                if i % 2 == 0:
                    body = new_hero(f"Load {n} {i}")
                    async with http.post("/heroes", json=body, headers=WRITE) as response:
                        if response.status == 201:
                            hero = await response.json()
                            load.acknowledged[hero["id"]] = hero
                else:
                    async with http.get("/heroes?limit=5") as response:
                        await response.read()
            except aiohttp.ClientConnectorError as exc:
                refused = exc.os_error.errno == errno.ECONNREFUSED
                load.failed.append((sent, "refused" if refused else repr(exc)))
            except (aiohttp.ClientError, TimeoutError) as exc:
                load.failed.append((sent, repr(exc)))
            else:
                load.answered.append((sent, time.monotonic(), response.status))
                continue
            if time.monotonic() > load.stop_began:
                return

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, timeout=timeout) as http:
        await asyncio.gather(*(client(http, n) for n in range(clients)))


def test_podman_stop_under_load_answers_every_request_and_exits_0_in_time(volume: str) -> None:
    load = Load()
    with running(f"--volume={volume}:/data") as container:
        stopped: list[subprocess.CompletedProcess[str]] = []

        def stop_after_a_moment() -> None:
            time.sleep(1.5)
            load.stop_began = time.monotonic()
            stopped.append(podman("stop", "--time", str(STOP_GRACE_SECONDS), container.name))

        stopper = threading.Thread(target=stop_after_a_moment)
        stopper.start()
        asyncio.run(load_until_refused(container.url, load, clients=8))
        stopper.join()
        stop_seconds = time.monotonic() - load.stop_began
        exit_code = container.state("ExitCode")
        assert podman("start", container.name).returncode == 0
        container.wait_until_ready()
        stored = stored_heroes(container.url)

    in_flight = [a for a in load.answered if a[0] < load.stop_began < a[1]]
    print(
        f"podman stop: {stop_seconds:.1f} s, exit code {exit_code}; {len(load.answered)} answered "
        f"({len(in_flight)} in flight at the stop), failed {[why for _, why in load.failed]}, "
        f"{len(load.acknowledged)} heroes acknowledged"
    )
    assert stopped[0].returncode == 0, stopped[0].stderr
    assert exit_code == "0"
    assert stop_seconds < STOP_GRACE_SECONDS
    assert len(load.answered) > 20
    assert all(status < 500 for _, _, status in load.answered)
    # Requests sent before the stop were all answered; after it, connections are refused.
    assert [why for sent, why in load.failed if sent < load.stop_began or why != "refused"] == []
    assert stored == load.acknowledged
