"""ETags against lost updates: every hero answer carries its version; If-Match guards writes."""

from __future__ import annotations

import re

import pytest

from service.http.etags import (
    ENTITY_TAGS,
    MalformedEntityTags,
    allowed_versions,
    entity_tags,
    etag,
    matches_any,
)
from tests.helpers import Client, assert_error, create, new_hero


def etag_of(client: Client, hero_id: int) -> str:
    return client.get(f"/heroes/{hero_id}").headers["etag"]


def test_create_get_and_patch_answer_with_the_current_etag(client: Client) -> None:
    created = client.post("/heroes", json=new_hero())
    hero_id = created.json()["id"]

    patched = client.patch(f"/heroes/{hero_id}", json={"age": 7})

    assert created.headers["etag"] == '"1"'
    assert patched.headers["etag"] == '"2"'
    assert etag_of(client, hero_id) == '"2"'


def test_patch_that_changes_nothing_keeps_the_etag(client: Client) -> None:
    hero = create(client)

    assert client.patch(f"/heroes/{hero['id']}", json={}).headers["etag"] == '"1"'


def test_patch_with_matching_if_match_succeeds(client: Client) -> None:
    hero = create(client)

    response = client.patch(
        f"/heroes/{hero['id']}", json={"name": "Renamed"}, headers={"If-Match": '"1"'}
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"


@pytest.mark.parametrize("if_match", ['"2"', 'W/"1"', '"2", W/"1"', '"abc"', "", '"01"', '"001"'])
def test_patch_with_stale_or_unusable_if_match_is_412_and_changes_nothing(
    client: Client, if_match: str
) -> None:
    hero = create(client)

    response = client.patch(
        f"/heroes/{hero['id']}", json={"age": 9}, headers={"If-Match": if_match}
    )

    assert_error(response, 412)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


MALFORMED_TAGS = ["null", "garbage", "1", '"1" "2"', '"1",', "W/1", '"1', '*, "1"', '"a b"']


@pytest.mark.parametrize("if_match", MALFORMED_TAGS)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_malformed_if_match_is_400_naming_it_and_changes_nothing(
    client: Client, method: str, if_match: str
) -> None:
    hero = create(client)

    response = client.request(
        method, f"/heroes/{hero['id']}", json={"age": 9}, headers={"If-Match": if_match}
    )

    assert_error(response, 400, "If-Match")
    assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize("if_none_match", MALFORMED_TAGS)
def test_malformed_if_none_match_is_400_naming_it(client: Client, if_none_match: str) -> None:
    hero = create(client)

    response = client.get(f"/heroes/{hero['id']}", headers={"If-None-Match": if_none_match})

    assert_error(response, 400, "If-None-Match")


def test_second_writer_with_the_same_etag_loses(client: Client) -> None:
    hero = create(client)
    tag = etag_of(client, hero["id"])

    first = client.patch(f"/heroes/{hero['id']}", json={"age": 1}, headers={"If-Match": tag})
    second = client.patch(f"/heroes/{hero['id']}", json={"age": 2}, headers={"If-Match": tag})

    assert first.status_code == 200
    assert_error(second, 412)
    assert client.get(f"/heroes/{hero['id']}").json()["age"] == 1


@pytest.mark.parametrize("if_match", ['"1"', "*", '"7", "1"'])
def test_delete_with_matching_if_match_deletes(client: Client, if_match: str) -> None:
    hero = create(client)

    response = client.delete(f"/heroes/{hero['id']}", headers={"If-Match": if_match})

    assert response.json() == {"ok": True}
    assert_error(client.get(f"/heroes/{hero['id']}"), 404)


def test_delete_with_stale_if_match_is_412_and_keeps_the_hero(client: Client) -> None:
    hero = create(client)
    client.patch(f"/heroes/{hero['id']}", json={"age": 1})

    assert_error(client.delete(f"/heroes/{hero['id']}", headers={"If-Match": '"1"'}), 412)
    assert client.get(f"/heroes/{hero['id']}").status_code == 200


# Versions no hero can reach: past the version column (a 32-bit INTEGER), and past 64 bits.
IMPOSSIBLE_VERSIONS = [
    '"2147483648"',
    '"99999999999"',
    '"999999999999999999"',
    '"1", "99999999999"',
]


@pytest.mark.parametrize("if_match", IMPOSSIBLE_VERSIONS)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_if_match_naming_a_version_no_hero_can_have_matches_nothing(
    client: Client, method: str, if_match: str
) -> None:
    hero = create(client)
    client.patch(f"/heroes/{hero['id']}", json={"age": 5})  # now at "2": "1" is stale too

    response = client.request(
        method, f"/heroes/{hero['id']}", json={"age": 9}, headers={"If-Match": if_match}
    )

    assert_error(response, 412)
    assert client.get(f"/heroes/{hero['id']}").json()["age"] == 5


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_if_match_on_unknown_hero_is_404(client: Client, method: str) -> None:
    response = client.request(method, "/heroes/999", json={"age": 1}, headers={"If-Match": '"1"'})

    assert_error(response, 404)


@pytest.mark.parametrize("if_none_match", ['"1"', 'W/"1"', "*", '"5", "1"'])
def test_get_with_matching_if_none_match_is_304_without_body(
    client: Client, if_none_match: str
) -> None:
    hero = create(client)

    response = client.get(f"/heroes/{hero['id']}", headers={"If-None-Match": if_none_match})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'


def test_get_with_stale_if_none_match_answers_the_hero(client: Client) -> None:
    hero = create(client)
    client.patch(f"/heroes/{hero['id']}", json={"age": 3})

    response = client.get(f"/heroes/{hero['id']}", headers={"If-None-Match": '"1"'})

    assert response.status_code == 200
    assert response.json()["age"] == 3


# The rules themselves, as pure functions.


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ("*", None),
        (" * ", None),
        ('"1"', ['"1"']),
        ('W/"1"', ['W/"1"']),
        ('"1", W/"2",\t"abc"', ['"1"', 'W/"2"', '"abc"']),
        ('""', ['""']),
        ("", []),
    ],
)
def test_entity_tags_lists_each_tag(value: str, tags: list[str] | None) -> None:
    assert entity_tags(value, "If-Match") == tags


