"""What the teams' operations document, and what they add to the generated document."""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example, OpenAPI

from service.http.openapi import (
    count_as_integer,
    document_headers_read_raw,
    etag_header,
    idempotency_key,
    if_match_header,
    if_none_match_header,
    link_created,
    link_header,
    not_modified,
    replayed_header,
    total_count_header,
)

CREATE_EXAMPLE = Example(
    summary="A team and its headquarters",
    value={"name": "Preventers", "headquarters": "Sharp Tower"},
)
UPDATE_EXAMPLE = Example(summary="Move a team", value={"headquarters": "Sister Margaret's Bar"})

ETAG_HEADER = etag_header("team")
NOT_MODIFIED = not_modified("team")
REPLAYED_HEADER = replayed_header()
LINK_HEADER = link_header("/teams", "team")
TOTAL_COUNT_HEADER = total_count_header("teams")
HEROES_LINK_HEADER = ResponseHeader(
    name="Link",
    value='</heroes?team_id=1>; rel="related"',  # an example, never sent as such
    description=(
        'When the team has more heroes than `heroes` shows: `</heroes?team_id=N>; rel="related"` '
        "(RFC 8288), the list of all its heroes, in pages."
    ),
    documentation_only=True,
)
ORDER_BY_DESCRIPTION = (
    "The order of the list: `id` or `name`, descending with a leading `-` (`-name`). Ties are "
    "broken by id, in the same direction. Names sort case-insensitively (A-Z only) by code point."
)

IDEMPOTENCY_KEY = idempotency_key("team")
IF_MATCH_HEADER = if_match_header("team")
IF_NONE_MATCH_HEADER = if_none_match_header("team")
HEADERS_READ_RAW = {
    "createTeam": IDEMPOTENCY_KEY,
    "getTeam": IF_NONE_MATCH_HEADER,
    "updateTeam": IF_MATCH_HEADER,
    "deleteTeam": IF_MATCH_HEADER,
}
"""The request headers each handler reads from the raw headers, which no parameter documents."""


def complete_document(document: OpenAPI) -> None:
    """CreateTeam's links to the new team, the headers read raw, ``X-Total-Count`` an integer."""
    link_created(document, "createTeam", "team_id", ("getTeam", "updateTeam", "deleteTeam"))
    document_headers_read_raw(document, HEADERS_READ_RAW)
    count_as_integer(document, "listTeams")
