"""The database tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAME_MAX_LENGTH = 255
"""Longest name or secret name, in characters; the columns are sized for it."""
AGE_MAX = 2**31 - 1
"""Largest age: the top of a 32-bit INTEGER, the narrowest integer column we run on."""
ID_MAX = 2**63 - 1
"""Largest id of a hero or a team: the top of a 64-bit BIGINT."""
VERSION_MAX = 2**31 - 1
"""Largest version of a row: the top of the 32-bit INTEGER column that counts its writes."""
KEY_MAX_LENGTH = 255
"""Longest ``Idempotency-Key``, in characters (ASCII)."""

# SQLite only gives an auto-incrementing rowid to a column declared exactly INTEGER.
HeroId = BigInteger().with_variant(Integer(), "sqlite")
RowId = HeroId
"""Any table's id, and a reference to one."""

# Names compare and sort by code point on both databases: SQLite's BINARY collation does, and
# PostgreSQL's "C" collation does, whatever the server's default; under "C" PostgreSQL's lower()
# also folds A-Z only, as SQLite's does (see service.database.pages.fold).
Name = String(NAME_MAX_LENGTH).with_variant(String(NAME_MAX_LENGTH, collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, always read back as an aware datetime in UTC.

    PostgreSQL stores ``timestamp with time zone``; SQLite has no time zones, so the value is
    stored there as naive UTC and given its zone back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """UTC, naive on SQLite; a naive datetime is refused rather than guessed at."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        """On SQLite, parse the stored text in one C call, for a fraction of the generic path.

        Measured in ``tests/benchmarks/RESULTS-choices.md``.

        A list page reads 40 of them; the text is what DateTime writes, or the server default's
        ``CURRENT_TIMESTAMP``, both ISO 8601 without a zone.
        """
        if dialect.name == "sqlite":
            return _utc_from_sqlite_text
        if dialect.driver == "asyncpg":
            return None  # asyncpg reads timestamptz as aware datetimes in UTC already
        if self.impl_instance.dialect_impl(dialect).result_processor(dialect, coltype) is None:
            # psycopg reads aware datetimes in the session's time zone: one call, not the
            # generic path's three per value (a list page reads 40 of them).
            return _in_utc
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """The stored time, aware, in UTC."""
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is UTC:  # as asyncpg returns them
            return moment
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _in_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _utc_from_sqlite_text(value: str | None) -> datetime | None:
    # Appending the offset costs less than datetime.replace(tzinfo=UTC)
    # (tests/benchmarks/RESULTS-choices.md).
    return None if value is None else datetime.fromisoformat(value + "+00:00")


NOW = text("CURRENT_TIMESTAMP")
"""The server's default for rows inserted without a time (the service always sends one)."""


class Base(DeclarativeBase):
    """Declarative base whose metadata holds every table of the service."""


class Team(Base):
    """A team of heroes. ``version`` counts the writes to the row and backs the ``ETag``."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Name, index=True)
    headquarters: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)


# Sorting by name, on the case-folded name, as the heroes' list does.
Index("ix_teams_name_lower_id", func.lower(Team.name), Team.id)


class Hero(Base):
    """A hero. ``version`` counts the writes to the row and backs the ``ETag`` header.

    ``team_id``: the hero's team, if any. Deleting the team sets it to null in the same
    transaction, as a write to the hero (``service.teams.queries``).
    """

    __tablename__ = "heroes"

    id: Mapped[int] = mapped_column(HeroId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Name, index=True)
    age: Mapped[int | None] = mapped_column(Integer)
    secret_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)
    team_id: Mapped[int | None] = mapped_column(RowId, ForeignKey("teams.id"))


# Sorting by age, and the age filters; with the id, a run of equal ages is an index range too.
Index("ix_heroes_age_id", Hero.age, Hero.id)
# Sorting by name and the name_prefix search, both on the case-folded name.
Index("ix_heroes_name_lower_id", func.lower(Hero.name), Hero.id)
# A team's heroes (the team_id filter, by id), and the team's delete setting their team_id null.
Index("ix_heroes_team_id_id", Hero.team_id, Hero.id)


# Keys compare byte by byte on both databases: they are ASCII.
Key = String(KEY_MAX_LENGTH).with_variant(String(KEY_MAX_LENGTH, collation="C"), "postgresql")
CREDENTIAL_LENGTH = 64
"""A credential is an API key's SHA-256 in hex, or ``anonymous`` (``service.http.security``)."""
Credential = String(CREDENTIAL_LENGTH).with_variant(
    String(CREDENTIAL_LENGTH, collation="C"), "postgresql"
)
ANY_CREDENTIAL = "*"
"""The credential of the keys stored before keys had one (by the release before migration 0004,
which does not name it): such a key is any credential's, as it was then."""


class IdempotencyKey(Base):
    """A create's ``Idempotency-Key``, stored with the hero it created, in the same transaction.

    ``credential`` says whose key it is: each credential has keys of its own. ``request_hash``
    is the SHA-256 of the request (the operation and its decoded body), so that the same key
    sent with another body is told apart; with it, ``hero_id`` (the id of the row the key
    created, a hero or another resource's: see ``service.database.keyed``) and ``created_at``
    give the first answer again (the body of the create holds the rest). A key older than
    ``IDEMPOTENCY_KEY_RETENTION_SECONDS`` is forgotten: keyed creates delete such rows.

    Before migration 0005 (the contract step) has run, the key alone is the primary key, as the
    release before 0004 needs it, and a key is unique across credentials; the queries work on
    either schema (see ``service.heroes.queries``).
    """

    __tablename__ = "idempotency_keys"

    credential: Mapped[str] = mapped_column(Credential, primary_key=True)
    key: Mapped[str] = mapped_column(Key, primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hero_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
