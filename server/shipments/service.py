"""Shipment use cases: shipments against purchase orders, their status updates, line-by-line
receiving with discrepancies, and the overdue check.

Every write is one transaction that also writes the audit trail and emits a `shipment` event
(delivered after commit). Stock moves only through the ledger (`LedgerService.apply`, inside the
same transaction):

- Dispatch writes SHIP movements reported by the sender at the shipment's origin. An external
  supplier with no location in Apotheca has no origin, so its dispatch records no SHIP (its
  stock was never in the ledger); the receipt is then the first the network knows of the packs.
- Receipt writes RECEIVE movements reported by the receiver at the destination, with the sender
  as counterparty and the shipment number as reference. Short, over, damaged and wrong-lot
  packs become Discrepancy rows; the sender's numbers are never changed to make them vanish,
  and damaged packs never enter stock.

Who may do what: the sender (SHIPMENT_SEND, its own organisation) creates and moves shipments up
to DELIVERED; the receiver (SHIPMENT_RECEIVE at the destination) receives. ADMIN may act for
either party. Everyone else gets FORBIDDEN, never an empty answer.

Concurrency: an order, shipment and shipment line are locked (SELECT ... FOR UPDATE on
PostgreSQL; SQLite has one writer) in that order, so two receipts of one line are serialised
and the second sees what the first received.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, Product, ProductGtin
from server.catalog.service import clean_batch_number, find_or_create_lot
from server.core import audit
from server.core.db import Database, midnight_utc, utcnow
from server.core.errors import DomainError, Duplicate, ErrorCode, Forbidden, InvalidInput, NotFound
from server.core.events import EventBus, SharedLookups
from server.core.numbering import allocate
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.steps import took_step
from server.core.validation import get_or_not_found, optional_text
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import AnyMovement, MovementKind
from server.inventory.rules import KIND_PERMISSION
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location, Organisation
from server.purchasing import rules as order_rules
from server.purchasing.events import purchase_order_event
from server.purchasing.models import PurchaseOrder
from server.purchasing.service import order_lines, progress_after_receipt, require_order_visible
from server.scanning.gs1 import parse_barcode
from server.shipments import rules
from server.shipments.events import SHIPMENT_TOPIC, shipment_event
from server.shipments.models import (
    Discrepancy,
    DiscrepancyKind,
    Shipment,
    ShipmentEvent,
    ShipmentLine,
    ShipmentStatus,
)
from server.shipments.rules import overdue_key
from server.suppliers.parties import require_party, sees_parties, visible_parties_clause
from server.suppliers.rules import check_quantity
from server.suppliers.service import lock_row

RECEIVE_OPERATION = "receiveShipmentLine"
CLOCK_SKEW = timedelta(minutes=5)
SHIPMENT_COLUMNS = (
    "number",
    "status",
    "sender_id",
    "receiver_id",
    "origin_id",
    "destination_id",
    "purchase_order_id",
    "expected_at",
)


def require_shipment_visible(principal: Principal, shipment: Shipment) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, shipment.sender_id, shipment.receiver_id):
        raise Forbidden("that shipment belongs to other organisations", field="shipment")


def shipment_snapshot(shipment: Shipment) -> dict[str, Any]:
    return audit.snapshot(shipment, *SHIPMENT_COLUMNS)


def discrepancy_snapshot(d: Discrepancy) -> dict[str, Any]:
    return audit.snapshot(d, "id", "kind", "lot_id", "quantity", "details")


def aware(value: datetime | None, field: str) -> datetime | None:
    """Client times as UTC (naive means UTC); never in the future."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value > utcnow() + CLOCK_SKEW:
        raise InvalidInput(f"{field} is in the future", field=field)
    return value


# --- commands and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ShipmentLineFields:
    purchase_order_line_id: int
    batch_number: str
    expiry_date: date
    quantity: int
    serials: tuple[str, ...] = ()


