"""Creates that can be retried safely: the ``Idempotency-Key`` request header on POST /heroes.

The same key with the same body, within the retention window, answers the first result again
(with ``Idempotent-Replayed: true``) and creates nothing; the same key with another body is
422; a key whose create is still running is 409. The key is stored with the hero, in the same
transaction, on both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from service.app import create_app
from service.database.tables import ANY_CREDENTIAL, IdempotencyKey
from service.settings import Settings
from tests.helpers import (
    Client,
    assert_error,
    direct_engine,
    held_write_lock,
    new_hero,
    serving,
    settings_for,
    slow_inserts,
    sqlite_write_lock,
)

keys = cast(sa.Table, IdempotencyKey.__table__)
REPLAYED = "idempotent-replayed"


def a_key() -> str:
    return str(uuid.uuid4())


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def hero_count(client: Client) -> int:
    return len(client.get("/heroes").json())


def test_same_key_and_body_answers_the_first_result_again_and_creates_nothing(
    client: Client,
) -> None:
    key, body = a_key(), new_hero("Once", 30)

    first = client.post("/heroes", json=body, headers=keyed(key))
    again = client.post("/heroes", json=body, headers=keyed(key))

    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    assert again.status_code == 201, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    for header in ("location", "etag"):
        assert again.headers[header] == first.headers[header]
    assert hero_count(client) == 1


def test_a_replay_answers_the_first_result_even_after_the_hero_changed(client: Client) -> None:
    key, body = a_key(), new_hero("Original")
    first = client.post("/heroes", json=body, headers=keyed(key))
    hero_id = first.json()["id"]
    client.patch(f"/heroes/{hero_id}", json={"name": "Renamed"})
    after_patch = client.post("/heroes", json=body, headers=keyed(key))
    client.delete(f"/heroes/{hero_id}")
    after_delete = client.post("/heroes", json=body, headers=keyed(key))

    for replay in (after_patch, after_delete):
        assert replay.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers[REPLAYED] == "true"
    assert hero_count(client) == 0


def test_same_key_with_another_body_is_422_and_creates_nothing(client: Client) -> None:
    key = a_key()
    client.post("/heroes", json=new_hero("First"), headers=keyed(key))

    refused = client.post("/heroes", json=new_hero("Second"), headers=keyed(key))

    assert_error(refused, 422, "Idempotency-Key")
    assert [hero["name"] for hero in client.get("/heroes").json()] == ["First"]


def test_fields_the_api_ignores_make_no_other_body(client: Client) -> None:
    key, body = a_key(), new_hero("Same", 3)

    first = client.post("/heroes", json=body, headers=keyed(key))
    again = client.post("/heroes", json={**body, "id": 99}, headers=keyed(key))

    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


def test_different_keys_create_different_heroes(client: Client) -> None:
    body = new_hero("Twice")

    ids = {client.post("/heroes", json=body, headers=keyed(a_key())).json()["id"] for _ in "ab"}

    assert len(ids) == 2


def test_a_key_as_a_structured_field_string_is_the_same_key(client: Client) -> None:
    body = new_hero("Quoted")

    first = client.post("/heroes", json=body, headers=keyed('"order-7"'))
    again = client.post("/heroes", json=body, headers=keyed("order-7"))

    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "key",
    ["", " ", "two words", "ключ", '"unterminated', '""', '"a"b"', "x" * 256, '"\\n"'],
    ids=repr,
)
def test_a_malformed_key_is_400_naming_the_header(client: Client, key: str) -> None:
    response = client.post("/heroes", json=new_hero(), headers=[(b"Idempotency-Key", key.encode())])

    assert_error(response, 400, "Idempotency-Key")
    assert hero_count(client) == 0


def test_a_key_of_255_characters_is_accepted(client: Client) -> None:
    assert client.post("/heroes", json=new_hero(), headers=keyed("k" * 255)).status_code == 201


def age_keys(settings: Settings, seconds: float) -> None:
    """Make every stored key ``seconds`` older, behind the service's back."""
    engine = direct_engine(settings.database_url)
    with engine.begin() as connection:
        for key, created_at in connection.execute(sa.select(keys.c.key, keys.c.created_at)):
            aware = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
            older = datetime.fromtimestamp(aware.timestamp() - seconds, UTC)
            connection.execute(sa.update(keys).where(keys.c.key == key).values(created_at=older))
    engine.dispose()


def stored_keys(settings: Settings) -> set[str]:
    engine = direct_engine(settings.database_url)
    with engine.connect() as connection:
        found = set(connection.execute(sa.select(keys.c.key)).scalars())
    engine.dispose()
    return found


DAY = 24 * 3600


