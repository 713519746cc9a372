"""Transfer use cases: request → approve/reject → pick → dispatch → receive, or cancel.

Each write is one transaction that locks the transfer row (so two people never dispatch or
receive it twice), checks the move against the pure state machine in `rules`, writes the
ledger through `LedgerService.apply`, the audit trail, and a "transfer" event.

Who may do what follows the stock: the requester needs the destination in scope (a nurse asks
for her ward), approving, picking and dispatching need the source (the manager who owns the
stock), receiving needs the destination. A transfer may cross organisations: each side's
movement is reported by the organisation of its location, naming the other as counterparty.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product
from server.core import audit
from server.core.audit import AuditEvent
from server.core.db import Database, utcnow
from server.core.errors import DomainError, Forbidden, InsufficientStock, InvalidInput, NotFound
from server.core.events import Event, EventBus, SharedLookups
from server.core.numbering import allocate
from server.core.security import Permission, Principal
from server.core.steps import took_step
from server.core.validation import get_or_not_found, optional_text, required_text
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import AnyMovement, Balance, Movement, MovementKind
from server.inventory.rules import KIND_PERMISSION
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location
from server.shipments.models import Discrepancy
from server.transfers.models import Transfer, TransferLine, TransferPick, TransferStatus
from server.transfers.rules import (
    IN_TRANSIT,
    LineNeed,
    LotStock,
    PlannedPick,
    TransferAction,
    check_picks,
    next_status,
    receipt_discrepancies,
    suggest_picks,
)

TRANSFER_TOPIC = "transfer"
MAX_QUANTITY = 1_000_000_000  # far above any order, well inside the INTEGER columns
MAX_LINES = 200


# --- inputs and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRequest:
    product_id: int
    quantity: int


@dataclass(frozen=True)
class LineApproval:
    line_id: int
    approved_quantity: int


@dataclass(frozen=True)
class PickRequest:
    line_id: int
    lot_id: int
    quantity: int


@dataclass(frozen=True)
class ReceiptLine:
    """What arrived of one pick: `received` goes into stock, `damaged` does not."""

    pick_id: int
    received_quantity: int
    damaged_quantity: int = 0
    note: str | None = None


@dataclass(frozen=True)
class SuggestedPick:
    line_id: int
    lot_id: int
    product_id: int
    quantity: int
    available: int


@dataclass(frozen=True)
class InTransit:
    """Packs of one lot that left the source and have not been received yet."""

    transfer_id: int
    pick_id: int
    lot_id: int
    product_id: int
    quantity: int
    source_id: int
    destination_id: int
    since: datetime


@dataclass(frozen=True)
class TransferStep:
    """One entry of a transfer's audit trail, for people."""

    action: str
    status: str | None
    actor: str
    role: str
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class TransferResult:
    transfer: Transfer
    movements: list[AnyMovement] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    replayed: bool = False


@dataclass(frozen=True)
class TransferChange:
    """One step seen live (`watch`): what happened, the status it left, the transfer now."""

    action: TransferAction
    status: TransferStatus
    transfer: Transfer


# --- helpers -----------------------------------------------------------------------------------


def _require_either(
    principal: Principal,
    transfer: Transfer,
    first: tuple[Permission, int],
    second: tuple[Permission, int],
) -> None:
    """Allowed if either (permission, location) pair is; otherwise the first refusal."""
    try:
        principal.require(first[0], location_id=first[1])
    except Forbidden:
        try:
            principal.require(second[0], location_id=second[1])
        except Forbidden:
            raise Forbidden(
                "you may neither withdraw this transfer for its destination "
                "nor decide on it for its source",
                field="id",
            ) from None


def sees_transfer(principal: Principal, source_id: int, destination_id: int) -> bool:
    return principal.sees_location(source_id) or principal.sees_location(destination_id)


def check_visible(principal: Principal, rows: Sequence[Transfer | None]) -> None:
    """A transfer is read by whoever sees either end; any other one refuses the whole read."""
    principal.require(Permission.STOCK_READ)
    for row in rows:
        if row is not None and not sees_transfer(principal, row.source_id, row.destination_id):
            raise Forbidden("that transfer is outside your scope: neither end is yours")


# The transfer behind one event, read once however many subscribers receive it.
_event_transfers = SharedLookups()