@dataclass(frozen=True)
class LineReceiptCommand:
    """One receipt: confirm a line, or scan packs (barcode) that identify line and lot."""

    shipment_id: int
    quantity: int
    line_id: int | None = None
    damaged_quantity: int = 0
    batch_number: str | None = None  # the batch actually found, when not the line's
    expiry_date: date | None = None
    barcode: str | None = None
    declare_over: bool = False
    location_id: int | None = None  # default: the shipment's destination
    note: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class ReceiptResult:
    shipment: Shipment
    line: ShipmentLine
    movements: list[AnyMovement]
    discrepancies: list[Discrepancy]
    order: PurchaseOrder | None
    replayed: bool = False


@dataclass(frozen=True)
class CompletionResult:
    shipment: Shipment
    discrepancies: list[Discrepancy]


@dataclass(frozen=True)
class OverdueCheckResult:
    overdue: int
    raised: int


@dataclass(frozen=True)
class ShipmentChange:
    """One `shipment` event as a subscriber receives it, with the shipment as committed."""

    change: str
    status: ShipmentStatus
    occurred_at: datetime
    shipment: Shipment


# --- shared queries ----------------------------------------------------------------------------


async def _shipment_lines(
    session: AsyncSession, shipment_id: int, *, lock: bool = False
) -> list[ShipmentLine]:
    stmt = (
        select(ShipmentLine)
        .where(ShipmentLine.shipment_id == shipment_id)
        .order_by(ShipmentLine.id)
    )
    if lock:
        stmt = stmt.with_for_update()
    return list((await session.execute(stmt)).scalars().all())


async def _damaged_by_line(session: AsyncSession, shipment_id: int) -> dict[int, int]:
    """Damaged packs reported per shipment line (from the DAMAGED discrepancies)."""
    rows = (
        await session.execute(
            select(Discrepancy).where(
                Discrepancy.shipment_id == shipment_id,
                Discrepancy.kind == DiscrepancyKind.DAMAGED,
            )
        )
    ).scalars()
    damaged: dict[int, int] = defaultdict(int)
    for row in rows:
        damaged[int(row.details.get("shipment_line_id", 0))] += row.quantity
    return damaged


