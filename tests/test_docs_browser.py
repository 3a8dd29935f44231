"""The docs pages in a real browser (headless Debian Chromium) against the real server.

Every request to an origin other than the ones a test names is aborted and recorded, as on a
network that reaches nothing but the service: a page that needs the internet fails here.
Screenshots of each page are saved in tests/artifacts/ (not committed) for a look after a failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import IN_CI
from tests.live import Server, free_port, running_server

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Request,
        Route,
    )

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No host name but the loopback ones resolves: a second wall behind the tests' interception.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT_MS = 60_000
"""Scalar's bundle is 4.9 MB of JavaScript; on a busy 2-core machine parsing it takes seconds."""

SUMMARIES = {
    "createHero": "Create a hero",
    "listHeroes": "List heroes",
    "getHero": "Get a hero",
    "updateHero": "Update a hero",
    "deleteHero": "Delete a hero",
}
"""The hero operations and the summary each page shows for them (as openapi.json has them)."""
PAGES = ["/schema", "/schema/swagger", "/schema/redoc", "/schema/scalar", "/docs", "/redoc"]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "the playwright package is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, started once for this module."""
    if reason := _browser_missing():
        if IN_CI:
            pytest.fail(f"CI must run the browser tests. {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What a browser context did that a test may object to."""

    allowed_origins: set[str]
    blocked: list[str] = field(default_factory=list)
    """Requests to any other origin, aborted."""
    console_errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        """Let requests to the allowed origins through; abort and record any other."""
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" in self.allowed_origins:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def record(self, request: Request) -> None:
        """Record a request to any other origin."""
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" not in self.allowed_origins:
            self.blocked.append(request.url)

    def console(self, message: ConsoleMessage) -> None:
        """Record console errors, with where they came from."""
        if message.type == "error":
            self.console_errors.append(f"{message.text} at {message.location}")

    def page_error(self, error: Exception) -> None:
        """Record uncaught exceptions."""
        self.console_errors.append(f"uncaught: {error}")


@contextmanager
def watched_page(
    browser: Browser, *origins: str, intercept: bool = True
) -> Iterator[tuple[Page, Watch]]:
    """A fresh page that may reach ``origins`` and nothing else.

    Without ``intercept``, requests elsewhere are recorded but not aborted (the browser cannot
    resolve any host name but localhost anyway): Playwright answers CORS preflight requests
    itself when it intercepts, which would hide the service's own answer from a CORS test.
    """
    watch = Watch(set(origins))
    context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    if intercept:
        context.route("**/*", watch.route)
    else:
        context.on("request", watch.record)
    page = context.new_page()
    page.on("console", watch.console)
    page.on("pageerror", watch.page_error)
    try:
        yield page, watch
    finally:
        context.close()


@pytest.fixture(scope="module")
def allowed_origin() -> str:
    """The origin of a page the service lets call it (CORS_ALLOW_ORIGINS)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, allowed_origin: str) -> Iterator[Server]:
    """The service, as ``python -m service`` serves it, on a fresh SQLite file."""
    database = tmp_path_factory.mktemp("docs") / "heroes.db"
    with running_server(f"sqlite:///{database}", CORS_ALLOW_ORIGINS=allowed_origin) as live:
        yield live


def screenshot(page: Page, name: str) -> None:
    """Keep what the page looked like, for a look after a failure."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_renders_every_hero_operation_offline(
    browser: Browser, server: Server, path: str
) -> None:
    with watched_page(browser, server.url) as (page, watch):
        started = time.monotonic()
        page.goto(f"{server.url}{path}")
        try:
            assert watch.blocked == [], "the page reached beyond the service"
            assert watch.console_errors == []
            for summary in SUMMARIES.values():
                page.get_by_text(summary, exact=True).filter(visible=True).first.wait_for()
            page.wait_for_load_state("networkidle")
        finally:
            screenshot(page, path.strip("/").replace("/", "-"))
        assert watch.blocked == [], "the page reached beyond the service"
        assert watch.console_errors == []
        assert time.monotonic() - started < TIMEOUT_MS / 1000


def test_swagger_try_it_out_creates_a_hero(browser: Browser, server: Server) -> None:
    with watched_page(browser, server.url) as (page, watch):
        page.goto(f"{server.url}/schema/swagger")
        operation = page.locator("#operations-heroes-createHero")
        try:
            assert watch.blocked == [], "the page reached beyond the service"
            assert watch.console_errors == []
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            body = json.loads(operation.locator("textarea.body-param__text").input_value())
            assert body == {"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}
            operation.get_by_role("button", name="Execute").click()
            answer = operation.locator(".live-responses-table .response")
            answer.locator(".response-col_status", has_text="201").wait_for()
            hero = json.loads(answer.locator(".response-col_description pre").first.inner_text())
        finally:
            screenshot(page, "swagger-try-it-out")
        assert watch.blocked == []
        assert watch.console_errors == []
    assert {k: hero[k] for k in ("name", "age")} == {"name": "Deadpond", "age": 30}
    assert httpx.get(f"{server.url}/heroes/{hero['id']}").json() == hero


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(directory: Path, port: int) -> Iterator[str]:
    """``directory`` served over HTTP on 127.0.0.1:``port``; yields the origin."""

    def handler(*args: Any, **kwargs: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(directory), **kwargs)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


CREATE_FROM_PAGE = """async ([api, name]) => {
    try {
        const response = await fetch(api + "/heroes", {
            method: "POST",
            headers: {"content-type": "application/json"},
            body: JSON.stringify({name, secret_name: "Dive Wilson", age: 30}),
        });
        return {
            status: response.status,
            etag: response.headers.get("ETag"),
            location: response.headers.get("Location"),
            hero: await response.json(),
        };
    } catch (error) {
        return {error: String(error)};
    }
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("site")
    (directory / "index.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Another app</title>'
        '<link rel="icon" href="data:,"></head>'
        "<body>An app on another origin.</body></html>"
    )
    return directory


def test_a_page_on_an_allowed_origin_creates_a_hero_and_reads_etag_and_location(
    browser: Browser, server: Server, site: Path, allowed_origin: str
) -> None:
    with (
        static_site(site, int(allowed_origin.rsplit(":", 1)[1])) as origin,
        watched_page(browser, server.url, origin, intercept=False) as (page, watch),
    ):
        page.goto(f"{origin}/index.html")
        result = page.evaluate(CREATE_FROM_PAGE, [server.url, "Cors Allowed"])
        assert watch.blocked == []
        assert watch.console_errors == []
    assert result["status"] == 201, result
    hero = result["hero"]
    assert result["etag"] == '"1"'
    assert result["location"].endswith(f"/heroes/{hero['id']}")
    assert httpx.get(f"{server.url}/heroes/{hero['id']}").json() == hero


def test_a_page_on_another_origin_is_blocked_by_the_browser(
    browser: Browser, server: Server, site: Path
) -> None:
    with (
        static_site(site, free_port()) as origin,
        watched_page(browser, server.url, origin, intercept=False) as (page, watch),
    ):
        page.goto(f"{origin}/index.html")
        result = page.evaluate(CREATE_FROM_PAGE, [server.url, "Cors Refused"])
        assert watch.blocked == []
    assert result == {"error": "TypeError: Failed to fetch"}
    assert any("CORS policy" in error for error in watch.console_errors), watch.console_errors
    names = [hero["name"] for hero in httpx.get(f"{server.url}/heroes").json()]
    assert "Cors Refused" not in names
