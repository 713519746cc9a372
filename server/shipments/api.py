"""GraphQL for shipments: shipments against purchase orders, status updates by the sender,
line-by-line receiving with discrepancies, and the `shipmentUpdated` subscription.

Reads by id of a shipment of other organisations are FORBIDDEN (never null); lists show only
the shipments the caller's organisation sends or receives (everything for ADMIN and AUDITOR).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
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
    load_related,
    optional_id,
    parse_pks,
    relation,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission, Principal
from server.inventory.api import Movement
from server.network import models as network_models
from server.network.api import Location, Organisation, User
from server.purchasing import models as purchasing_models
from server.purchasing.api import PurchaseOrder, PurchaseOrderLine
from server.shipments import models
from server.shipments.service import (
    CompletionResult,
    LineReceiptCommand,
    ReceiptResult,
    ShipmentLineFields,
    require_shipment_visible,
)
from server.suppliers.api import renamed
from server.transfers import models as transfer_models
from server.transfers.service import check_visible as check_transfer_visible

if TYPE_CHECKING:
    from server.transfers.api.types import Transfer, TransferPick

ShipmentStatus = described_enum(
    models.ShipmentStatus,
    "Where a shipment is on its way.",
    PLANNED="Announced by the sender; nothing has left yet.",
    DISPATCHED="Left the sender (SHIP recorded at the origin, if it has one).",
    IN_TRANSIT="On its way; repeated for each position update.",
    DELIVERED="The carrier reports it delivered; the receiver has not finished receiving.",
    RECEIVED="The receiver finished receiving; final.",
    CANCELLED="Cancelled before dispatch; final.",
)
DiscrepancyKind = described_enum(
    models.DiscrepancyKind,
    "What kind of difference a receipt (of a shipment or a transfer) found.",
    SHORT="Fewer packs arrived than were sent (recorded when receipt is completed).",
    OVER="More packs arrived than were sent (declared by the receiver).",
    DAMAGED="Packs arrived damaged; they are kept out of stock.",
    WRONG_LOT="Packs of another batch than the one sent arrived.",
)


def _shipment_check(info: Info) -> Callable[[Principal, Any], Any]:
    async def check(principal: Principal, row: Any) -> None:
        shipment = await info.context.by_id(models.Shipment).load(row.shipment_id)
        if shipment is not None:
            require_shipment_visible(principal, shipment)

    return check


def _discrepancies_of(info: Info) -> DataLoader[int, list[models.Discrepancy]]:
    return info.context.grouped(
        "shipment_discrepancies", models.Discrepancy.shipment_id, models.Discrepancy.id
    )


@strawberry.type(description="One status update: who, when, and where the goods were.")
class ShipmentEvent(FromModel):
    status: ShipmentStatus = strawberry.field(  # type: ignore[valid-type]
        description="The status the shipment took."
    )
    occurred_at: datetime = strawberry.field(description="When it happened, as reported.")
    location_note: str | None = strawberry.field(
        description="Where the goods were, as the reporter put it."
    )
    actor_id: strawberry.Private[int | None]

    actor: User | None = relation(
        network_models.User, "actor_id", description="Who reported it; null if unknown."
    )


@strawberry.type(description="Packs of one lot on a shipment, and how many were received.")
class ShipmentLine(FromModel, relay.Node):
    id: relay.NodeID[int]
    quantity: int = strawberry.field(description="What the sender declared; never changed.")
    serials: list[str] = strawberry.field(description="One serial per pack, when given.")
    received_quantity: int = strawberry.field(description="Good packs booked into stock.")
    shipment_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    purchase_order_line_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.ShipmentLine,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=_shipment_check(info),
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

    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot the sender shipped.")

    @strawberry.field(description="The product of the shipped lot.")
    async def product(self, info: Info) -> Product:
        lot = await info.context.by_id(catalog_models.Lot).load(self.lot_id)
        assert lot is not None  # a shipment line's foreign key
        product = await load_related(
            info, catalog_models.Product, lot.product_id, Product.from_model
        )
        assert product is not None  # a lot's foreign key
        return product

    purchase_order_line: PurchaseOrderLine | None = relation(
        purchasing_models.PurchaseOrderLine,
        "purchase_order_line_id",
        description="The order line these packs fulfil.",
    )


def _discrepancy_check(info: Info) -> Callable[[Principal, Any], Any]:
    """A shipment's discrepancy is read by its parties, a transfer's by either end's staff."""
    shipment_check = _shipment_check(info)

    async def check(principal: Principal, row: Any) -> None:
        if row.transfer_id is not None:
            transfer = await info.context.by_id(transfer_models.Transfer).load(row.transfer_id)
            check_transfer_visible(principal, [transfer])
        else:
            principal.require(Permission.PROCUREMENT_READ)
            await shipment_check(principal, row)

    return check


