"""What the heroes' operations document, and what they add to the generated document.

Examples and response headers for the controller's decorators; ``complete_document`` for what
Litestar cannot generate. What every resource documents alike is ``service.http.openapi``'s, in
the heroes' words here.
"""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example, OpenAPI, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.database.tables import KEY_MAX_LENGTH
from service.http import idempotency
from service.http.openapi import (
    count_as_integer,
    document_headers_read_raw,
    etag_header,
    if_match_header,
    if_none_match_header,
    link_created,
    link_header,
    not_modified,
    total_count_header,
)

CREATE_EXAMPLE = Example(
    summary="A hero with an age",
    value={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30},
)
UPDATE_EXAMPLE = Example(summary="Rename a hero", value={"name": "Deadpool"})


ETAG_HEADER = etag_header("hero")
NOT_MODIFIED = not_modified("hero")


REPLAYED_HEADER = ResponseHeader(
    name=idempotency.REPLAYED_HEADER,
    value="true",  # an example, from which the schema is derived: never sent as such
    description=(
        "`true` when the answer is the first one given again, for a retry with the same "
        "Idempotency-Key: nothing was created this time."
    ),
    documentation_only=True,
)


LINK_HEADER = link_header("/heroes", "hero")
TOTAL_COUNT_HEADER = total_count_header("heroes")
ORDER_BY_DESCRIPTION = (
    "The order of the list: `id`, `name` or `age`, descending with a leading `-` (`-age`). "
    "Ties are broken by id, in the same direction. Names sort case-insensitively (A-Z only) by "
    "code point; a hero without an age sorts before every age: first with `age`, last with "
    "`-age`."
)


IDEMPOTENCY_KEY = Parameter(
    name=idempotency.HEADER,
    param_in="header",
    required=False,
    description=(
        "A key of your own for this create (a UUID, new for each hero), so that it can be "
        "retried safely: the same key with the same body answers the first result again and "
        "creates nothing; with another body, 422; while the first is still running, 409. Kept "
        "24 hours by default (IDEMPOTENCY_KEY_RETENTION_SECONDS). Up to 255 visible ASCII "
        "characters, no spaces; a quoted string (RFC 8941) is the same key. Another value is "
        "400."
    ),
    schema=Schema(
        type=OpenAPIType.STRING,
        pattern=idempotency.IDEMPOTENCY_KEY,
        max_length=KEY_MAX_LENGTH,
        examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
    ),
)
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
