"""Serial numbers that have left stock: a pack's serial may be decommissioned only once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class DecommissionedSerial(Base):
    """EU FMD / DSCSA style: (GTIN, serial) leaves stock once, by DISPENSE or DISPOSE."""

    __tablename__ = "decommissioned_serials"
    __table_args__ = (UniqueConstraint("gtin", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    movement_id: Mapped[int] = mapped_column(ForeignKey("movements.id"))
    kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decommissioned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