async def _lock(session: AsyncSession, transfer_id: int) -> Transfer:
    transfer = (
        await session.execute(select(Transfer).where(Transfer.id == transfer_id).with_for_update())
    ).scalar_one_or_none()
    if transfer is None:
        raise NotFound(f"transfer {transfer_id} does not exist", field="id")
    return transfer


async def _lines(session: AsyncSession, transfer_id: int) -> list[TransferLine]:
    stmt = select(TransferLine).where(TransferLine.transfer_id == transfer_id)
    return list((await session.execute(stmt.order_by(TransferLine.id))).scalars())


async def _picks(session: AsyncSession, line_ids: Sequence[int]) -> list[TransferPick]:
    if not line_ids:
        return []
    stmt = select(TransferPick).where(TransferPick.line_id.in_(line_ids)).order_by(TransferPick.id)
    return list((await session.execute(stmt)).scalars())


async def _locations(session: AsyncSession, transfer: Transfer) -> tuple[Location, Location]:
    source = await session.get(Location, transfer.source_id)
    destination = await session.get(Location, transfer.destination_id)
    assert source is not None and destination is not None  # foreign keys
    return source, destination


async def _stock_at(
    session: AsyncSession,
    location_id: int,
    *,
    product_ids: Sequence[int] = (),
    lot_ids: Sequence[int] = (),
) -> list[LotStock]:
    """Lots on hand at a location, of some products (with stock) or some lots (even if none)."""
    stmt = select(Lot, func.coalesce(Balance.quantity, 0)).outerjoin(
        Balance, (Balance.lot_id == Lot.id) & (Balance.location_id == location_id)
    )
    if product_ids:
        stmt = stmt.where(Lot.product_id.in_(sorted(set(product_ids))), Balance.quantity > 0)
    else:
        stmt = stmt.where(Lot.id.in_(sorted(set(lot_ids))))
    rows = (await session.execute(stmt.order_by(Lot.expiry_date, Lot.id))).all()
    return [
        LotStock(
            lot_id=lot.id,
            product_id=lot.product_id,
            batch_number=lot.batch_number,
            expiry_date=lot.expiry_date,
            status=lot.status,
            available=quantity,
        )
        for lot, quantity in rows
    ]


def _needs(lines: Sequence[TransferLine]) -> list[LineNeed]:
    return [
        LineNeed(line.id, line.product_id, line.approved_quantity or 0)
        for line in lines
        if (line.approved_quantity or 0) > 0
    ]


def _counterparty(mine: Location, theirs: Location) -> int | None:
    """Named only across organisations: within one, the two movements cancel out."""
    return theirs.organisation_id if theirs.organisation_id != mine.organisation_id else None


