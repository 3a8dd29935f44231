"""What the tests share: request bodies, checks of answers, databases held or broken on purpose.

Fixtures and helpers used by more than one test module live here (or in conftest.py), never
imported from another test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from service.http.errors import Error
from service.settings import Settings
from tests.live import free_port
from tests.pgbouncer import pooler_for, prepared_for

Client = TestClient[Litestar]
IMAGE = os.environ.get("HERO_IMAGE", "localhost/hero-service:latest")
"""The image the container tests run, as ``just image-test`` builds it."""
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
"""podman as it runs on machines like CI's: their cgroup layout is one crun refuses."""


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
    """Settings for an app on ``database_url``: in the pooler's mode when it is a PgBouncer's."""
    return Settings(
        database_url=database_url,
        db_pooler=pooler_for(database_url),
        db_pooler_prepared=prepared_for(database_url),
        **overrides,
    )


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


def schema(database_url: str) -> list[str]:
    """The database's schema, line by line: ``pg_dump --schema-only``, or SQLite's definitions."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or ":memory:") as connection:
            rows = connection.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            )
            return [repr(row) for row in rows]
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dumped = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", plain],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # Comments carry the versions of server and pg_dump, SET lines the session's settings, and
    # psql's \restrict a random key. Debian unstable's pg_dump (18, in the 3.14 and 3.15 runs)
    # adds a column's pg_attver, which differs between databases of the same schema.
    return [
        line
        for line in dumped.splitlines()
        if line
        and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
        and not _ATTRIBUTE_VERSION.search(line)
    ]


_ATTRIBUTE_VERSION = re.compile(r" ALTER COLUMN \S+ SET \(pg_attver=\d+\);$")


@contextmanager
def held_write_lock(database: Path | str) -> Iterator[Callable[[], None]]:
    """The write lock of the SQLite file ``database``, held by another connection.

    Until the end of the ``with``, or until the function it gives is called.
    """
    locker = sqlite3.connect(database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            locker.execute("ROLLBACK")
            released = True

    try:
        yield release
    finally:
        release()
        locker.close()


def sqlite_write_lock(settings: Settings) -> AbstractContextManager[Callable[[], None]]:
    """:func:`held_write_lock` on the SQLite file of ``settings``."""
    return held_write_lock(sa.make_url(settings.database_url).database or "")


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


# Served by uvicorn ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: Litestar, *, lifespan: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` served by uvicorn in a thread, and an HTTP client for it."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on" if lifespan else "off", log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join)


# Faults made on purpose ----------------------------------------------------------------------


@contextmanager
def slow_inserts(url: str) -> Iterator[Callable[[], None]]:
    """Every INSERT into heroes runs until released: its trigger waits for an advisory lock."""
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            """CREATE FUNCTION wait_for_release() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$"""
        )
        setup.execute(
            """CREATE TRIGGER slow_insert BEFORE INSERT ON heroes
               FOR EACH ROW EXECUTE FUNCTION wait_for_release()"""
        )
    holder = psycopg.connect(url)
    holder.execute("SELECT pg_advisory_xact_lock(4242)")
    try:
        yield holder.rollback
    finally:
        holder.close()
        with psycopg.connect(url, autocommit=True) as cleanup:
            cleanup.execute("DROP TRIGGER IF EXISTS slow_insert ON heroes")
            cleanup.execute("DROP FUNCTION IF EXISTS wait_for_release")


class TcpProxy:
    """A local port forwarded to the database; ``stop`` drops every connection, like a restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        """Listen (again, on the same port) and forward every connection to the target."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        for sock in [*self._open, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


FAILS_AT_COMMIT = "fails-at-commit"

# A deferred foreign key that a trigger breaks for one name: the INSERT succeeds, the COMMIT fails.
COMMIT_GUARD = {
    "sqlite": [
        """CREATE TABLE commit_guard
            (hero_id INTEGER REFERENCES heroes(id) DEFERRABLE INITIALLY DEFERRED)""",
        f"""CREATE TRIGGER break_commit AFTER INSERT ON heroes WHEN NEW.name = '{FAILS_AT_COMMIT}'
            BEGIN INSERT INTO commit_guard VALUES (-1); END""",
    ],
    "postgresql": [
        """CREATE TABLE commit_guard
            (hero_id BIGINT REFERENCES heroes(id) DEFERRABLE INITIALLY DEFERRED)""",
        f"""CREATE FUNCTION break_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.name = '{FAILS_AT_COMMIT}' THEN INSERT INTO commit_guard VALUES (-1);
            END IF; RETURN NEW; END $$""",
        """CREATE TRIGGER break_commit AFTER INSERT ON heroes
            FOR EACH ROW EXECUTE FUNCTION break_commit()""",
    ],
}


def run_sql(settings: Settings, statements: list[str]) -> None:
    """Run ``statements`` on the database of ``settings``, behind the service's back."""
    engine = direct_engine(settings.database_url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def podman(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a podman command (with ``env`` added to the environment); its output, whatever its
    exit status."""
    return subprocess.run(
        [*PODMAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def container_limits() -> tuple[int, int]:
    """The open files and processes a container is given, explicitly: podman's implicit limits
    cannot be set on these machines. The open files are the limit the tests run with."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (hard if hard != resource.RLIM_INFINITY else 65536), 4096


def built_image() -> str:
    """The image under test; fails when ``just image-test`` has not built it."""
    if podman("image", "exists", IMAGE).returncode != 0:
        pytest.fail(f"There is no image {IMAGE}: `just image-test` builds it, then runs these.")
    return IMAGE


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl in ``folder``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
