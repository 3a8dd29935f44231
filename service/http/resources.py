"""What a resource hands to ``create_app``, and what ``create_app`` derives from all of them.

A resource is a folder beside ``service/heroes/`` with a ``RESOURCE`` of its own, and one more
entry in ``service.app.RESOURCES``. What names every resource (the error table, the API's
description, the headers a browser may read, the tests' lists of layers and operations) is
derived from that list, never kept by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from litestar import Controller, Router
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar.openapi.spec import OpenAPI, Tag
    from litestar.types import ControllerRouterHandler, ExceptionHandlersMap


class Resource(NamedTuple):
    """One resource of the API, as ``create_app`` assembles it."""

    route_handlers: Sequence[ControllerRouterHandler]
    exception_handlers: ExceptionHandlersMap
    """Its domain errors and how each is answered (see ``service.http.errors``)."""
    tag: Tag
    """The OpenAPI tag its operations carry."""
    complete_document: Callable[[OpenAPI], None] | None = None
    """What it adds to the generated OpenAPI document at startup, if anything."""
    overview: str | None = None
    """Its sentence in the API's description, if it is one of the API's resources."""


class ErrorTableClash(ValueError):
    """Two rows of the error table answer the same exception: one would silently win."""


def error_table(
    generic: ExceptionHandlersMap, resources: Sequence[Resource]
) -> ExceptionHandlersMap:
    """The one exception -> answer table: the ``generic`` rows and every resource's own.

    Each exception has one row. A resource's row for an exception that another resource, or the
    generic table, already answers raises :class:`ErrorTableClash` (at ``create_app``): merged
    silently, one answer would replace the other for every resource. A row both need belongs in
    the generic table.
    """
    table = dict(generic)
    owners: dict[int | type[Exception], str] = dict.fromkeys(generic, "the generic table")
    for resource in resources:
        for exception, handler in resource.exception_handlers.items():
            if exception in owners:
                name = getattr(exception, "__qualname__", exception)
                raise ErrorTableClash(
                    f"{name} is answered by {owners[exception]} and by the resource "
                    f"{resource.tag.name!r}: give it one row (a shared one in "
                    "service.http.errors)"
                )
            table[exception] = handler
            owners[exception] = f"the resource {resource.tag.name!r}"
    return table


def http_handlers(resource: Resource) -> Iterator[HTTPRouteHandler]:
    """The HTTP route handlers a resource declares, in its controllers and routers too."""
    return _handlers(resource.route_handlers)


def _handlers(declared: Sequence[ControllerRouterHandler]) -> Iterator[HTTPRouteHandler]:
    for item in declared:
        if isinstance(item, HTTPRouteHandler):
            yield item
        elif isinstance(item, Router):
            for route in item.routes:
                if isinstance(route, HTTPRoute):
                    yield from route.route_handlers
        elif isinstance(item, type) and issubclass(item, Controller):
            yield from (
                value for value in vars(item).values() if isinstance(value, HTTPRouteHandler)
            )


def response_headers(resources: Sequence[Resource]) -> list[str]:
    """The response headers the resources' operations document, each once, in order."""
    names: dict[str, None] = {}
    for resource in resources:
        for handler in http_handlers(resource):
            names.update(dict.fromkeys(header.name for header in handler.response_headers or ()))
    return list(names)


def description(resources: Sequence[Resource], *after: str) -> str:
    """The API's description: each resource's overview, then the paragraphs ``after``."""
    paragraphs = [resource.overview for resource in resources if resource.overview]
    return "\n\n".join([*paragraphs, *after])
