"""What the heroes' operations document, and what they add to the generated document.

Examples and response headers for the controller's decorators; ``complete_document`` for what
Litestar cannot generate (see ``service.http.openapi``).
"""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example, Link, OpenAPI, OpenAPIHeader, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.database.tables import KEY_MAX_LENGTH
from service.heroes.etags import ENTITY_TAGS, IF_MATCH, IF_NONE_MATCH
from service.http import idempotency
from service.http.openapi import operation, response

CREATE_EXAMPLE = Example(
    summary="A hero with an age",
    value={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30},
)
UPDATE_EXAMPLE = Example(summary="Rename a hero", value={"name": "Deadpool"})


ETAG_HEADER = ResponseHeader(
    name="ETag",
    value='"1"',  # an example, from which the schema is derived: never sent
    description="The hero's version; send it in If-Match to update or delete only that version.",
    required=True,
    documentation_only=True,
)


REPLAYED_HEADER = ResponseHeader(
    name=idempotency.REPLAYED_HEADER,
    value="true",  # an example, from which the schema is derived: never sent as such
    description=(
        "`true` when the answer is the first one given again, for a retry with the same "
        "Idempotency-Key: nothing was created this time."
    ),
    documentation_only=True,
)


LINK_HEADER = ResponseHeader(
    name="Link",
    value='</heroes?limit=20&cursor=WzEsImlkIiwyMCwyMF0>; rel="next"',  # an example, never sent
    description=(
        'On every full page: `<URL>; rel="next"` (RFC 8288), the URL of the next page, '
        "relative to the request's, with the same filters, order_by and limit and a `cursor`. "
        "Follow it until it is absent to list every hero exactly once."
    ),
    documentation_only=True,
)
TOTAL_COUNT_HEADER = ResponseHeader(
    name="X-Total-Count",
    value="42",  # an example, never sent; service.http.openapi makes the schema an integer
    description="With `count=true`: how many heroes match the filters, over all pages.",
    documentation_only=True,
)
ORDER_BY_DESCRIPTION = (
    "The order of the list: `id`, `name` or `age`, descending with a leading `-` (`-age`). "
    "Ties are broken by id, in the same direction. Names sort case-insensitively (A-Z only) by "
    "code point; a hero without an age sorts before every age: first with `age`, last with "
    "`-age`."
)


NEW_HERO_LINKS = {
    operation_id: Link(
        operation_id=operation_id,
        parameters={"hero_id": "$response.body#/id"},
        description=f"The id in the answer is the hero_id of {operation_id}.",
    )
    for operation_id in ("getHero", "updateHero", "deleteHero")
}
"""createHero's answer leads to the new hero's get, update and delete."""


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


def condition(name: str, description: str) -> Parameter:
    """An optional conditional request header of the entity-tag syntax.

    Its syntax is stated in the document only: etags.py checks it, so that the 400 names the
    header. A header is a string when sent, never null.
    """
    return Parameter(
        name=name,
        param_in="header",
        required=False,
        deprecated=False,
        description=description,
        schema=Schema(type=OpenAPIType.STRING, pattern=ENTITY_TAGS, description=description),
    )


IF_MATCH_HEADER = condition(
    IF_MATCH,
    "Write only if the hero is still at one of these ETags (or `*`); otherwise 412. A value "
    "that is not `*` nor a list of entity tags is 400.",
)
IF_NONE_MATCH_HEADER = condition(
    IF_NONE_MATCH,
    "Answer 304 without a body if the hero is still at one of these ETags (or for `*`). A value "
    "that is not `*` nor a list of entity tags is 400.",
)
HEADERS_READ_RAW = {
    "createHero": IDEMPOTENCY_KEY,
    "getHero": IF_NONE_MATCH_HEADER,
    "updateHero": IF_MATCH_HEADER,
    "deleteHero": IF_MATCH_HEADER,
}
"""The request headers each handler reads from the raw headers (``idempotency.header_value``,
``etags.header_value``), which no parameter of its signature documents."""


def complete_document(document: OpenAPI) -> None:
    """Add createHero's links, the headers read raw, and make ``X-Total-Count`` an integer."""
    link_new_hero(document)
    headers_read_raw(document)
    count_as_integer(document)


def headers_read_raw(document: OpenAPI) -> None:
    """Document the request headers the handlers read from the raw headers."""
    for operation_id, header in HEADERS_READ_RAW.items():
        found = operation(document, operation_id)
        others = [p for p in found.parameters or [] if getattr(p, "name", None) != header.name]
        found.parameters = [*others, header]


def link_new_hero(document: OpenAPI) -> None:
    """Document that createHero's 201 answer leads to the new hero's get, update and delete."""
    response(document, "createHero", "201").links = dict(NEW_HERO_LINKS)


def count_as_integer(document: OpenAPI) -> None:
    """ListHeroes' ``X-Total-Count`` is an integer (Litestar made it a string, from its example)."""
    total = (response(document, "listHeroes", "200").headers or {}).get("X-Total-Count")
    if not isinstance(total, OpenAPIHeader):
        raise TypeError("listHeroes documents no X-Total-Count header")
    total.schema = Schema(type=OpenAPIType.INTEGER, minimum=0)
