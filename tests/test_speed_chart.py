"""docs/speed.svg is what ``just speed-chart`` draws from the committed benchmark results."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools import speed_chart

ROOT = Path(__file__).parents[1]
CHART = ROOT / "docs" / "speed.svg"


def test_the_committed_chart_is_the_one_drawn_from_the_committed_results(tmp_path: Path) -> None:
    recipe = re.search(r"^speed-chart:\n    (.+)$", (ROOT / "justfile").read_text(), re.MULTILINE)
    assert recipe is not None
    assert recipe[1] == "python tools/speed_chart.py docs/speed.svg"
    drawn = tmp_path / "speed.svg"

    subprocess.run([sys.executable, "tools/speed_chart.py", str(drawn)], cwd=ROOT, check=True)

    assert drawn.read_text(encoding="utf-8") == CHART.read_text(encoding="utf-8"), (
        "docs/speed.svg is not drawn from tests/benchmarks/RESULTS*.md: run `just speed-chart`"
    )


def test_speed_md_shows_the_chart() -> None:
    assert "](speed.svg)" in (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("title", speed_chart.RESULTS)
def test_each_bar_is_a_figure_of_the_results_table_and_names_its_source(title: str) -> None:
    path = speed_chart.RESULTS[title]
    rows = re.findall(
        r"^\| (get-one|list-20|create) \| ([\d,]+) \| ([\d,]+)[^|]*\| ([\d.]+x) \|"
        r".*\| ([\d,]+) \|$",
        (ROOT / path).read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    labels = re.findall(r">([\d,]+)\*?</text>", CHART.read_text(encoding="utf-8"))

    assert [row[0] for row in rows] == ["get-one", "list-20", "create"]
    for _scenario, ours, fastapi, ratio, ceiling in rows:
        assert {ours, fastapi, ceiling} <= set(labels)
        assert f">{ratio} FastAPI<" in CHART.read_text(encoding="utf-8")
    assert str(path) in CHART.read_text(encoding="utf-8")


def test_a_results_file_without_a_tutorial_figure_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "Measured 2026-12-07 10:00 UTC with `python -m tests.benchmarks.run`.\n\n"
        "- Service at abc1234.\n\n"
        "| scenario | ours rps | FastAPI rps | ratio | ours p50 / p99 | FastAPI p50 / p99 "
        "| ceiling rps |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| by-name | 2,961 | - | - | 22.80 / 31.66 ms | - | - |\n",
        encoding="utf-8",
    )

    with pytest.raises(ValueError, match="no scenario with a FastAPI figure"):
        speed_chart.read(results)
