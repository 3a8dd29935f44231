"""The README and the pages under docs/: links that lead somewhere, every setting documented.

Plain file reads, no network: a relative link must name a file of the repository and, with a
``#fragment``, a heading of that file, as GitHub makes anchors of headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$")
# [text](target) or [text](target "title"); an image's ![alt](src) is a link to check too.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
# A code span may wrap onto the next line, not across a paragraph.
INLINE_CODE = re.compile(r"(`+)(?:(?!\1)(?!\n[ \t]*\n)[\s\S])+?\1")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened[1]
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings, numbered as GitHub numbers repeated ones."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    """The targets of ``page``'s links that stay in the repository (``#anchor`` ones included)."""
    lines = prose_lines(page.read_text(encoding="utf-8"))
    # Joined, since a link's text may wrap onto the next line.
    prose = INLINE_CODE.sub("", "\n".join(lines))
    return [target for target in LINK.findall(prose) if target and not EXTERNAL.match(target)]


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` that names no file, or no heading of its file."""
    broken: list[str] = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    return broken


def test_every_page_is_checked() -> None:
    assert DOCS.is_dir()
    assert len(PAGES) > 1


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_lead_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Kept: a heading\n", encoding="utf-8")
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[fine](other.md#kept-a-heading) [fine](#here) [web](https://example.com/x.md)\n"
        "[gone](missing.md) [gone](other.md#nowhere) [gone](#elsewhere) `[code](missing.md)`\n"
        "```\n[in a block](missing-too.md)\n# not a heading\n```\n"
        "[a link that\nwraps](wrapped.md)\n",
        encoding="utf-8",
    )

    broken = [link.partition(":")[0] for link in broken_links(page)]

    assert broken == ["missing.md", "other.md#nowhere", "#elsewhere", "wrapped.md"]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        (
            "Lists: cursor pages, sorting, searching, counting",
            "lists-cursor-pages-sorting-searching-counting",
        ),
        (
            "How the service uses Litestar's SQLAlchemy plugin",
            "how-the-service-uses-litestars-sqlalchemy-plugin",
        ),
        (
            "Adding a resource: statements or `db_session`",
            "adding-a-resource-statements-or-db_session",
        ),
        ("At 1,000,000 heroes", "at-1000000-heroes"),
        ("Versions: ETag, If-Match, If-None-Match", "versions-etag-if-match-if-none-match"),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


@pytest.mark.parametrize("field", Settings.__struct_fields__)
def test_every_setting_has_a_row_in_the_configuration_page(field: str) -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, re.MULTILINE))

    assert field.upper() in documented


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()

    assert len(lines) <= README_MAX_LINES
