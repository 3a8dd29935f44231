"""What the heroes' operations document, and what they add to the generated document.

Examples and response headers for the controller's decorators; ``complete_document`` for what
Litestar cannot generate. What every resource documents alike is ``service.http.openapi``'s, in
the heroes' words here.
"""

from __future__ import annotations

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
    summary="A hero with an age",
    value={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30},
)
UPDATE_EXAMPLE = Example(summary="Rename a hero", value={"name": "Deadpool"})


ETAG_HEADER = etag_header("hero")
NOT_MODIFIED = not_modified("hero")


REPLAYED_HEADER = replayed_header()


LINK_HEADER = link_header("/heroes", "hero")
TOTAL_COUNT_HEADER = total_count_header("heroes")
ORDER_BY_DESCRIPTION = (
    "The order of the list: `id`, `name` or `age`, descending with a leading `-` (`-age`). "
    "Ties are broken by id, in the same direction. Names sort case-insensitively (A-Z only) by "
    "code point; a hero without an age sorts before every age: first with `age`, last with "
    "`-age`."
)


IDEMPOTENCY_KEY = idempotency_key("hero")
"""createHero's ``Idempotency-Key`` header."""


IF_MATCH_HEADER = if_match_header("hero")
IF_NONE_MATCH_HEADER = if_none_match_header("hero")
HEADERS_READ_RAW = {
    "createHero": IDEMPOTENCY_KEY,
    "getHero": IF_NONE_MATCH_HEADER,
    "updateHero": IF_MATCH_HEADER,
    "deleteHero": IF_MATCH_HEADER,
}
"""The request headers each handler reads from the raw headers (``idempotency.header_value``,
``etags.header_value``), which no parameter of its signature documents."""


def complete_document(document: OpenAPI) -> None:
    """CreateHero's links to the new hero, the headers read raw, ``X-Total-Count`` an integer."""
    link_created(document, "createHero", "hero_id", ("getHero", "updateHero", "deleteHero"))
    document_headers_read_raw(document, HEADERS_READ_RAW)
    count_as_integer(document, "listHeroes")
