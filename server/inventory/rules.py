"""Pure ledger rules: which way each movement kind moves stock, and what may be issued."""

from __future__ import annotations

from datetime import date

from server.catalog.models import LotStatus
from server.core.errors import DomainError, ErrorCode, ExpiredLot, InvalidInput
from server.core.security import Permission
from server.core.validation import check_quantity
from server.inventory.models import MovementKind

INFLOWS = frozenset(
    {MovementKind.RECEIVE, MovementKind.RETURN, MovementKind.PRODUCE, MovementKind.TRANSFER_IN}
)
OUTFLOWS = frozenset(
    {MovementKind.SHIP, MovementKind.DISPENSE, MovementKind.DISPOSE, MovementKind.TRANSFER_OUT}
)
SIGNED = frozenset({MovementKind.ADJUST, MovementKind.COUNT})
# Outflows that hand stock on to a person or another site: never from an expired or held lot.
ISSUES = frozenset({MovementKind.SHIP, MovementKind.DISPENSE, MovementKind.TRANSFER_OUT})
REASON_REQUIRED = frozenset({MovementKind.ADJUST, MovementKind.DISPOSE})

KIND_PERMISSION: dict[MovementKind, Permission] = {
    MovementKind.RECEIVE: Permission.STOCK_RECEIVE,
    MovementKind.PRODUCE: Permission.STOCK_PRODUCE,
    MovementKind.TRANSFER_IN: Permission.STOCK_RECEIVE,
    MovementKind.SHIP: Permission.STOCK_ADJUST,
    MovementKind.TRANSFER_OUT: Permission.STOCK_ADJUST,
    MovementKind.DISPENSE: Permission.STOCK_DISPENSE,
    MovementKind.RETURN: Permission.STOCK_RETURN,
    MovementKind.ADJUST: Permission.STOCK_ADJUST,
    MovementKind.COUNT: Permission.COUNT_MANAGE,
    MovementKind.DISPOSE: Permission.STOCK_DISPOSE,
}


def signed_quantity(kind: MovementKind, quantity: int) -> int:
    """The change to the balance: inflows add, outflows subtract, ADJUST/COUNT carry a sign."""
    check_quantity(quantity)
    if kind in SIGNED:
        if quantity == 0:
            raise InvalidInput("an adjustment of zero changes nothing", field="quantity")
        return quantity
    if quantity <= 0:
        raise InvalidInput(f"quantity must be positive, got {quantity}", field="quantity")
    return quantity if kind in INFLOWS else -quantity


def check_issuable(
    kind: MovementKind, *, batch: str, expiry: date, status: LotStatus, on: date
) -> None:
    """Expired, quarantined or recalled lots never leave through an issue."""
    if kind not in ISSUES:
        return
    if expiry < on:
        raise ExpiredLot(f"lot {batch} expired on {expiry.isoformat()}", field="lot")
    if status is not LotStatus.RELEASED:
        raise DomainError(
            f"lot {batch} is {status.value.lower()} and cannot be issued",
            field="lot",
            code=ErrorCode.LOT_NOT_ISSUABLE,
        )


def is_issuable(expiry: date, status: LotStatus, on: date) -> bool:
    return expiry >= on and status is LotStatus.RELEASED
