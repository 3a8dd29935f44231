"""Small helpers the API tests share."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.http.errors import Error
from service.settings import Settings
from tests.pgbouncer import pooler_for

Client = TestClient[Litestar]


def new_hero(name: str = "Deadpond", age: int | None = None, **extra: Any) -> dict[str, Any]:
    """A HeroCreate body with a secret name distinctive enough to be searched for in responses."""
    return {"name": name, "age": age, "secret_name": f"secret-{uuid.uuid4().hex}", **extra}


def create(client: Client, name: str = "Deadpond", age: int | None = None) -> dict[str, Any]:
    """Create a hero through the API and return its public form."""
    response = client.post("/heroes", json=new_hero(name, age))
    assert response.status_code == 201, response.text
    hero: dict[str, Any] = response.json()
    return hero


TIMESTAMPS = ("created_at", "updated_at")


def without_timestamps(hero: dict[str, Any]) -> dict[str, Any]:
    """A hero's fields but for the times, which a test cannot know in advance."""
    return {key: value for key, value in hero.items() if key not in TIMESTAMPS}


def moment(timestamp: str) -> datetime:
    """A timestamp of a response as a datetime, checking it is RFC 3339 in UTC."""
    parsed = datetime.fromisoformat(timestamp)
    assert timestamp.endswith(("Z", "+00:00")), timestamp
    assert parsed.utcoffset() is not None
    return parsed.astimezone(UTC)


def assert_error(response: Any, status_code: int, key: str | None = None) -> Error:
    """Check that ``response`` is an error of the one documented shape, naming ``key`` if given."""
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = msgspec.json.decode(response.content, type=Error, strict=True)
    assert error.status_code == status_code
    assert error.detail
    if key is not None:
        assert error.extra, response.text
        assert [detail.key for detail in error.extra] == [key], response.text
        assert all(detail.message for detail in error.extra)
    return error


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings for an app on ``database_url``: in the pooler mode when it is a PgBouncer's."""
    return Settings(database_url=database_url, db_pooler=pooler_for(database_url), **overrides)


def direct_engine(database_url: str) -> sa.Engine:
    """A plain sync engine on the test's database, to set up or check rows behind the API's back.

    It is not the service's engine (PostgreSQL runs on asyncpg there): psycopg for PostgreSQL,
    preparing nothing, so that it works through PgBouncer too.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return sa.create_engine(url)
    url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url, connect_args={"prepare_threshold": None})


@contextmanager
def held_write_lock(database: Path | str) -> Iterator[None]:
    """Hold the write lock of the SQLite file ``database`` from another connection."""
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        yield
        locker.execute("ROLLBACK")
    finally:
        locker.close()


Answer = tuple[int, dict[bytes, bytes], bytes]


def asgi_request(
    client: Client,
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "GET",
    path: str = "/heroes",
    query: bytes = b"",
    body: bytes = b"",
    http_version: str = "1.1",
) -> Answer:
    """Send one request through the app as a server would, with exactly these header lines.

    The test client's HTTP layer adds a Host and refuses some header values; this does neither.
    The answer: its status, its headers (the last of each name), its body.
    """
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    client.blocking_portal.call(client.app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), answer
