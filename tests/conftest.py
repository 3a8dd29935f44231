"""Apps built with ``create_app`` on real databases: a SQLite file, and PostgreSQL if reachable."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.database.engines import database_config
from service.database.tables import Base, Hero
from service.settings import Settings
from tests import pgbouncer
from tests.helpers import direct_engine, settings_for

POSTGRES_SERVER = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The PostgreSQL server the tests create their throwaway database on."""
IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_SERVER = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis server the rate limit tests count in, under a key prefix of their own."""


ALONE_CHOICES = ("include", "exclude", "only")
COUNTED_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
SHARED_SCOPES = ("module", "class", "package")
"""Fixture scopes set up once for the tests that share them: such tests run on one xdist worker."""


def pytest_configure(config: pytest.Config) -> None:
    """With ``TEST_WARNINGS_AS_ERRORS=true``, every warning is an error but the named exceptions.

    The exceptions are pyproject.toml's ``filterwarnings``, each with the reason beside it; they
    are added again after ``error``, since the last filter that matches a warning decides.
    """
    if os.environ.get("TEST_WARNINGS_AS_ERRORS", "").lower() == "true":
        named = list(config.getini("filterwarnings"))
        for line in ["error", *named]:
            config.addinivalue_line("filterwarnings", line)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep the garbage collector off what lives for the whole run, and let it run less often.

    The collected tests, the imported modules and each app's route tables made the default
    collector scan a growing heap every few hundred allocations, a good part of the in-process
    tests' CPU. Garbage is still collected, later; a test that needs it collected calls
    ``gc.collect()``.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--alone``: what to do with the tests marked ``alone`` (see ``tools/run_tests.py``)."""
    parser.addoption(
        "--alone",
        choices=ALONE_CHOICES,
        default="include",
        help="tests marked alone: run them with the others (include, the default), leave them "
        "out (exclude: the parallel phase of `just test`) or run only them (only)",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep or leave out the ``alone`` tests; keep tests that share a fixture on one worker.

    Under pytest-xdist (``--dist loadgroup``) a module-scoped fixture (a server for a module's
    tests) would be set up again on every worker that runs one of its tests: the tests that use
    one are put in the module's group, which one worker runs.
    """
    alone = config.getoption("alone")
    if alone != "include":
        wanted = alone == "only"
        left_out = [
            item for item in items if (item.get_closest_marker("alone") is not None) != wanted
        ]
        if alone == "exclude" and (counts_file := os.environ.get("TEST_COUNTS_FILE")):
            # For tools/run_tests.py, which skips its second phase when there is nothing to run.
            Path(f"{counts_file}.alone").write_text(str(len(left_out)), encoding="utf-8")
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [
                item for item in items if (item.get_closest_marker("alone") is not None) == wanted
            ]
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        shared = definitions is not None and any(
            definition.scope in SHARED_SCOPES
            for defs in definitions.name2fixturedefs.values()
            for definition in defs
        )
        if shared and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    # The modules with long tests first: the workers hand out tests in this order, and one that
    # takes a long test last keeps the other idle until it ends.
    long_modules = {item.path for item in items if LONG_MARKERS & item.keywords.keys()}
    items.sort(key=lambda item: item.path not in long_modules)


LONG_MARKERS = {"live", "fuzz"}
"""The markers of the tests that take seconds: live servers, generated requests."""


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Write the run's counts to ``TEST_COUNTS_FILE``, if set, for ``tools/run_tests.py``."""
    counts_file = os.environ.get("TEST_COUNTS_FILE")
    if counts_file and not hasattr(config, "workerinput"):  # xdist's workers report to us
        counts = {name: len(terminalreporter.stats.get(name, [])) for name in COUNTED_OUTCOMES}
        Path(counts_file).write_text(json.dumps(counts), encoding="utf-8")


def _postgres_unreachable() -> str | None:
    try:
        psycopg.connect(POSTGRES_SERVER, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {POSTGRES_SERVER} is not reachable: {exc}".strip()
    return None


PLUGIN_KEY_REGISTRIES = (
    "_SESSION_SCOPE_KEY_REGISTRY",
    "_ENGINE_APP_STATE_KEY_REGISTRY",
    "_SESSIONMAKER_APP_STATE_KEY_REGISTRY",
)


@pytest.fixture(autouse=True)
def _forget_earlier_apps_plugin_keys() -> Iterator[None]:
    """Let each test's apps choose their SQLAlchemy plugin keys as if they were the first.

    advanced-alchemy 1.12 gives every plugin config made in a process keys of its own, found by
    a recursion one call deeper for each config made before; past about 950 configs (the suite
    builds more apps than that, one or more per test) it raises RecursionError. The keys only
    need to differ between the configs of one app, and earlier tests' apps are gone.
    """
    yield
    for config in (SQLAlchemyAsyncConfig, SQLAlchemySyncConfig):
        for registry in PLUGIN_KEY_REGISTRIES:
            getattr(config, registry).clear()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own on the PostgreSQL server for this test session, dropped afterwards."""
    if reason := _postgres_unreachable():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL too. {reason}")
        pytest.skip(reason)
    name = f"hero_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped after the test."""
    name = f"hero_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The Redis server; the test is skipped when none answers, but fails in CI."""
    try:
        with redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_SERVER} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(f"CI must test the shared rate limit too. {reason}")
        pytest.skip(reason)
    return REDIS_SERVER


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own, so that parallel runs never share a count; cleaned up."""
    prefix = f"hero-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


POOLERS = {"pgbouncer": False, "pgbouncer-prepared": True}
"""The PgBouncers the suite runs through, by ``database_url`` parameter, and whether each keeps
prepared statements: one that keeps none (``DB_POOLER=transaction``; Debian 12's 1.18, or a newer
build told ``max_prepared_statements = 0``), and one that keeps them (1.21 and later, Debian 13's
1.24 from the root tools/debian_root.py makes where the machine's is older:
``DB_POOLER_PREPARED=true`` too). See tests/pgbouncer.py."""


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the latest schema, made once per worker. The ``database_url`` of each
    SQLite test is a copy of it: migrating a new file at each app's startup cost as much as the
    rest of a test. Startup on a new file (the Quick start's) has tests of its own in
    test_migrations.py, on files they make."""
    path = tmp_path_factory.mktemp("migrated") / "heroes.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(
    params=["sqlite", "postgresql", *(pytest.param(p, marks=pytest.mark.pooled) for p in POOLERS)]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the service supports: a SQLite file, PostgreSQL, and
    PostgreSQL through each PgBouncer in transaction mode (apps there run in its mode)."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), tmp_path / "heroes.db")
        yield f"sqlite:///{tmp_path / 'heroes.db'}"
        return
    if request.param in POOLERS:
        yield request.getfixturevalue(f"{request.param.replace('-', '_')}_database")
        return
    yield request.getfixturevalue("postgres_database")


def start_pgbouncer(keeps_prepared: bool, target_url: str, **settings: Any) -> pgbouncer.PgBouncer:
    """A PgBouncer that keeps prepared statements, or keeps none, in front of ``target_url``'s
    server, started; the test is skipped if it cannot run here, but fails in CI."""
    suite = pgbouncer.suite_for(keeps_prepared)
    if reason := pgbouncer.missing(suite):
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    if not keeps_prepared:
        settings.setdefault("max_prepared_statements", 0)  # left out for builds before 1.21
    url = sa.make_url(target_url)
    target = (url.host or "127.0.0.1", url.port or 5432)
    bouncer = pgbouncer.PgBouncer(target, suite=suite, user=url.username, **settings)
    assert bouncer.keeps_prepared == keeps_prepared, (suite, pgbouncer.version(suite))
    return bouncer.start()


@pytest.fixture(scope="session")
def session_pgbouncer(postgres_url: str) -> Iterator[pgbouncer.PgBouncer]:
    """A PgBouncer keeping no prepared statement, in front of the session's PostgreSQL server."""
    # Four server connections, as in the setup the issue reproduced its failures on.
    bouncer = start_pgbouncer(POOLERS["pgbouncer"], postgres_url, pool_size=4)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def session_pgbouncer_prepared(postgres_url: str) -> Iterator[pgbouncer.PgBouncer]:
    """A PgBouncer keeping prepared statements, in front of the session's server."""
    bouncer = start_pgbouncer(POOLERS["pgbouncer-prepared"], postgres_url, pool_size=4)
    yield bouncer
    bouncer.stop()


def through(bouncer: pgbouncer.PgBouncer, database: str) -> str:
    """``database`` through ``bouncer``: apps on that URL run in its mode."""
    url = bouncer.url(database)
    pgbouncer.POOLED_URLS[url] = bouncer.keeps_prepared
    return url


@pytest.fixture
def pgbouncer_database(postgres_database: str, session_pgbouncer: pgbouncer.PgBouncer) -> str:
    """The session's PostgreSQL database through PgBouncer, with no heroes (emptied afterwards)."""
    return through(session_pgbouncer, postgres_database)


@pytest.fixture
def pgbouncer_prepared_database(
    postgres_database: str, session_pgbouncer_prepared: pgbouncer.PgBouncer
) -> str:
    """The same through the PgBouncer that keeps prepared statements (DB_POOLER_PREPARED=true)."""
    return through(session_pgbouncer_prepared, postgres_database)


@pytest.fixture(params=list(POOLERS))
def pooled_database(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL database through each PgBouncer, in its mode."""
    name: str = request.getfixturevalue(f"{request.param.replace('-', '_')}_database")
    return name


@pytest.fixture
def postgres_database(postgres_url: str, emptier: Emptier) -> Iterator[str]:
    """The session's PostgreSQL database, with no heroes, emptied again after the test."""
    yield postgres_url
    emptier.empty()


class Emptier:
    """Empties the session's database after each test, on one connection kept for the session:
    a new connection and ``TRUNCATE`` (new files for every table and index) cost more than the
    ``DELETE`` of a test's few rows. A test that ended the connection gets a new one."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
        self.connection: psycopg.Connection[Any] | None = None

    def empty(self) -> None:
        try:
            self._empty()
        except psycopg.OperationalError:  # the test ended our connection: once more, on a new one
            self.close()
            self._empty()

    def _empty(self) -> None:
        if self.connection is None:
            self.connection = psycopg.connect(self.url, prepare_threshold=None)
        with self.connection.transaction():
            self.connection.execute("DROP TRIGGER IF EXISTS break_commit ON heroes")
            self.connection.execute("DROP FUNCTION IF EXISTS break_commit")
            self.connection.execute("DROP TABLE IF EXISTS commit_guard")
            # Every resource's table, as the migrations make them; their ids start again at 1.
            for table in reversed(Base.metadata.sorted_tables):
                self.connection.execute(f"DELETE FROM {table.name}")
                if "id" in table.c:
                    self.connection.execute(
                        "SELECT setval(pg_get_serial_sequence(%s, 'id'), 1, false)", (table.name,)
                    )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@pytest.fixture(scope="session")
def emptier(postgres_url: str) -> Iterator[Emptier]:
    """What empties the session's PostgreSQL database after each test."""
    emptier = Emptier(postgres_url)
    yield emptier
    emptier.close()


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the latest schema, as ``just migrate`` does."""
    config = database_config(Settings(database_url=url))
    AlembicCommands(sqlalchemy_config=config).upgrade("head")  # disposes an async engine itself
    engine = config.get_engine()
    if isinstance(engine, sa.Engine):
        engine.dispose()  # a SQLite file's connections, which would be left to the collector


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for an app on the test's database."""
    return settings_for(database_url)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    """The app under test."""
    return create_app(settings)


@pytest.fixture
def client(app: Litestar, settings: Settings) -> Iterator[TestClient[Litestar]]:
    """An in-process client; every response it sees is checked for stored secret names."""
    responses: list[httpx.Response] = []
    with TestClient(app) as client:
        client.event_hooks["response"].append(responses.append)
        yield client
    secrets = stored_secret_names(settings)
    for response in responses:
        response.read()
        seen = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
        leaked = [secret for secret in secrets if secret in seen]
        assert not leaked, f"{response.request.method} {response.request.url} leaked {leaked}"


def stored_secret_names(settings: Settings) -> list[str]:
    """Every secret name in the database, but for those too short to be told from chance."""
    engine = direct_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            names = connection.execute(sa.select(Hero.secret_name)).scalars()
            return [name for name in names if len(name) >= 8]
    finally:
        engine.dispose()


class CapturedLogs:
    """Every log record made while a test ran, by any logger, whatever its handlers."""

    LOGGERS = ("service", "litestar", "sqlalchemy", "asyncpg", "alembic", "opentelemetry", "httpx")

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def text(self) -> str:
        """Each record as a handler would write it, with its exception, stack and extra fields."""
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return "\n".join(
            f"{formatter.format(record)} {record.__dict__!r}" for record in self.records
        )


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[CapturedLogs]:
    """Log records of every logger at DEBUG, including those that do not reach the root.

    Records are taken as they are made (a log record factory), so a logger with handlers of its
    own and no propagation (the service's) is seen too. Apps under test should run with
    ``log_level="DEBUG"``, since their logging config sets the service's level.
    """
    caplog.set_level(logging.DEBUG)
    for name in CapturedLogs.LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    captured = CapturedLogs()
    make_record = logging.getLogRecordFactory()

    def record(*args: object, **kwargs: object) -> logging.LogRecord:
        made = make_record(*args, **kwargs)
        captured.records.append(made)
        return made

    logging.setLogRecordFactory(record)
    yield captured
    logging.setLogRecordFactory(make_record)


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the process's tracer provider, which apps with tracing on use."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The spans the test's apps finish; none from earlier tests."""
    span_exporter.clear()
    return span_exporter


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    folder = tmp_path_factory.mktemp("tls")
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
