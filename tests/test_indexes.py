"""The queries the service runs are served by an index, so their cost does not grow with the table.

Each test asks the database for the plan of the very statement the service sends, on a table of
50,000 heroes with fresh statistics: a lookup by id, the first page of the list, and the list
filtered by name or by age must not read the whole table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from service.db import CompiledStatement, create_engine
from service.heroes import SELECT_HERO, list_statement
from service.settings import Settings
from tests.helpers import Client

ROWS = 50_000

PAGE = {"offset": 0, "limit": 20, "name": None, "min_age": None, "max_age": None}

QUERIES: dict[str, tuple[CompiledStatement, dict[str, Any]]] = {
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
    engine = create_engine(settings)
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


def plan(engine: sa.Engine, query: CompiledStatement, params: dict[str, Any]) -> list[str]:
    """The database's plan for ``query`` as the service compiles it, one line per step."""
    statement = cast(sa.ClauseElement, query.statement)
    compiled = cast(SQLCompiler, statement.compile(dialect=engine.dialect))
    values = {**compiled.params, **params}
    arguments: Any = (
        tuple(values[name] for name in compiled.positiontup or ())
        if compiled.positional
        else values
    )
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(explain + compiled.string, arguments).all()
    return [str(row[-1]) for row in rows]


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_is_served_by_an_index(engine: sa.Engine, name: str) -> None:
    query, params = QUERIES[name]

    steps = plan(engine, query, params)

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
