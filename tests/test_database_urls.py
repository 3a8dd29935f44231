"""DATABASE_URL: libpq's multi-host form as the drivers take it; a malformed URL in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.database.engines import database_url
from service.settings import SettingsError
from tests.helpers import new_hero
from tests.live import free_port, running_server


@pytest.mark.parametrize(
    ("raw", "hosts", "query"),
    [
        (
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            ("h1:5432", "h2:5433"),
            {"target_session_attrs": "read-write"},
        ),
        ("postgresql://u:p%40ss@h1,10.0.0.2:6000/db", ("h1:5432", "10.0.0.2:6000"), {}),
        ("postgresql://h1,h2", ("h1:5432", "h2:5432"), {}),
        ("postgresql://u@/db?host=h1:5432&host=h2:5432", ("h1:5432", "h2:5432"), {}),
    ],
)
def test_a_multi_host_url_becomes_the_drivers_host_list(
    raw: str, hosts: tuple[str, ...], query: dict[str, str]
) -> None:
    url = database_url(raw)

    assert url.query == {**query, "host": hosts}
    assert url.host is None
    assert url.password == (None if "p%40ss" not in raw else "p@ss")


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:secret@h:abc/db",
        "postgresql://u:secret@h:99999/db",
        "postgresql://u:secret@h1:5432,h2:x/db",
        "postgresql://u:secret@h1:5432,h2:70000/db",
        "postgresql://u:secret@h1,,h2/db",
        "postgresql://u:secret@[::1]:5432,h2/db",
        "mysql://u:secret@h/db",
        "secret",
        "",
    ],
)
def test_a_malformed_url_is_refused_naming_the_variable_not_the_password(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL: ") as refused:
        database_url(raw)

    assert "secret" not in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_malformed_url_stops_the_service_in_one_line(tmp_path: Path) -> None:
    url = "postgresql://u:secret@h1:5432,h2:5432x/db?target_session_attrs=read-write"
    stopped = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert stopped.returncode == 1
    (line,) = stopped.stderr.splitlines()
    assert line.startswith("python -m service: DATABASE_URL: ")
    assert "secret" not in line


@pytest.mark.live
@pytest.mark.parametrize("form", ["libpq", "query"])
@pytest.mark.parametrize("pooler", ["none", "transaction"], ids=["asyncpg", "psycopg"])
def test_a_two_host_url_whose_first_host_is_down_serves_from_the_second(
    tmp_path: Path, postgres_database: str, form: str, pooler: str
) -> None:
    url = sa.make_url(postgres_database)
    down, up = f"127.0.0.1:{free_port()}", f"{url.host}:{url.port or 5432}"
    user = f"{url.username}@" if url.username else ""
    if form == "libpq":
        two_hosts = f"postgresql://{user}{down},{up}/{url.database}"
    else:
        two_hosts = f"postgresql://{user}/{url.database}?host={down}&host={up}"
    two_hosts += ("&" if "?" in two_hosts else "?") + "target_session_attrs=read-write"

    with running_server(two_hosts, DB_POOLER=pooler) as server:
        created = httpx.post(f"{server.url}/heroes", json=new_hero(), timeout=10)
        read = httpx.get(f"{server.url}/heroes/{created.json()['id']}", timeout=10)

    assert created.status_code == 201, created.text
    assert read.json()["name"] == new_hero()["name"]
