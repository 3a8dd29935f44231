"""Strict decoding of what a request sends: its JSON body (its path and query: ``request_line``).

Litestar reads input leniently: it parses a body as JSON whatever its Content-Type, converts
``"42"`` to an int, lets the last of two equal keys win, reads ``012``, ``+12``, ``1_2`` and
non-ASCII digits in a path as 12 (Python's ``int()``), and keeps the last of a query parameter
given twice. The service accepts none of that; each rule below answers 4xx in the Error shape.

How each rule is switched on, so that no later setting can switch it off unseen:

- The body: ``StrictRequest``, the app's documented ``request_class``, decodes in ``json()``,
  which Litestar's data extraction calls for every JSON ``data`` parameter (and refuses an empty
  body in ``body()``, as Litestar skips ``json()`` then). A ``before_request`` hook, the earlier
  way, is silently replaced by any hook a controller or handler declares; a request class only by
  another request class, which no one sets for an unrelated reason.
- Path integers and repeated query parameters: an app-level middleware,
  ``request_line.strict_request_line``. Litestar stacks the middleware of every layer (app,
  router, controller, handler); none replaces another. It runs after routing, so an unknown path
  is still 404 and a wrong method 405.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar._multipart import parse_content_header  # what Request.content_type parses with
from litestar.exceptions import (
    ClientException,
    HTTPException,
    ValidationException,
)
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import Empty

if TYPE_CHECKING:
    from collections.abc import Mapping


_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$", re.S)
_MISSING_FIELD = re.compile(r"missing required field `(?P<key>[^`]+)`")
EMPTY_BODY = "The request body is empty; expected a JSON object."
NO_NUL = r"^[^\x00]*$"
"""What strings a resource stores may hold: any character but NUL, which PostgreSQL refuses."""
MAX_NESTING = 32
"""Deepest nesting of arrays and objects a body may have; a resource's bodies have one level.

msgspec and the json module recurse into nested values, and a few kilobytes of ``[[[...]]]``
reach Python's recursion limit; the limit is checked before either runs, the same at any depth
of the call stack."""
TOO_DEEP = f"The request body nests arrays or objects more than {MAX_NESTING} levels deep."
_JSON_TOKEN = re.compile(rb'\\.|["\[\]{}]', re.S)
"""What the nesting check reads: an escape (so that ``\\"`` ends no string), quotes, brackets."""
_BACKSLASH = ord("\\")


class InvalidBody(ValueError):
    """A body that is not a strict JSON value of the expected type: what is wrong, and where."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


class StrictRequest(Request[Any, Any, Any]):
    """A request whose JSON body is decoded straight into the handler's ``data`` type, strictly.

    Its ``Content-Length`` and ``Content-Type`` are read from the scope's raw headers, the first
    of each as Litestar reads them: Litestar builds the whole header map for them, on every
    write, which costs about what decoding the body does (``tests/benchmarks/RESULTS-choices.md``).
    """

    __slots__ = ()

    def _first_header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` header as a number; 400 when it is not one."""
        if self._content_length is Empty:
            header = self._first_header(b"content-length")
            if header is not None and not (header.isascii() and header.isdigit()):
                # RFC 9110's 1*DIGIT, not what int() also reads (+5, " 5", 5_0, other digits).
                raise ClientException(f"Invalid content-length: {header!r}")
            self._content_length = int(header) if header is not None else None
        return self._content_length

    @property
    def content_type(self) -> tuple[str, dict[str, str]]:
        """The ``Content-Type`` header's media type (lower-cased) and its parameters."""
        if self._content_type is Empty:
            state = self._connection_state
            if state.content_type is Empty:
                state.content_type = parse_content_header(self._first_header(b"content-type") or "")
            self._content_type = state.content_type
        return self._content_type

    async def body(self) -> bytes:
        """The raw body; 400 when it is empty and the handler requires one.

        Litestar skips ``json()`` for an empty body, and would then name a missing ``data``.
        """
        body = await super().body()
        data_field = self.route_handler.parsed_data_field
        required = data_field is not None and not (data_field.is_optional or data_field.has_default)
        if required and not body.strip():
            raise self._invalid(InvalidBody(EMPTY_BODY))
        return body

    async def json(self) -> Any:
        """The body as the handler's ``data`` type: 415 unless JSON, 400 unless strictly valid."""
        data_field = self.route_handler.parsed_data_field
        if data_field is None:
            return await super().json()
        media_type, options = self.content_type
        if not is_json_media_type(media_type, options):
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail="The request body must be JSON: send Content-Type: application/json.",
            )
        try:
            return decode_strictly(await self.body(), data_field.annotation)
        except InvalidBody as exc:
            raise self._invalid(exc) from None

    def _invalid(self, exc: InvalidBody) -> ValidationException:
        return ValidationException(
            detail=f"Validation failed for {self.method} {self.scope['path']}",
            extra=[{"message": exc.message, "key": exc.key, "source": "body"}],
        )


def is_json_media_type(media_type: str, options: Mapping[str, str]) -> bool:
    """Whether a Content-Type (lower-cased, parameters apart) announces JSON in UTF-8."""
    json_type = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    return json_type and options.get("charset", "utf-8").lower() in {"utf-8", "utf8"}


@functools.cache
def _decoder(body_type: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(body_type)


def decode_strictly(body: bytes, body_type: Any) -> Any:
    """``body`` as a ``body_type``, decoded in msgspec's strict mode, or :class:`InvalidBody`.

    The key of an ``InvalidBody`` names the field at fault; it is None when no one field is:
    an empty body, bytes that are not UTF-8 JSON, a JSON value that is not an object.
    """
    if not body.strip():
        raise InvalidBody(EMPTY_BODY)
    if nested_too_deep(body):
        raise InvalidBody(TOO_DEEP)
    try:
        try:
            data = _decoder(body_type).decode(body)
        except msgspec.ValidationError:
            data = _with_whole_numbers_as_ints(body, body_type)
    except RecursionError:
        raise InvalidBody(TOO_DEEP) from None
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        message, key = (match["message"], match["key"]) if match else (str(exc), None)
        if key is None and (missing := _MISSING_FIELD.search(message)):
            key = missing["key"]
        raise InvalidBody(message, key or None) from None
    except msgspec.DecodeError as exc:
        raise InvalidBody(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidBody("The request body is not valid JSON: it is not UTF-8.") from None
    if (key := duplicate_key(body)) is not None:
        raise InvalidBody("This key appears more than once in an object; send it once.", key)
    return data


def nested_too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest more than ``MAX_NESTING`` deep in ``body``.

    Brackets inside strings do not count. Cheap for the bodies a resource takes: the bytes are
    only scanned when they hold more opening brackets than ``MAX_NESTING`` in all.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_NESTING:
        return False
    depth = 0
    in_string = False
    for token in _JSON_TOKEN.finditer(body):
        text = token[0]
        if text == b'"':
            in_string = not in_string
        elif in_string or text[0] == _BACKSLASH:
            continue
        elif text in b"[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        else:
            depth -= 1
    return False


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


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


def duplicate_key(body: bytes) -> str | None:
    """The first key that appears twice in one object of the JSON ``body``, at any depth.

    msgspec keeps the last of two equal keys, while another parser in front of the service may
    keep the first: such a body means two things, so it is refused. ``body`` is JSON msgspec
    has accepted; numbers are left as text, so no number is too long for this second pass.
    """
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates, parse_int=str, parse_float=str)
    except _DuplicateKey as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None
    return None
