"""Bad input and failures, mapped to HTTP in one table and answered in the one ``Error`` shape."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap, Scope

from service.heroes.cursors import BadQuery
from service.heroes.etags import MalformedEntityTags
from service.heroes.queries import HeroChanged, HeroNotFound
from service.schemas import NO_NUL, Error, ErrorDetail
from service.sql import DatabaseUnavailable, WriteRefused

logger = logging.getLogger("service")

RETRY_AFTER_SECONDS = 1
REQUEST_ID_STATE = "request_id"
"""Where ``service.ops`` keeps the request's id in the scope's state (``request.state``)."""
TRACE_ID_KEY = "hero.trace_id"
"""Where ``service.tracing`` leaves the request's trace id in the ASGI scope, when tracing."""
_NUL_RULE = f"matching regex '{NO_NUL}'"


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: `extra` names each wrong field and says what is wrong.",
    401: "Writes need `Authorization: Bearer <API key>`: the service runs with an API_KEY.",
    404: "No hero has this id.",
    409: "The database refused the write (a constraint failed at commit); nothing was stored.",
    412: "The hero is no longer at the ETag sent in If-Match; GET it again and retry.",
    413: "The request body is larger than the service accepts.",
    415: "The request body is not JSON: send it with `Content-Type: application/json`.",
    429: "Too many requests from this client: retry after `RateLimit-Reset` seconds.",
    503: "The database is busy or unavailable: retry after `Retry-After` seconds.",
}


def documented_errors(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors an operation can answer, all of the one ``Error`` shape."""
    return {
        code: ResponseSpec(Error, description=ERROR_DESCRIPTIONS[code], generate_examples=False)
        for code in status_codes
    }


def error_response(
    status_code: int,
    detail: str,
    extra: list[ErrorDetail] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Error]:
    """The one shape of every error response."""
    return Response(Error(status_code, detail, extra), status_code=status_code, headers=headers)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Error]:
    extra = None
    if isinstance(exc.extra, list) and exc.extra:
        extra = [_error_detail(item) for item in exc.extra]
    return error_response(exc.status_code, exc.detail, extra, exc.headers)


def _error_detail(item: object) -> ErrorDetail:
    if not isinstance(item, dict):
        return ErrorDetail(str(item))
    message = str(item.get("message", "")).replace(_NUL_RULE, "without NUL characters")
    return ErrorDetail(message, item.get("key"), item.get("source"))


def _bad_query(request: Request[Any, Any, Any], exc: BadQuery) -> Response[Error]:
    detail = f"Validation failed for {request.method} {request.url.path}"
    return error_response(400, detail, [ErrorDetail(exc.message, exc.key, "query")])


def _hero_not_found(_: Request[Any, Any, Any], _exc: Exception) -> Response[Error]:
    return error_response(404, "Hero not found")


def _hero_changed(_: Request[Any, Any, Any], _exc: Exception) -> Response[Error]:
    return error_response(412, "The hero has changed since the ETag in If-Match was issued")


def _malformed_entity_tags(
    request: Request[Any, Any, Any], exc: MalformedEntityTags
) -> Response[Error]:
    detail = ErrorDetail(str(exc), exc.header, "header")
    detail_sentence = f"Validation failed for {request.method} {request.url.path}"
    return error_response(400, detail_sentence, [detail])


def request_ids(scope: Scope) -> str:
    """Which request a log line is about: ``request_id=...``, and ``trace_id=...`` if traced."""
    ids = f"request_id={scope.get('state', {}).get(REQUEST_ID_STATE, '-')}"
    trace_id = scope.get(TRACE_ID_KEY)
    return f"{ids} trace_id={trace_id}" if trace_id else ids


# The database errors are logged by their message alone: WriteRefused and DatabaseUnavailable
# name the driver's error and its first line, never the statement or its parameters.
def _conflict(request: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.warning(
        "%s %s: write refused by the database: %s [%s]",
        request.method,
        request.url.path,
        exc,
        request_ids(request.scope),
    )
    return error_response(409, "The database refused the write; nothing was stored.")


def _database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.warning(
        "%s %s: database unavailable: %s [%s]",
        request.method,
        request.url.path,
        exc,
        request_ids(request.scope),
    )
    return error_response(
        503,
        "The database is busy or unavailable; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.error(
        "%s %s: unhandled error [%s]",
        request.method,
        request.url.path,
        request_ids(request.scope),
        exc_info=exc,
    )
    return error_response(500, "Internal Server Error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _http_error,
    BadQuery: _bad_query,
    HeroNotFound: _hero_not_found,
    HeroChanged: _hero_changed,
    MalformedEntityTags: _malformed_entity_tags,
    # Locked or busy SQLite, an unreachable or restarting PostgreSQL, a statement timeout, an
    # exhausted pool (service.sql sorts the drivers' errors into these two).
    DatabaseUnavailable: _database_unavailable,
    WriteRefused: _conflict,
    Exception: _internal_error,
}
"""Every exception the service answers, and how."""
