"""The request line, strictly: canonical integers in the path, each single query value once.

Litestar reads ``012``, ``+12``, ``1_2`` and non-ASCII digits in a path as 12 (Python's
``int()``) and keeps the last of a query parameter given twice; the service accepts neither (see
``service.http.decoding`` for the body). ``strict_request_line`` is the app-level middleware
that checks both on every routed request.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType, ScopeType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import ParameterKwarg

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.handlers import BaseRouteHandler
    from litestar.types import ASGIApp, Receive, Scope, Send

_PATH_PARAMETER = re.compile(r"\{(?P<name>\w+)(?::[^}]*)?\}")


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


@functools.lru_cache(maxsize=256)
def scalar_query_names(handler: BaseRouteHandler) -> frozenset[str]:
    """The parameters ``handler`` declares as single values (not lists), path ones included."""
    names = set()
    dependencies = handler.resolve_dependencies()
    for name, field in handler.parsed_fn_signature.parameters.items():
        if name in RESERVED_KWARGS or name in dependencies:
            continue
        kwarg = field.kwarg_definition
        if isinstance(kwarg, ParameterKwarg):
            if kwarg.param_type != ParamType.QUERY:
                continue
            name = kwarg.name or name  # noqa: PLW2901
        elif kwarg is not None:
            continue
        if not field.is_non_string_sequence:
            names.add(name)
    return frozenset(names)


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
