"""Strict decoding stays on whatever a handler declares, and its pure helpers, one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from litestar import Controller, Litestar, Request, post
from litestar.params import Body
from litestar.testing import TestClient
from litestar.types import BeforeRequestHookHandler

from service.app import create_app
from service.heroes.schemas import HeroCreate
from service.http.decoding import (
    MAX_NESTING,
    InvalidBody,
    decode_strictly,
    duplicate_key,
    is_json_media_type,
    nested_too_deep,
)
from service.http.request_line import non_canonical_integer, scalar_query_names
from service.settings import Settings
from tests.helpers import assert_error

hooks_called: list[str] = []


async def own_hook(request: Request[Any, Any, Any]) -> None:
    hooks_called.append(request.url.path)


@post("/echo-handler", before_request=own_hook, sync_to_thread=False)
def echo_with_its_own_hook(data: Annotated[HeroCreate, Body()]) -> HeroCreate:
    """A handler with a before_request hook of its own."""
    return data


class EchoController(Controller):
    """A controller with a before_request hook of its own."""

    path = "/echo-controller"
    before_request: BeforeRequestHookHandler | None = own_hook

    @post(sync_to_thread=False)
    def echo(self, data: Annotated[HeroCreate, Body()]) -> HeroCreate:
        """Answer the body as decoded."""
        return data


@pytest.fixture
def hooked_client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", access_log=False))
    app.register(echo_with_its_own_hook)
    app.register(EchoController)
    with TestClient[Litestar](app) as client:
        yield client


@pytest.mark.parametrize("path", ["/echo-handler", "/echo-controller"])
@pytest.mark.parametrize(
    ("body", "status", "key"),
    [
        (b'{"name": "a", "secret_name": "s", "age": "30"}', 400, "age"),
        (b'{"name": "a", "name": "b", "secret_name": "s"}', 400, "name"),
        (b'{"name": "\xff\xfe", "secret_name": "s"}', 400, None),
    ],
)
def test_strict_decoding_stays_on_under_a_hook_of_the_handler_or_controller(
    hooked_client: TestClient[Litestar], path: str, body: bytes, status: int, key: str | None
) -> None:
    hooks_called.clear()

    response = hooked_client.post(path, content=body, headers={"content-type": "application/json"})

    assert_error(response, status, key)
    assert hooks_called == [path]


@pytest.mark.parametrize("path", ["/echo-handler", "/echo-controller"])
def test_content_type_is_checked_under_a_hook_of_the_handler_or_controller(
    hooked_client: TestClient[Litestar], path: str
) -> None:
    body = b'{"name": "a", "secret_name": "s"}'

    assert_error(
        hooked_client.post(path, content=body, headers={"content-type": "text/plain"}), 415
    )
    accepted = hooked_client.post(path, content=body, headers={"content-type": "application/json"})
    assert accepted.json() == {"name": "a", "secret_name": "s", "age": None, "team_id": None}


@pytest.mark.parametrize(
    ("media_type", "options", "expected"),
    [
        ("application/json", {}, True),
        ("application/json", {"charset": "utf-8"}, True),
        ("application/json", {"charset": "UTF-8"}, True),
        ("application/problem+json", {}, True),
        ("application/json", {"charset": "latin-1"}, False),
        ("text/plain", {}, False),
        ("application/x-www-form-urlencoded", {}, False),
        ("", {}, False),
        ("text/json", {}, False),
        ("application/jsonp", {}, False),
    ],
)
def test_is_json_media_type(media_type: str, options: dict[str, str], expected: bool) -> None:
    assert is_json_media_type(media_type, options) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": 1, "b": 2}', None),
        (b'{"a": 1, "a": 1}', "a"),
        (b'{"a": {"b": 1, "c": {"d": 1, "d": 2}}}', "d"),
        (b'[{"a": 1}, {"a": 2}]', None),
        (b'{"a": 1' + b"0" * 10_000 + b"}", None),
        (b"{", None),
    ],
)
def test_duplicate_key(body: bytes, expected: str | None) -> None:
    assert duplicate_key(body) == expected


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"", None),
        (b" \n", None),
        (b'{"name": "\xff"}', None),
        (b"[]", None),
        (b'{"name": 1, "secret_name": "s"}', "name"),
        (b'{"name": "a"}', "secret_name"),
        (b'{"name": "a", "name": "a", "secret_name": "s"}', "name"),
    ],
)
def test_decode_strictly_refuses_naming_the_field(body: bytes, key: str | None) -> None:
    with pytest.raises(InvalidBody) as refused:
        decode_strictly(body, HeroCreate)

    assert refused.value.key == key
    assert refused.value.message


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (b"[" * MAX_NESTING + b"]" * MAX_NESTING, False),
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), True),
        (b'{"a": "' + b"[" * 100 + b'"}', False),
        (b'{"a": "\\"' + b"{" * 100 + b'"}', False),
        (b'{"a": "\\\\", "b": ' + b"[" * 40 + b"]" * 40 + b"}", True),
        (b"[" * 10 + b"]" * 10 + b"," + b"[" * 30 + b"]" * 30, False),
    ],
    ids=[
        "at-the-limit",
        "one-past",
        "in-a-string",
        "after-an-escaped-quote",
        "after-a-backslash",
        "siblings",
    ],
)
def test_nested_too_deep(body: bytes, too_deep: bool) -> None:
    assert nested_too_deep(body) is too_deep


def test_decode_strictly_reads_a_whole_number_with_a_fraction_as_an_int() -> None:
    hero = decode_strictly(b'{"name": "a", "secret_name": "s", "age": 3e1}', HeroCreate)

    assert hero == HeroCreate(name="a", secret_name="s", age=30)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/heroes/12", None),
        ("/heroes/-1", None),
        ("/heroes/012", "hero_id"),
        ("/heroes/+12", "hero_id"),
        ("/heroes/1_2", "hero_id"),
        ("/heroes/\u0661\u0662", "hero_id"),
        ("/heroes/ 12", "hero_id"),
        ("/heroes/-0", "hero_id"),
    ],
)
def test_non_canonical_integer(path: str, expected: str | None) -> None:
    value = int(path.rsplit("/", 1)[1])

    assert non_canonical_integer("/heroes/{hero_id}", path, {"hero_id": value}) == expected


def test_non_canonical_integer_leaves_other_parameters_alone() -> None:
    assert non_canonical_integer("/a/{name}/{n}", "/a/ x /7", {"name": " x ", "n": 7}) is None


def test_scalar_query_names_are_the_declared_single_value_parameters(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", access_log=False))
    handlers = app.route_handler_method_map

    assert scalar_query_names(handlers["/heroes"]["GET"]) == {
        "offset",
        "limit",
        "name",
        "min_age",
        "max_age",
        "name_prefix",
        "order_by",
        "cursor",
        "count",
        "team_id",
    }
    assert scalar_query_names(handlers["/heroes/{hero_id:int}"]["PATCH"]) == {"hero_id"}
