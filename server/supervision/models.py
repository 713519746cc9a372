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


class BatchConstituentTotal(Base):
    """Running totals of one constituent's reported movements of one drug batch, kept in the
    ledger's transaction so a gamma check reads O(constituents) rows, never the history."""

    __tablename__ = "batch_constituent_totals"

    approval_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    produced: Mapped[int] = mapped_column(Integer, default=0)
    received: Mapped[int] = mapped_column(Integer, default=0)
    transferred_in: Mapped[int] = mapped_column(Integer, default=0)
    returned: Mapped[int] = mapped_column(Integer, default=0)
    adjusted_in: Mapped[int] = mapped_column(Integer, default=0)
    shipped: Mapped[int] = mapped_column(Integer, default=0)
    transferred_out: Mapped[int] = mapped_column(Integer, default=0)
    dispensed: Mapped[int] = mapped_column(Integer, default=0)
    disposed: Mapped[int] = mapped_column(Integer, default=0)
    adjusted_out: Mapped[int] = mapped_column(Integer, default=0)


class BatchEdgeTotal(Base):
    """What a sender reported shipping to a receiver, and what the receiver reported receiving
    from that sender, per drug batch (cross-organisation transfers included)."""

    __tablename__ = "batch_edge_totals"

    approval_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    receiver_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    shipped: Mapped[int] = mapped_column(Integer, default=0)
    received: Mapped[int] = mapped_column(Integer, default=0)
    last_shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BatchStatus(Base):
    """The last computed status of a batch, so a change of status raises one alert."""

    __tablename__ = "batch_statuses"

    approval_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    gamma: Mapped[int] = mapped_column(Integer)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
