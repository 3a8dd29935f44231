"""The OpenAPI document: what every resource documents alike, and the changes made at startup.

The headers and parameters of conditional requests and cursor pages, in each resource's words
(``etag_header("hero")``), for its routes' decorators. Litestar has no parameters for response
links nor for a security scheme that only some operations require, documents no header read
from the raw headers, and derives a response header's schema from an example string, so
``complete_document`` adds and corrects them in the generated document at startup, before it
is first served: what each resource adds of its own (its ``Resource.complete_document``, made of
the functions below), then what every operation answers alike (``document_every_answer``) and
the API-key scheme. Operations are found by their ``operation_id``, or by their method, request
body or path prefix for what applies to many, never by one path string.

The answers every operation documents are the same in every configuration, so that the
committed ``openapi.json`` that SDKs are generated from names them all: 401 on every write
(required only with ``API_KEY``), 429 wherever the rate limit applies (with
``RATE_LIMIT_PER_MINUTE``), each answered in the ``Error`` shape or, when ``Accept`` asks for
it, as a ``Problem``.

One file because the helpers the resources' decorators use and the startup changes write the
same parts of the document (a header's schema, an answer's statuses): kept together, what is
declared and what is added after are read side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus

from litestar import Litestar
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType

from service.database.tables import KEY_MAX_LENGTH
from service.http import idempotency
from service.http.errors import ERROR_DESCRIPTIONS, JSON, PROBLEM_JSON
from service.http.etags import ENTITY_TAGS, IF_MATCH, IF_NONE_MATCH
from service.http.security import CHALLENGE, WRITE_METHODS

API_KEY_SCHEME = "apiKey"
ERROR = Reference("#/components/schemas/Error")
PROBLEM = Reference("#/components/schemas/Problem")

EVERY_OPERATION = (400, 408, 414, 431, 503)
"""What any request may be answered: a bad Host or request line (400), a head too slow (408),
too long (414) or too large (431), the database or the connection limit (503)."""
WITH_A_BODY = (413, 415)
"""What a request with a body may be answered besides: too large, or not JSON."""
RATE_LIMITED = 429
WRITES = (401, 409)
"""What a write may be answered besides: no API key, or refused by the database at commit."""
WRITE_REFUSED = (
    "The database refused the write (a constraint failed at commit); nothing was stored."
)


def seconds_header(description: str) -> OpenAPIHeader:
    """A ``Retry-After`` of delay-seconds, sent with every answer it is documented on."""
    return OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=0), description=description, required=True
    )


ANSWER_HEADERS: dict[int, dict[str, OpenAPIHeader]] = {
    401: {
        "WWW-Authenticate": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING, examples=[CHALLENGE["WWW-Authenticate"]]),
            description="The scheme to authenticate with: Bearer.",
            required=True,
        )
    },
    429: {"Retry-After": seconds_header("Seconds until the client's window ends.")},
    503: {"Retry-After": seconds_header("Seconds to wait before retrying.")},
}
"""The headers an error answer always carries, by status."""

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    title="Problem",
    description=(
        "An error as RFC 9457 problem details, answered instead of `Error` to a request whose "
        "`Accept` asks for `application/problem+json`: `title` names the status, `detail` and "
        "`extra` are the `Error`'s."
    ),
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, examples=["about:blank"]),
        "title": Schema(type=OpenAPIType.STRING, examples=["Bad Request"]),
        "status": Schema(type=OpenAPIType.INTEGER, examples=[400]),
        "detail": Schema(type=OpenAPIType.STRING, examples=["Validation failed for POST /heroes"]),
        "extra": Schema(
            one_of=[
                Schema(type=OpenAPIType.ARRAY, items=Reference("#/components/schemas/ErrorDetail")),
                Schema(type=OpenAPIType.NULL),
            ]
        ),
    },
)
"""``service.http.errors.Problem``, which no route returns for Litestar to describe."""


def complete_document(
    app: Litestar,
    *,
    additions: Iterable[Callable[[OpenAPI], None]],
    api_key: bool,
    unlimited: Sequence[str] = (),
) -> None:
    """Startup hook: the resources' ``additions``, every operation's answers, the API-key scheme.

    ``unlimited``: the path prefixes the rate limit leaves alone (no 429 there).
    """
    document = app.openapi_schema
    for add in additions:
        add(document)
    document_every_answer(document, unlimited)
    document_api_key(document, required=api_key)


def operations(document: OpenAPI) -> Iterator[tuple[str, Operation]]:
    """Every operation of the document, with its HTTP method in capitals."""
    for _, method, found in operations_at(document):
        yield method, found


def operations_at(document: OpenAPI) -> Iterator[tuple[str, str, Operation]]:
    """Every operation of the document, with its path and its HTTP method in capitals."""
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            if (operation := getattr(item, method)) is not None:
                yield path, method.upper(), operation


def answered(operation: Operation, method: str, path: str, unlimited: Sequence[str]) -> list[int]:
    """The error statuses ``operation`` may answer whatever the configuration, beyond its own."""
    statuses = list(EVERY_OPERATION)
    if operation.request_body is not None:
        statuses += WITH_A_BODY
    if method in WRITE_METHODS:
        statuses += WRITES
    if not path.startswith(tuple(unlimited)):
        statuses.append(RATE_LIMITED)
    return statuses


def document_every_answer(document: OpenAPI, unlimited: Sequence[str]) -> None:
    """Add what every operation may answer, and give every error its headers and media types.

    An operation keeps its own words for an answer it documents already (its resource's 404).
    Every error is documented as ``application/json`` (``Error``) and, for a client that asks for
    it, ``application/problem+json`` (``Problem``).
    """
    components = document.components or Components()
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    document.components = components
    for path, method, found in operations_at(document):
        responses = dict(found.responses or {})
        for code in answered(found, method, path, unlimited):
            said = WRITE_REFUSED if code == HTTPStatus.CONFLICT else ERROR_DESCRIPTIONS[code]
            responses.setdefault(str(code), OpenAPIResponse(description=said))
        for status, answer in responses.items():
            if not (status.startswith(("4", "5")) and isinstance(answer, OpenAPIResponse)):
                continue
            answer.content = {
                JSON: OpenAPIMediaType(schema=ERROR),
                PROBLEM_JSON: OpenAPIMediaType(schema=PROBLEM),
            }
            headers = ANSWER_HEADERS.get(int(status))
            if headers:
                answer.headers = {**(answer.headers or {}), **headers}
        found.responses = dict(sorted(responses.items()))


def operation(document: OpenAPI, operation_id: str) -> Operation:
    """The operation with ``operation_id``; KeyError if the document has none."""
    for _, found in operations(document):
        if found.operation_id == operation_id:
            return found
    raise KeyError(f"no operation {operation_id!r} in the document")


def response(document: OpenAPI, operation_id: str, status: str) -> OpenAPIResponse:
    """The documented ``status`` answer of the operation ``operation_id``."""
    found = (operation(document, operation_id).responses or {}).get(status)
    if not isinstance(found, OpenAPIResponse):
        raise TypeError(f"{operation_id} has no documented {status} response")
    return found


def document_api_key(document: OpenAPI, *, required: bool) -> None:
    """Declare the bearer scheme; if ``required`` (an API_KEY is set), require it on writes.

    The scheme is declared either way, so that the one committed document gives SDKs an
    authenticated client; every write documents its 401 (``document_every_answer``).
    """
    components = document.components or Components()
    components.security_schemes = {
        **(components.security_schemes or {}),
        API_KEY_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description=(
                "The service's API_KEY, needed for POST, PATCH and DELETE when the service runs "
                "with one (operations that need it then say so in `security`)."
            ),
        ),
    }
    document.components = components
    if not required:
        return
    for method, write in operations(document):
        if method in WRITE_METHODS:
            write.security = [{API_KEY_SCHEME: []}]


# What the routes' decorators declare --------------------------------------------------------


def etag_header(one: str) -> ResponseHeader:
    """The ``ETag`` an answer with one ``one`` (``hero``) carries: its version."""
    return ResponseHeader(
        name="ETag",
        value='"1"',  # an example, from which the schema is derived: never sent
        description=(
            f"The {one}'s version; send it in If-Match to update or delete only that version."
        ),
        required=True,
        documentation_only=True,
    )


def not_modified(one: str) -> dict[int, ResponseSpec]:
    """The 304 answer of a read with ``If-None-Match``, for one ``one``."""
    said = f"The {one} is still at the ETag in If-None-Match."
    return {304: ResponseSpec(None, description=said)}


def link_header(path: str, one: str) -> ResponseHeader:
    """A list's ``Link`` to its next page, for the list at ``path`` of ``one`` (``hero``) each."""
    return ResponseHeader(
        name="Link",
        value=f'<{path}?limit=20&cursor=WzEsImlkIiwyMCwyMF0>; rel="next"',  # never sent
        description=(
            'On every full page: `<URL>; rel="next"` (RFC 8288), the URL of the next page, '
            "relative to the request's, with the same filters, order_by and limit and a "
            f"`cursor`. Follow it until it is absent to list every {one} exactly once."
        ),
        documentation_only=True,
    )


def replayed_header() -> ResponseHeader:
    """A keyed create's ``Idempotent-Replayed``: the first answer given again."""
    return ResponseHeader(
        name=idempotency.REPLAYED_HEADER,
        value="true",  # an example, from which the schema is derived: never sent as such
        description=(
            "`true` when the answer is the first one given again, for a retry with the same "
            "Idempotency-Key: nothing was created this time."
        ),
        documentation_only=True,
    )


def idempotency_key(one: str) -> Parameter:
    """A create's ``Idempotency-Key`` request header, for a new ``one`` (``hero``) each time."""
    return Parameter(
        name=idempotency.HEADER,
        param_in="header",
        required=False,
        description=(
            f"A key of your own for this create (a UUID, new for each {one}), so that it can be "
            "retried safely: the same key with the same body answers the first result again and "
            "creates nothing; with another body, 422; while the first is still running, 409. "
            "Kept 24 hours by default (IDEMPOTENCY_KEY_RETENTION_SECONDS). Up to 255 visible "
            "ASCII characters, no spaces; a quoted string (RFC 8941) is the same key. Another "
            "value is 400."
        ),
        schema=Schema(
            type=OpenAPIType.STRING,
            pattern=idempotency.IDEMPOTENCY_KEY,
            max_length=KEY_MAX_LENGTH,
            examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
        ),
    )


def total_count_header(many: str) -> ResponseHeader:
    """A list's ``X-Total-Count``: how many ``many`` (``heroes``) match, over all pages.

    Its schema is made an integer by :func:`count_as_integer`.
    """
    return ResponseHeader(
        name="X-Total-Count",
        value="42",  # an example, never sent
        description=f"With `count=true`: how many {many} match the filters, over all pages.",
        documentation_only=True,
    )


# Headers read raw, and the changes made to the generated document ----------------------------


def condition(name: str, description: str) -> Parameter:
    """An optional conditional request header of the entity-tag syntax.

    Its syntax is stated in the document only: ``service.http.etags`` checks it, so that the
    400 names the header. A header is a string when sent, never null.
    """
    return Parameter(
        name=name,
        param_in="header",
        required=False,
        deprecated=False,
        description=description,
        schema=Schema(type=OpenAPIType.STRING, pattern=ENTITY_TAGS, description=description),
    )


def if_match_header(one: str) -> Parameter:
    """``If-Match`` on a write of one ``one`` (``hero``)."""
    return condition(
        IF_MATCH,
        f"Write only if the {one} is still at one of these ETags (or `*`); otherwise 412. A "
        "value that is not `*` nor a list of entity tags is 400.",
    )


def if_none_match_header(one: str) -> Parameter:
    """``If-None-Match`` on a read of one ``one`` (``hero``)."""
    return condition(
        IF_NONE_MATCH,
        f"Answer 304 without a body if the {one} is still at one of these ETags (or for `*`). "
        "A value that is not `*` nor a list of entity tags is 400.",
    )


def document_headers_read_raw(document: OpenAPI, headers: Mapping[str, Parameter]) -> None:
    """Document the request header each operation (by id) reads from the raw headers.

    A handler that reads a header from the scope (``etags.header_value``) has no parameter in
    its signature to document it: declaring one made Litestar build the request's header map.
    """
    for operation_id, header in headers.items():
        found = operation(document, operation_id)
        others = [p for p in found.parameters or [] if getattr(p, "name", None) != header.name]
        found.parameters = [*others, header]


def link_created(
    document: OpenAPI, operation_id: str, parameter: str, targets: Iterable[str]
) -> None:
    """Document that the 201 of ``operation_id`` leads to ``targets``, its id as ``parameter``."""
    response(document, operation_id, "201").links = {
        target: Link(
            operation_id=target,
            parameters={parameter: "$response.body#/id"},
            description=f"The id in the answer is the {parameter} of {target}.",
        )
        for target in targets
    }


def count_as_integer(document: OpenAPI, operation_id: str) -> None:
    """The list's ``X-Total-Count`` is an integer (Litestar made it a string, from its example)."""
    total = (response(document, operation_id, "200").headers or {}).get("X-Total-Count")
    if not isinstance(total, OpenAPIHeader):
        raise TypeError(f"{operation_id} documents no X-Total-Count header")
    total.schema = Schema(type=OpenAPIType.INTEGER, minimum=0)


# A resource's operations, documented alike --------------------------------------------------


def location_header(one: str, path: str) -> ResponseHeader:
    """A create's ``Location``: the URL of the new ``one`` (``hero``), below ``path``."""
    return ResponseHeader(
        name="Location",
        value=f"{path}/1",  # an example, from which the schema is derived: never sent
        description=f"The new {one}'s URL.",
        required=True,
        documentation_only=True,
    )


class ResourceDocs:
    """What a resource's create, list, get, update and delete document alike, in its words.

    Made from what one row is called and what many are (``hero``, ``heroes``): the operations
    are ``createHero``, ``listHeroes``, ``getHero``, ``updateHero`` and ``deleteHero``, at
    ``/heroes`` and ``/heroes/{hero_id}``. The attributes go in the routes' decorators;
    :meth:`complete_document` is the resource's addition to the generated document.
    """

    def __init__(self, one: str, many: str) -> None:
        self.path = f"/{many}"
        self.id_parameter = f"{one}_id"
        self.create, self.list, self.get, self.update, self.delete = (
            f"create{one.capitalize()}",
            f"list{many.capitalize()}",
            f"get{one.capitalize()}",
            f"update{one.capitalize()}",
            f"delete{one.capitalize()}",
        )
        self.etag_header = etag_header(one)
        self.not_modified = not_modified(one)
        self.created_headers = [
            location_header(one, self.path),
            self.etag_header,
            replayed_header(),
        ]
        """A create's answer: its ``Location``, ``ETag`` and ``Idempotent-Replayed``."""
        self.page_headers = [link_header(self.path, one), total_count_header(many)]
        """A list's page: its ``Link`` to the next page and ``X-Total-Count``."""
        if_match = if_match_header(one)
        self.headers_read_raw = {
            self.create: idempotency_key(one),
            self.get: if_none_match_header(one),
            self.update: if_match,
            self.delete: if_match,
        }
        """The request header each operation reads from the raw headers (``etags.header_value``,
        ``idempotency.header_value``), which no parameter of its signature documents."""

    def complete_document(self, document: OpenAPI) -> None:
        """The create's links to the new row, the headers read raw, ``X-Total-Count`` an integer."""
        targets = (self.get, self.update, self.delete)
        link_created(document, self.create, self.id_parameter, targets)
        document_headers_read_raw(document, self.headers_read_raw)
        count_as_integer(document, self.list)
