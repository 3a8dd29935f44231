"""python -m service: serve the API with uvicorn, as it is meant to run; migrate or back up.

python -m service [serve] [--workers N] ... serves (one worker by default; N processes share the
port) on --host and --port, by default HOST and PORT from the environment (127.0.0.1 and 8000).
The server does not announce itself (no Server header) and leaves the access log to the
service's JSON log. On SIGTERM it stops accepting connections, answers the requests already sent
(up to --timeout-graceful-shutdown seconds) and exits.

On an address other than loopback it refuses to start without API_KEY, unless
ALLOW_ANONYMOUS_WRITES=true. With TLS_CERT_FILE and TLS_KEY_FILE it serves HTTPS. It bounds each
connection: REQUEST_HEAD_TIMEOUT, REQUEST_BODY_TIMEOUT, MAX_HEADER_SIZE, WORKER_CONNECTIONS.

python -m service migrate brings the database at DATABASE_URL to the latest schema (what
just migrate runs): on PostgreSQL, before the first start and after each upgrade. One migrator
runs at a time: another started meanwhile waits, then finds nothing to do. In a rolling upgrade,
run migrate --expand before the new release serves (it stops before the first contract
migration) and migrate once the old release is gone (see docs/database.md).

python -m service backup PATH copies the SQLite database at DATABASE_URL to PATH while the
service keeps serving.

Settings come from the environment (DATABASE_URL, API_KEY, ...): see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service import serving
from service.database.backup import BackupError, backup
from service.database.engines import database_url
from service.database.schema import MigrationError, migrate
from service.ops.metrics import prepare_multiprocess_dir, remove_multiprocess_dir
from service.settings import Settings, SettingsError

COMMANDS = ("serve", "migrate", "backup")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until stopped, or back up and exit."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["serve", *argv]
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Checked here, in one line, rather than in a traceback from each worker's app.
        database_url(
            settings.database_url, settings.db_pooler, prepared=settings.db_pooler_prepared
        )
    except SettingsError as exc:
        sys.exit(f"python -m service: {exc}")
    if args.command == "backup":
        try:
            print(backup(settings, args.path))
        except BackupError as exc:
            sys.exit(f"python -m service backup: {exc}")
        return
    if args.command == "migrate":
        show_migration_progress()
        try:
            print("\n".join(migrate(settings, to=args.to, expand=args.expand)))
        except MigrationError as exc:
            sys.exit(f"python -m service migrate: {exc}")
        return
    serve(args, settings)


def parser() -> argparse.ArgumentParser:
    """The command line: ``serve`` (the default), ``migrate`` and ``backup``."""
    root = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="serve the API (the default command)")
    serve_command.add_argument("--host", help="address to bind (HOST, or 127.0.0.1)")
    serve_command.add_argument("--port", type=int, help="port to bind (PORT, or 8000)")
    serve_command.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    serve_command.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=30,
        help="on SIGTERM, seconds to let requests in flight finish (30)",
    )
    migrate_command = commands.add_parser(
        "migrate", help="bring the database at DATABASE_URL to the latest schema"
    )
    migrate_command.add_argument(
        "--expand",
        action="store_true",
        help="stop before the first contract migration (before a rolling upgrade)",
    )
    migrate_command.add_argument(
        "--to", default="heads", metavar="REVISION", help="stop at REVISION (the latest)"
    )
    backup_command = commands.add_parser(
        "backup", help="copy the SQLite database to PATH, online (never overwrites)"
    )
    backup_command.add_argument("path", type=Path, help="where to write the copy; must not exist")
    return root


def show_migration_progress() -> None:
    """Print what the migrations do, as they do it: each migration, and their long steps."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # Alembic's "Running upgrade 0001 -> 0002, ..." lines, not its words on its own setup.
    handler.addFilter(
        lambda record: (
            not record.name.startswith("alembic") or (record.getMessage().startswith("Running "))
        )
    )
    for name in ("service.migrations", "alembic.runtime.migration"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


def serve(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    try:
        config = serving.server_config(
            settings,
            host=settings.host if args.host is None else args.host,
            port=settings.port if args.port is None else args.port,
            workers=args.workers,
            timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        )
    except SettingsError as exc:
        sys.exit(f"python -m service: {exc}")
    metrics_dir = prepare_multiprocess_dir() if settings.metrics else None
    try:
        serving.run(config, leave_seconds=settings.shutdown_drain_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        remove_multiprocess_dir(metrics_dir)


if __name__ == "__main__":
    main()
