"""The Quick start and the test suite on each supported Python, and on the newest dependencies.

    python tools/pythons.py test VERSION [PYTEST ARGS...]   # just test-python VERSION (3.11-3.15)
    python tools/pythons.py newest [PYTEST ARGS...]         # just test-newest
    python tools/pythons.py record LABEL ORIGIN STATUS COUNTS_FILE [SECONDS]
    python tools/pythons.py results MATRIX_RESULTS            # .ci/run's closing report

``test VERSION`` does what a new user with only that Python does: in a fresh clone of this
checkout (with its uncommitted changes and untracked files, not the ignored ones), with
``python3`` being that version (a directory of its own first on ``PATH``), no environment active
and pip refusing to install outside one, it runs the two commands of the README's Quick start as
they are written. The first must serve: once ``GET /heroes`` answers, it is stopped (it listens
on a free port, given as ``PORT``: other services may hold 8000). The second runs the test
suite; on 3.12 and later without the tests marked ``browser`` and ``sdk`` (they check what a
browser and the SDK generators make of the OpenAPI document, which does not change with the
server's Python) nor ``upgrade`` (they serve earlier releases, built from git history at their
own pinned versions, which predate the newer Pythons, while today's ``migrate`` runs: what they
prove is about the schema, not the Python), nor ``deploy`` (nginx and systemd running the files
of ``deploy/``, which the roots do not hold), nor ``pooled`` (the API's tests run again through
each PgBouncer: the same service code as straight to PostgreSQL but for the driver's mode, which
the pooler's own tests, test_pooler.py and the faults through each PgBouncer, run on every
Python; and the rolling restart through the PgBouncer that keeps no prepared statement, run
through the other; left out for CI's time); the 3.11 run, ``just test``, has them all.

Where each Python comes from (see ``PYTHONS``): 3.13 is Debian 13's ``python3``, 3.14 and 3.15
are Debian unstable's, each run inside the cached debootstrap root of ``tools/debian_root.py``
(the whole Quick start runs there, on the machine's network: PostgreSQL and Redis answer). No
package registry this project may use serves a CPython 3.12 for Linux (Debian has none in any
suite; the npm and PyPI installers download from elsewhere): 3.12 is the machine's
``python3.12`` if there is one, else the newest 3.12 that pyenv built; without either the run
says so and exits with status 3. 3.11 is the machine's ``python3``.

``newest`` installs the project with ``--upgrade`` and without constraints.txt into a fresh
environment, prints every package whose version differs from constraints.txt, and runs the
suite of 3.12 and later there, plus the ``browser`` and ``sdk`` tests, which check what the
newest Litestar documents and the newest generators make of it (``NEWEST_LEAVES_OUT``; ``just
lock`` then moves constraints.txt forward), with every warning an error but the exceptions
named and explained in pyproject.toml's ``filterwarnings``: the CI pass where a new deprecation
fails first.

Arguments after the version go to the suite (``-k heroes``), after the second command; CI
gives none. Each run ends with one line: the Python, where it came from, and the suite's
counts and time; with ``MATRIX_RESULTS`` set, it is also appended to that file as JSON
(``.ci/run`` prints them).
The exit status is the suite's, or 1 if the first command did not serve.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_AVAILABLE = 3
"""Exit status when no interpreter of the version asked for is to be had here."""
LEFT_OUT_FROM_3_12 = (
    "not container and not browser and not sdk and not upgrade and not deploy and not pooled"
)
"""The markers the runs on 3.12 and later leave out (see the module's docstring)."""
NEWEST_LEAVES_OUT = "not container and not upgrade and not deploy and not pooled"
"""The markers the newest dependencies' run leaves out: those of 3.12 and later but for
``browser`` and ``sdk``, whose subject (the OpenAPI document) is the dependencies' work."""
SERVE_SECONDS = 1200
"""How long the first command may take to install and serve (3.15 builds some from source)."""
SUITE_SECONDS = 3600


@dataclass(frozen=True)
class Python:
    """An interpreter to run the Quick start with."""

    executable: str
    """Its path: on this machine, or inside ``suite``'s root."""
    origin: str
    """Where it comes from, for the report."""
    suite: str | None = None
    """The Debian root it runs in (``tools/debian_root.py``), or None for this machine."""


PYTHONS = {
    "3.13": Python("/usr/bin/python3.13", "Debian 13 (trixie) python3", "trixie"),
    "3.14": Python("/usr/bin/python3.14", "Debian unstable (sid) python3.14", "sid"),
    "3.15": Python("/usr/bin/python3.15", "Debian unstable (sid) python3.15", "sid"),
}
"""The Pythons that come from Debian's packages, in the roots tools/debian_root.py makes."""


def find_python(version: str) -> Python | None:
    """The interpreter of ``version``: Debian's in a root, else this machine's, else pyenv's."""
    if version in PYTHONS:
        return PYTHONS[version]
    for candidate in (shutil.which(f"python{version}"), f"/usr/bin/python{version}"):
        if candidate and runs_as(candidate, version):
            return Python(candidate, f"this machine's python{version}")
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)  # noqa: S603
        builds = Path(root.stdout.strip() or Path.home() / ".pyenv") / "versions"
        found = sorted(
            builds.glob(f"{version}.*/bin/python{version}"),
            key=lambda path: [int(n) for n in re.findall(r"\d+", path.parts[-3])],
        )
        for candidate_path in reversed(found):
            if runs_as(str(candidate_path), version):
                return Python(str(candidate_path), f"pyenv's {candidate_path.parts[-3]}")
    return None


