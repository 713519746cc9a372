"""Pure transfer rules, no I/O: the state machine, FEFO pick suggestions, pick validation and
the discrepancies a receipt leaves. The service feeds them rows; tests feed them plain values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from server.catalog.models import LotStatus
from server.core.errors import DomainError, ErrorCode, InsufficientStock, InvalidInput
from server.inventory.rules import is_issuable
from server.shipments.models import DiscrepancyKind
from server.transfers.models import TransferStatus

S = TransferStatus


class TransferAction(StrEnum):
    REQUEST = "REQUEST"
    APPROVE = "APPROVE"
    REJECT = "REJECT"
    PICK = "PICK"
    DISPATCH = "DISPATCH"
    RECEIVE = "RECEIVE"
    CANCEL = "CANCEL"


A = TransferAction

# The whole life of a transfer. Anything not listed is refused, naming the current state.
# PICK from PICKED replaces the picks: they stay editable until dispatch.
TRANSITIONS: dict[tuple[TransferStatus, TransferAction], TransferStatus] = {
    (S.REQUESTED, A.APPROVE): S.APPROVED,
    (S.REQUESTED, A.REJECT): S.REJECTED,
    (S.REQUESTED, A.CANCEL): S.CANCELLED,
    (S.APPROVED, A.PICK): S.PICKED,
    (S.APPROVED, A.CANCEL): S.CANCELLED,
    (S.PICKED, A.PICK): S.PICKED,
    (S.PICKED, A.DISPATCH): S.DISPATCHED,
    (S.PICKED, A.CANCEL): S.CANCELLED,
    (S.DISPATCHED, A.RECEIVE): S.RECEIVED,
}

TERMINAL = frozenset({S.REJECTED, S.RECEIVED, S.CANCELLED})
IN_TRANSIT = frozenset({S.DISPATCHED})

_VERBS = {
    A.REQUEST: "requested",
    A.APPROVE: "approved",
    A.REJECT: "rejected",
    A.PICK: "picked",
    A.DISPATCH: "dispatched",
    A.RECEIVE: "received",
    A.CANCEL: "cancelled",
}


def allowed_actions(status: TransferStatus) -> list[TransferAction]:
    """What may happen next, in the table's order (for clients that grey out buttons)."""
    return [action for (state, action) in TRANSITIONS if state is status]


def next_status(status: TransferStatus, action: TransferAction, number: str = "") -> TransferStatus:
    """The state after `action`, or INVALID_TRANSITION naming the state the transfer is in."""
    target = TRANSITIONS.get((status, action))
    if target is not None:
        return target
    allowed = allowed_actions(status)
    then = (
        f"; from {status.value} it can only be " + " or ".join(_VERBS[a] for a in allowed)
        if allowed
        else f"; {status.value} is final"
    )
    if action is A.CANCEL and status in (S.DISPATCHED, S.RECEIVED):
        then = "; stock has left the source, so it can only be received now" + (
            "" if status is S.DISPATCHED else " (and it was)"
        )
    name = f"transfer {number}" if number else "the transfer"
    raise DomainError(
        f"{name} is {status.value}; it cannot be {_VERBS[action]}{then}",
        field="id",
        code=ErrorCode.INVALID_TRANSITION,
    )


# --- picking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineNeed:
    """A line to fill: how many were approved for which product."""

    line_id: int
    product_id: int
    approved: int


@dataclass(frozen=True)
class LotStock:
    """One lot on hand at the source."""

    lot_id: int
    product_id: int
    batch_number: str
    expiry_date: date
    status: LotStatus
    available: int


@dataclass(frozen=True)
class PlannedPick:
    line_id: int
    lot_id: int
    quantity: int


