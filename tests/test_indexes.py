"""The queries the service runs are served by an index, so their cost does not grow with the table.

Each test asks the database for the plan of the very statement the service sends, on a table of
50,000 heroes with fresh statistics: a lookup by id, the first page of the list, the list
filtered by name or by age, the last page reached by cursor, pages sorted by name and by -age
(first and deep, each segment of service.database.pages.Listing.segments) and the name_prefix search
must not read the whole table, and the sorted pages must not sort.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from service.database.engines import create_engine
from service.database.pages import Segment, Sort
from service.database.statements import Statement
from service.heroes.queries import LIST, SELECT_HERO, Filters
from service.settings import Settings
from tests.conftest import migrate
from tests.helpers import direct_engine

ROWS = 50_000

PAGE = {"offset": 0, "limit": 20, "key": None, "after_id": None, **LIST.params(Filters()._asdict())}
BY_ID, BY_NAME, BY_AGE_DESC = Sort("id", False), Sort("name", False), Sort("age", True)
PREFIX = LIST.params(Filters(name_prefix="hero 1234")._asdict())


def page(sort: Sort, segment: Segment, **params: Any) -> tuple[Statement, dict[str, Any]]:
    """The statement of one segment of a page, with its parameters."""
    given = LIST.given({**PAGE, **params})
    return LIST.statement(given, sort, segment), {**PAGE, **params}


QUERIES: dict[str, tuple[Statement, dict[str, Any]]] = {
    "get-one": (SELECT_HERO, {"row_id": 12_345}),
    "list-20": page(BY_ID, Segment("all")),
    "by-name": page(BY_ID, Segment("all"), name="Hero 12345"),
    "by-age": page(BY_ID, Segment("all"), min_age=40, max_age=40),
    # The last page, reached by following the next links to the end.
    "last-page-by-cursor": page(BY_ID, Segment("all", past_id=True), after_id=ROWS - 20),
    "sorted-by-name": page(BY_NAME, Segment("all")),
    # Deep in the name order: the heroes with the cursor's name and a greater id, then the rest.
    "sorted-by-name-at-cursor": page(
        BY_NAME, Segment("at", past_id=True), key="hero 40000", after_id=40_000
    ),
    "sorted-by-name-after-cursor": page(BY_NAME, Segment("after"), key="hero 40000"),
    "sorted-by-minus-age": page(BY_AGE_DESC, Segment("not_null")),
    "sorted-by-minus-age-at-cursor": page(
        BY_AGE_DESC, Segment("at", past_id=True), key=40, after_id=25_000
    ),
    "sorted-by-minus-age-after-cursor": page(BY_AGE_DESC, Segment("after"), key=40),
    "sorted-by-minus-age-nulls": page(BY_AGE_DESC, Segment("null")),
    "name-prefix": page(BY_ID, Segment("all"), **PREFIX),
    "name-prefix-by-name": page(BY_NAME, Segment("all"), **PREFIX),
}

SQLITE_PLANS = {
    "get-one": [["SEARCH heroes USING INTEGER PRIMARY KEY (rowid=?)"]],
    # A walk in id order that stops after the page.
    "list-20": [["SCAN heroes"]],
    "by-name": [["SEARCH heroes USING INDEX ix_heroes_name (name=?)"]],
    # The heroes of the age range, sorted by id; or the walk in id order, when a range is wide.
    "by-age": [
        ["SEARCH heroes USING INDEX ix_heroes_age_id (age>? AND age<?)"],
        [
            "SEARCH heroes USING INDEX ix_heroes_age_id (age>? AND age<?)",
            "USE TEMP B-TREE FOR ORDER BY",
        ],
        ["SCAN heroes"],
    ],
    "last-page-by-cursor": [["SEARCH heroes USING INTEGER PRIMARY KEY (rowid>?)"]],
    "sorted-by-name": [["SCAN heroes USING INDEX ix_heroes_name_lower_id"]],
    "sorted-by-name-at-cursor": [
        ["SEARCH heroes USING INDEX ix_heroes_name_lower_id (<expr>=? AND id>?)"]
    ],
    "sorted-by-name-after-cursor": [
        ["SEARCH heroes USING INDEX ix_heroes_name_lower_id (<expr>>?)"]
    ],
    "sorted-by-minus-age": [["SEARCH heroes USING INDEX ix_heroes_age_id (age>?)"]],
    "sorted-by-minus-age-at-cursor": [
        ["SEARCH heroes USING INDEX ix_heroes_age_id (age=? AND id<?)"]
    ],
    "sorted-by-minus-age-after-cursor": [["SEARCH heroes USING INDEX ix_heroes_age_id (age<?)"]],
    "sorted-by-minus-age-nulls": [["SEARCH heroes USING INDEX ix_heroes_age_id (age=?)"]],
    # The few heroes of the prefix, then sorted by id.
    "name-prefix": [
        [
            "SEARCH heroes USING INDEX ix_heroes_name_lower_id (<expr>>? AND <expr><?)",
            "USE TEMP B-TREE FOR ORDER BY",
        ]
    ],
    "name-prefix-by-name": [
        ["SEARCH heroes USING INDEX ix_heroes_name_lower_id (<expr>>? AND <expr><?)"]
    ],
}
"""The plans SQLite may choose for each query, every step of them."""

POSTGRES_INDEXES = {
    "get-one": ("heroes_pkey",),
    "list-20": ("heroes_pkey",),
    "by-name": ("ix_heroes_name",),
    # Walking the ids and filtering also stops after a page: 20 matches in id order come after
    # about 20 / selectivity rows, however large the table.
    "by-age": ("ix_heroes_age_id", "heroes_pkey"),
    "last-page-by-cursor": ("heroes_pkey",),
    "sorted-by-name": ("ix_heroes_name_lower_id",),
    "sorted-by-name-at-cursor": ("ix_heroes_name_lower_id",),
    "sorted-by-name-after-cursor": ("ix_heroes_name_lower_id",),
    "sorted-by-minus-age": ("ix_heroes_age_id",),
    "sorted-by-minus-age-at-cursor": ("ix_heroes_age_id",),
    "sorted-by-minus-age-after-cursor": ("ix_heroes_age_id",),
    "sorted-by-minus-age-nulls": ("ix_heroes_age_id",),
    "name-prefix": ("ix_heroes_name_lower_id",),
    "name-prefix-by-name": ("ix_heroes_name_lower_id",),
}
"""The indexes PostgreSQL may read for each query; it must never scan the table whole."""
UNSORTED = {name for name in QUERIES if name not in ("get-one", "by-name", "by-age", "name-prefix")}
"""The queries whose index gives the order: no sort step at all, on either database."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database holding ``ROWS`` heroes, with fresh statistics; one per module."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('indexes') / 'heroes.db'}"
        migrate(url)
    else:
        url = request.getfixturevalue("postgres_url")
    engine = direct_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO heroes (name, age, secret_name) VALUES (:name, :age, :secret)"),
            [
                {"name": f"Hero {n}", "age": n % 90 or None, "secret": f"s{n}"}
                for n in range(1, ROWS + 1)
            ],
        )
        connection.exec_driver_sql("ANALYZE")
    yield url
    if request.param == "postgresql":  # the session's database is shared with other tests
        with engine.begin() as connection:
            connection.exec_driver_sql("TRUNCATE heroes RESTART IDENTITY")
    engine.dispose()


