"""reference_version: one counter that every change of cached reference data advances

Each process keeps locations, products, GTINs and principals in memory (server.core.cache);
triggers on those tables advance this row in the changing transaction, so every worker sees
the change on its next transaction or request, whoever made it (the API, the CLI, SQL).

Revision ID: 0014
Revises: 0009
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables whose every change makes cached copies stale; refresh_tokens only on UPDATE (a
# revocation or rotation), since a new token revokes nothing.
WATCHED = ("locations", "products", "product_gtins", "users", "user_roles", "user_locations")
UPDATE_ONLY = ("refresh_tokens",)


def upgrade() -> None:
    op.create_table(
        "reference_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_reference_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_version")),
    )
    op.execute("INSERT INTO reference_version (id, version) VALUES (1, 0)")
    bump = "UPDATE reference_version SET version = version + 1 WHERE id = 1"
    if op.get_bind().dialect.name == "sqlite":
        for table in WATCHED + UPDATE_ONLY:
            events = ("UPDATE",) if table in UPDATE_ONLY else ("INSERT", "UPDATE", "DELETE")
            for verb in events:
                op.execute(
                    f"CREATE TRIGGER reference_version_{table}_{verb.lower()} "
                    f"AFTER {verb} ON {table} BEGIN {bump}; END"
                )
        return
    op.execute(
        "CREATE FUNCTION bump_reference_version() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {bump}; RETURN NULL; END $$"
    )
    for table in WATCHED + UPDATE_ONLY:
        events = "UPDATE" if table in UPDATE_ONLY else "INSERT OR UPDATE OR DELETE OR TRUNCATE"
        # Once per statement: a bulk change advances the counter once.
        op.execute(
            f"CREATE TRIGGER reference_version_{table} AFTER {events} ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION bump_reference_version()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in WATCHED + UPDATE_ONLY:
            events = ("UPDATE",) if table in UPDATE_ONLY else ("INSERT", "UPDATE", "DELETE")
            for verb in events:
                op.execute(f"DROP TRIGGER reference_version_{table}_{verb.lower()}")
    else:
        for table in WATCHED + UPDATE_ONLY:
            op.execute(f"DROP TRIGGER reference_version_{table} ON {table}")
        op.execute("DROP FUNCTION bump_reference_version()")
    op.drop_table("reference_version")