def runs_as(executable: str, version: str) -> bool:
    """Whether ``executable`` runs and is CPython ``version`` with venv (a pyenv shim may not)."""
    check = "import sys, venv; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(  # noqa: S603
            [executable, "-c", check], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def quick_start_commands() -> tuple[str, str]:
    """The two commands of the README's Quick start, as written there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", readme.split("## Quick start", 1)[1], re.DOTALL)
    if block is None:
        sys.exit("tools/pythons.py: the README's Quick start has no sh code block")
    serve, test = [line for line in block[1].splitlines() if line.strip()]
    return serve, test


def fresh_copy(destination: Path) -> None:
    """A clone of the checkout in ``destination``, with its work tree's changes on top.

    A clone, as a new user has: the migrations' tests read their history from git. The
    checkout's uncommitted changes and untracked files (not the ignored ones) are copied over it,
    and the files deleted in its work tree are deleted, so that what runs is what is here.
    """
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(destination)], check=True)  # noqa: S603, S607

    def listed(*options: str) -> list[str]:
        said = subprocess.run(  # noqa: S603
            ["git", "ls-files", "-z", *options],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return list(filter(None, said.split("\0")))

    for name in listed("--modified", "--others", "--exclude-standard"):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for name in listed("--deleted"):
        (destination / name).unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SCRIPT = """\
# The Quick start, as a new user runs it (written by tools/pythons.py).
cd {copy}
export PATH={bin}:"$PATH" PIP_REQUIRE_VIRTUALENV=true PORT={port}
unset VIRTUAL_ENV
python3 -V
started=$(date +%s)
setsid sh -c {serve} > serve.log 2>&1 &
server=$!
served=""
while kill -0 "$server" 2>/dev/null && [ $(( $(date +%s) - started )) -lt {serve_seconds} ]; do
    if python3 -c "import urllib.request as u; u.urlopen('{url}', timeout=2)" 2>/dev/null; then
        served=yes; break
    fi
    sleep 1
done
kill -TERM -- "-$server" 2>/dev/null; wait "$server" 2>/dev/null
if [ -z "$served" ]; then
    echo "the Quick start's first command did not serve GET /heroes on 127.0.0.1:{port}:"
    tail -n 40 serve.log
    exit 90
