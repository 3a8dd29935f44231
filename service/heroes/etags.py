"""Hero versions as HTTP entity tags: the ``ETag`` header, ``If-Match`` and ``If-None-Match``.

A hero's version counts the writes to its row; its strong entity tag is the version in quotes
(``"3"``). Pure functions, no I/O.
"""

from __future__ import annotations

import re

Versions = list[int] | None
"""The versions an ``If-Match`` header allows, or None for any (no header, or ``*``)."""

ENTITY_TAG = re.compile(r'"[0-9]{1,18}"')
"""A strong entity tag the service issues: a version of up to 18 digits, quoted."""


def etag(version: int) -> str:
    """The strong entity tag of a hero version."""
    return f'"{version}"'


def allowed_versions(if_match: str | None) -> Versions:
    """The versions named in an ``If-Match`` header; weak or malformed tags match none."""
    if if_match is None or if_match.strip() == "*":
        return None
    tags = (tag.strip() for tag in if_match.split(","))
    return [int(tag[1:-1]) for tag in tags if ENTITY_TAG.fullmatch(tag)]


def matches_any(if_none_match: str, version: int) -> bool:
    """Whether ``If-None-Match`` names ``version`` (weak comparison) or is ``*``."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag(version) in tags