def test_a_key_older_than_the_retention_is_forgotten(client: Client, settings: Settings) -> None:
    key, body = a_key(), new_hero("Old")
    first = client.post("/heroes", json=body, headers=keyed(key))
    age_keys(settings, DAY + 1)

    again = client.post("/heroes", json=body, headers=keyed(key))

    assert again.status_code == 201
    assert REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert again.headers["location"] == f"/heroes/{again.json()['id']}"
    assert client.post("/heroes", json=body, headers=keyed(key)).headers[REPLAYED] == "true"


def test_a_key_within_the_retention_is_kept(client: Client, settings: Settings) -> None:
    key, body = a_key(), new_hero("Recent")
    client.post("/heroes", json=body, headers=keyed(key))
    age_keys(settings, DAY - 60)

    assert client.post("/heroes", json=body, headers=keyed(key)).headers[REPLAYED] == "true"


def test_forgotten_keys_are_deleted_by_later_keyed_creates(
    client: Client, settings: Settings
) -> None:
    old = [a_key() for _ in range(3)]
    for key in old:
        client.post("/heroes", json=new_hero(), headers=keyed(key))
    age_keys(settings, DAY + 1)

    new = [a_key() for _ in range(2)]
    for key in new:
        client.post("/heroes", json=new_hero(), headers=keyed(key))

    assert stored_keys(settings) == set(new)


def test_the_retention_is_a_setting(database_url: str) -> None:
    settings = settings_for(database_url, idempotency_key_retention_seconds=60)
    with TestClient(create_app(settings)) as client:
        key, body = a_key(), new_hero("Short")
        client.post("/heroes", json=body, headers=keyed(key))
        age_keys(settings, 61)

        again = client.post("/heroes", json=body, headers=keyed(key))

    assert REPLAYED not in again.headers


# A create still running when the same key comes again: 409, then the first result.


@contextlib.contextmanager
def create_held(database_url: str) -> Iterator[Callable[[], None]]:
    """A create that cannot finish until released: the SQLite write lock, or a trigger."""
    if database_url.startswith("sqlite"):
        with sqlite_write_lock(Settings(database_url=database_url)) as release:
            yield release
    else:
        with slow_inserts(database_url) as release:
            yield release


def test_a_key_whose_create_is_still_running_is_409_then_replayed(database_url: str) -> None:
    key, body = a_key(), new_hero("Slow")

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response, Any]:
        settings = settings_for(database_url, access_log=False)
        async with serving(create_app(settings)) as client:
            with create_held(database_url) as release:
                first = asyncio.ensure_future(client.post("/heroes", json=body, headers=keyed(key)))
                await asyncio.sleep(0.3)
                during = await client.post("/heroes", json=body, headers=keyed(key))
                still_running = not first.done()
                release()
                answered = await first
            after = await client.post("/heroes", json=body, headers=keyed(key))
            listed = (await client.get("/heroes")).json()
            assert still_running
            return answered, during, after, listed

    answered, during, after, listed = asyncio.run(scenario())

    assert answered.status_code == 201, answered.text
    assert_error(during, 409, "Idempotency-Key")
    assert during.headers["retry-after"] == "1"
    assert after.headers[REPLAYED] == "true"
    assert after.json() == answered.json()
    assert [hero["name"] for hero in listed] == ["Slow"]


def test_a_keyed_create_answered_503_says_retrying_with_the_key_is_safe(tmp_path: Path) -> None:
    database = tmp_path / "heroes.db"
    settings = Settings(database_url=f"sqlite:///{database}", sqlite_busy_timeout_ms=50)
    with TestClient(create_app(settings)) as client, held_write_lock(database):
        keyed_503 = client.post("/heroes", json=new_hero(), headers=keyed(a_key()))
        plain_503 = client.post("/heroes", json=new_hero())

    assert "same Idempotency-Key is safe" in assert_error(keyed_503, 503).detail
    assert "nothing was stored" in assert_error(plain_503, 503).detail


def test_a_key_on_a_write_that_ignores_keys_is_not_said_to_make_a_retry_safe(
    tmp_path: Path,
) -> None:
    database = tmp_path / "heroes.db"
    settings = Settings(database_url=f"sqlite:///{database}", sqlite_busy_timeout_ms=50)
    with TestClient(create_app(settings)) as client:
        hero_id = client.post("/heroes", json=new_hero()).json()["id"]
        with held_write_lock(database):
            patched = client.patch(f"/heroes/{hero_id}", json={"age": 3}, headers=keyed(a_key()))

    assert "Idempotency-Key is safe" not in assert_error(patched, 503).detail


def test_two_keys_in_one_request_are_400(client: Client) -> None:
    headers = [(b"Idempotency-Key", b"first"), (b"Idempotency-Key", b"second")]

    response = client.post("/heroes", json=new_hero(), headers=headers)

    assert_error(response, 400, "Idempotency-Key")
    assert hero_count(client) == 0


