"""Hero request and response bodies. Output types have no ``secret_name``: it cannot leak."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from service.database.tables import AGE_MAX, ID_MAX, NAME_MAX_LENGTH
from service.http.decoding import NO_NUL

Name = Annotated[
    str,
    Meta(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NO_NUL, examples=["Deadpond"]),
]
SecretName = Annotated[
    str,
    Meta(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NO_NUL, examples=["Dive Wilson"]),
]
Age = Annotated[
    int,
    # Litestar leaves a zero bound out of the OpenAPI document; "extra" restates it there.
    Meta(ge=0, le=AGE_MAX, examples=[30], extra_json_schema={"extra": {"minimum": 0}}),
]

TeamId = Annotated[
    int,
    Meta(
        ge=1,
        le=ID_MAX,
        description="The id of the hero's team; a team that does not exist is 422.",
        examples=[1],
    ),
]


class HeroCreate(Struct, kw_only=True):
    """A new hero. The server assigns the id; an ``id`` sent by the client is ignored."""

    name: Name
    secret_name: SecretName
    age: Age | None = None
    team_id: TeamId | None = None


class HeroUpdate(Struct, kw_only=True, omit_defaults=True):
    """A partial update: omitted fields stay as they are; null clears the age or the team."""

    name: Name | UnsetType = UNSET
    secret_name: SecretName | UnsetType = UNSET
    age: Age | UnsetType | None = UNSET
    team_id: TeamId | UnsetType | None = UNSET

    def changes(self) -> dict[str, object]:
        """The fields the client sent, by column name."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


class HeroPublic(Struct, omit_defaults=True):
    """A hero as every response shows it; ``team_id`` only for a hero in a team.

    Without a team the answer is the hero's fields as before teams existed: a client that knows
    nothing of teams reads it unchanged.
    """

    id: Annotated[int, Meta(examples=[1])]
    name: Annotated[str, Meta(examples=["Deadpond"])]
    age: Annotated[int | None, Meta(examples=[30])]
    created_at: Annotated[
        datetime,
        Meta(
            tz=True,
            description="When the hero was created (UTC, RFC 3339).",
            examples=["2026-11-27T11:00:00.123456Z"],
        ),
    ]
    updated_at: Annotated[
        datetime,
        Meta(
            tz=True,
            description="When the hero was last changed (UTC, RFC 3339); created_at until then.",
            examples=["2026-11-27T11:00:00.123456Z"],
        ),
    ]
    team_id: Annotated[
        int | None,
        Meta(description="The id of the hero's team; absent without one.", examples=[1]),
    ] = None
