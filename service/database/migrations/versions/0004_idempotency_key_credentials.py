"""Give each idempotency key the credential that sent it, and a unique index on both.

Phase: expand. The release before writes keys without naming their credential: the column's
default, ``*``, marks them as any credential's (as they were), and the key alone stays the
primary key, which that release's ``ON CONFLICT (key)`` needs. The contract step, 0005, makes
(credential, key) the primary key once that release is gone.

- ``credential``: the SHA-256 of the API key (hex) or ``anonymous``; ``*`` for keys stored by
  the release before. Existing rows get ``*`` without being rewritten (a constant default).
- ``ix_idempotency_keys_credential_key`` (credential, key), unique: what this release's
  ``ON CONFLICT (credential, key)`` needs, built ``CONCURRENTLY``.

While both releases serve (the schema at 0004) a key is still unique across credentials: a
credential that sends a key another one holds is answered 422, not the other's hero. A retry
that lands on the other release finds the key either way: the old release looks keys up by key
alone, this one finds its own and the ``*`` ones; both take the same advisory lock on the key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from service.database.migrations import online

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    """Add the credential column and its unique index with the key."""
    with online.steps():
        if not online.is_sqlite():
            online.lint_ignore(
                "prefer-text-field",
                "a credential is 64 characters at most (a SHA-256 in hex), as keys are bounded",
            )
            online.locked(
                "ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS"
                " credential VARCHAR(64) COLLATE \"C\" DEFAULT '*' NOT NULL",
                "adding credential",
            )
        elif not online.scalar(
            "SELECT count(*) FROM pragma_table_info('idempotency_keys') WHERE name = 'credential'"
        ):
            online.locked(
                "ALTER TABLE idempotency_keys"
                " ADD COLUMN credential VARCHAR(64) DEFAULT '*' NOT NULL",
                "adding credential",
            )
        online.create_index(
            "ix_idempotency_keys_credential_key", "idempotency_keys", "credential, key", unique=True
        )


def downgrade() -> None:
    """Back to revision 0003: the keys lose their credentials (all become global again)."""
    op.drop_index("ix_idempotency_keys_credential_key", table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("credential")
