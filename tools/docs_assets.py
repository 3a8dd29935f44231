"""Replace the docs pages' vendored assets with the given npm package versions.

    python tools/docs_assets.py swagger-ui-dist@5.35.0 redoc@3.0.1 @scalar/api-reference@1.76.0
    python tools/docs_assets.py --compress

Each package is fetched from the npm registry with ``npm pack``; the files the pages load and
the package's licence files are copied into ``service/http/static/docs/vendor/<name>-<version>/``,
each script and stylesheet with its Brotli (``.br``) and gzip (``.gz``) copies, which the service
sends to clients that accept them; the directory of the previous version is removed, and
``vendor/versions.json`` (the one place the pinned versions live) is rewritten. Name only the
packages to change. ``--compress`` makes the compressed copies again for the vendored files.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import brotli

from service.http.docs import COMPRESSED, VENDOR, directory_name

FILES = {
    "swagger-ui-dist": [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-ui-bundle.js.LICENSE.txt",
    ],
    "redoc": ["bundles/redoc.standalone.js"],
    "@scalar/api-reference": ["dist/browser/standalone.js"],
}
"""What the pages load from each package, as paths inside the package; each is copied flat."""
LICENCES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "NOTICE")
PATCHES = {
    "redoc.standalone.js": [
        # The "API docs by Redocly" credit in ReDoc's sidebar shows Redocly's logo from their CDN,
        # unconditionally. With this URL the image fails at once and ReDoc hides it; the credit
        # stays.
        ("https://cdn.redoc.ly/redoc/logo-mini.svg", "data:,"),
    ],
}
"""Literal replacements in vendored files; each must match exactly once, or the update stops."""


def split_spec(spec: str) -> tuple[str, str]:
    """``@scalar/api-reference@1.76.0`` -> (``@scalar/api-reference``, ``1.76.0``)."""
    package, _, version = spec.rpartition("@")
    if not package or package not in FILES or not version[:1].isdigit():
        sys.exit(f"{spec}: expected one of {', '.join(FILES)} with an exact version: NAME@1.2.3")
    return package, version


def vendor(package: str, version: str, work: Path) -> None:
    """Fetch ``package@version`` and put its files in place of the previous version's."""
    command = ["npm", "pack", "--silent", f"{package}@{version}", "--pack-destination", str(work)]
    subprocess.run(  # noqa: S603 (the registry's own client, on a spec split_spec checked)
        command,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tarball,) = work.glob("*.tgz")
    unpacked = work / "unpacked"
    with tarfile.open(tarball) as archive:
        archive.extractall(unpacked, filter="data")
    root = unpacked / "package"
    manifest = json.loads((root / "package.json").read_text())
    if manifest["version"] != version:
        sys.exit(f"{package}: asked for {version}, npm gave {manifest['version']}")
    versions = json.loads((VENDOR / "versions.json").read_text())
    previous = VENDOR / directory_name(package, versions[package]) if package in versions else None
    target = VENDOR / directory_name(package, version)
    staging = work / "staging"
    staging.mkdir()
    for name in FILES[package]:
        shutil.copyfile(root / name, staging / Path(name).name)
        patch(staging / Path(name).name)
    licences = [path for path in root.iterdir() if path.name in LICENCES]
    for path in licences:
        shutil.copyfile(path, staging / path.name)
    if not licences:
        # @scalar/api-reference ships none; its repository's MIT licence is kept from the last pin.
        if previous is None or not (previous / "LICENSE").exists():
            sys.exit(f"{package}: the package has no licence file and there is none to carry over")
        shutil.copyfile(previous / "LICENSE", staging / "LICENSE")
    compress(staging)
    if previous is not None and previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        shutil.rmtree(target)
    shutil.move(staging, target)
    versions[package] = version
    (VENDOR / "versions.json").write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")
    print(f"{package}@{version} -> {target}")


def patch(path: Path) -> None:
    """Apply the ``PATCHES`` for the file at ``path``."""
    if path.name not in PATCHES:
        return
    text = path.read_text(encoding="utf-8")
    for old, new in PATCHES[path.name]:
        if text.count(old) != 1:
            sys.exit(
                f"{path.name}: {old!r} occurs {text.count(old)} times, not once; review PATCHES"
            )
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


COMPRESSIBLE = (".js", ".css")


def compress(directory: Path) -> None:
    """Write the ``.br`` and ``.gz`` copies of each script and stylesheet under ``directory``.

    At the highest levels: they are made once here, not per request (Brotli's level 11 takes
    seconds on the largest bundle). The gzip copy carries no timestamp, so it is reproducible.
    """
    for path in sorted(directory.rglob("*")):
        if path.suffix not in COMPRESSIBLE or not path.is_file():
            continue
        data = path.read_bytes()
        copies = {
            "br": brotli.compress(data, quality=11),
            "gzip": gzip.compress(data, compresslevel=9, mtime=0),
        }
        for coding, suffix in COMPRESSED.items():
            path.with_name(path.name + suffix).write_bytes(copies[coding])
        print(f"{path.name}: {len(data)} bytes, br {len(copies['br'])}, gzip {len(copies['gzip'])}")


def main() -> None:
    """Vendor every package version named on the command line (or ``--compress`` again)."""
    if sys.argv[1:] == ["--compress"]:
        compress(VENDOR)
        return
    specs = [split_spec(spec) for spec in sys.argv[1:]]
    if not specs:
        sys.exit(__doc__)
    for package, version in specs:
        with tempfile.TemporaryDirectory() as work:
            vendor(package, version, Path(work))


if __name__ == "__main__":
    main()
