"""The path and query parameters every resource's routes declare alike: ids and list pages.

Each is a Litestar ``Parameter`` for an ``Annotated`` type in a handler's signature, so that it
is checked (a 400 naming it) and documented the same way on every resource. Words that name the
resource (``hero``, ``heroes``) are the caller's.
"""

from __future__ import annotations

from litestar.params import Parameter, ParameterKwarg

from service.database.tables import ID_MAX
from service.http.cursors import Orders

MAX_PAGE = 100
"""Most rows one list request returns."""


def bounded(ge: int, le: int, description: str) -> ParameterKwarg:
    """An integer parameter in ``[ge, le]``.

    The bounds are restated as ``schema_extra`` because Litestar writes them to the OpenAPI
    document as floats, which cannot hold 2**63 - 1 exactly.
    """
    kwarg: ParameterKwarg = Parameter(
        ge=ge, le=le, description=description, schema_extra={"minimum": ge, "maximum": le}
    )
    return kwarg


def row_id(one: str) -> ParameterKwarg:
    """The path's id of one ``one`` (``hero``)."""
    return bounded(1, ID_MAX, f"The {one}'s id.")


def offset(many: str) -> ParameterKwarg:
    """How many of the ``many`` (``heroes``) a page skips."""
    return bounded(0, ID_MAX, f"{many.capitalize()} to skip (prefer `cursor`).")


def limit(many: str) -> ParameterKwarg:
    """The most ``many`` (``heroes``) a page holds."""
    return bounded(1, MAX_PAGE, f"Most {many} to return.")


def order_by(orders: Orders, description: str) -> ParameterKwarg:
    """The list's ``order_by``: one of the ``orders``, listed in the document."""
    kwarg: ParameterKwarg = Parameter(
        description=description, schema_extra={"enum": list(orders.order_by)}
    )
    return kwarg


CURSOR: ParameterKwarg = Parameter(
    min_length=1,
    max_length=1024,
    description=(
        "Where the page starts: the opaque value in the `Link` header's next URL. "
        "A cursor made for another `order_by` is refused (400)."
    ),
)
"""The list's ``cursor``, as its ``Link`` header's URL holds it."""
COUNT: ParameterKwarg = Parameter(description="Also send `X-Total-Count`; it costs a scan.")
"""The list's ``count``: whether to send ``X-Total-Count``."""
