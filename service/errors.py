"""Bad input and failures, mapped to HTTP in one table and answered in the one ``Error`` shape."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from litestar.utils.scope.state import ScopeState

from service.heroes.etags import MalformedEntityTags
from service.heroes.queries import HeroChanged, HeroNotFound
from service.schemas import NO_NUL, Error, ErrorDetail
from service.sql import DatabaseUnavailable, WriteRefused

logger = logging.getLogger("service")

RETRY_AFTER_SECONDS = 1
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$", re.S)
_MISSING_FIELD = re.compile(r"missing required field `(?P<key>[^`]+)`")
_NUL_RULE = f"matching regex '{NO_NUL}'"


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: `extra` names each wrong field and says what is wrong.",
    401: "Writes need `Authorization: Bearer <API key>`: the service runs with an API_KEY.",
    404: "No hero has this id.",
    409: "The database refused the write (a constraint failed at commit); nothing was stored.",
    412: "The hero is no longer at the ETag sent in If-Match; GET it again and retry.",
    413: "The request body is larger than the service accepts.",
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


def _conflict(request: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.warning(
        "%s %s: write refused by the database: %s", request.method, request.url.path, exc
    )
    return error_response(409, "The database refused the write; nothing was stored.")


def _database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "The database is busy or unavailable; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _internal_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Error]:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "Internal Server Error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _http_error,
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


@functools.cache
def _decoder(body_type: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(body_type)


async def decode_body_strictly(request: Request[Any, Any, Any]) -> None:
    """Decode a JSON body straight into the handler's Struct in msgspec's strict mode.

    Litestar converts bodies leniently (``"42"`` would pass as an int); this hook runs first and
    leaves the decoded Struct where Litestar looks for the parsed body, so only strict JSON of
    the right types gets through, and each error names the field at fault.
    """
    data_field = request.route_handler.parsed_data_field
    if data_field is None:
        return
    body = await request.body()
    if not body.strip():
        raise _invalid_body(request, "The request body is empty; expected a JSON object.")
    try:
        try:
            data = _decoder(data_field.annotation).decode(body)
        except msgspec.ValidationError:
            data = _with_whole_numbers_as_ints(body, data_field.annotation)
        ScopeState.from_scope(request.scope).json = data
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        message, key = (match["message"], match["key"]) if match else (str(exc), None)
        if key is None and (missing := _MISSING_FIELD.search(message)):
            key = missing["key"]
        raise _invalid_body(request, message, key or None) from None
    except msgspec.DecodeError as exc:
        raise ClientException(f"The request body is not valid JSON: {exc}") from None


def _with_whole_numbers_as_ints(body: bytes, body_type: Any) -> Any:
    """Decode ``body`` again, reading a whole number written with a fraction (``30.0``) as int.

    JSON has one number type, and JSON Schema counts ``30.0`` as an integer, so the OpenAPI
    document promises it is a valid age; ``30.5``, ``"30"`` and ``true`` still are not. Only a
    body that strict decoding refused comes here. Raises ``msgspec.ValidationError``.
    """
    fields = msgspec.json.decode(body)
    if isinstance(fields, dict):
        fields = {
            key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in fields.items()
        }
    return msgspec.convert(fields, body_type, strict=True)


def _invalid_body(
    request: Request[Any, Any, Any], message: str, key: str | None = None
) -> ValidationException:
    return ValidationException(
        detail=f"Validation failed for {request.method} {request.url.path}",
        extra=[{"message": message, "key": key, "source": "body"}],
    )
