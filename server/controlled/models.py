"""Who witnessed a movement of a controlled drug. Movements are immutable, so the witness sits
in a side table keyed by the movement, written in the movement's own transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class MovementWitness(Base):
    __tablename__ = "movement_witnesses"

    movement_id: Mapped[int] = mapped_column(ForeignKey("movements.id"), primary_key=True)
    witness_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    witnessed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
