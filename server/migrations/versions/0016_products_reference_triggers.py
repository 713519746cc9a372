"""products' reference_version triggers again on SQLite: 0015 rebuilt the products table
(batch mode copies the table, and SQLite drops a table's triggers with it), so a changed
product (price, controlled schedule, deactivation) no longer made cached copies stale there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE reference_version SET version = version + 1 WHERE id = 1"
VERBS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL keeps triggers across ALTER TABLE
    for verb in VERBS:
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS reference_version_products_{verb.lower()} "
            f"AFTER {verb} ON products BEGIN {BUMP}; END"
        )
    # The new triggers count as a change: copies read before this migration are stale.
    op.execute(BUMP)


def downgrade() -> None:
    """Nothing: 0015's downgrade rebuilds products again, and 0014's drops these triggers."""
