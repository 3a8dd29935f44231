"""Debian roots made by debootstrap: newer Pythons and PgBouncer than this machine's Debian 12.

    python tools/debian_root.py path SUITE                 # make it (cached), print its directory
    python tools/debian_root.py run SUITE [--bind DIR] -- COMMAND [ARGS...]

A root is a Debian file system made once with ``debootstrap --variant=minbase`` and the
packages of ``PACKAGES[SUITE]``, cached in ``~/.cache/hero-service/roots/`` under a name that
changes with its package list. ``trixie`` (Debian 13) has Python 3.13 and PgBouncer 1.24,
``sid`` (unstable) has Python 3.14 and 3.15.

``run`` runs COMMAND inside the root with ``chroot``, in a mount namespace of its own
(``unshare``), so that the mounts it needs go away with it: ``/proc``, ``/dev``, ``/tmp`` and
each ``--bind`` directory (the checkout, by default the current directory), at the same paths as
outside. The network is the host's, so PostgreSQL on 127.0.0.1:5432 answers inside, and a server
started inside listens on the host's 127.0.0.1. The environment is emptied (``env -i``) but for
``PATH``, ``HOME``, ``LANG`` and the host's CA bundle, copied in, as ``PIP_CERT`` and
``SSL_CERT_FILE``, so that pip reaches the package index and none of the host's pip settings,
which name host paths, leak in. Variables given as ``--env NAME=VALUE`` are passed too.
Needs root (debootstrap, chroot and mounts do). ``DEBIAN_MIRROR`` overrides debootstrap's mirror.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

PACKAGES = {
    "trixie": (
        "python3",
        "python3-venv",
        "python3-dev",
        "gcc",
        "libpq-dev",
        "pgbouncer",
        "ca-certificates",
        *("redis-server", "haproxy"),
        *("git", "postgresql-client", "curl"),
    ),
    "sid": (
        "python3.14",
        "python3.14-venv",
        "python3.14-dev",
        "python3.15",
        "python3.15-venv",
        "python3.15-dev",
        "gcc",
        "libpq-dev",
        "ca-certificates",
        *("pgbouncer", "redis-server", "haproxy"),
        *("git", "postgresql-client", "curl"),
    ),
}
"""What each suite's root holds: the Pythons with venv and headers (some dependencies build from
source there), a compiler and libpq for them, PgBouncer (1.24 in trixie), and the servers the
test suite starts itself (Redis, HAProxy) and the tools it runs (git for the migrations' history,
pg_dump for their schemas, curl for the docs' examples), so that the suite runs whole inside
either root."""
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "/etc/ssl/certs/host-ca-bundle.crt"
"""Where the host's CA bundle is copied inside the root."""


def cache() -> Path:
    """Where the roots are kept between runs."""
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return home / "hero-service" / "roots"


def root_directory(suite: str) -> Path:
    """The cached root of ``suite``: its name changes with the package list."""
    digest = hashlib.sha256(" ".join(PACKAGES[suite]).encode()).hexdigest()[:10]
    return cache() / f"{suite}-{digest}"


def make(suite: str) -> Path:
    """The root of ``suite``, made first if it is not cached; several callers wait for one."""
    root = root_directory(suite)
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    lock = root.parent / f"{root.name}.lock"
    with lock.open("w") as held:
        import fcntl  # noqa: PLC0415 (POSIX only, like the rest of this tool)

        fcntl.flock(held, fcntl.LOCK_EX)  # another process may be making it
        if (root / ".complete").exists():
            return root
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=root.parent))
        mirror = [os.environ["DEBIAN_MIRROR"]] if os.environ.get("DEBIAN_MIRROR") else []
        command = [
            *("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES[suite])}"),
            *(suite, str(work), *mirror),
        ]
        print("+", shlex.join(command), file=sys.stderr, flush=True)
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)  # noqa: S603
        if completed.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            sys.exit(f"debootstrap {suite} failed ({completed.returncode}): see {work}/debootstrap")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
        (root / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
        print(f"{root}: made in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return root


def run(suite: str, command: list[str], binds: list[Path], env: list[str]) -> NoReturn:
    """Run ``command`` inside the root of ``suite``, in place of this process.

    This process becomes the command (through ``unshare``, ``sh`` and ``chroot``, each replacing
    the one before), so that its exit status is the command's and a signal sent to this process,
    or its process group, reaches the command alone: a server started so stops as it would
    outside the root.
    """
    root = make(suite)
    shutil.copyfile(os.environ.get("PIP_CERT") or certifi_bundle(), root / CA_BUNDLE.lstrip("/"))
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    mounts = [
        f"mount -t proc proc {root}/proc",
        f"mount --rbind /dev {root}/dev",
        f"mount --bind /tmp {root}/tmp",  # noqa: S108 (the host's /tmp, shared on purpose)
    ]
    for bind in binds:
        inside = root / str(bind.resolve()).lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {shlex.quote(str(bind.resolve()))} {shlex.quote(str(inside))}")
    variables = [
        f"PATH={PATH}",
        "HOME=/root",
        "LANG=C.UTF-8",
        f"PIP_CERT={CA_BUNDLE}",
        f"SSL_CERT_FILE={CA_BUNDLE}",
        *env,
    ]
    cwd = Path.cwd().resolve()
    inner = [
        *("chroot", str(root), "env", "-i", *variables),
        *("sh", "-c", f'cd {shlex.quote(str(cwd))} 2>/dev/null || cd /; exec "$@"', "sh"),
        *command,
    ]
    script = " && ".join([*mounts, f"exec {shlex.join(inner)}"])
    # A mount namespace of its own: the mounts go when the command ends, whatever happens.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script])  # noqa: S606, S607


def certifi_bundle() -> str:
    """The host's CA bundle when ``PIP_CERT`` names none."""
    for candidate in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(candidate).exists():
            return candidate
    sys.exit("tools/debian_root.py: no CA bundle found; set PIP_CERT to one")


def main() -> None:
    """``path SUITE`` or ``run SUITE [--bind DIR]... [--env NAME=VALUE]... -- COMMAND...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    path = verbs.add_parser("path", help="make the root (cached) and print its directory")
    path.add_argument("suite", choices=sorted(PACKAGES))
    runner = verbs.add_parser("run", help="run a command inside the root")
    runner.add_argument("suite", choices=sorted(PACKAGES))
    runner.add_argument("--bind", action="append", type=Path, default=[])
    runner.add_argument("--env", action="append", default=[])
    # What follows "--" is the command, so that the options may come after the suite too.
    given = sys.argv[1:]
    split = given.index("--") if "--" in given else len(given)
    runner.add_argument("command", nargs="*" if split < len(given) else argparse.REMAINDER)
    args = parser.parse_args(given[:split])
    if args.verb == "path":
        print(make(args.suite))
        return
    command = args.command + given[split + 1 :]
    if not command:
        parser.error("run: give the command after --")
    run(args.suite, command, args.bind or [Path.cwd()], args.env)


if __name__ == "__main__":
    main()
