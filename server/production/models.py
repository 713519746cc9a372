"""Serial numbers a manufacturer put into the network; scans later decommission them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class CommissionedSerial(Base):
    """(GTIN, serial) commissioned once, with the lot and PRODUCE movement that made it.

    The counterpart of `decommissioned_serials` (scanning): the same GTIN-14 and GS1 AI 21
    serial (at most 20 characters), so a pack commissioned here is the one a scan dispenses."""

    __tablename__ = "commissioned_serials"
    __table_args__ = (UniqueConstraint("gtin", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    movement_id: Mapped[int] = mapped_column(ForeignKey("movements.id"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    commissioned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
