"""Sorting, paging cursors and the name search's folding rule: pure functions, no I/O.

A cursor names the last hero of a page by its place in the sort: ``(sort key, id)``. The next
page is the heroes after that place, found by an index range however deep the page is, and
unaffected by heroes inserted or deleted elsewhere in the meantime.

A cursor is the URL-safe base64 (unpadded) of a JSON array ``[1, order_by, value, id]``:

- ``1``, the format's version: a later format can be told apart, and a cursor of a format the
  service no longer reads is refused (400) instead of being misread;
- ``order_by``, the sort it was made for: a position in one order means nothing in another, so
  a cursor sent with another ``order_by`` is refused rather than answered with a wrong page;
- ``value``, the last hero's sort key (its id, its folded name, or its age or null);
- ``id``, the last hero's id, which breaks ties.

Clients are told it is opaque: they only follow ``Link: rel="next"``. It is not signed, since a
made-up cursor can only choose where a walk starts, which ``offset`` allows too; every field is
checked before it reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal, NamedTuple, get_args
from urllib.parse import quote_plus

import msgspec

from service.database.tables import AGE_MAX, ID_MAX, NAME_MAX_LENGTH

OrderBy = Literal["id", "-id", "name", "-name", "age", "-age"]
"""The orders of the list; ``-`` is descending. Ties are broken by id, in the same direction."""
ORDER_BY: tuple[str, ...] = get_args(OrderBy)

CURSOR_VERSION = 1
Value = int | str | None


class BadQuery(ValueError):
    """A query parameter the list cannot use: answered 400, naming the parameter."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class Sort(NamedTuple):
    """One of the list's orders: the hero field sorted on, and the direction."""

    key: Literal["id", "name", "age"]
    descending: bool

    @property
    def order_by(self) -> str:
        """The ``order_by`` value that asks for this sort."""
        return f"-{self.key}" if self.descending else self.key


def parse_sort(order_by: str) -> Sort:
    """The sort ``order_by`` names, or :class:`BadQuery` listing the allowed values."""
    if order_by not in ORDER_BY:
        raise BadQuery("order_by", f"Expected one of {', '.join(ORDER_BY)}; got {order_by!r}")
    key = order_by.removeprefix("-")
    return Sort(key, order_by.startswith("-"))  # type: ignore[arg-type]


class Position(NamedTuple):
    """Where a page ended: the sort key of its last hero, and that hero's id."""

    value: Value
    id: int


def position_of(sort: Sort, hero_id: int, name: str, age: int | None) -> Position:
    """The place of a hero in ``sort``."""
    values: dict[str, Value] = {"id": hero_id, "name": fold(name), "age": age}
    return Position(values[sort.key], hero_id)


def encode_cursor(sort: Sort, position: Position) -> str:
    """The cursor of the page after ``position`` in ``sort``."""
    payload = msgspec.json.encode((CURSOR_VERSION, sort.order_by, position.value, position.id))
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


_Payload = tuple[int, str, int | str | None, int]


def decode_cursor(cursor: str, sort: Sort) -> Position:
    """The position a cursor names, checked against ``sort``; :class:`BadQuery` if unusable."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        version, order_by, value, hero_id = msgspec.json.decode(raw, type=_Payload, strict=True)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadQuery("cursor", "Not a cursor of this service: follow the Link header") from None
    if version != CURSOR_VERSION:
        raise BadQuery("cursor", f"Cursor format {version} is not supported; list again")
    if order_by != sort.order_by:
        raise BadQuery(
            "cursor", f"The cursor was made for order_by={order_by}, not {sort.order_by}"
        )
    if not (0 <= hero_id <= ID_MAX and _valid(sort, value, hero_id)):
        raise BadQuery("cursor", "Not a cursor of this service: follow the Link header")
    return Position(value, hero_id)


def _valid(sort: Sort, value: Value, hero_id: int) -> bool:
    if sort.key == "id":
        return value == hero_id
    if sort.key == "name":
        return isinstance(value, str) and len(value) <= NAME_MAX_LENGTH and "\x00" not in value
    return value is None or (isinstance(value, int) and 0 <= value <= AGE_MAX)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def fold(text: str) -> str:
    """``text`` with A-Z lowered, and nothing else changed.

    This is what ``lower()`` does on both databases the way the service runs them (SQLite's
    lower() is ASCII only; PostgreSQL's, on the "C" collation of the name column, too), so the
    name search and the name sort treat ``Deadpond`` and ``deadpond`` alike but ``É`` and ``é``
    as different letters, the same everywhere.
    """
    return text.translate(_ASCII_LOWER)


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The range ``[low, high)`` of folded names that start with the folded ``prefix``.

    Names compare by code point on both databases, so every string that starts with ``low``
    sorts before ``high``: ``low`` with its last character moved to the next code point (one
    that can be stored, so no surrogate). ``high`` is None when there is no such string.
    """
    low = fold(prefix)
    head = low.rstrip(chr(_MAX_CODE_POINT))
    if not head:
        return low, None
    following = ord(head[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return low, head[:-1] + chr(following)


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
"""What a query value may hold unquoted: all a cursor or an order holds, and most names."""


def query_value(value: str | int | bool) -> str:
    """``value`` written in a query string, as ``urlencode`` writes it (but quicker)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value if _UNRESERVED.fullmatch(value) else quote_plus(value)


def next_link(path: str, query: dict[str, str | int | bool | None], cursor: str) -> str:
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