@strawberry.type(
    description="A difference found on receipt of a shipment or a transfer; the sender's numbers "
    "stay as sent and the difference stays on record."
)
class Discrepancy(relay.Node):
    id: relay.NodeID[int]
    kind: DiscrepancyKind = strawberry.field(  # type: ignore[valid-type]
        description="What kind of difference."
    )
    quantity: int = strawberry.field(description="Packs concerned (positive).")
    note: str | None = strawberry.field(description="The receiver's note, if any.")
    details: JSON = strawberry.field(
        description="The numbers behind it as recorded (for shipments shipment_line_id, shipped, "
        "received, damaged, expected and received batch; for transfers pick_id, dispatched, "
        "received, damaged)."
    )
    recorded_at: datetime = strawberry.field(description="When it was recorded.")
    dispatched_quantity: int | None = strawberry.field(
        description="Packs the sender dispatched on the line or pick concerned (null: not known)."
    )
    received_quantity: int | None = strawberry.field(
        description="Packs of that line or pick taken into stock (null: not known)."
    )
    damaged_quantity: int | None = strawberry.field(
        description="Packs of that line or pick that arrived damaged, not taken into stock."
    )
    shipment_id: strawberry.Private[int | None]
    transfer_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]
    pick_id: strawberry.Private[int | None]
    line_id: strawberry.Private[int | None]
    recorded_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, d: models.Discrepancy) -> Self:
        details = d.details if isinstance(d.details, dict) else {}
        return cls(
            id=d.id,
            kind=d.kind,
            quantity=d.quantity,
            note=d.note,
            details=JSON(details),
            recorded_at=d.recorded_at,
            dispatched_quantity=details.get("shipped", details.get("dispatched")),
            received_quantity=details.get("received"),
            damaged_quantity=details.get("damaged"),
            shipment_id=d.shipment_id,
            transfer_id=d.transfer_id,
            lot_id=d.lot_id,
            pick_id=details.get("pick_id"),
            line_id=details.get("shipment_line_id"),
            recorded_by_id=d.recorded_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()
        rows = await info.context.by_id(models.Discrepancy).load_many(parse_pks(node_ids))
        check = _discrepancy_check(info)
        for row in rows:
            if row is not None:
                await check(principal, row)
        return [cls.from_model(r) if r is not None else None for r in rows]

    lot: Lot | None = relation(
        catalog_models.Lot,
        "lot_id",
        description="The lot the packs really were (for WRONG_LOT: what arrived).",
    )
    shipment: Shipment | None = relation(
        models.Shipment,
        "shipment_id",
        description="The shipment it was found on (null: a transfer).",
    )
    line: ShipmentLine | None = relation(
        models.ShipmentLine,
        "line_id",
        description="The shipment line it concerns (null: a transfer).",
    )
    transfer: Annotated[Transfer, strawberry.lazy("server.transfers.api.types")] | None = relation(
        transfer_models.Transfer,
        "transfer_id",
        description="The transfer it was found on (null: a shipment).",
    )
    pick: Annotated[TransferPick, strawberry.lazy("server.transfers.api.types")] | None = relation(
        transfer_models.TransferPick,
        "pick_id",
        description="The transfer pick it concerns (null: a shipment).",
    )
    recorded_by: User | None = relation(
        network_models.User, "recorded_by_id", description="Who recorded it."
    )


@strawberry.type(
    description="PLANNED -> DISPATCHED -> IN_TRANSIT -> DELIVERED -> RECEIVED, or CANCELLED "
    "before dispatch. Receiving may start once dispatched."
)
class Shipment(FromModel, relay.Node):
    __columns__ = {"created_by_id": "created_by"}

    id: relay.NodeID[int]
    number: str = strawberry.field(description="SH-YYYY-NNNNN, unique.")
    status: ShipmentStatus = strawberry.field(  # type: ignore[valid-type]
        description="Where the shipment is on its way."
    )
    expected_at: datetime | None = strawberry.field(
        description="When the sender expects it to arrive; null: the order's date applies."
    )
    carrier: str | None = strawberry.field(description="Who carries it, if known.")
    tracking_number: str | None = strawberry.field(description="The carrier's tracking number.")
    created_at: datetime = strawberry.field(description="When it was announced.")
    dispatched_at: datetime | None = strawberry.field(description="When it left the sender.")
    delivered_at: datetime | None = strawberry.field(description="When the carrier delivered it.")
    received_at: datetime | None = strawberry.field(
        description="When the receiver finished receiving it."
    )
    sender_id: strawberry.Private[int]
    receiver_id: strawberry.Private[int]
    origin_id: strawberry.Private[int | None]
    destination_id: strawberry.Private[int]
    purchase_order_id: strawberry.Private[int | None]
    created_by_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.Shipment,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=require_shipment_visible,
        )

    sender: Organisation = relation(
        network_models.Organisation, "sender_id", description="The sending organisation."
    )
    receiver: Organisation = relation(
        network_models.Organisation, "receiver_id", description="The receiving organisation."
    )
    origin: Location | None = relation(
        network_models.Location,
        "origin_id",
        description="Where it left from; null for a sender outside Apotheca.",
    )
    destination: Location = relation(
        network_models.Location, "destination_id", description="Where it is to be received."
    )
    purchase_order: PurchaseOrder | None = relation(
        purchasing_models.PurchaseOrder,
        "purchase_order_id",
        description="The order it is shipped against.",
    )
    created_by: User | None = relation(
        network_models.User, "created_by_id", description="Who announced it."
    )

    @strawberry.field(description="The packs shipped, lot by lot.")
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
        return [ShipmentEvent.from_model(r) for r in rows]

    @strawberry.field(description="Differences found on receipt, oldest first.")
    async def discrepancies(self, info: Info) -> list[Discrepancy]:
        return [Discrepancy.from_model(d) for d in await _discrepancies_of(info).load(self.id)]


