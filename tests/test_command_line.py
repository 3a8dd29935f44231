"""``python -m service``: its help is plain text; it binds HOST and PORT unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.live import free_port


@pytest.mark.parametrize(
    "argv", [["--help"], ["serve", "--help"], ["migrate", "--help"], ["backup", "--help"]]
)
def test_help_is_plain_text(argv: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "service", *argv], capture_output=True, text=True, check=True
    ).stdout

    assert shown.startswith("usage: python -m service")
    assert "`" not in shown


@contextmanager
def started(tmp_path: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m service ARGS`` with ``env`` added, started; SIGTERM after the block."""
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while b"startup complete" not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def answers(url: str) -> bool:
    """Whether a server answers ``GET url`` with 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.live
def test_serve_binds_host_and_port_from_the_environment(tmp_path: Path) -> None:
    port = free_port()

    with started(tmp_path, HOST="127.0.0.2", PORT=str(port)):
        on_host = answers(f"http://127.0.0.2:{port}/health/live")
        elsewhere = answers(f"http://127.0.0.1:{port}/health/live")

    assert (on_host, elsewhere) == (True, False)


@pytest.mark.live
def test_flags_win_over_host_and_port_in_the_environment(tmp_path: Path) -> None:
    port, flag_port = free_port(), free_port()

    with started(
        tmp_path, "--host", "127.0.0.1", "--port", str(flag_port), HOST="127.0.0.2", PORT=str(port)
    ):
        on_flags = answers(f"http://127.0.0.1:{flag_port}/health/live")
        on_environment = answers(f"http://127.0.0.2:{port}/health/live")

    assert (on_flags, on_environment) == (True, False)


@pytest.mark.live
def test_empty_variables_mean_their_defaults(tmp_path: Path) -> None:
    # As compose files and Kubernetes manifests write an unset value.
    port = free_port()
    empty = dict.fromkeys(("ALLOW_ANONYMOUS_WRITES", "METRICS", "DB_POOL_SIZE", "HOST"), "")

    with started(tmp_path, PORT=str(port), **empty):
        served = answers(f"http://127.0.0.1:{port}/health/live")

    assert served


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("ALLOW_ANONYMOUS_WRITES", "maybe", "expected one of true, false, 1, 0 (in any case)"),
        ("DB_POOLER", "session", "expected one of none, transaction"),
        ("PORT", "http", "expected an integer"),
    ],
)
def test_an_invalid_variable_stops_the_service_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    stopped = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert stopped.returncode == 1
    assert stopped.stderr.splitlines() == [f"python -m service: {variable}: {said}, not {value!r}"]
