"""What integrations remember: the EPCIS events already imported, so a replay changes nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class EpcisEvent(Base):
    """EPCIS events already imported, by event ID: a second import changes nothing."""

    __tablename__ = "epcis_events"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    movement_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
