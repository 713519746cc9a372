"""GraphQL for procurement: suppliers (contacts, contracts, performance), purchase orders, and
shipments with line-by-line receiving and the `shipmentUpdated` subscription.

Reads by id of something belonging to other organisations are FORBIDDEN (never null); lists
show only what the caller's organisation is a party to (everything for ADMIN and AUDITOR).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import strawberry
from sqlalchemy import select
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.cost import weigh
from server.core.db import Database, utcnow
from server.core.errors import NotFound
from server.core.events import SharedLookups
from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_related,
    paginate,
    parse_pks,
)
from server.core.security import Permission, Principal
from server.inventory.api import Movement
from server.network import models as network_models
from server.network.api import Location, Organisation, OrganisationKind, username_of
from server.procurement import models
from server.procurement.service import (
    SHIPMENT_TOPIC,
    SUPPLIER_KINDS,
    CompletionResult,
    ContactFields,
    ContractLineFields,
    LineReceiptCommand,
    OrderLineFields,
    PerformanceReport,
    ReceiptResult,
    ShipmentLineFields,
    require_contract_visible,
    require_order_visible,
    require_shipment_visible,
    require_supplier_visible,
    sees_parties,
    supplier_only,
    visible_parties_clause,
)

PurchaseOrderStatus = strawberry.enum(models.PurchaseOrderStatus)
ShipmentStatus = strawberry.enum(models.ShipmentStatus)
DiscrepancyKind = strawberry.enum(models.DiscrepancyKind)


def _organisation_id(value: relay.GlobalID | str, field: str) -> int:
    """A supplier is an organisation: accept either kind of ID."""
    return decode_id(value, ("Supplier", Organisation), field)


def _optional(value: relay.GlobalID | None, node_type: type | str, field: str) -> int | None:
    return None if value is None else decode_id(value, node_type, field)


async def _visible_nodes(
    info: Info,
    model: type[Any],
    node_ids: Iterable[str],
    convert: Callable[[Any], Any],
    check: Callable[[Principal, Any], Awaitable[None] | None],
) -> list[Any]:
    """`resolve_nodes` for procurement: signed in, PROCUREMENT_READ, and a party to each row."""
    principal = info.context.require_principal()
    principal.require(Permission.PROCUREMENT_READ)
    rows = await info.context.by_id(model).load_many(parse_pks(node_ids))
    for row in rows:
        if row is not None:
            outcome = check(principal, row)
            if outcome is not None:
                await outcome
    return [convert(row) if row is not None else None for row in rows]


def _via_shipment(info: Info) -> Callable[[Principal, Any], Awaitable[None]]:
    async def check(principal: Principal, row: Any) -> None:
        shipment = await info.context.by_id(models.Shipment).load(row.shipment_id)
        if shipment is not None:
            require_shipment_visible(principal, shipment)

    return check


def _via_order(info: Info) -> Callable[[Principal, Any], Awaitable[None]]:
    async def check(principal: Principal, row: Any) -> None:
        order = await info.context.by_id(models.PurchaseOrder).load(row.order_id)
        if order is not None:
            require_order_visible(principal, order)

    return check


# --- suppliers -----------------------------------------------------------------------------


@strawberry.type(description="Someone to call at a supplier.")
class SupplierContact(relay.Node):
    id: relay.NodeID[int]
    name: str
    role: str | None
    email: str | None
    phone: str | None

    @classmethod
    def from_model(cls, c: models.SupplierContact) -> Self:
        return cls(id=c.id, name=c.name, role=c.role, email=c.email, phone=c.phone)

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info,
            models.SupplierContact,
            node_ids,
            cls.from_model,
            lambda p, row: require_supplier_visible(p, row.organisation_id),
        )


@strawberry.type(description="Price, lead time and minimum order agreed for one product.")
class ContractLine:
    unit_price: Decimal
    lead_time_days: int
    minimum_order_quantity: int
    product_id: strawberry.Private[int]

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type(description="What a buyer agreed with a supplier for a period.")
class Contract(relay.Node):
    id: relay.NodeID[int]
    reference: str
    valid_from: date
    valid_until: date
    created_at: datetime
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, c: models.Contract) -> Self:
        return cls(
            id=c.id,
            reference=c.reference,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            created_at=c.created_at,
            supplier_id=c.supplier_id,
            buyer_id=c.buyer_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.Contract, node_ids, cls.from_model, require_contract_visible
        )

    @strawberry.field(description="True when today is within the validity dates.")
    def valid_today(self) -> bool:
        return self.valid_from <= utcnow().date() <= self.valid_until

    @strawberry.field
    async def supplier(self, info: Info) -> Supplier:
        return await _supplier_of(info, self.supplier_id)

    @strawberry.field
    async def buyer(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.buyer_id, Organisation.from_model
        )

    @strawberry.field
    async def lines(self, info: Info) -> list[ContractLine]:
        rows = await info.context.grouped(
            "contract_lines", models.ContractLine.contract_id, models.ContractLine.id
        ).load(self.id)
        return [
            ContractLine(
                unit_price=r.unit_price,
                lead_time_days=r.lead_time_days,
                minimum_order_quantity=r.minimum_order_quantity,
                product_id=r.product_id,
            )
            for r in rows
        ]


@strawberry.type(description="Supplier performance over a period, computed from the records.")
class SupplierPerformance:
    since: date | None = strawberry.field(description="Inclusive; null means from the start.")
    until: date | None = strawberry.field(description="Exclusive; null means up to now.")
    shipments_received: int = strawberry.field(
        description="Shipments against orders whose receipt was completed in the period."
    )
    shipments_on_time: int = strawberry.field(
        description="Of those, received (UTC date) on or before the order's expected date."
    )
    on_time_delivery_rate: float | None = strawberry.field(
        description="shipmentsOnTime / shipmentsReceived (0..1); null without shipments."
    )
    ordered_quantity: int = strawberry.field(
        description="Packs ordered on orders submitted in the period (not draft or cancelled)."
    )
    received_quantity: int = strawberry.field(
        description="Packs received on those lines, each line capped at what it ordered."
    )
    fill_rate: float | None = strawberry.field(description="receivedQuantity / orderedQuantity.")
    average_lead_time_days: float | None = strawberry.field(
        description="Order submitted -> shipment received, in days, averaged over shipments."
    )
    lead_time_p90_days: float | None = strawberry.field(
        description="90th percentile of the same (nearest rank: an observed lead time)."
    )
    shipments_with_discrepancies: int
    discrepancy_rate: float | None = strawberry.field(
        description="Received shipments with at least one discrepancy / shipments received."
    )
    priced_quantity: int = strawberry.field(
        description="Ordered packs that had a contract price valid when the order was submitted."
    )
    price_variance_percent: float | None = strawberry.field(
        description="sum((price - contract price) * qty) / sum(contract price * qty) * 100."
    )
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int | None]

    @classmethod
    def from_result(cls, r: PerformanceReport) -> Self:
        f = r.figures
        return cls(
            since=r.since,
            until=r.until,
            shipments_received=f.shipments_received,
            shipments_on_time=f.shipments_on_time,
            on_time_delivery_rate=f.on_time_rate,
            ordered_quantity=f.ordered_quantity,
            received_quantity=f.received_quantity,
            fill_rate=f.fill_rate,
            average_lead_time_days=f.average_lead_time_days,
            lead_time_p90_days=f.p90_lead_time_days,
            shipments_with_discrepancies=f.shipments_with_discrepancies,
            discrepancy_rate=f.discrepancy_rate,
            priced_quantity=f.priced_quantity,
            price_variance_percent=f.price_variance_percent,
            supplier_id=r.supplier_id,
            buyer_id=r.buyer_id,
        )

    @strawberry.field
    async def supplier(self, info: Info) -> Supplier:
        return await _supplier_of(info, self.supplier_id)

    @strawberry.field(description="The buyer the figures are limited to (null: all buyers).")
    async def buyer(self, info: Info) -> Organisation | None:
        return await load_related(
            info, network_models.Organisation, self.buyer_id, Organisation.from_model
        )


@strawberry.type(description="An organisation that supplies (manufacturer, wholesaler, supplier).")
class Supplier(relay.Node):
    id: relay.NodeID[int]
    name: str
    kind: OrganisationKind  # type: ignore[valid-type]
    gln: str | None

    @classmethod
    def from_model(cls, org: network_models.Organisation) -> Self:
        return cls(id=org.id, name=org.name, kind=org.kind, gln=org.gln)

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()
        principal.require(Permission.PROCUREMENT_READ)
        rows = await info.context.by_id(network_models.Organisation).load_many(parse_pks(node_ids))
        found = []
        for row in rows:
            if row is None or row.kind not in SUPPLIER_KINDS:
                found.append(None)
                continue
            require_supplier_visible(principal, row.id)
            found.append(cls.from_model(row))
        return found

    @strawberry.field(description="The same organisation in the network.")
    async def organisation(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.id, Organisation.from_model
        )

    @strawberry.field
    async def contacts(self, info: Info) -> list[SupplierContact]:
        rows = await info.context.grouped(
            "supplier_contacts", models.SupplierContact.organisation_id, models.SupplierContact.id
        ).load(self.id)
        return [SupplierContact.from_model(r) for r in rows]

    @strawberry.field(
        description="Contracts with this supplier that your organisation is party to."
    )
    async def contracts(self, info: Info) -> list[Contract]:
        principal = info.context.require_principal()
        rows = await info.context.grouped(
            "supplier_contracts", models.Contract.supplier_id, models.Contract.valid_from
        ).load(self.id)
        return [
            Contract.from_model(r)
            for r in rows
            if sees_parties(principal, r.supplier_id, r.buyer_id)
        ]

    @strawberry.field(description="Order history with this supplier, newest first.")
    async def purchase_orders(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        status: PurchaseOrderStatus | None = None,  # type: ignore[valid-type]
    ) -> PurchaseOrderConnection:
        return await _purchase_orders(info, first, after, supplier_id=self.id, status=status)

    @strawberry.field(description="On-time, fill, lead-time, discrepancy and price figures.")
    async def performance(
        self, info: Info, since: date | None = None, until: date | None = None
    ) -> SupplierPerformance:
        return await _performance(info, self.id, since, until)


async def _supplier_of(info: Info, organisation_id: int) -> Supplier:
    org = await info.context.by_id(network_models.Organisation).load(organisation_id)
    return Supplier.from_model(org)


async def _performance(
    info: Info, supplier_id: int, since: date | None, until: date | None
) -> SupplierPerformance:
    principal = info.context.require_principal()
    result = await info.context.services.procurement.performance(
        principal, supplier_id, since=since, until=until
    )
    return SupplierPerformance.from_result(result)


# --- purchase orders -----------------------------------------------------------------------


def _contract_price_loader(info: Info) -> DataLoader[int, Decimal | None]:
    service = info.context.services.procurement
    return info.context.loader(
        ("po_contract_price",), lambda: DataLoader(load_fn=service.contract_prices)
    )


@strawberry.type(description="A product ordered, at a price, and how much of it has arrived.")
class PurchaseOrderLine(relay.Node):
    id: relay.NodeID[int]
    quantity: int
    unit_price: Decimal
    received_quantity: int = strawberry.field(
        description="Good packs received against this line (damaged packs excluded)."
    )
    order_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, x: models.PurchaseOrderLine) -> Self:
        return cls(
            id=x.id,
            quantity=x.quantity,
            unit_price=x.unit_price,
            received_quantity=x.received_quantity,
            order_id=x.order_id,
            product_id=x.product_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.PurchaseOrderLine, node_ids, cls.from_model, _via_order(info)
        )

    @strawberry.field
    def outstanding_quantity(self) -> int:
        return max(self.quantity - self.received_quantity, 0)

    @strawberry.field
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity

    @strawberry.field(
        description="The contract price valid when the order was submitted (today for drafts)."
    )
    async def contract_price(self, info: Info) -> Decimal | None:
        return await _contract_price_loader(info).load(self.id)

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type(
    description="DRAFT -> SUBMITTED -> ACKNOWLEDGED -> PARTIALLY_RECEIVED -> RECEIVED, or "
    "CANCELLED (never after a receipt)."
)
class PurchaseOrder(relay.Node):
    id: relay.NodeID[int]
    number: str
    status: PurchaseOrderStatus  # type: ignore[valid-type]
    expected_delivery_date: date | None
    note: str | None
    created_at: datetime
    submitted_at: datetime | None
    acknowledged_at: datetime | None
    closed_at: datetime | None
    cancel_reason: str | None
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int]
    deliver_to_id: strawberry.Private[int]
    contract_id: strawberry.Private[int | None]
    created_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, o: models.PurchaseOrder) -> Self:
        return cls(
            id=o.id,
            number=o.number,
            status=o.status,
            expected_delivery_date=o.expected_delivery_date,
            note=o.note,
            created_at=o.created_at,
            submitted_at=o.submitted_at,
            acknowledged_at=o.acknowledged_at,
            closed_at=o.closed_at,
            cancel_reason=o.cancel_reason,
            supplier_id=o.supplier_id,
            buyer_id=o.buyer_id,
            deliver_to_id=o.deliver_to_id,
            contract_id=o.contract_id,
            created_by_id=o.created_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.PurchaseOrder, node_ids, cls.from_model, require_order_visible
        )

    @strawberry.field
    async def supplier(self, info: Info) -> Supplier:
        return await _supplier_of(info, self.supplier_id)

    @strawberry.field
    async def buyer(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.buyer_id, Organisation.from_model
        )

    @strawberry.field
    async def deliver_to(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.deliver_to_id, Location.from_model
        )

    @strawberry.field(description="The contract valid between the parties when it was created.")
    async def contract(self, info: Info) -> Contract | None:
        return await load_related(info, models.Contract, self.contract_id, Contract.from_model)

    @strawberry.field(description="Username of who created it.")
    async def created_by(self, info: Info) -> str | None:
        return await username_of(info, self.created_by_id)

    @strawberry.field
    async def lines(self, info: Info) -> list[PurchaseOrderLine]:
        rows = await info.context.grouped(
            "po_lines", models.PurchaseOrderLine.order_id, models.PurchaseOrderLine.id
        ).load(self.id)
        return [PurchaseOrderLine.from_model(r) for r in rows]

    @strawberry.field
    async def total(self, info: Info) -> Decimal:
        rows = await info.context.grouped(
            "po_lines", models.PurchaseOrderLine.order_id, models.PurchaseOrderLine.id
        ).load(self.id)
        return sum((r.unit_price * r.quantity for r in rows), Decimal(0))

    @strawberry.field
    async def shipments(self, info: Info) -> list[Shipment]:
        rows = await info.context.grouped(
            "po_shipments", models.Shipment.purchase_order_id, models.Shipment.id
        ).load(self.id)
        return [Shipment.from_model(r) for r in rows]


@strawberry.type
class PurchaseOrderConnection(CountedConnection[PurchaseOrder]):
    pass


async def _purchase_orders(
    info: Info,
    first: int,
    after: str | None,
    *,
    supplier_id: int | None = None,
    status: Any = None,
    deliver_to_id: int | None = None,
) -> PurchaseOrderConnection:
    principal = info.context.require_principal()
    principal.require(Permission.PROCUREMENT_READ)
    P = models.PurchaseOrder
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
    page = await paginate(
        info,
        stmt,
        keys=[P.id],
        first=first,
        after=after,
        descending=True,
        key_of=lambda r: [r.id],
    )
    return connection(PurchaseOrderConnection, page, PurchaseOrder.from_model)


# --- shipments -----------------------------------------------------------------------------


def _discrepancies_of(info: Info) -> DataLoader[int, list[models.Discrepancy]]:
    return info.context.grouped(
        "shipment_discrepancies", models.Discrepancy.shipment_id, models.Discrepancy.id
    )


@strawberry.type(description="One status update: who, when, and where the goods were.")
class ShipmentEvent:
    status: ShipmentStatus  # type: ignore[valid-type]
    occurred_at: datetime
    location_note: str | None
    actor_id: strawberry.Private[int | None]

    @strawberry.field(description="Username of who reported it.")
    async def actor(self, info: Info) -> str | None:
        return await username_of(info, self.actor_id)


@strawberry.type(description="Packs of one lot on a shipment, and how many were received.")
class ShipmentLine(relay.Node):
    id: relay.NodeID[int]
    quantity: int = strawberry.field(description="What the sender declared; never changed.")
    serials: list[str]
    received_quantity: int = strawberry.field(description="Good packs booked into stock.")
    shipment_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    purchase_order_line_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, x: models.ShipmentLine) -> Self:
        return cls(
            id=x.id,
            quantity=x.quantity,
            serials=list(x.serials or []),
            received_quantity=x.received_quantity,
            shipment_id=x.shipment_id,
            lot_id=x.lot_id,
            purchase_order_line_id=x.purchase_order_line_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.ShipmentLine, node_ids, cls.from_model, _via_shipment(info)
        )

    async def _damaged(self, info: Info) -> int:
        return sum(
            d.quantity
            for d in await _discrepancies_of(info).load(self.shipment_id)
            if d.kind is models.DiscrepancyKind.DAMAGED
            and d.details.get("shipment_line_id") == self.id
        )

    @strawberry.field(description="Packs reported damaged on receipt (not in stock).")
    async def damaged_quantity(self, info: Info) -> int:
        return await self._damaged(info)

    @strawberry.field(description="Packs neither received nor reported damaged yet.")
    async def outstanding_quantity(self, info: Info) -> int:
        return max(self.quantity - self.received_quantity - await self._damaged(info), 0)

    @strawberry.field
    async def lot(self, info: Info) -> Lot:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def product(self, info: Info) -> Product:
        lot = await info.context.by_id(catalog_models.Lot).load(self.lot_id)
        return await load_related(info, catalog_models.Product, lot.product_id, Product.from_model)

    @strawberry.field
    async def purchase_order_line(self, info: Info) -> PurchaseOrderLine | None:
        return await load_related(
            info,
            models.PurchaseOrderLine,
            self.purchase_order_line_id,
            PurchaseOrderLine.from_model,
        )


@strawberry.type(description="A difference found on receipt; the sender's numbers stay as sent.")
class Discrepancy(relay.Node):
    id: relay.NodeID[int]
    kind: DiscrepancyKind  # type: ignore[valid-type]
    quantity: int
    note: str | None
    details: JSON
    recorded_at: datetime
    shipment_id: strawberry.Private[int]
    lot_id: strawberry.Private[int | None]
    recorded_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, d: models.Discrepancy) -> Self:
        return cls(
            id=d.id,
            kind=d.kind,
            quantity=d.quantity,
            note=d.note,
            details=d.details,
            recorded_at=d.recorded_at,
            shipment_id=d.shipment_id or 0,
            lot_id=d.lot_id,
            recorded_by_id=d.recorded_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.Discrepancy, node_ids, cls.from_model, _via_shipment(info)
        )

    @strawberry.field(description="The lot the packs really were (for WRONG_LOT: what arrived).")
    async def lot(self, info: Info) -> Lot | None:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def line(self, info: Info) -> ShipmentLine | None:
        line_id = self.details.get("shipment_line_id") if isinstance(self.details, dict) else None
        return await load_related(info, models.ShipmentLine, line_id, ShipmentLine.from_model)

    @strawberry.field(description="Username of who recorded it.")
    async def recorded_by(self, info: Info) -> str | None:
        return await username_of(info, self.recorded_by_id)


@strawberry.type(
    description="PLANNED -> DISPATCHED -> IN_TRANSIT -> DELIVERED -> RECEIVED, or CANCELLED "
    "before dispatch. Receiving may start once dispatched."
)
class Shipment(relay.Node):
    id: relay.NodeID[int]
    number: str
    status: ShipmentStatus  # type: ignore[valid-type]
    expected_at: datetime | None
    carrier: str | None
    tracking_number: str | None
    created_at: datetime
    dispatched_at: datetime | None
    delivered_at: datetime | None
    received_at: datetime | None
    sender_id: strawberry.Private[int]
    receiver_id: strawberry.Private[int]
    origin_id: strawberry.Private[int | None]
    destination_id: strawberry.Private[int]
    purchase_order_id: strawberry.Private[int | None]
    created_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, s: models.Shipment) -> Self:
        return cls(
            id=s.id,
            number=s.number,
            status=s.status,
            expected_at=s.expected_at,
            carrier=s.carrier,
            tracking_number=s.tracking_number,
            created_at=s.created_at,
            dispatched_at=s.dispatched_at,
            delivered_at=s.delivered_at,
            received_at=s.received_at,
            sender_id=s.sender_id,
            receiver_id=s.receiver_id,
            origin_id=s.origin_id,
            destination_id=s.destination_id,
            purchase_order_id=s.purchase_order_id,
            created_by_id=s.created_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _visible_nodes(
            info, models.Shipment, node_ids, cls.from_model, require_shipment_visible
        )

    @strawberry.field
    async def sender(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.sender_id, Organisation.from_model
        )

    @strawberry.field
    async def receiver(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.receiver_id, Organisation.from_model
        )

    @strawberry.field(description="Where it left from; null for a sender outside Apotheca.")
    async def origin(self, info: Info) -> Location | None:
        return await load_related(
            info, network_models.Location, self.origin_id, Location.from_model
        )

    @strawberry.field
    async def destination(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.destination_id, Location.from_model
        )

    @strawberry.field
    async def purchase_order(self, info: Info) -> PurchaseOrder | None:
        return await load_related(
            info, models.PurchaseOrder, self.purchase_order_id, PurchaseOrder.from_model
        )

    @strawberry.field(description="Username of who created it.")
    async def created_by(self, info: Info) -> str | None:
        return await username_of(info, self.created_by_id)

    @strawberry.field
    async def lines(self, info: Info) -> list[ShipmentLine]:
        rows = await info.context.grouped(
            "shipment_lines", models.ShipmentLine.shipment_id, models.ShipmentLine.id
        ).load(self.id)
        return [ShipmentLine.from_model(r) for r in rows]

    @strawberry.field(description="Every status update, oldest first.")
    async def events(self, info: Info) -> list[ShipmentEvent]:
        rows = await info.context.grouped(
            "shipment_events", models.ShipmentEvent.shipment_id, models.ShipmentEvent.id
        ).load(self.id)
        return [
            ShipmentEvent(
                status=r.status,
                occurred_at=r.occurred_at,
                location_note=r.location_note,
                actor_id=r.actor_id,
            )
            for r in rows
        ]

    @strawberry.field
    async def discrepancies(self, info: Info) -> list[Discrepancy]:
        return [Discrepancy.from_model(d) for d in await _discrepancies_of(info).load(self.id)]


@strawberry.type
class ShipmentConnection(CountedConnection[Shipment]):
    pass


@strawberry.type
class SupplierConnection(CountedConnection[Supplier]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Supplier organisations (a supplier sees only itself).")
    async def suppliers(
        self, info: Info, first: int, after: str | None = None
    ) -> SupplierConnection:
        principal = info.context.require_principal()
        principal.require(Permission.PROCUREMENT_READ)
        Org = network_models.Organisation
        stmt = select(Org).where(Org.kind.in_(SUPPLIER_KINDS))
        if supplier_only(principal):
            stmt = stmt.where(Org.id == (principal.organisation_id or 0))
        page = await paginate(
            info,
            stmt,
            keys=[Org.name, Org.id],
            first=first,
            after=after,
            key_of=lambda r: [r.name, r.id],
        )
        return connection(SupplierConnection, page, Supplier.from_model)

    @strawberry.field
    async def supplier(self, info: Info, id: relay.GlobalID) -> Supplier | None:
        node_id = str(_organisation_id(id, "id"))
        return (await Supplier.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Performance of one supplier over a period.", metadata=weigh(100))
    async def supplier_performance(
        self,
        info: Info,
        supplier: relay.GlobalID,
        since: date | None = None,
        until: date | None = None,
    ) -> SupplierPerformance:
        return await _performance(info, _organisation_id(supplier, "supplier"), since, until)

    @strawberry.field
    async def purchase_order(self, info: Info, id: relay.GlobalID) -> PurchaseOrder | None:
        node_id = str(decode_id(id, PurchaseOrder, "id"))
        return (await PurchaseOrder.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Orders your organisation placed or received, newest first.")
    async def purchase_orders(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        supplier: relay.GlobalID | None = None,
        status: PurchaseOrderStatus | None = None,  # type: ignore[valid-type]
        deliver_to: relay.GlobalID | None = None,
    ) -> PurchaseOrderConnection:
        return await _purchase_orders(
            info,
            first,
            after,
            supplier_id=None if supplier is None else _organisation_id(supplier, "supplier"),
            status=status,
            deliver_to_id=_optional(deliver_to, Location, "deliverTo"),
        )

    @strawberry.field
    async def shipment(self, info: Info, id: relay.GlobalID) -> Shipment | None:
        node_id = str(decode_id(id, Shipment, "id"))
        return (await Shipment.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Shipments your organisation sends or receives, newest first.")
    async def shipments(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        status: ShipmentStatus | None = None,  # type: ignore[valid-type]
        purchase_order: relay.GlobalID | None = None,
        destination: relay.GlobalID | None = None,
    ) -> ShipmentConnection:
        principal = info.context.require_principal()
        principal.require(Permission.PROCUREMENT_READ)
        S = models.Shipment
        stmt = select(S)
        if purchase_order is not None:
            order_id = decode_id(purchase_order, PurchaseOrder, "purchaseOrder")
            order = await info.context.by_id(models.PurchaseOrder).load(order_id)
            if order is not None:
                require_order_visible(principal, order)
            stmt = stmt.where(S.purchase_order_id == order_id)
        if (clause := visible_parties_clause(principal, S.sender_id, S.receiver_id)) is not None:
            stmt = stmt.where(clause)
        if status is not None:
            stmt = stmt.where(S.status == status)
        if destination is not None:
            stmt = stmt.where(S.destination_id == decode_id(destination, Location, "destination"))
        page = await paginate(
            info,
            stmt,
            keys=[S.id],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.id],
        )
        return connection(ShipmentConnection, page, Shipment.from_model)


# --- mutations -----------------------------------------------------------------------------


@strawberry.input
class SupplierContactInput:
    supplier: relay.GlobalID
    name: str
    role: str | None = None
    email: str | None = None
    phone: str | None = None


@strawberry.input
class ContractLineInput:
    product: relay.GlobalID
    unit_price: Decimal
    lead_time_days: int
    minimum_order_quantity: int = 1


@strawberry.input
class CreateContractInput:
    supplier: relay.GlobalID
    reference: str
    valid_from: date
    valid_until: date
    lines: list[ContractLineInput]
    buyer: relay.GlobalID | None = strawberry.field(
        default=None, description="Default: your organisation (only ADMIN may name another)."
    )


@strawberry.input(description="Without unitPrice, the contract price valid today is used.")
class PurchaseOrderLineInput:
    product: relay.GlobalID
    quantity: int
    unit_price: Decimal | None = None


@strawberry.input
class CreatePurchaseOrderInput:
    supplier: relay.GlobalID
    deliver_to: relay.GlobalID
    lines: list[PurchaseOrderLineInput] = strawberry.field(default_factory=list)
    expected_delivery_date: date | None = None
    note: str | None = None


@strawberry.input(description="Packs of one batch against one order line.")
class ShipmentLineInput:
    purchase_order_line: relay.GlobalID
    batch_number: str
    expiry_date: date
    quantity: int
    serials: list[str] = strawberry.field(default_factory=list)


@strawberry.input
class CreateShipmentInput:
    purchase_order: relay.GlobalID
    lines: list[ShipmentLineInput]
    origin: relay.GlobalID | None = strawberry.field(
        default=None, description="Default: the sender's only location, if it has one."
    )
    expected_at: datetime | None = None
    carrier: str | None = None
    tracking_number: str | None = None


@strawberry.input(description="The batch that really arrived, when it is not the line's.")
class ReceivedLotInput:
    batch_number: str
    expiry_date: date | None = None


@strawberry.type
class SupplierContactPayload:
    contact: SupplierContact | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class RemoveSupplierContactPayload:
    removed_id: relay.GlobalID | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class ContractPayload:
    contract: Contract | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class PurchaseOrderPayload:
    purchase_order: PurchaseOrder | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class ShipmentPayload:
    shipment: Shipment | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type(description="One receipt: the RECEIVE movements and any discrepancies.")
class ShipmentLineReceiptPayload:
    shipment: Shipment | None = None
    line: ShipmentLine | None = None
    purchase_order: PurchaseOrder | None = None
    movements: list[Movement] = strawberry.field(default_factory=list)
    discrepancies: list[Discrepancy] = strawberry.field(default_factory=list)
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class CompleteShipmentReceiptPayload:
    shipment: Shipment | None = None
    short_discrepancies: list[Discrepancy] = strawberry.field(
        default_factory=list, description="SHORT discrepancies recorded on completion."
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _order_payload(order: models.PurchaseOrder | None, errors: list[MutationError]) -> Any:
    return PurchaseOrderPayload(
        purchase_order=order and PurchaseOrder.from_model(order), errors=errors
    )


def _receipt_payload(result: ReceiptResult | None, errors: list[MutationError]) -> Any:
    if result is None:
        return ShipmentLineReceiptPayload(errors=errors)
    return ShipmentLineReceiptPayload(
        shipment=Shipment.from_model(result.shipment),
        line=ShipmentLine.from_model(result.line),
        purchase_order=result.order and PurchaseOrder.from_model(result.order),
        movements=[Movement.from_model(m) for m in result.movements],
        discrepancies=[Discrepancy.from_model(d) for d in result.discrepancies],
        replayed=result.replayed,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Add someone to call at a supplier.")
    async def add_supplier_contact(
        self, info: Info, input: SupplierContactInput
    ) -> SupplierContactPayload:
        contact, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.add_contact(
                p,
                _organisation_id(input.supplier, "supplier"),
                ContactFields(input.name, input.role, input.email, input.phone),
            ),
        )
        return SupplierContactPayload(
            contact=contact and SupplierContact.from_model(contact), errors=errors
        )

    @strawberry.mutation
    async def remove_supplier_contact(
        self, info: Info, contact: relay.GlobalID
    ) -> RemoveSupplierContactPayload:
        removed, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.remove_contact(
                p, decode_id(contact, SupplierContact, "contact")
            ),
        )
        return RemoveSupplierContactPayload(
            removed_id=contact if removed is not None else None, errors=errors
        )

    @strawberry.mutation(description="Agree prices, lead times and minimum orders with a supplier.")
    async def create_contract(self, info: Info, input: CreateContractInput) -> ContractPayload:
        contract, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.create_contract(
                p,
                supplier_id=_organisation_id(input.supplier, "supplier"),
                buyer_id=_optional(input.buyer, Organisation, "buyer"),
                reference=input.reference,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
                lines=[
                    ContractLineFields(
                        product_id=decode_id(x.product, Product, f"lines.{i}.product"),
                        unit_price=x.unit_price,
                        lead_time_days=x.lead_time_days,
                        minimum_order_quantity=x.minimum_order_quantity,
                    )
                    for i, x in enumerate(input.lines)
                ],
            ),
        )
        return ContractPayload(contract=contract and Contract.from_model(contract), errors=errors)

    @strawberry.mutation(description="A DRAFT order; numbered PO-YYYY-NNNNN.")
    async def create_purchase_order(
        self, info: Info, input: CreatePurchaseOrderInput
    ) -> PurchaseOrderPayload:
        order, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.create_order(
                p,
                supplier_id=_organisation_id(input.supplier, "supplier"),
                deliver_to_id=decode_id(input.deliver_to, Location, "deliverTo"),
                lines=[_line_fields(x, f"lines.{i}") for i, x in enumerate(input.lines)],
                expected_delivery_date=input.expected_delivery_date,
                note=input.note,
            ),
        )
        return _order_payload(order, errors)

    @strawberry.mutation(description="Add a line to a DRAFT order.")
    async def add_purchase_order_line(
        self, info: Info, order: relay.GlobalID, line: PurchaseOrderLineInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.add_order_line(
                p, decode_id(order, PurchaseOrder, "order"), _line_fields(line, "line")
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(description="Change a DRAFT order's line.")
    async def update_purchase_order_line(
        self,
        info: Info,
        line: relay.GlobalID,
        quantity: int | None = None,
        unit_price: Decimal | None = None,
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.update_order_line(
                p,
                decode_id(line, PurchaseOrderLine, "line"),
                quantity=quantity,
                unit_price=unit_price,
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(description="Remove a line from a DRAFT order.")
    async def remove_purchase_order_line(
        self, info: Info, line: relay.GlobalID
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.remove_order_line(
                p, decode_id(line, PurchaseOrderLine, "line")
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(
        description="DRAFT -> SUBMITTED. Without an expected delivery date, today plus the "
        "longest contract lead time of its lines."
    )
    async def submit_purchase_order(
        self, info: Info, order: relay.GlobalID, expected_delivery_date: date | None = None
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.submit_order(
                p, decode_id(order, PurchaseOrder, "order"), expected_delivery_date
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(description="SUBMITTED -> ACKNOWLEDGED, by the supplier.")
    async def acknowledge_purchase_order(
        self, info: Info, order: relay.GlobalID
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.acknowledge_order(
                p, decode_id(order, PurchaseOrder, "order")
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(description="Cancel an order before anything was dispatched or received.")
    async def cancel_purchase_order(
        self, info: Info, order: relay.GlobalID, reason: str
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.cancel_order(
                p, decode_id(order, PurchaseOrder, "order"), reason
            ),
        )
        return _order_payload(updated, errors)

    @strawberry.mutation(description="The supplier announces a shipment against its order.")
    async def create_shipment(self, info: Info, input: CreateShipmentInput) -> ShipmentPayload:
        shipment, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.create_shipment(
                p,
                order_id=decode_id(input.purchase_order, PurchaseOrder, "purchaseOrder"),
                origin_id=_optional(input.origin, Location, "origin"),
                expected_at=input.expected_at,
                carrier=input.carrier,
                tracking_number=input.tracking_number,
                lines=[
                    ShipmentLineFields(
                        purchase_order_line_id=decode_id(
                            x.purchase_order_line, PurchaseOrderLine, f"lines.{i}.purchaseOrderLine"
                        ),
                        batch_number=x.batch_number,
                        expiry_date=x.expiry_date,
                        quantity=x.quantity,
                        serials=tuple(x.serials),
                    )
                    for i, x in enumerate(input.lines)
                ],
            ),
        )
        return ShipmentPayload(shipment=shipment and Shipment.from_model(shipment), errors=errors)

    @strawberry.mutation(
        description="The sender's update: DISPATCHED (records SHIP at the origin), IN_TRANSIT "
        "(again for each position update), DELIVERED, or CANCELLED before dispatch."
    )
    async def update_shipment_status(
        self,
        info: Info,
        shipment: relay.GlobalID,
        status: ShipmentStatus,  # type: ignore[valid-type]
        occurred_at: datetime | None = None,
        location_note: str | None = None,
    ) -> ShipmentPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.update_shipment_status(
                p,
                decode_id(shipment, Shipment, "shipment"),
                status,
                occurred_at=occurred_at,
                location_note=location_note,
            ),
        )
        return ShipmentPayload(shipment=updated and Shipment.from_model(updated), errors=errors)

    @strawberry.mutation(
        description="Receive packs of one line: `quantity` good packs into stock (RECEIVE at "
        "the destination), `damagedQuantity` recorded as DAMAGED and kept out of stock. Give "
        "`lot` (or scan a `barcode`, which may also pick the line) when the batch is not the "
        "line's: WRONG_LOT. More than the line still owes is refused (ALREADY_RECEIVED) unless "
        "`declareOver` records the surplus as OVER."
    )
    async def receive_shipment_line(
        self,
        info: Info,
        shipment: relay.GlobalID,
        quantity: int,
        line: relay.GlobalID | None = None,
        damaged_quantity: int = 0,
        lot: ReceivedLotInput | None = None,
        barcode: str | None = None,
        declare_over: bool = False,
        location: relay.GlobalID | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> ShipmentLineReceiptPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.receive_line(
                p,
                LineReceiptCommand(
                    shipment_id=decode_id(shipment, Shipment, "shipment"),
                    line_id=_optional(line, ShipmentLine, "line"),
                    quantity=quantity,
                    damaged_quantity=damaged_quantity,
                    batch_number=lot.batch_number if lot else None,
                    expiry_date=lot.expiry_date if lot else None,
                    barcode=barcode,
                    declare_over=declare_over,
                    location_id=_optional(location, Location, "location"),
                    note=note,
                    idempotency_key=idempotency_key,
                ),
            ),
        )
        return _receipt_payload(result, errors)

    @strawberry.mutation(
        description="Finish receiving: RECEIVED; packs neither received nor reported damaged "
        "are recorded as SHORT, line by line."
    )
    async def complete_shipment_receipt(
        self, info: Info, shipment: relay.GlobalID, note: str | None = None
    ) -> CompleteShipmentReceiptPayload:
        result: CompletionResult | None
        result, errors = await attempt(
            info,
            lambda p: info.context.services.procurement.complete_receipt(
                p, decode_id(shipment, Shipment, "shipment"), note
            ),
        )
        if result is None:
            return CompleteShipmentReceiptPayload(errors=errors)
        return CompleteShipmentReceiptPayload(
            shipment=Shipment.from_model(result.shipment),
            short_discrepancies=[Discrepancy.from_model(d) for d in result.discrepancies],
        )


def _line_fields(line: PurchaseOrderLineInput, field: str) -> OrderLineFields:
    return OrderLineFields(
        product_id=decode_id(line.product, Product, f"{field}.product"),
        quantity=line.quantity,
        unit_price=line.unit_price,
    )


# --- subscription --------------------------------------------------------------------------


@strawberry.enum
class ShipmentChange(StrEnum):
    CREATED = "CREATED"
    STATUS_CHANGED = "STATUS_CHANGED"
    LINE_RECEIVED = "LINE_RECEIVED"


@strawberry.type(description="A shipment that changed, as it committed.")
class ShipmentUpdate:
    change: ShipmentChange
    status: ShipmentStatus  # type: ignore[valid-type]
    occurred_at: datetime
    shipment: Shipment


_shipment_lookups = SharedLookups()


async def _shipment_row(db: Database, payload: dict[str, Any]) -> models.Shipment | None:
    """Read once per event, however many subscribers receive it."""

    async def load() -> models.Shipment | None:
        async with db.read() as session:
            return await session.get(models.Shipment, payload["shipment_id"])

    return await _shipment_lookups.get((payload["shipment_id"], payload["at"]), load)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Shipments of your organisation (sent or received) as they change; all "
        "shipments for ADMIN and AUDITOR. Give `shipment` to follow one."
    )
    async def shipment_updated(
        self, info: Info, shipment: relay.GlobalID | None = None
    ) -> AsyncGenerator[ShipmentUpdate, None]:
        principal = info.context.require_principal()
        principal.require(Permission.PROCUREMENT_READ)
        wanted: int | None = None
        if shipment is not None:
            wanted = decode_id(shipment, Shipment, "shipment")
            row = await info.context.by_id(models.Shipment).load(wanted)
            if row is None:
                raise NotFound("no such shipment", field="shipment")
            require_shipment_visible(principal, row)
        async with info.context.services.bus.subscribe(SHIPMENT_TOPIC) as subscription:
            while True:
                payload = (await subscription.get()).payload
                if wanted is not None and payload["shipment_id"] != wanted:
                    continue
                if not sees_parties(principal, payload["sender_id"], payload["receiver_id"]):
                    continue
                row = await _shipment_row(info.context.db, payload)
                if row is None:
                    continue
                info.context.loaders.clear()  # nested fields read fresh rows per event
                yield ShipmentUpdate(
                    change=ShipmentChange(payload["change"]),
                    status=models.ShipmentStatus(payload["status"]),
                    occurred_at=datetime.fromisoformat(payload["at"]),
                    shipment=Shipment.from_model(row),
                )
