"""Debian's PgBouncer in transaction mode, started on a free port for the tests and benchmarks.

PgBouncer refuses to run as root: as root it is started with ``-u postgres`` (its files in a
directory that user can read). It forwards every database name to one PostgreSQL server, as
``* = host=... port=...`` does, with the settings users run it with (``pool_mode =
transaction``); ``ignore_startup_parameters`` lets the service's direct mode connect too, as in
the setup the issue reproduced, so that its prepared statements fail there as they did.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import psycopg
import sqlalchemy as sa

from service.settings import Pooler

POOLED_URLS: set[str] = set()
"""Database URLs that reach PostgreSQL through a test PgBouncer: apps on them run in the pooler
mode (``DB_POOLER=transaction``), as an operator would set it for that URL."""
BINARY = "pgbouncer"
RUN_AS = "postgres"
"""The user PgBouncer runs as when started by root."""


def pooler_for(database_url: str) -> Pooler:
    """``DB_POOLER`` for an app on ``database_url``: ``transaction`` through PgBouncer."""
    return "transaction" if database_url in POOLED_URLS else "none"


def missing() -> str | None:
    """Why PgBouncer cannot be started here, or None."""
    if shutil.which(BINARY) is None:
        return "pgbouncer is not installed (apt-get install pgbouncer)"
    return None


class PgBouncer:
    """A PgBouncer process in front of the PostgreSQL server at ``target`` (host, port)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        pool_size: int = 4,
        max_client_conn: int = 1000,
        query_wait_timeout: float = 120,
        **settings: str | int | float,
    ) -> None:
        """Configure it (nothing runs until :meth:`start`); ``settings`` go to ``[pgbouncer]``."""
        self.target = target
        with socket.socket() as sock:  # a free port (tests.live, which imports this, has one too)
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.settings: dict[str, str | int | float] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "admin_users": RUN_AS,
            "pool_mode": "transaction",
            "default_pool_size": pool_size,
            "max_client_conn": max_client_conn,
            "query_wait_timeout": query_wait_timeout,
            "ignore_startup_parameters": "extra_float_digits,statement_timeout,options",
            **settings,
        }
        self.directory = Path(tempfile.mkdtemp(prefix="hero-pgbouncer-"))
        self.log = self.directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` (a database on the target server) through this PgBouncer."""
        url = sa.make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def start(self) -> Self:
        """Start PgBouncer and wait until it answers."""
        host, port = self.target
        auth = self.directory / "users.txt"
        auth.write_text(f'"{RUN_AS}" ""\n"{os.environ.get("USER", RUN_AS)}" ""\n')
        config = self.directory / "pgbouncer.ini"
        lines = ["[databases]", f"* = host={host} port={port}", "[pgbouncer]"]
        lines += [f"auth_file = {auth}"]
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        config.write_text("\n".join(lines) + "\n")
        self.directory.chmod(0o755)
        command = [BINARY, *(["-u", RUN_AS] if os.geteuid() == 0 else []), str(config)]
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

    def server_connections(self, database: str) -> int:
        """How many connections to PostgreSQL it holds for ``database`` (``SHOW POOLS``)."""
        with psycopg.connect(
            f"postgresql://{RUN_AS}@127.0.0.1:{self.port}/pgbouncer", autocommit=True
        ) as admin:
            rows = admin.execute("SHOW POOLS").fetchall()
            names = [column.name for column in admin.execute("SHOW POOLS").description or []]
        pools = [dict(zip(names, row, strict=True)) for row in rows]
        return sum(
            int(pool["sv_active"]) + int(pool["sv_idle"]) + int(pool["sv_used"])
            for pool in pools
            if pool["database"] == database
        )

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
