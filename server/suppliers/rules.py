"""Pure supplier rules: which contract term applies, quantity and price bounds, and the supplier
performance maths (on-time, fill, lead time, discrepancy and price figures). No I/O, so all of
it is tested without a database."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from server.catalog.models import COST_PRECISION
from server.core.errors import InvalidInput

MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("99999999")


def check_quantity(value: int, field: str, *, allow_zero: bool = False) -> int:
    """A pack count within bounds (at least 1 unless `allow_zero`)."""
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_QUANTITY:
        raise InvalidInput(f"{field} must be between {low} and {MAX_QUANTITY}", field=field)
    return value


def check_price(value: Decimal, field: str) -> Decimal:
    """A unit price at the catalogue's cost precision, between 0 and MAX_PRICE."""
    try:
        price = Decimal(value).quantize(COST_PRECISION)
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{field} is not a number", field=field) from None
    if not Decimal(0) <= price <= MAX_PRICE:
        raise InvalidInput(f"{field} must be between 0 and {MAX_PRICE}", field=field)
    return price


@dataclass(frozen=True)
class ContractTerm:
    """One contract line as the maths needs it."""

    contract_id: int
    product_id: int
    valid_from: date
    valid_until: date
    unit_price: Decimal
    lead_time_days: int
    minimum_order_quantity: int


def valid_term(terms: Iterable[ContractTerm], product_id: int, on: date) -> ContractTerm | None:
    """The contract line for `product_id` valid on `on`; the most recent contract wins."""
    candidates = [
        t for t in terms if t.product_id == product_id and t.valid_from <= on <= t.valid_until
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda t: (t.valid_from, t.contract_id))


@dataclass(frozen=True)
class ReceivedShipmentFact:
    """A shipment the buyer finished receiving, with its order's dates."""

    received_at: datetime
    order_submitted_at: datetime | None
    order_expected_date: date | None
    discrepancies: int


@dataclass(frozen=True)
class OrderLineFact:
    """A line of a submitted order, with the contract price valid when it was ordered."""

    ordered: int
    received: int
    unit_price: Decimal
    contract_price: Decimal | None


@dataclass(frozen=True)
class Performance:
    shipments_received: int
    shipments_on_time: int
    shipments_with_discrepancies: int
    on_time_rate: float | None
    discrepancy_rate: float | None
    ordered_quantity: int
    received_quantity: int
    fill_rate: float | None
    average_lead_time_days: float | None
    p90_lead_time_days: float | None
    priced_quantity: int
    price_variance_percent: float | None


def _rate(numerator: int, denominator: int) -> float | None:
    return float(Fraction(numerator, denominator)) if denominator else None


def on_time(fact: ReceivedShipmentFact) -> bool:
    """Received (UTC date) on or before the order's expected delivery date; no date, no promise
    kept."""
    return (
        fact.order_expected_date is not None and fact.received_at.date() <= fact.order_expected_date
    )


def lead_time_days(fact: ReceivedShipmentFact) -> float | None:
    """Order submitted -> shipment received, in (fractional) days."""
    if fact.order_submitted_at is None:
        return None
    return (fact.received_at - fact.order_submitted_at).total_seconds() / 86400


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest observed value with at least `fraction` of the
    values at or below it (so the answer is a lead time that really happened)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def fill(lines: Iterable[OrderLineFact]) -> tuple[int, int]:
    """(ordered, received) where over-delivery of a line does not make up for another's gap."""
    ordered = received = 0
    for line in lines:
        ordered += line.ordered
        received += min(line.received, line.ordered)
    return ordered, received


def price_variance_percent(lines: Iterable[OrderLineFact]) -> tuple[int, float | None]:
    """Quantity-weighted (paid - contract) / contract, in percent, over lines with a contract
    price: sum((price - contract) * qty) / sum(contract * qty) * 100."""
    quantity = 0
    paid_over = Decimal(0)
    contract_total = Decimal(0)
    for line in lines:
        if line.contract_price is None:
            continue
        quantity += line.ordered
        paid_over += (line.unit_price - line.contract_price) * line.ordered
        contract_total += line.contract_price * line.ordered
    if not contract_total:
        return quantity, None
    return quantity, round(float(paid_over / contract_total * 100), 4)


def performance(
    shipments: Sequence[ReceivedShipmentFact], lines: Sequence[OrderLineFact]
) -> Performance:
    """Every figure from the facts, none typed in."""
    received = len(shipments)
    punctual = sum(1 for s in shipments if on_time(s))
    with_issues = sum(1 for s in shipments if s.discrepancies > 0)
    leads = [d for d in (lead_time_days(s) for s in shipments) if d is not None]
    ordered_qty, received_qty = fill(lines)
    priced, variance = price_variance_percent(lines)
    return Performance(
        shipments_received=received,
        shipments_on_time=punctual,
        shipments_with_discrepancies=with_issues,
        on_time_rate=_rate(punctual, received),
        discrepancy_rate=_rate(with_issues, received),
        ordered_quantity=ordered_qty,
        received_quantity=received_qty,
        fill_rate=_rate(received_qty, ordered_qty),
        average_lead_time_days=sum(leads) / len(leads) if leads else None,
        p90_lead_time_days=percentile(leads, 0.9),
        priced_quantity=priced,
        price_variance_percent=variance,
    )
