"""Bad input and failures, mapped to HTTP in one table and answered in the one ``Error`` shape.

This table knows the framework's and the database layer's exceptions only. A resource hands its
own rows (its domain errors) to ``create_app`` in its :class:`~service.http.resources.Resource`,
built with :func:`answer` and :func:`invalid_input` below.

Every error is answered as the tutorial's ``{"detail": ...}`` plus ``status_code`` and ``extra``,
byte for byte the same whatever the request, unless its ``Accept`` asks for RFC 9457 problem
details (``application/problem+json``): then the same error as a :class:`Problem`. Either way
the answer carries ``Vary: Accept``. The choice is made on the error path only.

One file because it is one table: the shapes, the table's rows, the handler that answers them
and the OpenAPI descriptions of the same statuses change together, and a status added to one
and not the others is the drift the tests of the document catch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap, Scope
from msgspec import Meta, Struct
from sqlalchemy.exc import SQLAlchemyError

from service.database.faults import (
    DatabaseUnavailable,
    InvalidValue,
    WriteRefused,
    database_error,
)
from service.http import idempotency
from service.http.cursors import BadQuery
from service.http.decoding import NO_NUL
from service.http.etags import MalformedEntityTags
from service.http.idempotency import KeyInProgress, KeyReused, MalformedIdempotencyKey
from service.http.security import WRITE_METHODS

logger = logging.getLogger("service")

RETRY_AFTER_SECONDS = 1
REQUEST_ID_STATE = "request_id"
"""Where ``service.ops.requests`` keeps the request's id in the scope's state."""
TRACE_ID_KEY = "hero.trace_id"
"""Where ``service.ops.tracing`` leaves the request's trace id in the ASGI scope, when tracing."""
_NUL_RULE = f"matching regex '{NO_NUL}'"


class ErrorDetail(Struct, omit_defaults=True):
    """One thing wrong with the request."""

    message: Annotated[str, Meta(examples=["Expected `int`, got `str`"])]
    key: Annotated[str | None, Meta(examples=["age"])] = None
    source: Annotated[str | None, Meta(examples=["body"])] = None


class Error(Struct, omit_defaults=True):
    """The body of every error response: the tutorial's ``detail``, its status and what was wrong.

    ``extra`` is there for invalid input only: one entry per wrong field.
    """

    status_code: Annotated[int, Meta(examples=[400])]
    detail: Annotated[str, Meta(examples=["Validation failed for POST /heroes"])]
    extra: list[ErrorDetail] | None = None


class Problem(Struct, omit_defaults=True):
    """An error as RFC 9457 problem details, for a client whose ``Accept`` asks for them.

    ``type`` is always ``about:blank``: the status says what happened, ``title`` is its name,
    ``detail`` and ``extra`` are the ``Error``'s.
    """

    type: Annotated[str, Meta(examples=["about:blank"])]
    title: Annotated[str, Meta(examples=["Bad Request"])]
    status: Annotated[int, Meta(examples=[400])]
    detail: Annotated[str, Meta(examples=["Validation failed for POST /heroes"])]
    extra: list[ErrorDetail] | None = None


JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
VARY = {"Vary": "Accept"}
"""On every error answer: its media type depends on the request's ``Accept``."""


