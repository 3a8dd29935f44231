"""``python -m service.openapi_document [PATH]``: write the document the service serves to a file.

``just openapi`` writes it to ``openapi.json`` at the repository root, the file SDK generators
read (see docs/testing.md, "Generate a client"); a test fails when that file and the code disagree.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings

DOCUMENT_URL = "/schema/openapi.json"


def served_document(**settings: Any) -> dict[str, Any]:
    """The document an app with the default settings but ``settings`` serves, as a client GETs it.

    It is fetched over (in-process) HTTP rather than built from the route table because the
    app's startup hooks complete it (the links from ``createHero``, ``security`` with API keys).
    """
    defaults: dict[str, Any] = {"database_url": "sqlite:///:memory:", "access_log": False}
    app = create_app(Settings(**{**defaults, **settings}))
    with TestClient[Litestar](app) as client:
        response = client.get(DOCUMENT_URL)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


def render(document: dict[str, Any]) -> str:
    """The document as committed: indented, keys sorted, a final newline, so diffs stay small."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the served document to the path on the command line (default ``openapi.json``)."""
    parser = argparse.ArgumentParser(prog="python -m service.openapi_document", description=__doc__)
    parser.add_argument(
        "path", nargs="?", type=Path, default=Path("openapi.json"), help="default openapi.json"
    )
    args = parser.parse_args(argv)
    # The app's startup (migrating the in-memory database) and the request log are noise here.
    logging.disable(logging.INFO)
    args.path.write_text(render(served_document()), encoding="utf-8")
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
