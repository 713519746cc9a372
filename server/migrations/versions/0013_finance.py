"""finance: movement valuations, moving average costs, budgets; organisations' currency

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = (
    "RECEIVE",
    "SHIP",
    "DISPENSE",
    "RETURN",
    "ADJUST",
    "DISPOSE",
    "PRODUCE",
    "TRANSFER_OUT",
    "TRANSFER_IN",
    "COUNT",
)
SOURCES = ("PURCHASE_ORDER", "CONTRACT", "CATALOG", "AVERAGE", "TRANSFER")


def upgrade() -> None:
    with op.batch_alter_table("organisations") as batch:
        batch.add_column(
            sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False)
        )
    op.create_table(
        "movement_costs",
        sa.Column("movement_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Enum(*KINDS, name="movementkind", native_enum=False), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_cost", sa.Numeric(18, 6), nullable=False),
        sa.Column("value", sa.Numeric(18, 4), nullable=False),
        sa.Column(
            "source", sa.Enum(*SOURCES, name="costsource", native_enum=False), nullable=False
        ),
        sa.Column("supplier_id", sa.Integer(), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["movement_id"], ["movements.id"], name=op.f("fk_movement_costs_movement_id_movements")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_movement_costs_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_movement_costs_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_movement_costs_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_movement_costs_lot_id_lots")
        ),
        sa.ForeignKeyConstraint(
            ["supplier_id"],
            ["organisations.id"],
            name=op.f("fk_movement_costs_supplier_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("movement_id", name=op.f("pk_movement_costs")),
    )
    op.create_index(
        "ix_movement_costs_org_occurred", "movement_costs", ["organisation_id", "occurred_at"]
    )
    op.create_index(
        "ix_movement_costs_location_occurred", "movement_costs", ["location_id", "occurred_at"]
    )
    op.create_index("ix_movement_costs_reference_lot", "movement_costs", ["reference", "lot_id"])
    op.create_index(op.f("ix_movement_costs_product_id"), "movement_costs", ["product_id"])
    op.create_table(
        "average_costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("value", sa.Numeric(18, 4), nullable=False),
        sa.Column("average_cost", sa.Numeric(18, 6), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_average_costs_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_average_costs_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_average_costs")),
        sa.UniqueConstraint(
            "organisation_id", "product_id", name=op.f("uq_average_costs_organisation_id")
        ),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column(
            "period_kind",
            sa.Enum("MONTH", "QUARTER", "YEAR", name="periodkind", native_enum=False),
            nullable=False,
        ),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(18, 4), nullable=False),
        sa.Column("warning_percent", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_budgets_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_budgets_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_budgets_updated_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "location_id", "period_kind", "period_start", name=op.f("uq_budgets_location_id")
        ),
    )
    op.create_index(op.f("ix_budgets_organisation_id"), "budgets", ["organisation_id"])
    op.create_index(op.f("ix_budgets_location_id"), "budgets", ["location_id"])


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_table("average_costs")
    op.drop_table("movement_costs")
    with op.batch_alter_table("organisations") as batch:
        batch.drop_column("currency")
