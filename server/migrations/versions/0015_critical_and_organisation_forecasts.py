"""products.critical (life-saving products replenishment protects hardest); forecasts of whole
organisations (location_id null, organisation_id set) and the disposals beside consumption

Revision ID: 0015
Revises: 0009
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("critical", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.alter_column("location_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("organisation_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("disposals", sa.JSON(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_forecasts_organisation_id_organisations"),
            "organisations",
            ["organisation_id"],
            ["id"],
        )
        batch_op.create_index(batch_op.f("ix_forecasts_organisation_id"), ["organisation_id"])
        batch_op.create_unique_constraint(
            batch_op.f("uq_forecasts_organisation_id"),
            ["organisation_id", "product_id", "granularity"],
        )


def downgrade() -> None:
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_forecasts_organisation_id"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_forecasts_organisation_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_forecasts_organisation_id_organisations"), type_="foreignkey"
        )
        batch_op.drop_column("disposals")
        batch_op.drop_column("organisation_id")
    op.execute("DELETE FROM forecasts WHERE location_id IS NULL")
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.alter_column("location_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("critical")
