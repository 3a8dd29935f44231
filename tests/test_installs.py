"""Installs: the base package serves alone, and a feature without its extra names the extra.

The packages of the extras are made unimportable in the server's process (``sys.modules[name] =
None``, as Python does for a package that is not there). CI also installs the base package
alone in a fresh virtual environment and serves a request with it (.ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live import free_port

pytestmark = pytest.mark.live

EXTRAS = {"metrics": "prometheus_client", "redis": "redis", "postgres": "psycopg"}


def serve_without(modules: list[str], port: int, **env: str) -> subprocess.Popen[str]:
    """``python -m service`` with ``modules`` missing."""
    hide = "".join(f"sys.modules[{name!r}] = None; " for name in modules)
    code = (
        f"import runpy, sys; {hide}sys.argv = ['service', '--port', '{port}']; "
        "runpy.run_module('service', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "ACCESS_LOG": "false", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_without_any_extra_the_service_serves(tmp_path: Path) -> None:
    port = free_port()
    server = serve_without(list(EXTRAS.values()), port, DATABASE_URL=f"sqlite:///{tmp_path}/h.db")
    try:
        for _ in range(300):
            assert server.poll() is None, server.communicate()[1]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/heroes", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        server.terminate()
        server.communicate(timeout=30)

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        ("metrics", {"METRICS": "true"}),
        ("redis", {"REDIS_URL": "redis://127.0.0.1:6379/0", "RATE_LIMIT_PER_MINUTE": "10"}),
        ("postgres", {"DATABASE_URL": "postgresql://u@127.0.0.1:1/h", "DB_POOLER": "transaction"}),
    ],
)
def test_a_feature_without_its_extra_stops_startup_naming_the_extra(
    tmp_path: Path, extra: str, env: dict[str, str]
) -> None:
    server = serve_without(
        [EXTRAS[extra]], free_port(), **{"DATABASE_URL": f"sqlite:///{tmp_path}/h.db", **env}
    )
    _, err = server.communicate(timeout=60)

    assert server.returncode != 0
    assert f"pip install 'hero-service[{extra}]'" in err
