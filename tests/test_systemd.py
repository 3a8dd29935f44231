"""``deploy/hero-service.service``: a unit systemd accepts, hardened, whose commands serve and stop.

systemd itself does not run in the test's container, so the unit is checked by
``systemd-analyze verify`` and ``security``, and its ``ExecStartPre`` and ``ExecStart`` are run
as systemd would run them (its ``Environment``, its ``WorkingDirectory``, no other variables),
then sent its ``KillSignal``. Only the install path and the state directory are changed, to the
test's Python and a temporary directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.__main__ import parser
from tests.conftest import IN_CI
from tests.helpers import new_hero
from tests.live import free_port

UNIT = Path(__file__).parents[1] / "deploy" / "hero-service.service"
PYTHON = "/opt/hero-service/.venv/bin/python"
STATE = "/var/lib/hero-service"
EXPOSURE_THRESHOLD = 20
"""``systemd-analyze security``'s exposure, in tenths: below 2.0, what it calls "OK"."""


def entries(text: str) -> Iterator[tuple[str, str, str]]:
    """Each ``(section, key, value)`` of a unit file, in order (keys may repeat)."""
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), "continued lines are not read here"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        yield section, key, value


def values(key: str, text: str | None = None) -> list[str]:
    """Every value of ``key`` in the ``[Service]`` section."""
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    return [value for section, name, value in entries(text) if (section, name) == ("Service", key)]


def value(key: str, text: str | None = None) -> str:
    """The one value of ``key`` in the ``[Service]`` section."""
    (found,) = values(key, text)
    return found


def environment(text: str) -> dict[str, str]:
    """The variables the unit's ``Environment`` lines give the service."""
    pairs = [
        item.partition("=") for line in values("Environment", text) for item in shlex.split(line)
    ]
    return {name: setting for name, _, setting in pairs}


def here(text: str, state: Path) -> str:
    """The unit as installed on this machine: this Python, ``state`` as its state directory."""
    assert PYTHON in text
    assert STATE in text
    return text.replace(PYTHON, sys.executable).replace(STATE, str(state))


def test_the_stop_waits_longer_than_the_drain_and_the_requests_in_flight() -> None:
    text = UNIT.read_text(encoding="utf-8")
    serve = parser().parse_args(shlex.split(value("ExecStart"))[3:])
    drain = float(environment(text)["SHUTDOWN_DRAIN_SECONDS"])

    assert serve.command == "serve"
    assert float(value("TimeoutStopSec")) > drain + serve.timeout_graceful_shutdown
    assert value("KillSignal") == "SIGTERM"
    # SIGTERM to the supervisor alone; it passes the signal on once, as its workers expect.
    assert value("KillMode") == "mixed"


@pytest.fixture
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (apt-get install systemd)"
        if IN_CI:
            pytest.fail(f"CI must check deploy/hero-service.service: {reason}")
        pytest.skip(reason)
    return found


@pytest.mark.deploy
def test_systemd_accepts_every_line_of_the_unit(systemd_analyze: str, tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(here(UNIT.read_text(encoding="utf-8"), tmp_path), encoding="utf-8")

    verified = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )

    # verify exits 0 on unknown keys and values it cannot parse: it only says so.
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


@pytest.mark.deploy
def test_the_unit_is_hardened(systemd_analyze: str, tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(here(UNIT.read_text(encoding="utf-8"), tmp_path), encoding="utf-8")

    threshold = f"--threshold={EXPOSURE_THRESHOLD}"
    security = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", threshold, str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert security.returncode == 0, security.stdout[-2000:] + security.stderr


@pytest.mark.live
@pytest.mark.deploy
def test_the_units_commands_migrate_serve_and_stop_on_its_kill_signal(tmp_path: Path) -> None:
    text = here(UNIT.read_text(encoding="utf-8"), tmp_path)
    port = free_port()
    # As systemd starts it: the unit's variables and no others (the secrets file is optional).
    env = {"PATH": os.environ["PATH"], **environment(text), "PORT": str(port)}
    cwd = value("WorkingDirectory", text)
    assert value("EnvironmentFile", text).startswith("-")

    migrated = subprocess.run(
        shlex.split(value("ExecStartPre", text)),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    log = (tmp_path / "journal.log").open("wb")
    server = subprocess.Popen(
        shlex.split(value("ExecStart", text)),
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "journal.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the unit's ExecStart did not become ready"
            time.sleep(0.1)
        created = httpx.post(f"{url}/heroes", json=new_hero("Unit"), timeout=10)
        read = httpx.get(f"{url}/heroes/{created.json()['id']}", timeout=10)

        # KillMode=mixed: KillSignal to the main process only.
        server.send_signal(getattr(signal, value("KillSignal", text)))
        stopped_at = time.monotonic()
        exit_code = server.wait(timeout=float(value("TimeoutStopSec", text)))
        stopped_after = time.monotonic() - stopped_at
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()

    assert created.status_code == 201, created.text
    assert read.json() == created.json()
    assert (tmp_path / "heroes.db").is_file()  # in the state directory, as DATABASE_URL says
    assert exit_code == 0
    print(f"the unit's ExecStart stopped {stopped_after:.1f} s after its KillSignal")
