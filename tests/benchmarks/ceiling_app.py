"""The speed ceiling: the heroes API as a bare ASGI callable on stdlib sqlite3 or asyncpg.

No framework, no ORM, no validation beyond msgspec's decoding: one SQLite connection on the
event loop's thread, or an asyncpg pool of 10 connections for a ``postgresql://`` URL. It
stores heroes in the same table as the service, with the same SQLite settings (WAL,
``synchronous = FULL``), and answers the three benchmarked requests:

- ``GET /heroes/{id}``: the hero, or 404;
- ``GET /heroes?offset=&limit=``: a page ordered by id (``limit`` at most 100);
- ``POST /heroes``: creates a hero, 201.

Everything else gets 404 or 405. The database comes from ``BENCH_DATABASE_URL``
(``sqlite:///path.db`` or ``postgresql://...``). Serve it with
``uvicorn tests.benchmarks.ceiling_app:app``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
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

POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS heroes (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    age INTEGER,
    secret_name VARCHAR(255) NOT NULL,
    version INTEGER DEFAULT 1 NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_heroes_name ON heroes (name);
CREATE INDEX IF NOT EXISTS ix_heroes_age ON heroes (age);
"""


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


GET_ONE = "SELECT id, name, age FROM heroes WHERE id = {}"
LIST = "SELECT id, name, age FROM heroes ORDER BY id LIMIT {} OFFSET {}"
CREATE = "INSERT INTO heroes (name, age, secret_name) VALUES ({}, {}, {}) RETURNING id, name, age"


class Database:
    """The one SQLite connection or asyncpg pool, opened at startup."""

    sqlite: sqlite3.Connection | None = None
    pool: asyncpg.Pool | None = None

    @classmethod
    async def open(cls) -> None:
        """Open the database named by ``BENCH_DATABASE_URL`` and create the table if needed."""
        url = os.environ.get("BENCH_DATABASE_URL", "sqlite:///ceiling.db")
        if url.startswith("postgresql"):
            cls.pool = await asyncpg.create_pool(url, min_size=10, max_size=10)
            await cls.pool.execute(POSTGRES_SCHEMA)
            return
        # Autocommit: every INSERT is its own durable transaction, as in the service.
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(SCHEMA)
        cls.sqlite = connection

    @classmethod
    async def fetch(cls, sql: str, *args: Any) -> list[Any]:
        """The rows of ``sql`` (written with ``{}`` for each parameter)."""
        if cls.pool is not None:
            placeholders = [f"${n}" for n in range(1, len(args) + 1)]
            rows: list[Any] = await cls.pool.fetch(sql.format(*placeholders), *args)
            return rows
        if cls.sqlite is None:
            raise RuntimeError("The database is not open: the lifespan startup did not run")
        # Fetch every row: the statement, and so its transaction, ends only when stepped to the end.
        return cls.sqlite.execute(sql.format(*"?" * len(args)), args).fetchall()

    @classmethod
    async def close(cls) -> None:
        """Close the connection or the pool."""
        if cls.sqlite is not None:
            cls.sqlite.close()
            cls.sqlite = None
        if cls.pool is not None:
            await cls.pool.close()
            cls.pool = None


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
            await Database.open()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await Database.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def handle(scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Route a request; return the status and the JSON body."""
    method: str = scope["method"]
    path: str = scope["path"].rstrip("/")
    if path == "/heroes":
        if method == "GET":
            return await list_heroes(scope["query_string"])
        if method == "POST":
            return await create_hero(await read_body(receive))
        return 405, b'{"detail":"Method Not Allowed"}'
    prefix, _, hero_id = path.rpartition("/")
    if prefix == "/heroes" and hero_id.isdigit():
        if method == "GET":
            return await get_hero(int(hero_id))
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


async def get_hero(hero_id: int) -> tuple[int, bytes]:
    """One hero by id."""
    rows = await Database.fetch(GET_ONE, hero_id)
    if not rows:
        return 404, b'{"detail":"Hero not found"}'
    return 200, ENCODE(HeroPublic(*rows[0]))


async def list_heroes(query_string: bytes) -> tuple[int, bytes]:
    """A page of heroes ordered by id."""
    try:
        query = {k: int(v) for k, v in parse_qsl(query_string.decode())}
    except ValueError:
        return 400, b'{"detail":"offset and limit must be integers"}'
    offset, limit = query.get("offset", 0), query.get("limit", MAX_PAGE)
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        return 400, b'{"detail":"offset must be >= 0, limit in 1..100"}'
    rows = await Database.fetch(LIST, limit, offset)
    return 200, ENCODE([HeroPublic(*row) for row in rows])


async def create_hero(body: bytes) -> tuple[int, bytes]:
    """Store a new hero."""
    try:
        hero = DECODE_CREATE(body)
    except msgspec.DecodeError as exc:
        return 422, ENCODE({"detail": str(exc)})
    (row,) = await Database.fetch(CREATE, hero.name, hero.age, hero.secret_name)
    return 201, ENCODE(HeroPublic(*row))
