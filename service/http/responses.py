"""``JsonResponse``: a handler's JSON answer, encoded by msgspec straight into ASGI messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from litestar import Response
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT, HTTP_304_NOT_MODIFIED
from msgspec import Meta, Struct

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.datastructures import Cookie
    from litestar.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")
NO_BODY = frozenset({HTTP_204_NO_CONTENT, HTTP_304_NOT_MODIFIED})
JSON = (b"content-type", b"application/json")


class JsonResponse(Response[T]):
    """A ``Response`` of JSON content that skips the general path of Litestar's.

    ``Response.to_asgi_response`` merges the layers' headers and cookies, looks up type encoders and
    builds an ``ASGIResponse``, which copies every header into a container and encodes it again: a
    good part of a get-one's time (``tests/benchmarks/RESULTS-choices.md``). Here the content is
    encoded by msgspec (Structs, lists of them, plain values) and the headers, lower-cased, become
    bytes once. Layered headers and cookies that are sent, if a handler ever declares some, are
    kept; background tasks are not supported. A 204 or 304 sends no body.

    Handlers return it, and a controller names it as its ``response_class`` so that the data a
    handler returns bare goes the same way.
    """

    __slots__ = ()

    def __init__(
        self,
        content: T,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        background: object = None,
        **_: Any,  # what Litestar passes to a response class: media type, type encoders
    ) -> None:
        """``content`` answered with ``status_code`` (the handler's default) and ``headers``."""
        if background is not None:
            raise TypeError("JsonResponse sends no background task")
        self.content = content
        self.status_code = status_code
        self.headers = headers or {}  # type: ignore[assignment]

    def to_asgi_response(  # type: ignore[override]
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Iterable[Cookie] | None = None,
        **_: Any,
    ) -> ASGIApp:
        """The ASGI app that sends this answer."""
        status = self.status_code or status_code or HTTP_200_OK
        raw: list[tuple[bytes, bytes]] = []
        body = b""
        if status not in NO_BODY:
            body = msgspec.json.encode(self.content)
            raw += [JSON, (b"content-length", b"%d" % len(body))]
        for name, value in {**(headers or {}), **self.headers}.items():
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        raw += [
            cookie.to_encoded_header() for cookie in cookies or () if not cookie.documentation_only
        ]
        return RawResponse(status, raw, body)


class RawResponse:
    """An answer whose status, encoded headers and body are ready to send."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the answer."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class Deleted(Struct):
    """The answer to a successful delete."""

    ok: Annotated[bool, Meta(examples=[True])] = True
