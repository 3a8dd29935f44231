"""Add the idempotency_keys table: each create's Idempotency-Key, stored with its hero.

Phase: expand. A new table, which the release before never reads, and its index, built while the
table is empty in the transaction that creates it.

- ``key`` (primary key; "C" collation on PostgreSQL), ``request_hash`` (SHA-256 of the request),
  ``hero_id`` (the hero it created; no foreign key: the first answer is given again even after
  the hero is deleted), ``created_at`` (when the key was stored; indexed, for forgetting keys
  past the retention window).
- Heroes are untouched; a downgrade drops the keys and with them what retries they allowed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.database.migrations import online

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    """Create the idempotency_keys table."""
    online.lint_ignore(
        "prefer-text-field",
        "keys are at most KEY_MAX_LENGTH (255) characters, as the API checks them",
        whole_migration=True,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column(
            "key",
            sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql"),
            primary_key=True,
        ),
        sa.Column("request_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hero_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    """Back to revision 0002: the keys are dropped."""
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
