"""TRACING=true: a server span per request, named after its route, with a child per statement."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.app import create_app
from service.database.sqlite import SqliteDatabase
from service.database.tables import Base, Hero
from service.heroes.queries import SELECT_HERO
from service.ops.tracing import trace_statements
from service.settings import Settings
from tests.conftest import CapturedLogs
from tests.helpers import Client, create, held_write_lock, new_hero, settings_for

REPO = Path(__file__).resolve().parents[1]
CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def traced_client(database_url: str, spans: InMemorySpanExporter) -> Iterator[Client]:
    """A client of an app with tracing on; the spans of its startup are cleared."""
    settings = settings_for(database_url, tracing=True)
    with TestClient[Litestar](create_app(settings)) as client:
        spans.clear()
        yield client


def one_request(spans: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The server span of the one request made since the last clear, and its children."""
    finished = spans.get_finished_spans()
    servers = [span for span in finished if span.kind is SpanKind.SERVER]
    assert len(servers) == 1, [span.name for span in finished]
    server = servers[0]
    children = [span for span in finished if span is not server]
    for child in children:
        assert child.context.trace_id == server.context.trace_id, child.name
        assert child.parent is not None, child.name
        assert child.parent.span_id == server.context.span_id, child.name
    spans.clear()
    return server, children


def statements(children: list[ReadableSpan]) -> list[str]:
    """The SQL verb of each statement span, in the order they finished."""
    assert all(child.kind is SpanKind.CLIENT for child in children)
    return [str((child.attributes or {})["db.statement"]).split()[0] for child in children]


def statements_run(database_url: str, sql: list[str]) -> list[str]:
    """The statements a request runs for ``sql``: the SQLite writer thread, when traced, opens
    and commits each write's transaction with statements of its own."""
    writes = [verb for verb in sql if verb in ("INSERT", "UPDATE", "DELETE")]
    if writes and database_url.startswith("sqlite"):
        return ["BEGIN", *sql, "COMMIT"]
    return sql


OPERATIONS = [
    # method, path, body, span name, route, status, statements
    ("POST", "/heroes", new_hero("Created"), "POST /heroes", "/heroes", 201, ["INSERT"]),
    ("GET", "/heroes", None, "GET /heroes", "/heroes", 200, ["SELECT"]),
    ("GET", "/heroes/{id}", None, "GET /heroes/{hero_id}", "/heroes/{hero_id}", 200, ["SELECT"]),
    (
        "PATCH",
        "/heroes/{id}",
        {"age": 31},
        "PATCH /heroes/{hero_id}",
        "/heroes/{hero_id}",
        200,
        ["UPDATE"],
    ),
    (
        "DELETE",
        "/heroes/{id}",
        None,
        "DELETE /heroes/{hero_id}",
        "/heroes/{hero_id}",
        200,
        ["DELETE"],
    ),
    ("GET", "/health/ready", None, "GET /health/ready", "/health/ready", 200, ["SELECT"]),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "name", "route", "status", "sql"),
    OPERATIONS,
    ids=[f"{op[0]} {op[1]}" for op in OPERATIONS],
)
def test_each_operation_is_a_server_span_named_after_its_route_with_a_span_per_statement(
    database_url: str,
    traced_client: Client,
    spans: InMemorySpanExporter,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    name: str,
    route: str,
    status: int,
    sql: list[str],
) -> None:
    hero = create(traced_client, "Existing")
    spans.clear()
    url = path.replace("{id}", str(hero["id"]))

    response = traced_client.request(method, url, json=body)

    assert response.status_code == status, response.text
    server, children = one_request(spans)
    assert server.name == name
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == method
    assert attributes["url.path"] == url
    assert attributes["http.route"] == route
    assert attributes["http.response.status_code"] == status
    assert statements(children) == statements_run(database_url, sql)
    for child in children:
        assert child.attributes is not None
        assert child.attributes["db.system"] in ("sqlite", "postgresql")
        assert child.status.status_code is StatusCode.UNSET


def test_statements_hold_placeholders_not_values(
    traced_client: Client, spans: InMemorySpanExporter
) -> None:
    hero = new_hero("Placeholder-Name", 1357913)

    traced_client.post("/heroes", json=hero)

    server, children = one_request(spans)
    (insert,) = [child for child in children if statements([child]) == ["INSERT"]]
    statement = str((insert.attributes or {})["db.statement"])
    assert statement.startswith("INSERT INTO heroes (name, age, secret_name")
    # sqlite3's ?, asyncpg's $1 and psycopg's %s (behind a pooler), with PostgreSQL's casts
    placeholder = r"(\?|(\$\d+|%s)(::\w+( \w+)*)?)"
    assert re.search(rf"VALUES \({placeholder}(, {placeholder})*\)", statement)
    for value in (hero["secret_name"], "Placeholder-Name", "1357913"):
        assert value not in insert.to_json()
        assert value not in server.to_json()


def test_a_traceparent_makes_the_request_part_of_the_callers_trace(
    traced_client: Client, spans: InMemorySpanExporter
) -> None:
    traceparent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"

    traced_client.get("/heroes", headers={"traceparent": traceparent})

    server, children = one_request(spans)
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE_ID
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN_ID
    assert server.parent.is_remote
    assert [f"{child.context.trace_id:032x}" for child in children] == [CALLER_TRACE_ID]


