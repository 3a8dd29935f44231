"""The migrations as git history knows them: who added each, and what it first said.

Found, never listed by hand: a new migration is covered by the tests that walk ``MIGRATIONS``
(the first versions' schema, the release before each one) by being added, and nothing else.
The history is this checkout's (a shallow clone lacks it: ``git fetch --unshallow``).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import NamedTuple

from alembic.script import ScriptDirectory

from service.database.engines import MIGRATIONS

REPO = Path(__file__).parents[1]
VERSIONS = ("service/database/migrations/versions", "service/migrations/versions")
"""Where the migrations are, and where they were before the layout moved."""


class Migration(NamedTuple):
    """One migration of today's chain."""

    revision: str
    down_revision: str | None
    phase: str
    """``expand`` or ``contract`` (see docs/database.md)."""
    path: Path
    added_in: str | None
    """The commit that first added the file, or None while it is not committed."""


def git(*args: str) -> str:
    """Run git in the repository and return what it printed."""
    result = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@cache
def migrations() -> tuple[Migration, ...]:
    """Today's migrations, from the first to the head."""
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        raise RuntimeError("the tests of the migrations' history need it: git fetch --unshallow")
    added = _first_added()
    script = ScriptDirectory(str(MIGRATIONS))
    chain = list(script.walk_revisions("base", "heads"))
    chain.reverse()
    found = []
    for revision in chain:
        path = Path(revision.path)
        found.append(
            Migration(
                revision=revision.revision,
                down_revision=revision.down_revision,  # type: ignore[arg-type]
                phase=getattr(revision.module, "phase", ""),
                path=path,
                added_in=added.get(path.name),
            )
        )
    return tuple(found)


def _first_added() -> dict[str, str]:
    """The commit that first added each migration file, by file name (wherever it was then)."""
    log = git("log", "--diff-filter=A", "--format=commit %H", "--name-only", "--", *VERSIONS)
    added: dict[str, str] = {}
    commit = ""
    for line in log.splitlines():
        if line.startswith("commit "):
            commit = line.removeprefix("commit ")
        elif line.endswith(".py"):
            added[Path(line).name] = commit  # the log runs newest first: the oldest stays
    return added


def release_before(migration: Migration) -> str:
    """The commit of the code as it was just before ``migration`` first appeared.

    For a migration not committed yet, the checkout's HEAD (which lacks it).
    """
    if migration.added_in is None:
        return git("rev-parse", "HEAD").strip()
    return git("rev-parse", f"{migration.added_in}^").strip()


def first_version(migration: Migration) -> str:
    """The migration's source as the commit that added it had it."""
    if migration.added_in is None:
        return migration.path.read_text(encoding="utf-8")
    for folder in VERSIONS:
        try:
            return git("show", f"{migration.added_in}:{folder}/{migration.path.name}")
        except RuntimeError:
            continue
    raise RuntimeError(f"{migration.path.name} is not in {migration.added_in}")


def first_versions_script(folder: Path) -> Path:
    """An Alembic script directory in ``folder`` holding every migration as first written."""
    versions = folder / "versions"
    versions.mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(MIGRATIONS / name, folder / name)
    for migration in migrations():
        (versions / migration.path.name).write_text(first_version(migration), encoding="utf-8")
    return folder
