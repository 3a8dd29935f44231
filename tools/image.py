"""Build the service's container image, and a Debian base for it made by debootstrap.

    python tools/image.py build [ENGINE BUILD FLAGS...]     # just image
    python tools/image.py debian-base [NAME [SUITE]]         # just image-test's base

``build`` builds the wheels of the service and its dependencies, at the versions of
constraints.txt, into build/wheels (the build inside the container needs no package index), then
the image from Containerfile, tagged ``hero-service:<version>`` and ``hero-service:latest``. The
environment chooses: ``BASE_IMAGE`` (default: the Containerfile's, the official slim Python 3.13
image of Debian 13), ``EXTRAS`` (default ``postgres``) and ``CONTAINER_ENGINE`` (default
``podman`` if installed, else ``docker``; global flags may follow, e.g. ``podman --runtime
runc``). Arguments after ``build`` go to the engine's ``build`` command.

The wheels are built for the base's Python (``BASE_PYTHON``, e.g. ``3.12``; else 3.13 for the
default base, else asked of the base image itself), by the first of: the Python running this
tool if it is that version; Debian's, inside the root ``tools/debian_root.py`` makes (3.13 in
trixie, 3.14 and 3.15 in sid; needs root and debootstrap); ``pythonX.Y`` on ``PATH``.

``debian-base`` makes a Debian image with its Python from Debian's own packages
(``debootstrap --variant=minbase --include=python3,python3-venv SUITE``; default trixie,
Debian 13, Python 3.13), as a user behind a registry mirror would have one: imported into the
engine's store as NAME, unless it is there already, from a root filesystem tarball cached in
``~/.cache/hero-service/`` between runs. ``DEBIAN_MIRROR`` overrides debootstrap's mirror.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "build" / "wheels"
NAME = "hero-service"
DEFAULT_EXTRAS = "postgres"
DEFAULT_BASE_PYTHON = "3.13"
"""The Python of the Containerfile's default base image, which the wheels must be built for."""
DEBIAN_SUITE = "trixie"
DEBIAN_BASE = f"localhost/hero-debian-python:{DEBIAN_SUITE}"
DEBIAN_PYTHONS = {
    "3.13": ("trixie", "python3.13"),
    "3.14": ("sid", "python3.14"),
    "3.15": ("sid", "python3.15"),
}
"""Pythons of Debian's packages, in the roots of tools/debian_root.py: the suite, the command."""
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRIMMED = (
    *("usr/share/man/*", "usr/share/info/*", "usr/share/locale/*"),
    *("var/lib/apt/lists/*_*", "var/cache/apt/archives/*.deb"),
)
"""What a slim Debian image leaves out too: manuals, translations, package lists and downloads."""


def version() -> str:
    """The project's version, as pyproject.toml gives it."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, str] = tomllib.load(file)["project"]
    return project["version"]


def engine() -> list[str]:
    """The container engine's command: ``CONTAINER_ENGINE``, or podman, or docker."""
    if chosen := os.environ.get("CONTAINER_ENGINE"):
        return shlex.split(chosen)
    for candidate in ("podman", "docker"):
        if shutil.which(candidate):
            return [candidate]
    sys.exit("tools/image.py: neither podman nor docker is installed (or set CONTAINER_ENGINE)")


