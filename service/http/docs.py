"""The interactive docs: Swagger UI, ReDoc and Scalar, each page served whole by the service.

Over 300 lines on purpose: the three pages, their assets' routes and their caching are one feature.

Nothing is fetched from elsewhere: the viewers' bundles are vendored from their npm packages at
the versions in ``static/docs/vendor/versions.json`` (``just docs-assets`` replaces them), and
each page's start script is a file of ours, so the pages' Content-Security-Policy allows scripts
from the service's own origin only, with no inline script at all.

The bundles are stored compressed beside themselves (``.br``, ``.gz``, made by ``just
docs-assets``) and sent so to clients that accept it: 1.7 MB for the three pages instead of 7.9.
"""

from __future__ import annotations

import html
import json
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import HeaderParameter, PathParameter
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar.connection import Request
    from litestar.types import ASGIApp, Message, Middleware, Receive, Scope, Send

STATIC = Path(__file__).parent / "static" / "docs"
VENDOR = STATIC / "vendor"
VERSIONS: dict[str, str] = json.loads((VENDOR / "versions.json").read_text())
"""The pinned npm package versions; the one place they are named."""

DOCS_PATH = "/schema"
VENDOR_URL = f"{DOCS_PATH}/vendor"
"""Vendored assets, one folder per package version: cached for a year, never revalidated."""
ASSETS_URL = f"{DOCS_PATH}/assets"
"""The pages' own start scripts, stylesheet and icon (under 1 KB each): sent with no-cache."""


