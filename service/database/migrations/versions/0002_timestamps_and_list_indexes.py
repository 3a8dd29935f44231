"""Add created_at and updated_at, and the indexes that sort, search and page the list.

- ``created_at``, ``updated_at``: UTC timestamps; heroes already stored get the time of the
  migration for both.
- ``ix_heroes_age_id`` (age, id) replaces ``ix_heroes_age`` (age): sorting by age, with the id
  breaking ties, is one index range.
- ``ix_heroes_name_lower_id`` (lower(name), id): sorting by name and the ``name_prefix`` search.
- PostgreSQL only: ``name`` gets the "C" collation, so that names sort by code point and
  ``lower()`` folds A-Z only, as on SQLite.

SQLite cannot add a column whose default is ``CURRENT_TIMESTAMP`` in place, so the table is
copied (batch mode, "recreate"); PostgreSQL adds both columns without rewriting the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    """Add the timestamps and the list indexes."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_heroes_age", table_name="heroes")
    with op.batch_alter_table("heroes", recreate="always" if sqlite else "never") as batch:
        for column in ("created_at", "updated_at"):
            batch.add_column(
                sa.Column(column, sa.DateTime(timezone=True), nullable=False, server_default=NOW)
            )
    if not sqlite:
        # No rewrite of the table: only ix_heroes_name is rebuilt, in the new collation.
        op.alter_column(
            "heroes",
            "name",
            type_=sa.String(255, collation="C"),
            existing_type=sa.String(255),
            existing_nullable=False,
        )
    op.create_index("ix_heroes_age_id", "heroes", ["age", "id"])
    op.create_index("ix_heroes_name_lower_id", "heroes", [sa.text("lower(name)"), "id"])


def downgrade() -> None:
    """Back to revision 0001: the timestamps are dropped."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_heroes_name_lower_id", table_name="heroes")
    op.drop_index("ix_heroes_age_id", table_name="heroes")
    if not sqlite:
        op.alter_column(
            "heroes",
            "name",
            type_=sa.String(255),
            existing_type=sa.String(255, collation="C"),
            existing_nullable=False,
        )
    with op.batch_alter_table("heroes", recreate="always" if sqlite else "never") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("created_at")
    op.create_index("ix_heroes_age", "heroes", ["age"])
