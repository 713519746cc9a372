"""Procurement use cases: suppliers (contacts, contracts), purchase orders and their shipments.

Every write is one transaction that also writes the audit trail and, for shipments, emits a
`shipment` event (delivered after commit). Stock moves only through the ledger
(`LedgerService.apply`, inside the same transaction):

- Dispatch writes SHIP movements reported by the sender at the shipment's origin. An external
  supplier with no location in Apotheca has no origin, so its dispatch records no SHIP (its
  stock was never in the ledger); the receipt is then the first the network knows of the packs.
- Receipt writes RECEIVE movements reported by the receiver at the destination, with the sender
  as counterparty and the shipment number as reference. Short, over, damaged and wrong-lot
  packs become Discrepancy rows; the sender's numbers are never changed to make them vanish,
  and damaged packs never enter stock.

Who may do what: buyer staff (ORDER_MANAGE at the delivery location) edit, submit and cancel
orders; the supplier (ORDER_ACKNOWLEDGE, its own organisation) acknowledges; the sender
(SHIPMENT_SEND, its own organisation) creates and moves shipments up to DELIVERED; the receiver
(SHIPMENT_RECEIVE at the destination) receives. ADMIN may act for either party. Everyone else
(and a supplier looking at another supplier's order) gets FORBIDDEN, never an empty answer.

Concurrency: an order, shipment and shipment line are locked (SELECT ... FOR UPDATE on
PostgreSQL; SQLite has one writer) in that order, so two receipts of one line are serialised
and the second sees what the first received.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import COST_PRECISION, Lot, Product, ProductGtin
from server.catalog.service import clean_batch_number, find_or_create_lot
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import (
    DomainError,
    Duplicate,
    ErrorCode,
    Forbidden,
    InvalidInput,
    NotFound,
)
from server.core.events import Event, EventBus
from server.core.numbering import allocate
from server.core.security import Permission, Principal, Role
from server.core.validation import get_or_not_found, optional_text, required_text
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import Movement, MovementKind
from server.inventory.rules import KIND_PERMISSION
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location, Organisation, OrganisationKind
from server.procurement import rules
from server.procurement.models import (
    Contract,
    ContractLine,
    Discrepancy,
    DiscrepancyKind,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    Shipment,
    ShipmentEvent,
    ShipmentLine,
    ShipmentStatus,
    SupplierContact,
)
from server.scanning.gs1 import parse_barcode

SHIPMENT_TOPIC = "shipment"
RECEIVE_OPERATION = "receiveShipmentLine"
SUPPLIER_KINDS = frozenset(
    {OrganisationKind.MANUFACTURER, OrganisationKind.WHOLESALER, OrganisationKind.SUPPLIER}
)
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("99999999")
CLOCK_SKEW = timedelta(minutes=5)


# --- who sees and acts -----------------------------------------------------------------------


def sees_everything(principal: Principal) -> bool:
    """ADMIN, AUDITOR and REGULATOR are not confined to an organisation."""
    return principal.location_ids is None


def sees_parties(principal: Principal, *organisation_ids: int | None) -> bool:
    return sees_everything(principal) or (
        principal.organisation_id is not None and principal.organisation_id in organisation_ids
    )


def supplier_only(principal: Principal) -> bool:
    """A supplier's user or client: it sees its own organisation's supplier record only."""
    return not sees_everything(principal) and not principal.can(Permission.ORDER_MANAGE)


def require_order_visible(principal: Principal, order: PurchaseOrder) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, order.buyer_id, order.supplier_id):
        # Name nothing of it: its number is the other parties' business.
        raise Forbidden("that purchase order belongs to other organisations", field="order")


def require_shipment_visible(principal: Principal, shipment: Shipment) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, shipment.sender_id, shipment.receiver_id):
        raise Forbidden("that shipment belongs to other organisations", field="shipment")


def require_contract_visible(principal: Principal, contract: Contract) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, contract.supplier_id, contract.buyer_id):
        raise Forbidden("that contract belongs to other organisations", field="contract")


def require_supplier_visible(principal: Principal, supplier_id: int) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if supplier_only(principal) and principal.organisation_id != supplier_id:
        raise Forbidden("a supplier sees only its own supplier record", field="supplier")


def _require_party(principal: Principal, organisation_id: int, role: str, what: str) -> None:
    """Only the named party (or an ADMIN acting for it) may make this change."""
    if Role.ADMIN in principal.roles or principal.organisation_id == organisation_id:
        return
    raise Forbidden(f"only the {role} may {what}")


# --- commands and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ContactFields:
    name: str
    role: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class ContractLineFields:
    product_id: int
    unit_price: Decimal
    lead_time_days: int
    minimum_order_quantity: int = 1


@dataclass(frozen=True)
class OrderLineFields:
    product_id: int
    quantity: int
    unit_price: Decimal | None = None  # None: the contract price valid today


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
    movements: list[Movement]
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
class PerformanceReport:
    supplier_id: int
    since: date | None
    until: date | None
    buyer_id: int | None  # None: every buyer the principal may see
    figures: rules.Performance


# --- small checks --------------------------------------------------------------------------


def _quantity(value: int, field: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_QUANTITY:
        raise InvalidInput(f"{field} must be between {low} and {MAX_QUANTITY}", field=field)
    return value


def _price(value: Decimal, field: str) -> Decimal:
    try:
        price = Decimal(value).quantize(COST_PRECISION)
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{field} is not a number", field=field) from None
    if not Decimal(0) <= price <= MAX_PRICE:
        raise InvalidInput(f"{field} must be between 0 and {MAX_PRICE}", field=field)
    return price


def _aware(value: datetime | None, field: str) -> datetime | None:
    """Client times as UTC (naive means UTC); never in the future."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value > utcnow() + CLOCK_SKEW:
        raise InvalidInput(f"{field} is in the future", field=field)
    return value


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# --- snapshots and events ------------------------------------------------------------------


