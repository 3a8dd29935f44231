"""The one place that builds the engines and the plugin's config, tuned per database.

One file, read top to bottom as one decision: ``DATABASE_URL`` as users write it (libpq's
multi-host form, ``sslmode``) becomes the URL of the driver the mode needs (``DRIVERS``), and
that driver decides the engine's arguments, the plugin's config and the ``Database`` opened on
it. Split, each half would have to import the other's table of drivers.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AlembicSyncConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemySyncConfig,
)
from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
from advanced_alchemy.extensions.litestar.plugins.init.config.common import (
    SESSION_TERMINUS_ASGI_EVENTS,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from service.database import pooled
from service.database.postgres import PostgresDatabase, is_closed
from service.database.prepared import PreparedStatements, prepared_statements
from service.database.sqlite import SqliteDatabase
from service.database.statements import Database
from service.database.tables import Base
from service.settings import Settings, SettingsError

if TYPE_CHECKING:
    from litestar.types import BeforeMessageSendHookHandler, Message, Scope
    from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).parent / "migrations"
"""The Alembic scripts; ``litestar database upgrade`` and the SQLite startup upgrade run them."""

DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
"""The driver each plain URL scheme runs on."""

DatabaseConfig = SQLAlchemySyncConfig | SQLAlchemyAsyncConfig

SQLITE_TRANSACTION_CONTROL: dict[str, Any] = {"isolation_level": None}
"""How every sqlite3 connection of the service controls transactions: none implicitly.

