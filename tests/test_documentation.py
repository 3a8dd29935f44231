"""The README and the pages under docs/: links that lead somewhere, every setting documented.

Plain file reads, no network: a relative link must name a file of the repository and, with a
``#fragment``, a heading of that file, as GitHub makes anchors of headings.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from service.settings import Settings
from tests.markdown_pages import DOCS, HEADING, INLINE_CODE, PAGES, README, ROOT, prose_lines

README_MAX_LINES = 150
"""The README is a front door: it is shorter than this; the rest lives in docs/."""

# [text](target) or [text](target "title"); an image's ![alt](src) is a link to check too.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


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

    assert len(lines) < README_MAX_LINES


def readme_sections() -> list[str]:
    return [
        match[1]
        for line in prose_lines(README.read_text("utf-8"))
        if (match := HEADING.match(line))
    ]


def test_readme_indexes_every_docs_page_before_the_settings() -> None:
    readme = README.read_text(encoding="utf-8")
    index = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]

    assert set(re.findall(r"\]\((docs/[\w-]+\.md)\)", index)) == {
        str(page.relative_to(ROOT)) for page in DOCS.glob("*.md")
    }
    assert readme_sections().index("Documentation") < readme_sections().index(
        "The settings people change"
    )


def test_readme_leads_with_the_quick_start_then_first_requests() -> None:
    sections = readme_sections()

    assert sections[1:3] == ["Quick start", "First requests"]


def test_readme_first_requests_send_the_api_key_and_explain_401() -> None:
    section = README.read_text(encoding="utf-8").split("## First requests", 1)[1].split("\n## ")[0]
    writes = re.findall(r"curl [^\n]*-X (?:POST|PATCH|DELETE)[^\n]*(?:\\\n[^\n]*)*", section)

    assert len(writes) == 3
    assert all("Authorization: Bearer $API_KEY" in write for write in writes)
    assert "401" in section
    assert "Writes need the header Authorization: Bearer <API key>." in section


def test_readme_names_the_pythons_the_project_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [
        classifier.rsplit(" :: ", 1)[1]
        for classifier in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    ]
    section = README.read_text(encoding="utf-8").split("## Pythons and licence", 1)[1]

    assert declared == ["3.11", "3.12", "3.13", "3.14", "3.15"]
    assert all(version in section for version in declared)


def test_the_changelog_keeps_a_changelog_from_0_1_0_to_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", changelog, re.MULTILINE)

    assert releases[0] == ("Unreleased", "")
    assert (version, releases[1][1]) == releases[1]
    assert releases[-1][0] == "0.1.0"
    assert set(re.findall(r"^### (\w+)$", changelog, re.MULTILINE)) <= {
        "Added",
        "Changed",
        "Deprecated",
        "Removed",
        "Fixed",
        "Security",
    }


def test_the_version_policy_says_what_each_release_may_change() -> None:
    page = (DOCS / "versions.md").read_text(encoding="utf-8")
    rows = {
        match[1] for match in re.finditer(r"^\| (the API|the settings|the schema) \|", page, re.M)
    }

    assert rows == {"the API", "the settings", "the schema"}
    assert "| patch (`x.y.Z`) | minor (`x.Y.0`) | major (`X.0.0`) |" in page