def _order_snapshot(order: PurchaseOrder, lines: Sequence[PurchaseOrderLine]) -> dict[str, Any]:
    return audit.jsonable(
        {
            "number": order.number,
            "status": order.status.value,
            "supplier_id": order.supplier_id,
            "buyer_id": order.buyer_id,
            "deliver_to_id": order.deliver_to_id,
            "contract_id": order.contract_id,
            "expected_delivery_date": order.expected_delivery_date,
            "lines": [
                {
                    "id": x.id,
                    "product_id": x.product_id,
                    "quantity": x.quantity,
                    "unit_price": x.unit_price,
                    "received_quantity": x.received_quantity,
                }
                for x in lines
            ],
        }
    )


def _shipment_snapshot(shipment: Shipment) -> dict[str, Any]:
    return audit.snapshot(
        shipment,
        "number",
        "status",
        "sender_id",
        "receiver_id",
        "origin_id",
        "destination_id",
        "purchase_order_id",
        "expected_at",
    )


def _discrepancy_snapshot(d: Discrepancy) -> dict[str, Any]:
    return audit.snapshot(d, "id", "kind", "lot_id", "quantity", "details")


def shipment_event(shipment: Shipment, change: str) -> Event:
    """Small on purpose: subscribers filter on the parties and load the rest themselves."""
    return Event(
        SHIPMENT_TOPIC,
        {
            "shipment_id": shipment.id,
            "number": shipment.number,
            "status": shipment.status.value,
            "change": change,
            "sender_id": shipment.sender_id,
            "receiver_id": shipment.receiver_id,
            "destination_id": shipment.destination_id,
            "at": utcnow().isoformat(),
        },
    )


# --- shared queries ----------------------------------------------------------------------------


