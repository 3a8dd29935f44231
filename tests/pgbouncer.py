"""PgBouncer, started on a free port for the tests and benchmarks, as deploy/ has it.

It runs the repository's example, ``deploy/pgbouncer.ini`` (transaction mode and the rest),
but for where it listens, how it authenticates (trust), the pool size and the queue's timeout
when a test sets them, and its database line: every database name goes to the PostgreSQL server
under test, with the example's options (``timezone=UTC``). PgBouncer refuses to run as root: as
root it is started with ``-u postgres``, its files in a directory that user can read.

Two kinds, by what they do with prepared statements: one that keeps none
(``DB_POOLER=transaction``), and one that keeps them (``max_prepared_statements``, PgBouncer 1.21
and later: ``DB_POOLER_PREPARED=true`` too). :func:`suite_for` picks the build for each: the
machine's own ``pgbouncer`` where it can (a 1.21+ build keeps none with
``max_prepared_statements = 0``), else Debian 13's (1.24, ``suite="trixie"``), run inside the
Debian 13 root that ``tools/debian_root.py`` makes and caches (``.ci/run`` makes it first). On
Debian 12 (1.18) that is the machine's for the first kind and the root's for the second; inside a
Debian 13 or unstable root (the suite's runs on Python 3.13 to 3.15) the root's own for both. A
setting of the example that a build does not know (``max_prepared_statements`` before 1.21) is
left out for it.
"""

from __future__ import annotations

import configparser
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import psycopg
import sqlalchemy as sa

from service.settings import Pooler
from tools import debian_root

POOLED_URLS: dict[str, bool] = {}
"""Database URLs that reach PostgreSQL through a test PgBouncer, and whether that one keeps
prepared statements: apps on them run in the pooler mode (``DB_POOLER=transaction``, and
``DB_POOLER_PREPARED=true`` where it keeps them), as an operator would set it for that URL."""
BINARY = "pgbouncer"
REPOSITORY = Path(__file__).parents[1]
EXAMPLE = REPOSITORY / "deploy" / "pgbouncer.ini"
"""The configuration the repository recommends; the tests run it."""
DEBIAN_ROOT = REPOSITORY / "tools" / "debian_root.py"
"""Makes the Debian roots and runs commands inside them."""
RUN_AS = "postgres"
"""The user PgBouncer runs as when started by root."""
SINCE = {"max_prepared_statements": (1, 21)}
"""Settings of the example that older PgBouncers refuse (they stop at an unknown setting), and
the version that knows each."""


def pooler_for(database_url: str) -> Pooler:
    """``DB_POOLER`` for an app on ``database_url``: ``transaction`` through PgBouncer."""
    return "transaction" if database_url in POOLED_URLS else "none"


def prepared_for(database_url: str) -> bool:
    """``DB_POOLER_PREPARED`` for an app on ``database_url``: through a PgBouncer that keeps
    prepared statements."""
    return POOLED_URLS.get(database_url, False)


def pooler_environment(database_url: str) -> dict[str, str]:
    """``DB_POOLER`` and ``DB_POOLER_PREPARED`` for a server on ``database_url``, when through a
    test PgBouncer; nothing otherwise (the environment's then, as for ``just load``)."""
    if database_url not in POOLED_URLS:
        return {}
    prepared = "true" if prepared_for(database_url) else "false"
    return {"DB_POOLER": "transaction", "DB_POOLER_PREPARED": prepared}


def missing(suite: str | None = None) -> str | None:
    """Why PgBouncer (the machine's, or that of the Debian root ``suite``) cannot start here."""
    if suite is None:
        if shutil.which(BINARY) is None:
            return "pgbouncer is not installed (apt-get install pgbouncer)"
        return None
    if os.geteuid() != 0:
        return f"the Debian {suite} root's PgBouncer runs with chroot, which needs root"
    if not (debian_root.root_directory(suite) / ".complete").exists():
        return f"the Debian {suite} root is not made: python3 tools/debian_root.py path {suite}"
    return None


KEEPING_SINCE = (1, 21)
"""The first PgBouncer that keeps prepared statements (``max_prepared_statements``)."""
KEEPING_SUITE = "trixie"
"""The Debian root whose PgBouncer keeps them, where the machine's cannot."""


def suite_for(keeps_prepared: bool) -> str | None:
    """The build to run for a PgBouncer that keeps prepared statements, or keeps none: the
    machine's (None) where it can, else the Debian root's."""
    if not keeps_prepared or missing() is not None:
        return None
    return None if version() >= KEEPING_SINCE else KEEPING_SUITE


