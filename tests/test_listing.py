"""The list over HTTP: cursor pages (Link: rel="next"), order_by, name_prefix and count=true."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from service.database.pages import Position, fold
from service.heroes.controller import ORDERS
from service.http.cursors import encode_cursor
from service.settings import Settings
from tests.helpers import Client, assert_error, create, direct_engine

NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')

NAMES_AND_AGES = [
    ("Zed", None),
    ("amy", 30),
    ("Amy", 30),
    ("amy", None),
    ("Mo", 5),
    ("mo", 30),
    ("Ärger", 5),
    ("ärger", None),
    ("Bob", 0),
    ("bob", 30),
    ("Deadpond", 30),
    ("Zed", 5),
]
"""Heroes whose names repeat, also in another case, and whose ages repeat or are unknown."""


def next_url(response: Any) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    found = NEXT.match(link)
    assert found, link
    return found["url"]


def walk(client: Client, **params: Any) -> list[dict[str, Any]]:
    """Every hero of the list, following the next links from the first page."""
    response = client.get("/heroes", params=params)
    heroes: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text
        heroes += response.json()
        url = next_url(response)
        if url is None:
            return heroes
        response = client.get(url)


def walk_by_offset(client: Client, limit: int, **params: Any) -> list[dict[str, Any]]:
    heroes: list[dict[str, Any]] = []
    while page := client.get("/heroes", params={**params, "offset": len(heroes), "limit": limit}):
        assert page.status_code == 200, page.text
        if not page.json():
            return heroes
        heroes += page.json()
    return heroes


def in_order(heroes: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    """``heroes`` as the documented order sorts them."""
    sort = ORDERS.parse(order_by)

    def key(hero: dict[str, Any]) -> tuple[Any, ...]:
        if sort.key == "name":
            return (fold(hero["name"]), hero["id"])
        if sort.key == "age":  # a hero without an age comes before every age
            return (hero["age"] is not None, hero["age"] or 0, hero["id"])
        return (hero["id"],)

    return sorted(heroes, key=key, reverse=sort.descending)


@pytest.fixture
def heroes(client: Client) -> list[dict[str, Any]]:
    return [create(client, name, age) for name, age in NAMES_AND_AGES]


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
@pytest.mark.parametrize("order_by", ORDERS.order_by)
def test_following_next_lists_every_hero_once_in_order(
    client: Client, heroes: list[dict[str, Any]], order_by: str, limit: int
) -> None:
    walked = walk(client, order_by=order_by, limit=limit)

    assert walked == in_order(heroes, order_by)


@pytest.mark.parametrize("order_by", ORDERS.order_by)
def test_offset_pages_follow_the_same_order(
    client: Client, heroes: list[dict[str, Any]], order_by: str
) -> None:
    assert walk_by_offset(client, 5, order_by=order_by) == in_order(heroes, order_by)


def test_default_order_is_by_id(client: Client, heroes: list[dict[str, Any]]) -> None:
    assert client.get("/heroes").json() == heroes


def test_null_ages_come_first_with_age_and_last_with_minus_age(
    client: Client, heroes: list[dict[str, Any]]
) -> None:
    ascending = [hero["age"] for hero in client.get("/heroes?order_by=age").json()]
    descending = [hero["age"] for hero in client.get("/heroes?order_by=-age").json()]

    assert ascending == [None] * 3 + [0] + [5] * 3 + [30] * 5
    assert descending == ascending[::-1]


def test_full_page_links_to_the_next_keeping_filters_and_order(
    client: Client, heroes: list[dict[str, Any]]
) -> None:
    params: dict[str, str | int] = {
        "min_age": 1,
        "name_prefix": "a",
        "order_by": "-name",
        "limit": 1,
        "count": "true",
    }

    first = client.get("/heroes/", params=params)
    url = next_url(first)

    assert url is not None
    assert url.startswith("/heroes?")
    for key, value in params.items():
        assert f"{key}={value}" in url
    second = client.get(url)
    assert [hero["name"] for hero in first.json() + second.json()] == ["Amy", "amy"]
    assert second.headers["x-total-count"] == "2"
    assert next_url(second) is not None  # a full page, though nothing follows
    last = client.get(next_url(second) or "")
    assert last.json() == []
    assert "link" not in last.headers


def test_page_shorter_than_the_limit_has_no_next_link(
    client: Client, heroes: list[dict[str, Any]]
) -> None:
    response = client.get("/heroes", params={"limit": len(heroes) + 1})

    assert "link" not in response.headers


def test_offset_page_links_on_by_cursor(client: Client, heroes: list[dict[str, Any]]) -> None:
    first = client.get("/heroes", params={"offset": 3, "limit": 4, "order_by": "age"})

    url = next_url(first)
    assert url is not None
    assert "offset" not in url
    assert client.get(url).json() == in_order(heroes, "age")[7:11]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"name_prefix": "dead"}, ["Deadpond"]),
        ({"name_prefix": "DEADPOND"}, ["Deadpond"]),
        ({"name_prefix": "Deadponds"}, []),
        ({"name_prefix": "a"}, ["amy", "Amy", "amy"]),
        ({"name_prefix": "ä"}, ["ärger"]),  # only A-Z ignore their case
        ({"name_prefix": "Ä"}, ["Ärger"]),
        ({"name_prefix": "%"}, []),  # no LIKE: wildcards are plain characters
        ({"name_prefix": "_"}, []),
        ({"name_prefix": "z", "min_age": 1}, ["Zed"]),
        ({"name_prefix": "m", "order_by": "-age"}, ["mo", "Mo"]),
    ],
)
def test_name_prefix_finds_names_starting_with_it_ignoring_ascii_case(
    client: Client, heroes: list[dict[str, Any]], params: dict[str, Any], names: list[str]
) -> None:
    assert [hero["name"] for hero in client.get("/heroes", params=params).json()] == names


@pytest.mark.parametrize(
    "name", ["Deadpond", "ÄRGER ärger", "İstanbul", "ǅemal", "STRASSE ß", "ΣΊΣΥΦΟΣ", "\uff21\uff22"]
)
def test_database_folds_names_as_the_service_does(settings: Settings, name: str) -> None:
    engine = direct_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            # As the column stores it: in the "C" collation on PostgreSQL
            # (service.database.tables.Name).
            stored: sa.ColumnElement[str] = sa.literal(name, sa.String(255))
            if connection.dialect.name == "postgresql":
                stored = stored.collate("C")
            folded = connection.execute(sa.select(sa.func.lower(stored))).scalar_one()
    finally:
        engine.dispose()

    assert folded == fold(name)


def test_count_is_sent_only_when_asked(client: Client, heroes: list[dict[str, Any]]) -> None:
    assert "x-total-count" not in client.get("/heroes").headers
    assert "x-total-count" not in client.get("/heroes?count=false").headers
    assert client.get("/heroes?count=true&limit=1").headers["x-total-count"] == str(len(heroes))


@pytest.mark.parametrize(
    ("params", "total"),
    [
        ({"name_prefix": "a"}, 3),
        ({"min_age": 30}, 5),
        ({"max_age": 5, "name_prefix": "z"}, 1),
        ({"name": "Zed"}, 2),
        ({"name": "Nobody"}, 0),
    ],
)
def test_count_is_of_the_heroes_matching_the_filters(
    client: Client, heroes: list[dict[str, Any]], params: dict[str, Any], total: int
) -> None:
    response = client.get("/heroes", params={**params, "count": "true", "limit": 1})

    assert response.headers["x-total-count"] == str(total)


@pytest.mark.parametrize(
    "cursor",
    ["", "garbage!", "WzEsImlkIiw", "éé", encode_cursor(ORDERS.parse("id"), Position(5, 6))],
)
def test_bad_cursor_is_400_naming_it(client: Client, cursor: str) -> None:
    error = assert_error(client.get("/heroes", params={"cursor": cursor}), 400, "cursor")

    assert error.extra
    assert error.extra[0].source == "query"


def test_cursor_for_another_order_is_400(client: Client, heroes: list[dict[str, Any]]) -> None:
    url = next_url(client.get("/heroes", params={"order_by": "age", "limit": 2}))
    assert url is not None

    error = assert_error(client.get(url.replace("order_by=age", "order_by=-age")), 400, "cursor")

    assert error.extra
    assert "order_by=age" in error.extra[0].message


def test_cursor_with_offset_is_400(client: Client, heroes: list[dict[str, Any]]) -> None:
    url = next_url(client.get("/heroes", params={"limit": 2}))

    assert_error(client.get(f"{url}&offset=3"), 400, "offset")


@pytest.mark.parametrize("order_by", ["ID", "secret_name", "+age", "--age", "name,id", ""])
def test_unknown_order_by_is_400_listing_the_allowed_values(client: Client, order_by: str) -> None:
    error = assert_error(client.get("/heroes", params={"order_by": order_by}), 400, "order_by")

    assert error.extra
    assert all(allowed in error.extra[0].message for allowed in ORDERS.order_by)


def test_offset_walk_skips_a_hero_when_an_earlier_one_is_deleted(client: Client) -> None:
    ids = [create(client, f"Hero {n}")["id"] for n in range(10)]

    first = client.get("/heroes", params={"limit": 5}).json()
    client.delete(f"/heroes/{first[0]['id']}")
    second = client.get("/heroes", params={"limit": 5, "offset": 5}).json()

    seen = {hero["id"] for hero in first + second}
    assert ids[5] not in seen  # it existed all along, but moved to the first page
    assert next_url(client.get("/heroes", params={"limit": 5})) is not None


@pytest.mark.parametrize("order_by", ["id", "-age", "name"])
def test_cursor_walk_sees_every_surviving_hero_once_while_others_come_and_go(
    client: Client, order_by: str
) -> None:
    def new_hero(n: int) -> int:
        return int(create(client, f"Hero {n % 7}", [None, 20, 30][n % 3])["id"])

    initial = [new_hero(n) for n in range(40)]
    doomed = initial[3::5]
    deleted: set[int] = set()
    created: list[int] = []
    stop = threading.Event()

    def other_client() -> None:
        # Meanwhile: new heroes all over the order, and deletions of heroes not yet read.
        n = 0
        while not stop.is_set():
            n += 1
            created.append(new_hero(n))
            if doomed:
                deleted.add(hero_id := doomed.pop())
                client.delete(f"/heroes/{hero_id}")

    other = threading.Thread(target=other_client)
    other.start()
    seen: list[int] = []
    try:
        response = client.get("/heroes", params={"order_by": order_by, "limit": 3})
        while True:
            page = response.json()
            seen += [hero["id"] for hero in page]
            if page:  # a hero of the page just read goes: offset paging would now skip one
                deleted.add(page[0]["id"])
                client.delete(f"/heroes/{page[0]['id']}")
            if (url := next_url(response)) is None:
                break
            response = client.get(url)
    finally:
        stop.set()
        other.join()

    counts = Counter(seen)
    assert created, "the other client made no change during the walk"
    assert [hero_id for hero_id, n in counts.items() if n > 1] == []
    assert set(initial) - deleted <= set(counts)