async def _lock(session: AsyncSession, model: type[Any], pk: int, field: str, label: str) -> Any:
    row = (
        await session.execute(select(model).where(model.id == pk).with_for_update())
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{label} {pk} does not exist", field=field)
    return row


async def _order_lines(
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


async def _order_shipments(session: AsyncSession, order_id: int) -> list[Shipment]:
    stmt = (
        select(Shipment)
        .where(Shipment.purchase_order_id == order_id)
        .order_by(Shipment.id)
        .with_for_update()
    )
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


async def _supplier(session: AsyncSession, supplier_id: int) -> Organisation:
    org = await session.get(Organisation, supplier_id)
    if org is None:
        raise NotFound(f"organisation {supplier_id} does not exist", field="supplier")
    if org.kind not in SUPPLIER_KINDS:
        raise InvalidInput(
            f"{org.name} is a {org.kind.value.lower()}, not a supplier (manufacturer, "
            "wholesaler or supplier)",
            field="supplier",
        )
    return org


async def _terms(
    session: AsyncSession, supplier_id: int, buyer_id: int | None, product_ids: Iterable[int]
) -> list[rules.ContractTerm]:
    """Contract lines between the parties for these products (any validity)."""
    ids = sorted(set(product_ids))
    if not ids:
        return []
    stmt = (
        select(Contract, ContractLine)
        .join(ContractLine, ContractLine.contract_id == Contract.id)
        .where(Contract.supplier_id == supplier_id, ContractLine.product_id.in_(ids))
    )
    if buyer_id is not None:
        stmt = stmt.where(Contract.buyer_id == buyer_id)
    return [
        rules.ContractTerm(
            contract_id=c.id,
            product_id=x.product_id,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            unit_price=x.unit_price,
            lead_time_days=x.lead_time_days,
            minimum_order_quantity=x.minimum_order_quantity,
        )
        for c, x in (await session.execute(stmt)).all()
    ]


class ProcurementService:
    def __init__(
        self, db: Database, bus: EventBus, ledger: LedgerService, alerts: AlertService
    ) -> None:
        self.db = db
        self.bus = bus
        self.ledger = ledger
        self.alerts = alerts

    # --- suppliers: contacts and contracts ------------------------------------------------

    async def add_contact(
        self, principal: Principal, supplier_id: int, fields: ContactFields
    ) -> SupplierContact:
        principal.require(Permission.SUPPLIER_MANAGE)
        email = optional_text(fields.email, "email", max_length=200)
        if email is not None and ("@" not in email or " " in email):
            raise InvalidInput(f"{email!r} is not an e-mail address", field="email")
        contact = SupplierContact(
            organisation_id=supplier_id,
            name=required_text(fields.name, "name"),
            role=optional_text(fields.role, "role", max_length=100),
            email=email,
            phone=optional_text(fields.phone, "phone", max_length=50),
        )
        async with self.db.write() as session:
            await _supplier(session, supplier_id)
            session.add(contact)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="supplier.contact_add",
                entity_type="SupplierContact",
                entity_id=contact.id,
                after=_contact_snapshot(contact),
            )
        return contact

    async def remove_contact(self, principal: Principal, contact_id: int) -> SupplierContact:
        principal.require(Permission.SUPPLIER_MANAGE)
        async with self.db.write() as session:
            contact = await _lock(session, SupplierContact, contact_id, "contact", "contact")
            before = _contact_snapshot(contact)
            await session.delete(contact)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="supplier.contact_remove",
                entity_type="SupplierContact",
                entity_id=contact_id,
                before=before,
            )
        return contact

    async def create_contract(
        self,
        principal: Principal,
        *,
        supplier_id: int,
        reference: str,
        valid_from: date,
        valid_until: date,
        lines: Sequence[ContractLineFields],
        buyer_id: int | None = None,
    ) -> Contract:
        """A buyer's agreement with a supplier: prices, lead times and minimum order per product."""
        principal.require(Permission.SUPPLIER_MANAGE)
        reference = required_text(reference, "reference", max_length=64)
        buyer_id = buyer_id if buyer_id is not None else principal.organisation_id
        if buyer_id is None:
            raise InvalidInput("name the buyer organisation", field="buyer")
        if buyer_id != principal.organisation_id and Role.ADMIN not in principal.roles:
            raise Forbidden("you may agree contracts only for your own organisation")
        if valid_until < valid_from:
            raise InvalidInput(
                f"validUntil {valid_until} is before validFrom {valid_from}", field="validUntil"
            )
        if not lines:
            raise InvalidInput("a contract needs at least one product line", field="lines")
        seen: set[int] = set()
        clean: list[ContractLine] = []
        for i, line in enumerate(lines):
            if line.product_id in seen:
                raise Duplicate(
                    f"product {line.product_id} appears twice", field=f"lines.{i}.product"
                )
            seen.add(line.product_id)
            if not 0 <= line.lead_time_days <= 3650:
                raise InvalidInput(
                    "lead time must be between 0 and 3650 days", field=f"lines.{i}.leadTimeDays"
                )
            clean.append(
                ContractLine(
                    product_id=line.product_id,
                    unit_price=_price(line.unit_price, f"lines.{i}.unitPrice"),
                    lead_time_days=line.lead_time_days,
                    minimum_order_quantity=_quantity(
                        line.minimum_order_quantity, f"lines.{i}.minimumOrderQuantity"
                    ),
                )
            )
        async with self.db.write() as session:
            await _supplier(session, supplier_id)
            if await session.get(Organisation, buyer_id) is None:
                raise NotFound(f"organisation {buyer_id} does not exist", field="buyer")
            if buyer_id == supplier_id:
                raise InvalidInput("a supplier cannot contract with itself", field="buyer")
            await _products(session, seen)
            taken = (
                await session.execute(
                    select(Contract.id).where(
                        Contract.supplier_id == supplier_id, Contract.reference == reference
                    )
                )
            ).first()
            if taken is not None:
                raise Duplicate(
                    f"this supplier already has a contract {reference!r}", field="reference"
                )
            contract = Contract(
                supplier_id=supplier_id,
                buyer_id=buyer_id,
                reference=reference,
                valid_from=valid_from,
                valid_until=valid_until,
                created_at=utcnow(),
            )
            session.add(contract)
            await session.flush()
            for line in clean:
                line.contract_id = contract.id
            session.add_all(clean)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="contract.create",
                entity_type="Contract",
                entity_id=contract.id,
                after=audit.jsonable(
                    {
                        "supplier_id": supplier_id,
                        "buyer_id": buyer_id,
                        "reference": reference,
                        "valid_from": valid_from,
                        "valid_until": valid_until,
                        "lines": [
                            {
                                "product_id": x.product_id,
                                "unit_price": x.unit_price,
                                "lead_time_days": x.lead_time_days,
                                "minimum_order_quantity": x.minimum_order_quantity,
                            }
                            for x in clean
                        ],
                    }
                ),
            )
        return contract

    # --- purchase orders ------------------------------------------------------------------

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
        principal.require(Permission.ORDER_MANAGE, location_id=deliver_to_id)
        note = optional_text(note, "note", max_length=500)
        now = utcnow()
        async with self.db.write() as session:
            location = await session.get(Location, deliver_to_id)
            if location is None or not location.active:
                raise NotFound(f"location {deliver_to_id} does not exist", field="deliverTo")
            await _supplier(session, supplier_id)
            if location.organisation_id == supplier_id:
                raise InvalidInput("an organisation cannot order from itself", field="supplier")
            terms = await _terms(
                session, supplier_id, location.organisation_id, [x.product_id for x in lines]
            )
            valid = [t for t in terms if t.valid_from <= now.date() <= t.valid_until]
            order = PurchaseOrder(
                buyer_id=location.organisation_id,
                supplier_id=supplier_id,
                deliver_to_id=deliver_to_id,
                contract_id=await _current_contract(
                    session, supplier_id, location.organisation_id, now.date()
                ),
                status=PurchaseOrderStatus.DRAFT,
                expected_delivery_date=expected_delivery_date,
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
                    await self._new_line(session, order, fields, added, valid, f"lines.{i}")
                )
            await session.flush()
            await audit.record(
                session,
                principal,
                action="purchase_order.create",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                after=_order_snapshot(order, added),
            )
        return order

    async def _new_line(
        self,
        session: AsyncSession,
        order: PurchaseOrder,
        fields: OrderLineFields,
        existing: Sequence[PurchaseOrderLine],
        terms: Sequence[rules.ContractTerm],
        field: str,
    ) -> PurchaseOrderLine:
        await _products(session, [fields.product_id], field=f"{field}.product")
        if any(x.product_id == fields.product_id for x in existing):
            raise Duplicate(
                f"product {fields.product_id} is already on this order; change that line's "
                "quantity instead",
                field=f"{field}.product",
            )
        quantity = _quantity(fields.quantity, f"{field}.quantity")
        term = rules.valid_term(terms, fields.product_id, utcnow().date())
        if term is not None and quantity < term.minimum_order_quantity:
            raise InvalidInput(
                f"the contract's minimum order for product {fields.product_id} is "
                f"{term.minimum_order_quantity}, not {quantity}",
                field=f"{field}.quantity",
            )
        if fields.unit_price is not None:
            price = _price(fields.unit_price, f"{field}.unitPrice")
        elif term is not None:
            price = term.unit_price
        else:
            raise InvalidInput(
                f"no contract with this supplier prices product {fields.product_id} today; "
                "give a unit price",
                field=f"{field}.unitPrice",
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
        order = await _lock(session, PurchaseOrder, order_id, "order", "purchase order")
        require_order_visible(principal, order)
        principal.require(Permission.ORDER_MANAGE, location_id=order.deliver_to_id)
        rules.check_order_action(order.number, order.status, rules.OrderAction.EDIT)
        return order, await _order_lines(session, order.id, lock=True)

    async def add_order_line(
        self, principal: Principal, order_id: int, fields: OrderLineFields
    ) -> PurchaseOrder:
        async with self.db.write() as session:
            order, lines = await self._editable(session, principal, order_id)
            before = _order_snapshot(order, lines)
            terms = await _terms(session, order.supplier_id, order.buyer_id, [fields.product_id])
            line = await self._new_line(session, order, fields, lines, terms, "line")
            await audit.record(
                session,
                principal,
                action="purchase_order.line_add",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                before=before,
                after=_order_snapshot(order, [*lines, line]),
            )
        return order

    async def update_order_line(
        self,
        principal: Principal,
        line_id: int,
        *,
        quantity: int | None = None,
        unit_price: Decimal | None = None,
    ) -> PurchaseOrder:
        async with self.db.write() as session:
            line = await session.get(PurchaseOrderLine, line_id)
            if line is None:
                raise NotFound(f"order line {line_id} does not exist", field="line")
            order, lines = await self._editable(session, principal, line.order_id)
            before = _order_snapshot(order, lines)
            if quantity is not None:
                quantity = _quantity(quantity, "quantity")
                terms = await _terms(session, order.supplier_id, order.buyer_id, [line.product_id])
                term = rules.valid_term(terms, line.product_id, utcnow().date())
                if term is not None and quantity < term.minimum_order_quantity:
                    raise InvalidInput(
                        f"the contract's minimum order for this product is "
                        f"{term.minimum_order_quantity}, not {quantity}",
                        field="quantity",
                    )
                line.quantity = quantity
            if unit_price is not None:
                line.unit_price = _price(unit_price, "unitPrice")
            await session.flush()
            await audit.record(
                session,
                principal,
                action="purchase_order.line_update",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                before=before,
                after=_order_snapshot(order, lines),
            )
        return order

    async def remove_order_line(self, principal: Principal, line_id: int) -> PurchaseOrder:
        async with self.db.write() as session:
            line = await session.get(PurchaseOrderLine, line_id)
            if line is None:
                raise NotFound(f"order line {line_id} does not exist", field="line")
            order, lines = await self._editable(session, principal, line.order_id)
            before = _order_snapshot(order, lines)
            await session.delete(line)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="purchase_order.line_remove",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                before=before,
                after=_order_snapshot(order, [x for x in lines if x.id != line_id]),
            )
        return order

    async def submit_order(
        self, principal: Principal, order_id: int, expected_delivery_date: date | None = None
    ) -> PurchaseOrder:
        """DRAFT -> SUBMITTED. The order must promise a date: given now or at creation, or the
        longest contract lead time of its lines from today (on-time rates are measured on it)."""
        now = utcnow()
        async with self.db.write() as session:
            order = await _lock(session, PurchaseOrder, order_id, "order", "purchase order")
            require_order_visible(principal, order)
            principal.require(Permission.ORDER_MANAGE, location_id=order.deliver_to_id)
            target = rules.check_order_action(order.number, order.status, rules.OrderAction.SUBMIT)
            lines = await _order_lines(session, order.id)
            if not lines:
                raise InvalidInput(f"purchase order {order.number} has no lines", field="order")
            before = _order_snapshot(order, lines)
            if expected_delivery_date is not None:
                order.expected_delivery_date = expected_delivery_date
            if order.expected_delivery_date is None:
                terms = await _terms(
                    session, order.supplier_id, order.buyer_id, [x.product_id for x in lines]
                )
                leads = [
                    t.lead_time_days
                    for x in lines
                    if (t := rules.valid_term(terms, x.product_id, now.date())) is not None
                ]
                if not leads:
                    raise InvalidInput(
                        "no contract gives a lead time for these products; give an expected "
                        "delivery date",
                        field="expectedDeliveryDate",
                    )
                order.expected_delivery_date = now.date() + timedelta(days=max(leads))
            if order.expected_delivery_date < now.date():
                raise InvalidInput(
                    f"expected delivery date {order.expected_delivery_date} is in the past",
                    field="expectedDeliveryDate",
                )
            order.status = target
            order.submitted_at = now
            await session.flush()
            await audit.record(
                session,
                principal,
                action="purchase_order.submit",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                before=before,
                after=_order_snapshot(order, lines),
            )
        return order

    async def acknowledge_order(self, principal: Principal, order_id: int) -> PurchaseOrder:
        """SUBMITTED -> ACKNOWLEDGED, by the supplier the order is addressed to."""
        principal.require(Permission.ORDER_ACKNOWLEDGE)
        async with self.db.write() as session:
            order = await _lock(session, PurchaseOrder, order_id, "order", "purchase order")
            require_order_visible(principal, order)
            _require_party(
                principal, order.supplier_id, "supplier", f"acknowledge order {order.number}"
            )
            target = rules.check_order_action(
                order.number, order.status, rules.OrderAction.ACKNOWLEDGE
            )
            before = {"status": order.status.value}
            order.status = target
            order.acknowledged_at = utcnow()
            await session.flush()
            await audit.record(
                session,
                principal,
                action="purchase_order.acknowledge",
                entity_type="PurchaseOrder",
                entity_id=order.id,
                before=before,
                after={"status": order.status.value},
            )
        return order

    async def cancel_order(self, principal: Principal, order_id: int, reason: str) -> PurchaseOrder:
        """Cancel before anything was received or dispatched; planned shipments go with it."""
        reason = required_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            # Shipments before their order, as a receipt locks them, so the two never deadlock;
            # read again once the order is locked, which stops new ones being added.
            await _order_shipments(session, order_id)
            order = await _lock(session, PurchaseOrder, order_id, "order", "purchase order")
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
            before = {"status": order.status.value}
            order.status = target
            order.cancel_reason = reason
            order.closed_at = now
            await session.flush()
            await self.alerts.resolve(session, [rules.overdue_key(s.id) for s in shipments])
            await self.bus.emit(session, events)
            await audit.record_many(
                session,
                principal,
                [
                    *entries,
                    audit.AuditEntry(
                        "purchase_order.cancel",
                        "PurchaseOrder",
                        order.id,
                        before,
                        {"status": order.status.value},
                        reason,
                    ),
                ],
            )
        return order

    # --- shipments ------------------------------------------------------------------------

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
        tracking_number = optional_text(tracking_number, "trackingNumber", max_length=100)
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
            order = await _lock(session, PurchaseOrder, order_id, "purchaseOrder", "order")
            require_order_visible(principal, order)
            _require_party(
                principal, order.supplier_id, "supplier", f"ship against order {order.number}"
            )
            rules.check_order_action(order.number, order.status, rules.OrderAction.SHIP)
            origin_id = await self._origin(session, principal, order.supplier_id, origin_id)
            order_lines = {x.id: x for x in await _order_lines(session, order.id)}
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
                po_line = order_lines.get(fields.purchase_order_line_id)
                if po_line is None:
                    raise InvalidInput(
                        f"line {fields.purchase_order_line_id} is not a line of order "
                        f"{order.number}",
                        field=f"lines.{i}.purchaseOrderLine",
                    )
                quantity = _quantity(fields.quantity, f"lines.{i}.quantity")
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
                        field=f"lines.{i}.batchNumber",
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
            await self.bus.emit(session, [shipment_event(shipment, "CREATED")])
            await audit.record(
                session,
                principal,
                action="shipment.create",
                entity_type="Shipment",
                entity_id=shipment.id,
                after={
                    **_shipment_snapshot(shipment),
                    "lines": [
                        {
                            "purchase_order_line_id": x.purchase_order_line_id,
                            "lot_id": x.lot_id,
                            "quantity": x.quantity,
                            "serials": x.serials,
                        }
                        for x in rows
                    ],
                },
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
        location_note = optional_text(location_note, "locationNote", max_length=200)
        when = _aware(occurred_at, "occurredAt") or utcnow()
        async with self.db.write() as session:
            shipment = await _lock(session, Shipment, shipment_id, "shipment", "shipment")
            require_shipment_visible(principal, shipment)
            _require_party(
                principal, shipment.sender_id, "sender", f"update shipment {shipment.number}"
            )
            _not_transfer(shipment)
            if shipment.origin_id is not None:
                principal.require(Permission.SHIPMENT_SEND, location_id=shipment.origin_id)
            before = _shipment_snapshot(shipment)
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
                    field="occurredAt",
                )
            movements: list[Movement] = []
            if status is ShipmentStatus.DISPATCHED:
                movements = await self._dispatch(session, principal, shipment, when)
                shipment.dispatched_at = when
            elif status is ShipmentStatus.DELIVERED:
                shipment.delivered_at = when
            elif status is ShipmentStatus.CANCELLED:
                await self.alerts.resolve(session, [rules.overdue_key(shipment.id)])
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
            await self.bus.emit(session, [shipment_event(shipment, "STATUS_CHANGED")])
            await audit.record(
                session,
                principal,
                action=f"shipment.{status.value.lower()}",
                entity_type="Shipment",
                entity_id=shipment.id,
                before=before,
                after={
                    **_shipment_snapshot(shipment),
                    "occurred_at": when.isoformat(),
                    "location_note": location_note,
                    "ship_movement_ids": [m.id for m in movements],
                },
            )
        return shipment

    async def _dispatch(
        self, session: AsyncSession, principal: Principal, shipment: Shipment, when: datetime
    ) -> list[Movement]:
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

        async def replay(session: AsyncSession, movements: list[Movement]) -> ReceiptResult:
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
        _quantity(command.quantity, "quantity", allow_zero=True)
        _quantity(command.damaged_quantity, "damagedQuantity", allow_zero=True)
        shipment = await _lock(session, Shipment, command.shipment_id, "shipment", "shipment")
        require_shipment_visible(principal, shipment)
        _require_party(
            principal, shipment.receiver_id, "receiver", f"receive shipment {shipment.number}"
        )
        _not_transfer(shipment)
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
        line = await _lock(session, ShipmentLine, line.id, "line", "shipment line")
        expected_lot = await session.get(Lot, line.lot_id)
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
        movements: list[Movement] = []
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
        order, order_entry = await self._progress_order(session, shipment, line, plan.good)
        await self.bus.emit(session, [shipment_event(shipment, "LINE_RECEIVED")])
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
                        "discrepancies": [_discrepancy_snapshot(d) for d in found],
                    }
                ),
                note,
            )
        ]
        if order_entry is not None:
            entries.append(order_entry)
        await audit.record_many(session, principal, entries)
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
        if command.batch_number is None or (
            clean_batch_number(command.batch_number) == expected.batch_number
        ):
            return line, expected, None
        if command.expiry_date is None:
            raise InvalidInput(
                "give the expiry date of the batch that arrived", field="lot.expiryDate"
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

    async def _progress_order(
        self, session: AsyncSession, shipment: Shipment, line: ShipmentLine, good: int
    ) -> tuple[PurchaseOrder | None, audit.AuditEntry | None]:
        """Received packs count on the order line; the order's status follows its lines."""
        if shipment.purchase_order_id is None:
            return None, None
        order = await _lock(
            session, PurchaseOrder, shipment.purchase_order_id, "order", "purchase order"
        )
        lines = await _order_lines(session, order.id, lock=True)
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
                "lines": [
                    {"id": x.id, "quantity": x.quantity, "received_quantity": x.received_quantity}
                    for x in lines
                ],
            },
        )

    async def complete_receipt(
        self, principal: Principal, shipment_id: int, note: str | None = None
    ) -> CompletionResult:
        """RECEIVED: whatever was neither received nor reported damaged is SHORT, line by line."""
        principal.require(Permission.SHIPMENT_RECEIVE)
        note = optional_text(note, "note", max_length=500)
        async with self.db.write() as session:
            shipment = await _lock(session, Shipment, shipment_id, "shipment", "shipment")
            require_shipment_visible(principal, shipment)
            _require_party(
                principal, shipment.receiver_id, "receiver", f"receive shipment {shipment.number}"
            )
            _not_transfer(shipment)
            principal.require(Permission.SHIPMENT_RECEIVE, location_id=shipment.destination_id)
            before = _shipment_snapshot(shipment)
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
            await self.alerts.resolve(session, [rules.overdue_key(shipment.id)])
            await self.bus.emit(session, [shipment_event(shipment, "STATUS_CHANGED")])
            await audit.record(
                session,
                principal,
                action="shipment.received",
                entity_type="Shipment",
                entity_id=shipment.id,
                before=before,
                after={
                    **_shipment_snapshot(shipment),
                    "short": [_discrepancy_snapshot(d) for d in shorts],
                },
                reason=note,
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
                            Shipment.expected_at < _day_start(today),
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
                        condition_key=rules.overdue_key(shipment.id),
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

    # --- performance ----------------------------------------------------------------------

    async def performance(
        self,
        principal: Principal,
        supplier_id: int,
        *,
        since: date | None = None,
        until: date | None = None,
    ) -> PerformanceReport:
        """On-time, fill, lead time, discrepancy and price figures from orders and shipments.

        Shipments count in the period they were received in; order lines in the period their
        order was submitted in (since inclusive, until exclusive). A buyer sees its own orders'
        figures; the supplier itself and ADMIN/AUDITOR see all buyers.
        """
        require_supplier_visible(principal, supplier_id)
        if since is not None and until is not None and until <= since:
            raise InvalidInput("until must be after since", field="until")
        buyer_id = (
            None
            if sees_everything(principal) or principal.organisation_id == supplier_id
            else principal.organisation_id
        )
        async with self.db.read() as session:
            await _supplier(session, supplier_id)
            shipments = await self._received_facts(session, supplier_id, buyer_id, since, until)
            lines = await self._line_facts(session, supplier_id, buyer_id, since, until)
        return PerformanceReport(
            supplier_id, since, until, buyer_id, rules.performance(shipments, lines)
        )

    @staticmethod
    async def _received_facts(
        session: AsyncSession,
        supplier_id: int,
        buyer_id: int | None,
        since: date | None,
        until: date | None,
    ) -> list[rules.ReceivedShipmentFact]:
        S, P = Shipment, PurchaseOrder
        stmt = (
            select(S.id, S.received_at, P.submitted_at, P.expected_delivery_date)
            .join(P, P.id == S.purchase_order_id)
            .where(S.sender_id == supplier_id, S.status == ShipmentStatus.RECEIVED)
        )
        if buyer_id is not None:
            stmt = stmt.where(P.buyer_id == buyer_id)
        if since is not None:
            stmt = stmt.where(S.received_at >= _day_start(since))
        if until is not None:
            stmt = stmt.where(S.received_at < _day_start(until))
        rows = (await session.execute(stmt)).all()
        counts: dict[int, int] = {}
        if rows:
            counts = dict(
                (
                    await session.execute(
                        select(Discrepancy.shipment_id, func.count(Discrepancy.id))
                        .where(Discrepancy.shipment_id.in_([r[0] for r in rows]))
                        .group_by(Discrepancy.shipment_id)
                    )
                ).all()
            )
        return [
            rules.ReceivedShipmentFact(
                received_at=received_at,
                order_submitted_at=submitted_at,
                order_expected_date=expected,
                discrepancies=counts.get(shipment_id, 0),
            )
            for shipment_id, received_at, submitted_at, expected in rows
        ]

    @staticmethod
    async def _line_facts(
        session: AsyncSession,
        supplier_id: int,
        buyer_id: int | None,
        since: date | None,
        until: date | None,
    ) -> list[rules.OrderLineFact]:
        P, L = PurchaseOrder, PurchaseOrderLine
        stmt = (
            select(
                P.buyer_id,
                P.submitted_at,
                L.product_id,
                L.quantity,
                L.received_quantity,
                L.unit_price,
            )
            .join(L, L.order_id == P.id)
            .where(
                P.supplier_id == supplier_id,
                P.submitted_at.is_not(None),
                P.status.not_in([PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.CANCELLED]),
            )
        )
        if buyer_id is not None:
            stmt = stmt.where(P.buyer_id == buyer_id)
        if since is not None:
            stmt = stmt.where(P.submitted_at >= _day_start(since))
        if until is not None:
            stmt = stmt.where(P.submitted_at < _day_start(until))
        rows = (await session.execute(stmt)).all()
        terms_by_buyer: dict[int, list[rules.ContractTerm]] = {}
        for buyer in {r[0] for r in rows}:
            terms_by_buyer[buyer] = await _terms(
                session, supplier_id, buyer, [r[2] for r in rows if r[0] == buyer]
            )
        facts = []
        for buyer, submitted_at, product_id, quantity, received, price in rows:
            term = rules.valid_term(terms_by_buyer[buyer], product_id, submitted_at.date())
            facts.append(
                rules.OrderLineFact(
                    ordered=quantity,
                    received=received,
                    unit_price=price,
                    contract_price=term.unit_price if term else None,
                )
            )
        return facts

    # --- reads used by the API (access checked by the caller) --------------------------------

    async def contract_prices(self, line_ids: Sequence[int]) -> list[Decimal | None]:
        """Per order line: the contract price valid when its order was submitted (or today)."""
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
                terms = await _terms(session, order.supplier_id, order.buyer_id, [line.product_id])
                on = order.submitted_at.date() if order.submitted_at else today
                term = rules.valid_term(terms, line.product_id, on)
                found[line.id] = term.unit_price if term else None
        return [found.get(i) for i in line_ids]


def _not_transfer(shipment: Shipment) -> None:
    if shipment.transfer_id is not None:
        raise InvalidInput(
            f"shipment {shipment.number} belongs to a transfer; use the transfer mutations",
            field="shipment",
        )


def _contact_snapshot(contact: SupplierContact) -> dict[str, object]:
    return audit.snapshot(contact, "organisation_id", "name", "role", "email", "phone")


async def _products(
    session: AsyncSession, product_ids: Iterable[int], *, field: str = "product"
) -> None:
    ids = set(product_ids)
    if not ids:
        return
    found = set(
        (await session.execute(select(Product.id).where(Product.id.in_(ids)))).scalars().all()
    )
    missing = sorted(ids - found)
    if missing:
        raise NotFound(f"product {missing[0]} does not exist", field=field)


async def _current_contract(
    session: AsyncSession, supplier_id: int, buyer_id: int, on: date
) -> int | None:
    """The most recent contract between the parties valid on `on`, if any."""
    return (
        await session.execute(
            select(Contract.id)
            .where(
                Contract.supplier_id == supplier_id,
                Contract.buyer_id == buyer_id,
                Contract.valid_from <= on,
                Contract.valid_until >= on,
            )
            .order_by(Contract.valid_from.desc(), Contract.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


def visible_parties_clause(principal: Principal, *columns: Any) -> Any:
    """SQL filter: rows where the principal's organisation is one of the parties."""
    if sees_everything(principal):
        return None
    if principal.organisation_id is None:
        return false()
    return or_(*(c == principal.organisation_id for c in columns))
