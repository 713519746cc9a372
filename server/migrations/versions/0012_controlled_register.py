"""movement_witnesses: the witness of a controlled drug's disposal, adjustment or count variance

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "movement_witnesses",
        sa.Column("movement_id", sa.Integer(), nullable=False),
        sa.Column("witness_id", sa.Integer(), nullable=False),
        sa.Column("witnessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["movement_id"],
            ["movements.id"],
            name=op.f("fk_movement_witnesses_movement_id_movements"),
        ),
        sa.ForeignKeyConstraint(
            ["witness_id"], ["users.id"], name=op.f("fk_movement_witnesses_witness_id_users")
        ),
        sa.PrimaryKeyConstraint("movement_id", name=op.f("pk_movement_witnesses")),
    )
    op.create_index(
        op.f("ix_movement_witnesses_witness_id"),
        "movement_witnesses",
        ["witness_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_movement_witnesses_witness_id"), table_name="movement_witnesses")
    op.drop_table("movement_witnesses")
