"""Alerts: raised when a condition starts, kept once while it holds, resolved when it clears."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class AlertKind(StrEnum):
    LOW_STOCK = "LOW_STOCK"
    EXPIRING_SOON = "EXPIRING_SOON"
    EXPIRED_ON_SHELF = "EXPIRED_ON_SHELF"
    SERIAL_DECOMMISSIONED_TWICE = "SERIAL_DECOMMISSIONED_TWICE"
    RECALL = "RECALL"
    SHIPMENT_OVERDUE = "SHIPMENT_OVERDUE"
    SUPERVISION_STATUS = "SUPERVISION_STATUS"
    CONTROLLED_DISCREPANCY = "CONTROLLED_DISCREPANCY"
    BUDGET_WARNING = "BUDGET_WARNING"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"


class AlertStatus(StrEnum):
    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # One live alert per condition: deduplicated while it holds, on both databases.
        Index(
            "uq_alerts_live_condition",
            "condition_key",
            unique=True,
            sqlite_where=text("active = 1"),
            postgresql_where=text("active"),
        ),
        Index("ix_alerts_location_status", "location_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[AlertKind] = mapped_column(Enum(AlertKind, native_enum=False))
    status: Mapped[AlertStatus] = mapped_column(
        Enum(AlertStatus, native_enum=False), default=AlertStatus.OPEN
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    condition_key: Mapped[str] = mapped_column(String(200))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    # Alerts about an organisation rather than a shelf (e.g. supervision): visible to that
    # organisation's users and to global roles; location_id and organisation_id both None
    # means global roles only.
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lots.id"))
    message: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledgement_note: Mapped[str | None] = mapped_column(String(500))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MinimumLevel(Base):
    """Below this quantity of a product at a location, a LOW_STOCK alert is raised."""

    __tablename__ = "minimum_levels"
    __table_args__ = (UniqueConstraint("location_id", "product_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    minimum_quantity: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ComputedLevel(Base):
    """A reorder point computed by replenishment for a (location, product): the LOW_STOCK
    threshold where no manual `MinimumLevel` is set (a manual one always wins)."""

    __tablename__ = "computed_levels"
    __table_args__ = (UniqueConstraint("location_id", "product_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    reorder_point: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