@pytest.mark.parametrize(
    ("method", "path", "body", "name", "status", "sql"),
    [
        ("GET", "/heroes/424242", None, "GET /heroes/{hero_id}", 404, ["SELECT"]),
        ("POST", "/heroes", {"name": "", "secret_name": "x"}, "POST /heroes", 400, []),
        ("GET", "/heroes?limit=0", None, "GET /heroes", 400, []),
        ("GET", "/nowhere/42", None, "GET", 404, []),
    ],
)
def test_errors_are_recorded_with_their_status(
    traced_client: Client,
    spans: InMemorySpanExporter,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    name: str,
    status: int,
    sql: list[str],
) -> None:
    response = traced_client.request(method, path, json=body)

    assert response.status_code == status
    server, children = one_request(spans)
    assert server.name == name  # never the raw path: an unrouted request is named by its method
    assert (server.attributes or {})["http.response.status_code"] == status
    assert statements(children) == sql


def test_access_log_and_error_logs_carry_the_trace_id_next_to_the_request_id(
    tmp_path: Path, spans: InMemorySpanExporter, all_logs: CapturedLogs
) -> None:
    database = tmp_path / "h.db"
    settings = Settings(
        database_url=f"sqlite:///{database}", tracing=True, sqlite_busy_timeout_ms=50
    )
    with TestClient[Litestar](create_app(settings)) as client:
        spans.clear()
        all_logs.records.clear()
        with held_write_lock(database):
            response = client.post("/heroes", json=new_hero(), headers={"X-Request-ID": "req-7"})

    assert response.status_code == 503
    server, _ = one_request(spans)
    trace_id = f"{server.context.trace_id:032x}"
    access = [json.loads(r.getMessage()) for r in all_logs.records if r.name == "service.access"]
    assert [(line["request_id"], line["trace_id"]) for line in access] == [("req-7", trace_id)]
    errors = [r.getMessage() for r in all_logs.records if r.levelno >= logging.WARNING]
    assert errors == [
        "POST /heroes: database unavailable: OperationalError: database is locked "
        f"[request_id=req-7 trace_id={trace_id}]"
    ]


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, from ``cwd``, with the repository importable."""
    environ = {k: v for k, v in os.environ.items() if k != "TRACING"}
    environ.update(PYTHONPATH=str(REPO), DATABASE_URL="sqlite:///:memory:", **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_with_tracing_off_nothing_from_opentelemetry_is_imported(tmp_path: Path) -> None:
    result = run_python(
        """
        import sys
        from litestar.testing import TestClient
        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(database_url="sqlite:///:memory:"))
        with TestClient(app) as client:
            assert client.get("/heroes").status_code == 200
        print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
        """,
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tracing_without_the_extra_stops_startup_naming_it(tmp_path: Path) -> None:
    result = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from service.app import create_app
        from service.settings import Settings, SettingsError

        try:
            create_app(Settings(database_url="sqlite:///:memory:", tracing=True))
        except SettingsError as exc:
            print(exc)
        """,
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "TRACING: needs the OpenTelemetry packages: pip install 'hero-service[otel]'"
    )


def test_tracing_on_from_the_environment_exports_to_the_configured_exporter(
    tmp_path: Path,
) -> None:
    result = run_python(
        """
        from litestar.testing import TestClient
        from service.app import create_app

        from service import app as module
        with TestClient(module.app) as client:
            client.get("/heroes/1")
        """,
        tmp_path,
        TRACING="true",
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="heroes-under-test",
        ACCESS_LOG="false",
    )

    assert result.returncode == 0, result.stderr
    exported = result.stdout
    assert '"name": "GET /heroes/{hero_id}"' in exported
    assert '"service.name": "heroes-under-test"' in exported
    assert '"http.response.status_code": 404' in exported


def test_a_read_that_waits_for_the_lock_in_a_thread_is_still_a_child_of_the_request(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # In WAL mode (the service's) readers never wait for a lock, so the read that waits in a
    # thread is driven on a file in rollback-journal mode, where an exclusive lock blocks them.
    database = tmp_path / "journal.db"
    engine = sa.create_engine(
        f"sqlite:///{database}",
        connect_args={"isolation_level": None, "check_same_thread": False},
        hide_parameters=True,
    )
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(Hero), {"name": "Waiting", "secret_name": "s" * 8})
    trace_statements(engine, trace.get_tracer_provider())
    db = SqliteDatabase(engine, in_memory=False)
    locker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.3, locker.rollback).start()

    async def request() -> Any:
        with trace.get_tracer("test").start_as_current_span("request"):
            return await db.fetch_one(SELECT_HERO, row_id=1)

    try:
        row = asyncio.run(request())
    finally:
        locker.close()
        engine.dispose()

    assert row is not None
    assert row.public.name == "Waiting"
    finished = {span.name: span for span in spans.get_finished_spans()}
    parent = finished.pop("request")
    tried, waited = sorted(
        (span for span in spans.get_finished_spans() if span is not parent),
        key=lambda span: span.start_time or 0,
    )
    for span in (tried, waited):
        assert span.parent is not None
        assert span.parent.span_id == parent.context.span_id
        assert statements([span]) == ["SELECT"]
    assert tried.status.status_code is StatusCode.ERROR  # on the loop, without waiting
    assert waited.status.status_code is StatusCode.UNSET  # in a thread, after the lock went
