"""Purchasing use cases: purchase orders from draft to closed, line by line.

Every write is one transaction that also writes the audit trail. Buyer staff (ORDER_MANAGE at
the delivery location) create, edit, submit and cancel orders; the supplier the order is
addressed to (ORDER_ACKNOWLEDGE, its own organisation) acknowledges it; ADMIN may act for either
party. Everyone else (and a supplier looking at another supplier's order) gets FORBIDDEN.
Receipts move an order on from the shipments room (`progress_after_receipt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.service import AlertService
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import Duplicate, Forbidden, InvalidInput, NotFound
from server.core.events import Event, EventBus
from server.core.numbering import allocate
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.steps import took_step
from server.core.validation import optional_text, required_text
from server.network.models import Location
from server.purchasing import rules
from server.purchasing.events import purchase_order_event
from server.purchasing.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus
from server.shipments.events import shipment_event
from server.shipments.models import Shipment, ShipmentEvent, ShipmentLine, ShipmentStatus
from server.shipments.rules import overdue_key
from server.suppliers.parties import (
    require_party,
    require_supplier_visible,
    sees_parties,
    visible_parties_clause,
)
from server.suppliers.rules import ContractTerm, check_price, check_quantity, valid_term
from server.suppliers.service import (
    contract_terms,
    current_contract,
    lock_row,
    require_products,
    supplier_org,
)

ORDER_COLUMNS = (
    "number",
    "status",
    "supplier_id",
    "buyer_id",
    "deliver_to_id",
    "contract_id",
    "expected_delivery_date",
)
LINE_COLUMNS = ("id", "product_id", "quantity", "unit_price", "received_quantity")


def require_order_visible(principal: Principal, order: PurchaseOrder) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, order.buyer_id, order.supplier_id):
        # Name nothing of it: its number is the other parties' business.
        raise Forbidden("that purchase order belongs to other organisations", field="order")


@dataclass(frozen=True)
class OrderLineFields:
    product_id: int
    quantity: int
    unit_price: Decimal | None = None  # None: the contract price valid today


@dataclass(frozen=True)
class NewOrder:
    supplier_id: int
    deliver_to_id: int
    lines: Sequence[OrderLineFields] = ()
    expected_delivery_date: date | None = None
    note: str | None = None


def order_snapshot(order: PurchaseOrder, lines: Sequence[PurchaseOrderLine]) -> dict[str, Any]:
    return {
        **audit.snapshot(order, *ORDER_COLUMNS),
        "lines": [audit.snapshot(x, *LINE_COLUMNS) for x in lines],
    }


async def order_lines(
    session: AsyncSession, order_id: int, *, lock: bool = False
) -> list[PurchaseOrderLine]:
    stmt = (
        select(PurchaseOrderLine)
        .where(PurchaseOrderLine.order_id == order_id)
        .order_by(PurchaseOrderLine.id)
    )
    if lock:
        stmt = stmt.with_for_update()
    return list((await session.execute(stmt)).scalars().all())


async def _order_shipments(session: AsyncSession, order_id: int) -> list[Shipment]:
    stmt = (
        select(Shipment)
        .where(Shipment.purchase_order_id == order_id)
        .order_by(Shipment.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars().all())


async def progress_after_receipt(
    session: AsyncSession, shipment: Shipment, line: ShipmentLine, good: int
) -> tuple[PurchaseOrder | None, audit.AuditEntry | None]:
    """Received packs count on the order line; the order's status follows its lines."""
    if shipment.purchase_order_id is None:
        return None, None
    order = await lock_row(
        session, PurchaseOrder, shipment.purchase_order_id, "order", "purchase order"
    )
    lines = await order_lines(session, order.id, lock=True)
    if good and line.purchase_order_line_id is not None:
        for po_line in lines:
            if po_line.id == line.purchase_order_line_id:
                po_line.received_quantity += good
    status = rules.order_status_after_receipt(
        order.status, [(x.quantity, x.received_quantity) for x in lines]
    )
    if status is order.status:
        await session.flush()
        return order, None
    before = order.status.value
    order.status = status
    if status is PurchaseOrderStatus.RECEIVED:
        order.closed_at = utcnow()
    await session.flush()
    return order, audit.AuditEntry(
        "purchase_order.receipt",
        "PurchaseOrder",
        order.id,
        {"status": before},
        {
            "status": status.value,
            "shipment": shipment.number,
            "lines": [audit.snapshot(x, "id", "quantity", "received_quantity") for x in lines],
        },
    )


