"""Suppliers' contacts and the contracts buyers agree with them (prices, lead times, minimums).

A supplier itself is a network `Organisation` of a supplying kind; nothing here duplicates it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class SupplierContact(Base):
    __tablename__ = "supplier_contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))


class Contract(Base):
    """What a buyer organisation agreed with a supplier, for a period."""

    __tablename__ = "contracts"
    __table_args__ = (UniqueConstraint("supplier_id", "reference"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    supplier_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    buyer_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    reference: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContractLine(Base):
    __tablename__ = "contract_lines"
    __table_args__ = (UniqueConstraint("contract_id", "product_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    lead_time_days: Mapped[int] = mapped_column(Integer)
    minimum_order_quantity: Mapped[int] = mapped_column(Integer, default=1)
