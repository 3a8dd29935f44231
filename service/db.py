"""The one place that builds the engine, tunes it per database and bounds the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import AlembicSyncConfig, SQLAlchemySyncConfig
from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
from advanced_alchemy.extensions.litestar.plugins.init.config.common import (
    SESSION_TERMINUS_ASGI_EVENTS,
)
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from litestar.di import NamedDependency
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from service.models import Base
from service.settings import Settings

if TYPE_CHECKING:
    from litestar.types import BeforeMessageSendHookHandler, Message, Scope

MIGRATIONS = Path(__file__).parent / "migrations"
"""The Alembic scripts; ``litestar database upgrade`` and the SQLite startup upgrade run them."""

DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}
"""The driver each plain URL scheme runs on."""


def database_url(raw: str) -> URL:
    """Parse a plain ``DATABASE_URL`` and pick its driver; an explicit ``+driver`` is kept."""
    url = make_url(raw)
    if "+" not in url.drivername and url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
    return url


def is_sqlite(url: URL) -> bool:
    """Whether ``url`` points at SQLite."""
    return url.get_backend_name() == "sqlite"


def create_engine(settings: Settings) -> Engine:
    """Build the engine for ``settings.database_url``, tuned for its database."""
    url = database_url(settings.database_url)
    if is_sqlite(url):
        return _sqlite_engine(url, settings)
    return sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # A connection that died with a database restart is replaced before a request uses it.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms:d}",
        },
    )


def _sqlite_engine(url: URL, settings: Settings) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    engine = sa.create_engine(
        url,
        # "IMMEDIATE" makes the driver open every write transaction with BEGIN IMMEDIATE, which
        # takes the write lock up front: two writers then queue on busy_timeout instead of
        # deadlocking on a read lock each. Reads run outside any transaction.
        connect_args={"isolation_level": "IMMEDIATE", "check_same_thread": False},
        # One shared connection keeps an in-memory database alive and the same for every request.
        poolclass=StaticPool if in_memory else None,
    )

    @sa.event.listens_for(engine, "connect")
    def tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA busy_timeout = {settings.sqlite_busy_timeout_ms:d}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    return engine


class CompiledStatement:
    """A Core statement compiled once per dialect, run on the DBAPI cursor of the session.

    SQLAlchemy's per-execution work costs several times the query itself on SQLite (about 60 µs
    against 10 µs for a read by id). The statement is still written in Core and still runs in the
    request's session, on its connection and inside its transaction; only that work is skipped.
    Driver errors are raised as SQLAlchemy's exceptions, as ``Session.execute`` would.
    """

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, dict[str, Any], tuple[str, ...] | None]] = {}

    def execute(self, session: Session, **params: Any) -> Any:
        """Run the statement with ``params`` in ``session``; return the DBAPI cursor."""
        connection = session.connection()
        dialect = connection.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        sql, defaults, positions = compiled
        values = {**defaults, **params}
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, values if positions is None else [values[p] for p in positions])
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor):
                connection.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                sql, values, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc
        return cursor

    def _compile(self, dialect: sa.Dialect) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
        compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        positions = tuple(compiled.positiontup) if compiled.positional else None
        self._compiled[dialect.name] = (compiled.string, dict(compiled.params), positions)
        return self._compiled[dialect.name]


def database_config(settings: Settings) -> SQLAlchemySyncConfig:
    """The SQLAlchemy plugin's config: a session per request, closed as the response starts."""
    config = SQLAlchemySyncConfig(
        engine_instance=create_engine(settings),
        metadata=Base.metadata,
        alembic_config=AlembicSyncConfig(
            script_location=str(MIGRATIONS), version_table_name="alembic_version"
        ),
        set_default_exception_handler=False,
        enable_touch_updated_timestamp_listener=False,
        enable_file_object_listener=False,
    )
    config.before_send_handler = _session_closer(config.session_scope_key)
    return config


def prepare_schema(config: SQLAlchemySyncConfig) -> None:
    """Make sure the schema is current before the first request.

    SQLite databases are migrated in place, so the Quick start needs no migration step.
    PostgreSQL is migrated by the operator (``just migrate``) before deploying: with several
    workers or hosts racing to migrate at startup, only an explicit step is safe. An app
    started on a PostgreSQL database that is not at the latest revision refuses to start.
    """
    engine = config.get_engine()
    if is_sqlite(engine.url):
        # Workers starting together take the write lock first, so they migrate one at a time.
        with engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            commands = AlembicCommands(sqlalchemy_config=config)
            commands.config.attributes["connection"] = connection
            commands.upgrade("head")
            connection.commit()
        return
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(
            connection, opts={"version_table": "alembic_version"}
        ).get_current_revision()
    if current != head:
        raise RuntimeError(
            f"The database schema is at revision {current or 'none'}, the service needs {head}: "
            "run `just migrate` (litestar --app service.app:app database upgrade) first."
        )


def _session_closer(session_scope_key: str) -> BeforeMessageSendHookHandler:
    async def close_session(message: Message, scope: Scope) -> None:
        # Async so that it runs inline: the plugin's sync handlers hop to a thread per message.
        if message["type"] in SESSION_TERMINUS_ASGI_EVENTS:
            session: Session | None = get_aa_scope_state(scope, session_scope_key)
            if session is not None:
                session.close()
                delete_aa_scope_state(scope, session_scope_key)

    return close_session


async def provide_transaction(db_session: NamedDependency[Session]) -> AsyncIterator[Session]:
    """The request's write transaction: it commits when the handler returns, before the response.

    A failed commit raises here and becomes an error response, so a 2xx always means the write is
    stored. When the handler raises, nothing is committed: closing the session rolls it back.
    """
    yield db_session
    try:
        db_session.commit()
    except Exception:
        # SQLite keeps the transaction open when COMMIT fails on a deferred constraint, and
        # closing the session would not end it: roll back so the refused write leaves with it.
        db_session.rollback()
        raise
