"""The speed chart of docs/speed.md, drawn from the benchmark results files as plain SVG.

    python tools/speed_chart.py docs/speed.svg      # just speed-chart

Reads the first table of ``tests/benchmarks/RESULTS.md`` (SQLite) and
``tests/benchmarks/RESULTS-postgresql.md`` (PostgreSQL), which ``just bench`` writes, and draws
requests per second of the service, the FastAPI tutorial app and the framework-free ceiling for
each scenario the tutorial app has, one panel per database, on one scale. The same results give
the same bytes: a test redraws the chart and compares it with the committed file.
"""

from __future__ import annotations

import re
import sys
from html import escape
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {
    "SQLite": Path("tests/benchmarks/RESULTS.md"),
    "PostgreSQL": Path("tests/benchmarks/RESULTS-postgresql.md"),
}
"""Each panel's results file, relative to the checkout."""
SERIES = (("ours", "Hero service", "#2b6cb0"), ("fastapi", "FastAPI tutorial app", "#dd6b20"))
CEILING = ("ceiling", "framework-free ceiling", "#a0aec0")
WIDTH, HEIGHT = 760, 400
PANEL_TOP, PANEL_BOTTOM = 100, 320
"""The y of a panel's top (its scale's maximum) and of its base line (0 rps)."""
BAR, GAP = 26, 4
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


class Row(NamedTuple):
    """One scenario of a results table: requests per second of each app."""

    scenario: str
    ours: int
    fastapi: int
    fastapi_note: str
    """What the results say of the tutorial app's figure beyond it (``at 32 connections``)."""
    ceiling: int
    ratio: str


class Results(NamedTuple):
    """What a results file says: where it came from, and its scenarios against the tutorial app."""

    path: Path
    measured: str
    commit: str
    rows: list[Row]


def number(cell: str) -> int:
    """``3,245`` or ``163 (at 32 connections)`` as 3245 or 163."""
    found = re.match(r"\s*([\d,]+)", cell)
    if found is None:
        raise ValueError(f"not a number: {cell!r}")
    return int(found[1].replace(",", ""))


def read(path: Path) -> Results:
    """The scenarios of ``path``'s first table that the tutorial app ran too."""
    text = (ROOT / path).read_text(encoding="utf-8")
    measured = re.search(r"^Measured (\d{4}-\d\d-\d\d)", text, flags=re.MULTILINE)
    commit = re.search(r"^- Service at (\w+)\.", text, flags=re.MULTILINE)
    if measured is None or commit is None:
        raise ValueError(f"{path}: no 'Measured <date>' or '- Service at <commit>.' line")
    rows = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if header is not None:
                break  # the end of the first table
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells[0]) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=True))
        if row["FastAPI rps"] == "-":
            continue
        note = re.search(r"\((.*)\)", row["FastAPI rps"])
        rows.append(
            Row(
                scenario=row["scenario"],
                ours=number(row["ours rps"]),
                fastapi=number(row["FastAPI rps"]),
                fastapi_note=note[1] if note else "",
                ceiling=number(row["ceiling rps"]),
                ratio=row["ratio"],
            )
        )
    if not rows:
        raise ValueError(f"{path}: no scenario with a FastAPI figure in its first table")
    return Results(path, measured[1], commit[1], rows)