@pytest.mark.parametrize("tracing", [False, True], ids=["tracing-off", "tracing-on"])
@pytest.mark.parametrize("where", ["file", "memory"])
def test_keyed_creates_on_sqlite_in_memory_and_traced(
    tmp_path: Path, request: pytest.FixtureRequest, tracing: bool, where: str
) -> None:
    """The other ways SQLite runs a unit: inline (in memory), through SQLAlchemy (traced)."""
    if tracing:
        request.getfixturevalue("spans")
    url = "sqlite:///:memory:" if where == "memory" else f"sqlite:///{tmp_path / 'h.db'}"
    with TestClient(create_app(Settings(database_url=url, tracing=tracing))) as client:
        key, body = a_key(), new_hero("Traced")
        first = client.post("/heroes", json=body, headers=keyed(key))
        again = client.post("/heroes", json=body, headers=keyed(key))
        other = client.post("/heroes", json=new_hero("Other"), headers=keyed(key))
        count = hero_count(client)

    assert first.status_code == 201, first.text
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert_error(other, 422, "Idempotency-Key")
    assert count == 1


# Keys per credential: each API key has keys of its own (the key is stored with the digest of
# the API key); without API keys every write is "anonymous".

FIRST_API_KEY = "first-api-key-5b1f0e2d9c8a7b6e"
SECOND_API_KEY = "second-api-key-0a9b8c7d6e5f4a3b"


@pytest.fixture
def two_keys_settings(database_url: str) -> Settings:
    """Settings with two API keys, of two clients."""
    return settings_for(database_url, api_key=f"{FIRST_API_KEY}, {SECOND_API_KEY}")


@pytest.fixture
def two_keys_client(two_keys_settings: Settings) -> Iterator[Client]:
    with TestClient(create_app(two_keys_settings)) as client:
        yield client


def sent_with(api_key: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}


def stored_rows(settings: Settings) -> list[dict[str, Any]]:
    engine = direct_engine(settings.database_url)
    with engine.connect() as connection:
        found = [dict(row._mapping) for row in connection.execute(sa.select(keys))]
    engine.dispose()
    return found


def test_a_credential_reusing_its_own_key_gets_the_first_answer_again(
    two_keys_client: Client,
) -> None:
    key, body = a_key(), new_hero("Mine")

    first = two_keys_client.post("/heroes", json=body, headers=sent_with(FIRST_API_KEY, key))
    again = two_keys_client.post("/heroes", json=body, headers=sent_with(FIRST_API_KEY, key))

    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


def test_another_credential_reusing_a_key_creates_its_own_hero(two_keys_client: Client) -> None:
    key, body = a_key(), new_hero("Theirs")
    first = two_keys_client.post("/heroes", json=body, headers=sent_with(FIRST_API_KEY, key))

    other = two_keys_client.post("/heroes", json=body, headers=sent_with(SECOND_API_KEY, key))
    again = two_keys_client.post("/heroes", json=body, headers=sent_with(SECOND_API_KEY, key))

    assert other.status_code == 201, other.text
    assert REPLAYED not in other.headers
    assert other.json()["id"] != first.json()["id"]
    assert again.headers[REPLAYED] == "true"
    assert again.json() == other.json()
    assert hero_count(two_keys_client) == 2


def test_another_credential_reusing_a_key_with_another_body_creates_its_own_hero(
    two_keys_client: Client,
) -> None:
    key = a_key()
    two_keys_client.post("/heroes", json=new_hero("One"), headers=sent_with(FIRST_API_KEY, key))

    other = two_keys_client.post(
        "/heroes", json=new_hero("Two"), headers=sent_with(SECOND_API_KEY, key)
    )

    assert other.status_code == 201, other.text
    assert other.json()["name"] == "Two"


def test_a_key_is_stored_with_the_digest_of_its_api_key_never_the_key(
    two_keys_client: Client, two_keys_settings: Settings
) -> None:
    key = a_key()
    two_keys_client.post("/heroes", json=new_hero(), headers=sent_with(FIRST_API_KEY, key))

    [row] = stored_rows(two_keys_settings)

    assert row["credential"] == hashlib.sha256(FIRST_API_KEY.encode()).hexdigest()
    assert not any(FIRST_API_KEY in str(value) for value in row.values())


def test_without_api_keys_the_credential_is_anonymous(client: Client, settings: Settings) -> None:
    client.post("/heroes", json=new_hero(), headers=keyed(a_key()))

    assert [row["credential"] for row in stored_rows(settings)] == ["anonymous"]


def test_a_key_stored_before_keys_had_credentials_is_found_by_any(
    two_keys_client: Client, two_keys_settings: Settings
) -> None:
    key, body = a_key(), new_hero("Older")
    first = two_keys_client.post("/heroes", json=body, headers=sent_with(FIRST_API_KEY, key))
    engine = direct_engine(two_keys_settings.database_url)
    with engine.begin() as connection:  # as the release before migration 0004 stored keys
        connection.execute(sa.update(keys).values(credential=ANY_CREDENTIAL))
    engine.dispose()

    again = two_keys_client.post("/heroes", json=body, headers=sent_with(SECOND_API_KEY, key))

    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
