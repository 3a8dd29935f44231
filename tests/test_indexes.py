"""The queries the service runs are served by an index, so their cost does not grow with the table.

Each test asks the database for the plan of the very statement the service sends, on a table of
50,000 heroes with fresh statistics: a lookup by id, the first page of the list, and the list
filtered by name or by age must not read the whole table.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from service.db import create_engine
from service.heroes.queries import SELECT_HERO, list_statement
from service.settings import Settings
from service.sql import Statement
from tests.helpers import Client, direct_engine

ROWS = 50_000

PAGE = {"offset": 0, "limit": 20, "name": None, "min_age": None, "max_age": None}

QUERIES: dict[str, tuple[Statement, dict[str, Any]]] = {
    "get-one": (SELECT_HERO, {"hero_id": 12_345}),
    "list-20": (list_statement(by_name=False, min_age=False, max_age=False), PAGE),
    "by-name": (
        list_statement(by_name=True, min_age=False, max_age=False),
        {**PAGE, "name": "Hero 12345"},
    ),
    "by-age": (
        list_statement(by_name=False, min_age=True, max_age=True),
        {**PAGE, "min_age": 40, "max_age": 40},
    ),
}

SQLITE_PLANS = {
    "get-one": [["SEARCH heroes USING INTEGER PRIMARY KEY (rowid=?)"]],
    # A walk in id order that stops after the page.
    "list-20": [["SCAN heroes"]],
    "by-name": [["SEARCH heroes USING INDEX ix_heroes_name (name=?)"]],
    # The heroes of the age range, sorted by id; or the walk in id order, when a range is wide.
    "by-age": [
        ["SEARCH heroes USING INDEX ix_heroes_age (age>? AND age<?)"],
        [
            "SEARCH heroes USING INDEX ix_heroes_age (age>? AND age<?)",
            "USE TEMP B-TREE FOR ORDER BY",
        ],
        ["SCAN heroes"],
    ],
}
"""The plans SQLite may choose for each query, every step of them."""

POSTGRES_INDEXES = {
    "get-one": ("heroes_pkey",),
    "list-20": ("heroes_pkey",),
    "by-name": ("ix_heroes_name",),
    # Walking the ids and filtering also stops after a page: 20 matches in id order come after
    # about 20 / selectivity rows, however large the table.
    "by-age": ("ix_heroes_age", "heroes_pkey"),
}
"""The indexes PostgreSQL may read for each query; it must never scan the table whole."""


@pytest.fixture
def engine(client: Client, settings: Settings) -> Iterator[sa.Engine]:
    """The app's database (migrated by the app or the session), holding ``ROWS`` heroes."""
    engine = direct_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO heroes (name, age, secret_name) VALUES (:name, :age, :secret)"),
            [
                {"name": f"Hero {n}", "age": n % 90 or None, "secret": f"s{n}"}
                for n in range(1, ROWS + 1)
            ],
        )
        connection.exec_driver_sql("ANALYZE")
    yield engine
    engine.dispose()


def plan(database_url: str, query: Statement, params: dict[str, Any]) -> list[str]:
    """The database's plan for ``query`` as the service compiles it, one line per step."""
    engine = create_engine(Settings(database_url=database_url))
    compiled = query.compiled(engine.dialect)
    arguments = compiled.arguments(params)
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or "") as connection:
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
def test_query_is_served_by_an_index(engine: sa.Engine, settings: Settings, name: str) -> None:
    query, params = QUERIES[name]

    steps = plan(settings.database_url, query, params)

    if engine.dialect.name == "sqlite":
        assert steps in SQLITE_PLANS[name]
    else:
        text = "\n".join(steps)
        used = re.findall(r"Index Scan (?:using|on) (\w+)", text)
        assert used, text
        assert set(used) <= set(POSTGRES_INDEXES[name]), text
        assert "Seq Scan" not in text, text
        if name == "list-20":
            assert "Sort" not in text, text