def _check_quantity(value: int, field: str, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_QUANTITY:
        raise InvalidInput(
            f"quantity must be between {low} and {MAX_QUANTITY}, got {value}", field=field
        )


def _snapshot(transfer: Transfer) -> dict[str, object]:
    return audit.snapshot(transfer, "number", "status", "source_id", "destination_id")


def _lines_snapshot(lines: Sequence[TransferLine]) -> list[dict[str, object]]:
    return [
        audit.snapshot(
            x,
            line_id="id",
            product_id="product_id",
            requested="requested_quantity",
            approved="approved_quantity",
        )
        for x in lines
    ]


def _picks_snapshot(picks: Sequence[TransferPick]) -> list[dict[str, object]]:
    return [
        audit.snapshot(
            p,
            pick_id="id",
            line_id="line_id",
            lot_id="lot_id",
            quantity="quantity",
            received="received_quantity",
        )
        for p in picks
    ]


def _event(transfer: Transfer, action: TransferAction) -> Event:
    return Event(
        TRANSFER_TOPIC,
        {
            "transfer_id": transfer.id,
            "source_id": transfer.source_id,
            "destination_id": transfer.destination_id,
            "status": transfer.status.value,
            "action": action.value,
            "event_id": uuid.uuid4().hex,
        },
    )


async def _earliest_request(session: AsyncSession, transfer_ids: Sequence[int]) -> datetime | None:
    stmt = select(func.min(Transfer.requested_at)).where(Transfer.id.in_(transfer_ids))
    return (await session.execute(stmt)).scalar_one_or_none()


class TransferService:
    def __init__(self, db: Database, bus: EventBus, ledger: LedgerService) -> None:
        self.db = db
        self.bus = bus
        self.ledger = ledger

    async def _took_step(
        self,
        session: AsyncSession,
        principal: Principal,
        transfer: Transfer,
        action: TransferAction,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        reason: str | None = None,
        also: Sequence[audit.AuditEntry] = (),
    ) -> None:
        """A transfer took a step: flush, emit its event, and audit it as `transfer.<action>`.

        The audited `after` is the transfer's snapshot now plus `after`; `also` are further
        entries for the same chained write. Call it last: the audit holds the chain's lock.
        """
        await session.flush()  # the snapshot and the event need the transfer's id
        entry = audit.AuditEntry(
            action=f"transfer.{action.value.lower()}",
            entity_type="Transfer",
            entity_id=transfer.id,
            before=before,
            after={**_snapshot(transfer), **(after or {})},
            reason=reason,
        )
        await took_step(
            session, self.bus, principal, entry, events=[_event(transfer, action)], also=also
        )

    # --- writes ---------------------------------------------------------------------------------

    async def request(
        self,
        principal: Principal,
        *,
        source_id: int,
        destination_id: int,
        lines: Sequence[LineRequest],
        needed_by: date | None = None,
        note: str | None = None,
    ) -> Transfer:
        """Ask for products to be sent to a location you look after."""
        principal.require(Permission.TRANSFER_REQUEST, location_id=destination_id)
        note = optional_text(note, "note", max_length=500)
        if source_id == destination_id:
            raise InvalidInput("source and destination must differ", field="destination")
        if not lines:
            raise InvalidInput("ask for at least one product", field="lines")
        if len(lines) > MAX_LINES:
            raise InvalidInput(f"at most {MAX_LINES} lines per transfer", field="lines")
        seen: set[int] = set()
        for index, line in enumerate(lines):
            _check_quantity(line.quantity, f"lines.{index}.quantity")
            if line.product_id in seen:
                raise InvalidInput(
                    "that product is already on another line; ask once with the total",
                    field=f"lines.{index}.product",
                )
            seen.add(line.product_id)
        if needed_by is not None and needed_by < utcnow().date():
            raise InvalidInput("neededBy is in the past", field="needed_by")
        async with self.db.write() as session:
            for field_name, location_id in (("source", source_id), ("destination", destination_id)):
                location = await session.get(Location, location_id)
                if location is None or not location.active:
                    raise NotFound(f"location {location_id} does not exist", field=field_name)
            products = {
                p.id: p
                for p in (
                    await session.execute(select(Product).where(Product.id.in_(sorted(seen))))
                ).scalars()
            }
            for index, line in enumerate(lines):
                product = products.get(line.product_id)
                if product is None or not product.active:
                    raise NotFound(
                        f"the product of line {index + 1} does not exist or is inactive",
                        field=f"lines.{index}.product",
                    )
            now = utcnow()
            transfer = Transfer(
                number=await allocate(session, Transfer.number, "TR", now.year),
                source_id=source_id,
                destination_id=destination_id,
                status=TransferStatus.REQUESTED,
                needed_by=needed_by,
                note=note,
                requested_by=principal.user_id,
                requested_at=now,
            )
            session.add(transfer)
            await session.flush()
            rows = [
                TransferLine(
                    transfer_id=transfer.id,
                    product_id=line.product_id,
                    requested_quantity=line.quantity,
                )
                for line in lines
            ]
            session.add_all(rows)
            await session.flush()  # line ids for the audit trail
            await self._took_step(
                session,
                principal,
                transfer,
                TransferAction.REQUEST,
                after={"needed_by": needed_by, "note": note, "lines": _lines_snapshot(rows)},
            )
        return transfer

    async def approve(
        self,
        principal: Principal,
        transfer_id: int,
        approvals: Sequence[LineApproval] | None = None,
    ) -> Transfer:
        """Agree to send; per line as asked or less (partial fulfilment), down to nothing."""
        async with self.db.write() as session:
            transfer = await _lock(session, transfer_id)
            principal.require(Permission.TRANSFER_APPROVE, location_id=transfer.source_id)
            status = next_status(transfer.status, TransferAction.APPROVE, transfer.number)
            lines = await _lines(session, transfer.id)
            by_id = {line.id: line for line in lines}
            approved = {line.id: line.requested_quantity for line in lines}
            seen: set[int] = set()
            for index, item in enumerate(approvals or []):
                line = by_id.get(item.line_id)
                if line is None:
                    raise NotFound(
                        f"line {item.line_id} is not part of transfer {transfer.number}",
                        field=f"lines.{index}.line",
                    )
                if item.line_id in seen:
                    raise InvalidInput("that line is listed twice", field=f"lines.{index}.line")
                seen.add(item.line_id)
                if not 0 <= item.approved_quantity <= line.requested_quantity:
                    raise InvalidInput(
                        f"approve between 0 and the {line.requested_quantity} requested, got "
                        f"{item.approved_quantity}",
                        field=f"lines.{index}.approved_quantity",
                    )
                approved[item.line_id] = item.approved_quantity
            if not any(approved.values()):
                raise InvalidInput(
                    "approving nothing at all is a rejection; reject it with a reason",
                    field="lines",
                )
            for line in lines:
                line.approved_quantity = approved[line.id]
            before = _snapshot(transfer)
            transfer.status = status
            transfer.decided_by = principal.user_id
            transfer.decided_at = utcnow()
            await self._took_step(
                session,
                principal,
                transfer,
                TransferAction.APPROVE,
                before=before,
                after={"lines": _lines_snapshot(lines)},
            )
        return transfer

    async def reject(self, principal: Principal, transfer_id: int, reason: str) -> Transfer:
        """Refuse the request; the reason tells the requester why."""
        reason = required_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            transfer = await _lock(session, transfer_id)
            principal.require(Permission.TRANSFER_APPROVE, location_id=transfer.source_id)
            status = next_status(transfer.status, TransferAction.REJECT, transfer.number)
            before = _snapshot(transfer)
            transfer.status = status
            transfer.decided_by = principal.user_id
            transfer.decided_at = utcnow()
            transfer.rejection_reason = reason
            await self._took_step(
                session, principal, transfer, TransferAction.REJECT, before=before, reason=reason
            )
        return transfer

    async def pick(
        self,
        principal: Principal,
        transfer_id: int,
        picks: Sequence[PickRequest] | None = None,
    ) -> Transfer:
        """Choose the lots to send: FEFO when none are given, else the edited picks (checked).

        Picking again before dispatch replaces the picks. Nothing is reserved: dispatch checks
        the stock once more, inside its own transaction.
        """
        async with self.db.write() as session:
            transfer = await _lock(session, transfer_id)
            principal.require(Permission.TRANSFER_FULFIL, location_id=transfer.source_id)
            status = next_status(transfer.status, TransferAction.PICK, transfer.number)
            source, _ = await _locations(session, transfer)
            lines = await _lines(session, transfer.id)
            needs = _needs(lines)
            today = utcnow().date()
            if picks is None:
                stock = await _stock_at(
                    session, transfer.source_id, product_ids=[n.product_id for n in needs]
                )
                planned = suggest_picks(needs, stock, today)
                if not planned:
                    raise InsufficientStock(
                        f"nothing issuable on hand at {source.code} for transfer "
                        f"{transfer.number} (expired and held lots excluded)",
                        field="picks",
                    )
            else:
                if not picks:
                    raise InvalidInput(
                        "pick at least one pack; to send nothing, cancel the transfer",
                        field="picks",
                    )
                planned = [PlannedPick(p.line_id, p.lot_id, p.quantity) for p in picks]
                stock_rows = await _stock_at(
                    session, transfer.source_id, lot_ids=[p.lot_id for p in planned]
                )
                stock_by_lot = {s.lot_id: s for s in stock_rows}
                for index, pick in enumerate(planned):
                    if pick.lot_id not in stock_by_lot:
                        raise NotFound(
                            f"lot {pick.lot_id} does not exist", field=f"picks.{index}.lot"
                        )
                all_lines = [LineNeed(x.id, x.product_id, x.approved_quantity or 0) for x in lines]
                check_picks(all_lines, planned, stock_by_lot, today, source=source.code)
            old = await _picks(session, [x.id for x in lines])
            if old:
                await session.execute(
                    delete(TransferPick).where(TransferPick.id.in_([p.id for p in old]))
                )
            rows = [
                TransferPick(line_id=p.line_id, lot_id=p.lot_id, quantity=p.quantity)
                for p in planned
            ]
            session.add_all(rows)
            before = {**_snapshot(transfer), "picks": _picks_snapshot(old)}
            transfer.status = status
            await session.flush()  # pick ids for the audit trail
            await self._took_step(
                session,
                principal,
                transfer,
                TransferAction.PICK,
                before=before,
                after={"suggested": picks is None, "picks": _picks_snapshot(rows)},
            )
        return transfer

    async def dispatch(
        self, principal: Principal, transfer_id: int, idempotency_key: str | None = None
    ) -> TransferResult:
        """Stock leaves the source: one TRANSFER_OUT per pick, all or nothing.

        With a key, a replay (an offline outbox resending after a lost answer) returns the
        first dispatch instead of INVALID_TRANSITION.
        """
        return await self._once(
            principal,
            "transfer.dispatch",
            idempotency_key,
            {"transfer_id": transfer_id},
            lambda session: self._dispatch(session, principal, transfer_id),
        )

    async def _once(
        self,
        principal: Principal,
        operation: str,
        key: str | None,
        payload: dict[str, Any],
        work: Callable[[AsyncSession], Awaitable[TransferResult]],
        *,
        with_discrepancies: bool = False,
    ) -> TransferResult:
        """`work` at most once per idempotency key; a replay rebuilds the first result (a
        receipt's with the transfer's discrepancies, which only a receipt records)."""
        transfer_id = payload["transfer_id"]

        async def replay(session: AsyncSession, movements: list[AnyMovement]) -> TransferResult:
            transfer = await get_or_not_found(session, Transfer, transfer_id, "transfer")
            discrepancies: list[Discrepancy] = []
            if with_discrepancies:
                discrepancies = list(
                    (
                        await session.execute(
                            select(Discrepancy)
                            .where(Discrepancy.transfer_id == transfer_id)
                            .order_by(Discrepancy.id)
                        )
                    ).scalars()
                )
            return TransferResult(transfer, movements, discrepancies, replayed=True)

        return await run_once(
            self.db,
            principal,
            key=clean_key(key),
            operation=operation,
            fingerprint=request_hash(operation, payload),
            work=work,
            movements_of=lambda result: result.movements,
            replay=replay,
        )

    async def _dispatch(
        self, session: AsyncSession, principal: Principal, transfer_id: int
    ) -> TransferResult:
        transfer = await _lock(session, transfer_id)
        principal.require(Permission.TRANSFER_FULFIL, location_id=transfer.source_id)
        status = next_status(transfer.status, TransferAction.DISPATCH, transfer.number)
        source, destination = await _locations(session, transfer)
        picks = await _picks(session, [x.id for x in await _lines(session, transfer.id)])
        if not picks:  # pragma: no cover - PICKED always has picks
            raise InvalidInput("nothing is picked", field="id")
        requests = [
            MovementRequest(
                kind=MovementKind.TRANSFER_OUT,
                location_id=transfer.source_id,
                quantity=pick.quantity,
                lot_id=pick.lot_id,
                reference=transfer.number,
                counterparty_id=_counterparty(source, destination),
            )
            for pick in picks
        ]
        try:
            written = await self.ledger.apply(
                session, principal.granted(KIND_PERMISSION[MovementKind.TRANSFER_OUT]), requests
            )
        except DomainError as error:
            # The ledger names its own inputs; here the transfer is what the user sent.
            raise type(error)(
                f"transfer {transfer.number} cannot be dispatched: {error.message}",
                field="id",
                code=error.code,
            ) from None
        before = _snapshot(transfer)
        transfer.status = status
        transfer.dispatched_by = principal.user_id
        transfer.dispatched_at = utcnow()
        await self._took_step(
            session,
            principal,
            transfer,
            TransferAction.DISPATCH,
            before=before,
            after={"picks": _picks_snapshot(picks), "movement_ids": [m.id for m, _ in written]},
        )
        return TransferResult(transfer, [m for m, _ in written])

    async def receive(
        self,
        principal: Principal,
        transfer_id: int,
        lines: Sequence[ReceiptLine] | None = None,
        idempotency_key: str | None = None,
    ) -> TransferResult:
        """What arrived goes into stock (TRANSFER_IN); every difference becomes a discrepancy.

        Picks not mentioned arrived in full. Damaged packs are not taken into stock: they stay
        a DAMAGED discrepancy next to any SHORT or OVER, linked to the transfer, never hidden.
        """
        payload = {
            "transfer_id": transfer_id,
            "lines": None if lines is None else [asdict(line) for line in lines],
        }
        return await self._once(
            principal,
            "transfer.receive",
            idempotency_key,
            payload,
            lambda session: self._receive(session, principal, transfer_id, lines),
            with_discrepancies=True,
        )

    async def _receive(
        self,
        session: AsyncSession,
        principal: Principal,
        transfer_id: int,
        lines: Sequence[ReceiptLine] | None,
    ) -> TransferResult:
        transfer = await _lock(session, transfer_id)
        principal.require(Permission.TRANSFER_RECEIVE, location_id=transfer.destination_id)
        status = next_status(transfer.status, TransferAction.RECEIVE, transfer.number)
        source, destination = await _locations(session, transfer)
        picks = await _picks(session, [x.id for x in await _lines(session, transfer.id)])
        by_id = {p.id: p for p in picks}
        given: dict[int, ReceiptLine] = {}
        notes: dict[int, str | None] = {}
        for index, item in enumerate(lines or []):
            if item.pick_id not in by_id:
                raise NotFound(
                    f"pick {item.pick_id} is not part of transfer {transfer.number}",
                    field=f"lines.{index}.pick",
                )
            if item.pick_id in given:
                raise InvalidInput("that pick is listed twice", field=f"lines.{index}.pick")
            _check_quantity(
                item.received_quantity, f"lines.{index}.received_quantity", allow_zero=True
            )
            _check_quantity(
                item.damaged_quantity, f"lines.{index}.damaged_quantity", allow_zero=True
            )
            notes[item.pick_id] = optional_text(item.note, f"lines.{index}.note", max_length=500)
            given[item.pick_id] = item
        now = utcnow()
        requests: list[MovementRequest] = []
        discrepancies: list[Discrepancy] = []
        for pick in picks:
            counted = given.get(pick.id)
            received = counted.received_quantity if counted else pick.quantity
            damaged = counted.damaged_quantity if counted else 0
            pick.received_quantity = received
            if received:
                requests.append(
                    MovementRequest(
                        kind=MovementKind.TRANSFER_IN,
                        location_id=transfer.destination_id,
                        quantity=received,
                        lot_id=pick.lot_id,
                        reference=transfer.number,
                        counterparty_id=_counterparty(destination, source),
                        occurred_at=now,
                    )
                )
            for kind, quantity in receipt_discrepancies(pick.quantity, received, damaged):
                discrepancies.append(
                    Discrepancy(
                        transfer_id=transfer.id,
                        lot_id=pick.lot_id,
                        kind=kind,
                        quantity=quantity,
                        note=notes.get(pick.id),
                        details={
                            "transfer": transfer.number,
                            "pick_id": pick.id,
                            "dispatched": pick.quantity,
                            "received": received,
                            "damaged": damaged,
                        },
                        recorded_by=principal.user_id,
                        recorded_at=now,
                    )
                )
        written = (
            await self.ledger.apply(
                session, principal.granted(KIND_PERMISSION[MovementKind.TRANSFER_IN]), requests
            )
            if requests
            else []
        )
        session.add_all(discrepancies)
        before = _snapshot(transfer)
        transfer.status = status
        transfer.received_by = principal.user_id
        transfer.received_at = now
        await session.flush()  # discrepancy ids for the audit trail
        await self._took_step(
            session,
            principal,
            transfer,
            TransferAction.RECEIVE,
            before=before,
            after={
                "picks": _picks_snapshot(picks),
                "movement_ids": [m.id for m, _ in written],
                "discrepancy_ids": [d.id for d in discrepancies],
            },
            also=[
                audit.AuditEntry(
                    action="transfer.discrepancy",
                    entity_type="Discrepancy",
                    entity_id=d.id,
                    after={
                        **audit.snapshot(d, "transfer_id", "lot_id", "kind", "quantity"),
                        **d.details,
                    },
                    reason=d.note,
                )
                for d in discrepancies
            ],
        )
        return TransferResult(transfer, [m for m, _ in written], discrepancies)

    async def cancel(self, principal: Principal, transfer_id: int, reason: str) -> Transfer:
        """Withdraw before dispatch: the requester's side or the source's manager may."""
        reason = required_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            transfer = await _lock(session, transfer_id)
            _require_either(
                principal,
                transfer,
                (Permission.TRANSFER_REQUEST, transfer.destination_id),
                (Permission.TRANSFER_APPROVE, transfer.source_id),
            )
            status = next_status(transfer.status, TransferAction.CANCEL, transfer.number)
            picks = await _picks(session, [x.id for x in await _lines(session, transfer.id)])
            before = {**_snapshot(transfer), "picks": _picks_snapshot(picks)}
            transfer.status = status
            await self._took_step(
                session, principal, transfer, TransferAction.CANCEL, before=before, reason=reason
            )
        return transfer

    # --- reads (access is checked by the caller, like every node) ------------------------------

    async def in_transit_seen_by(
        self, principal: Principal, location_id: int | None = None
    ) -> list[InTransit]:
        """Stock on the road from or to `location_id` (checked), else anywhere `principal` sees."""
        locations = principal.readable_locations(Permission.STOCK_READ, location_id)
        return await self.in_transit(location_ids=locations)

    async def watch(
        self,
        principal: Principal,
        *,
        transfer_id: int | None = None,
        location_ids: Sequence[int] = (),
    ) -> AsyncGenerator[TransferChange, None]:
        """Steps of transfers `principal` sees, after commit, as they happen: of one transfer,
        or of those from or to some locations (each checked), else of every visible one."""
        principal.require(Permission.STOCK_READ)
        if transfer_id is not None:
            async with self.db.read() as session:
                row = await session.get(Transfer, transfer_id)
            if row is None:
                raise NotFound("that transfer does not exist", field="transfer")
            check_visible(principal, [row])
        wanted = set(location_ids)
        for location_id in wanted:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        async with self.bus.subscribe(TRANSFER_TOPIC) as subscription:
            while True:
                payload = (await subscription.get()).payload
                ends = {payload["source_id"], payload["destination_id"]}
                if transfer_id is not None and payload["transfer_id"] != transfer_id:
                    continue
                if wanted and not ends & wanted:
                    continue
                if not sees_transfer(principal, payload["source_id"], payload["destination_id"]):
                    continue
                transfer = await self._event_transfer(payload)
                if transfer is None:  # pragma: no cover - transfers are never deleted
                    continue
                yield TransferChange(
                    TransferAction(payload["action"]), TransferStatus(payload["status"]), transfer
                )

    async def _event_transfer(self, payload: dict[str, Any]) -> Transfer | None:
        async def load() -> Transfer | None:
            async with self.db.read() as session:
                return await session.get(Transfer, payload["transfer_id"])

        return await _event_transfers.get(payload["event_id"], load)

    async def suggestions(self, transfer_ids: Sequence[int]) -> list[list[SuggestedPick]]:
        """Live FEFO suggestion per transfer (APPROVED or PICKED), in the order asked."""
        async with self.db.read() as session:
            transfers = {
                t.id: t
                for t in (
                    await session.execute(select(Transfer).where(Transfer.id.in_(transfer_ids)))
                ).scalars()
            }
            today = utcnow().date()
            result: list[list[SuggestedPick]] = []
            for transfer_id in transfer_ids:
                transfer = transfers.get(transfer_id)
                if transfer is None or transfer.status not in (
                    TransferStatus.APPROVED,
                    TransferStatus.PICKED,
                ):
                    result.append([])
                    continue
                needs = _needs(await _lines(session, transfer.id))
                stock = await _stock_at(
                    session, transfer.source_id, product_ids=[n.product_id for n in needs]
                )
                lots = {s.lot_id: s for s in stock}
                result.append(
                    [
                        SuggestedPick(
                            line_id=p.line_id,
                            lot_id=p.lot_id,
                            product_id=lots[p.lot_id].product_id,
                            quantity=p.quantity,
                            available=lots[p.lot_id].available,
                        )
                        for p in suggest_picks(needs, stock, today)
                    ]
                )
            return result

    async def in_transit(
        self,
        *,
        transfer_ids: Sequence[int] | None = None,
        location_ids: Sequence[int] | None = None,
    ) -> list[InTransit]:
        """Picks of dispatched, not yet received transfers: stock that is on the road.

        `location_ids` keeps transfers whose source or destination is one of them.
        """
        T, L, P = Transfer, TransferLine, TransferPick
        stmt = (
            select(T, P, L.product_id)
            .join(L, L.transfer_id == T.id)
            .join(P, P.line_id == L.id)
            .where(T.status.in_(sorted(IN_TRANSIT)))
        )
        if transfer_ids is not None:
            stmt = stmt.where(T.id.in_(transfer_ids))
        if location_ids is not None:
            stmt = stmt.where(
                or_(T.source_id.in_(location_ids), T.destination_id.in_(location_ids))
            )
        async with self.db.read() as session:
            rows = (await session.execute(stmt.order_by(T.dispatched_at, T.id, P.id))).all()
        return [
            InTransit(
                transfer_id=t.id,
                pick_id=p.id,
                lot_id=p.lot_id,
                product_id=product_id,
                quantity=p.quantity,
                source_id=t.source_id,
                destination_id=t.destination_id,
                since=t.dispatched_at or t.requested_at,
            )
            for t, p, product_id in rows
        ]

    async def in_transit_of(self, transfer_ids: Sequence[int]) -> list[list[InTransit]]:
        """Batched for the `inTransit` field of many transfers."""
        grouped: dict[int, list[InTransit]] = defaultdict(list)
        for item in await self.in_transit(transfer_ids=list(transfer_ids)):
            grouped[item.transfer_id].append(item)
        return [grouped[i] for i in transfer_ids]

    async def history(self, transfer_ids: Sequence[int]) -> list[list[TransferStep]]:
        """Each transfer's audit trail (who did what, when, why), in the order it happened."""
        async with self.db.read() as session:
            # Nothing about a transfer is audited before it was requested: the time bound lets
            # the occurred_at index skip the rest of the (large) audit table.
            since = await _earliest_request(session, transfer_ids)
            if since is None:
                return [[] for _ in transfer_ids]
            stmt = (
                select(AuditEvent)
                .where(
                    AuditEvent.occurred_at >= since,
                    AuditEvent.entity_type == "Transfer",
                    AuditEvent.entity_id.in_([str(i) for i in transfer_ids]),
                )
                .order_by(AuditEvent.seq)
            )
            events = (await session.execute(stmt)).scalars().all()
        grouped: dict[str, list[TransferStep]] = defaultdict(list)
        for event in events:
            after: dict[str, Any] = event.after or {}
            grouped[event.entity_id].append(
                TransferStep(
                    action=event.action.removeprefix("transfer.").upper(),
                    status=after.get("status"),
                    actor=event.actor_name,
                    role=event.role,
                    at=event.occurred_at,
                    reason=event.reason,
                )
            )
        return [grouped[str(i)] for i in transfer_ids]

    async def movements(
        self, transfer_ids: Sequence[int], seen_by: Principal | None = None
    ) -> list[list[AnyMovement]]:
        """The ledger rows each transfer wrote (its number is their reference); with `seen_by`,
        those at locations that principal sees (each side is its own organisation's)."""
        async with self.db.read() as session:
            numbers = dict(
                (
                    await session.execute(
                        select(Transfer.id, Transfer.number).where(Transfer.id.in_(transfer_ids))
                    )
                ).all()
            )
            since = await _earliest_request(session, transfer_ids)
            if since is None:
                return [[] for _ in transfer_ids]
            rows = (
                (
                    await session.execute(
                        select(Movement)
                        .where(
                            Movement.occurred_at >= since,  # indexed; references are not
                            Movement.reference.in_(list(numbers.values())),
                            Movement.kind.in_(
                                [MovementKind.TRANSFER_OUT, MovementKind.TRANSFER_IN]
                            ),
                        )
                        .order_by(Movement.id)
                    )
                )
                .scalars()
                .all()
            )
        grouped: dict[str, list[AnyMovement]] = defaultdict(list)
        for row in rows:
            if seen_by is None or seen_by.sees_location(row.location_id):
                grouped[row.reference or ""].append(row)
        return [grouped[numbers[i]] if i in numbers else [] for i in transfer_ids]