class PurchasingService:
    def __init__(
        self, db: Database, bus: EventBus, alerts: AlertService, max_page_size: int = 100
    ) -> None:
        self.db = db
        self.bus = bus
        self.alerts = alerts
        self.max_page_size = max_page_size

    # --- reads --------------------------------------------------------------------------------

    async def orders(
        self,
        principal: Principal,
        *,
        first: int,
        after: str | None,
        supplier_id: int | None = None,
        status: PurchaseOrderStatus | None = None,
        deliver_to_id: int | None = None,
    ) -> Page[Any]:
        """Orders the principal's organisation placed or received, newest first."""
        principal.require(Permission.PROCUREMENT_READ)
        P = PurchaseOrder
        stmt = select(P)
        if supplier_id is not None:
            require_supplier_visible(principal, supplier_id)
            stmt = stmt.where(P.supplier_id == supplier_id)
        if (clause := visible_parties_clause(principal, P.buyer_id, P.supplier_id)) is not None:
            stmt = stmt.where(clause)
        if status is not None:
            stmt = stmt.where(P.status == status)
        if deliver_to_id is not None:
            stmt = stmt.where(P.deliver_to_id == deliver_to_id)
        return await keyset_page(
            self.db,
            stmt,
            keys=[P.id],
            first=first,
            after=after,
            max_page_size=self.max_page_size,
            descending=True,
            key_of=lambda r: [r.id],
        )

    async def contract_prices(self, line_ids: Sequence[int]) -> list[Decimal | None]:
        """Per order line: the contract price valid when its order was submitted (or today).
        Access is checked by the caller (the line's order is visible)."""
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(PurchaseOrderLine, PurchaseOrder)
                    .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.order_id)
                    .where(PurchaseOrderLine.id.in_(line_ids))
                )
            ).all()
            found: dict[int, Decimal | None] = {}
            today = utcnow().date()
            for line, order in rows:
                terms = await contract_terms(
                    session, order.supplier_id, order.buyer_id, [line.product_id]
                )
                on = order.submitted_at.date() if order.submitted_at else today
                term = valid_term(terms, line.product_id, on)
                found[line.id] = term.unit_price if term else None
        return [found.get(i) for i in line_ids]

    # --- writes -------------------------------------------------------------------------------

    async def _step(
        self,
        session: AsyncSession,
        principal: Principal,
        action: str,
        order: PurchaseOrder,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        *,
        reason: str | None = None,
        events: Sequence[Event] = (),
        also: Sequence[audit.AuditEntry] = (),
    ) -> None:
        await took_step(
            session,
            self.bus,
            principal,
            audit.AuditEntry(action, "PurchaseOrder", order.id, before, after, reason),
            events=[*events, purchase_order_event(order, action)],
            also=also,
        )

    async def create_order(
        self,
        principal: Principal,
        *,
        supplier_id: int,
        deliver_to_id: int,
        lines: Sequence[OrderLineFields] = (),
        expected_delivery_date: date | None = None,
        note: str | None = None,
    ) -> PurchaseOrder:
        """A DRAFT order; the buyer is the organisation of the delivery location."""
        (order,) = await self.create_orders(
            principal,
            [NewOrder(supplier_id, deliver_to_id, tuple(lines), expected_delivery_date, note)],
        )
        return order

    async def create_orders(
        self, principal: Principal, orders: Sequence[NewOrder]
    ) -> list[PurchaseOrder]:
        """Several DRAFT orders in one transaction (all or none), e.g. accepted reorder
        suggestions grouped by supplier; field names of a refusal start with `orders.<i>.`
        when there is more than one."""
        for new in orders:
            principal.require(Permission.ORDER_MANAGE, location_id=new.deliver_to_id)
        notes = [optional_text(new.note, "note", max_length=500) for new in orders]
        now = utcnow()
        created: list[tuple[PurchaseOrder, list[PurchaseOrderLine]]] = []
        async with self.db.write() as session:
            for k, new in enumerate(orders):
                prefix = f"orders.{k}." if len(orders) > 1 else ""
                created.append(
                    await self._insert_order(session, principal, new, notes[k], now, prefix)
                )
            entries = [
                audit.AuditEntry(
                    "purchase_order.create",
                    "PurchaseOrder",
                    order.id,
                    None,
                    order_snapshot(order, added),
                )
                for order, added in created
            ]
            if entries:
                await took_step(
                    session,
                    self.bus,
                    principal,
                    entries[0],
                    events=[purchase_order_event(o, "purchase_order.create") for o, _ in created],
                    also=entries[1:],
                )
        return [order for order, _ in created]

    async def _insert_order(
        self,
        session: AsyncSession,
        principal: Principal,
        new: NewOrder,
        note: str | None,
        now: datetime,
        prefix: str,
    ) -> tuple[PurchaseOrder, list[PurchaseOrderLine]]:
        supplier_id, deliver_to_id, lines = new.supplier_id, new.deliver_to_id, new.lines
        location = await session.get(Location, deliver_to_id)
        if location is None or not location.active:
            raise NotFound(f"location {deliver_to_id} does not exist", field=f"{prefix}deliver_to")
        await supplier_org(session, supplier_id)
        if location.organisation_id == supplier_id:
            raise InvalidInput(
                "an organisation cannot order from itself", field=f"{prefix}supplier"
            )
        terms = await contract_terms(
            session, supplier_id, location.organisation_id, [x.product_id for x in lines]
        )
        valid = [t for t in terms if t.valid_from <= now.date() <= t.valid_until]
        order = PurchaseOrder(
            buyer_id=location.organisation_id,
            supplier_id=supplier_id,
            deliver_to_id=deliver_to_id,
            contract_id=await current_contract(
                session, supplier_id, location.organisation_id, now.date()
            ),
            status=PurchaseOrderStatus.DRAFT,
            expected_delivery_date=new.expected_delivery_date,
            note=note,
            created_by=principal.user_id,
            created_at=now,
        )
        order.number = await allocate(session, PurchaseOrder.number, "PO", now.year)
        session.add(order)
        await session.flush()
        added: list[PurchaseOrderLine] = []
        for i, fields in enumerate(lines):
            added.append(
                await self._new_line(session, order, fields, added, valid, f"{prefix}lines.{i}")
            )
        return order, added

    async def _new_line(
        self,
        session: AsyncSession,
        order: PurchaseOrder,
        fields: OrderLineFields,
        existing: Sequence[PurchaseOrderLine],
        terms: Sequence[ContractTerm],
        field: str,
    ) -> PurchaseOrderLine:
        await require_products(session, [fields.product_id], field=f"{field}.product")
        if any(x.product_id == fields.product_id for x in existing):
            raise Duplicate(
                f"product {fields.product_id} is already on this order; change that line's "
                "quantity instead",
                field=f"{field}.product",
            )
        quantity = check_quantity(fields.quantity, f"{field}.quantity")
        term = valid_term(terms, fields.product_id, utcnow().date())
        if term is not None and quantity < term.minimum_order_quantity:
            raise InvalidInput(
                f"the contract's minimum order for product {fields.product_id} is "
                f"{term.minimum_order_quantity}, not {quantity}",
                field=f"{field}.quantity",
            )
        if fields.unit_price is not None:
            price = check_price(fields.unit_price, f"{field}.unit_price")
        elif term is not None:
            price = term.unit_price
        else:
            raise InvalidInput(
                f"no contract with this supplier prices product {fields.product_id} today; "
                "give a unit price",
                field=f"{field}.unit_price",
            )
        line = PurchaseOrderLine(
            order_id=order.id,
            product_id=fields.product_id,
            quantity=quantity,
            unit_price=price,
            received_quantity=0,
        )
        session.add(line)
        await session.flush()
        return line

    async def _editable(
        self, session: AsyncSession, principal: Principal, order_id: int
    ) -> tuple[PurchaseOrder, list[PurchaseOrderLine]]:
        order = await lock_row(session, PurchaseOrder, order_id, "order", "purchase order")
        require_order_visible(principal, order)
        principal.require(Permission.ORDER_MANAGE, location_id=order.deliver_to_id)
        rules.check_order_action(order.number, order.status, rules.OrderAction.EDIT)
        return order, await order_lines(session, order.id, lock=True)

    async def add_order_line(
        self, principal: Principal, order_id: int, fields: OrderLineFields
    ) -> PurchaseOrder:
        async with self.db.write() as session:
            order, lines = await self._editable(session, principal, order_id)
            before = order_snapshot(order, lines)
            terms = await contract_terms(
                session, order.supplier_id, order.buyer_id, [fields.product_id]
            )
            line = await self._new_line(session, order, fields, lines, terms, "line")
            await self._step(
                session,
                principal,
                "purchase_order.line_add",
                order,
                before,
                order_snapshot(order, [*lines, line]),
            )
        return order

    async def _line(self, session: AsyncSession, line_id: int) -> PurchaseOrderLine:
        line = await session.get(PurchaseOrderLine, line_id)
        if line is None:
            raise NotFound(f"order line {line_id} does not exist", field="line")
        return line

    async def update_order_line(
        self,
        principal: Principal,
        line_id: int,
        *,
        quantity: int | None = None,
        unit_price: Decimal | None = None,
    ) -> PurchaseOrder:
        async with self.db.write() as session:
            line = await self._line(session, line_id)
            order, lines = await self._editable(session, principal, line.order_id)
            before = order_snapshot(order, lines)
            if quantity is not None:
                quantity = check_quantity(quantity, "quantity")
                terms = await contract_terms(
                    session, order.supplier_id, order.buyer_id, [line.product_id]
                )
                term = valid_term(terms, line.product_id, utcnow().date())
                if term is not None and quantity < term.minimum_order_quantity:
                    raise InvalidInput(
                        f"the contract's minimum order for this product is "
                        f"{term.minimum_order_quantity}, not {quantity}",
                        field="quantity",
                    )
                line.quantity = quantity
            if unit_price is not None:
                line.unit_price = check_price(unit_price, "unit_price")
            await self._step(
                session,
                principal,
                "purchase_order.line_update",
                order,
                before,
                order_snapshot(order, lines),
            )
        return order

    async def remove_order_line(self, principal: Principal, line_id: int) -> PurchaseOrder:
        async with self.db.write() as session:
            line = await self._line(session, line_id)
            order, lines = await self._editable(session, principal, line.order_id)
            before = order_snapshot(order, lines)
            await session.delete(line)
            await self._step(
                session,
                principal,
                "purchase_order.line_remove",
                order,
                before,
                order_snapshot(order, [x for x in lines if x.id != line_id]),
            )
        return order

    async def submit_order(
        self, principal: Principal, order_id: int, expected_delivery_date: date | None = None
    ) -> PurchaseOrder:
        """DRAFT -> SUBMITTED. The order must promise a date: given now or at creation, or the
        longest contract lead time of its lines from today (on-time rates are measured on it)."""
        now = utcnow()
        async with self.db.write() as session:
            order = await lock_row(session, PurchaseOrder, order_id, "order", "purchase order")
            require_order_visible(principal, order)
            principal.require(Permission.ORDER_MANAGE, location_id=order.deliver_to_id)
            target = rules.check_order_action(order.number, order.status, rules.OrderAction.SUBMIT)
            lines = await order_lines(session, order.id)
            if not lines:
                raise InvalidInput(f"purchase order {order.number} has no lines", field="order")
            before = order_snapshot(order, lines)
            if expected_delivery_date is not None:
                order.expected_delivery_date = expected_delivery_date
            if order.expected_delivery_date is None:
                terms = await contract_terms(
                    session, order.supplier_id, order.buyer_id, [x.product_id for x in lines]
                )
                leads = [
                    t.lead_time_days
                    for x in lines
                    if (t := valid_term(terms, x.product_id, now.date())) is not None
                ]
                if not leads:
                    raise InvalidInput(
                        "no contract gives a lead time for these products; give an expected "
                        "delivery date",
                        field="expected_delivery_date",
                    )
                order.expected_delivery_date = now.date() + timedelta(days=max(leads))
            if order.expected_delivery_date < now.date():
                raise InvalidInput(
                    f"expected delivery date {order.expected_delivery_date} is in the past",
                    field="expected_delivery_date",
                )
            order.status = target
            order.submitted_at = now
            await self._step(
                session,
                principal,
                "purchase_order.submit",
                order,
                before,
                order_snapshot(order, lines),
            )
        return order

    async def acknowledge_order(self, principal: Principal, order_id: int) -> PurchaseOrder:
        """SUBMITTED -> ACKNOWLEDGED, by the supplier the order is addressed to."""
        principal.require(Permission.ORDER_ACKNOWLEDGE)
        async with self.db.write() as session:
            order = await lock_row(session, PurchaseOrder, order_id, "order", "purchase order")
            require_order_visible(principal, order)
            require_party(
                principal, order.supplier_id, "supplier", f"acknowledge order {order.number}"
            )
            target = rules.check_order_action(
                order.number, order.status, rules.OrderAction.ACKNOWLEDGE
            )
            before = audit.snapshot(order, "status")
            order.status = target
            order.acknowledged_at = utcnow()
            await self._step(
                session,
                principal,
                "purchase_order.acknowledge",
                order,
                before,
                audit.snapshot(order, "status"),
            )
        return order

    async def cancel_order(self, principal: Principal, order_id: int, reason: str) -> PurchaseOrder:
        """Cancel before anything was received or dispatched; planned shipments go with it."""
        reason = required_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            # Shipments before their order, as a receipt locks them, so the two never deadlock;
            # read again once the order is locked, which stops new ones being added.
            await _order_shipments(session, order_id)
            order = await lock_row(session, PurchaseOrder, order_id, "order", "purchase order")
            require_order_visible(principal, order)
            principal.require(Permission.ORDER_MANAGE, location_id=order.deliver_to_id)
            target = rules.check_order_action(order.number, order.status, rules.OrderAction.CANCEL)
            shipments = await _order_shipments(session, order_id)
            moving = [
                s
                for s in shipments
                if s.status not in (ShipmentStatus.PLANNED, ShipmentStatus.CANCELLED)
            ]
            if moving:
                raise rules.InvalidTransition(
                    f"purchase order {order.number} is {order.status.value} with shipment "
                    f"{moving[0].number} {moving[0].status.value}; it cannot be cancelled once "
                    "goods are on their way",
                    current=order.status.value,
                    field="order",
                )
            now = utcnow()
            events: list[Event] = []
            entries: list[audit.AuditEntry] = []
            for shipment in shipments:
                if shipment.status is ShipmentStatus.PLANNED:
                    shipment.status = ShipmentStatus.CANCELLED
                    session.add(
                        ShipmentEvent(
                            shipment_id=shipment.id,
                            status=ShipmentStatus.CANCELLED,
                            occurred_at=now,
                            actor_id=principal.user_id,
                            location_note=f"order {order.number} cancelled",
                        )
                    )
                    events.append(shipment_event(shipment, "STATUS_CHANGED"))
                    entries.append(
                        audit.AuditEntry(
                            "shipment.cancel",
                            "Shipment",
                            shipment.id,
                            {"status": ShipmentStatus.PLANNED.value},
                            {"status": ShipmentStatus.CANCELLED.value},
                            reason,
                        )
                    )
            before = audit.snapshot(order, "status")
            order.status = target
            order.cancel_reason = reason
            order.closed_at = now
            await session.flush()
            await self.alerts.resolve(session, [overdue_key(s.id) for s in shipments])
            # The shipments' entries first, then the order's, as they always were.
            chain = [
                *entries,
                audit.AuditEntry(
                    "purchase_order.cancel",
                    "PurchaseOrder",
                    order.id,
                    before,
                    audit.snapshot(order, "status"),
                    reason,
                ),
            ]
            events.append(purchase_order_event(order, "purchase_order.cancel"))
            await took_step(session, self.bus, principal, chain[0], events=events, also=chain[1:])
        return order