@strawberry.type(description="A page of shipments.")
class ShipmentConnection(CountedConnection[Shipment]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="One shipment; FORBIDDEN when it is not your party's.")
    async def shipment(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="A Shipment ID.")],
    ) -> Shipment | None:
        node_id = str(decode_id(id, Shipment, "id"))
        return (await Shipment.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Shipments your organisation sends or receives, newest first.")
    async def shipments(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        status: Annotated[
            ShipmentStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only shipments in this status."),
        ] = None,
        purchase_order: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only shipments against this order."),
        ] = None,
        destination: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only shipments to this location."),
        ] = None,
    ) -> ShipmentConnection:
        page = await info.context.services.shipments.shipments(
            info.context.require_principal(),
            first=first,
            after=after,
            status=status,
            purchase_order_id=optional_id(purchase_order, PurchaseOrder, "purchaseOrder"),
            destination_id=optional_id(destination, Location, "destination"),
        )
        return connection(ShipmentConnection, page, Shipment.from_model)  # type: ignore[return-value]


# --- mutations ---------------------------------------------------------------------------------


@strawberry.input(description="Packs of one batch against one order line.")
class ShipmentLineInput:
    purchase_order_line: relay.GlobalID = strawberry.field(
        description="The order line these packs fulfil."
    )
    batch_number: str = strawberry.field(description="The batch (lot) number on the packs.")
    expiry_date: date = strawberry.field(description="The batch's expiry date.")
    quantity: int = strawberry.field(description="Packs shipped.")
    serials: list[str] = strawberry.field(
        default_factory=list, description="One serial per pack, or none."
    )


@strawberry.input(description="A shipment the supplier announces against its order.")
class CreateShipmentInput:
    purchase_order: relay.GlobalID = strawberry.field(
        description="An ACKNOWLEDGED or PARTIALLY_RECEIVED order."
    )
    lines: list[ShipmentLineInput] = strawberry.field(description="At least one line.")
    origin: relay.GlobalID | None = strawberry.field(
        default=None, description="Default: the sender's only location, if it has one."
    )
    expected_at: datetime | None = strawberry.field(
        default=None, description="When it should arrive; null: the order's date applies."
    )
    carrier: str | None = strawberry.field(default=None, description="Who carries it.")
    tracking_number: str | None = strawberry.field(
        default=None, description="The carrier's tracking number."
    )


@strawberry.input(description="The sender's update of a shipment.")
class UpdateShipmentStatusInput:
    id: relay.GlobalID = strawberry.field(description="The Shipment.")
    status: ShipmentStatus = strawberry.field(  # type: ignore[valid-type]
        description="DISPATCHED, IN_TRANSIT, DELIVERED or CANCELLED (RECEIVED is the "
        "receiver's: completeShipmentReceipt)."
    )
    occurred_at: datetime | None = strawberry.field(
        default=None, description="When it happened; default now. Never before the last update."
    )
    location_note: str | None = strawberry.field(
        default=None, description="Where the goods are, in words."
    )


