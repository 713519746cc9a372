"""Pure purchasing rules: the purchase order state machine and how receipts move an order on.
No I/O, so all of it is tested without a database."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from server.core.errors import DomainError, ErrorCode
from server.purchasing.models import PurchaseOrderStatus

PO = PurchaseOrderStatus


class InvalidTransition(DomainError):
    """A state change the current state does not allow; the message names the current state."""

    code = ErrorCode.INVALID_TRANSITION

    def __init__(self, message: str, *, current: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.current = current


def names(statuses: Iterable[StrEnum]) -> str:
    names = sorted(s.value for s in statuses)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


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
            f"purchase order {number} is {current.value}; an order can {_ORDER_VERBS[action]} "
            f"only while it is {names(allowed)}",
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