def scale_top(largest: int) -> int:
    """The scale's maximum: ``largest`` rounded up to a whole 2,000."""
    return -(-largest // 2000) * 2000


def text(x: float, y: float, content: str, size: int = 11, **attributes: str) -> str:
    """An SVG text element."""
    extra = "".join(f' {name.replace("_", "-")}="{value}"' for name, value in attributes.items())
    return f'<text x="{x:g}" y="{y:g}" font-size="{size}"{extra}>{escape(content)}</text>'


def rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    """An SVG rectangle."""
    return f'<rect x="{x:g}" y="{y:.1f}" width="{width:g}" height="{height:.1f}" fill="{fill}"/>'


def line(x1: float, y1: float, x2: float, y2: float, stroke: str) -> str:
    """An SVG line."""
    return f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{stroke}"/>'


def panel(title: str, results: Results, left: float, width: float, top_rps: int) -> list[str]:
    """One database's bars, grouped by scenario, with the ratio above each group."""
    height = PANEL_BOTTOM - PANEL_TOP
    parts = [
        text(left + width / 2, PANEL_TOP - 26, title, 13, text_anchor="middle", font_weight="bold")
    ]
    for rps in range(0, top_rps + 1, 2000):
        y = PANEL_BOTTOM - height * rps / top_rps
        parts.append(line(left, y, left + width, y, "#e2e8f0"))
        parts.append(text(left - 6, y + 4, f"{rps:,}", 10, text_anchor="end", fill="#4a5568"))
    group_width = width / len(results.rows)
    series = [*SERIES, CEILING]
    for index, row in enumerate(results.rows):
        group_left = left + index * group_width + (group_width - len(series) * (BAR + GAP)) / 2
        for position, (field, _label, colour) in enumerate(series):
            rps = getattr(row, field)
            bar_height = height * rps / top_rps
            x = group_left + position * (BAR + GAP)
            y = PANEL_BOTTOM - bar_height
            marked = "*" if field == "fastapi" and row.fastapi_note else ""
            parts.append(rect(x, y, BAR, bar_height, colour))
            parts.append(text(x + BAR / 2, y - 4, f"{rps:,}{marked}", 9, text_anchor="middle"))
        centre = left + index * group_width + group_width / 2
        parts.append(text(centre, PANEL_BOTTOM + 16, row.scenario, 11, text_anchor="middle"))
        parts.append(
            text(
                centre,
                PANEL_BOTTOM + 30,
                f"{row.ratio} FastAPI",
                10,
                text_anchor="middle",
                fill="#2b6cb0",
            )
        )
    parts.append(line(left, PANEL_BOTTOM, left + width, PANEL_BOTTOM, "#2d3748"))
    return parts


def chart(results: dict[str, Results]) -> str:
    """The SVG document: a panel per database, one scale, a legend and the sources."""
    top_rps = scale_top(
        max(max(r.ours, r.fastapi, r.ceiling) for res in results.values() for r in res.rows)
    )
    sources = "; ".join(
        f"{title}: {res.path} ({res.measured}, service at {res.commit})"
        for title, res in results.items()
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" {FONT}>',
        f"<title>Requests per second, one uvicorn worker, 64 connections: the Hero service, the "
        f"FastAPI tutorial app and a framework-free ceiling. {escape(sources)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        text(
            12,
            18,
            "Requests per second (one worker, 64 connections; higher is better)",
            13,
            font_weight="bold",
        ),
    ]
    legend_left = 12.0
    for _field, label, colour in (*SERIES, CEILING):
        parts.append(rect(legend_left, 30, 10, 10, colour))
        parts.append(text(legend_left + 14, 39, label, 11))
        legend_left += 14 + 7 * len(label) + 18
    panel_width = (WIDTH - 60 * len(results) - 20) / len(results)
    for index, (title, res) in enumerate(results.items()):
        parts += panel(title, res, 60 + index * (panel_width + 60), panel_width, top_rps)
    notes = sorted(
        {row.fastapi_note for res in results.values() for row in res.rows if row.fastapi_note}
    )
    footer = "* FastAPI " + ", ".join(notes) + " (it hangs at 64)" if notes else ""
    lines = [footer] if footer else []
    lines += [
        f"{title}: {res.path} ({res.measured}, service at {res.commit})"
        for title, res in results.items()
    ]
    for number_, content in enumerate(reversed(lines)):
        parts.append(text(12, HEIGHT - 8 - 12 * number_, content, 9, fill="#4a5568"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    """Write the chart to the path given."""
    if len(sys.argv) != 2:  # noqa: PLR2004
        sys.exit(__doc__)
    destination = Path(sys.argv[1])
    destination.write_text(
        chart({title: read(path) for title, path in RESULTS.items()}), encoding="utf-8"
    )
    print(f"wrote {destination}")


if __name__ == "__main__":
    main()
