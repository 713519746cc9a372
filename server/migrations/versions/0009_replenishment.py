"""computed_levels: reorder points from replenishment, the low-stock threshold where no manual
minimum level is set

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "computed_levels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("reorder_point", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_computed_levels_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_computed_levels_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_computed_levels")),
        sa.UniqueConstraint(
            "location_id", "product_id", name=op.f("uq_computed_levels_location_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("computed_levels")
