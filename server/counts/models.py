"""Stock counts (stock-takes): counted quantities per lot, finalised into COUNT movements."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class CountStatus(StrEnum):
    OPEN = "OPEN"
    FINALIZED = "FINALIZED"
    CANCELLED = "CANCELLED"


class StockCount(Base):
    __tablename__ = "stock_counts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"), index=True)
    status: Mapped[CountStatus] = mapped_column(
        Enum(CountStatus, native_enum=False), default=CountStatus.OPEN
    )
    reason: Mapped[str | None] = mapped_column(String(200))
    started_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StockCountLine(Base):
    """What was counted of one lot, and what the system held at that moment."""

    __tablename__ = "stock_count_lines"
    __table_args__ = (UniqueConstraint("count_id", "lot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    count_id: Mapped[int] = mapped_column(ForeignKey("stock_counts.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    counted_quantity: Mapped[int] = mapped_column(Integer)
    system_quantity_at_count: Mapped[int] = mapped_column(Integer)
    last_movement_id_at_count: Mapped[int | None] = mapped_column(Integer)
    counted_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
