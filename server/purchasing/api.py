"""GraphQL for purchasing: purchase orders and their lines, from draft to closed.

Reads by id of an order of other organisations are FORBIDDEN (never null); lists show only the
orders the caller's organisation placed or received (everything for ADMIN and AUDITOR).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Self

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.graphql import (
    CountedConnection,
    FromModel,
    Info,
    MutationError,
    PageAfter,
    PageSize,
    attempt,
    connection,
    decode_id,
    load_nodes,
    optional_id,
    relation,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission, Principal
from server.network import models as network_models
from server.network.api import Location, Organisation, User
from server.purchasing import models
from server.purchasing.service import OrderLineFields, require_order_visible
from server.suppliers import models as supplier_models
from server.suppliers.api import (
    Contract,
    Supplier,
    organisation_id,
    renamed,
)

if TYPE_CHECKING:
    from server.shipments.api import Shipment

SHIPMENTS = "server.shipments.api"

PurchaseOrderStatus = described_enum(
    models.PurchaseOrderStatus,
    "Where a purchase order is in its life.",
    DRAFT="Being prepared by the buyer; lines may change.",
    SUBMITTED="Sent to the supplier, awaiting acknowledgement.",
    ACKNOWLEDGED="The supplier accepted it; shipments may be created against it.",
    PARTIALLY_RECEIVED="Some packs have arrived, not all.",
    RECEIVED="Every line is fully received; closed.",
    CANCELLED="Cancelled before anything was dispatched or received; closed.",
)


def _order_check(info: Info) -> Callable[[Principal, Any], Any]:
    async def check(principal: Principal, row: Any) -> None:
        order = await info.context.by_id(models.PurchaseOrder).load(row.order_id)
        if order is not None:
            require_order_visible(principal, order)

    return check


def _contract_price_loader(info: Info) -> DataLoader[int, Decimal | None]:
    service = info.context.services.purchasing
    return info.context.loader(
        ("po_contract_price",), lambda: DataLoader(load_fn=service.contract_prices)
    )


@strawberry.type(description="A product ordered, at a price, and how much of it has arrived.")
class PurchaseOrderLine(FromModel, relay.Node):
    id: relay.NodeID[int]
    quantity: int = strawberry.field(description="Packs ordered.")
    unit_price: Decimal = strawberry.field(description="Price per pack on this order.")
    received_quantity: int = strawberry.field(
        description="Good packs received against this line (damaged packs excluded)."
    )
    order_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.PurchaseOrderLine,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=_order_check(info),
        )

    @strawberry.field(description="Packs still to arrive: quantity - receivedQuantity, at least 0.")
    def outstanding_quantity(self) -> int:
        return max(self.quantity - self.received_quantity, 0)

    @strawberry.field(description="unitPrice * quantity.")
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity

    @strawberry.field(
        description="The contract price valid when the order was submitted (today for drafts); "
        "null when no contract prices the product."
    )
    async def contract_price(self, info: Info) -> Decimal | None:
        return await _contract_price_loader(info).load(self.id)

    product: Product = relation(
        catalog_models.Product, "product_id", description="What is ordered."
    )


@strawberry.type(
    description="DRAFT -> SUBMITTED -> ACKNOWLEDGED -> PARTIALLY_RECEIVED -> RECEIVED, or "
    "CANCELLED (never after a receipt)."
)
class PurchaseOrder(FromModel, relay.Node):
    __columns__ = {"created_by_id": "created_by"}

    id: relay.NodeID[int]
    number: str = strawberry.field(description="PO-YYYY-NNNNN, unique.")
    status: PurchaseOrderStatus = strawberry.field(  # type: ignore[valid-type]
        description="Where the order is in its life."
    )
    expected_delivery_date: date | None = strawberry.field(
        description="The date promised for delivery; set at the latest on submission."
    )
    note: str | None = strawberry.field(description="The buyer's note, if any.")
    created_at: datetime = strawberry.field(description="When the draft was created.")
    submitted_at: datetime | None = strawberry.field(description="When it was submitted.")
    acknowledged_at: datetime | None = strawberry.field(
        description="When the supplier acknowledged it."
    )
    closed_at: datetime | None = strawberry.field(
        description="When it was fully received or cancelled."
    )
    cancel_reason: str | None = strawberry.field(description="Why it was cancelled, if it was.")
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int]
    deliver_to_id: strawberry.Private[int]
    contract_id: strawberry.Private[int | None]
    created_by_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.PurchaseOrder,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=require_order_visible,
        )

    supplier: Supplier = relation(
        network_models.Organisation, "supplier_id", description="Who the order is addressed to."
    )
    buyer: Organisation = relation(
        network_models.Organisation, "buyer_id", description="The ordering organisation."
    )
    deliver_to: Location = relation(
        network_models.Location, "deliver_to_id", description="Where the goods are to arrive."
    )
    contract: Contract | None = relation(
        supplier_models.Contract,
        "contract_id",
        description="The contract valid between the parties when it was created, if any.",
    )
    created_by: User | None = relation(
        network_models.User, "created_by_id", description="Who created the order."
    )

    @strawberry.field(description="The ordered products, in the order they were added.")
    async def lines(self, info: Info) -> list[PurchaseOrderLine]:
        rows = await info.context.grouped(
            "po_lines", models.PurchaseOrderLine.order_id, models.PurchaseOrderLine.id
        ).load(self.id)
        return [PurchaseOrderLine.from_model(r) for r in rows]

    @strawberry.field(description="Sum of the lines' totals.")
    async def total(self, info: Info) -> Decimal:
        rows = await info.context.grouped(
            "po_lines", models.PurchaseOrderLine.order_id, models.PurchaseOrderLine.id
        ).load(self.id)
        return sum((r.unit_price * r.quantity for r in rows), Decimal(0))

    @strawberry.field(description="Shipments against this order, oldest first.")
    async def shipments(self, info: Info) -> list[Annotated[Shipment, strawberry.lazy(SHIPMENTS)]]:
        from server.shipments import models as shipment_models
        from server.shipments.api import Shipment

        rows = await info.context.grouped(
            "po_shipments", shipment_models.Shipment.purchase_order_id, shipment_models.Shipment.id
        ).load(self.id)
        return [Shipment.from_model(r) for r in rows]


@strawberry.type(description="A page of purchase orders.")
class PurchaseOrderConnection(CountedConnection[PurchaseOrder]):
    pass


async def orders_connection(
    info: Info,
    first: int,
    after: str | None,
    *,
    supplier_id: int | None = None,
    status: Any = None,
    deliver_to_id: int | None = None,
) -> PurchaseOrderConnection:
    page = await info.context.services.purchasing.orders(
        info.context.require_principal(),
        first=first,
        after=after,
        supplier_id=supplier_id,
        status=status,
        deliver_to_id=deliver_to_id,
    )
    return connection(PurchaseOrderConnection, page, PurchaseOrder.from_model)  # type: ignore[return-value]


@strawberry.type
class Query:
    @strawberry.field(description="One purchase order; FORBIDDEN when it is not your party's.")
    async def purchase_order(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="A PurchaseOrder ID.")],
    ) -> PurchaseOrder | None:
        node_id = str(decode_id(id, PurchaseOrder, "id"))
        return (await PurchaseOrder.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Orders your organisation placed or received, newest first.")
    async def purchase_orders(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        supplier: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only orders to this supplier."),
        ] = None,
        status: Annotated[
            PurchaseOrderStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only orders in this status."),
        ] = None,
        deliver_to: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only orders delivered to this location."),
        ] = None,
    ) -> PurchaseOrderConnection:
        return await orders_connection(
            info,
            first,
            after,
            supplier_id=None if supplier is None else organisation_id(supplier, "supplier"),
            status=status,
            deliver_to_id=optional_id(deliver_to, Location, "deliverTo"),
        )


# --- mutations ---------------------------------------------------------------------------------


@strawberry.input(
    description="A product to order. Without unitPrice, the contract price valid today is used."
)
class PurchaseOrderLineInput:
    product: relay.GlobalID = strawberry.field(description="The product (once per order).")
    quantity: int = strawberry.field(
        description="Packs to order; at least the contract's minimum order quantity."
    )
    unit_price: Decimal | None = strawberry.field(
        default=None, description="Price per pack; null: the contract price valid today."
    )


@strawberry.input(description="A new DRAFT purchase order.")
class CreatePurchaseOrderInput:
    supplier: relay.GlobalID = strawberry.field(description="The supplier (or its organisation).")
    deliver_to: relay.GlobalID = strawberry.field(
        description="The location to deliver to; its organisation is the buyer."
    )
    lines: list[PurchaseOrderLineInput] = strawberry.field(
        default_factory=list, description="Products to order (may be added later)."
    )
    expected_delivery_date: date | None = strawberry.field(
        default=None, description="The delivery date asked for; may be set on submission."
    )
    note: str | None = strawberry.field(default=None, description="A note for the supplier.")


@strawberry.input(description="A line to add to a DRAFT order.")
class AddPurchaseOrderLineInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrder.")
    line: PurchaseOrderLineInput = strawberry.field(description="The product to add.")


@strawberry.input(description="Changes to a DRAFT order's line; null fields stay as they are.")
class UpdatePurchaseOrderLineInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrderLine.")
    quantity: int | None = strawberry.field(default=None, description="New pack count.")
    unit_price: Decimal | None = strawberry.field(default=None, description="New price per pack.")


@strawberry.input(description="A line to remove from a DRAFT order.")
class RemovePurchaseOrderLineInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrderLine.")


@strawberry.input(description="Submit a DRAFT order to its supplier.")
class SubmitPurchaseOrderInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrder.")
    expected_delivery_date: date | None = strawberry.field(
        default=None,
        description="Promised delivery date; null keeps the order's, else today plus the "
        "longest contract lead time of its lines.",
    )


@strawberry.input(description="The supplier accepts a SUBMITTED order.")
class AcknowledgePurchaseOrderInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrder.")


@strawberry.input(description="Cancel an order before anything was dispatched or received.")
class CancelPurchaseOrderInput:
    id: relay.GlobalID = strawberry.field(description="The PurchaseOrder.")
    reason: str = strawberry.field(description="Why (kept on the order and in the audit).")


@strawberry.type(description="The order as it now is, or why the change was refused.")
class PurchaseOrderPayload:
    purchase_order: PurchaseOrder | None = strawberry.field(
        default=None, description="The order after the change; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


def _payload(row: models.PurchaseOrder | None, errors: list[MutationError], **names: str) -> Any:
    return PurchaseOrderPayload(
        purchase_order=PurchaseOrder.from_model(row) if row is not None else None,
        errors=renamed(errors, **names),
    )


def _line_fields(line: PurchaseOrderLineInput, field: str) -> OrderLineFields:
    return OrderLineFields(
        product_id=decode_id(line.product, Product, f"{field}.product"),
        quantity=line.quantity,
        unit_price=line.unit_price,
    )


def _order_id(value: relay.GlobalID) -> int:
    return decode_id(value, PurchaseOrder, "id")


def _line_id(value: relay.GlobalID) -> int:
    return decode_id(value, PurchaseOrderLine, "id")


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A DRAFT order; numbered PO-YYYY-NNNNN.")
    async def create_purchase_order(
        self, info: Info, input: CreatePurchaseOrderInput
    ) -> PurchaseOrderPayload:
        order, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.create_order(
                p,
                supplier_id=organisation_id(input.supplier, "supplier"),
                deliver_to_id=decode_id(input.deliver_to, Location, "deliverTo"),
                lines=[_line_fields(x, f"lines.{i}") for i, x in enumerate(input.lines)],
                expected_delivery_date=input.expected_delivery_date,
                note=input.note,
            ),
        )
        return _payload(order, errors)

    @strawberry.mutation(description="Add a line to a DRAFT order.")
    async def add_purchase_order_line(
        self, info: Info, input: AddPurchaseOrderLineInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.add_order_line(
                p, _order_id(input.id), _line_fields(input.line, "line")
            ),
        )
        return _payload(updated, errors, order="id")

    @strawberry.mutation(description="Change a DRAFT order's line.")
    async def update_purchase_order_line(
        self, info: Info, input: UpdatePurchaseOrderLineInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.update_order_line(
                p, _line_id(input.id), quantity=input.quantity, unit_price=input.unit_price
            ),
        )
        return _payload(updated, errors, line="id", order="id")

    @strawberry.mutation(description="Remove a line from a DRAFT order.")
    async def remove_purchase_order_line(
        self, info: Info, input: RemovePurchaseOrderLineInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.remove_order_line(p, _line_id(input.id)),
        )
        return _payload(updated, errors, line="id", order="id")

    @strawberry.mutation(
        description="DRAFT -> SUBMITTED. Without an expected delivery date, today plus the "
        "longest contract lead time of its lines."
    )
    async def submit_purchase_order(
        self, info: Info, input: SubmitPurchaseOrderInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.submit_order(
                p, _order_id(input.id), input.expected_delivery_date
            ),
        )
        return _payload(updated, errors, order="id")

    @strawberry.mutation(description="SUBMITTED -> ACKNOWLEDGED, by the supplier.")
    async def acknowledge_purchase_order(
        self, info: Info, input: AcknowledgePurchaseOrderInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.acknowledge_order(p, _order_id(input.id)),
        )
        return _payload(updated, errors, order="id")

    @strawberry.mutation(
        description="Cancel an order before anything was dispatched or received; its PLANNED "
        "shipments are cancelled with it."
    )
    async def cancel_purchase_order(
        self, info: Info, input: CancelPurchaseOrderInput
    ) -> PurchaseOrderPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.purchasing.cancel_order(
                p, _order_id(input.id), input.reason
            ),
        )
        return _payload(updated, errors, order="id")