def run(command: list[str], *, cwd: Path | None = None, quiet: bool = False) -> None:
    """Run ``command``, showing it; stop with its exit status if it fails."""
    print("+", shlex.join(command), flush=True)
    output = subprocess.DEVNULL if quiet else None
    # The commands are this file's own, with the engine the operator chose.
    completed = subprocess.run(command, cwd=cwd, stdout=output, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def build_wheels(extras: str, python: str) -> None:
    """Build the wheels of the service and all it needs with ``extras``, pinned, for ``python``."""
    shutil.rmtree(WHEELS, ignore_errors=True)
    requirement = f".[{extras}]" if extras else "."
    wheel = [
        *("pip", "wheel", "--quiet", "--disable-pip-version-check", "-c", "constraints.txt"),
        *(requirement, "--wheel-dir", str(WHEELS)),
    ]
    if python == f"{sys.version_info[0]}.{sys.version_info[1]}":
        run([sys.executable, "-m", *wheel], cwd=ROOT)
        return
    if python in DEBIAN_PYTHONS and os.geteuid() == 0 and shutil.which("debootstrap"):
        suite, command = DEBIAN_PYTHONS[python]
        # Debian's Python has no pip of its own: a venv in the root's /tmp (the machine's) has.
        venv = Path(tempfile.mkdtemp(prefix="hero-wheels-"))
        script = (
            f"{command} -m venv {venv} && {venv}/bin/python -m {shlex.join(wheel)}; "
            f"status=$?; rm -rf {venv}; exit $status"
        )
        root_tool = [sys.executable, str(ROOT / "tools" / "debian_root.py"), "run", suite]
        run([*root_tool, "--bind", str(ROOT), "--", "sh", "-c", script], cwd=ROOT)
        return
    if found := shutil.which(f"python{python}"):
        run([found, "-m", *wheel], cwd=ROOT)
        return
    sys.exit(
        f"tools/image.py: the base image has Python {python}, and none is here to build its "
        f"wheels with: run this tool with Python {python}, or put python{python} on PATH"
    )


def base_python(command: list[str], base: str | None, flags: list[str]) -> str:
    """The Python version of the base image: ``BASE_PYTHON``, the default's, or the image's.

    The image is asked with the build's ``flags`` (the network and limits the engine needs).
    """
    if chosen := os.environ.get("BASE_PYTHON"):
        return chosen
    if base is None:
        return DEFAULT_BASE_PYTHON
    asked = subprocess.run(  # noqa: S603 (the engine the operator chose)
        [
            *(*command, "run", "--rm", *flags, "--entrypoint", "python3", base),
            *("-c", "import sys; print('%d.%d' % sys.version_info[:2])"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if asked.returncode != 0:
        sys.exit(f"tools/image.py: cannot run python3 in {base} (set BASE_PYTHON): {asked.stderr}")
    return asked.stdout.strip()


def build(build_flags: list[str]) -> None:
    """Build the wheels, then the image, tagged with the version and ``latest``."""
    started = time.monotonic()
    base = os.environ.get("BASE_IMAGE")
    extras = os.environ.get("EXTRAS", DEFAULT_EXTRAS)
    command = engine()
    python = base_python(command, base, build_flags)
    build_wheels(extras, python)
    wheels_seconds = time.monotonic() - started
    tags = [f"{NAME}:{version()}", f"{NAME}:latest"]
    args = ["--build-arg", f"EXTRAS={extras}", "--build-arg", f"VERSION={version()}"]
    if base:
        args += ["--build-arg", f"BASE_IMAGE={base}"]
    if Path(command[0]).name == "podman":
        args += ["--format", "docker"]  # OCI images have no HEALTHCHECK; Docker's format does
    for tag in tags:
        args += ["--tag", tag]
    run([*command, "build", *args, *build_flags, "--file", "Containerfile", "."], cwd=ROOT)
    size = subprocess.run(  # noqa: S603 (the engine the operator chose)
        [*command, "image", "inspect", "--format", "{{.Size}}", tags[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"built {' and '.join(tags)}: {int(size) / 1e6:.0f} MB, on {base or 'the default base'} "
        f"(Python {python}), extras {extras or 'none'}; wheels {wheels_seconds:.0f} s, "
        f"in all {time.monotonic() - started:.0f} s"
    )


def debian_base(name: str, suite: str = DEBIAN_SUITE) -> None:
    """Import a debootstrap-made Debian ``suite`` with Python as ``name``, unless it is there."""
    command = engine()
    exists = subprocess.run(  # noqa: S603 (the engine the operator chose)
        [*command, "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        check=False,
    )
    if exists.returncode == 0:
        print(f"{name}: already in the image store")
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / NAME
    tarball = cache / f"debian-{suite}-python.tar.gz"
    if not tarball.exists():
        started = time.monotonic()
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as work:
            rootfs = Path(work) / "rootfs"
            mirror = [os.environ["DEBIAN_MIRROR"]] if os.environ.get("DEBIAN_MIRROR") else []
            run(
                [
                    *("debootstrap", "--variant=minbase", "--include=python3,python3-venv"),
                    *(suite, str(rootfs), *mirror),
                ],
                quiet=True,
            )
            trim(rootfs)
            partial = Path(work) / tarball.name
            run(["tar", "-C", str(rootfs), "--numeric-owner", "-czf", str(partial), "."])
            partial.rename(tarball)
        print(f"{tarball}: made in {time.monotonic() - started:.0f} s")
    run(
        [
            *(*command, "import", "--change", f"ENV PATH={DEBIAN_PATH}"),
            *("--change", 'CMD ["bash"]', str(tarball), name),
        ]
    )


def trim(rootfs: Path) -> None:
    """Leave out what a slim image does: docs (but the copyright files), manuals, translations."""
    for pattern in TRIMMED:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for path in sorted((rootfs / "usr/share/doc").rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name != "copyright":
            path.unlink()


def main() -> None:
    """``build [ENGINE BUILD FLAGS...]`` or ``debian-base [NAME [SUITE]]``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("build", "debian-base"):  # noqa: PLR2004
        sys.exit(__doc__)
    if sys.argv[1] == "build":
        build(sys.argv[2:])
    else:
        debian_base(*(sys.argv[2:4] or [DEBIAN_BASE]))


if __name__ == "__main__":
    main()
