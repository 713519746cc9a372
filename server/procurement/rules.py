"""Pure procurement rules: the order and shipment state machines, receipt arithmetic, document
numbers, overdue dates and supplier performance maths. No I/O, so all of it is tested without
a database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from server.core.errors import DomainError, ErrorCode
from server.procurement.models import PurchaseOrderStatus, ShipmentStatus

PO = PurchaseOrderStatus
SH = ShipmentStatus


class InvalidTransition(DomainError):
    """A state change the current state does not allow; the message names the current state."""

    code = ErrorCode.INVALID_TRANSITION

    def __init__(self, message: str, *, current: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.current = current


class AlreadyReceived(DomainError):
    """A receipt that would take more than the line still owes (and no surplus was declared)."""

    code = ErrorCode.ALREADY_RECEIVED


def _names(statuses: Iterable[StrEnum]) -> str:
    names = sorted(s.value for s in statuses)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# --- purchase orders ---------------------------------------------------------------------------


class OrderAction(StrEnum):
    EDIT = "EDIT"
    SUBMIT = "SUBMIT"
    ACKNOWLEDGE = "ACKNOWLEDGE"
    CANCEL = "CANCEL"
    SHIP = "SHIP"


# What each action needs the order to be in, and where it leaves it (None: status unchanged).
ORDER_ACTIONS: dict[
    OrderAction, tuple[frozenset[PurchaseOrderStatus], PurchaseOrderStatus | None]
] = {
    OrderAction.EDIT: (frozenset({PO.DRAFT}), None),
    OrderAction.SUBMIT: (frozenset({PO.DRAFT}), PO.SUBMITTED),
    OrderAction.ACKNOWLEDGE: (frozenset({PO.SUBMITTED}), PO.ACKNOWLEDGED),
    # Never after a receipt: received goods cannot be un-ordered.
    OrderAction.CANCEL: (frozenset({PO.DRAFT, PO.SUBMITTED, PO.ACKNOWLEDGED}), PO.CANCELLED),
    OrderAction.SHIP: (frozenset({PO.ACKNOWLEDGED, PO.PARTIALLY_RECEIVED}), None),
}

_ORDER_VERBS = {
    OrderAction.EDIT: "have its lines edited",
    OrderAction.SUBMIT: "be submitted",
    OrderAction.ACKNOWLEDGE: "be acknowledged",
    OrderAction.CANCEL: "be cancelled",
    OrderAction.SHIP: "have shipments created against it",
}


def check_order_action(
    number: str, current: PurchaseOrderStatus, action: OrderAction
) -> PurchaseOrderStatus:
    """The status after `action`, or InvalidTransition naming the current status."""
    allowed, target = ORDER_ACTIONS[action]
    if current not in allowed:
        raise InvalidTransition(
            f"purchase order {number} is {current.value}; only a {_names(allowed)} order can "
            f"{_ORDER_VERBS[action]}",
            current=current.value,
            field="order",
        )
    return target or current


def order_status_after_receipt(
    current: PurchaseOrderStatus, lines: Iterable[tuple[int, int]]
) -> PurchaseOrderStatus:
    """From (ordered, received) per line: RECEIVED when every line is complete, PARTIALLY_RECEIVED
    once anything arrived; orders that are not open for receipt keep their status."""
    if current not in (PO.ACKNOWLEDGED, PO.PARTIALLY_RECEIVED):
        return current
    pairs = list(lines)
    if pairs and all(received >= ordered for ordered, received in pairs):
        return PO.RECEIVED
    if any(received > 0 for _, received in pairs):
        return PO.PARTIALLY_RECEIVED
    return current


# --- shipments ---------------------------------------------------------------------------------

SHIPMENT_TRANSITIONS: dict[ShipmentStatus, frozenset[ShipmentStatus]] = {
    SH.PLANNED: frozenset({SH.DISPATCHED, SH.CANCELLED}),
    # IN_TRANSIT -> IN_TRANSIT is a position update (a new event with a location note).
    # RECEIVED may follow any state after dispatch: goods in hand prove they arrived, even when
    # the carrier never reported DELIVERED.
    SH.DISPATCHED: frozenset({SH.IN_TRANSIT, SH.DELIVERED, SH.RECEIVED}),
    SH.IN_TRANSIT: frozenset({SH.IN_TRANSIT, SH.DELIVERED, SH.RECEIVED}),
    SH.DELIVERED: frozenset({SH.RECEIVED}),
    SH.RECEIVED: frozenset(),
    SH.CANCELLED: frozenset(),
}
SENDER_STATUSES = frozenset({SH.DISPATCHED, SH.IN_TRANSIT, SH.DELIVERED, SH.CANCELLED})
RECEIVER_STATUSES = frozenset({SH.RECEIVED})
# States in which the receiver may book packs in, line by line.
RECEIVABLE = frozenset(s for s, targets in SHIPMENT_TRANSITIONS.items() if SH.RECEIVED in targets)
OPEN_SHIPMENT = frozenset(set(SH) - {SH.RECEIVED, SH.CANCELLED})


def check_shipment_transition(
    number: str, current: ShipmentStatus, target: ShipmentStatus
) -> ShipmentStatus:
    """`target`, or InvalidTransition naming the current status and what it may become."""
    allowed = SHIPMENT_TRANSITIONS[current]
    if target not in allowed:
        then = f"it can become {_names(allowed)}" if allowed else "it is final"
        raise InvalidTransition(
            f"shipment {number} is {current.value} and cannot become {target.value}; {then}",
            current=current.value,
            field="status",
        )
    return target


def check_receivable(number: str, current: ShipmentStatus) -> None:
    if current not in RECEIVABLE:
        raise InvalidTransition(
            f"shipment {number} is {current.value}; packs can be received only while it is "
            f"{_names(RECEIVABLE)}",
            current=current.value,
            field="shipment",
        )


@dataclass(frozen=True)
class LineReceipt:
    """What one receipt adds to a line: good packs into stock, damaged packs, declared surplus."""

    good: int
    damaged: int
    over: int


def plan_line_receipt(
    *,
    shipped: int,
    received: int,
    damaged: int,
    good_now: int,
    damaged_now: int,
    declare_over: bool,
    line_label: str,
) -> LineReceipt:
    """Check one receipt against what the line still owes.

    Packs accounted for (good + damaged) may exceed what was shipped only when the receiver
    declares the surplus; it is then recorded as an OVER discrepancy, so received <= shipped +
    declared over always holds. A second receipt of an already complete line is refused, naming
    what was received, which is how a concurrent double receipt ends.
    """
    if good_now < 0 or damaged_now < 0:
        raise DomainError("quantities cannot be negative", field="quantity")
    if good_now + damaged_now == 0:
        raise DomainError("receive at least one pack (good or damaged)", field="quantity")
    remaining = max(shipped - received - damaged, 0)
    excess = good_now + damaged_now - remaining
    if excess > 0 and not declare_over:
        so_far = f"{received} received" + (f" and {damaged} damaged" if damaged else "")
        if remaining == 0:
            message = (
                f"{line_label} is already fully received ({so_far} of {shipped} shipped); "
                "declare a surplus (declareOver) if more packs really arrived"
            )
        else:
            message = (
                f"{line_label}: {so_far} of {shipped} shipped, so only {remaining} more can be "
                f"received, not {good_now + damaged_now}; declare the surplus (declareOver) to "
                "record an OVER discrepancy"
            )
        raise AlreadyReceived(message, field="quantity")
    return LineReceipt(good=good_now, damaged=damaged_now, over=max(excess, 0))


def shortfall(shipped: int, received: int, damaged: int) -> int:
    """Packs neither received nor reported damaged when receipt is completed: SHORT."""
    return max(shipped - received - damaged, 0)


# --- numbers and dates ------------------------------------------------------------------------


def expected_date(shipment_expected: datetime | None, order_expected: date | None) -> date | None:
    """A shipment is due when its sender said; else when the order was due."""
    if shipment_expected is not None:
        return shipment_expected.date()
    return order_expected


def days_overdue(expected: date | None, status: ShipmentStatus, today: date) -> int:
    """Whole days past the expected date for a shipment still open; 0 when not overdue."""
    if expected is None or status not in OPEN_SHIPMENT:
        return 0
    return max((today - expected).days, 0)


def overdue_key(shipment_id: int) -> str:
    return f"shipment-overdue:{shipment_id}"


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


# --- supplier performance ---------------------------------------------------------------------


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