def wants_problem(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request's ``Accept`` asks for ``application/problem+json``.

    It does when it names that type with a quality above 0, at least as high as that of
    ``application/json`` if it names that too. Wildcards (``*/*``, ``application/*``) cover both
    and choose neither: the default stays.
    """
    accept = b",".join(value for name, value in headers if name == b"accept")
    if b"problem" not in accept.lower():  # the common case, decided without parsing
        return False
    qualities = {JSON: 0.0, PROBLEM_JSON: 0.0}
    for media_range in accept.decode("latin-1").lower().split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if media_type not in qualities:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[media_type] = max(qualities[media_type], quality)
    return qualities[PROBLEM_JSON] > 0 and qualities[PROBLEM_JSON] >= qualities[JSON]


RENAMED_BY_RFC_9110 = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}
"""The reason phrases RFC 9110 renamed, which Python's ``HTTPStatus`` has only from 3.13: a
problem's ``title`` is the same on every Python."""


def error_body(
    status_code: int, detail: str, extra: list[ErrorDetail] | None = None, *, problem: bool
) -> tuple[bytes, str]:
    """An error's body and media type: an ``Error``, or a ``Problem`` if ``problem``."""
    if problem:
        title = RENAMED_BY_RFC_9110.get(status_code) or HTTPStatus(status_code).phrase
        as_problem = Problem("about:blank", title, status_code, detail, extra)
        return msgspec.json.encode(as_problem), PROBLEM_JSON
    return msgspec.json.encode(Error(status_code, detail, extra)), JSON


ERROR_DESCRIPTIONS = {
    400: (
        "The request is invalid: for invalid input, `extra` names each wrong field and says what "
        "is wrong; or its Host header or request line is malformed, or names a host this "
        "service does not serve."
    ),
    401: (
        "Writes need `Authorization: Bearer <API key>` when the service runs with an API_KEY; "
        "this request had none, or not one of its keys."
    ),
    404: "Nothing is at this URL.",
    408: "The request's head or body did not arrive in time; the connection is closed.",
    409: (
        "The database refused the write (a constraint failed at commit); nothing was stored. "
        "Or a request with the same Idempotency-Key is still in progress: retry after "
        "`Retry-After` seconds."
    ),
    412: "The resource is no longer at the ETag sent in If-Match; GET it again and retry.",
    413: "The request body is larger than the service accepts (MAX_BODY_SIZE).",
    414: "The request target (the URL) is too long.",
    415: "The request body is not JSON: send it with `Content-Type: application/json`.",
    422: "The Idempotency-Key was used with another request body: send a new key.",
    428: "The operation needs a precondition header (If-Match) and the request sent none.",
    429: (
        "Too many requests from this client in the rate limit's window (RATE_LIMIT_PER_MINUTE): "
        "retry after `Retry-After` seconds."
    ),
    431: "The request's header fields are too large; the connection is closed.",
    503: (
        "The database is busy or unavailable, or the server is at its connection limit: retry "
        "after `Retry-After` seconds. For a write, `detail` says whether it may have been "
        "stored, and so whether a retry is safe."
    ),
}


def documented_errors(
    *status_codes: int, descriptions: Mapping[int, str] | None = None
) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors an operation can answer, all of the one ``Error`` shape.

    ``descriptions`` are a resource's own words for some codes (``404: "No hero has this id."``).
    """
    said = {**ERROR_DESCRIPTIONS, **(descriptions or {})}
    return {
        code: ResponseSpec(Error, description=said[code], generate_examples=False)
        for code in status_codes
    }


def error_response(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str,
    extra: list[ErrorDetail] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Any]:
    """The one shape of every error response, as the request's ``Accept`` asks for it."""
    headers = {**(headers or {}), **VARY}
    if wants_problem(request.scope["headers"]):
        body, media_type = error_body(status_code, detail, extra, problem=True)
        return Response(body, status_code=status_code, headers=headers, media_type=media_type)
    return Response(Error(status_code, detail, extra), status_code=status_code, headers=headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    extra = None
    if isinstance(exc.extra, list) and exc.extra:
        extra = [_error_detail(item) for item in exc.extra]
    return error_response(request, exc.status_code, exc.detail, extra, exc.headers)


def _error_detail(item: object) -> ErrorDetail:
    if not isinstance(item, dict):
        return ErrorDetail(str(item))
    message = str(item.get("message", "")).replace(_NUL_RULE, "without NUL characters")
    return ErrorDetail(message, item.get("key"), item.get("source"))


ExceptionHandler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def answer(status_code: int, detail: str) -> ExceptionHandler:
    """A handler answering every exception of its row with ``status_code`` and ``detail``."""

    def handle(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
        return error_response(request, status_code, detail)

    return handle


def invalid_input(
    source: str, describe: Callable[[Any], tuple[str, str | None]]
) -> ExceptionHandler:
    """A 400 handler for invalid input found in ``source`` (``query``, ``header``, ...).

    ``describe`` turns the exception into what is wrong and the name of the field at fault.
    """

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        message, key = describe(exc)
        detail = f"Validation failed for {request.method} {request.scope['path']}"
        return error_response(request, 400, detail, [ErrorDetail(message, key, source)])

    return handle


def request_ids(scope: Scope) -> str:
    """Which request a log line is about: ``request_id=...``, and ``trace_id=...`` if traced."""
    ids = f"request_id={scope.get('state', {}).get(REQUEST_ID_STATE, '-')}"
    trace_id = scope.get(TRACE_ID_KEY)
    return f"{ids} trace_id={trace_id}" if trace_id else ids


# The database errors are logged by their message alone: WriteRefused and DatabaseUnavailable
# name the driver's error and its first line, never the statement or its parameters.
def _conflict(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.warning(
        "%s %s: write refused by the database: %s [%s]",
        request.method,
        request.scope["path"],
        exc,
        request_ids(request.scope),
    )
    return error_response(request, 409, "The database refused the write; nothing was stored.")


def _database_unavailable(
    request: Request[Any, Any, Any], exc: DatabaseUnavailable
) -> Response[Any]:
    logger.warning(
        "%s %s: database unavailable%s: %s [%s]",
        request.method,
        request.url.path,
        ", the write in doubt" if exc.in_doubt and request.method in WRITE_METHODS else "",
        exc,
        request_ids(request.scope),
    )
    return error_response(
        request,
        503,
        retry_advice(request.method, exc, keyed=idempotency.keyed(request.scope)),
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def retry_advice(method: str, exc: DatabaseUnavailable, *, keyed: bool) -> str:
    """What a 503 says: for a write, whether it may have been stored and how to retry it.

    ``keyed``: the write came with an Idempotency-Key its operation honours, so that a retry
    with the same key is safe either way.
    """
    if method not in WRITE_METHODS:
        return "The database is busy or unavailable; retry shortly."
    if keyed:
        return (
            "The database is busy or unavailable. Retrying with the same Idempotency-Key is "
            "safe: the write is done at most once."
        )
    if not exc.in_doubt:
        return "The database is busy or unavailable; nothing was stored, retrying is safe."
    return (
        "The connection to the database was lost during the write, which may have been "
        "stored: check before retrying. A create sent with an Idempotency-Key can be retried "
        "safely."
    )


def _invalid_value(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The validation should have refused the value: logged as the gap it is.
    logger.error(
        "%s %s: a value reached the database, which refused it: %s [%s]",
        request.method,
        request.scope["path"],
        exc,
        request_ids(request.scope),
    )
    return error_response(
        request,
        400,
        "A value of the request is out of what the database can hold; nothing was stored.",
    )


def _key_reused(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    detail = f"Validation failed for {request.method} {request.scope['path']}"
    said = "This key was used with another request body: a new request needs a new key"
    return error_response(request, 422, detail, [ErrorDetail(said, idempotency.HEADER, "header")])


def _key_in_progress(request: Request[Any, Any, Any], _exc: Exception) -> Response[Any]:
    said = "The request first sent with this key has not been answered yet"
    return error_response(
        request,
        409,
        "A request with this Idempotency-Key is still in progress; retry shortly.",
        [ErrorDetail(said, idempotency.HEADER, "header")],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _sqlalchemy_error(request: Request[Any, Any, Any], exc: SQLAlchemyError) -> Response[Any]:
    # Raised in a handler that uses the plugin's db_session: answered as the statements' are.
    translated = database_error(exc)
    if isinstance(translated, WriteRefused):
        return _conflict(request, translated)
    if isinstance(translated, DatabaseUnavailable):
        return _database_unavailable(request, translated)
    if isinstance(translated, InvalidValue):
        return _invalid_value(request, translated)
    return _internal_error(request, exc)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.error(
        "%s %s: unhandled error [%s]",
        request.method,
        request.scope["path"],
        request_ids(request.scope),
        exc_info=exc,
    )
    return error_response(request, 500, "Internal Server Error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _http_error,
    # Locked or busy SQLite, an unreachable or restarting PostgreSQL, a statement timeout, an
    # exhausted pool (service.database.faults sorts the drivers' errors into these three).
    DatabaseUnavailable: _database_unavailable,
    WriteRefused: _conflict,
    InvalidValue: _invalid_value,
    # A list's query, and the conditions of a request (service.http.cursors, .etags).
    BadQuery: invalid_input("query", lambda exc: (exc.message, exc.key)),
    MalformedEntityTags: invalid_input("header", lambda exc: (str(exc), exc.header)),
    # A write sent with an Idempotency-Key (service.http.idempotency).
    MalformedIdempotencyKey: invalid_input("header", lambda exc: (str(exc), exc.header)),
    KeyReused: _key_reused,
    KeyInProgress: _key_in_progress,
    SQLAlchemyError: _sqlalchemy_error,
    Exception: _internal_error,
}
"""Every exception the service answers but the resources' own, and how."""
