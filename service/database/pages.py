"""A table's list, a page at a time: its sorts, the positions cursors name, its filters.

Over 300 lines on purpose: the sort keys, the filters, the walk's segments and the folding rule
they share are one piece, the statements of one list, read together.

Any resource's list is a :class:`Listing` of its table: the fields a page shows, the keys it may
be sorted on (``id`` always, and ties are broken by id), and the filters that narrow it. The
statements are built once for each shape of request (which filters are given, the sort, the
segment of the walk) and kept.

A page is found by position (keyset): a :class:`Position` names the last row of the previous
page by its place in the sort, ``(sort key, id)``, and the next page is the rows after it, read
as index ranges however deep the page is, and unaffected by rows inserted or deleted elsewhere
meanwhile. ``offset`` pages are read too, in one statement whose cost grows with the offset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple

import sqlalchemy as sa

from service.database.statements import Database, RowT, Statement
from service.database.tables import ID_MAX

Value = int | str | None
"""A sort key's value, as a cursor holds it."""


class Sort(NamedTuple):
    """One of a list's orders: the key sorted on, and the direction."""

    key: str
    descending: bool

    @property
    def order_by(self) -> str:
        """The ``order_by`` value that asks for this sort (``-`` for descending)."""
        return f"-{self.key}" if self.descending else self.key


class Position(NamedTuple):
    """Where a page ended: the sort key of its last row, and that row's id."""

    value: Value
    id: int


class SortKey(NamedTuple):
    """A key a list may be sorted on: what is ordered, and what a cursor may hold of it."""

    column: sa.ColumnElement[Any]
    """What the statements order by and compare a cursor's value with."""
    field: str
    """The field of a row that holds the key's value."""
    valid: Callable[[Value], bool]
    """Whether a value could be the key's: a cursor's is checked before it reaches SQL."""
    folded: bool = False
    """The key is the field with A-Z folded (see :func:`fold`), as ``lower()`` sorts it."""
    nullable: bool = False
    """Rows without a value sort before every value: first ascending, last descending."""

    def value(self, row: Any) -> Value:
        """The key of ``row``, as its position holds it."""
        found: Value = getattr(row, self.field)
        return fold(found) if self.folded and isinstance(found, str) else found


def id_key(column: sa.ColumnElement[Any]) -> SortKey:
    """The id, every list's first key and its tie-breaker."""
    return SortKey(column, "id", lambda value: type(value) is int and 0 <= value <= ID_MAX)


def text_key(column: sa.Column[Any], max_length: int) -> SortKey:
    """A text column sorted with A-Z folded (``lower()``), by code point (see :func:`fold`)."""

    def valid(value: Value) -> bool:
        return isinstance(value, str) and len(value) <= max_length and "\x00" not in value

    return SortKey(sa.func.lower(column), column.name, valid, folded=True)


def integer_key(column: sa.Column[Any], low: int, high: int) -> SortKey:
    """An integer column in ``[low, high]``; nullable if the column is."""
    nullable = bool(column.nullable)

    def valid(value: Value) -> bool:
        if value is None:
            return nullable
        return type(value) is int and low <= value <= high

    return SortKey(column, column.name, valid, nullable=nullable)


Part = Literal["all", "null", "not_null", "at", "after"]
"""Which rows of the sort key a segment holds: all, those with a null or a non-null key, those
at the cursor's key, or those after it."""


class Segment(NamedTuple):
    """A run of one page walk that is a single index range: part of the key, maybe past an id."""

    part: Part
    past_id: bool = False


class Filter(NamedTuple):
    """A way a list is narrowed, by one query value: conditions on the statement's parameters."""

    name: str
    """The query value's name (``name_prefix``)."""
    conditions: tuple[tuple[str, sa.ColumnElement[bool]], ...]
    """Each condition, with the name of the one parameter it binds."""
    bind: Callable[[Any], tuple[Any, ...]] = lambda value: (value,)
    """The query value's parameters, in the order of the conditions; a None leaves one out."""