def plan(database_url: str, query: Statement, params: dict[str, Any]) -> list[str]:
    """The database's plan for ``query`` as the service compiles it, one line per step."""
    engine = create_engine(Settings(database_url=database_url))
    compiled = query.compiled(engine.dialect)
    arguments = compiled.arguments(params)
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with closing(sqlite3.connect(url.database or "")) as connection:
            rows = connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, arguments).fetchall()
        return [str(row[-1]) for row in rows]
    return asyncio.run(_explain_on_asyncpg(database_url, compiled.sql, arguments))


async def _explain_on_asyncpg(database_url: str, sql: str, arguments: list[Any]) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        return [row[0] for row in await connection.fetch("EXPLAIN " + sql, *arguments)]
    finally:
        await connection.close()


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_is_served_by_an_index(filled_url: str, name: str) -> None:
    query, params = QUERIES[name]

    steps = plan(filled_url, query, params)

    if filled_url.startswith("sqlite"):
        assert steps in SQLITE_PLANS[name], steps
    else:
        text = "\n".join(steps)
        used = re.findall(r"Index (?:Only )?Scan (?:Backward )?(?:using|on) (\w+)", text)
        assert used, text
        assert set(used) <= set(POSTGRES_INDEXES[name]), text
        assert "Seq Scan" not in text, text
        if name in UNSORTED:
            assert "Sort" not in text, text