def directory_name(package: str, version: str) -> str:
    """Where a package version is vendored: ``scalar-api-reference-1.2.3`` for ``@scalar/...``."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}"


def vendored(package: str, file: str) -> str:
    """The URL of ``file`` of the pinned version of ``package``."""
    return f"{VENDOR_URL}/{directory_name(package, VERSIONS[package])}/{file}"


def csp(**sources: str) -> str:
    """A policy that denies everything but ``sources`` (``script_src="'self'"``, ...)."""
    directives = {
        "default_src": "'none'",
        "base_uri": "'none'",
        "form_action": "'none'",
        "frame_ancestors": "'none'",
        **sources,
    }
    return "; ".join(f"{name.replace('_', '-')} {value}" for name, value in directives.items())


STRICT_POLICY = csp()
"""For any other HTML the docs router answers with (its 404 page, say): nothing may load."""


class DocsPage(OpenAPIRenderPlugin):
    """One docs page: an HTML shell loading its viewer and its start script from the service."""

    def __init__(
        self,
        *,
        path: str,
        stylesheets: Sequence[str],
        scripts: Sequence[str],
        container: str,
        policy: str,
    ) -> None:
        super().__init__(path=path, favicon="", style="")
        self.stylesheets = [*stylesheets, f"{ASSETS_URL}/docs.css"]
        self.scripts = scripts
        self.container = container
        self.policy = policy
        """The page's Content-Security-Policy."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page; its start script reads the document's URL from the container element."""
        title = html.escape(openapi_schema["info"]["title"])
        spec_url = html.escape(self.get_openapi_json_route(request))
        links = "\n".join(f'<link rel="stylesheet" href="{href}">' for href in self.stylesheets)
        scripts = "\n".join(f'<script src="{src}"></script>' for src in self.scripts)
        # The charset comes first: without it the bundles' non-ASCII text fails to parse.
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/svg+xml" href="{ASSETS_URL}/favicon.svg">
{links}
</head>
<body>
<div id="{self.container}" data-openapi-url="{spec_url}"></div>
{scripts}
</body>
</html>
""".encode()


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The docs pages, the default one (served at ``/schema`` too) first.

    Swagger UI is the default: it is the page most users know, and the one whose "Try it out"
    sends real requests without further setup.
    """
    return [
        DocsPage(
            path="/swagger",
            stylesheets=[vendored("swagger-ui-dist", "swagger-ui.css")],
            scripts=[
                vendored("swagger-ui-dist", "swagger-ui-bundle.js"),
                f"{ASSETS_URL}/swagger.js",
            ],
            container="swagger-ui",
            # Icons are data: SVGs in its stylesheet; styles are set through the DOM, not inline.
            policy=csp(
                script_src="'self'",
                style_src="'self'",
                img_src="'self' data:",
                connect_src="'self'",
            ),
        ),
        DocsPage(
            path="/redoc",
            stylesheets=[],
            scripts=[vendored("redoc", "redoc.standalone.js"), f"{ASSETS_URL}/redoc.js"],
            container="redoc",
            # styled-components writes its generated CSS into <style> elements.
            policy=csp(
                script_src="'self'",
                style_src="'self' 'unsafe-inline'",
                img_src="'self' data:",
                connect_src="'self'",
                worker_src="blob:",
            ),
        ),
        DocsPage(
            path="/scalar",
            stylesheets=[],
            scripts=[vendored("@scalar/api-reference", "standalone.js"), f"{ASSETS_URL}/scalar.js"],
            container="scalar",
            # The bundle injects its stylesheet, and Vue its component styles, as <style> elements.
            policy=csp(
                script_src="'self'",
                style_src="'self' 'unsafe-inline'",
                img_src="'self' data:",
                font_src="'self' data:",
                connect_src="'self'",
            ),
        ),
    ]


def router(pages: Sequence[OpenAPIRenderPlugin], middleware: Sequence[Middleware] = ()) -> Router:
    """The ``/schema`` router: Litestar adds the pages and the document; this adds their assets.

    Each page's answer carries its Content-Security-Policy; ``middleware`` runs for every route
    of the router (the docs' byte budget).
    """
    policies = {
        f"{DOCS_PATH}{path}": page.policy for page in _docs_pages(pages) for path in page.paths
    }
    if default := next(iter(_docs_pages(pages)), None):
        policies[DOCS_PATH] = default.policy

    def with_policy(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            policy = policies.get(scope["path"].rstrip("/"), STRICT_POLICY).encode()

            async def send_with_policy(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", ()))
                    if any(n == b"content-type" and v.startswith(b"text/html") for n, v in headers):
                        message["headers"] = [*headers, (b"content-security-policy", policy)]
                await send(message)

            await app(scope, receive, send_with_policy)

        return middleware

    return Router(
        DOCS_PATH,
        route_handlers=[
            vendored_file,
            create_static_files_router(
                "/assets",
                directories=[STATIC / "pages"],
                name="docs-assets",
                cache_control=CacheControlHeader(no_cache=True),
            ),
        ],
        middleware=[with_policy, *middleware],
        include_in_schema=False,
    )


COMPRESSED = {"br": ".br", "gzip": ".gz"}
"""The encodings the vendored files are stored in beside themselves, the preferred first."""
IMMUTABLE = CacheControlHeader(public=True, max_age=31536000, immutable=True).to_header()
_CODING = re.compile(r"^\s*([A-Za-z0-9*!#$%&'+.^_`|~-]+)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def vendored_files() -> dict[str, Path]:
    """Every vendored file, by its path under ``VENDOR`` (its compressed copies aside)."""
    return {
        path.relative_to(VENDOR).as_posix(): path
        for path in VENDOR.rglob("*")
        if path.is_file() and path.suffix not in COMPRESSED.values()
    }


VENDORED = vendored_files()


def accepted_encoding(accept_encoding: str, stored: Sequence[str]) -> str | None:
    """The preferred of the ``stored`` encodings that ``Accept-Encoding`` accepts, if any.

    ``br`` before ``gzip`` at equal quality; ``q=0`` refuses an encoding; ``*`` stands for any not
    named. Malformed items are skipped.
    """
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        match = _CODING.match(item)
        if match is None:
            continue
        try:
            quality[match[1].lower()] = float(match[2]) if match[2] is not None else 1.0
        except ValueError:
            continue
    ranked = [
        (quality.get(coding, quality.get("*", 0.0)), -order, coding)
        for order, coding in enumerate(stored)
    ]
    best = max(ranked, default=(0.0, 0, ""))
    return best[2] if best[0] > 0 else None


@get("/vendor/{file_path:path}", name="docs-vendor", sync_to_thread=False)
def vendored_file(
    file_path: Annotated[str, PathParameter()],
    accept_encoding: Annotated[str, HeaderParameter(name="accept-encoding")] = "",
) -> File:
    """A vendored file, compressed as the client accepts: cached for a year, never revalidated."""
    original = VENDORED.get(file_path.lstrip("/"))
    if original is None:
        raise NotFoundException()
    stored = [
        coding for coding, suffix in COMPRESSED.items() if _sibling(original, suffix).is_file()
    ]
    coding = accepted_encoding(accept_encoding, stored)
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    path = original
    if coding is not None:
        path = _sibling(original, COMPRESSED[coding])
        headers["Content-Encoding"] = coding
    media_type = mimetypes.guess_type(original.name)[0] or "application/octet-stream"
    return File(
        path,
        filename=original.name,
        media_type=media_type,
        headers=headers,
        content_disposition_type="inline",
    )


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _docs_pages(pages: Sequence[OpenAPIRenderPlugin]) -> list[DocsPage]:
    return [page for page in pages if isinstance(page, DocsPage)]


class DocsAliases(Controller):
    """FastAPI's docs paths, for users who try them first."""

    include_in_schema = False

    @get("/docs", sync_to_thread=False)
    def docs(self) -> Redirect:
        """Swagger UI, as FastAPI's ``/docs``."""
        return Redirect(f"{DOCS_PATH}/swagger")

    @get("/redoc", sync_to_thread=False)
    def redoc(self) -> Redirect:
        """ReDoc, as FastAPI's ``/redoc``."""
        return Redirect(f"{DOCS_PATH}/redoc")
