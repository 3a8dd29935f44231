"""Versions as HTTP entity tags: the ``ETag`` header, ``If-Match`` and ``If-None-Match`` (RFC 9110).

A row's version counts the writes to it (``service.database.records``); its strong entity tag is
the version in quotes (``"3"``). A representation that shows other rows too (a hero with its
team) adds what identifies them after a dot (``"3.7"``: the hero at 3, its team at 7), so that
it changes when they do; a write's ``If-Match`` is a condition on the row it writes, and
compares the first number alone. Any resource's routes read the conditions with
:func:`if_match`, and answer a read (its ``ETag``, or 304) with :func:`read_answer`. No I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeVar

from service.database.records import Versions
from service.database.tables import VERSION_MAX
from service.http.responses import JsonResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.types import Scope

T = TypeVar("T")

IF_MATCH = "If-Match"
IF_NONE_MATCH = "If-None-Match"
_NAMES = {IF_MATCH: b"if-match", IF_NONE_MATCH: b"if-none-match"}

_OPAQUE_TAG = r'(W/)?"[\x21\x23-\x7E]*"'
ENTITY_TAGS = rf"^[ \t]*(\*|{_OPAQUE_TAG}([ \t]*,[ \t]*{_OPAQUE_TAG})*)?[ \t]*$"
"""What ``If-Match`` and ``If-None-Match`` may hold (RFC 9110 8.8.3, 13.1): ``*``, or a list,
possibly empty, of strong (``"3"``) or weak (``W/"3"``) tags, separated by commas. The OpenAPI
document states it as the headers' pattern; it is written for Python and ECMAScript alike, and
allows only visible ASCII inside the quotes (no service tag holds anything else)."""

_WELL_FORMED = re.compile(ENTITY_TAGS)
_TAG = re.compile(_OPAQUE_TAG)
_VERSION_TAG = re.compile(r'"(0|[1-9][0-9]{0,17})(?:\.(?:0|[1-9][0-9]{0,17}))*"')
"""A strong entity tag the service issues: a version of up to 18 digits, then what the
representation shows besides the row (see :func:`etag`), quoted.

Written as ``etag`` writes it, with no leading zero: strong comparison is of the tags' bytes
(RFC 9110, 8.8.3.2), so ``"01"`` is not the tag of version 1."""


class MalformedEntityTags(ValueError):
    """An ``If-Match`` or ``If-None-Match`` header that is not ``*`` nor a list of entity tags."""

    def __init__(self, header: str) -> None:
        super().__init__(f'{header} must be * or a list of entity tags such as "1" or W/"1"')
        self.header = header


def header_value(scope: Scope, header: str) -> str | None:
    """The request's ``header`` (``If-Match``, ``If-None-Match``), or None when it is not sent.

    A list-valued header may come in several lines; they are one list, joined by commas (RFC
    9110, 5.3). Read from the ASGI scope's raw headers: a header parameter in the handler's
    signature makes Litestar build the request's header map on every read and write.
    """
    name = _NAMES.get(header) or header.lower().encode()
    lines = [value for key, value in scope["headers"] if key == name]
    return ", ".join(line.decode("latin-1") for line in lines) if lines else None


def etag(version: int, *shown: int) -> str:
    """The strong entity tag of a row's version, and of what else its representation ``shown``.

    ``shown``: the versions (or a digest) of the other rows the answer includes, in order.
    """
    if not shown:
        return f'"{version}"'
    return f'"{version}.{".".join(map(str, shown))}"'


def entity_tags(value: str, header: str) -> list[str] | None:
    """The tags listed in a header value, weak ones with their ``W/``; None for ``*``.

    Raises :class:`MalformedEntityTags` naming ``header`` when the value is not of the syntax.
    """
    if "\n" in value or not _WELL_FORMED.fullmatch(value):
        raise MalformedEntityTags(header)
    if value.strip(" \t") == "*":
        return None
    return [match.group(0) for match in _TAG.finditer(value)]


def allowed_versions(if_match: str | None) -> Versions:
    """The versions an ``If-Match`` header names, compared strongly: weak tags match none.

    None for any version (no header, or ``*``). A tag of a version no row can have (past
    ``VERSION_MAX``) matches nothing, like a stale one: it is left out here rather than sent to
    a database that cannot hold it.
    """
    if if_match is None:
        return None
    tags = entity_tags(if_match, IF_MATCH)
    if tags is None:
        return None
    versions = (int(match[1]) for tag in tags if (match := _VERSION_TAG.fullmatch(tag)))
    return [version for version in versions if version <= VERSION_MAX]


def matches_any(if_none_match: str, version: int, *shown: int) -> bool:
    """Whether ``If-None-Match`` is ``*`` or names the tag of ``version`` and ``shown``, weakly."""
    return _names_tag(if_none_match, etag(version, *shown))


def _names_tag(if_none_match: str, tag: str) -> bool:
    tags = entity_tags(if_none_match, IF_NONE_MATCH)
    return tags is None or tag in {found.removeprefix("W/") for found in tags}


def if_match(scope: Scope) -> Versions:
    """The versions the request's ``If-Match`` allows a write at; None for any."""
    return allowed_versions(header_value(scope, IF_MATCH))


def read_answer(
    scope: Scope,
    content: T,
    version: int,
    *shown: int,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse[T]:
    """A read's answer: ``content`` with its ``ETag``, or 304 if ``If-None-Match`` names it.

    The tag is :func:`etag`'s of ``version`` and ``shown``; ``Cache-Control: no-cache`` makes
    caches ask again (with ``If-None-Match``) before they reuse it. ``headers`` are sent too.
    """
    tag = etag(version, *shown)
    sent = {"ETag": tag, "Cache-Control": "no-cache", **(headers or {})}
    # Documented by the resource's ResourceDocs.headers_read_raw (see header_value).
    if_none_match = header_value(scope, IF_NONE_MATCH)
    if if_none_match is not None and _names_tag(if_none_match, tag):
        return JsonResponse(None, status_code=304, headers=sent)  # type: ignore[arg-type]
    return JsonResponse(content, headers=sent)
