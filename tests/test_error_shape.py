"""The Error shape: the tutorial's bytes by default, RFC 9457 problem details when asked for.

The default answers are pinned byte for byte, so that clients written for the tutorial's
``{"detail": ...}`` keep working; ``Accept: application/problem+json`` gets the same error as
problem details. Every error answer says ``Vary: Accept``, since its media type depends on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.http.errors import Problem
from tests.helpers import Client, new_hero, settings_for

API_KEY = "shape-key-5e1d0c9b8a7f"
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}
PROBLEM = {"Accept": "application/problem+json"}
KEY = {"Idempotency-Key": "shape-1"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """An app with every option that answers an error on: API key, rate limit, a small body."""
    settings = settings_for(
        f"sqlite:///{tmp_path / 'heroes.db'}",
        api_key=API_KEY,
        rate_limit_per_minute=6,
        max_body_size=256,
        access_log=False,
    )
    with TestClient[Litestar](create_app(settings)) as client:
        yield client


def missing_hero(client: Client, headers: dict[str, str]) -> httpx.Response:
    return client.get("/heroes/99", headers=headers)


def invalid_json(client: Client, headers: dict[str, str]) -> httpx.Response:
    sent = {**AUTHORIZED, "Content-Type": "application/json", **headers}
    return client.post("/heroes", content=b'{"name": ', headers=sent)


def body_too_large(client: Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("/heroes", json=new_hero("x" * 300), headers={**AUTHORIZED, **headers})


def no_api_key(client: Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("/heroes", json=new_hero(), headers=headers)


def key_reused(client: Client, headers: dict[str, str]) -> httpx.Response:
    first = client.post("/heroes", json=new_hero(), headers={**AUTHORIZED, **KEY})
    assert first.status_code == 201, first.text
    return client.post("/heroes", json=new_hero(), headers={**AUTHORIZED, **KEY, **headers})


def too_many(client: Client, headers: dict[str, str]) -> httpx.Response:
    for _ in range(6):
        client.get("/heroes")
    return client.get("/heroes", headers=headers)


Request = Callable[[Client, dict[str, str]], httpx.Response]

DEFAULT_ANSWERS: list[tuple[Request, int, bytes]] = [
    (missing_hero, 404, b'{"status_code":404,"detail":"Hero not found"}'),
    (
        invalid_json,
        400,
        b'{"status_code":400,"detail":"Validation failed for POST /heroes","extra":[{"message":'
        b'"The request body is not valid JSON: Input data was truncated","source":"body"}]}',
    ),
    (body_too_large, 413, b'{"status_code":413,"detail":"Request Entity Too Large"}'),
    (
        no_api_key,
        401,
        b'{"status_code":401,"detail":"Writes need the header Authorization: Bearer <API key>."}',
    ),
    (
        key_reused,
        422,
        b'{"status_code":422,"detail":"Validation failed for POST /heroes","extra":[{"message":'
        b'"This key was used with another request body: a new request needs a new key",'
        b'"key":"Idempotency-Key","source":"header"}]}',
    ),
    (too_many, 429, b'{"status_code":429,"detail":"Too many requests: retry in 60 seconds."}'),
]
"""Each error a tutorial client meets, and its exact body, as it was before problem details."""
ANSWERS = pytest.mark.parametrize(
    ("request_", "status", "body"),
    DEFAULT_ANSWERS,
    ids=[request.__name__ for request, _, _ in DEFAULT_ANSWERS],
)


@ANSWERS
@pytest.mark.parametrize(
    "accept", [None, "application/json", "*/*", "application/*", "text/html, */*;q=0.8"]
)
def test_default_error_answers_keep_their_exact_bytes(
    client: Client, request_: Request, status: int, body: bytes, accept: str | None
) -> None:
    response = request_(client, {"Accept": accept} if accept else {})

    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
}
"""RFC 9110's reason phrases (15.5), on every Python (3.11 and 3.12 know older ones of some)."""


@ANSWERS
def test_problem_details_when_accept_asks_for_them(
    client: Client, request_: Request, status: int, body: bytes
) -> None:
    response = request_(client, PROBLEM)
    default = msgspec.json.decode(body)
    problem = msgspec.json.decode(response.content, type=Problem, strict=True)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["vary"] == "Accept"
    assert (problem.type, problem.status, problem.detail) == (
        "about:blank",
        status,
        default["detail"],
    )
    assert problem.title == TITLES[status]
    assert msgspec.to_builtins(problem.extra) == default.get("extra")


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/problem+json", "application/problem+json"),
        ("application/json, application/problem+json", "application/problem+json"),
        ("application/problem+json;q=0.9, application/json;q=0.5", "application/problem+json"),
        ("application/problem+json, */*;q=0.1", "application/problem+json"),
        ("Application/Problem+JSON", "application/problem+json"),
        ("application/json, application/problem+json;q=0.5", "application/json"),
        ("application/problem+json;q=0", "application/json"),
        ("application/problem+json;q=oops", "application/json"),
        ("application/problem+xml", "application/json"),
    ],
)
def test_accept_chooses_the_error_media_type(client: Client, accept: str, media_type: str) -> None:
    response = client.get("/heroes/99", headers={"Accept": accept})

    assert response.status_code == 404
    assert response.headers["content-type"] == media_type


def test_a_refused_host_is_problem_details_when_asked(client: Client) -> None:
    response = client.get("/heroes", headers={"Host": "bad host", **PROBLEM})
    problem = msgspec.json.decode(response.content, type=Problem, strict=True)

    assert (response.status_code, problem.status, problem.title) == (400, 400, "Bad Request")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["vary"] == "Accept"


def test_success_answers_do_not_vary_on_accept(client: Client) -> None:
    response = client.get("/heroes", headers=PROBLEM)

    assert response.status_code == 200
    assert "vary" not in response.headers
