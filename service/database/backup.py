"""``python -m service backup PATH``: a consistent copy of the SQLite database, taken online.

A plain ``cp`` of a database in WAL mode misses the committed rows still in the ``-wal`` file.
SQLite's online backup API copies the database as one read transaction sees it, so the copy
holds every write committed before the backup began, whatever the workers are writing, and
never blocks them. The copy is checked with ``PRAGMA integrity_check`` before it is reported.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from service.database.engines import SQLITE_TRANSACTION_CONTROL, database_url, is_sqlite
from service.settings import Settings


class BackupError(Exception):
    """The backup could not be made; the message says why and what to do."""


def backup(settings: Settings, destination: Path) -> str:
    """Copy the database of ``settings`` to ``destination``; return a one-line report."""
    url = database_url(settings.database_url)
    if not is_sqlite(url):
        raise BackupError(
            f"DATABASE_URL is a {url.get_backend_name()} database: back it up with its own tool, "
            "e.g. pg_dump --format=custom --file heroes.dump "
            f"{url.set(drivername='postgresql').render_as_string(hide_password=True)}"
        )
    source_path = url.database
    if source_path in (None, "", ":memory:"):
        raise BackupError("DATABASE_URL is an in-memory database: there is no file to back up.")
    if not Path(source_path).is_file():
        raise BackupError(f"There is no database at {source_path}.")
    try:
        # As `just backup backups/heroes-$(date +%F).db` is meant: the folder is made when missing.
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"Cannot make the folder {destination.parent}: {exc.strerror}.") from None
    try:
        # "x": refuse to overwrite, atomically; an empty file is a valid empty database.
        with destination.open("x"):
            pass
    except FileExistsError:
        raise BackupError(f"{destination} exists already: choose a new path.") from None
    try:
        heroes = _copy(Path(source_path), destination, settings.sqlite_busy_timeout_ms)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return f"backed up {source_path} to {destination}: {heroes} heroes, integrity_check ok"


def _copy(source_path: Path, destination: Path, busy_timeout_ms: int) -> int:
    source = sqlite3.connect(
        source_path, timeout=busy_timeout_ms / 1000, **SQLITE_TRANSACTION_CONTROL
    )
    target = sqlite3.connect(destination, **SQLITE_TRANSACTION_CONTROL)
    try:
        # pages=-1: in one step, so the copy is the snapshot of one read transaction.
        source.backup(target, pages=-1)
        target.commit()
        (result,) = target.execute("PRAGMA integrity_check").fetchone()
        if result != "ok":
            raise BackupError(f"The copy failed PRAGMA integrity_check: {result}")
        (heroes,) = target.execute("SELECT count(*) FROM heroes").fetchone()
    finally:
        target.close()
        source.close()
    _fsync(destination)
    return int(heroes)


def _fsync(path: Path) -> None:
    """Make the copy durable before saying it is done."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