Each statement commits by itself; the writer thread, a plugin session and a migration open
their own with ``BEGIN IMMEDIATE`` and end them with the driver's ``commit()`` or a ``COMMIT``.
From Python 3.12 on, that is sqlite3's legacy transaction control, chosen here explicitly, since
a later Python makes ``autocommit=False`` (implicit transactions) the default;
``autocommit=True`` would not do either, as it makes ``commit()`` and ``rollback()`` do nothing.
"""
if sys.version_info >= (3, 12):
    SQLITE_TRANSACTION_CONTROL["autocommit"] = sqlite3.LEGACY_TRANSACTION_CONTROL


def database_url(raw: str, pooler: str = "none", *, prepared: bool = False) -> URL:
    """Parse a plain ``DATABASE_URL`` and pick its driver; an explicit ``+driver`` is kept.

    Behind a transaction pooler (``pooler="transaction"``) PostgreSQL runs on psycopg, which
    sends an unprepared statement in one round trip (see ``service.database.pooled``), unless the
    pooler keeps prepared statements (``prepared``): asyncpg then, as straight to PostgreSQL.
    """
    url = parse_database_url(raw)
    if "+" not in url.drivername and url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
        unprepared = pooler != "none" and not prepared
        if unprepared and url.get_backend_name() == "postgresql":
            url = url.set(drivername=pooled.DRIVER)
    url = _tls_parameter_for_the_driver(url)
    if is_sqlite(url) and url.get_driver_name() != "pysqlite":
        raise SettingsError(
            f"DATABASE_URL: SQLite runs on the sqlite3 module, not {url.drivername}"
        )
    if is_sqlite(url) and pooler != "none":
        raise SettingsError("DB_POOLER: a pooler stands in front of PostgreSQL, not SQLite")
    return url


TLS_PARAMETERS = {"asyncpg": ("sslmode", "ssl"), "psycopg": ("ssl", "sslmode")}
"""Per driver, the TLS query parameter it does not know and the one it reads instead."""


def _tls_parameter_for_the_driver(url: URL) -> URL:
    """``?sslmode=`` (libpq's, in the URLs managed PostgreSQL services give) as asyncpg's ``ssl``.

    SQLAlchemy hands the URL's query to the driver as keyword arguments; asyncpg's connect
    has no ``sslmode`` (a TypeError at every connect) and psycopg's libpq no ``ssl``. The values
    are the same six words (``disable`` ... ``verify-full``) for both.
    """
    foreign, own = TLS_PARAMETERS.get(url.get_driver_name(), ("", ""))
    if foreign not in url.query or own in url.query:
        return url
    value = url.query[foreign]
    return url.difference_update_query([foreign]).update_query_dict({own: value})


URL_EXAMPLES = "sqlite:///heroes.db, or postgresql://user@host/db"
_POSTGRES_PORT = 5432


def parse_database_url(raw: str) -> URL:
    """``DATABASE_URL`` parsed, libpq's multi-host form turned into the drivers' form.

    Raises :class:`SettingsError` naming ``DATABASE_URL``, in one line, for a URL that is not
    one, a port that is not a number from 1 to 65535, or a database other than SQLite and
    PostgreSQL. The message never holds the URL: it may hold a password.
    """
    try:
        url = make_url(libpq_hosts(raw))
    except (ValueError, sa.exc.ArgumentError):
        raise SettingsError(
            f"DATABASE_URL: not a database URL such as {URL_EXAMPLES} (with a port, if any, "
            "from 1 to 65535)"
        ) from None
    if url.port is not None and not 1 <= url.port <= 65535:  # noqa: PLR2004
        raise SettingsError("DATABASE_URL: the port is not a number from 1 to 65535")
    if url.get_backend_name() not in DRIVERS:
        raise SettingsError(
            f"DATABASE_URL: the service runs on SQLite or PostgreSQL ({URL_EXAMPLES}), "
            f"not {url.get_backend_name()}"
        )
    return url


def libpq_hosts(raw: str) -> str:
    """``raw`` with libpq's multi-host authority moved to SQLAlchemy's ``host`` parameters.

    ``postgresql://u@h1:5432,h2/db?target_session_attrs=read-write`` (as managed databases print
    it) becomes ``postgresql://u@/db?target_session_attrs=read-write&host=h1:5432&host=h2:5432``,
    which SQLAlchemy's asyncpg and psycopg dialects take: each tries the hosts in turn, and
    ``target_session_attrs`` is passed on to the driver. A host without a port gets libpq's
    default, 5432 (asyncpg needs every port). Any other URL is returned as it is.
    """
    scheme, separator, rest = raw.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
    userinfo, at, hosts = authority.rpartition("@")
    if not separator or "," not in hosts:
        return raw
    parameters = []
    for host in hosts.split(","):
        name, colon, port = host.partition(":")
        valid_port = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535  # noqa: PLR2004
        if not name or "[" in host or (colon and not valid_port):
            raise SettingsError(
                "DATABASE_URL: each host of a multi-host URL is a name or an IPv4 address, with "
                "a port from 1 to 65535 or none (5432)"
            )
        parameters.append(f"host={name}:{port or _POSTGRES_PORT}")
    path, _, query = tail.partition("?")
    query = "&".join(part for part in (query, *parameters) if part)
    return f"{scheme}://{userinfo}{at}{path or '/'}?{query}"


def is_sqlite(url: URL) -> bool:
    """Whether ``url`` points at SQLite."""
    return url.get_backend_name() == "sqlite"


def create_engine(settings: Settings) -> Engine | AsyncEngine:
    """Build the engine for ``settings.database_url``, tuned for its database.

    SQLite gets a sync engine (its reads take microseconds and never wait; see
    ``service.database.sqlite``), PostgreSQL an async one, so that waiting for it never blocks
    the event loop.
    """
    url = database_url(
        settings.database_url, settings.db_pooler, prepared=settings.db_pooler_prepared
    )
    if is_sqlite(url):
        return _sqlite_engine(url, settings)
    return _postgres_engine(url, settings)


def _postgres_engine(url: URL, settings: Settings) -> AsyncEngine:
    timeout = settings.db_statement_timeout_ms
    arguments: dict[str, Any]
    if settings.db_pooler == "transaction":
        arguments = pooled.engine_arguments(url, settings)
    elif url.get_driver_name() == "asyncpg":
        arguments = {
            "connect_args": {
                "timeout": settings.db_connect_timeout,
                "server_settings": {"statement_timeout": str(timeout)},
            }
        }
    else:
        arguments = {
            "connect_args": {
                "connect_timeout": settings.db_connect_timeout,
                "options": f"-c statement_timeout={timeout:d}",
            }
        }
    engine = create_async_engine(
        url,
        # A fixed pool: requests beyond it queue for a connection (DB_POOL_TIMEOUT) instead of
        # opening and closing overflow connections, which cost more than the queries under load.
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        hide_parameters=True,
        **arguments,
    )

    @sa.event.listens_for(engine.sync_engine, "checkout")
    def replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # A connection the server closed (a restart) is replaced before a request uses it; this
        # costs no round trip, unlike pool_pre_ping, whose ping would double every request's.
        if is_closed(dbapi_connection.driver_connection):
            raise sa.exc.DisconnectionError("connection closed by the server")

    if settings.db_pooler == "transaction":
        pooled.psycopg_connections(engine)
    if settings.db_pooler_prepared:
        PreparedStatements(engine)
    return engine


def _sqlite_engine(url: URL, settings: Settings) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    engine = sa.create_engine(
        url,
        connect_args={**SQLITE_TRANSACTION_CONTROL, "check_same_thread": False},
        # One shared connection keeps an in-memory database alive and the same for every request.
        poolclass=StaticPool if in_memory else None,
        hide_parameters=True,
    )

    @sa.event.listens_for(engine, "connect")
    def tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {settings.sqlite_busy_timeout_ms:d}")
        if not in_memory:
            switch_to_wal(cursor, settings.sqlite_busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    return engine


def switch_to_wal(cursor: sqlite3.Cursor, patience: float) -> None:
    """Put the file in WAL mode, retrying while another connection switches it too.

    Workers starting together on a new file each switch it: the switch reads the file, then
    takes its exclusive lock, and SQLite answers one of two such connections "database is
    locked" at once, without its busy handler (which could deadlock there).
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
        else:
            return


