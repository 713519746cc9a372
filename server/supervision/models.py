"""Recalls: a lot (or every lot of a batch number) taken out of use everywhere at once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class Recall(Base):
    __tablename__ = "recalls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(500))
    initiated_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    initiated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecallLot(Base):
    __tablename__ = "recall_lots"

    recall_id: Mapped[int] = mapped_column(ForeignKey("recalls.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), primary_key=True)
    previous_status: Mapped[str] = mapped_column(String(16))
