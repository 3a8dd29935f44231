"""Lint every migration's PostgreSQL SQL with squawk (``just lint-migrations``, in ``just lint``).

    python tools/lint_migrations.py [--keep DIR]

Each revision's upgrade is written out as ``alembic upgrade --sql PREVIOUS:REVISION`` writes it
(one file per revision, offline: no database is needed) and squawk (the PyPI package
``squawk-cli``) checks the files. An exception to a rule is made only in the migration itself,
with ``online.lint_ignore(rules, reason)``, which writes squawk's ignore comment with its reason
into that output; an ignore comment without a reason fails the lint. ``--keep DIR`` leaves the
SQL files in DIR, to read.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from advanced_alchemy.alembic.commands import AlembicCommands
from alembic.script import ScriptDirectory

from service.database.engines import MIGRATIONS, database_config
from service.settings import Settings

OFFLINE_URL = "postgresql://lint@localhost/lint"
"""Only its dialect counts: the SQL is written out, nothing connects."""
IGNORE = re.compile(r"--\s*squawk-ignore(?:-file)?\b(?P<rest>.*)")
REASON = re.compile(r"^\s*[\w-]+(\s*,\s*[\w-]+)*\s+--\s*\S")
"""``rule[, rule...] -- reason``: squawk reads the rules and stops at the second ``--``."""


def upgrade_sql(previous: str, revision: str) -> str:
    """What ``alembic upgrade --sql previous:revision`` writes for PostgreSQL."""
    commands = AlembicCommands(
        sqlalchemy_config=database_config(Settings(database_url=OFFLINE_URL))
    )
    commands.config.output_buffer = buffer = io.StringIO()
    commands.upgrade(f"{previous}:{revision}", sql=True)
    return buffer.getvalue()


def write_sql(folder: Path) -> list[Path]:
    """One file of SQL per revision in ``folder``, from the first revision to the head."""
    chain = list(ScriptDirectory(str(MIGRATIONS)).walk_revisions("base", "heads"))
    chain.reverse()
    files = []
    for script in chain:
        path = folder / f"{script.revision}.sql"
        path.write_text(upgrade_sql(script.down_revision or "base", script.revision))  # type: ignore[arg-type]
        files.append(path)
    return files


def ignores_without_reason(files: list[Path]) -> list[str]:
    """The squawk ignore comments that do not say why."""
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            ignore = IGNORE.search(line)
            if ignore and not REASON.match(ignore["rest"]):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Write the SQL, check the ignore comments, run squawk; 0 if all pass."""
    parser = argparse.ArgumentParser(prog="python tools/lint_migrations.py")
    parser.add_argument("--keep", type=Path, help="write the SQL files here and keep them")
    args = parser.parse_args(argv)
    squawk = shutil.which("squawk") or str(Path(sys.executable).with_name("squawk"))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="migrations-sql-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files = write_sql(folder)
        unexplained = ignores_without_reason(files)
        for line in unexplained:
            print(f"an exception to the lint needs its reason (rule -- reason): {line}")
        command = [squawk, "--reporter", "gcc", *map(str, files)]
        result = subprocess.run(command, check=False)  # noqa: S603 (our files, the venv's squawk)
    finally:
        if args.keep is None:
            shutil.rmtree(folder)
    if result.returncode == 0 and not unexplained:
        print(f"squawk: {len(files)} migrations pass")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
