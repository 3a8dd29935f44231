"""python -m service: serve the API with uvicorn, as it is meant to run; or back it up.

python -m service [serve] [--workers N] ... serves (one worker by default; N processes share the
port). The server does not announce itself (no Server header) and leaves the access log to the
service's JSON log. On SIGTERM it stops accepting connections, answers the requests already sent
(up to --timeout-graceful-shutdown seconds) and exits.

python -m service backup PATH copies the SQLite database at DATABASE_URL to PATH while the
service keeps serving.

Settings come from the environment (DATABASE_URL, API_KEY, ...): see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from service import serving
from service.database.backup import BackupError, backup
from service.ops.metrics import prepare_multiprocess_dir, remove_multiprocess_dir
from service.settings import Settings, SettingsError

COMMANDS = ("serve", "backup")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until stopped, or back up and exit."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["serve", *argv]
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"python -m service: {exc}")
    if args.command == "backup":
        try:
            print(backup(settings, args.path))
        except BackupError as exc:
            sys.exit(f"python -m service backup: {exc}")
        return
    serve(args, settings)


def parser() -> argparse.ArgumentParser:
    """The command line: ``serve`` (the default) and ``backup``."""
    root = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="serve the API (the default command)")
    serve_command.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve_command.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    serve_command.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    serve_command.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=30,
        help="on SIGTERM, seconds to let requests in flight finish (30)",
    )
    backup_command = commands.add_parser(
        "backup", help="copy the SQLite database to PATH, online (never overwrites)"
    )
    backup_command.add_argument("path", type=Path, help="where to write the copy; must not exist")
    return root


def serve(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    metrics_dir = prepare_multiprocess_dir() if settings.metrics else None
    config = uvicorn.Config(
        "service.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        server_header=False,
        access_log=False,
        proxy_headers=False,
        # Longer than the idle timeout of common load balancers (60 s), so that the balancer,
        # not the server, closes idle connections and never reuses one the server just closed.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    try:
        serving.run(config, leave_seconds=settings.shutdown_drain_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        remove_multiprocess_dir(metrics_dir)


if __name__ == "__main__":
    main()
