"""The request line, strictly: canonical integers in the path and the query, single values once.

Litestar reads ``012``, ``+12``, ``1_2`` and non-ASCII digits in a path as 12 (Python's
``int()``), ``5.0`` and ``1e1`` in a query as integers, ``True``, ``1`` and ``-0`` as booleans
(msgspec's lax conversion), and keeps the last of a query parameter given twice; the service
accepts none of these (see ``service.http.decoding`` for the body). ``strict_request_line`` is
the app-level middleware that checks them on every routed request.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, NamedTuple, get_args
from urllib.parse import unquote_to_bytes

from litestar.connection import ASGIConnection
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType, ScopeType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import ParameterKwarg

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.handlers import BaseRouteHandler
    from litestar.types import ASGIApp, Receive, Scope, Send
    from litestar.typing import FieldDefinition

_PATH_PARAMETER = re.compile(r"\{(?P<name>\w+)(?::[^}]*)?\}")
_CANONICAL_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
"""An integer as JSON and ``str(int)`` write it: no ``+``, no leading zero, fraction or exponent."""
_BOOLEANS = frozenset((b"true", b"false"))
INTEGER_MESSAGE = "Expected an integer in decimal digits: no +, leading zero, fraction or exponent."
BOOLEAN_MESSAGE = "Expected true or false."
_MESSAGES = {int: INTEGER_MESSAGE, bool: BOOLEAN_MESSAGE}


def non_canonical_integer(template: str, path: str, params: Mapping[str, Any]) -> str | None:
    """The integer parameter of ``path`` not written as Python writes it (``str(int)``), if any.

    ``template`` is the route's path with ``{name}`` placeholders; ``params`` the parsed values.
    """
    for pattern, segment in zip(template.split("/"), path.split("/"), strict=False):
        match = _PATH_PARAMETER.fullmatch(pattern)
        if match is None:
            continue
        value = params.get(match["name"])
        if type(value) is int and segment != str(value):
            return match["name"]
    return None


def strict_request_line(app: ASGIApp) -> ASGIApp:
    """App-level middleware: canonical path integers and single query values (the checks below).

    A middleware, not a guard: Litestar 2 copies the route handler for every guard call, on
    every request (litestar#3900 removes the copy in v3 only); what that costs is in
    ``tests/benchmarks/RESULTS-choices.md``.
    """

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            canonical_path_integers(scope)
            single_query_values(scope)
            canonical_query_values(scope)
        await app(scope, receive, send)

    return checked


def canonical_path_integers(scope: Scope) -> None:
    """A path whose integers are not canonical (``/heroes/012``) is an unknown path, 404.

    Only the canonical decimal form names a resource, so that a proxy rule or a cache keyed on
    the path cannot be bypassed by writing the same id another way.
    """
    params = scope.get("path_params")
    template = scope.get("path_template")
    if params and template and non_canonical_integer(template, scope["path"], params):
        raise NotFoundException()


def _query_fields(handler: BaseRouteHandler) -> dict[str, FieldDefinition]:
    """The parameters ``handler`` may read from the query, by name, path ones included."""
    fields = {}
    dependencies = handler.resolve_dependencies()
    for name, field in handler.parsed_fn_signature.parameters.items():
        if name in RESERVED_KWARGS or name in dependencies:
            continue
        kwarg = field.kwarg_definition
        if isinstance(kwarg, ParameterKwarg):
            if kwarg.param_type != ParamType.QUERY:
                continue
            fields[kwarg.name or name] = field
        elif kwarg is None:
            fields[name] = field
    return fields


@functools.lru_cache(maxsize=256)
def scalar_query_names(handler: BaseRouteHandler) -> frozenset[str]:
    """The parameters ``handler`` declares as single values (not lists), path ones included."""
    fields = _query_fields(handler)
    return frozenset(name for name, field in fields.items() if not field.is_non_string_sequence)


class TypedQuery(NamedTuple):
    """A handler's integer and boolean query parameters, and the query strings surely right."""

    kinds: dict[bytes, type]
    """Each one's type (``int`` or ``bool``), by name."""
    plain: re.Pattern[bytes]
    """Matches a whole query string in which each of them is written canonically and without
    escapes, and no other name holds an escape: most requests, checked in one call."""


@functools.lru_cache(maxsize=256)
def typed_query(handler: BaseRouteHandler) -> TypedQuery | None:
    """The integer and boolean (maybe None) query parameters of ``handler``; None if it has none."""
    kinds = {}
    for name, field in _query_fields(handler).items():
        if field.is_non_string_sequence:
            continue
        types = set(get_args(field.annotation) or (field.annotation,)) - {type(None)}
        if len(types) == 1 and (kind := types.pop()) in _MESSAGES:
            kinds[name.encode()] = kind
    if not kinds:
        return None

    def names(of: type | None = None) -> bytes:
        return b"|".join(re.escape(name) for name, kind in kinds.items() if of in (None, kind))

    pairs = [b"(?!(?:" + names() + rb")(?:=|&|\Z))[^&%+=]*(?:=[^&]*)?"]
    if ints := names(int):
        pairs.append(b"(?:" + ints + b")=(?:" + _CANONICAL_INTEGER.pattern + b")")
    if booleans := names(bool):
        pairs.append(b"(?:" + booleans + b")=(?:true|false)")
    pair = b"(?:" + b"|".join(pairs) + b")"
    return TypedQuery(kinds, re.compile(pair + b"(?:&" + pair + b")*"))


def canonical_query_values(scope: Scope) -> None:
    """An integer or boolean query parameter not written canonically is 400, naming it.

    Integers as path ids are (``0``, or an optional ``-`` and digits from a non-zero one: not
    ``05``, ``+5``, ``5.0`` or ``1e1``), booleans ``true`` or ``false``, as JSON writes them and
    as the OpenAPI document's ``integer`` and ``boolean`` mean. Only the query string's bytes are
    read here; Litestar converts them as before.
    """
    query_string = scope.get("query_string")
    if not query_string:
        return
    typed = typed_query(scope["route_handler"])
    if typed is None or typed.plain.fullmatch(query_string):
        return
    wrong = set()
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        if b"%" in name or b"+" in name:
            name = _unquote(name)
        kind = typed.kinds.get(name)
        if kind is None:
            continue
        if b"%" in value or b"+" in value:
            value = _unquote(value)
        if not (_CANONICAL_INTEGER.fullmatch(value) if kind is int else value in _BOOLEANS):
            wrong.add(name.decode())
    wrong -= scope.get("path_params", {}).keys()
    if wrong:
        raise ValidationException(
            detail=f"Validation failed for {scope.get('method')} {scope['path']}",
            extra=[
                {"message": _MESSAGES[typed.kinds[name.encode()]], "key": name, "source": "query"}
                for name in sorted(wrong)
            ],
        )


def _unquote(text: bytes) -> bytes:
    """A name or value of the query string as the app reads it: ``+`` and ``%XX`` decoded."""
    return unquote_to_bytes(text.replace(b"+", b" "))


def single_query_values(scope: Scope) -> None:
    """A query parameter declared as one value but given more than once is 400.

    ``?offset=1&offset=2`` has no one meaning (Litestar would keep the last); it names the
    parameter, like any other invalid query value.
    """
    query_string = scope.get("query_string")
    if not query_string:
        return
    given = [pair.partition(b"=")[0] for pair in query_string.split(b"&") if pair]
    if len(set(given)) == len(given) and not any(b"%" in n or b"+" in n for n in given):
        return  # no name twice, nor written two ways
    # Parsed once: the connection keeps the parsed query in the scope for the handler's.
    query = ASGIConnection[Any, Any, Any, Any](scope).query_params
    names = scalar_query_names(scope["route_handler"]) - scope.get("path_params", {}).keys()
    repeated = [name for name in sorted(names) if len(query.getall(name, [])) > 1]
    if repeated:
        raise ValidationException(
            detail=f"Validation failed for {scope.get('method')} {scope['path']}",
            extra=[
                {"message": "Given more than once; send it once.", "key": name, "source": "query"}
                for name in repeated
            ],
        )
