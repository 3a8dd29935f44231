"""The database tables."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_MAX_LENGTH = 255
"""Longest name or secret name, in characters; the columns are sized for it."""
AGE_MAX = 2**31 - 1
"""Largest age: the top of a 32-bit INTEGER, the narrowest integer column we run on."""
ID_MAX = 2**63 - 1
"""Largest hero id: the top of a 64-bit BIGINT."""

# SQLite only gives an auto-incrementing rowid to a column declared exactly INTEGER.
HeroId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base whose metadata holds every table of the service."""


class Hero(Base):
    """A hero. ``version`` counts the writes to the row and backs the ``ETag`` header."""

    __tablename__ = "heroes"

    id: Mapped[int] = mapped_column(HeroId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), index=True)
    age: Mapped[int | None] = mapped_column(Integer, index=True)
    secret_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