fi
echo "the Quick start's first command served GET /heroes after $(( $(date +%s) - started )) s"
{test}
"""
SERVE_FAILED = 90


def run_quick_start(version: str, python: Python, pytest_args: list[str]) -> int:
    """Run the Quick start with ``python`` in a fresh clone; the status of its second command."""
    serve, test = quick_start_commands()
    work = Path(tempfile.mkdtemp(prefix=f"hero-python-{version}-", dir="/tmp"))
    copy, bin_dir = work / "hero-service", work / "bin"
    try:
        fresh_copy(copy)
        bin_dir.mkdir()
        (bin_dir / "python3").symlink_to(python.executable)
        script, port = work / "quick-start.sh", free_port()
        script.write_text(
            SCRIPT.format(
                copy=shlex.quote(str(copy)),
                bin=shlex.quote(str(bin_dir)),
                port=port,
                url=f"http://127.0.0.1:{port}/heroes",
                serve=shlex.quote(serve),
                serve_seconds=SERVE_SECONDS,
                test=shlex.join([*shlex.split(test), *pytest_args]) if pytest_args else test,
            )
        )
        passed = {
            "CI": os.environ.get("CI", ""),
            "TEST_SUMMARY_FILE": str(work / "summary.jsonl"),
            **(
                {"TEST_WORKERS": os.environ["TEST_WORKERS"]} if "TEST_WORKERS" in os.environ else {}
            ),
            **(
                {"PYTEST_ADDOPTS": f"-m {shlex.quote(LEFT_OUT_FROM_3_12)}"}
                if version != "3.11"
                else {}
            ),
        }
        if python.suite is None:
            command = ["bash", str(script)]
            environment = {**without_active_venv(os.environ), **passed}
        else:
            root_tool = [sys.executable, str(ROOT / "tools" / "debian_root.py"), "run"]
            options = [f"--env={name}={value}" for name, value in passed.items()]
            command = [
                *root_tool,
                python.suite,
                f"--bind={work}",
                *options,
                "--",
                "bash",
                str(script),
            ]
            environment = dict(os.environ)
        try:
            done = subprocess.run(command, env=environment, timeout=SUITE_SECONDS, check=False)  # noqa: S603
            status = done.returncode
        except subprocess.TimeoutExpired:
            print(f"tools/pythons.py: Python {version}'s run took over {SUITE_SECONDS} s")
            status = 1
        suite = read_summary(work / "summary.jsonl")
        report(version, python.origin, status, suite)
        return status
    finally:
        if not os.environ.get("KEEP_COPY"):
            shutil.rmtree(work, ignore_errors=True)


def without_active_venv(environment: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """``environment`` as if no virtual environment were active: a new user has none."""
    cleaned = dict(environment)
    active = cleaned.pop("VIRTUAL_ENV", None)
    if active:
        directories = cleaned.get("PATH", "").split(os.pathsep)
        kept = [d for d in directories if Path(d) != Path(active) / "bin"]
        cleaned["PATH"] = os.pathsep.join(kept)
    return cleaned


def read_summary(path: Path) -> dict[str, object]:
    """The suite's counts as tools/run_tests.py recorded them (nothing if it did not run)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    summary: dict[str, object] = json.loads(lines[-1]) if lines else {}
    return summary


def report(version: str, origin: str, status: int, suite: dict[str, object]) -> None:
    """Print the run's line, and append it to ``MATRIX_RESULTS`` if set."""
    line = {"version": version, "origin": origin, "status": status, **suite}
    if status == SERVE_FAILED:
        line["status"], line["note"] = 1, "the Quick start did not serve"
    print(f"Python {version} ({origin}): " + describe(line), flush=True)
    if results := os.environ.get("MATRIX_RESULTS"):
        with Path(results).open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")


def describe(line: dict[str, object]) -> str:
    """The counts and the time of a run's line, in words."""
    if "note" in line:
        return str(line["note"])
    if "passed" not in line:
        return f"the suite did not run (status {line['status']})"
    failed = int(str(line.get("failed", 0))) + int(str(line.get("error", 0)))
    return (
        f"{line['passed']} passed, {failed} failed, {line.get('skipped', 0)} skipped "
        f"in {line.get('seconds', '?')} s ({line.get('python', '?')})"
    )


