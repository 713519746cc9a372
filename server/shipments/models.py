"""Shipments on their way from a sender to a receiver, their status events, and the
discrepancies found when goods are received (shipments and transfers record them alike)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class ShipmentStatus(StrEnum):
    PLANNED = "PLANNED"
    DISPATCHED = "DISPATCHED"
    IN_TRANSIT = "IN_TRANSIT"
    DELIVERED = "DELIVERED"
    RECEIVED = "RECEIVED"
    CANCELLED = "CANCELLED"


class DiscrepancyKind(StrEnum):
    SHORT = "SHORT"
    OVER = "OVER"
    DAMAGED = "DAMAGED"
    WRONG_LOT = "WRONG_LOT"


class Shipment(Base):
    """Goods on their way from a sender to a receiver, against a purchase order."""

    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    receiver_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    origin_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    destination_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    purchase_order_id: Mapped[int | None] = mapped_column(
        ForeignKey("purchase_orders.id"), index=True
    )
    status: Mapped[ShipmentStatus] = mapped_column(
        Enum(ShipmentStatus, native_enum=False), default=ShipmentStatus.PLANNED
    )
    expected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    carrier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ShipmentLine(Base):
    __tablename__ = "shipment_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    purchase_order_line_id: Mapped[int | None] = mapped_column(
        ForeignKey("purchase_order_lines.id")
    )
    quantity: Mapped[int] = mapped_column(Integer)
    serials: Mapped[list[str]] = mapped_column(JSON, default=list)
    received_quantity: Mapped[int] = mapped_column(Integer, default=0)


class ShipmentEvent(Base):
    """Every status update: who, when, and an optional where-is-it note."""

    __tablename__ = "shipment_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), index=True)
    status: Mapped[ShipmentStatus] = mapped_column(Enum(ShipmentStatus, native_enum=False))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    location_note: Mapped[str | None] = mapped_column(String(200))


class Discrepancy(Base):
    """A difference found on receipt (short, over, damaged, wrong lot) of a shipment or a
    transfer; never hidden by changing the sender's numbers."""

    __tablename__ = "discrepancies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipments.id"), index=True)
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("transfers.id"), index=True)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lots.id"))
    kind: Mapped[DiscrepancyKind] = mapped_column(Enum(DiscrepancyKind, native_enum=False))
    quantity: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recorded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
