"""``python -m service``: its help is plain text, as a terminal shows it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["backup", "--help"]])
def test_help_is_plain_text(argv: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "service", *argv], capture_output=True, text=True, check=True
    ).stdout

    assert shown.startswith("usage: python -m service")
    assert "`" not in shown
