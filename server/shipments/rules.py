"""Pure shipment rules: the shipment state machine, receipt arithmetic (what a line still owes,
what is short, over or damaged) and overdue dates. No I/O, so all of it is tested without a
database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from server.core.errors import DomainError, ErrorCode
from server.purchasing.rules import InvalidTransition, names
from server.shipments.models import ShipmentStatus

SH = ShipmentStatus

__all__ = ["InvalidTransition"]


class AlreadyReceived(DomainError):
    """A receipt that would take more than the line still owes (and no surplus was declared)."""

    code = ErrorCode.ALREADY_RECEIVED


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
        then = f"it can become {names(allowed)}" if allowed else "it is final"
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
            f"{names(RECEIVABLE)}",
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
