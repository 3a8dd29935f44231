"""The licence: MIT for the service, each vendored viewer's own kept, all of it in the wheel."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
VENDOR = ROOT / "service" / "http" / "static" / "docs" / "vendor"
LICENCES = {"MIT License": "MIT", "The MIT License": "MIT", "Apache License": "Apache-2.0"}
"""The SPDX identifier of a licence file, by its first line."""


def project() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))[
        "project"
    ]
    return table


def spdx_of(licence: Path) -> str:
    first = next(
        line.strip() for line in licence.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    (identifier,) = {spdx for start, spdx in LICENCES.items() if first.startswith(start)}
    return identifier


def test_the_service_is_mit() -> None:
    assert spdx_of(ROOT / "LICENSE") == "MIT"


def test_the_license_expression_covers_every_vendored_viewer() -> None:
    expression = str(project()["license"])
    vendored = {spdx_of(licence) for licence in VENDOR.glob("*/LICENSE")}

    assert set(expression.split(" AND ")) == {"MIT", *vendored}
    assert len(list(VENDOR.glob("*/LICENSE"))) == len([p for p in VENDOR.iterdir() if p.is_dir()])


def test_the_notice_carries_every_vendored_notice() -> None:
    notice = " ".join((ROOT / "NOTICE").read_text(encoding="utf-8").split())

    for vendored in VENDOR.glob("*/NOTICE"):
        assert " ".join(vendored.read_text(encoding="utf-8").split()) in notice, vendored


def test_the_build_backend_takes_a_license_expression() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"][
        "requires"
    ]
    (hatchling,) = [r for r in requires if r.startswith("hatchling")]
    version = re.search(r">=\s*(\d+)\.(\d+)", hatchling)

    assert version is not None
    assert (int(version[1]), int(version[2])) >= (1, 27)  # PEP 639 in hatchling 1.27


def test_the_wheel_states_the_licence_and_carries_every_licence_file(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
        carried = {
            name.split("/licenses/", 1)[1] for name in archive.namelist() if "/licenses/" in name
        }

    assert f"License-Expression: {project()['license']}" in headers.splitlines()
    assert {"LICENSE", "NOTICE"} <= carried
    assert {str(p.relative_to(ROOT)) for p in VENDOR.glob("*/LICENSE")} <= carried
