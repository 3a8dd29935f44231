"""Team request and response bodies.

Another resource may show a ``TeamPublic`` (a hero shows its team): this module imports nothing of
any other resource.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from service.database.tables import NAME_MAX_LENGTH
from service.http.decoding import NO_NUL

Name = Annotated[
    str,
    Meta(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NO_NUL, examples=["Preventers"]),
]
Headquarters = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NO_NUL,
        examples=["Sharp Tower"],
    ),
]


class TeamCreate(Struct, kw_only=True):
    """A new team. The server assigns the id; an ``id`` sent by the client is ignored."""

    name: Name
    headquarters: Headquarters


class TeamUpdate(Struct, kw_only=True, omit_defaults=True):
    """A partial update: omitted fields stay as they are."""

    name: Name | UnsetType = UNSET
    headquarters: Headquarters | UnsetType = UNSET

    def changes(self) -> dict[str, object]:
        """The fields the client sent, by column name."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


class TeamPublic(Struct):
    """A team as every response shows it."""

    id: Annotated[int, Meta(examples=[1])]
    name: Annotated[str, Meta(examples=["Preventers"])]
    headquarters: Annotated[str, Meta(examples=["Sharp Tower"])]
    created_at: Annotated[
        datetime,
        Meta(
            tz=True,
            description="When the team was created (UTC, RFC 3339).",
            examples=["2026-11-27T11:00:00.123456Z"],
        ),
    ]
    updated_at: Annotated[
        datetime,
        Meta(
            tz=True,
            description="When the team was last changed (UTC, RFC 3339); created_at until then.",
            examples=["2026-11-27T11:00:00.123456Z"],
        ),
    ]
