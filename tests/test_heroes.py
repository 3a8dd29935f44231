"""The heroes API over HTTP: what each endpoint answers to well-formed requests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import Client, assert_error, create, moment, new_hero, without_timestamps


def test_create_answers_201_with_the_public_hero_and_its_location(client: Client) -> None:
    response = client.post("/heroes", json=new_hero("Deadpond", 30))

    assert response.status_code == 201
    hero = response.json()
    assert without_timestamps(hero) == {"id": hero["id"], "name": "Deadpond", "age": 30}
    assert response.headers["location"] == f"/heroes/{hero['id']}"


def test_create_without_age_stores_null(client: Client) -> None:
    body = new_hero()
    del body["age"]

    hero = client.post("/heroes", json=body).json()

    assert hero["age"] is None
    assert client.get(f"/heroes/{hero['id']}").json()["age"] is None


def test_create_ignores_a_client_sent_id(client: Client) -> None:
    first = create(client)

    response = client.post("/heroes", json=new_hero(id=first["id"]))

    assert response.status_code == 201
    assert response.json()["id"] != first["id"]


def test_create_stores_unicode_as_sent(client: Client) -> None:
    name = "Ünïcødé 🦸 スーパーマン"

    hero = create(client, name)

    assert client.get(f"/heroes/{hero['id']}").json()["name"] == name


def test_get_returns_the_stored_hero(client: Client) -> None:
    hero = create(client, "Rusty-Man", 48)

    response = client.get(f"/heroes/{hero['id']}")

    assert response.status_code == 200
    assert response.json() == hero


def test_get_unknown_id_is_404_hero_not_found(client: Client) -> None:
    error = assert_error(client.get("/heroes/12345"), 404)

    assert error.detail == "Hero not found"


def test_list_is_ordered_by_id(client: Client) -> None:
    ids = [create(client, name)["id"] for name in ["Zed", "Amy", "Mo"]]

    assert [hero["id"] for hero in client.get("/heroes").json()] == sorted(ids)


def test_list_of_an_empty_table_is_an_empty_array(client: Client) -> None:
    assert client.get("/heroes").json() == []


def test_list_pages_show_every_hero_exactly_once(client: Client) -> None:
    ids = [create(client, f"Hero {i}")["id"] for i in range(23)]

    seen = [
        hero["id"]
        for offset in range(0, 30, 7)
        for hero in client.get("/heroes", params={"offset": offset, "limit": 7}).json()
    ]

    assert seen == ids


def test_list_returns_at_most_100_by_default(client: Client) -> None:
    for i in range(101):
        create(client, f"Hero {i}")

    assert len(client.get("/heroes").json()) == 100
    assert len(client.get("/heroes", params={"offset": 100}).json()) == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"name": "Spider-Boy"}, ["Spider-Boy"]),
        ({"min_age": 40}, ["Rusty-Man", "Tarantula"]),
        ({"max_age": 40}, ["Tarantula"]),
        ({"min_age": 40, "max_age": 40}, ["Tarantula"]),
        ({"name": "Rusty-Man", "max_age": 40}, []),
        ({"name": "Nobody"}, []),
    ],
)
def test_list_filters(client: Client, params: dict[str, str | int], expected: list[str]) -> None:
    create(client, "Spider-Boy")
    create(client, "Rusty-Man", 48)
    create(client, "Tarantula", 40)

    heroes = client.get("/heroes", params=params).json()

    assert [hero["name"] for hero in heroes] == expected


def test_patch_changes_only_the_fields_sent(client: Client) -> None:
    hero = create(client, "Deadpond", 30)

    response = client.patch(f"/heroes/{hero['id']}", json={"name": "Deadpool"})

    assert response.status_code == 200
    assert without_timestamps(response.json()) == {"id": hero["id"], "name": "Deadpool", "age": 30}
    assert client.get(f"/heroes/{hero['id']}").json() == response.json()


def test_patch_with_null_age_clears_it(client: Client) -> None:
    hero = create(client, "Deadpond", 30)

    response = client.patch(f"/heroes/{hero['id']}", json={"age": None})

    assert response.json()["age"] is None
    assert client.get(f"/heroes/{hero['id']}").json()["age"] is None


def test_patch_with_empty_object_changes_nothing(client: Client) -> None:
    hero = create(client, "Deadpond", 30)

    response = client.patch(f"/heroes/{hero['id']}", json={})

    assert response.status_code == 200
    assert response.json() == hero


def test_patch_of_secret_name_answers_without_it(client: Client) -> None:
    hero = create(client)

    response = client.patch(f"/heroes/{hero['id']}", json={"secret_name": "secret-new-identity"})

    assert response.status_code == 200
    assert without_timestamps(response.json()) == without_timestamps(hero)


def test_patch_unknown_id_is_404(client: Client) -> None:
    assert_error(client.patch("/heroes/12345", json={"name": "Nobody"}), 404)


@pytest.mark.parametrize("body", [{"name": "Nobody"}, {}])
def test_patch_unknown_id_is_404_whatever_the_body(client: Client, body: dict[str, str]) -> None:
    assert assert_error(client.patch("/heroes/12345", json=body), 404).detail == "Hero not found"


def test_delete_answers_ok_and_the_hero_is_gone(client: Client) -> None:
    hero = create(client)

    response = client.delete(f"/heroes/{hero['id']}")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_error(client.get(f"/heroes/{hero['id']}"), 404)


def test_second_delete_is_404(client: Client) -> None:
    hero = create(client)
    client.delete(f"/heroes/{hero['id']}")

    assert_error(client.delete(f"/heroes/{hero['id']}"), 404)


@pytest.mark.parametrize("slash", ["", "/"])
def test_every_path_answers_with_and_without_trailing_slash(client: Client, slash: str) -> None:
    created = client.post(f"/heroes{slash}", json=new_hero(), follow_redirects=False)
    path = f"/heroes/{created.json()['id']}{slash}"

    answers = [
        created,
        client.get(f"/heroes{slash}", follow_redirects=False),
        client.get(path, follow_redirects=False),
        client.patch(path, json={"age": 3}, follow_redirects=False),
        client.delete(path, follow_redirects=False),
    ]

    assert [response.status_code for response in answers] == [201, 200, 200, 200, 200]


def test_unknown_path_is_404_of_the_error_shape(client: Client) -> None:
    assert_error(client.get("/villains"), 404)


def test_unsupported_method_is_405_of_the_error_shape(client: Client) -> None:
    response = client.put("/heroes/1", json=new_hero())

    assert_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {
        "GET",
        "HEAD",
        "PATCH",
        "DELETE",
        "OPTIONS",
    }


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/heroes", "GET, HEAD, OPTIONS, POST"),
        ("/heroes/", "GET, HEAD, OPTIONS, POST"),
        ("/heroes/1", "DELETE, GET, HEAD, OPTIONS, PATCH"),
        ("/heroes/1/", "DELETE, GET, HEAD, OPTIONS, PATCH"),
    ],
)
def test_options_lists_every_method_of_the_path(client: Client, path: str, methods: str) -> None:
    response = client.options(path)

    assert response.status_code == 204
    assert response.headers["allow"] == methods


def test_new_hero_was_created_and_updated_at_the_same_moment_in_utc(client: Client) -> None:
    before = datetime.now(UTC)

    hero = create(client)

    created, updated = moment(hero["created_at"]), moment(hero["updated_at"])
    assert created == updated
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize("body", [{"age": 31}, {"age": 30}, {"secret_name": "secret-other"}])
def test_every_successful_patch_moves_updated_at_only(
    client: Client, body: dict[str, object]
) -> None:
    hero = create(client, "Deadpond", 30)

    patched = client.patch(f"/heroes/{hero['id']}", json=body).json()

    assert patched["created_at"] == hero["created_at"]
    assert moment(patched["updated_at"]) > moment(hero["updated_at"])
    assert client.get(f"/heroes/{hero['id']}").json() == patched


def test_empty_patch_leaves_updated_at_alone(client: Client) -> None:
    hero = create(client)

    assert client.patch(f"/heroes/{hero['id']}", json={}).json() == hero
    assert client.get(f"/heroes/{hero['id']}").json() == hero


def test_refused_patch_leaves_updated_at_alone(client: Client) -> None:
    hero = create(client)

    assert_error(client.patch(f"/heroes/{hero['id']}", json={"age": -1}), 400)
    stale = client.patch(f"/heroes/{hero['id']}", json={"age": 3}, headers={"If-Match": '"7"'})

    assert_error(stale, 412)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


def test_list_shows_the_same_timestamps_as_get(client: Client) -> None:
    hero = create(client)
    client.patch(f"/heroes/{hero['id']}", json={"age": 5})

    listed = client.get("/heroes").json()

    assert listed == [client.get(f"/heroes/{hero['id']}").json()]


def test_heroes_read_the_same_when_statements_are_watched(app: Litestar, client: Client) -> None:
    hero = create(client, "Deadpond", 30)
    patched = client.patch(f"/heroes/{hero['id']}", json={"age": 31}).json()
    fast = [client.get(f"/heroes/{hero['id']}").json(), client.get("/heroes").json()]
    config = app.plugins.get(SQLAlchemyPlugin).config
    engine = (config[0] if isinstance(config, Sequence) else config).get_engine()
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    watched: list[str] = []

    def watch(*args: Any) -> None:
        watched.append(args[2])

    # A listener sends every statement through SQLAlchemy's own execution
    # (service.database.statements).
    sa.event.listen(sync_engine, "before_cursor_execute", watch)
    try:
        slow = [client.get(f"/heroes/{hero['id']}").json(), client.get("/heroes").json()]
    finally:
        sa.event.remove(sync_engine, "before_cursor_execute", watch)

    assert watched
    assert slow == fast == [patched, [patched]]