@strawberry.input(description="The batch that really arrived, when it is not the line's.")
class ReceivedLotInput:
    batch_number: str = strawberry.field(description="The batch number on the packs.")
    expiry_date: date | None = strawberry.field(
        default=None, description="Its expiry date (needed for a batch Apotheca does not know)."
    )


@strawberry.input(description="Packs of one shipment line received.")
class ReceiveShipmentLineInput:
    id: relay.GlobalID = strawberry.field(description="The Shipment being received.")
    quantity: int = strawberry.field(description="Good packs to book into stock (0 or more).")
    line: relay.GlobalID | None = strawberry.field(
        default=None, description="The ShipmentLine; may be left out when a barcode picks it."
    )
    damaged_quantity: int = strawberry.field(
        default=0, description="Packs that arrived damaged (recorded DAMAGED, not stocked)."
    )
    lot: ReceivedLotInput | None = strawberry.field(
        default=None, description="The batch that arrived, when not the line's (WRONG_LOT)."
    )
    barcode: str | None = strawberry.field(
        default=None, description="A scanned GS1 code of a pack; gives the product and batch."
    )
    declare_over: bool = strawberry.field(
        default=False, description="Accept more than the line still owes, recorded as OVER."
    )
    location: relay.GlobalID | None = strawberry.field(
        default=None, description="Receive into this location; default the destination."
    )
    note: str | None = strawberry.field(default=None, description="Kept on any discrepancy.")
    idempotency_key: str | None = strawberry.field(
        default=None, description="A replay with the same key returns the first receipt."
    )


@strawberry.input(description="Finish receiving a shipment.")
class CompleteShipmentReceiptInput:
    id: relay.GlobalID = strawberry.field(description="The Shipment.")
    note: str | None = strawberry.field(
        default=None, description="Kept on the SHORT discrepancies and the status event."
    )


