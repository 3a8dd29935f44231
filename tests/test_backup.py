"""``python -m service backup PATH``: an online copy of the SQLite database, under write load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import running_server, stored_heroes

pytestmark = pytest.mark.live


def backup(
    database_url: str, path: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the backup command as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "service", "backup", str(path)],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_backup_under_write_load_restores_every_hero_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path}/heroes.db"
    acknowledged: list[dict[str, Any]] = []
    stop = threading.Event()
    with running_server(database, workers=2) as server:

        def write() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {"name": f"B {threading.get_ident()} {n}", "secret_name": "s", "age": n}
                    response = http.post("/heroes", json=body)
                    if response.status_code == 201:
                        acknowledged.append(response.json())

        writers = [threading.Thread(target=write) for _ in range(8)]
        for writer in writers:
            writer.start()
        try:
            while len(acknowledged) < 200:
                stop.wait(0.05)
            before_backup = list(acknowledged)
            result = backup(database, tmp_path / "backup.db")
            during_backup = len(acknowledged) - len(before_backup)
            while len(acknowledged) < len(before_backup) + during_backup + 100:
                stop.wait(0.05)  # the service goes on writing after the backup
        finally:
            stop.set()
            for writer in writers:
                writer.join()

    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")
    with running_server(f"sqlite:///{tmp_path}/restored.db") as restored_server:
        restored = stored_heroes(restored_server.url)

    missing = [hero for hero in before_backup if restored.get(hero["id"]) != hero]
    every_written = {hero["id"]: hero for hero in acknowledged}
    print(
        f"backup: {len(before_backup)} heroes acknowledged before it, {during_backup} during it, "
        f"{len(acknowledged)} in all; restored copy has {len(restored)}: {result.stdout.strip()}"
    )
    assert result.returncode == 0, result.stderr
    assert "integrity_check ok" in result.stdout
    assert missing == []
    # Nothing but whole heroes the service wrote: none torn, none invented.
    assert all(every_written.get(i, hero) == hero for i, hero in restored.items())
    assert all(hero["age"] == int(hero["name"].split()[-1]) for hero in restored.values())


def test_backup_into_a_folder_not_made_yet_makes_it(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/heroes.db"
    with running_server(database) as server:
        httpx.post(f"{server.url}/heroes", json={"name": "Kept", "secret_name": "k"})

    # As the docs run it: `just backup backups/heroes-$(date +%F).db`, with no backups/ yet.
    result = backup(database, Path("backups/heroes-2026-12-07.db"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "1 heroes, integrity_check ok" in result.stdout
    assert (tmp_path / "backups" / "heroes-2026-12-07.db").is_file()


def test_backup_refuses_to_overwrite_a_file(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path}/heroes.db"):
        pass
    existing = tmp_path / "precious.db"
    existing.write_bytes(b"not to be lost")

    result = backup(f"sqlite:///{tmp_path}/heroes.db", existing)

    assert result.returncode != 0
    assert "exists already" in result.stderr
    assert existing.read_bytes() == b"not to be lost"


def test_backup_of_postgresql_says_to_use_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    result = backup(postgres_url, tmp_path / "backup.db")

    assert result.returncode != 0
    assert "pg_dump" in result.stderr
    assert not (tmp_path / "backup.db").exists()
