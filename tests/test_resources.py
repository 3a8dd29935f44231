"""What ``create_app`` assembles from its resources: one error table, their headers, their words."""

from __future__ import annotations

import pytest
from litestar import Controller, get
from litestar.openapi.spec import Tag
from litestar.testing import TestClient
from litestar.types import ExceptionHandlersMap

from service.app import RESOURCES, create_app
from service.http.cursors import BadQuery
from service.http.errors import answer
from service.http.resources import ErrorTableClash, Resource
from service.settings import Settings
from tests.helpers import assert_error

IN_MEMORY = Settings(database_url="sqlite:///:memory:")


class Lost(LookupError):
    """A domain error two resources could both answer."""


class VillainController(Controller):
    path = "/villains"

    @get("/lost", operation_id="loseVillain", sync_to_thread=False)
    def lose(self) -> None:
        raise Lost


def resource(name: str, rows: ExceptionHandlersMap) -> Resource:
    return Resource(
        route_handlers=[VillainController] if name == "villains" else [],
        exception_handlers=rows,
        tag=Tag(name=name),
    )


def test_two_resources_answering_one_exception_fail_at_create_app() -> None:
    villains = resource("villains", {Lost: answer(404, "Villain not found")})
    sidekicks = resource("sidekicks", {Lost: answer(404, "Sidekick not found")})

    with pytest.raises(ErrorTableClash, match="Lost is answered by the resource 'villains'"):
        create_app(IN_MEMORY, resources=[*RESOURCES, villains, sidekicks])


def test_a_resource_answering_an_exception_of_the_generic_table_fails_at_create_app() -> None:
    villains = resource("villains", {BadQuery: answer(404, "Villain not found")})

    with pytest.raises(ErrorTableClash, match="BadQuery is answered by the generic table"):
        create_app(IN_MEMORY, resources=[*RESOURCES, villains])


def test_a_resource_of_its_own_rows_is_answered_by_them() -> None:
    villains = resource("villains", {Lost: answer(404, "Villain not found")})

    with TestClient(create_app(IN_MEMORY, resources=[*RESOURCES, villains])) as client:
        response = client.get("/villains/lost")

    assert assert_error(response, 404).detail == "Villain not found"


def test_a_browser_may_read_every_header_the_resources_document() -> None:
    settings = Settings(database_url="sqlite:///:memory:", cors_allow_origins="https://a.example")
    with TestClient(create_app(settings)) as client:
        exposed = client.get("/heroes", headers={"Origin": "https://a.example"}).headers[
            "access-control-expose-headers"
        ]

    assert set(exposed.split(", ")) == {
        "ETag",
        "Idempotent-Replayed",
        "Link",
        "Location",
        "RateLimit-Limit",
        "RateLimit-Policy",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "Retry-After",
        "X-Request-ID",
        "X-Total-Count",
    }
