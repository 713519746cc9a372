"""commissioned_serials (recordProduction, EPCIS commissioning) and fhir_dispenses (FHIR
MedicationDispense identifiers and the movements they became)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "commissioned_serials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gtin", sa.String(length=14), nullable=False),
        sa.Column("serial", sa.String(length=20), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("movement_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("commissioned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_commissioned_serials_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_commissioned_serials_location_id_locations"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_commissioned_serials_lot_id_lots")
        ),
        sa.ForeignKeyConstraint(
            ["movement_id"],
            ["movements.id"],
            name=op.f("fk_commissioned_serials_movement_id_movements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commissioned_serials")),
        sa.UniqueConstraint("gtin", "serial", name=op.f("uq_commissioned_serials_gtin")),
    )
    with op.batch_alter_table("commissioned_serials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commissioned_serials_lot_id"), ["lot_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_commissioned_serials_movement_id"), ["movement_id"], unique=False
        )

    op.create_table(
        "fhir_dispenses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=300), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_reference", sa.String(length=100), nullable=True),
        sa.Column("encounter_reference", sa.String(length=100), nullable=True),
        sa.Column("movement_ids", sa.JSON(), nullable=False),
        sa.Column("reversal_movement_ids", sa.JSON(), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_fhir_dispenses_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_fhir_dispenses_location_id_locations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_dispenses")),
        sa.UniqueConstraint("identifier", name=op.f("uq_fhir_dispenses_identifier")),
    )
    with op.batch_alter_table("fhir_dispenses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_dispenses_location_id"), ["location_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_dispenses_patient_reference"), ["patient_reference"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("fhir_dispenses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_dispenses_patient_reference"))
        batch_op.drop_index(batch_op.f("ix_fhir_dispenses_location_id"))
    op.drop_table("fhir_dispenses")
    with op.batch_alter_table("commissioned_serials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commissioned_serials_movement_id"))
        batch_op.drop_index(batch_op.f("ix_commissioned_serials_lot_id"))
    op.drop_table("commissioned_serials")
