"""Time the schema migrations on a database already holding many heroes.

The database at ``--database-url`` must be empty (a new SQLite file, or a new PostgreSQL
database): it is migrated to the first revision, filled with ``--rows`` heroes in bulk, then
upgraded to the latest revision and downgraded back, each timed::

    python -m tests.benchmarks.migration --rows 1000000 --database-url sqlite:///migration.db
    createdb -h 127.0.0.1 -U postgres heroes_migration
    python -m tests.benchmarks.migration --rows 1000000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/heroes_migration

With ``--releases``, each migration runs under the release before it instead (tests/releases.py:
the N-1 harness of tests/test_upgrades.py), on ``--heroes`` heroes, then the release that knew
only the first migration serves ``--first-heroes`` heroes while migrate runs all the others; the
failed requests, the longest wait and migrate's time go to ``--results``, each database made on
the server at ``--server-url`` and dropped::

    python -m tests.benchmarks.migration --releases \\
        --server-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from advanced_alchemy.alembic.commands import AlembicCommands

from service.database.engines import database_config
from service.settings import Settings
from tests.benchmarks.run import hero
from tests.helpers import direct_engine
from tests.migration_history import git, migrations, release_before
from tests.releases import CLIENTS, UpgradeReport, release, upgrade_under_load

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
    parser.add_argument("--database-url", help="an empty database")
    parser.add_argument("--rows", type=int, default=1_000_000, help="heroes (1,000,000)")
    parser.add_argument("--releases", action="store_true", help="under the releases before")
    parser.add_argument("--server-url", default=SERVER, help=f"PostgreSQL ({SERVER})")
    parser.add_argument("--heroes", type=int, default=100_000, help="heroes per migration")
    parser.add_argument("--first-heroes", type=int, default=1_000_000, help="from the first")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"({RESULTS})")
    parser.add_argument(
        "--baseline", metavar="COMMIT", help="also run COMMIT's own migrate on --first-heroes"
    )
    args = parser.parse_args(argv)
    if args.releases:
        given = sys.argv[1:] if argv is None else argv
        under_releases(args, " ".join(["python -m tests.benchmarks.migration", *given]))
        return
    if not args.database_url:
        parser.error("--database-url is needed (or --releases)")
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


SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
HEADER = (
    "| migration | release before | heroes | migrate (s) | requests | failed "
    "| worst wait (ms) | lost | API checks |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
)
RESULTS = Path(__file__).with_name("RESULTS-migrations.md")


@contextmanager
def new_database(server_url: str) -> Iterator[str]:
    """An empty database on the server, dropped afterwards."""
    name = f"hero_migration_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def under_releases(args: argparse.Namespace, command: str) -> None:
    """Each migration under the release before it, then the first release to the head."""
    chain = migrations()
    reports: list[tuple[str, str, UpgradeReport]] = []
    runs = [
        (m.revision, m.phase, m.down_revision or "base", m.revision, args.heroes, m)
        for m in chain[1:]
    ]
    runs.append(("all", "", chain[0].revision, "heads", args.first_heroes, chain[1]))
    if args.baseline:
        runs.append(("baseline", "", chain[0].revision, "heads", args.first_heroes, chain[1]))
    for label, phase, start, target, heroes, first_new in runs:
        before = release(release_before(first_new))
        migrator = release(git("rev-parse", args.baseline).strip()) if label == "baseline" else None
        with new_database(args.server_url) as url:
            report = upgrade_under_load(
                before, url, start=start, target=target, heroes=heroes, migrator=migrator
            )
        print(report.line(), flush=True)
        reports.append((label, phase, report))
    args.results.write_text(results_text(command, reports))
    print(f"wrote {args.results}")


def results_text(command: str, reports: list[tuple[str, str, UpgradeReport]]) -> str:
    """The results file: what ran, where, and one row per run."""
    versions = platform.python_version()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    rows = []
    for label, phase, report in reports:
        migration = f"{label} ({phase})" if phase else f"{report.start} -> head"
        if report.migrator != "today":
            migration += f", by {report.migrator}'s own migrate"
        checks = "passed" if report.checks.returncode == 0 else "FAILED"
        rows.append(
            f"| {migration} | {report.release} | {report.heroes:,} | "
            f"{report.migrate_seconds:.1f} | {report.requests:,} | {len(report.failures)} | "
            f"{report.worst_wait * 1000:,.0f} | {len(report.lost)} | {checks} |"
        )
    last = next(report for label, _, report in reports if label == "all")
    failed = [
        f"- {label}: {len(report.failures)} failed, the first: `{report.failures[0]}`"
        for label, _, report in reports
        if report.failures
    ]
    failures = "\n".join(["", "Failed requests:", "", *failed, ""]) if failed else ""
    steps = "\n".join(f"    {line}" for line in last.migrate_output.strip().splitlines())
    return f"""# Migrations under the release before them

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}`, at commit {commit}.

- Machine: {os.cpu_count()} CPUs, shared with other work while it ran (waits are noisy); Python
  {versions}; PostgreSQL on 127.0.0.1.
- Each row: the release before the migration (the code just before it first appeared, from git
  history) serves one uvicorn worker on a database holding the heroes, under {CLIENTS}
  concurrent clients mixing creates (half with an Idempotency-Key), reads, lists, updates and
  deletes, while today's `python -m service migrate --to <revision>` runs (its time, in
  seconds, includes starting Python). Worst wait: the longest request in flight while migrate
  ran. Lost: acknowledged writes not read back as acknowledged. Then the release's own API
  checks (its tests/sdk_scenario.py) ran on the migrated schema. A row "by <commit>'s own
  migrate" ran that commit's migrations instead of today's, for comparison.

{HEADER}
{chr(10).join(rows)}
{failures}
What migrate printed on {last.heroes:,} heroes:

{steps}
"""


if __name__ == "__main__":
    main()
