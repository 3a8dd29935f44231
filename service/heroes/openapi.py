"""What the heroes' operations document: their examples, and the rest in the heroes' words.

What every resource documents alike is ``service.http.openapi``'s ``ResourceDocs``.
"""

from __future__ import annotations

from litestar.openapi.spec import Example

from service.http.openapi import ResourceDocs

DOCS = ResourceDocs("hero", "heroes")
"""The headers of the hero operations, and what they add to the generated document."""

CREATE_EXAMPLE = Example(
    summary="A hero with an age",
    value={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30},
)
UPDATE_EXAMPLE = Example(summary="Rename a hero", value={"name": "Deadpool"})

ORDER_BY_DESCRIPTION = (
    "The order of the list: `id`, `name` or `age`, descending with a leading `-` (`-age`). "
    "Ties are broken by id, in the same direction. Names sort case-insensitively (A-Z only) by "
    "code point; a hero without an age sorts before every age: first with `age`, last with "
    "`-age`."
)
