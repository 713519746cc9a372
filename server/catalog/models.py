"""Products (with their GTINs) and lots: what a pack is, and which batch it came from."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base

COST_PRECISION = Decimal("0.0001")  # unit costs and values: Numeric(12, 4) below


class StorageCondition(StrEnum):
    ROOM = "ROOM"
    REFRIGERATED = "REFRIGERATED"
    FROZEN = "FROZEN"


class LotStatus(StrEnum):
    RELEASED = "RELEASED"
    QUARANTINED = "QUARANTINED"
    RECALLED = "RECALLED"


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("name", "strength", "dosage_form"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    strength: Mapped[str] = mapped_column(String(100))
    dosage_form: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str] = mapped_column(String(50))
    approval_number: Mapped[str] = mapped_column(String(64), unique=True)
    atc_code: Mapped[str | None] = mapped_column(String(7), index=True)
    controlled_schedule: Mapped[str | None] = mapped_column(String(8))
    # life-saving with no ready substitute: replenishment protects it with the highest service
    # level (server/replenishment/service.product_class)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    storage: Mapped[StorageCondition] = mapped_column(
        Enum(StorageCondition, native_enum=False), default=StorageCondition.ROOM
    )
    unit_cost: Mapped[Decimal] = mapped_column(Numeric(12, 4), default=Decimal("0"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ProductGtin(Base):
    __tablename__ = "product_gtins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    gtin: Mapped[str] = mapped_column(String(14), unique=True)


class Lot(Base):
    __tablename__ = "lots"
    __table_args__ = (UniqueConstraint("product_id", "batch_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    batch_number: Mapped[str] = mapped_column(String(20))
    expiry_date: Mapped[date] = mapped_column(Date, index=True)
    manufacturer_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    status: Mapped[LotStatus] = mapped_column(
        Enum(LotStatus, native_enum=False), default=LotStatus.RELEASED
    )