def newest(pytest_args: list[str]) -> int:
    """Install the newest dependencies, print how they differ from constraints.txt, test."""
    work = Path(tempfile.mkdtemp(prefix="hero-newest-"))
    try:
        venv = work / "venv"
        python = venv / "bin" / "python"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        pip = [str(python), "-m", "pip", "install", "--quiet", "--upgrade"]
        subprocess.run([*pip, "pip"], check=True)  # noqa: S603
        subprocess.run([*pip, "-e", ".[dev]"], cwd=ROOT, check=True)  # noqa: S603
        frozen = subprocess.run(  # noqa: S603
            [str(python), "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print_differences(pins(frozen), pins((ROOT / "constraints.txt").read_text()))
        environment = without_active_venv(os.environ)
        environment["PATH"] = f"{venv / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
        environment["TEST_SUMMARY_FILE"] = str(work / "summary.jsonl")
        environment["TEST_WARNINGS_AS_ERRORS"] = "true"  # see tests/conftest.py
        environment["PYTEST_ADDOPTS"] = f"-m {shlex.quote(NEWEST_LEAVES_OUT)}"
        status = subprocess.run(  # noqa: S603
            [
                str(python),
                str(ROOT / "tools" / "run_tests.py"),
                *pytest_args,
            ],
            cwd=ROOT,
            env=environment,
            check=False,
        ).returncode
        suite = read_summary(work / "summary.jsonl")
        report(
            "newest", f"the newest dependencies on Python {suite.get('python', '?')}", status, suite
        )
        return status
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines by normalised name (PEP 503)."""
    found = {}
    for line in text.splitlines():
        name, separator, pinned = line.strip().partition("==")
        if separator and not name.startswith("#"):
            found[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return found


def print_differences(installed: dict[str, str], pinned: dict[str, str]) -> None:
    """Every package whose newest version is not the one constraints.txt pins."""
    changed = [
        f"  {name}: {pinned.get(name, 'not pinned')} -> {installed.get(name, 'not installed')}"
        for name in sorted(installed.keys() | pinned.keys())
        if installed.get(name) != pinned.get(name)
    ]
    print("The newest dependencies against constraints.txt:", flush=True)
    print("\n".join(changed) if changed else "  none differs", flush=True)


def record(label: str, origin: str, status: int, counts_file: Path, seconds: int | None) -> None:
    """Add a run made elsewhere (CI's 3.11 suite, the image's tests) to ``MATRIX_RESULTS``."""
    counts = read_summary(counts_file)
    if seconds is not None:
        counts.setdefault("seconds", seconds)
    report(label, origin, status, counts)


def print_results(results: Path) -> int:
    """Print one line per run recorded in ``results``, then the totals; 1 if any failed."""
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    print("\nResults, one line per run:")
    for line in lines:
        verdict = {0: "ok  ", NOT_AVAILABLE: "none"}.get(line["status"], "FAIL")
        print(f"  {verdict} {line['version']:<8} {describe(line)}   [{line['origin']}]")
    total = {name: sum(int(line.get(name, 0)) for line in lines) for name in ("passed", "skipped")}
    failed = sum(int(line.get("failed", 0)) + int(line.get("error", 0)) for line in lines)
    print(f"total: {total['passed']} passed, {failed} failed, {total['skipped']} skipped")
    return int(any(line["status"] not in (0, NOT_AVAILABLE) for line in lines))


def main() -> None:
    """``test VERSION [PYTEST ARGS...]``, ``newest [PYTEST ARGS...]``, ``record``, ``results``."""
    if sys.argv[1:2] == ["newest"]:
        sys.exit(newest(sys.argv[2:]))
    if sys.argv[1:2] == ["record"] and len(sys.argv) in (6, 7):
        label, origin, code, counts = sys.argv[2:6]
        seconds = int(sys.argv[6]) if len(sys.argv) == 7 else None  # noqa: PLR2004
        record(label, origin, int(code), Path(counts), seconds)
        return
    if sys.argv[1:2] == ["results"] and len(sys.argv) == 3:  # noqa: PLR2004
        sys.exit(print_results(Path(sys.argv[2])))
    if sys.argv[1:2] != ["test"] or len(sys.argv) < 3:  # noqa: PLR2004
        sys.exit(__doc__)
    version, pytest_args = sys.argv[2], sys.argv[3:]
    if not re.fullmatch(r"3\.1[1-5]", version):
        sys.exit(f"tools/pythons.py: Python {version} is not supported (3.11 to 3.15)")
    python = find_python(version)
    if python is None:
        note = f"not tested: no CPython {version} on this machine, nor from pyenv"
        report(version, "none found", NOT_AVAILABLE, {"note": note})
        sys.exit(NOT_AVAILABLE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the copy when stopped
    started = time.monotonic()
    status = run_quick_start(version, python, pytest_args)
    print(f"tools/pythons.py: Python {version} in {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
