"""drop shipments.transfer_id: transfers never had shipments of their own; nothing set it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipments_transfer_id"))
        batch_op.drop_constraint(op.f("fk_shipments_transfer_id_transfers"), type_="foreignkey")
        batch_op.drop_column("transfer_id")


def downgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transfer_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_shipments_transfer_id_transfers"), "transfers", ["transfer_id"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_shipments_transfer_id"), ["transfer_id"], unique=False)
