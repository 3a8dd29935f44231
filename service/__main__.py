"""``python -m service``: serve the API with uvicorn, as it is meant to run.

One worker by default; ``--workers N`` runs N processes on the same port. The server does not
announce itself (no ``server`` header) and leaves the access log to the service's JSON log.
"""

from __future__ import annotations

import argparse

import uvicorn


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    uvicorn.run(
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
    )


if __name__ == "__main__":
    main()
