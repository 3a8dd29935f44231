"""What a resource hands to ``create_app``: its routes, its error rows, its tag, its additions.

A second resource is a folder beside ``service/heroes/`` with a ``RESOURCE`` of its own, and one
more entry in ``create_app``'s list; nothing here or in ``service.database`` changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

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