def equal(name: str, column: sa.ColumnElement[Any]) -> Filter:
    """The rows whose ``column`` is the value."""
    return Filter(name, ((name, column == sa.bindparam(name)),))


def at_least(name: str, column: sa.ColumnElement[Any]) -> Filter:
    """The rows whose ``column`` is the value or more."""
    return Filter(name, ((name, column >= sa.bindparam(name)),))


def at_most(name: str, column: sa.ColumnElement[Any]) -> Filter:
    """The rows whose ``column`` is the value or less."""
    return Filter(name, ((name, column <= sa.bindparam(name)),))


def starts_with(name: str, column: sa.ColumnElement[Any]) -> Filter:
    """The rows whose ``column`` starts with the value, A-Z folded: a range of ``lower()``.

    A range of the folded column, which an index on ``(lower(column), id)`` serves.
    """
    folded = sa.func.lower(column)
    low, high = f"{name}_low", f"{name}_high"
    return Filter(
        name,
        ((low, folded >= sa.bindparam(low)), (high, folded < sa.bindparam(high))),
        prefix_range,
    )


class Listing(Generic[RowT]):
    """One table's list: the rows of a page, its sort keys and filters, as statements.

    ``row`` is the type of a page's rows (a Struct or NamedTuple): its fields name the columns
    selected. ``keys`` are the sorts besides the id, which every list has, first.
    """

    def __init__(
        self,
        table: sa.Table,
        row: type[RowT],
        *,
        keys: Mapping[str, SortKey],
        filters: Sequence[Filter],
    ) -> None:
        self.table = table
        self.row = row
        fields: Sequence[str] = getattr(row, "__struct_fields__", None) or row._fields  # type: ignore[attr-defined]
        self.columns = tuple(table.c[field] for field in fields)
        self.keys: dict[str, SortKey] = {"id": id_key(table.c.id), **keys}
        self.filters = {found.name: found for found in filters}
        self._conditions = [condition for found in filters for condition in found.conditions]
        self._unset = dict.fromkeys(param for param, _ in self._conditions)
        """Every filter parameter, unset (None): the start of each request's parameters."""
        self.statement = functools.cache(self._statement)
        self.count_statement = functools.cache(self._count_statement)

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The statements' parameters for the filters' query values (None: not given)."""
        params = self._unset.copy()
        for name, value in values.items():
            if value is not None:
                found = self.filters[name]
                for (param, _), each in zip(found.conditions, found.bind(value), strict=True):
                    params[param] = each
        return params

    def given(self, params: Mapping[str, Any]) -> tuple[bool, ...]:
        """Which of the filters' conditions apply: the key of the statements' caches."""
        return tuple(params[param] is not None for param, _ in self._conditions)

    def segments(self, sort: Sort, after: Position | None) -> list[Segment]:
        """The index ranges that, read in turn, list the rows after ``after`` in ``sort``.

        Rows without a value of a nullable key sort before every value (first ascending, last
        descending), so they are walked in two groups: null keys by id, then the others by
        (key, id). After a cursor the rest of its group comes first: the rows at the cursor's
        key with a greater id (fewer if descending), then those past its key. Each is a plain
        index range on both databases; a row comparison ``(key, id) > (:key, :id)`` would be
        one statement, but SQLite seeks on its first column only and scans every tie.
        """
        if sort.key == "id":
            return [Segment("all", past_id=after is not None)]
        nullable = self.keys[sort.key].nullable
        groups: list[Part] = ["null", "not_null"] if nullable else ["all"]
        if sort.descending:
            groups.reverse()
        if after is None:
            return [Segment(group) for group in groups]
        if after.value is None:
            rest = groups[groups.index("null") + 1 :]
            return [Segment("null", past_id=True), *(Segment(group) for group in rest)]
        rest = groups[groups.index("not_null" if nullable else "all") + 1 :]
        return [Segment("at", past_id=True), Segment("after"), *(Segment(group) for group in rest)]

    def _statement(
        self, given: tuple[bool, ...], sort: Sort, segment: Segment, *, nulls_ordered: bool = False
    ) -> Statement[RowT]:
        """The page query for one combination of filters, sort and segment.

        ``given`` says which filter conditions apply (:meth:`given`). ``nulls_ordered`` spells
        a nullable key's nulls out in ORDER BY, for the offset walk, which reads every group in
        one statement.
        """
        key = self.keys[sort.key].column
        ids = self.table.c.id
        beyond = key.__lt__ if sort.descending else key.__gt__
        past_id = ids.__lt__ if sort.descending else ids.__gt__
        conditions = [
            *self._filtered(given),
            {
                "all": None,
                "null": key.is_(None),
                "not_null": key.is_not(None),
                "at": key == sa.bindparam("key", type_=key.type),
                "after": beyond(sa.bindparam("key", type_=key.type)),
            }[segment.part],
            past_id(sa.bindparam("after_id")) if segment.past_id else None,
        ]
        # Within one key (a cursor's), the id alone orders: SQLite sorts rather than see that
        # the (key, id) index is already in that order.
        order: list[Any] = [key] if sort.key != "id" and segment.part != "at" else []
        order.append(ids)
        if sort.descending:
            order = [column.desc() for column in order]
        if nulls_ordered and self.keys[sort.key].nullable:
            order[0] = order[0].nulls_last() if sort.descending else order[0].nulls_first()
        return Statement(
            sa.select(*self.columns)
            .where(*(c for c in conditions if c is not None))
            .order_by(*order)
            .limit(sa.bindparam("limit"))
            .offset(sa.bindparam("offset")),
            row=self.row,
        )

    def _count_statement(self, given: tuple[bool, ...]) -> Statement[int]:
        """How many rows the filters match; a scan, so off the event loop on SQLite."""
        query = sa.select(sa.func.count()).select_from(self.table).where(*self._filtered(given))
        return Statement(query, row=int, slow=True)

    def _filtered(self, given: tuple[bool, ...]) -> list[sa.ColumnElement[bool]]:
        return [
            condition
            for (_, condition), applies in zip(self._conditions, given, strict=True)
            if applies
        ]

    async def page(
        self,
        db: Database,
        values: Mapping[str, Any],
        sort: Sort,
        *,
        limit: int,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[RowT]:
        """One page of the rows the filters' ``values`` match, in ``sort``.

        After ``after``, or from ``offset``. A walk from a position reads its segments in turn
        until the page is full; an ``offset`` is read in one statement, whose cost grows with
        the offset.
        """
        params = self.params(values)
        given = self.given(params)
        if offset:
            query = self.statement(given, sort, Segment("all"), nulls_ordered=True)
            return list(await db.fetch_all(query, limit=limit, offset=offset, **params))
        rows: list[RowT] = []
        key = None if after is None else after.value
        after_id = None if after is None else after.id
        for segment in self.segments(sort, after):
            rows.extend(
                await db.fetch_all(
                    self.statement(given, sort, segment),
                    limit=limit - len(rows),
                    offset=0,
                    key=key,
                    after_id=after_id,
                    **params,
                )
            )
            if len(rows) == limit:
                break
        return rows

    async def count(self, db: Database, values: Mapping[str, Any]) -> int:
        """How many rows the filters' ``values`` match, over all pages."""
        params = self.params(values)
        count = await db.fetch_one(self.count_statement(self.given(params)), **params)
        return count or 0


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def fold(text: str) -> str:
    """``text`` with A-Z lowered, and nothing else changed.

    This is what ``lower()`` does on both databases the way the service runs them (SQLite's
    lower() is ASCII only; PostgreSQL's, on the "C" collation of the text columns, too), so a
    search and a sort on a folded key treat ``Deadpond`` and ``deadpond`` alike but ``É`` and
    ``é`` as different letters, the same everywhere.
    """
    return text.translate(_ASCII_LOWER)


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The range ``[low, high)`` of folded texts that start with the folded ``prefix``.

    Texts compare by code point on both databases, so every string that starts with ``low``
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
