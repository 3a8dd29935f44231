"""API_KEY holds several keys, any of which may write, so a key can be rotated without downtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.settings import Settings
from tests.conftest import CapturedLogs
from tests.helpers import Client, assert_error, new_hero

OLD_KEY = "old-key-4f0c1e8a9b7d6c5e"
NEW_KEY = "new-key-93b2d7a1c6e8f054"
OTHER_KEY = "other-key-0d9e8c7b6a5f4e3d"


@pytest.fixture
def rotating_settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        api_key=f"{OLD_KEY}, {NEW_KEY}",
        log_level="DEBUG",
    )


@pytest.fixture
def rotating_client(rotating_settings: Settings) -> Iterator[Client]:
    with TestClient[Litestar](create_app(rotating_settings)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("key", [OLD_KEY, NEW_KEY])
def test_each_configured_key_may_write(rotating_client: Client, key: str) -> None:
    created = rotating_client.post("/heroes", json=new_hero(), headers=bearer(key))
    hero_id = created.json()["id"]
    patched = rotating_client.patch(f"/heroes/{hero_id}", json={"age": 3}, headers=bearer(key))
    deleted = rotating_client.delete(f"/heroes/{hero_id}", headers=bearer(key))

    assert (created.status_code, patched.status_code, deleted.status_code) == (201, 200, 200)


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {OTHER_KEY}", f"Bearer {OLD_KEY},{NEW_KEY}", f"Bearer {OLD_KEY}, {NEW_KEY}", ""],
)
def test_a_key_not_configured_is_401(rotating_client: Client, authorization: str) -> None:
    response = rotating_client.post(
        "/heroes", json=new_hero(), headers={"Authorization": authorization}
    )

    assert_error(response, 401)
    assert rotating_client.get("/heroes").json() == []


def test_reads_need_no_key(rotating_client: Client) -> None:
    rotating_client.post("/heroes", json=new_hero("Reader"), headers=bearer(NEW_KEY))

    assert rotating_client.get("/heroes").status_code == 200
    assert rotating_client.get("/heroes/1").json()["name"] == "Reader"


def test_keys_never_reach_the_logs(rotating_settings: Settings, all_logs: CapturedLogs) -> None:
    with TestClient[Litestar](create_app(rotating_settings)) as client:
        for key in (OLD_KEY, NEW_KEY, OTHER_KEY):
            client.post("/heroes", json=new_hero(), headers=bearer(key))
        client.get("/heroes", headers=bearer(OTHER_KEY))

    logs = all_logs.text()
    assert "POST" in logs  # the access log was captured
    for key in (OLD_KEY, NEW_KEY, OTHER_KEY):
        assert key not in logs


def test_settings_repr_and_str_redact_the_keys_and_the_database_password() -> None:
    settings = Settings.from_env(
        {"API_KEY": f"{OLD_KEY},{NEW_KEY}", "DATABASE_URL": "postgresql://hero:pa55-w0rd@db/h"}
    )

    for shown in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert OLD_KEY not in shown
        assert NEW_KEY not in shown
        assert "pa55-w0rd" not in shown
        assert "api_key='**redacted**'" in shown
        assert "postgresql://hero:**redacted**@db/h" in shown
    assert settings.api_keys == [OLD_KEY, NEW_KEY]


def test_settings_repr_shows_an_unset_key_as_empty() -> None:
    assert "api_key=''" in repr(Settings())


def test_keys_never_reach_the_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db", api_key=f"{OLD_KEY},{NEW_KEY}", tracing=True
    )
    with TestClient[Litestar](create_app(settings)) as client:
        for key in (OLD_KEY, NEW_KEY, OTHER_KEY):
            client.post("/heroes", json=new_hero(), headers=bearer(key))

    exported = [span.to_json() for span in spans.get_finished_spans()]
    assert sum('"POST /heroes"' in span for span in exported) == 3
    for key in (OLD_KEY, NEW_KEY, OTHER_KEY):
        assert not [span for span in exported if key in span]