@strawberry.type(description="The shipment as it now is, or why the change was refused.")
class ShipmentPayload:
    shipment: Shipment | None = strawberry.field(
        default=None, description="The shipment after the change; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="One receipt: the RECEIVE movements and any discrepancies.")
class ShipmentLineReceiptPayload:
    shipment: Shipment | None = strawberry.field(
        default=None, description="The shipment received into; null when refused."
    )
    line: ShipmentLine | None = strawberry.field(
        default=None, description="The line received; null when refused."
    )
    purchase_order: PurchaseOrder | None = strawberry.field(
        default=None, description="The order the receipt counted on, if any."
    )
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The RECEIVE movements written (none for damage only)."
    )
    discrepancies: list[Discrepancy] = strawberry.field(
        default_factory=list, description="DAMAGED, OVER or WRONG_LOT discrepancies recorded."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The received shipment and what was short, or why not.")
class CompleteShipmentReceiptPayload:
    shipment: Shipment | None = strawberry.field(
        default=None, description="The RECEIVED shipment; null when refused."
    )
    short_discrepancies: list[Discrepancy] = strawberry.field(
        default_factory=list, description="SHORT discrepancies recorded on completion."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


def _shipment_id(value: relay.GlobalID) -> int:
    return decode_id(value, Shipment, "id")


def _receipt_payload(result: ReceiptResult | None, errors: list[MutationError]) -> Any:
    if result is None:
        return ShipmentLineReceiptPayload(errors=renamed(errors, shipment="id"))
    return ShipmentLineReceiptPayload(
        shipment=Shipment.from_model(result.shipment),
        line=ShipmentLine.from_model(result.line),
        purchase_order=(
            PurchaseOrder.from_model(result.order) if result.order is not None else None
        ),
        movements=[Movement.from_model(m) for m in result.movements],
        discrepancies=[Discrepancy.from_model(d) for d in result.discrepancies],
        replayed=result.replayed,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="The supplier announces a shipment against its order.")
    async def create_shipment(self, info: Info, input: CreateShipmentInput) -> ShipmentPayload:
        shipment, errors = await attempt(
            info,
            lambda p: info.context.services.shipments.create_shipment(
                p,
                order_id=decode_id(input.purchase_order, PurchaseOrder, "purchaseOrder"),
                origin_id=optional_id(input.origin, Location, "origin"),
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
        return ShipmentPayload(
            shipment=shipment and Shipment.from_model(shipment),
            errors=renamed(errors, order="purchaseOrder"),
        )

    @strawberry.mutation(
        description="The sender's update: DISPATCHED (records SHIP at the origin), IN_TRANSIT "
        "(again for each position update), DELIVERED, or CANCELLED before dispatch."
    )
    async def update_shipment_status(
        self, info: Info, input: UpdateShipmentStatusInput
    ) -> ShipmentPayload:
        updated, errors = await attempt(
            info,
            lambda p: info.context.services.shipments.update_shipment_status(
                p,
                _shipment_id(input.id),
                input.status,
                occurred_at=input.occurred_at,
                location_note=input.location_note,
            ),
        )
        return ShipmentPayload(
            shipment=updated and Shipment.from_model(updated),
            errors=renamed(errors, shipment="id"),
        )

    @strawberry.mutation(
        description="Receive packs of one line: `quantity` good packs into stock (RECEIVE at "
        "the destination), `damagedQuantity` recorded as DAMAGED and kept out of stock. Give "
        "`lot` (or scan a `barcode`, which may also pick the line) when the batch is not the "
        "line's: WRONG_LOT. More than the line still owes is refused (ALREADY_RECEIVED) unless "
        "`declareOver` records the surplus as OVER."
    )
    async def receive_shipment_line(
        self, info: Info, input: ReceiveShipmentLineInput
    ) -> ShipmentLineReceiptPayload:
        lot = input.lot
        result, errors = await attempt(
            info,
            lambda p: info.context.services.shipments.receive_line(
                p,
                LineReceiptCommand(
                    shipment_id=_shipment_id(input.id),
                    line_id=optional_id(input.line, ShipmentLine, "line"),
                    quantity=input.quantity,
                    damaged_quantity=input.damaged_quantity,
                    batch_number=lot.batch_number if lot else None,
                    expiry_date=lot.expiry_date if lot else None,
                    barcode=input.barcode,
                    declare_over=input.declare_over,
                    location_id=optional_id(input.location, Location, "location"),
                    note=input.note,
                    idempotency_key=input.idempotency_key,
                ),
            ),
        )
        return _receipt_payload(result, errors)

    @strawberry.mutation(
        description="Finish receiving: RECEIVED; packs neither received nor reported damaged "
        "are recorded as SHORT, line by line."
    )
    async def complete_shipment_receipt(
        self, info: Info, input: CompleteShipmentReceiptInput
    ) -> CompleteShipmentReceiptPayload:
        result: CompletionResult | None
        result, errors = await attempt(
            info,
            lambda p: info.context.services.shipments.complete_receipt(
                p, _shipment_id(input.id), input.note
            ),
        )
        if result is None:
            return CompleteShipmentReceiptPayload(errors=renamed(errors, shipment="id"))
        return CompleteShipmentReceiptPayload(
            shipment=Shipment.from_model(result.shipment),
            short_discrepancies=[Discrepancy.from_model(d) for d in result.discrepancies],
        )


# --- subscription --------------------------------------------------------------------------


class _ShipmentChange(StrEnum):
    CREATED = "CREATED"
    STATUS_CHANGED = "STATUS_CHANGED"
    LINE_RECEIVED = "LINE_RECEIVED"


ShipmentChange = described_enum(
    _ShipmentChange,
    "What happened to a shipment.",
    CREATED="It was announced.",
    STATUS_CHANGED="Its status changed.",
    LINE_RECEIVED="Packs of one of its lines were received.",
)
ShipmentChange.__strawberry_definition__.name = "ShipmentChange"  # type: ignore[attr-defined]


@strawberry.type(description="A shipment that changed, as it committed.")
class ShipmentUpdate:
    change: ShipmentChange = strawberry.field(description="What happened.")  # type: ignore[valid-type]
    status: ShipmentStatus = strawberry.field(  # type: ignore[valid-type]
        description="Its status right after the change."
    )
    occurred_at: datetime = strawberry.field(description="When the change committed.")
    shipment: Shipment = strawberry.field(description="The shipment as it now is.")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Shipments of your organisation (sent or received) as they change; all "
        "shipments for ADMIN and AUDITOR. Give `shipment` to follow one."
    )
    async def shipment_updated(
        self,
        info: Info,
        shipment: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Follow only this Shipment."),
        ] = None,
    ) -> AsyncGenerator[ShipmentUpdate, None]:
        changes = info.context.services.shipments.changes(
            info.context.require_principal(), optional_id(shipment, Shipment, "shipment")
        )
        async for change in changes:
            info.context.loaders.clear()  # nested fields read fresh rows per event
            yield ShipmentUpdate(
                change=ShipmentChange(change.change),
                status=change.status,
                occurred_at=change.occurred_at,
                shipment=Shipment.from_model(change.shipment),
            )
