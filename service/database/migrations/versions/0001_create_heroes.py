"""Create the heroes table with its indexes on name and age.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the heroes table."""
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
