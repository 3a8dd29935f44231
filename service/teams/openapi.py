"""What the teams' operations document: their examples, and the rest in the teams' words.

What every resource documents alike is ``service.http.openapi``'s ``ResourceDocs``.
"""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example

from service.http.openapi import ResourceDocs

DOCS = ResourceDocs("team", "teams")
"""The headers of the team operations, and what they add to the generated document."""

CREATE_EXAMPLE = Example(
    summary="A team and its headquarters",
    value={"name": "Preventers", "headquarters": "Sharp Tower"},
)
UPDATE_EXAMPLE = Example(summary="Move a team", value={"headquarters": "Sister Margaret's Bar"})

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
