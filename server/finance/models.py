"""Money: the value of every movement, each organisation's moving average cost, and budgets."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import Date, Enum, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow
from server.inventory.models import MovementKind

# Money columns: amounts to 4 decimal places (cents and below), unit costs to 6 (an average
# of prices over many packs is not a round amount).
AMOUNT = Numeric(18, 4)
UNIT_COST = Numeric(18, 6)


class CostSource(StrEnum):
    """Where a movement's unit cost came from."""

    PURCHASE_ORDER = "PURCHASE_ORDER"
    CONTRACT = "CONTRACT"
    CATALOG = "CATALOG"
    AVERAGE = "AVERAGE"
    TRANSFER = "TRANSFER"


class PeriodKind(StrEnum):
    MONTH = "MONTH"
    QUARTER = "QUARTER"
    YEAR = "YEAR"


class MovementCost(Base):
    """The value of one movement, written in the movement's transaction (never updated).

    Denormalised (organisation, location, product, kind, time) so spend reports read this
    table alone."""

    __tablename__ = "movement_costs"
    __table_args__ = (
        Index("ix_movement_costs_org_occurred", "organisation_id", "occurred_at"),
        Index("ix_movement_costs_location_occurred", "location_id", "occurred_at"),
        Index("ix_movement_costs_reference_lot", "reference", "lot_id"),
    )

    movement_id: Mapped[int] = mapped_column(ForeignKey("movements.id"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    kind: Mapped[MovementKind] = mapped_column(Enum(MovementKind, native_enum=False))
    quantity: Mapped[int] = mapped_column(Integer)  # signed, as the movement's
    unit_cost: Mapped[Decimal] = mapped_column(UNIT_COST)
    value: Mapped[Decimal] = mapped_column(AMOUNT)  # signed: quantity x unit cost
    source: Mapped[CostSource] = mapped_column(Enum(CostSource, native_enum=False))
    # The receipt's supplier (its counterparty); null for every other kind.
    supplier_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    reference: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AverageCost(Base):
    """The moving weighted average cost of a product in an organisation: the quantity and
    value on hand as costing sees them, updated with every movement (row-locked)."""

    __tablename__ = "average_costs"
    __table_args__ = (UniqueConstraint("organisation_id", "product_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[Decimal] = mapped_column(AMOUNT, default=Decimal(0))
    average_cost: Mapped[Decimal | None] = mapped_column(UNIT_COST)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Budget(Base):
    """What a location (department) may spend in one month, quarter or year."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("location_id", "period_kind", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"), index=True)
    period_kind: Mapped[PeriodKind] = mapped_column(Enum(PeriodKind, native_enum=False))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # exclusive
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    warning_percent: Mapped[int] = mapped_column(Integer, default=90)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
