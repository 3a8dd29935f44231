"""Create the heroes table with its indexes on name and age.

Phase: expand. The first migration: there is no release before it.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.database.migrations import online

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    """Create the heroes table."""
    online.lint_ignore(
        "prefer-text-field, prefer-bigint-over-int, prefer-identity",
        "the released schema, kept: VARCHAR(255) and INTEGER bound names, ages and versions as "
        "the API does (NAME_MAX_LENGTH, AGE_MAX, VERSION_MAX), the id is SQLAlchemy's BIGSERIAL; "
        "the version table is Alembic's",
        whole_migration=True,
    )
    op.create_table(
        "heroes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("secret_name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_heroes_name", "heroes", ["name"])
    op.create_index("ix_heroes_age", "heroes", ["age"])


def downgrade() -> None:
    """Drop the heroes table."""
    op.drop_index("ix_heroes_age", table_name="heroes")
    op.drop_index("ix_heroes_name", table_name="heroes")
    op.drop_table("heroes")