def database_config(settings: Settings) -> DatabaseConfig:
    """The SQLAlchemy plugin's config: it owns the engine, from startup to shutdown."""
    engine = create_engine(settings)
    common: dict[str, Any] = {
        "metadata": Base.metadata,
        "set_default_exception_handler": False,
        "enable_touch_updated_timestamp_listener": False,
        "enable_file_object_listener": False,
    }
    if isinstance(engine, AsyncEngine):
        return SQLAlchemyAsyncConfig(
            engine_instance=engine,
            alembic_config=AlembicAsyncConfig(
                script_location=str(MIGRATIONS), version_table_name="alembic_version"
            ),
            **common,
        )
    config = SQLAlchemySyncConfig(
        engine_instance=engine,
        alembic_config=AlembicSyncConfig(
            script_location=str(MIGRATIONS), version_table_name="alembic_version"
        ),
        **common,
    )
    config.before_send_handler = _session_closer(config.session_scope_key)
    sa.event.listen(config.create_session_maker(), "after_begin", _begin_immediate)
    return config


def open_database(config: DatabaseConfig, settings: Settings) -> Database:
    """Where the app's statements run, on the plugin's engine."""
    engine = config.get_engine()
    if isinstance(engine, AsyncEngine):
        if settings.db_pooler == "transaction":
            bound = pooled.statement_bound(settings)
            return pooled.PooledPostgresDatabase(engine, bound, prepared_statements(engine))
        return PostgresDatabase(engine)
    return SqliteDatabase(engine, in_memory=engine.url.database in (None, "", ":memory:"))


def _begin_immediate(_session: Session, _transaction: Any, connection: sa.Connection) -> None:
    """Open a real transaction for a plugin session on SQLite, as the writer thread does.

    The engine's connections are in the driver's autocommit mode, so that the writer thread
    opens its own transactions; a session's statements would otherwise each commit as they run
    and its rollback would undo nothing. IMMEDIATE takes the write lock up front (waiting up to
    the busy timeout, in the handler's thread), so a session that reads and then writes cannot
    fail on upgrading its lock.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _session_closer(session_scope_key: str) -> BeforeMessageSendHookHandler:
    """Close a ``db_session`` a handler asked the plugin for, inline rather than in a thread."""

    async def close_session(message: Message, scope: Scope) -> None:
        # The plugin's own handler for sync sessions hops to a thread for every message.
        if message["type"] in SESSION_TERMINUS_ASGI_EVENTS:
            session: Session | None = get_aa_scope_state(scope, session_scope_key)
            if session is not None:
                session.close()
                delete_aa_scope_state(scope, session_scope_key)

    return close_session