def suggest_picks(
    needs: Sequence[LineNeed], stock: Sequence[LotStock], on: date
) -> list[PlannedPick]:
    """First-expired-first-out from issuable lots; a line gets what there is (partial is fine).

    Expired, quarantined and recalled lots are never suggested. Stock is shared between lines
    of the same product, so two lines never both count on the same packs.
    """
    left = {s.lot_id: s.available for s in stock}
    by_product: dict[int, list[LotStock]] = defaultdict(list)
    for s in sorted(stock, key=lambda s: (s.expiry_date, s.lot_id)):
        if s.available > 0 and is_issuable(s.expiry_date, s.status, on):
            by_product[s.product_id].append(s)
    picks: list[PlannedPick] = []
    for need in needs:
        wanted = need.approved
        for lot in by_product[need.product_id]:
            if wanted <= 0:
                break
            take = min(left[lot.lot_id], wanted)
            if take > 0:
                picks.append(PlannedPick(need.line_id, lot.lot_id, take))
                left[lot.lot_id] -= take
                wanted -= take
    return picks


def check_picks(
    needs: Sequence[LineNeed],
    picks: Sequence[PlannedPick],
    stock: dict[int, LotStock],
    on: date,
    *,
    source: str,
) -> None:
    """Edited picks: the right product, issuable, on hand at the source, within what was
    approved. `stock` holds every picked lot (available 0 when the source holds none)."""
    lines = {n.line_id: n for n in needs}
    seen: set[tuple[int, int]] = set()
    per_line: dict[int, int] = defaultdict(int)
    per_lot: dict[int, int] = defaultdict(int)
    for index, pick in enumerate(picks):
        field = f"picks.{index}"
        need = lines.get(pick.line_id)
        if need is None:
            raise InvalidInput("that line is not part of this transfer", field=f"{field}.line")
        if need.approved == 0:
            raise InvalidInput("nothing was approved on that line", field=f"{field}.line")
        if (pick.line_id, pick.lot_id) in seen:
            raise InvalidInput("that lot is picked twice for the line", field=f"{field}.lot")
        seen.add((pick.line_id, pick.lot_id))
        if pick.quantity <= 0:
            raise InvalidInput(
                f"quantity must be positive, got {pick.quantity}", field=f"{field}.quantity"
            )
        lot = stock[pick.lot_id]
        if lot.product_id != need.product_id:
            raise InvalidInput(
                f"lot {lot.batch_number} is not of the line's product", field=f"{field}.lot"
            )
        if lot.expiry_date < on:
            raise DomainError(
                f"lot {lot.batch_number} expired on {lot.expiry_date.isoformat()}",
                field=f"{field}.lot",
                code=ErrorCode.EXPIRED_LOT,
            )
        if lot.status is not LotStatus.RELEASED:
            raise DomainError(
                f"lot {lot.batch_number} is {lot.status.value.lower()} and cannot be issued",
                field=f"{field}.lot",
                code=ErrorCode.LOT_NOT_ISSUABLE,
            )
        per_line[pick.line_id] += pick.quantity
        per_lot[pick.lot_id] += pick.quantity
        if per_line[pick.line_id] > need.approved:
            raise InvalidInput(
                f"{per_line[pick.line_id]} picked for a line approved for {need.approved}",
                field=f"{field}.quantity",
            )
        if per_lot[pick.lot_id] > lot.available:
            raise InsufficientStock(
                f"only {lot.available} of lot {lot.batch_number} on hand at {source}, "
                f"{per_lot[pick.lot_id]} picked",
                field=f"{field}.quantity",
            )


# --- receiving -----------------------------------------------------------------------------


def receipt_discrepancies(
    dispatched: int, received: int, damaged: int = 0
) -> list[tuple[DiscrepancyKind, int]]:
    """What a receipt leaves to explain: damaged packs (not taken into stock), packs missing
    (SHORT), packs beyond what was sent (OVER). Nothing dispatched ever silently disappears."""
    found: list[tuple[DiscrepancyKind, int]] = []
    if damaged:
        found.append((DiscrepancyKind.DAMAGED, damaged))
    gap = dispatched - received - damaged
    if gap > 0:
        found.append((DiscrepancyKind.SHORT, gap))
    elif gap < 0:
        found.append((DiscrepancyKind.OVER, -gap))
    return found
