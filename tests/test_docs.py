"""The docs pages over HTTP: what they load, from where, and the headers that guard them.

tests/test_docs_browser.py shows them working in a real browser; these say why they can.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

import brotli
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.http.docs import VENDOR, VERSIONS, directory_name
from service.settings import Settings
from tests.helpers import assert_error

PAGES = ["/schema", "/schema/swagger", "/schema/redoc", "/schema/scalar"]
ASSET = re.compile(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"')
YEAR = "max-age=31536000, public, immutable"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    # These tests fetch the docs more than one client may per minute: the budget has its own.
    settings = Settings(
        database_url="sqlite:///:memory:", access_log=False, docs_bytes_per_minute=0
    )
    app = create_app(settings)
    with TestClient(app) as client:
        yield client


def assets(html: str) -> list[str]:
    return ASSET.findall(html)


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_names_only_the_service_s_own_assets(
    client: TestClient[Litestar], path: str
) -> None:
    html = client.get(path).text

    assert "http://" not in html
    assert "https://" not in html
    assert all(url.startswith("/schema/") for url in assets(html))
    assert len(assets(html)) >= 4  # (icon, stylesheet, bundle, start script)


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_has_no_inline_script(client: TestClient[Litestar], path: str) -> None:
    scripts = re.findall(r"<script\b[^>]*>", client.get(path).text)

    assert scripts
    assert all(" src=" in tag for tag in scripts)


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_policy_allows_the_service_s_origin_only(
    client: TestClient[Litestar], path: str
) -> None:
    policy = client.get(path).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))

    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert not re.search(r"https?:|\*", policy)


def test_swagger_ui_page_needs_no_inline_style(client: TestClient[Litestar]) -> None:
    policy = client.get("/schema/swagger").headers["content-security-policy"]

    assert "style-src 'self';" in policy


def test_schema_is_swagger_ui(client: TestClient[Litestar]) -> None:
    root = client.get("/schema")
    swagger = client.get("/schema/swagger")

    assert root.text == swagger.text
    assert root.headers["content-security-policy"] == swagger.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("alias", "page"), [("/docs", "/schema/swagger"), ("/redoc", "/schema/redoc")]
)
def test_fastapi_docs_paths_lead_to_the_pages(
    client: TestClient[Litestar], alias: str, page: str
) -> None:
    response = client.get(alias, follow_redirects=False)

    assert response.status_code == 302
    assert response.headers["location"] == page


def test_vendored_assets_are_cached_for_a_year(client: TestClient[Litestar]) -> None:
    urls = {url for page in PAGES for url in assets(client.get(page).text)}
    vendored = sorted(url for url in urls if url.startswith("/schema/vendor/"))

    assert len(vendored) == 4  # (Swagger UI's script and stylesheet, ReDoc, Scalar)
    for url in vendored:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == YEAR


def test_the_pages_own_assets_are_revalidated(client: TestClient[Litestar]) -> None:
    urls = {url for page in PAGES for url in assets(client.get(page).text)}
    own = sorted(url for url in urls if url.startswith("/schema/assets/"))

    assert len(own) == 5  # (three start scripts, the stylesheet, the icon)
    for url in own:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("url", "media_type"),
    [
        ("/schema/assets/swagger.js", "text/javascript"),
        ("/schema/assets/docs.css", "text/css"),
        ("/schema/assets/favicon.svg", "image/svg+xml"),
    ],
)
def test_assets_have_their_media_type(
    client: TestClient[Litestar], url: str, media_type: str
) -> None:
    # Every answer carries nosniff, so a script without a script media type would not run.
    assert client.get(url).headers["content-type"].split(";")[0] == media_type


@pytest.mark.parametrize("path", ["/heroes", "/health/live", "/schema/openapi.json"])
def test_json_answers_carry_no_policy(client: TestClient[Litestar], path: str) -> None:
    assert "content-security-policy" not in client.get(path).headers


def test_unknown_docs_path_gets_the_strictest_policy(client: TestClient[Litestar]) -> None:
    response = client.get("/schema/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-security-policy"].startswith("default-src 'none';")
    assert "script-src" not in response.headers["content-security-policy"]


def test_each_pinned_version_is_vendored_with_its_licence() -> None:
    folders = {path.name for path in VENDOR.iterdir() if path.is_dir()}

    assert folders == {directory_name(package, version) for package, version in VERSIONS.items()}
    for folder in folders:
        assert (VENDOR / folder / "LICENSE").is_file(), folder


BUNDLE = "/schema/vendor/" + directory_name("swagger-ui-dist", VERSIONS["swagger-ui-dist"])
SCRIPT = f"{BUNDLE}/swagger-ui-bundle.js"


def test_each_vendored_script_and_stylesheet_is_stored_compressed_as_itself() -> None:
    for path in VENDOR.rglob("*"):
        if path.suffix not in (".js", ".css"):
            continue
        original = path.read_bytes()
        assert brotli.decompress(path.with_name(path.name + ".br").read_bytes()) == original
        assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == original


@pytest.mark.parametrize(
    ("accept_encoding", "encoding"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("br;q=0, gzip;q=0.5", "gzip"),
        ("gzip;q=0.2, br;q=0.9", "br"),
        ("*", "br"),
        ("*;q=0, gzip", "gzip"),
        ("identity", None),
        ("", None),
        ("br;q=nonsense, gzip", "gzip"),
        (",,;;", None),
    ],
)
def test_vendored_files_are_sent_compressed_as_the_client_accepts(
    client: TestClient[Litestar], accept_encoding: str, encoding: str | None
) -> None:
    response = client.get(SCRIPT, headers={"Accept-Encoding": accept_encoding})

    assert response.status_code == 200
    assert response.headers.get("content-encoding") == encoding
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == (VENDOR / SCRIPT.removeprefix("/schema/vendor/")).read_bytes()


def test_the_three_pages_cost_a_fifth_of_their_bytes_compressed(
    client: TestClient[Litestar],
) -> None:
    urls = {url for page in PAGES for url in assets(client.get(page).text)}
    vendored = [url for url in urls if url.startswith("/schema/vendor/")]
    sizes = {
        coding: sum(
            int(client.get(url, headers={"Accept-Encoding": coding}).headers["content-length"])
            for url in vendored
        )
        for coding in ("identity", "gzip", "br")
    }

    assert sizes["br"] < sizes["gzip"] < sizes["identity"] / 3
    print(sizes)


@pytest.mark.parametrize(
    "path", ["/schema/vendor/nothing.js", "/schema/vendor/../pages/docs.css", f"{SCRIPT}.br"]
)
def test_only_vendored_files_are_served_from_vendor(
    client: TestClient[Litestar], path: str
) -> None:
    assert client.get(path).status_code == 404


def test_docs_answers_are_counted_in_bytes_per_client_apart_from_the_api() -> None:
    settings = Settings(
        database_url="sqlite:///:memory:",
        docs_bytes_per_minute=3_000_000,
        rate_limit_per_minute=1000,
        forwarded_allow_ips="*",
    )
    identity = {"Accept-Encoding": "identity"}
    with TestClient(create_app(settings)) as client:
        first = client.get(SCRIPT, headers={**identity, "X-Forwarded-For": "203.0.113.1"})
        second = client.get(SCRIPT, headers={**identity, "X-Forwarded-For": "203.0.113.1"})
        compressed = client.get(SCRIPT, headers={"X-Forwarded-For": "203.0.113.2"})
        api = client.get("/heroes", headers={"X-Forwarded-For": "203.0.113.1"})

    assert first.status_code == 200  # 1.7 MB
    assert_error(second, 429)  # 3.4 MB: past the budget
    assert "retry-after" in second.headers
    assert compressed.status_code == 200  # another client
    assert api.status_code == 200
    assert api.headers["ratelimit-remaining"] == "999"  # the docs counted apart


def test_the_docs_budget_can_be_turned_off() -> None:
    settings = Settings(database_url="sqlite:///:memory:", docs_bytes_per_minute=0)
    with TestClient(create_app(settings)) as client:
        statuses = {
            client.get(SCRIPT, headers={"Accept-Encoding": "identity"}).status_code
            for _ in range(12)
        }

    assert statuses == {200}
