"""forecasts: refresh runs and the latest stored forecast per (product, location, granularity)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forecast_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("granularity", sa.String(length=16), nullable=False),
        sa.Column("last_period", sa.Date(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("series_total", sa.Integer(), nullable=False),
        sa.Column("series_refitted", sa.Integer(), nullable=False),
        sa.Column("series_removed", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_runs")),
    )
    with op.batch_alter_table("forecast_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_forecast_runs_granularity"), ["granularity"])
    op.create_table(
        "forecasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("granularity", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("history_hash", sa.String(length=64), nullable=False),
        sa.Column("history_start", sa.Date(), nullable=False),
        sa.Column("last_period", sa.Date(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("first_period", sa.Date(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("low_80", sa.JSON(), nullable=False),
        sa.Column("high_80", sa.JSON(), nullable=False),
        sa.Column("low_95", sa.JSON(), nullable=False),
        sa.Column("high_95", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("season_length", sa.Integer(), nullable=False),
        sa.Column("mase", sa.Float(), nullable=True),
        sa.Column("bias", sa.Float(), nullable=True),
        sa.Column("baseline_model", sa.String(length=32), nullable=True),
        sa.Column("baseline_mase", sa.Float(), nullable=True),
        sa.Column("baseline_bias", sa.Float(), nullable=True),
        sa.Column("demand_class", sa.String(length=16), nullable=False),
        sa.Column("adi", sa.Float(), nullable=True),
        sa.Column("cv2", sa.Float(), nullable=True),
        sa.Column("history_length", sa.Integer(), nullable=False),
        sa.Column("backtest_windows", sa.Integer(), nullable=False),
        sa.Column("interval_source", sa.String(length=16), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_forecasts_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_forecasts_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["forecast_runs.id"], name=op.f("fk_forecasts_run_id_forecast_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecasts")),
        sa.UniqueConstraint(
            "product_id",
            "location_id",
            "granularity",
            name=op.f("uq_forecasts_product_id"),
        ),
    )
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_forecasts_location_id"), ["location_id"])
        batch_op.create_index(batch_op.f("ix_forecasts_product_id"), ["product_id"])
        batch_op.create_index(batch_op.f("ix_forecasts_run_id"), ["run_id"])


def downgrade() -> None:
    op.drop_table("forecasts")
    op.drop_table("forecast_runs")
