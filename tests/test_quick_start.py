"""The README's Quick start: two commands, from a fresh clone, with no environment active.

Both were run as written in a fresh clone with PIP_REQUIRE_VIRTUALENV=true; this test keeps them
from drifting: the first makes the venv and serves, the second tests in that venv.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the Quick start has no sh code block"
    return [line for line in block[1].splitlines() if line.strip()]


def test_quick_start_is_two_commands_that_need_no_active_environment() -> None:
    make_and_serve, run_tests = quick_start_commands()

    assert make_and_serve.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert make_and_serve.endswith("&& .venv/bin/just serve")
    assert run_tests == ".venv/bin/just test"


def test_recipes_run_in_the_project_venv_without_activation() -> None:
    justfile = (ROOT / "justfile").read_text(encoding="utf-8")

    assert 'export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")' in justfile
