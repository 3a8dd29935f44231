"""The speed ceiling: the heroes API as a bare ASGI callable on stdlib sqlite3 and msgspec.

No framework, no ORM, no validation beyond msgspec's decoding, one SQLite connection on the
event loop's thread. It stores heroes in the same table as the service, with the same SQLite
settings (WAL, ``synchronous = FULL``), and answers the three benchmarked requests:

- ``GET /heroes/{id}``: the hero, or 404;
- ``GET /heroes?offset=&limit=``: a page ordered by id (``limit`` at most 100);
- ``POST /heroes``: creates a hero, 201.

Everything else gets 404 or 405. The database file comes from ``BENCH_DATABASE_URL``
(``sqlite:///path.db``). Serve it with ``uvicorn tests.benchmarks.ceiling_app:app``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_PAGE = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS heroes (
    id INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    age INTEGER,
    secret_name VARCHAR(255) NOT NULL,
    version INTEGER DEFAULT '1' NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_heroes_name ON heroes (name);
CREATE INDEX IF NOT EXISTS ix_heroes_age ON heroes (age);
"""
"""The table the service's first migration creates."""


class HeroCreate(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a create request."""

    name: str
    secret_name: str
    age: int | None = None


class HeroPublic(msgspec.Struct):
    """A hero as the API shows it."""

    id: int
    name: str
    age: int | None


JSON_HEADERS = [(b"content-type", b"application/json")]
ENCODE = msgspec.json.Encoder().encode
DECODE_CREATE = msgspec.json.Decoder(HeroCreate).decode


class Database:
    """The one connection, opened at startup."""

    connection: sqlite3.Connection | None = None

    @classmethod
    def open(cls) -> None:
        """Open the file named by ``BENCH_DATABASE_URL`` and create the table if needed."""
        url = os.environ.get("BENCH_DATABASE_URL", "sqlite:///ceiling.db")
        path = url.removeprefix("sqlite:///")
        # Autocommit: every INSERT is its own durable transaction, as in the service.
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(SCHEMA)
        cls.connection = connection

    @classmethod
    def get(cls) -> sqlite3.Connection:
        """The open connection."""
        if cls.connection is None:
            raise RuntimeError("The database is not open: the lifespan startup did not run")
        return cls.connection

    @classmethod
    def close(cls) -> None:
        """Close the connection."""
        if cls.connection is not None:
            cls.connection.close()
            cls.connection = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http":
        status, body = await handle(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Open the database at startup, close it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            Database.open()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            Database.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def handle(scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Route a request; return the status and the JSON body."""
    method: str = scope["method"]
    path: str = scope["path"].rstrip("/")
    if path == "/heroes":
        if method == "GET":
            return list_heroes(scope["query_string"])
        if method == "POST":
            return create_hero(await read_body(receive))
        return 405, b'{"detail":"Method Not Allowed"}'
    prefix, _, hero_id = path.rpartition("/")
    if prefix == "/heroes" and hero_id.isdigit():
        if method == "GET":
            return get_hero(int(hero_id))
        return 405, b'{"detail":"Method Not Allowed"}'
    return 404, b'{"detail":"Not Found"}'


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def get_hero(hero_id: int) -> tuple[int, bytes]:
    """One hero by id."""
    row = Database.get().execute("SELECT id, name, age FROM heroes WHERE id = ?", (hero_id,))
    found = row.fetchone()
    if found is None:
        return 404, b'{"detail":"Hero not found"}'
    return 200, ENCODE(HeroPublic(*found))


def list_heroes(query_string: bytes) -> tuple[int, bytes]:
    """A page of heroes ordered by id."""
    try:
        query = {k: int(v) for k, v in parse_qsl(query_string.decode())}
    except ValueError:
        return 400, b'{"detail":"offset and limit must be integers"}'
    offset, limit = query.get("offset", 0), query.get("limit", MAX_PAGE)
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        return 400, b'{"detail":"offset must be >= 0, limit in 1..100"}'
    rows = Database.get().execute(
        "SELECT id, name, age FROM heroes ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
    )
    return 200, ENCODE([HeroPublic(*row) for row in rows])


def create_hero(body: bytes) -> tuple[int, bytes]:
    """Store a new hero."""
    try:
        hero = DECODE_CREATE(body)
    except msgspec.DecodeError as exc:
        return 422, ENCODE({"detail": str(exc)})
    cursor = Database.get().execute(
        "INSERT INTO heroes (name, age, secret_name) VALUES (?, ?, ?) RETURNING id, name, age",
        (hero.name, hero.age, hero.secret_name),
    )
    # Fetch every row: the statement, and so its transaction, ends only when stepped to the end.
    (row,) = cursor.fetchall()
    return 201, ENCODE(HeroPublic(*row))
