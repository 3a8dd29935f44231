"""The test suite in two phases: the tests in parallel, then those marked ``alone``, one at a time.

    python tools/run_tests.py [PYTEST ARGS...]     # just test [PYTEST ARGS...]

The first phase runs every test but those marked ``alone`` on pytest-xdist's workers, one per
core (``TEST_WORKERS`` overrides it), with ``--dist loadgroup`` (tests that share a module's
fixture stay on one worker; see tests/conftest.py). The second runs the ``alone`` tests in one
process, with the machine to itself. Both get the same arguments (``-k``, ``-m``, files...), and
both run even if the first fails. At the end one line sums them up: the Python, the counts and
the time; with ``TEST_SUMMARY_FILE`` set it is also appended to that file as JSON (the CI
script's report per Python reads it).

The exit status is pytest's: 0 when both phases passed (or one had nothing to run), 5 when
neither had a test to run, else the first failing phase's.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_TESTS = 5
"""pytest's exit status when it collected no test (here: a phase with nothing to run)."""
COUNTED = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def workers() -> str:
    """How many xdist workers the parallel phase runs: ``TEST_WORKERS``, or one per core."""
    return os.environ.get("TEST_WORKERS") or str(max(1, len(os.sched_getaffinity(0))))


def phase(args: list[str], counts_file: Path) -> int:
    """Run pytest with ``args``; its counts are written to ``counts_file`` (tests/conftest.py).

    Bytecode is cached even where ``PYTHONDONTWRITEBYTECODE`` says not to: without it each
    phase's collection rewrites every test module again, and each of the servers the live tests
    start compiles the service again.
    """
    environment = {**os.environ, "TEST_COUNTS_FILE": str(counts_file)}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "-m", "pytest", *args]
    return subprocess.run(command, env=environment, check=False).returncode  # noqa: S603


def read_counts(counts_file: Path) -> dict[str, int]:
    """What a phase counted; nothing if it did not get as far as writing it."""
    try:
        counts: dict[str, int] = json.loads(counts_file.read_text())
    except (OSError, ValueError):
        return {}
    return counts


def read_number(path: Path) -> int | None:
    """The number in ``path``, or None if there is none (the phase did not get that far)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    """Run both phases with the arguments given; print and record the summary line."""
    args = sys.argv[1:]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hero-test-counts-") as work:
        parallel_file, alone_file = Path(work, "parallel.json"), Path(work, "alone.json")
        parallel = phase(
            ["-n", workers(), "--dist", "loadgroup", "--alone=exclude", *args], parallel_file
        )
        parallel_seconds = time.monotonic() - started
        # ``-n 0`` last: these run in this one process, whatever ``-n`` the arguments gave.
        alone = NO_TESTS
        if read_number(Path(f"{parallel_file}.alone")) != 0:  # none left out: nothing to run
            alone = phase(["--alone=only", *args, "-n", "0"], alone_file)
        counts = read_counts(parallel_file)
        for name, number in read_counts(alone_file).items():
            counts[name] = counts.get(name, 0) + number
    seconds = time.monotonic() - started
    statuses = [status for status in (parallel, alone) if status != NO_TESTS]
    status = next((s for s in statuses if s != 0), 0) if statuses else NO_TESTS
    numbers = {name: counts.get(name, 0) for name in COUNTED}
    summary: dict[str, object] = {
        "python": platform.python_version(),
        **numbers,
        "seconds": round(seconds),
        "parallel_seconds": round(parallel_seconds),
        "exit_status": status,
    }
    failed = numbers["failed"] + numbers["error"]
    print(
        f"Python {summary['python']}: {numbers['passed']} passed, {failed} failed, "
        f"{numbers['skipped']} skipped in {seconds:.0f} s "
        f"({parallel_seconds:.0f} s on {workers()} workers, then {seconds - parallel_seconds:.0f} s"
        " for the tests marked alone)",
        flush=True,
    )
    if summary_file := os.environ.get("TEST_SUMMARY_FILE"):
        with Path(summary_file).open("a", encoding="utf-8") as file:
            file.write(json.dumps(summary) + "\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
