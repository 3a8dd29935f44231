"""Bad input gets a 4xx of the one error shape naming the field at fault, and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.database.tables import AGE_MAX, NAME_MAX_LENGTH
from service.http.decoding import MAX_NESTING
from tests.helpers import Client, asgi_request, assert_error, create, new_hero

LONG = "x" * (NAME_MAX_LENGTH + 1)

BAD_HERO_FIELDS = [
    pytest.param({"name": 7}, "name", id="name-not-a-string"),
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": LONG}, "name", id="name-too-long"),
    pytest.param({"name": "Dead\x00pond"}, "name", id="name-with-nul"),
    pytest.param({"secret_name": ["x"]}, "secret_name", id="secret-not-a-string"),
    pytest.param({"secret_name": ""}, "secret_name", id="secret-empty"),
    pytest.param({"secret_name": LONG}, "secret_name", id="secret-too-long"),
    pytest.param({"secret_name": "\x00"}, "secret_name", id="secret-with-nul"),
    pytest.param({"age": "30"}, "age", id="age-as-string"),
    pytest.param({"age": 30.5}, "age", id="age-fractional"),
    pytest.param({"age": 1e300}, "age", id="age-whole-but-huge"),
    pytest.param({"age": True}, "age", id="age-as-bool"),
    pytest.param({"age": -1}, "age", id="age-negative"),
    pytest.param({"age": AGE_MAX + 1}, "age", id="age-beyond-int32"),
    pytest.param({"age": 2**64}, "age", id="age-beyond-int64"),
    pytest.param({"age": {"years": 3}}, "age", id="age-an-object"),
]

BAD_BODIES = [
    pytest.param(b"", None, id="empty"),
    pytest.param(b"   ", None, id="blank"),
    pytest.param(b"{", None, id="truncated-json"),
    pytest.param(b"{'name': 'x'}", None, id="single-quotes"),
    pytest.param(b"\xff\xfe", None, id="not-utf8"),
    pytest.param(b"[]", None, id="array"),
    pytest.param(b'"Deadpond"', None, id="string"),
    pytest.param(b"null", None, id="null"),
    pytest.param(b'{"name": "Deadpond", "age": 1} trailing', None, id="trailing-garbage"),
    pytest.param(b"[" * 1000 + b"]" * 1000, None, id="arrays-nested-1000-deep"),
    pytest.param(b"{" + b'"a":{' * 1000 + b"}" * 1001, None, id="objects-nested-1000-deep"),
    pytest.param(
        b'{"name": "a", "secret_name": "s", "more": ' + b"[" * 990 + b"]" * 990 + b"}",
        None,
        id="unknown-field-nested-990-deep",
    ),
    pytest.param(
        b'{"name": "a", "secret_name": "s", "more": ' + b"[" * 32 + b"]" * 32 + b"}",
        None,
        id="unknown-field-nested-33-deep",
    ),
]


def assert_no_heroes_stored(client: Client) -> None:
    assert client.get("/heroes").json() == []


@pytest.mark.parametrize(("fields", "key"), BAD_HERO_FIELDS)
def test_create_with_bad_field_is_400_naming_it(
    client: Client, fields: dict[str, Any], key: str
) -> None:
    assert_error(client.post("/heroes", json={**new_hero(), **fields}), 400, key)
    assert_no_heroes_stored(client)


@pytest.mark.parametrize("missing", ["name", "secret_name"])
def test_create_without_required_field_is_400_naming_it(client: Client, missing: str) -> None:
    body = new_hero()
    del body[missing]

    assert_error(client.post("/heroes", json=body), 400, missing)
    assert_no_heroes_stored(client)


@pytest.mark.parametrize(("body", "key"), BAD_BODIES)
def test_create_with_malformed_body_is_400(client: Client, body: bytes, key: None) -> None:
    response = client.post("/heroes", content=body, headers={"content-type": "application/json"})

    assert_error(response, 400, key)
    assert_no_heroes_stored(client)


def test_body_nested_as_deep_as_allowed_is_accepted(client: Client) -> None:
    nested = "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1)
    body = json.dumps(new_hero())[:-1] + f', "more": {nested}}}'

    response = client.post("/heroes", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 201, response.text


def test_create_with_body_over_the_limit_is_413(client: Client) -> None:
    body = json.dumps(new_hero(padding="x" * 1_000_000)).encode()

    assert_error(client.post("/heroes", content=body), 413)
    assert_no_heroes_stored(client)


@pytest.mark.parametrize(("fields", "key"), BAD_HERO_FIELDS)
def test_patch_with_bad_field_is_400_and_changes_nothing(
    client: Client, fields: dict[str, Any], key: str
) -> None:
    hero = create(client, "Deadpond", 30)

    assert_error(client.patch(f"/heroes/{hero['id']}", json=fields), 400, key)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize("field", ["name", "secret_name"])
def test_patch_with_null_for_a_required_field_is_400(client: Client, field: str) -> None:
    hero = create(client, "Deadpond", 30)

    assert_error(client.patch(f"/heroes/{hero['id']}", json={field: None}), 400, field)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize(("body", "key"), BAD_BODIES)
def test_patch_with_malformed_body_is_400(client: Client, body: bytes, key: None) -> None:
    hero = create(client)

    response = client.patch(
        f"/heroes/{hero['id']}", content=body, headers={"content-type": "application/json"}
    )

    assert_error(response, 400, key)
    assert client.get(f"/heroes/{hero['id']}").json() == hero


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        # Integers and booleans only as JSON writes them, as path ids are.
        ("limit=5.0", "limit"),
        ("limit=05", "limit"),
        ("limit=%2B5", "limit"),
        ("limit=5%20", "limit"),
        ("limit=", "limit"),
        ("min_age=1e1", "min_age"),
        ("offset=0.0", "offset"),
        ("offset=-0", "offset"),
        ("max_age=0.0", "max_age"),
        ("max_age=%30.0", "max_age"),
        ("li%6Dit=5.0", "limit"),
        ("count=True", "count"),
        ("count=1", "count"),
        ("count=0", "count"),
        ("count=-0", "count"),
        ("count=", "count"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        (f"offset={2**63}", "offset"),
        ("min_age=-1", "min_age"),
        (f"max_age={AGE_MAX + 1}", "max_age"),
        ("min_age=old", "min_age"),
        ("name=", "name"),
        ("name=Dead%00pond", "name"),
        (f"name={LONG}", "name"),
    ],
)
def test_list_with_bad_query_value_is_400_naming_it(client: Client, query: str, key: str) -> None:
    assert_error(client.get(f"/heroes?{query}"), 400, key)


@pytest.mark.parametrize(
    "query",
    ["limit=5", "limit=%35", "offset=0", "min_age=0&max_age=10", "count=true", "count=false"],
)
def test_list_with_canonical_query_values_is_200(client: Client, query: str) -> None:
    assert client.get(f"/heroes?{query}").status_code == 200


@pytest.mark.parametrize("hero_id", ["0", "-1", str(2**63), str(10**30)])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_out_of_range_hero_id_is_400(client: Client, method: str, hero_id: str) -> None:
    assert_error(client.request(method, f"/heroes/{hero_id}", json={}), 400, "hero_id")


@pytest.mark.parametrize("hero_id", ["abc", "1.5", "1e3", "%00"])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_non_numeric_hero_id_is_404(client: Client, method: str, hero_id: str) -> None:
    assert_error(client.request(method, f"/heroes/{hero_id}", json={}), 404)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_largest_hero_id_is_a_plain_404(client: Client, method: str) -> None:
    assert_error(client.request(method, f"/heroes/{2**63 - 1}", json={}), 404)


@pytest.mark.parametrize("age", [b"30.0", b"3e1", b"30.000"])
def test_whole_number_written_with_a_fraction_is_an_integer(client: Client, age: bytes) -> None:
    # JSON has one number type, and the OpenAPI document (JSON Schema) counts 30.0 as an integer.
    body = b'{"name": "Deadpond", "secret_name": "Dive Wilson", "age": ' + age + b"}"

    created = client.post("/heroes", content=body, headers={"content-type": "application/json"})

    assert created.status_code == 201, created.text
    assert created.json()["age"] == 30
    assert client.get(f"/heroes/{created.json()['id']}").json()["age"] == 30


def test_huge_age_filter_within_bounds_works(client: Client) -> None:
    create(client, "Old", AGE_MAX)

    assert [h["age"] for h in client.get(f"/heroes?min_age={AGE_MAX}").json()] == [AGE_MAX]


NOT_UTF8 = b'{"name":"\xff\xfe","secret_name":"s"}'


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_body_with_bytes_that_are_not_utf8_in_a_string_is_400(client: Client, method: str) -> None:
    hero = create(client)
    path = "/heroes" if method == "POST" else f"/heroes/{hero['id']}"

    response = client.request(
        method, path, content=NOT_UTF8, headers={"content-type": "application/json"}
    )

    assert_error(response, 400)
    assert client.get("/heroes").json() == [hero]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json",
        "application/json; charset=latin-1",
        None,
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_body_that_is_not_sent_as_json_is_415(
    client: Client, method: str, content_type: str | None
) -> None:
    hero = create(client)
    path = "/heroes" if method == "POST" else f"/heroes/{hero['id']}"
    body = json.dumps(new_hero("Simple Request")).encode()
    request = client.build_request(method, path, content=body)
    if content_type is None:
        request.headers.pop("content-type", None)
    else:
        request.headers["content-type"] = content_type

    response = client.send(request)

    assert_error(response, 415)
    assert client.get("/heroes").json() == [hero]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/merge-patch+json",
    ],
)
def test_body_sent_as_any_json_type_is_accepted(client: Client, content_type: str) -> None:
    body = json.dumps(new_hero("Deadpond")).encode()

    response = client.post("/heroes", content=body, headers={"content-type": content_type})

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"name": "a", "name": "b", "secret_name": "s"}', "name"),
        (b'{"name": "a", "secret_name": "s", "age": 1, "age": 2}', "age"),
        (b'{"name": "a", "secret_name": "s", "extra": {"x": 1, "x": 2}}', "x"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_body_with_a_duplicate_key_is_400_naming_it(
    client: Client, method: str, body: bytes, key: str
) -> None:
    hero = create(client)
    path = "/heroes" if method == "POST" else f"/heroes/{hero['id']}"

    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )

    assert_error(response, 400, key)
    assert client.get("/heroes").json() == [hero]


NON_CANONICAL_IDS = ["012", "+12", "1_2", "\u0661\u0662", "%2012", "12%20", "%0912", "-0", "12.0"]


@pytest.mark.parametrize("hero_id", NON_CANONICAL_IDS)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_hero_id_not_in_canonical_form_is_404(client: Client, method: str, hero_id: str) -> None:
    for _ in range(12):
        create(client)

    response = client.request(method, f"/heroes/{hero_id}", json={"age": 1})

    assert_error(response, 404)
    assert client.get("/heroes/12").json()["age"] is None


@pytest.mark.parametrize(
    "query",
    [
        "offset=1&offset=2",
        "limit=1&limit=abc",
        "name=a&name=b",
        "min_age=1&min_age=1",
        "max_age=5&limit=3&max_age=6",
    ],
)
def test_list_with_a_query_parameter_given_twice_is_400_naming_it(
    client: Client, query: str
) -> None:
    key = next(
        part.split("=")[0] for part in query.split("&") if query.count(part.split("=")[0]) > 1
    )

    assert_error(client.get(f"/heroes?{query}"), 400, key)


@pytest.mark.parametrize("query", ["limit=1&li%6Dit=2", "name_prefix=a&name%5Fprefix=b"])
def test_a_query_parameter_given_twice_under_two_spellings_is_400_naming_it(
    client: Client, query: str
) -> None:
    key = query.split("=", maxsplit=1)[0]

    assert_error(client.get(f"/heroes?{query}"), 400, key)


def test_list_ignores_a_repeated_parameter_it_does_not_declare(client: Client) -> None:
    assert client.get("/heroes?utm=1&utm=2").status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_empty_body_is_400_saying_so(client: Client, method: str, content_type: str | None) -> None:
    hero = create(client)
    path = "/heroes" if method == "POST" else f"/heroes/{hero['id']}"
    headers = {"content-type": content_type} if content_type else {}

    error = assert_error(client.request(method, path, content=b"", headers=headers), 400)

    assert error.extra
    assert "empty" in error.extra[0].message


@pytest.mark.parametrize("length", [b"+30", b"3_0", "\u0663\u0660".encode(), b"30.0", b"x"])
def test_content_length_that_is_not_digits_is_400(client: Client, length: bytes) -> None:
    body = b'{"name":"A","secret_name":"B"}'  # 30 bytes
    headers = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", length)]

    status, _, answer = asgi_request(client, headers, method="POST", body=body)

    assert status == 400, answer
    assert client.get("/heroes").json() == []
