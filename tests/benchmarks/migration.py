"""Time the schema migrations on a database already holding many heroes.

The database at ``--database-url`` must be empty (a new SQLite file, or a new PostgreSQL
database): it is migrated to the first revision, filled with ``--rows`` heroes in bulk, then
upgraded to the latest revision and downgraded back, each timed::

    python -m tests.benchmarks.migration --rows 1000000 --database-url sqlite:///migration.db
    createdb -h 127.0.0.1 -U postgres heroes_migration
    python -m tests.benchmarks.migration --rows 1000000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/heroes_migration
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands

from service.database.engines import database_config
from service.settings import Settings
from tests.benchmarks.run import hero
from tests.helpers import direct_engine

FIRST = "0001"
BATCH = 100_000


def alembic(url: str) -> AlembicCommands:
    """The migration commands as ``just migrate`` runs them."""
    return AlembicCommands(sqlalchemy_config=database_config(Settings(database_url=url)))


def batches(rows: int) -> Iterator[list[tuple[Any, ...]]]:
    """The seeded heroes, ``BATCH`` at a time, as (name, age, secret_name) rows."""
    for first in range(1, rows + 1, BATCH):
        numbers = range(first, min(first + BATCH, rows + 1))
        yield [(h["name"], h["age"], h["secret_name"]) for h in map(hero, numbers)]


def fill(url: str, rows: int) -> None:
    """Insert ``rows`` heroes at the first revision, by COPY on PostgreSQL."""
    engine = direct_engine(url)
    try:
        with engine.begin() as connection:
            driver: Any = connection.connection.driver_connection
            if engine.dialect.name == "postgresql":
                copy_sql = "COPY heroes (name, age, secret_name) FROM STDIN"
                with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
                    for batch in batches(rows):
                        for row in batch:
                            copy.write_row(row)
            else:
                insert = "INSERT INTO heroes (name, age, secret_name) VALUES (?, ?, ?)"
                for batch in batches(rows):
                    driver.executemany(insert, batch)
            connection.exec_driver_sql("ANALYZE")
            count = connection.execute(sa.text("SELECT count(*) FROM heroes")).scalar_one()
        if count != rows:
            raise RuntimeError(f"seeded {count} heroes, not {rows}")
    finally:
        engine.dispose()


def timed(what: str, step: Callable[[], object]) -> float:
    """Run ``step``, print and return how long it took, in seconds."""
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    print(f"{what}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Fill the database at the first revision, then time the upgrade and the downgrade."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.migration")
    parser.add_argument("--database-url", required=True, help="an empty database")
    parser.add_argument("--rows", type=int, default=1_000_000, help="heroes (1,000,000)")
    args = parser.parse_args(argv)
    backend = sa.make_url(args.database_url).get_backend_name()
    alembic(args.database_url).upgrade(FIRST)
    timed(
        f"{backend}: {args.rows:,} heroes inserted at {FIRST}",
        lambda: fill(args.database_url, args.rows),
    )
    timed(f"{backend}: upgrade {FIRST} -> head", lambda: alembic(args.database_url).upgrade("head"))
    timed(
        f"{backend}: downgrade head -> {FIRST}", lambda: alembic(args.database_url).downgrade(FIRST)
    )
    timed(
        f"{backend}: upgrade {FIRST} -> head again",
        lambda: alembic(args.database_url).upgrade("head"),
    )


if __name__ == "__main__":
    main()
