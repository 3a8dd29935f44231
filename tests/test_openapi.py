"""The OpenAPI document: valid 3.1, named operations, every error documented, no secret_name out."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Router
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from openapi_spec_validator import validate

from service.app import RESOURCES, UNLIMITED_PATHS, create_app
from service.http.etags import ENTITY_TAGS
from service.http.idempotency import IDEMPOTENCY_KEY
from service.http.resources import Resource
from service.openapi_document import render, served_document
from service.settings import Settings

COMMITTED_DOCUMENT = Path(__file__).parents[1] / "openapi.json"


def declared_operations(resource: Resource) -> dict[tuple[str, str], str]:
    """(path, method) -> operationId of every operation the resource's routes declare."""
    declared = {}
    for route in Router(path="/", route_handlers=list(resource.route_handlers)).routes:
        assert isinstance(route, HTTPRoute), route
        for handler in route.route_handlers:
            if not handler.include_in_schema:  # the OPTIONS Litestar adds for each path
                continue
            for method in handler.http_methods:
                declared[(route.path_format, method.lower())] = str(handler.operation_id)
    return declared


OPERATIONS = {resource.tag.name: declared_operations(resource) for resource in RESOURCES}
"""Each resource's operations, by its tag: what the document must hold, and nothing else."""
WITH_ERROR_ROWS = sorted(
    operation_id
    for resource in RESOURCES
    if resource.exception_handlers
    for operation_id in OPERATIONS[resource.tag.name].values()
)
"""The operations of the resources with domain errors: each answers 400 and 503 too."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return served_document()


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for operation in item.values()
    }


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_committed_openapi_json_is_the_served_document(document: dict[str, Any]) -> None:
    committed = COMMITTED_DOCUMENT.read_text(encoding="utf-8")

    assert committed == render(document), (
        "openapi.json differs from the document the app serves: run `just openapi` and commit it"
    )


def test_document_names_the_service_and_its_version(document: dict[str, Any]) -> None:
    assert document["info"]["title"] == "Hero service"
    assert document["info"]["version"] == version("hero-service")
    assert document["info"]["description"]


def test_every_operation_has_its_operation_id_and_tag(document: dict[str, Any]) -> None:
    found = {
        (path, method): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }

    assert found == {key: op for declared in OPERATIONS.values() for key, op in declared.items()}
    for tag, declared in OPERATIONS.items():
        for operation_id in declared.values():
            assert operations(document)[operation_id]["tags"] == [tag]


@pytest.mark.parametrize("operation_id", WITH_ERROR_ROWS)
def test_every_error_an_operation_answers_is_of_the_error_schema(
    document: dict[str, Any], operation_id: str
) -> None:
    responses = operations(document)[operation_id]["responses"]
    errors = {code: r for code, r in responses.items() if code.startswith(("4", "5"))}

    assert {"400", "503"} <= set(errors)
    for response in errors.values():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


def test_secret_name_is_in_no_response_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    response_refs = {
        str(response.get("content", {}).get("application/json", {}).get("schema"))
        for operation in operations(document).values()
        for response in operation["responses"].values()
    }

    assert "secret_name" not in str(response_refs)
    for name in ("HeroPublic", "Deleted", "Error", "ErrorDetail"):
        assert "secret_name" not in str(schemas[name])
    assert "secret_name" in schemas["HeroCreate"]["properties"]


def test_bounds_are_exact_integers(document: dict[str, Any]) -> None:
    hero_id = operations(document)["getHero"]["parameters"][0]["schema"]
    age = document["components"]["schemas"]["HeroCreate"]["properties"]["age"]

    assert (hero_id["minimum"], hero_id["maximum"]) == (1, 2**63 - 1)
    assert (age["minimum"], age["maximum"]) == (0, 2**31 - 1)


def test_created_hero_links_to_get_update_and_delete(document: dict[str, Any]) -> None:
    links = operations(document)["createHero"]["responses"]["201"]["links"]

    assert {link["operationId"] for link in links.values()} == {
        "getHero",
        "updateHero",
        "deleteHero",
    }
    assert all(link["parameters"] == {"hero_id": "$response.body#/id"} for link in links.values())


def test_every_body_schema_has_an_example(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert any("examples" in field for field in schema["properties"].values()), name


@pytest.mark.parametrize("page", ["/schema/swagger", "/schema/redoc", "/schema/scalar"])
def test_docs_pages_are_served(page: str) -> None:
    with TestClient[Litestar](create_app(Settings(database_url="sqlite:///:memory:"))) as client:
        response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("operation_id", "header"),
    [("getHero", "If-None-Match"), ("updateHero", "If-Match"), ("deleteHero", "If-Match")],
)
def test_entity_tag_headers_declare_their_syntax(
    document: dict[str, Any], operation_id: str, header: str
) -> None:
    parameter = next(
        p for p in operations(document)[operation_id]["parameters"] if p["name"] == header
    )
    assert parameter["required"] is False
    assert parameter["schema"]["type"] == "string"
    assert parameter["schema"]["pattern"] == ENTITY_TAGS


@pytest.mark.parametrize("operation_id", ["getHero", "updateHero", "deleteHero"])
def test_hero_id_is_an_integer_in_the_path(document: dict[str, Any], operation_id: str) -> None:
    hero_id = operations(document)[operation_id]["parameters"][0]

    assert (hero_id["name"], hero_id["in"], hero_id["schema"]["type"]) == (
        "hero_id",
        "path",
        "integer",
    )


@pytest.mark.parametrize("operation_id", ["createHero", "updateHero"])
def test_operations_with_a_body_document_415(document: dict[str, Any], operation_id: str) -> None:
    assert "415" in operations(document)[operation_id]["responses"]


def test_create_hero_declares_the_idempotency_key_and_its_answers(
    document: dict[str, Any],
) -> None:
    create = operations(document)["createHero"]
    key = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")

    assert (key["in"], key["required"]) == ("header", False)
    assert key["schema"]["type"] == "string"
    assert key["schema"]["pattern"] == IDEMPOTENCY_KEY
    assert key["schema"]["maxLength"] == 255
    assert {"409", "422"} <= set(create["responses"])
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]


CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "api key": {"api_key": "openapi-key-1a2b3c"},
    "rate limit": {"rate_limit_per_minute": 100},
    "api key and rate limit": {"api_key": "openapi-key-1a2b3c", "rate_limit_per_minute": 100},
}
"""The settings that change what the service answers: the document must say the same in each."""
EVERY_OPERATION = {"400", "408", "414", "431", "503"}
"""A malformed request or Host, a head too slow, too long or too large, the database or the
connection limit: any request may get these."""


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def configured_document(request: pytest.FixtureRequest) -> dict[str, Any]:
    return served_document(**CONFIGURATIONS[request.param])


def statuses(document: dict[str, Any]) -> dict[str, set[str]]:
    return {
        operation_id: set(operation["responses"])
        for operation_id, operation in operations(document).items()
    }


def test_every_configuration_documents_the_same_answers(
    document: dict[str, Any], configured_document: dict[str, Any]
) -> None:
    assert statuses(configured_document) == statuses(document)


def test_every_operation_documents_what_any_request_may_be_answered(
    configured_document: dict[str, Any],
) -> None:
    for operation_id, answers in statuses(configured_document).items():
        assert answers >= EVERY_OPERATION, operation_id


def test_writes_document_401_and_409_and_bodies_413_and_415(
    configured_document: dict[str, Any],
) -> None:
    for path_item in configured_document["paths"].values():
        for method, operation in path_item.items():
            answers = set(operation["responses"])
            write = method in {"post", "put", "patch", "delete"}
            assert ("401" in answers) == write, operation
            assert ("409" in answers) == write, operation
            assert ({"413", "415"} <= answers) == ("requestBody" in operation), operation


def test_429_is_documented_wherever_the_rate_limit_applies(
    configured_document: dict[str, Any],
) -> None:
    for path, path_item in configured_document["paths"].items():
        for operation in path_item.values():
            limited = not path.startswith(tuple(UNLIMITED_PATHS))
            assert ("429" in operation["responses"]) == limited, (path, operation["operationId"])


@pytest.mark.parametrize(
    ("status", "header"),
    [("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")],
)
def test_errors_document_the_headers_they_always_carry(
    document: dict[str, Any], status: str, header: str
) -> None:
    for operation_id, operation in operations(document).items():
        answer = operation["responses"].get(status)
        if answer is not None:
            assert answer["headers"][header]["required"] is True, operation_id


def test_every_error_is_documented_as_error_or_problem_details(document: dict[str, Any]) -> None:
    for operation_id, operation in operations(document).items():
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert answer["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                    "application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    },
                }, (operation_id, status)
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_bearer_scheme_is_always_described_and_required_on_writes_only_with_a_key(
    configuration: str,
) -> None:
    settings = CONFIGURATIONS[configuration]
    served = served_document(**settings)

    assert served["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": served["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for path_item in served["paths"].values():
        for method, operation in path_item.items():
            write = method in {"post", "put", "patch", "delete"}
            expected: list[dict[str, list[str]]] | None = None
            expected = [{"apiKey": []}] if write and "api_key" in settings else None
            assert operation.get("security") == expected, operation["operationId"]