@functools.cache
def version(suite: str | None = None) -> tuple[int, ...]:
    """The version of PgBouncer (the machine's, or that of the Debian root ``suite``)."""
    command = [BINARY, "--version"]
    if suite is not None:
        command = [sys.executable, str(DEBIAN_ROOT), "run", suite, "--", *command]
    said = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)", said)
    if found is None:
        raise RuntimeError(f"{' '.join(command)} said: {said}")
    return int(found[1]), int(found[2])


class PgBouncer:
    """A PgBouncer process in front of the PostgreSQL server at ``target`` (host, port)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        suite: str | None = None,
        user: str | None = None,
        pool_size: int | None = None,
        port: int | None = None,
        **settings: str | int | float | Path,
    ) -> None:
        """Configure it (nothing runs until :meth:`start`); ``settings`` go to ``[pgbouncer]``.

        ``suite``: the Debian root whose PgBouncer to run (``trixie``), or None for the
        machine's own; ``user``: the PostgreSQL user the clients connect as (``postgres`` by
        default); ``pool_size``: ``default_pool_size``, the example's unless given; ``port``:
        where it listens (default: a free port), to stand in for another one stopped there.
        """
        self.target = target
        self.suite = suite
        self.users = sorted({RUN_AS, user or RUN_AS})
        example = configparser.ConfigParser(
            comment_prefixes=(";", "#"), inline_comment_prefixes=None, interpolation=None
        )
        example.read(EXAMPLE)
        (database,) = example["databases"].values()
        self.database_options = " ".join(
            option
            for option in database.split()
            if option.partition("=")[0] not in ("host", "port", "dbname")
        )
        self.port: int = port or 0
        if not port:
            with socket.socket() as sock:  # a free port (as tests.live, which imports this, finds)
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
        self.directory = Path(tempfile.mkdtemp(prefix="hero-pgbouncer-"))
        self.settings: dict[str, str | int | float | Path] = {
            **example["pgbouncer"],
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": self.directory / "users.txt",
            "admin_users": RUN_AS,
            **({"default_pool_size": pool_size} if pool_size else {}),
            **settings,
        }
        for name, since in SINCE.items():
            if version(suite) < since:
                self.settings.pop(name, None)
        kept = int(str(self.settings.get("max_prepared_statements", 0)))
        self.keeps_prepared = version(suite) >= KEEPING_SINCE and kept > 0
        """Whether it keeps prepared statements (apps through it run ``DB_POOLER_PREPARED``)."""
        self.log = self.directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` (a database on the target server) through this PgBouncer."""
        url = sa.make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def start(self) -> Self:
        """Start PgBouncer and wait until it answers."""
        host, port = self.target
        # auth_type trust: no password, but the user must be listed.
        (self.directory / "users.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        config = self.directory / "pgbouncer.ini"
        lines = ["[databases]", f"* = host={host} port={port} {self.database_options}"]
        lines += ["[pgbouncer]", *(f"{key} = {value}" for key, value in self.settings.items())]
        config.write_text("\n".join(lines) + "\n")
        self.directory.chmod(0o755)
        command = [BINARY, *(["-u", RUN_AS] if os.geteuid() == 0 else []), str(config)]
        if self.suite is not None:
            # The root's PgBouncer becomes this process (see tools/debian_root.py), its files
            # at the same paths inside.
            inside = ["run", self.suite, "--bind", str(self.directory), "--"]
            command = [sys.executable, str(DEBIAN_ROOT), *inside, *command]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
            else:
                return self
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen: {self.log.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        """The PgBouncer process."""
        if self.process is None:
            raise RuntimeError("pgbouncer is not running")
        return self.process.pid

    def show(self, what: str) -> list[dict[str, Any]]:
        """A ``SHOW`` command of PgBouncer's admin console (``SERVERS``, ``POOLS``...)."""
        with psycopg.connect(
            f"postgresql://{RUN_AS}@127.0.0.1:{self.port}/pgbouncer", autocommit=True
        ) as admin:
            cursor = admin.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def server_pids(self) -> list[int]:
        """The PostgreSQL backends of its server connections."""
        return [int(server["remote_pid"]) for server in self.show("SERVERS")]

    def stop(self) -> None:
        """Stop PgBouncer and remove its files."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # SIGINT: PgBouncer's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
