"""Cursors, sorts and the name folding rule: pure functions, tested without a database.

The orders and cursors are the heroes' list's (``service.heroes.controller.ORDERS``), whose keys
are the id, the name and the age.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from service.database.pages import Position, Sort, fold, prefix_range
from service.database.tables import AGE_MAX, ID_MAX
from service.heroes.controller import ORDERS
from service.heroes.schemas import HeroPublic
from service.http.cursors import BadQuery, encode_cursor, next_link

ORDER_BY = ORDERS.order_by


def position_of(sort: Sort, hero_id: int, name: str, age: int | None) -> Position:
    now = datetime.now(UTC)
    return ORDERS.position(sort, HeroPublic(hero_id, name, age, now, now))


def forged(*payload: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).rstrip(b"=").decode()


@pytest.mark.parametrize("order_by", ORDER_BY)
def test_parse_sort_reads_every_allowed_order(order_by: str) -> None:
    sort = ORDERS.parse(order_by)

    assert sort.order_by == order_by
    assert sort.descending is order_by.startswith("-")


@pytest.mark.parametrize("order_by", ["", "ID", "+id", "--age", "secret_name", "age,id"])
def test_parse_sort_refuses_other_orders_listing_the_allowed_ones(order_by: str) -> None:
    with pytest.raises(BadQuery) as refused:
        ORDERS.parse(order_by)

    assert refused.value.key == "order_by"
    assert all(allowed in refused.value.message for allowed in ORDER_BY)


@pytest.mark.parametrize(
    ("order_by", "position"),
    [
        ("id", Position(42, 42)),
        ("-id", Position(ID_MAX, ID_MAX)),
        ("name", Position("deadpond", 7)),
        ("-name", Position("ünïcødé 🦸 スーパーマン", 1)),
        ("age", Position(None, 3)),
        ("-age", Position(AGE_MAX, 9)),
        ("age", Position(0, 1)),
    ],
)
def test_cursor_round_trips(order_by: str, position: Position) -> None:
    sort = ORDERS.parse(order_by)

    cursor = encode_cursor(sort, position)

    assert ORDERS.decode(cursor, sort) == position
    assert cursor.isascii()
    assert not set(cursor) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_is_versioned_json_of_the_order_and_the_position() -> None:
    cursor = encode_cursor(Sort("age", True), Position(30, 12))

    padded = cursor + "=" * (-len(cursor) % 4)
    assert msgspec.json.decode(base64.urlsafe_b64decode(padded)) == [1, "-age", 30, 12]


def test_cursor_made_for_another_order_is_refused_naming_it() -> None:
    cursor = encode_cursor(Sort("age", False), Position(30, 12))

    with pytest.raises(BadQuery, match="order_by=age, not -age") as refused:
        ORDERS.decode(cursor, Sort("age", True))

    assert refused.value.key == "cursor"


@pytest.mark.parametrize(
    ("cursor", "order_by"),
    [
        ("", "id"),
        ("garbage!", "id"),
        ("WzEsImlkIiw", "id"),  # cut short
        ("éé", "id"),
        (base64.urlsafe_b64encode(b"\xff\xfe").decode(), "id"),
        (forged("not", "a", "tuple"), "id"),
        (forged(2, "id", 5, 5), "id"),  # a format this service does not read
        (forged(1, "id", 5), "id"),
        (forged(1, "id", 5, 6), "id"),  # value and id disagree
        (forged(1, "id", True, True), "id"),
        (forged(1, "id", -1, -1), "id"),
        (forged(1, "id", 2**63, 2**63), "id"),  # beyond BIGINT
        (forged(1, "id", 2**70, 2**70), "id"),
        (forged(1, "name", 5, 5), "name"),
        (forged(1, "name", "a\x00b", 5), "name"),
        (forged(1, "name", "x" * 256, 5), "name"),
        (forged(1, "age", "thirty", 5), "age"),
        (forged(1, "age", -1, 5), "age"),
        (forged(1, "age", 2**31, 5), "age"),
        (forged(1, "age", 30.5, 5), "age"),
    ],
)
def test_malformed_cursor_is_refused(cursor: str, order_by: str) -> None:
    with pytest.raises(BadQuery) as refused:
        ORDERS.decode(cursor, ORDERS.parse(order_by))

    assert refused.value.key == "cursor"


def test_position_of_a_hero_is_its_sort_key_and_id() -> None:
    assert position_of(Sort("id", True), 7, "Deadpond", 30) == Position(7, 7)
    assert position_of(Sort("name", False), 7, "Deadpond", 30) == Position("deadpond", 7)
    assert position_of(Sort("age", False), 7, "Deadpond", None) == Position(None, 7)


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Deadpond", "deadpond"),
        ("DEAD-POND 42", "dead-pond 42"),
        ("Ärger", "Ärger"),  # only A-Z fold, as in SQLite's and PostgreSQL's lower() here
        ("İstanbul", "İstanbul"),
        ("ǅemal", "ǅemal"),
        ("STRASSE ß", "strasse ß"),
        ("ΣΊΣΥΦΟΣ", "ΣΊΣΥΦΟΣ"),
    ],
)
def test_fold_lowers_ascii_letters_only(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(
    ("prefix", "low", "high"),
    [
        ("Dead", "dead", "deae"),
        ("z", "z", "{"),
        ("Ä", "Ä", "Å"),
        ("a\ud7ff", "a\ud7ff", "a\ue000"),  # past the surrogates, which cannot be stored
        ("a\U0010ffff", "a\U0010ffff", "b"),
        ("\U0010ffff", "\U0010ffff", None),
    ],
)
def test_prefix_range_holds_exactly_the_names_that_start_with_the_prefix(
    prefix: str, low: str, high: str | None
) -> None:
    assert prefix_range(prefix) == (low, high)


@pytest.mark.parametrize(
    "name", ["dead", "deadpond", "dead\U0010ffff", "deaD", "deae", "dea", "deadé", "Deadpond"]
)
def test_prefix_range_agrees_with_startswith(name: str) -> None:
    low, high = prefix_range("DEAD")

    inside = low <= fold(name) and (high is None or fold(name) < high)

    assert inside is fold(name).startswith("dead")


def test_next_link_keeps_the_query_but_offset_and_swaps_the_cursor() -> None:
    query: dict[str, str | int | bool | None] = {
        "name_prefix": "dead pond&co",
        "min_age": 3,
        "max_age": None,
        "order_by": "-age",
        "limit": 20,
        "count": True,
        "offset": 40,
        "cursor": "old",
    }

    link = next_link("/heroes/", query, "NEW")

    target, rel = link.split("; ")
    assert rel == 'rel="next"'
    assert target.startswith("<")
    assert target.endswith(">")
    url = urlsplit(target[1:-1])
    assert url.path == "/heroes/"
    assert parse_qs(url.query) == {
        "name_prefix": ["dead pond&co"],
        "min_age": ["3"],
        "order_by": ["-age"],
        "limit": ["20"],
        "count": ["true"],
        "cursor": ["NEW"],
    }
