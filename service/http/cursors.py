"""Cursor pages: a list's ``order_by``, its opaque cursors, its ``Link`` header, its answer.

A list's orders and cursors are its :class:`Orders`, made from the sort keys of its
``service.database.pages.Listing``; :class:`Pages` answers a list request with them. A cursor
names the last row of a page by its place in the sort, a
:class:`~service.database.pages.Position` ``(sort key, id)``; the next page is the rows after
that place.

A cursor is the URL-safe base64 (unpadded) of a JSON array ``[1, order_by, value, id]``:

- ``1``, the format's version: a later format can be told apart, and a cursor of a format the
  service no longer reads is refused (400) instead of being misread;
- ``order_by``, the sort it was made for: a position in one order means nothing in another, so
  a cursor sent with another ``order_by`` is refused rather than answered with a wrong page;
- ``value``, the last row's sort key (its id, its folded name, or its age or null...);
- ``id``, the last row's id, which breaks ties.

Clients are told it is opaque: they only follow ``Link: rel="next"``. It is not signed, since a
made-up cursor can only choose where a walk starts, which ``offset`` allows too; every field is
checked before it reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote_plus

import msgspec

from service.database.pages import Listing, Position, Sort, SortKey
from service.database.tables import ID_MAX
from service.http.responses import JsonResponse

if TYPE_CHECKING:
    from litestar.types import Scope

    from service.database.statements import Database

T = TypeVar("T")

CURSOR_VERSION = 1
Query = dict[str, str | int | bool | None]
"""A list request's query values, by name; None for one not sent."""


class BadQuery(ValueError):
    """A query parameter the list cannot use: answered 400, naming the parameter."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_Payload = tuple[int, str, int | str | None, int]
NOT_A_CURSOR = "Not a cursor of this service: follow the Link header"


class Orders:
    """The orders of one list (its sort keys, each either way) and the cursors of its pages."""

    def __init__(self, keys: Mapping[str, SortKey]) -> None:
        self.keys = dict(keys)
        self.order_by: tuple[str, ...] = tuple(
            order for key in self.keys for order in (key, f"-{key}")
        )
        """The ``order_by`` values the list takes; ``-`` is descending."""

    def parse(self, order_by: str) -> Sort:
        """The sort ``order_by`` names, or :class:`BadQuery` listing the allowed values."""
        if order_by not in self.order_by:
            allowed = ", ".join(self.order_by)
            raise BadQuery("order_by", f"Expected one of {allowed}; got {order_by!r}")
        return Sort(order_by.removeprefix("-"), order_by.startswith("-"))

    def decode(self, cursor: str, sort: Sort) -> Position:
        """The position a cursor names, checked against ``sort``; :class:`BadQuery` if unusable."""
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
            version, order_by, value, row_id = msgspec.json.decode(raw, type=_Payload, strict=True)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise BadQuery("cursor", NOT_A_CURSOR) from None
        if version != CURSOR_VERSION:
            raise BadQuery("cursor", f"Cursor format {version} is not supported; list again")
        if order_by != sort.order_by:
            raise BadQuery(
                "cursor", f"The cursor was made for order_by={order_by}, not {sort.order_by}"
            )
        key = self.keys[sort.key]
        same_as_id = sort.key != "id" or value == row_id
        if not (0 <= row_id <= ID_MAX and key.valid(value) and same_as_id):
            raise BadQuery("cursor", NOT_A_CURSOR)
        return Position(value, row_id)

    def start(self, order_by: str, cursor: str | None, offset: int) -> tuple[Sort, Position | None]:
        """Where a page starts: its sort, and the position its cursor names, if any.

        A cursor says where the page starts, so an ``offset`` beside it is :class:`BadQuery`.
        """
        sort = self.parse(order_by)
        after = None if cursor is None else self.decode(cursor, sort)
        if after is not None and offset:
            raise BadQuery("offset", "A cursor says where the page starts: send no offset")
        return sort, after

    def position(self, sort: Sort, row: Any) -> Position:
        """The place of ``row`` (with the sort key's field and an ``id``) in ``sort``."""
        return Position(self.keys[sort.key].value(row), row.id)

    def link_after(self, scope: Scope, query: Query, sort: Sort, last: Any) -> str:
        """The ``Link`` header of a full page whose last row is ``last``: the next page's URL.

        The request's path (behind its ``root_path``) and ``query``, with ``last``'s cursor.
        """
        cursor = encode_cursor(sort, self.position(sort, last))
        return next_link(scope.get("root_path", "") + scope["path"], query, cursor)


def encode_cursor(sort: Sort, position: Position) -> str:
    """The cursor of the page after ``position`` in ``sort``."""
    payload = msgspec.json.encode((CURSOR_VERSION, sort.order_by, position.value, position.id))
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
"""What a query value may hold unquoted: all a cursor or an order holds, and most names."""


def query_value(value: str | int | bool) -> str:
    """``value`` written in a query string, as ``urlencode`` writes it (but quicker)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value if _UNRESERVED.fullmatch(value) else quote_plus(value)


def next_link(path: str, query: Query, cursor: str) -> str:
    """The ``Link`` header value pointing at the next page, keeping the request's parameters.

    The URL is relative to the request's (RFC 8288, 3.1), so it stays right behind a proxy.
    ``offset`` is dropped: the cursor says where the next page starts.
    """
    pairs = [
        f"{key}={query_value(value)}"
        for key, value in query.items()
        if value is not None and key not in ("offset", "cursor")
    ]
    return f'<{path}?{"&".join([*pairs, f"cursor={query_value(cursor)}"])}>; rel="next"'


class Pages(Generic[T]):
    """A list's answers: a page of ``listing``, with its ``Link`` and, if asked, its count."""

    def __init__(self, listing: Listing[T]) -> None:
        self.listing = listing
        self.orders = Orders(listing.keys)
        """The list's orders and cursors."""

    async def answer(
        self,
        scope: Scope,
        db: Database,
        filters: dict[str, Any],
        *,
        order_by: str,
        cursor: str | None,
        offset: int,
        limit: int,
        count: bool,
    ) -> JsonResponse[list[T]]:
        """The page the query asks for, the rows ``filters`` (by name; None: not sent) match.

        A full page's ``Link`` names the next page's URL, with the same query; ``count=true``
        adds ``X-Total-Count``, how many rows match over all pages.
        """
        sort, after = self.orders.start(order_by, cursor, offset)
        rows = await self.listing.page(db, filters, sort, limit=limit, offset=offset, after=after)
        headers = {}
        if len(rows) == limit:
            query = {**filters, "order_by": order_by, "limit": limit, "count": count}
            headers["Link"] = self.orders.link_after(scope, query, sort, rows[-1])
        if count:
            headers["X-Total-Count"] = str(await self.listing.count(db, filters))
        return JsonResponse(rows, headers=headers)