@pytest.mark.parametrize("value", [*MALFORMED_TAGS, '"1"\n', 'w/"1"', '"é"', "**"])
def test_entity_tags_refuses_what_is_not_the_syntax(value: str) -> None:
    with pytest.raises(MalformedEntityTags) as refused:
        entity_tags(value, "If-None-Match")

    assert refused.value.header == "If-None-Match"


def test_the_documented_pattern_is_the_one_checked() -> None:
    assert re.fullmatch(ENTITY_TAGS, '"1", W/"2"')
    assert not re.search(ENTITY_TAGS, "null")


@pytest.mark.parametrize(
    ("if_match", "versions"),
    [
        (None, None),
        ("*", None),
        ('"3"', [3]),
        ('"3", "5"', [3, 5]),
        ('W/"3"', []),
        ('"abc", "7"', [7]),
        (f'"{10**19}"', []),
        ('"2147483647"', [2**31 - 1]),
        ('"2147483648", "4"', [4]),
        ("", []),
        ('"03", "4"', [4]),
    ],
)
def test_allowed_versions_compares_strongly(
    if_match: str | None, versions: list[int] | None
) -> None:
    assert allowed_versions(if_match) == versions


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [("*", True), ('"2"', True), ('W/"2"', True), ('"1", "2"', True), ('"1"', False), ("", False)],
)
def test_matches_any_compares_weakly(if_none_match: str, matches: bool) -> None:
    assert matches_any(if_none_match, 2) is matches


def test_etag_quotes_the_version() -> None:
    assert etag(12) == '"12"'
