"""Make (credential, key) the primary key of idempotency_keys: each credential has its own keys.

Phase: contract. It drops what only the release before 0004 needed: the key alone as primary
key (its ``ON CONFLICT (key)``) and the credential's default (it inserts keys without naming a
credential). Run it once no host serves that release any more: ``python -m service migrate``
after the roll (``migrate --expand`` stops before it). The release of 0004 and this release
serve on either side of it.

- PostgreSQL: one ``ALTER TABLE`` under ``lock_timeout``, tried again if it waits: the primary key
  is dropped and made again from ``ix_idempotency_keys_credential_key`` (``USING INDEX``: nothing
  is built, the index takes the constraint's name), and the default goes.
- SQLite cannot change a primary key in place: the table is copied, in one transaction. It
  holds only the keys of the retention window (``IDEMPOTENCY_KEY_RETENTION_SECONDS``).

Keys stored by the release before 0004 keep their credential ``*``: any credential's retry still
finds them, until they expire.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from service.database.migrations import online

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
phase = "contract"

COLUMNS = '"key", request_hash, hero_id, created_at, credential'


def upgrade() -> None:
    """Replace the primary key on the key with one on (credential, key)."""
    with online.steps():
        if online.is_sqlite():
            _copy_sqlite_table(primary_key='credential, "key"', default="")
            return
        if online.is_offline() or online.scalar(
            "SELECT to_regclass('ix_idempotency_keys_credential_key') IS NOT NULL"
        ):
            online.lint_ignore(
                "ban-drop-constraint, ban-drop-default, prefer-robust-stmts",
                "the contract step: only the release before 0004 needs the key alone unique and "
                "the default, and it serves no more (migrate --expand stops before this); the "
                "statement runs only while ix_idempotency_keys_credential_key exists",
            )
            online.locked(
                "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey,"
                " ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY"
                " USING INDEX ix_idempotency_keys_credential_key,"
                " ALTER COLUMN credential DROP DEFAULT",
                "making (credential, key) the primary key",
            )


def downgrade() -> None:
    """Back to revision 0004: the key alone is the primary key again.

    A key that several credentials hold is kept once, the first stored; the others are
    forgotten (a retry of theirs creates anew).
    """
    forget_duplicates = (
        "DELETE FROM idempotency_keys WHERE EXISTS (SELECT 1 FROM idempotency_keys AS first"
        " WHERE first.key = idempotency_keys.key AND (first.created_at, first.credential)"
        " < (idempotency_keys.created_at, idempotency_keys.credential))"
    )
    with online.steps():
        with online.transaction() as bind:
            if bind is not None:
                bind.exec_driver_sql(forget_duplicates)
        if online.is_sqlite():
            _copy_sqlite_table(primary_key='"key"', default=" DEFAULT '*'")
            online.create_index(
                "ix_idempotency_keys_credential_key",
                "idempotency_keys",
                "credential, key",
                unique=True,
            )
            return
        online.create_index("idempotency_keys_key", "idempotency_keys", "key", unique=True)
        online.locked(
            "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey,"
            " ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY USING INDEX idempotency_keys_key,"
            " ALTER COLUMN credential SET DEFAULT '*'",
            "making the key the primary key",
        )
        online.create_index(
            "ix_idempotency_keys_credential_key", "idempotency_keys", "credential, key", unique=True
        )


def _copy_sqlite_table(primary_key: str, default: str) -> None:
    """Copy idempotency_keys into a table of the same columns but ``primary_key``."""
    with online.transaction() as bind:
        assert bind is not None
        count = bind.exec_driver_sql("SELECT count(*) FROM idempotency_keys").scalar_one()
        online.log.info("idempotency_keys: copying %s keys to change the primary key", f"{count:,}")
        bind.exec_driver_sql(
            "CREATE TABLE _alembic_tmp_idempotency_keys (\n"
            '\t"key" VARCHAR(255) NOT NULL, \n'
            "\trequest_hash BLOB NOT NULL, \n"
            "\thero_id BIGINT NOT NULL, \n"
            "\tcreated_at DATETIME NOT NULL, \n"
            f"\tcredential VARCHAR(64){default} NOT NULL, \n"
            f"\tPRIMARY KEY ({primary_key})\n"
            ")"
        )
        bind.exec_driver_sql(
            f"INSERT INTO _alembic_tmp_idempotency_keys ({COLUMNS})"  # noqa: S608 (constants)
            f" SELECT {COLUMNS} FROM idempotency_keys"
        )
        bind.exec_driver_sql("DROP TABLE idempotency_keys")
        bind.exec_driver_sql("ALTER TABLE _alembic_tmp_idempotency_keys RENAME TO idempotency_keys")
        bind.exec_driver_sql(
            "CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at)"
        )
