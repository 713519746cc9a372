"""The ledger: immutable movements, and balances projected from them in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class MovementKind(StrEnum):
    RECEIVE = "RECEIVE"
    SHIP = "SHIP"
    DISPENSE = "DISPENSE"
    RETURN = "RETURN"
    ADJUST = "ADJUST"
    DISPOSE = "DISPOSE"
    PRODUCE = "PRODUCE"
    TRANSFER_OUT = "TRANSFER_OUT"
    TRANSFER_IN = "TRANSFER_IN"
    COUNT = "COUNT"


class Movement(Base):
    """One signed change of stock of one lot at one location. Never updated, never deleted."""

    __tablename__ = "movements"
    __table_args__ = (
        Index("ix_movements_location_lot", "location_id", "lot_id"),
        Index("ix_movements_lot_occurred", "lot_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[MovementKind] = mapped_column(Enum(MovementKind, native_enum=False))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    counterparty_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    quantity: Mapped[int] = mapped_column(Integer)  # signed: + into the location, - out of it
    balance_after: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(100))
    patient_reference: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(200))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    request_key: Mapped[str | None] = mapped_column(String(100), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Balance(Base):
    __tablename__ = "balances"
    __table_args__ = (UniqueConstraint("location_id", "lot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("locations.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """The first result of a request key; a replay gets these movements back and changes nothing."""

    __tablename__ = "idempotency_records"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    operation: Mapped[str] = mapped_column(String(50))
    request_hash: Mapped[str] = mapped_column(String(64))
    movement_ids: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(slots=True)
class WrittenMovement:
    """A movement as just inserted, with every column of `Movement` but no ORM
    instrumentation: building a thousand mapped instances costs more than inserting them."""

    id: int
    kind: MovementKind
    lot_id: int
    location_id: int
    organisation_id: int
    counterparty_id: int | None
    quantity: int
    balance_after: int
    reference: str | None
    patient_reference: str | None
    reason: str | None
    actor_id: int | None
    request_key: str | None
    occurred_at: datetime
    recorded_at: datetime


# What callers get back: just written, or read from the ledger when a key is replayed.
AnyMovement = Movement | WrittenMovement
