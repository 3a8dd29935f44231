"""A secret name never leaves through a log line or a span, whichever way a write fails.

Each failure is driven with a recognisable secret name, with tracing off and on; every log record
of every logger is captured at DEBUG (SQLAlchemy's and asyncpg's included), and with tracing on
every exported span (attributes, events, status). The secret must be in none of them, while the
error log line still says what failed, for which request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.settings import Settings
from tests.conftest import CapturedLogs
from tests.helpers import (
    COMMIT_GUARD,
    FAILS_AT_COMMIT,
    TcpProxy,
    create,
    direct_engine,
    held_write_lock,
    run_sql,
    settings_for,
)

REQUEST_ID = "leak-check-1"


@pytest.fixture(params=[False, True], ids=["tracing-off", "tracing-on"])
def tracing(request: pytest.FixtureRequest) -> bool:
    on: bool = request.param
    if on:
        request.getfixturevalue("spans")
    return on


@pytest.fixture
def secret() -> str:
    return f"Peter Parker Secret {uuid.uuid4().hex}"


def hero_with(secret: str, name: str = "Leaky") -> dict[str, Any]:
    return {"name": name, "secret_name": secret}


def assert_not_leaked(
    secret: str, logs: CapturedLogs, spans: InMemorySpanExporter | None, failure: str
) -> None:
    """No log record or span holds ``secret``; the error log names ``failure`` and the request."""
    text = logs.text()
    assert secret not in text
    assert any(
        failure in record.getMessage() and f"request_id={REQUEST_ID}" in record.getMessage()
        for record in logs.records
    ), text
    if spans is not None:
        exported = spans.get_finished_spans()
        assert exported
        for span in exported:
            assert secret not in span.to_json()


@pytest.fixture
def exported(tracing: bool, request: pytest.FixtureRequest) -> InMemorySpanExporter | None:
    if not tracing:
        return None
    spans: InMemorySpanExporter = request.getfixturevalue("spans")
    return spans


def test_sqlite_write_lock_held(
    tmp_path: Path,
    tracing: bool,
    exported: InMemorySpanExporter | None,
    all_logs: CapturedLogs,
    secret: str,
) -> None:
    database = tmp_path / "h.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        sqlite_busy_timeout_ms=50,
        tracing=tracing,
        log_level="DEBUG",
    )
    with TestClient[Litestar](create_app(settings)) as client, held_write_lock(database):
        response = client.post(
            "/heroes", json=hero_with(secret), headers={"X-Request-ID": REQUEST_ID}
        )

    assert response.status_code == 503
    assert_not_leaked(secret, all_logs, exported, "database unavailable")


def test_write_refused_at_commit(
    database_url: str,
    tracing: bool,
    exported: InMemorySpanExporter | None,
    all_logs: CapturedLogs,
    secret: str,
) -> None:
    settings = settings_for(database_url, tracing=tracing, log_level="DEBUG")
    with TestClient[Litestar](create_app(settings)) as client:
        run_sql(settings, COMMIT_GUARD[direct_engine(database_url).dialect.name])
        response = client.post(
            "/heroes",
            json=hero_with(secret, FAILS_AT_COMMIT),
            headers={"X-Request-ID": REQUEST_ID},
        )

    assert response.status_code == 409
    assert_not_leaked(secret, all_logs, exported, "write refused by the database")


@pytest.fixture
def row_locker(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection that will hold row locks in an open transaction."""
    with psycopg.connect(postgres_url) as connection:
        yield connection
        connection.rollback()


def test_postgres_row_lock_held_past_the_statement_timeout(
    postgres_url: str,
    tracing: bool,
    exported: InMemorySpanExporter | None,
    all_logs: CapturedLogs,
    secret: str,
    row_locker: psycopg.Connection[Any],
) -> None:
    settings = Settings(
        database_url=postgres_url,
        db_statement_timeout_ms=200,
        tracing=tracing,
        log_level="DEBUG",
    )
    with TestClient[Litestar](create_app(settings)) as client:
        hero = create(client, "Locked")
        row_locker.execute("SELECT id FROM heroes WHERE id = %s FOR UPDATE", [hero["id"]])
        response = client.patch(
            f"/heroes/{hero['id']}",
            json={"secret_name": secret},
            headers={"X-Request-ID": REQUEST_ID},
        )
        row_locker.rollback()

    assert response.status_code == 503
    assert_not_leaked(secret, all_logs, exported, "database unavailable")
    engine = direct_engine(postgres_url)
    with engine.connect() as connection:
        connection.exec_driver_sql("TRUNCATE heroes RESTART IDENTITY")
        connection.commit()
    engine.dispose()


def test_postgres_going_away(
    postgres_url: str,
    tracing: bool,
    exported: InMemorySpanExporter | None,
    all_logs: CapturedLogs,
    secret: str,
) -> None:
    url = sa.make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    settings = Settings(
        database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
        db_connect_timeout=2,
        tracing=tracing,
        log_level="DEBUG",
    )
    try:
        with TestClient[Litestar](create_app(settings)) as client:
            client.get("/heroes")  # a pooled connection, which the proxy then cuts
            proxy.stop()
            response = client.post(
                "/heroes", json=hero_with(secret), headers={"X-Request-ID": REQUEST_ID}
            )
    finally:
        proxy.stop()

    assert response.status_code == 503
    assert_not_leaked(secret, all_logs, exported, "database unavailable")
