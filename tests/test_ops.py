"""Operations: health checks, request ids, security headers, the access log, settings at work."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from service.app import create_app
from service.http.hosts import host_matches
from service.ops.health import LEAVING
from service.ops.requests import choose_request_id
from service.settings import Settings
from tests.helpers import Client, assert_error, create, new_hero


def test_live_answers_without_the_database(client: Client) -> None:
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_answers_when_the_database_does(client: Client) -> None:
    assert client.get("/health/ready").json() == {"status": "ready"}


@pytest.mark.parametrize("path", ["/heroes", "/heroes/1", "/nowhere", "/health/live"])
def test_every_answer_has_a_request_id_and_nosniff(client: Client, path: str) -> None:
    response = client.get(path)

    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["x-content-type-options"] == "nosniff"


def test_client_request_id_is_returned(client: Client) -> None:
    response = client.get("/heroes", headers={"X-Request-ID": "trace-42.a_b:c"})

    assert response.headers["x-request-id"] == "trace-42.a_b:c"


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "new\\nline", "<script>"])
def test_unsafe_request_id_is_replaced(client: Client, sent: str) -> None:
    response = client.get("/heroes", headers={"X-Request-ID": sent})

    assert response.headers["x-request-id"] != sent
    assert len(response.headers["x-request-id"]) == 32


def test_access_log_has_one_json_line_per_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.get("/heroes/12345", headers={"X-Request-ID": "abc"})

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line.pop("duration_ms") >= 0
    assert line == {
        "method": "GET",
        "path": "/heroes/12345",
        "status": 404,
        "request_id": "abc",
        "client": "testclient",
    }


@pytest.fixture
def locked_client(tmp_path: object) -> Iterator[Client]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", api_key="k" * 32)
    with TestClient[Litestar](create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Bearer {'k' * 31}", "k" * 32, f"Basic {'k' * 32}"]
)
def test_with_api_key_writes_without_it_are_401(
    locked_client: Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = locked_client.post("/heroes", json=new_hero(), headers=headers)

    assert_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert locked_client.get("/heroes").json() == []


def test_with_api_key_writes_with_it_succeed_and_reads_stay_open(locked_client: Client) -> None:
    auth = {"Authorization": f"Bearer {'k' * 32}"}

    hero = locked_client.post("/heroes", json=new_hero(), headers=auth).json()
    patched = locked_client.patch(f"/heroes/{hero['id']}", json={"age": 1}, headers=auth)
    read = locked_client.get(f"/heroes/{hero['id']}")
    deleted = locked_client.delete(f"/heroes/{hero['id']}", headers=auth)

    assert (patched.status_code, read.status_code, deleted.status_code) == (200, 200, 200)


def test_with_api_key_the_document_declares_the_bearer_scheme(locked_client: Client) -> None:
    document = locked_client.get("/schema/openapi.json").json()
    create_op = document["paths"]["/heroes"]["post"]

    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert create_op["security"] == [{"apiKey": []}]
    assert "401" in create_op["responses"]
    assert "security" not in document["paths"]["/heroes"]["get"]


def test_without_api_key_the_scheme_is_described_but_no_operation_requires_it(
    client: Client,
) -> None:
    document = client.get("/schema/openapi.json").json()
    create_op = document["paths"]["/heroes"]["post"]

    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "security" not in create_op
    assert "401" in create_op["responses"]  # the same document whatever the settings


def test_readiness_while_shutting_down_is_503_with_retry_after(client: Client) -> None:
    LEAVING.set()
    try:
        response = client.get("/health/ready")
    finally:
        LEAVING.clear()

    assert_error(response, 503)
    assert response.headers["retry-after"] == "1"  # as every 503 says in the document


def test_rate_limit_answers_429_past_the_limit_but_spares_health(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", rate_limit_per_minute=3)
    with TestClient[Litestar](create_app(settings)) as client:
        statuses = [client.get("/heroes").status_code for _ in range(4)]
        health = client.get("/health/live")
        limited = client.get("/heroes")

    assert statuses == [200, 200, 200, 429]
    assert health.status_code == 200
    assert_error(limited, 429)


def test_unknown_host_is_400(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", allowed_hosts="heroes.example")
    with TestClient[Litestar](create_app(settings), base_url="http://heroes.example") as client:
        allowed = client.get("/heroes")
        refused = client.get("/heroes", headers={"Host": "evil.example"})

    assert allowed.status_code == 200
    assert_error(refused, 400)


def test_cors_allows_the_configured_origin_only(tmp_path: object) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db", cors_allow_origins="https://app.example"
    )
    with TestClient[Litestar](create_app(settings)) as client:
        create(client)
        allowed = client.get("/heroes/1", headers={"Origin": "https://app.example"})
        other = client.get("/heroes/1", headers={"Origin": "https://evil.example"})

    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "etag" in allowed.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


def test_metrics_are_served_when_enabled(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", metrics=True)
    with TestClient[Litestar](create_app(settings)) as client:
        client.get("/heroes")
        body = client.get("/metrics").text

    assert "hero_service_requests_total" in body
    assert "hero_service_request_duration_seconds_bucket" in body


def test_metrics_are_absent_by_default(client: Client) -> None:
    assert_error(client.get("/metrics"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/heroes",
        "/heroes/1",
        "/heroes/12345",
        "/health/live",
        "/health/ready",
        "/schema/openapi.json",
        "/schema/swagger",
    ],
)
def test_head_answers_as_get_without_the_body(client: Client, path: str) -> None:
    create(client)

    get, head = client.get(path), client.head(path)

    def comparable(headers: object) -> dict[str, str]:
        return {k: v for k, v in dict(headers).items() if k not in {"date", "x-request-id"}}  # type: ignore[call-overload]

    assert head.status_code == get.status_code
    assert comparable(head.headers) == comparable(get.headers)
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content)


def test_head_is_logged_as_head(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.head("/heroes")

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert [(line["method"], line["status"]) for line in lines] == [("HEAD", 200)]


def test_access_log_names_the_forwarded_client_behind_a_trusted_proxy(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", forwarded_allow_ips="*")
    access = logging.getLogger("service.access")
    with TestClient[Litestar](create_app(settings)) as client:
        access.addHandler(caplog.handler)  # after startup, which configures the logger
        try:
            client.get("/heroes", headers={"X-Forwarded-For": "203.0.113.7"})
        finally:
            access.removeHandler(caplog.handler)

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert [line["client"] for line in lines] == ["203.0.113.7"]


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("heroes.example", ["heroes.example"], True),
        ("Heroes.Example:8443", ["heroes.example"], True),
        ("api.heroes.example", ["*.heroes.example"], True),
        ("heroes.example", ["*.heroes.example"], False),
        ("evilheroes.example", ["*.heroes.example"], False),
        ("heroes.example.evil", ["heroes.example"], False),
        ("[::1]", ["[::1]"], True),
        ("[::1]:8000", ["[::1]"], True),
        ("", ["heroes.example"], False),
    ],
)
def test_host_matches(host: str, allowed: list[str], expected: bool) -> None:
    assert host_matches(host, allowed) is expected


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"trace-42.a_b:c", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"new\nline", False),
        (b"caf\xc3\xa9", False),
    ],
)
def test_choose_request_id_keeps_only_sane_tokens(sent: bytes, kept: bool) -> None:
    chosen = choose_request_id([(b"x-request-id", sent)])

    assert (chosen == sent.decode("latin-1")) is kept
    assert kept or len(chosen) == 32


def test_request_id_is_in_the_request_state(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", access_log=False)
    app = create_app(settings)

    @get("/whoami", sync_to_thread=False)
    def whoami(request: Request[Any, Any, Any]) -> str:
        return str(request.state.request_id)

    app.register(whoami)
    with TestClient[Litestar](app) as client:
        response = client.get("/whoami", headers={"X-Request-ID": "abc"})

    assert response.text == "abc"
    assert response.headers["x-request-id"] == "abc"


def test_the_services_warnings_reach_stderr_in_the_standard_format(tmp_path: Path) -> None:
    # In a process of its own: the app's logging config is the process's, as it is in a server.
    code = (
        "import logging; from service.app import create_app; from service.settings import "
        f"Settings; create_app(Settings(database_url='sqlite:///{tmp_path}/h.db')); "
        "logging.getLogger('service').warning('the probe %s', 42)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/app.db"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    line = r"^WARNING \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} service the probe 42$"
    assert re.search(line, done.stderr, re.MULTILINE), done.stderr
