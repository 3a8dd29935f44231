"""Add the teams, and each hero's team.

Phase: expand. The release before reads and writes none of it: a new table, and a nullable
column of heroes that its statements never name (its inserts leave it null).

- ``teams``: ``id``, ``name`` (indexed, and by ``(lower(name), id)`` for the list sorted by
  name), ``headquarters``, ``version``, ``created_at``, ``updated_at``, as heroes have them.
- ``heroes.team_id``: nullable, a foreign key to ``teams.id`` (a team's delete sets its heroes'
  team_id to null first, in its own transaction: ``service.teams.queries``);
  ``ix_heroes_team_id_id`` (team_id, id) serves the ``team_id`` filter, the team's first heroes
  and that delete.

Online (see ``online``):

- The new table and its indexes are made in the migration's transaction: nothing reads them yet.
- PostgreSQL adds the column (nullable, no default: nothing is rewritten), then the foreign key
  ``NOT VALID`` (a brief lock on both tables, no scan) and validates it apart (a scan of heroes
  that holds up no read or write; every team_id is null); each ``ALTER TABLE`` waits at most
  ``lock_timeout`` and is tried again. The index is built ``CONCURRENTLY``.
- SQLite adds the column with its reference in place (``ALTER TABLE ... ADD COLUMN ...
  REFERENCES``, allowed since its default is null: no row is checked or copied), then builds the
  index in one transaction (writes wait for it, reads do not).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

from service.database.migrations import online

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
phase = "expand"

FOREIGN_KEY = "heroes_team_id_fkey"


def upgrade() -> None:
    """Create teams, and add heroes.team_id with its foreign key and index."""
    online.lint_ignore(
        "prefer-text-field, prefer-bigint-over-int, prefer-identity",
        "names are at most NAME_MAX_LENGTH (255) characters, as the API checks them; the "
        "version counts a row's writes, and the id is SQLAlchemy's BIGSERIAL, as heroes have "
        "them (the keyed create takes ids from the serial's sequence)",
        whole_migration=True,
    )
    name = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
    op.create_table(
        "teams",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("name", name, nullable=False),
        sa.Column("headquarters", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        if_not_exists=True,
    )
    op.create_index("ix_teams_name", "teams", ["name"], if_not_exists=True)
    op.create_index(
        "ix_teams_name_lower_id", "teams", [sa.text("lower(name)"), "id"], if_not_exists=True
    )
    with online.steps():
        if online.is_sqlite():
            if not online.scalar(
                "SELECT count(*) FROM pragma_table_info('heroes') WHERE name = 'team_id'"
            ):
                online.locked(
                    "ALTER TABLE heroes ADD COLUMN team_id INTEGER REFERENCES teams (id)",
                    "adding team_id",
                )
        else:
            online.locked(
                "ALTER TABLE heroes ADD COLUMN IF NOT EXISTS team_id BIGINT", "adding team_id"
            )
            if online.is_offline() or not online.scalar(
                "SELECT count(*) FROM pg_constraint WHERE conname = :name", name=FOREIGN_KEY
            ):
                online.lint_ignore(
                    "prefer-robust-stmts",
                    "run only when the constraint is missing (pg_constraint is read first)",
                )
                online.locked(
                    f"ALTER TABLE heroes ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY (team_id)"
                    " REFERENCES teams (id) NOT VALID",
                    "adding the foreign key on team_id",
                )
            online.lint_ignore(
                "prefer-robust-stmts", "validating a constraint that is valid does nothing"
            )
            online.locked(
                f"ALTER TABLE heroes VALIDATE CONSTRAINT {FOREIGN_KEY}",
                "validating the foreign key on team_id",
            )
        online.create_index("ix_heroes_team_id_id", "heroes", "team_id, id")


def downgrade() -> None:
    """Back to revision 0005: heroes lose their team, and the teams go."""
    op.drop_index("ix_heroes_team_id_id", table_name="heroes")
    sqlite = op.get_bind().dialect.name == "sqlite"
    with warnings.catch_warnings():
        # SQLAlchemy says it cannot reflect the index on an expression: made again below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        with op.batch_alter_table("heroes", recreate="always" if sqlite else "never") as batch:
            if not sqlite:
                batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")
            batch.drop_column("team_id")
    if sqlite:  # the copy lost the index on an expression, which SQLite cannot reflect
        op.execute("CREATE INDEX IF NOT EXISTS ix_heroes_name_lower_id ON heroes (lower(name), id)")
    op.drop_index("ix_teams_name_lower_id", table_name="teams")
    op.drop_index("ix_teams_name", table_name="teams")
    op.drop_table("teams")