class ShipmentService:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        ledger: LedgerService,
        alerts: AlertService,
        max_page_size: int = 100,
    ) -> None:
        self.db = db
        self.bus = bus
        self.ledger = ledger
        self.alerts = alerts
        self.max_page_size = max_page_size
        self._lookups = SharedLookups()

    # --- reads --------------------------------------------------------------------------------

    async def shipments(
        self,
        principal: Principal,
        *,
        first: int,
        after: str | None,
        status: ShipmentStatus | None = None,
        purchase_order_id: int | None = None,
        destination_id: int | None = None,
    ) -> Page[Any]:
        """Shipments the principal's organisation sends or receives, newest first."""
        principal.require(Permission.PROCUREMENT_READ)
        S = Shipment
        stmt = select(S)
        if purchase_order_id is not None:
            async with self.db.read() as session:
                order = await session.get(PurchaseOrder, purchase_order_id)
            if order is not None:
                require_order_visible(principal, order)
            stmt = stmt.where(S.purchase_order_id == purchase_order_id)
        if (clause := visible_parties_clause(principal, S.sender_id, S.receiver_id)) is not None:
            stmt = stmt.where(clause)
        if status is not None:
            stmt = stmt.where(S.status == status)
        if destination_id is not None:
            stmt = stmt.where(S.destination_id == destination_id)
        return await keyset_page(
            self.db,
            stmt,
            keys=[S.id],
            first=first,
            after=after,
            max_page_size=self.max_page_size,
            descending=True,
            key_of=lambda r: [r.id],
        )

    async def changes(
        self, principal: Principal, shipment_id: int | None = None
    ) -> AsyncIterator[ShipmentChange]:
        """Shipment changes the principal is a party to (all for ADMIN/AUDITOR), as they
        commit; only `shipment_id`'s when given. Each event's row is read once, however many
        subscribers receive it."""
        principal.require(Permission.PROCUREMENT_READ)
        if shipment_id is not None:
            async with self.db.read() as session:
                row = await session.get(Shipment, shipment_id)
            if row is None:
                raise NotFound("no such shipment", field="shipment")
            require_shipment_visible(principal, row)
        async with self.bus.subscribe(SHIPMENT_TOPIC) as subscription:
            while True:
                payload = (await subscription.get()).payload
                if shipment_id is not None and payload["shipment_id"] != shipment_id:
                    continue
                if not sees_parties(principal, payload["sender_id"], payload["receiver_id"]):
                    continue
                shipment = await self._event_row(payload)
                if shipment is None:
                    continue
                yield ShipmentChange(
                    change=payload["change"],
                    status=ShipmentStatus(payload["status"]),
                    occurred_at=datetime.fromisoformat(payload["at"]),
                    shipment=shipment,
                )

    async def _event_row(self, payload: dict[str, Any]) -> Shipment | None:
        async def load() -> Shipment | None:
            async with self.db.read() as session:
                return await session.get(Shipment, payload["shipment_id"])

        return await self._lookups.get((payload["shipment_id"], payload["at"]), load)

    # --- writes -------------------------------------------------------------------------------

    async def create_shipment(
        self,
        principal: Principal,
        *,
        order_id: int,
        lines: Sequence[ShipmentLineFields],
        origin_id: int | None = None,
        expected_at: datetime | None = None,
        carrier: str | None = None,
        tracking_number: str | None = None,
    ) -> Shipment:
        """A PLANNED shipment by the order's supplier, lots found or created from batch + expiry.

        Without `origin_id` the sender's only location is used; a sender with no location in
        Apotheca ships from outside it (no SHIP movement on dispatch).
        """
        principal.require(Permission.SHIPMENT_SEND)
        carrier = optional_text(carrier, "carrier", max_length=100)
        tracking_number = optional_text(tracking_number, "tracking_number", max_length=100)
        if expected_at is not None:
            expected_at = (
                expected_at.replace(tzinfo=UTC)
                if expected_at.tzinfo is None
                else expected_at.astimezone(UTC)
            )
        if not lines:
            raise InvalidInput("a shipment needs at least one line", field="lines")
        now = utcnow()
        async with self.db.write() as session:
            order = await lock_row(session, PurchaseOrder, order_id, "purchase_order", "order")
            require_order_visible(principal, order)
            require_party(
                principal, order.supplier_id, "supplier", f"ship against order {order.number}"
            )
            order_rules.check_order_action(order.number, order.status, order_rules.OrderAction.SHIP)
            origin_id = await self._origin(session, principal, order.supplier_id, origin_id)
            by_line = {x.id: x for x in await order_lines(session, order.id)}
            shipment = Shipment(
                sender_id=order.supplier_id,
                receiver_id=order.buyer_id,
                origin_id=origin_id,
                destination_id=order.deliver_to_id,
                purchase_order_id=order.id,
                status=ShipmentStatus.PLANNED,
                expected_at=expected_at,
                carrier=carrier,
                tracking_number=tracking_number,
                created_by=principal.user_id,
                created_at=now,
            )
            shipment.number = await allocate(session, Shipment.number, "SH", now.year)
            session.add(shipment)
            await session.flush()
            seen: set[tuple[int, int]] = set()
            rows: list[ShipmentLine] = []
            for i, fields in enumerate(lines):
                po_line = by_line.get(fields.purchase_order_line_id)
                if po_line is None:
                    raise InvalidInput(
                        f"line {fields.purchase_order_line_id} is not a line of order "
                        f"{order.number}",
                        field=f"lines.{i}.purchase_order_line",
                    )
                quantity = check_quantity(fields.quantity, f"lines.{i}.quantity")
                serials = [s.strip() for s in fields.serials if s.strip()]
                if len(set(serials)) != len(serials):
                    raise Duplicate("a serial appears twice", field=f"lines.{i}.serials")
                if serials and len(serials) != quantity:
                    raise InvalidInput(
                        f"give one serial per pack: {len(serials)} serials for {quantity} packs",
                        field=f"lines.{i}.serials",
                    )
                lot = await find_or_create_lot(
                    session,
                    principal,
                    product_id=po_line.product_id,
                    batch_number=fields.batch_number,
                    expiry_date=fields.expiry_date,
                )
                if (po_line.id, lot.id) in seen:
                    raise Duplicate(
                        f"batch {lot.batch_number} appears twice for the same order line",
                        field=f"lines.{i}.batch_number",
                    )
                seen.add((po_line.id, lot.id))
                rows.append(
                    ShipmentLine(
                        shipment_id=shipment.id,
                        lot_id=lot.id,
                        purchase_order_line_id=po_line.id,
                        quantity=quantity,
                        serials=serials,
                        received_quantity=0,
                    )
                )
            session.add_all(rows)
            session.add(
                ShipmentEvent(
                    shipment_id=shipment.id,
                    status=ShipmentStatus.PLANNED,
                    occurred_at=now,
                    actor_id=principal.user_id,
                )
            )
            await session.flush()
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    "shipment.create",
                    "Shipment",
                    shipment.id,
                    after={
                        **shipment_snapshot(shipment),
                        "lines": [
                            audit.snapshot(
                                x, "purchase_order_line_id", "lot_id", "quantity", "serials"
                            )
                            for x in rows
                        ],
                    },
                ),
                events=[shipment_event(shipment, "CREATED")],
            )
        return shipment

    async def _origin(
        self, session: AsyncSession, principal: Principal, sender_id: int, origin_id: int | None
    ) -> int | None:
        if origin_id is None:
            own = (
                (
                    await session.execute(
                        select(Location.id).where(
                            Location.organisation_id == sender_id, Location.active.is_(True)
                        )
                    )
                )
                .scalars()
                .all()
            )
            if len(own) > 1:
                raise InvalidInput(
                    "the sender has several locations; name the origin", field="origin"
                )
            if not own:
                return None  # an external supplier: nothing to ship out of the ledger
            origin_id = own[0]
        location = await session.get(Location, origin_id)
        if location is None or not location.active:
            raise NotFound(f"location {origin_id} does not exist", field="origin")
        if location.organisation_id != sender_id:
            raise InvalidInput(f"{location.code} is not a location of the sender", field="origin")
        principal.require(Permission.SHIPMENT_SEND, location_id=origin_id)
        return origin_id

    async def update_shipment_status(
        self,
        principal: Principal,
        shipment_id: int,
        status: ShipmentStatus,
        *,
        occurred_at: datetime | None = None,
        location_note: str | None = None,
    ) -> Shipment:
        """The sender's updates: DISPATCHED (writes SHIP), IN_TRANSIT, DELIVERED, or CANCELLED
        before dispatch. RECEIVED is the receiver's: completeShipmentReceipt."""
        principal.require(Permission.SHIPMENT_SEND)
        if status not in rules.SENDER_STATUSES:
            raise InvalidInput(
                f"{status.value} is set by the receiver, through completeShipmentReceipt",
                field="status",
            )
        location_note = optional_text(location_note, "location_note", max_length=200)
        when = aware(occurred_at, "occurred_at") or utcnow()
        async with self.db.write() as session:
            shipment = await lock_row(session, Shipment, shipment_id, "shipment", "shipment")
            require_shipment_visible(principal, shipment)
            require_party(
                principal, shipment.sender_id, "sender", f"update shipment {shipment.number}"
            )
            if shipment.origin_id is not None:
                principal.require(Permission.SHIPMENT_SEND, location_id=shipment.origin_id)
            before = shipment_snapshot(shipment)
            rules.check_shipment_transition(shipment.number, shipment.status, status)
            last = (
                await session.execute(
                    select(func.max(ShipmentEvent.occurred_at)).where(
                        ShipmentEvent.shipment_id == shipment.id
                    )
                )
            ).scalar_one_or_none()
            if last is not None and when < last:
                raise InvalidInput(
                    f"occurredAt {when:%Y-%m-%d %H:%M} is before the shipment's last update "
                    f"({last:%Y-%m-%d %H:%M})",
                    field="occurred_at",
                )
            movements: list[AnyMovement] = []
            if status is ShipmentStatus.DISPATCHED:
                movements = await self._dispatch(session, principal, shipment, when)
                shipment.dispatched_at = when
            elif status is ShipmentStatus.DELIVERED:
                shipment.delivered_at = when
            elif status is ShipmentStatus.CANCELLED:
                await self.alerts.resolve(session, [overdue_key(shipment.id)])
            shipment.status = status
            session.add(
                ShipmentEvent(
                    shipment_id=shipment.id,
                    status=status,
                    occurred_at=when,
                    actor_id=principal.user_id,
                    location_note=location_note,
                )
            )
            await session.flush()
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    f"shipment.{status.value.lower()}",
                    "Shipment",
                    shipment.id,
                    before,
                    {
                        **shipment_snapshot(shipment),
                        "occurred_at": when.isoformat(),
                        "location_note": location_note,
                        "ship_movement_ids": [m.id for m in movements],
                    },
                ),
                events=[shipment_event(shipment, "STATUS_CHANGED")],
            )
        return shipment

    async def _dispatch(
        self, session: AsyncSession, principal: Principal, shipment: Shipment, when: datetime
    ) -> list[AnyMovement]:
        """SHIP movements at the origin, reported by the sender (none without an origin)."""
        if shipment.origin_id is None:
            return []
        lines = await _shipment_lines(session, shipment.id)
        grant = principal.granted(KIND_PERMISSION[MovementKind.SHIP])
        written = await self.ledger.apply(
            session,
            grant,
            [
                MovementRequest(
                    kind=MovementKind.SHIP,
                    location_id=shipment.origin_id,
                    quantity=line.quantity,
                    lot_id=line.lot_id,
                    counterparty_id=shipment.receiver_id,
                    reference=shipment.number,
                    occurred_at=when,
                )
                for line in lines
            ],
        )
        return [m for m, _ in written]

    async def receive_line(
        self, principal: Principal, command: LineReceiptCommand
    ) -> ReceiptResult:
        """Book packs of one line in: good ones into stock (RECEIVE), the rest as discrepancies.

        A replayed idempotency key returns the first receipt and changes nothing.
        """
        principal.require(Permission.SHIPMENT_RECEIVE)
        key = clean_key(command.idempotency_key)
        payload = {k: v for k, v in asdict(command).items() if k != "idempotency_key"}

        async def work(session: AsyncSession) -> ReceiptResult:
            return await self._receive(session, principal, command, key)

        async def replay(session: AsyncSession, movements: list[AnyMovement]) -> ReceiptResult:
            """The first receipt, rebuilt: the hash pins the shipment, the key its discrepancies."""
            shipment = await get_or_not_found(session, Shipment, command.shipment_id, "shipment")
            discrepancies = [
                d
                for d in (
                    await session.execute(
                        select(Discrepancy)
                        .where(Discrepancy.shipment_id == shipment.id)
                        .order_by(Discrepancy.id)
                    )
                ).scalars()
                if d.details.get("idempotency_key") == key
            ]
            lines = await _shipment_lines(session, shipment.id)
            line_id = command.line_id or (
                discrepancies[0].details.get("shipment_line_id") if discrepancies else None
            )
            line = next((x for x in lines if x.id == line_id), None) or next(
                (x for x in lines if movements and x.lot_id == movements[0].lot_id), lines[0]
            )
            order = (
                await session.get(PurchaseOrder, shipment.purchase_order_id)
                if shipment.purchase_order_id
                else None
            )
            return ReceiptResult(shipment, line, movements, discrepancies, order, True)

        return await run_once(
            self.db,
            principal,
            key=key,
            operation=RECEIVE_OPERATION,
            fingerprint=request_hash(RECEIVE_OPERATION, payload),
            work=work,
            movements_of=lambda result: result.movements,
            replay=replay,
        )

    async def _receive(
        self,
        session: AsyncSession,
        principal: Principal,
        command: LineReceiptCommand,
        key: str | None,
    ) -> ReceiptResult:
        note = optional_text(command.note, "note", max_length=500)
        check_quantity(command.quantity, "quantity", allow_zero=True)
        check_quantity(command.damaged_quantity, "damaged_quantity", allow_zero=True)
        shipment = await lock_row(session, Shipment, command.shipment_id, "shipment", "shipment")
        require_shipment_visible(principal, shipment)
        require_party(
            principal, shipment.receiver_id, "receiver", f"receive shipment {shipment.number}"
        )
        location_id = command.location_id or shipment.destination_id
        principal.require(Permission.SHIPMENT_RECEIVE, location_id=location_id)
        if location_id != shipment.destination_id:
            location = await session.get(Location, location_id)
            if location is None or location.organisation_id != shipment.receiver_id:
                raise InvalidInput(
                    "receive into a location of the receiving organisation", field="location"
                )
        rules.check_receivable(shipment.number, shipment.status)
        line, lot, scanned_serial = await self._identify(session, principal, shipment, command)
        # Locked after the shipment: every writer takes them in this order.
        line = await lock_row(session, ShipmentLine, line.id, "line", "shipment line")
        expected_lot = await session.get(Lot, line.lot_id)
        assert expected_lot is not None  # a shipment line's foreign key
        damaged_before = (await _damaged_by_line(session, shipment.id)).get(line.id, 0)
        plan = rules.plan_line_receipt(
            shipped=line.quantity,
            received=line.received_quantity,
            damaged=damaged_before,
            good_now=command.quantity,
            damaged_now=command.damaged_quantity,
            declare_over=command.declare_over,
            line_label=f"line {line.id} (batch {expected_lot.batch_number})",
        )
        movements: list[AnyMovement] = []
        if plan.good:
            written = await self.ledger.apply(
                session,
                principal,
                [
                    MovementRequest(
                        kind=MovementKind.RECEIVE,
                        location_id=location_id,
                        quantity=plan.good,
                        lot_id=lot.id,
                        counterparty_id=shipment.sender_id,
                        reference=shipment.number,
                    )
                ],
                request_key=key,
            )
            movements = [m for m, _ in written]
        before_line = {"received_quantity": line.received_quantity}
        line.received_quantity += plan.good
        base: dict[str, Any] = {"shipment_line_id": line.id}
        if key is not None:
            base["idempotency_key"] = key
        found: list[Discrepancy] = []

        def discrepancy(kind: DiscrepancyKind, quantity: int, **details: Any) -> None:
            found.append(
                Discrepancy(
                    shipment_id=shipment.id,
                    lot_id=lot.id,
                    kind=kind,
                    quantity=quantity,
                    note=note,
                    details=audit.jsonable({**base, **details}),
                    recorded_by=principal.user_id,
                    recorded_at=utcnow(),
                )
            )

        if lot.id != expected_lot.id:
            discrepancy(
                DiscrepancyKind.WRONG_LOT,
                plan.good + plan.damaged,
                expected_lot_id=expected_lot.id,
                expected_batch=expected_lot.batch_number,
                received_batch=lot.batch_number,
                received_expiry=lot.expiry_date,
            )
        if plan.damaged:
            discrepancy(DiscrepancyKind.DAMAGED, plan.damaged)
        if plan.over:
            discrepancy(
                DiscrepancyKind.OVER,
                plan.over,
                shipped=line.quantity,
                accounted=line.received_quantity + damaged_before + plan.damaged,
            )
        session.add_all(found)
        await session.flush()
        order, order_entry = await progress_after_receipt(session, shipment, line, plan.good)
        entries = [
            audit.AuditEntry(
                "shipment.receive_line",
                "ShipmentLine",
                line.id,
                before_line,
                audit.jsonable(
                    {
                        "shipment": shipment.number,
                        "lot_id": lot.id,
                        "received_quantity": line.received_quantity,
                        "good": plan.good,
                        "damaged": plan.damaged,
                        "over": plan.over,
                        "location_id": location_id,
                        "serial": scanned_serial,
                        "movement_ids": [m.id for m in movements],
                        "discrepancies": [discrepancy_snapshot(d) for d in found],
                    }
                ),
                note,
            )
        ]
        events = [shipment_event(shipment, "LINE_RECEIVED")]
        if order_entry is not None and order is not None:
            entries.append(order_entry)
            events.append(purchase_order_event(order, order_entry.action))
        await took_step(session, self.bus, principal, entries[0], events=events, also=entries[1:])
        return ReceiptResult(shipment, line, movements, found, order)

    async def _identify(
        self,
        session: AsyncSession,
        principal: Principal,
        shipment: Shipment,
        command: LineReceiptCommand,
    ) -> tuple[ShipmentLine, Lot, str | None]:
        """Which line the packs belong to and which lot they really are (scanned or typed)."""
        lines = await _shipment_lines(session, shipment.id)
        by_id = {x.id: x for x in lines}
        line = None
        if command.line_id is not None:
            line = by_id.get(command.line_id)
            if line is None:
                raise InvalidInput(
                    f"line {command.line_id} is not a line of shipment {shipment.number}",
                    field="line",
                )
        if command.barcode is not None:
            if command.batch_number is not None:
                raise InvalidInput("give a barcode or a lot, not both", field="lot")
            return await self._scanned(session, principal, shipment, lines, line, command)
        if line is None:
            raise InvalidInput("name the line, or scan a pack", field="line")
        expected = await session.get(Lot, line.lot_id)
        assert expected is not None  # a shipment line's foreign key
        if command.batch_number is None or (
            clean_batch_number(command.batch_number) == expected.batch_number
        ):
            return line, expected, None
        if command.expiry_date is None:
            raise InvalidInput(
                "give the expiry date of the batch that arrived", field="lot.expiry_date"
            )
        lot = await find_or_create_lot(
            session,
            principal,
            product_id=expected.product_id,
            batch_number=command.batch_number,
            expiry_date=command.expiry_date,
        )
        return line, lot, None

    async def _scanned(
        self,
        session: AsyncSession,
        principal: Principal,
        shipment: Shipment,
        lines: Sequence[ShipmentLine],
        line: ShipmentLine | None,
        command: LineReceiptCommand,
    ) -> tuple[ShipmentLine, Lot, str | None]:
        pack = parse_barcode(command.barcode or "")
        if pack.serial is not None and command.quantity + command.damaged_quantity != 1:
            raise InvalidInput(
                f"serial {pack.serial} identifies one pack: receive it as quantity 1",
                field="quantity",
            )
        product = (
            await session.execute(
                select(Product)
                .join(ProductGtin, ProductGtin.product_id == Product.id)
                .where(ProductGtin.gtin == pack.gtin)
            )
        ).scalar_one_or_none()
        if product is None:
            raise DomainError(
                f"no product in the catalogue has GTIN {pack.gtin}",
                field="barcode",
                code=ErrorCode.UNKNOWN_PRODUCT,
            )
        if pack.batch_number is None:
            raise InvalidInput(
                "this barcode carries no batch number (10); scan the pack's 2D code",
                field="barcode",
            )
        lots = {
            x.id: x
            for x in (
                await session.execute(select(Lot).where(Lot.id.in_([x.lot_id for x in lines])))
            ).scalars()
        }
        lot = (
            await session.execute(
                select(Lot).where(
                    Lot.product_id == product.id, Lot.batch_number == pack.batch_number
                )
            )
        ).scalar_one_or_none()
        if lot is not None and pack.expiry_date is not None and pack.expiry_date != lot.expiry_date:
            raise DomainError(
                f"the barcode says batch {lot.batch_number} expires on {pack.expiry_date}, but "
                f"it is recorded as expiring on {lot.expiry_date}",
                field="barcode",
                code=ErrorCode.EXPIRY_MISMATCH,
            )
        if line is None:
            matching = [x for x in lines if lot is not None and x.lot_id == lot.id]
            same_product = [x for x in lines if lots[x.lot_id].product_id == product.id]
            if matching:
                line = matching[0]
            elif len(same_product) == 1:
                line = same_product[0]
            elif not same_product:
                raise InvalidInput(
                    f"{product.name} is not on shipment {shipment.number}", field="barcode"
                )
            else:
                raise InvalidInput(
                    f"batch {pack.batch_number} is not on shipment {shipment.number} and "
                    f"{len(same_product)} lines carry {product.name}; name the line",
                    field="line",
                )
        if lots[line.lot_id].product_id != product.id:
            raise InvalidInput(
                f"the scanned pack is {product.name}, not the product of line {line.id}",
                field="barcode",
            )
        if lot is None:
            if pack.expiry_date is None:
                raise DomainError(
                    f"batch {pack.batch_number} is new and the barcode has no expiry date (17)",
                    field="barcode",
                    code=ErrorCode.UNKNOWN_BATCH,
                )
            lot = await find_or_create_lot(
                session,
                principal,
                product_id=product.id,
                batch_number=pack.batch_number,
                expiry_date=pack.expiry_date,
            )
        return line, lot, pack.serial

    async def complete_receipt(
        self, principal: Principal, shipment_id: int, note: str | None = None
    ) -> CompletionResult:
        """RECEIVED: whatever was neither received nor reported damaged is SHORT, line by line."""
        principal.require(Permission.SHIPMENT_RECEIVE)
        note = optional_text(note, "note", max_length=500)
        async with self.db.write() as session:
            shipment = await lock_row(session, Shipment, shipment_id, "shipment", "shipment")
            require_shipment_visible(principal, shipment)
            require_party(
                principal, shipment.receiver_id, "receiver", f"receive shipment {shipment.number}"
            )
            principal.require(Permission.SHIPMENT_RECEIVE, location_id=shipment.destination_id)
            before = shipment_snapshot(shipment)
            rules.check_shipment_transition(
                shipment.number, shipment.status, ShipmentStatus.RECEIVED
            )
            lines = await _shipment_lines(session, shipment.id, lock=True)
            damaged = await _damaged_by_line(session, shipment.id)
            now = utcnow()
            shorts = [
                Discrepancy(
                    shipment_id=shipment.id,
                    lot_id=line.lot_id,
                    kind=DiscrepancyKind.SHORT,
                    quantity=missing,
                    note=note,
                    details={
                        "shipment_line_id": line.id,
                        "shipped": line.quantity,
                        "received": line.received_quantity,
                        "damaged": damaged.get(line.id, 0),
                    },
                    recorded_by=principal.user_id,
                    recorded_at=now,
                )
                for line in lines
                if (
                    missing := rules.shortfall(
                        line.quantity, line.received_quantity, damaged.get(line.id, 0)
                    )
                )
            ]
            session.add_all(shorts)
            shipment.status = ShipmentStatus.RECEIVED
            shipment.received_at = now
            session.add(
                ShipmentEvent(
                    shipment_id=shipment.id,
                    status=ShipmentStatus.RECEIVED,
                    occurred_at=now,
                    actor_id=principal.user_id,
                    location_note=note,
                )
            )
            await session.flush()
            await self.alerts.resolve(session, [overdue_key(shipment.id)])
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    "shipment.received",
                    "Shipment",
                    shipment.id,
                    before,
                    {
                        **shipment_snapshot(shipment),
                        "short": [discrepancy_snapshot(d) for d in shorts],
                    },
                    note,
                ),
                events=[shipment_event(shipment, "STATUS_CHANGED")],
            )
        return CompletionResult(shipment, shorts)

    # --- overdue shipments ----------------------------------------------------------------

    async def check_overdue_shipments(self, today: date | None = None) -> OverdueCheckResult:
        """Raise SHIPMENT_OVERDUE at the destination for every open shipment past its expected
        date (its own, else its order's). Idempotent: a live alert is not raised twice."""
        today = today or utcnow().date()
        async with self.db.write() as session:
            rows = (
                await session.execute(
                    select(Shipment, PurchaseOrder.expected_delivery_date, Organisation.name)
                    .outerjoin(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
                    .join(Organisation, Organisation.id == Shipment.sender_id)
                    .where(
                        Shipment.status.in_(rules.OPEN_SHIPMENT),
                        or_(
                            Shipment.expected_at < midnight_utc(today),
                            and_(
                                Shipment.expected_at.is_(None),
                                PurchaseOrder.expected_delivery_date < today,
                            ),
                        ),
                    )
                    .order_by(Shipment.id)
                )
            ).all()
            overdue = raised = 0
            for shipment, order_date, sender in rows:
                due = rules.expected_date(shipment.expected_at, order_date)
                days = rules.days_overdue(due, shipment.status, today)
                if not days:
                    continue
                overdue += 1
                alert = await self.alerts.raise_alert(
                    session,
                    AlertSpec(
                        kind=AlertKind.SHIPMENT_OVERDUE,
                        condition_key=overdue_key(shipment.id),
                        message=f"shipment {shipment.number} from {sender} was expected on "
                        f"{due} and is {days} day{'s' if days != 1 else ''} overdue "
                        f"({shipment.status.value})",
                        location_id=shipment.destination_id,
                        details={
                            "shipment_id": shipment.id,
                            "shipment": shipment.number,
                            "expected": due.isoformat() if due else None,
                            "status": shipment.status.value,
                        },
                    ),
                )
                raised += alert is not None
        return OverdueCheckResult(overdue=overdue, raised=raised)
