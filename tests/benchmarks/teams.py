"""What teams cost: instructions per request (callgrind) of hero and team reads, beside a base.

The app built by ``create_app`` is called as an ASGI app in a process of its own under callgrind
(no HTTP server, no socket), ``CONNECTIONS`` requests in flight, on a fresh database of
``ROWS`` heroes: every other hero in one of ``TEAMS`` teams (so each team has 10 heroes), the
others in none. The scenarios: a hero's get-one without a team and with one (its ``team`` read
by the join), the heroes' list-20, and a team's get-one (with its heroes) and list-20.

``--base DIR`` counts the same hero scenarios with the ``service`` package of another checkout
(``git worktree add /tmp/base main``): what the hero reads cost before teams, to compare with.
Instructions, not time: the machine is shared, and callgrind's counts do not depend on its load.

Run it from the repository root: ``python -m tests.benchmarks.teams [--help]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "RESULTS-teams.md"
ROWS = 1000
TEAMS = 50
CONNECTIONS = 10
WARM_UP = CONNECTIONS * 20

HERO_SCENARIOS = ("hero get-one, no team", "hero get-one, in a team", "hero list-20")
TEAM_SCENARIOS = ("team get-one (10 heroes)", "team list-20")


def paths() -> dict[str, Callable[[int], str]]:
    """Each scenario's path for its ``n``-th request."""
    return {
        "hero get-one, no team": lambda n: f"/heroes/{2 * (n % (ROWS // 2)) + 1}",
        "hero get-one, in a team": lambda n: f"/heroes/{2 * (n % (ROWS // 2)) + 2}",
        "hero list-20": lambda _: "/heroes?offset=0&limit=20",
        "team get-one (10 heroes)": lambda n: f"/teams/{n % TEAMS + 1}",
        "team list-20": lambda _: "/teams?offset=0&limit=20",
    }


def seed(url: str) -> None:
    """ROWS heroes, and TEAMS teams holding every even hero, if the schema has teams."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        has_teams = sa.inspect(connection).has_table("teams")
        if has_teams:
            connection.execute(
                sa.text("INSERT INTO teams (name, headquarters) VALUES (:name, :hq)"),
                [{"name": f"Team {n}", "hq": f"Tower {n}"} for n in range(1, TEAMS + 1)],
            )
        connection.execute(
            sa.text("INSERT INTO heroes (name, age, secret_name) VALUES (:name, :age, :secret)"),
            [
                {"name": f"Hero {n}", "age": 18 + n % 60, "secret": f"Secret {n}"}
                for n in range(1, ROWS + 1)
            ],
        )
        if has_teams:
            connection.execute(
                sa.text(f"UPDATE heroes SET team_id = (id / 2) % {TEAMS} + 1 WHERE id % 2 = 0")
            )
    engine.dispose()


async def child(url: str, names: list[str], requests: int) -> None:
    """Under callgrind: each scenario's instructions per request, as JSON."""
    from service.app import create_app  # noqa: PLC0415 (the checkout's, chosen by the parent)
    from service.settings import Settings  # noqa: PLC0415
    from tests.benchmarks.pooler import Call, instructions_so_far  # noqa: PLC0415

    app = create_app(Settings(database_url=url, access_log=False, db_pool_size=CONNECTIONS))
    counts: dict[str, float] = {}
    make = paths()

    async def run_round(name: str, total: int) -> None:
        queue = iter(range(total))

        async def worker() -> None:
            for n in queue:
                status = await Call("GET", make[name](n))(app)
                if status != 200:
                    raise RuntimeError(f"{name} answered {status}")

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))

    async with app.lifespan():
        for name in names:
            await run_round(name, WARM_UP)
            empty = instructions_so_far()
            empty = instructions_so_far() - empty  # what asking costs
            before = instructions_so_far()
            await run_round(name, requests)
            counts[name] = (instructions_so_far() - before - empty) / requests
    print(json.dumps(counts))


def count(service_root: Path, database: str, names: list[str], requests: int) -> dict[str, float]:
    """The counts of ``names`` with the ``service`` of ``service_root``, on a new database."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "service").symlink_to(service_root / "service")
        (root / "tests").symlink_to(REPO / "tests")
        url = database_url(database, root)
        env = {**os.environ, "PYTHONPATH": str(root)}
        migrate = [sys.executable, "-m", "service", "migrate"]
        subprocess.run(migrate, cwd=root, env={**env, "DATABASE_URL": url}, check=True)
        seed(url)
        command = [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, "-m", "tests.benchmarks.teams",
            "--child", url, "--requests", str(requests), "--names", *names,
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        counted: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return counted


def database_url(database: str, folder: Path) -> str:
    """A new database of the kind asked for."""
    if database == "sqlite":
        return f"sqlite:///{folder / 'heroes.db'}"
    import psycopg  # noqa: PLC0415

    from tests.conftest import POSTGRES_SERVER  # noqa: PLC0415

    name = f"hero_teams_{os.getpid()}_{folder.name[-8:].lower()}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_SERVER).set(database=name)
    return url.render_as_string(hide_password=False)


def revision(root: Path) -> str:
    """The checkout's commit, with ``+`` if it has changes; its name if it is no git checkout."""
    if not (root / ".git").exists():
        return root.name
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "service"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + ("+" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    """Count, print a markdown table, and keep it in RESULTS-teams.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per scenario")
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--base", type=Path, help="another checkout, for the hero reads before")
    parser.add_argument("--no-save", action="store_true", help=f"leave {RESULTS.name} alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child(args.child, args.names, args.requests))
        return
    columns = [*HERO_SCENARIOS, *TEAM_SCENARIOS]
    lines = [
        "# What teams cost: instructions per request (callgrind)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m tests.benchmarks.teams "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`.",
        "",
        f"- Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}; the service in-process, {CONNECTIONS} requests in flight, "
        f"{args.requests} requests per scenario after {WARM_UP} to warm up; {ROWS} heroes, every "
        f"other one in one of {TEAMS} teams.",
        f"- Service at {revision(REPO)}"
        + (f"; the base at {revision(args.base)} ({args.base})." if args.base else "."),
        "",
        "Instructions per request (thousands):",
        "",
        "| database | service | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for database in args.database:
        rows = []
        if args.base:
            base = count(
                args.base, database, ["hero get-one, no team", "hero list-20"], args.requests
            )
            rows.append(("base", base))
        rows.append(("teams", count(REPO, database, columns, args.requests)))
        for label, counted in rows:
            cells = [f"{counted[c] / 1000:,.1f}" if c in counted else "-" for c in columns]
            lines.append(f"| {database} | {label} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_save:
        RESULTS.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
