"""Add created_at and updated_at, and the indexes that sort, search and page the list.

Phase: expand. The release before it reads and writes none of what it adds; the index it drops
(``ix_heroes_age``) is replaced first by one that serves the same queries.

- ``created_at``, ``updated_at``: UTC timestamps; heroes already stored get the time of the
  migration for both.
- ``ix_heroes_age_id`` (age, id) replaces ``ix_heroes_age`` (age): sorting by age, with the id
  breaking ties, is one index range.
- ``ix_heroes_name_lower_id`` (lower(name), id): sorting by name and the ``name_prefix`` search.
- PostgreSQL only: ``name`` gets the "C" collation, so that names sort by code point and
  ``lower()`` folds A-Z only, as on SQLite.

Online (see ``online``), with the schema the first version of this migration made:

- PostgreSQL adds both columns in one statement that rewrites nothing (the default is computed
  once). The indexes are built ``CONCURRENTLY``. A new collation would make ``ALTER COLUMN``
  rebuild ``ix_heroes_name`` under its lock, so the index is first built again concurrently
  with the new collation (``ix_heroes_name_c``), the old one dropped, the column changed (its
  new collation is the index's already: nothing is rebuilt), and the index renamed.
- SQLite cannot add a column whose default is ``CURRENT_TIMESTAMP``: the columns are added with
  the time of the migration as their default, every row is made to store it (in batches), then
  the default becomes ``CURRENT_TIMESTAMP`` by rewriting the table's definition, as SQLite's
  documentation describes for changing a default ("Making Other Kinds Of Table Schema Changes",
  https://sqlite.org/lang_altertable.html). The definition written is the one the table copy of
  the first version made.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlite3
import sys

import sqlalchemy as sa
from alembic import op

from service.database.migrations import online

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
phase = "expand"

NOW = sa.text("CURRENT_TIMESTAMP")
TIMESTAMPS = ("created_at", "updated_at")


def upgrade() -> None:
    """Add the timestamps and the list indexes."""
    if online.is_sqlite():
        _upgrade_sqlite()
        return
    with online.steps():
        online.locked(
            "ALTER TABLE heroes"
            " ADD COLUMN IF NOT EXISTS created_at TIMESTAMP WITH TIME ZONE"
            " DEFAULT CURRENT_TIMESTAMP NOT NULL,"
            " ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP WITH TIME ZONE"
            " DEFAULT CURRENT_TIMESTAMP NOT NULL",
            "adding created_at and updated_at",
        )
        online.create_index("ix_heroes_age_id", "heroes", "age, id")
        online.drop_index("ix_heroes_age")
        collation = online.scalar(
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'heroes'"
            " AND column_name = 'name'"
        )
        if collation != "C":
            online.create_index("ix_heroes_name_c", "heroes", 'name COLLATE "C"')
            online.drop_index("ix_heroes_name")
            online.lint_ignore(
                "changing-column-type, prefer-text-field, prefer-robust-stmts",
                "the type stays VARCHAR(255) and only the collation changes: no rewrite, no "
                "index to rebuild (ix_heroes_name_c has the new collation already), and run "
                "again it changes nothing",
            )
            online.locked(
                'ALTER TABLE heroes ALTER COLUMN name TYPE VARCHAR(255) COLLATE "C"',
                "giving name the C collation",
            )
        online.lint_ignore(
            "renaming-object",
            "the index takes the name of the one it replaces: queries do not name indexes",
        )
        online.locked(
            "ALTER INDEX IF EXISTS ix_heroes_name_c RENAME TO ix_heroes_name",
            "naming the index on name",
        )
        online.create_index("ix_heroes_name_lower_id", "heroes", "lower(name), id")


def _upgrade_sqlite() -> None:
    with online.steps():
        bind = op.get_bind()
        present = {column["name"] for column in sa.inspect(bind).get_columns("heroes")}
        if not present.issuperset(TIMESTAMPS):
            now = bind.exec_driver_sql("SELECT CURRENT_TIMESTAMP").scalar_one()
            with online.transaction():
                for column in TIMESTAMPS:
                    bind.exec_driver_sql(
                        f"ALTER TABLE heroes ADD COLUMN {column} DATETIME DEFAULT '{now}' NOT NULL"
                    )
        # Rows stored before the columns existed read the default from the definition: each
        # must store its own before the default changes.
        online.backfill(
            "heroes", "created_at = created_at, updated_at = updated_at", "storing the timestamps"
        )
        with online.transaction():
            _default_to_current_timestamp(bind)
        online.create_index("ix_heroes_age_id", "heroes", "age, id")
        online.drop_index("ix_heroes_age")
        online.create_index("ix_heroes_name_lower_id", "heroes", "lower(name), id")


def _default_to_current_timestamp(bind: sa.Connection) -> None:
    """Make ``CURRENT_TIMESTAMP`` the timestamps' default, in the table's stored definition."""
    reflected = sa.Table("heroes", sa.MetaData(), autoload_with=bind)
    table = sa.Table(
        "heroes",
        sa.MetaData(),
        *(column._copy() for column in reflected.columns if column.name not in TIMESTAMPS),
        *(
            sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=NOW)
            for name in TIMESTAMPS
        ),
    )
    created = str(sa.schema.CreateTable(table).compile(dialect=bind.dialect)).strip()
    # As the first version's table copy left it: SQLite quotes the name of a renamed table.
    definition = created.replace("CREATE TABLE heroes ", 'CREATE TABLE "heroes" ', 1)
    stored = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'heroes'"
    ).scalar_one()
    if stored == definition:
        return
    driver = bind.connection.dbapi_connection
    if sys.version_info >= (3, 12):
        driver.setconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE, False)  # type: ignore[union-attr]
    schema_version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'heroes'", (definition,)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {schema_version + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    missing = bind.exec_driver_sql(
        "SELECT count(*) FROM heroes WHERE created_at IS NULL OR updated_at IS NULL"
    ).scalar_one()
    if missing:
        raise RuntimeError(f"{missing} heroes lack their timestamps: the default is not changed")


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
