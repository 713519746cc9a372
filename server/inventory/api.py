"""GraphQL for stock: levels, movement history and the stock-moving mutations."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import strawberry
from sqlalchemy import select
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.db import Database
from server.core.errors import InvalidInput
from server.core.events import SharedLookups
from server.core.graphql import (
    MISSING,
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    paginate,
    peek,
    prefetch,
    related,
    selected_paths,
    then,
)
from server.core.security import Permission, Principal
from server.inventory import models
from server.inventory.service import (
    MAX_BATCH_MOVEMENTS,
    STOCK_TOPIC,
    LedgerResult,
    MovementRequest,
    NewLot,
)
from server.network import models as network_models
from server.network.api import Location, Organisation

MovementKind = strawberry.enum(models.MovementKind)


def resolve_location(root: Any, info: Info) -> Location:
    """`location` of anything that carries a `location_id` (sync when already loaded)."""
    return related(info, network_models.Location, root.location_id, Location.from_model)


def resolve_lot(root: Any, info: Info) -> Lot:
    """`lot` of anything that carries a `lot_id` (sync when already loaded)."""
    return related(info, catalog_models.Lot, root.lot_id, Lot.from_model)


def _lot_product(info: Info, lot_id: int) -> Any:
    """The product row of a lot: the row itself when both are loaded, else an awaitable."""
    lot = peek(info.context.by_id(catalog_models.Lot), lot_id)
    if lot is not MISSING:
        product = peek(info.context.by_id(catalog_models.Product), lot.product_id)
        if product is not MISSING:
            return product
    return _load_lot_product(info, lot_id)


async def _load_lot_product(info: Info, lot_id: int) -> Any:
    lot = await info.context.by_id(catalog_models.Lot).load(lot_id)
    return await info.context.by_id(catalog_models.Product).load(lot.product_id)


@strawberry.type
class StockLevel(relay.Node):
    """Quantity on hand of one lot at one location."""

    id: relay.NodeID[int]
    quantity: int
    updated_at: datetime
    location_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, balance: models.Balance) -> Self:
        return cls(
            id=balance.id,
            quantity=balance.quantity,
            updated_at=balance.updated_at,
            location_id=balance.location_id,
            lot_id=balance.lot_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.Balance,
            node_ids,
            cls.from_model,
            permission=Permission.STOCK_READ,
            location_of=lambda row: row.location_id,
        )

    location: Location = strawberry.field(resolver=resolve_location)
    lot: Lot = strawberry.field(resolver=resolve_lot)

    @strawberry.field
    def product(self, info: Info) -> Product:
        return then(_lot_product(info, self.lot_id), Product.from_model)

    @strawberry.field(description="Quantity times the product's unit cost.")
    def value(self, info: Info) -> Decimal:
        return then(_lot_product(info, self.lot_id), lambda p: p.unit_cost * self.quantity)


@strawberry.type
class Movement(relay.Node):
    """One immutable change of stock; `quantity` is signed (+ in, - out)."""

    id: relay.NodeID[int]
    kind: MovementKind  # type: ignore[valid-type]
    quantity: int
    balance_after: int
    reference: str | None
    patient_reference: str | None
    reason: str | None
    occurred_at: datetime
    recorded_at: datetime
    location_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    organisation_id: strawberry.Private[int]
    counterparty_id: strawberry.Private[int | None]
    actor_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: models.Movement) -> Self:
        return cls(
            id=m.id,
            kind=m.kind,
            quantity=m.quantity,
            balance_after=m.balance_after,
            reference=m.reference,
            patient_reference=m.patient_reference,
            reason=m.reason,
            occurred_at=m.occurred_at,
            recorded_at=m.recorded_at,
            location_id=m.location_id,
            lot_id=m.lot_id,
            organisation_id=m.organisation_id,
            counterparty_id=m.counterparty_id,
            actor_id=m.actor_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.Movement,
            node_ids,
            cls.from_model,
            permission=Permission.STOCK_READ,
            location_of=lambda row: row.location_id,
        )

    location: Location = strawberry.field(resolver=resolve_location)
    lot: Lot = strawberry.field(resolver=resolve_lot)

    @strawberry.field(description="The organisation that reported this movement.")
    async def organisation(self, info: Info) -> Organisation:
        return await load_related(
            info, network_models.Organisation, self.organisation_id, Organisation.from_model
        )

    @strawberry.field
    async def counterparty(self, info: Info) -> Organisation | None:
        return await load_related(
            info, network_models.Organisation, self.counterparty_id, Organisation.from_model
        )

    @strawberry.field(description="Username of who recorded it.")
    async def actor(self, info: Info) -> str | None:
        if self.actor_id is None:
            return None
        user = await info.context.by_id(network_models.User).load(self.actor_id)
        return user.username if user else None


@strawberry.type
class StockLevelConnection(CountedConnection[StockLevel]):
    pass


@strawberry.type
class MovementConnection(CountedConnection[Movement]):
    pass


async def _prefetch_stock_relations(info: Info, balances: list[models.Balance]) -> None:
    """Batch the lots, products and locations a page of stock levels asks for before its
    fields resolve, through the request's loaders: one statement each, whatever the page
    size, and the nested fields then resolve synchronously."""
    wanted = selected_paths(info)
    if {"edges.node.lot", "edges.node.product", "edges.node.value"} & wanted:
        lots = await prefetch(info, catalog_models.Lot, (b.lot_id for b in balances))
        if {"edges.node.lot.product", "edges.node.product", "edges.node.value"} & wanted:
            await prefetch(info, catalog_models.Product, (lot.product_id for lot in lots if lot))
    if "edges.node.location" in wanted:
        await prefetch(info, network_models.Location, (b.location_id for b in balances))


def _location_filter(principal: Principal, location: relay.GlobalID | None) -> list[int] | None:
    """The locations a stock query may read: the one asked for (if in scope), else the scope."""
    location_id = None if location is None else decode_id(location, Location, "location")
    return principal.readable_locations(Permission.STOCK_READ, location_id)


@strawberry.type
class Query:
    @strawberry.field(description="Stock on hand per lot and location, earliest expiry first.")
    async def stock_levels(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        location: relay.GlobalID | None = None,
        product: relay.GlobalID | None = None,
        expiring_before: date | None = None,
        include_empty: bool = False,
    ) -> StockLevelConnection:
        principal = info.context.require_principal()
        Balance, LotModel = models.Balance, catalog_models.Lot
        stmt = select(Balance, LotModel.expiry_date).join(LotModel, LotModel.id == Balance.lot_id)
        if (locations := _location_filter(principal, location)) is not None:
            stmt = stmt.where(Balance.location_id.in_(locations))
        if product is not None:
            stmt = stmt.where(LotModel.product_id == decode_id(product, Product, "product"))
        if expiring_before is not None:
            stmt = stmt.where(LotModel.expiry_date < expiring_before)
        if not include_empty:
            stmt = stmt.where(Balance.quantity != 0)
        page = await paginate(
            info,
            stmt,
            keys=[LotModel.expiry_date, Balance.id],
            first=first,
            after=after,
            key_of=lambda r: [r[1], r[0].id],
        )
        await _prefetch_stock_relations(info, [r[0] for r in page.rows])
        return connection(StockLevelConnection, page, lambda r: StockLevel.from_model(r[0]))

    @strawberry.field(description="Movement history, newest first.")
    async def movements(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        location: relay.GlobalID | None = None,
        product: relay.GlobalID | None = None,
        lot: relay.GlobalID | None = None,
        kinds: list[MovementKind] | None = None,  # type: ignore[valid-type]
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> MovementConnection:
        principal = info.context.require_principal()
        M = models.Movement
        stmt = select(M)
        if (locations := _location_filter(principal, location)) is not None:
            stmt = stmt.where(M.location_id.in_(locations))
        if product is not None:
            stmt = stmt.where(
                M.lot_id.in_(
                    select(catalog_models.Lot.id).where(
                        catalog_models.Lot.product_id == decode_id(product, Product, "product")
                    )
                )
            )
        if lot is not None:
            stmt = stmt.where(M.lot_id == decode_id(lot, Lot, "lot"))
        if kinds:
            stmt = stmt.where(M.kind.in_(kinds))
        if since is not None:
            stmt = stmt.where(M.occurred_at >= since)
        if until is not None:
            stmt = stmt.where(M.occurred_at < until)
        page = await paginate(
            info,
            stmt,
            keys=[M.id],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.id],
        )
        return connection(MovementConnection, page, Movement.from_model)


# --- mutations -------------------------------------------------------------------------------


@strawberry.enum
class DisposalReason(StrEnum):
    EXPIRED = "EXPIRED"
    DAMAGED = "DAMAGED"
    RECALLED = "RECALLED"
    CONTAMINATED = "CONTAMINATED"
    PATIENT_REFUSED = "PATIENT_REFUSED"
    OTHER = "OTHER"


@strawberry.input(description="Receive into a location: an existing lot, or product + batch.")
class ReceiveStockInput:
    location: relay.GlobalID
    quantity: int
    idempotency_key: str
    lot: relay.GlobalID | None = None
    product: relay.GlobalID | None = None
    batch_number: str | None = None
    expiry_date: date | None = None
    counterparty: relay.GlobalID | None = None
    reference: str | None = None


@strawberry.input(description="Without `lot`, lots are picked first-expired-first-out.")
class DispenseStockInput:
    location: relay.GlobalID
    quantity: int
    idempotency_key: str
    lot: relay.GlobalID | None = None
    product: relay.GlobalID | None = None
    patient_reference: str | None = None


@strawberry.input(description="A patient brings packs back; they re-enter stock.")
class ReturnStockInput:
    location: relay.GlobalID
    lot: relay.GlobalID
    quantity: int
    idempotency_key: str
    patient_reference: str | None = None
    reason: str | None = None


@strawberry.input(description="A correction: positive adds, negative removes; reason required.")
class AdjustStockInput:
    location: relay.GlobalID
    lot: relay.GlobalID
    quantity: int
    reason: str
    idempotency_key: str


@strawberry.input(description="Waste: expired, damaged, recalled... Removes stock for good.")
class DisposeStockInput:
    location: relay.GlobalID
    lot: relay.GlobalID
    quantity: int
    reason: DisposalReason
    idempotency_key: str
    note: str | None = None


@strawberry.input(
    description="One movement of a feed: a kind, a location, a lot (or, for issues, a product "
    "to pick first-expired-first-out; for receipts, a product with batch and expiry)."
)
class MovementInput:
    kind: MovementKind
    location: relay.GlobalID
    quantity: int
    lot: relay.GlobalID | None = None
    product: relay.GlobalID | None = None
    batch_number: str | None = None
    expiry_date: date | None = None
    reason: str | None = None
    reference: str | None = None
    patient_reference: str | None = None
    counterparty: relay.GlobalID | None = None
    occurred_at: datetime | None = strawberry.field(
        default=None, description="When it happened (with a zone); now when omitted."
    )


@strawberry.input(
    description=f"Up to {MAX_BATCH_MOVEMENTS} movements recorded all or nothing under one key."
)
class RecordMovementsInput:
    movements: list[MovementInput]
    idempotency_key: str


@strawberry.type
class StockMovementPayload:
    movements: list[Movement] = strawberry.field(default_factory=list)
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _optional(gid: relay.GlobalID | None, node_type: type, field: str) -> int | None:
    return None if gid is None else decode_id(gid, node_type, field)


async def _record(
    info: Info, operation: str, key: str, build: Callable[[], MovementRequest]
) -> StockMovementPayload:
    result: LedgerResult | None
    result, errors = await attempt(
        info,
        lambda p: info.context.services.ledger.record(
            p, [build()], operation=operation, idempotency_key=key
        ),
    )
    if result is None:
        return StockMovementPayload(errors=errors)
    return StockMovementPayload(
        movements=[Movement.from_model(m) for m in result.movements], replayed=result.replayed
    )


def _feed_request(index: int, item: MovementInput) -> MovementRequest:
    """One feed item as a ledger request; a malformed id names the item it is in."""
    prefix = f"movements.{index}."
    new_lot = None
    product_id = _optional(item.product, Product, prefix + "product")
    if item.lot is None and item.batch_number is not None:
        if product_id is None or item.expiry_date is None:
            raise InvalidInput(
                "a new batch needs its product and expiry date", field=prefix + "batchNumber"
            )
        new_lot = NewLot(product_id, item.batch_number, item.expiry_date)
    return MovementRequest(
        kind=models.MovementKind(item.kind.value),
        location_id=decode_id(item.location, Location, prefix + "location"),
        quantity=item.quantity,
        lot_id=_optional(item.lot, Lot, prefix + "lot"),
        product_id=product_id,
        reason=item.reason,
        reference=item.reference,
        patient_reference=item.patient_reference,
        counterparty_id=_optional(item.counterparty, Organisation, prefix + "counterparty"),
        occurred_at=item.occurred_at,
        new_lot=new_lot,
    )


def _receive_request(input: ReceiveStockInput) -> MovementRequest:
    new_lot = None
    if input.lot is None:
        if input.product is None or not input.batch_number or input.expiry_date is None:
            raise InvalidInput(
                "give a lot, or a product with batch number and expiry date", field="lot"
            )
        new_lot = NewLot(
            product_id=decode_id(input.product, Product, "product"),
            batch_number=input.batch_number,
            expiry_date=input.expiry_date,
        )
    return MovementRequest(
        kind=models.MovementKind.RECEIVE,
        location_id=decode_id(input.location, Location, "location"),
        quantity=input.quantity,
        lot_id=_optional(input.lot, Lot, "lot"),
        new_lot=new_lot,
        counterparty_id=_optional(input.counterparty, Organisation, "counterparty"),
        reference=input.reference,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A feed's movements (dispensing cabinets, pharmacy systems): all are "
        "recorded or none; a refusal names the item (`movements.3.quantity`). A replayed key "
        "returns the first result."
    )
    async def record_movements(
        self, info: Info, input: RecordMovementsInput
    ) -> StockMovementPayload:
        result: LedgerResult | None
        result, errors = await attempt(
            info,
            lambda p: info.context.services.ledger.record_feed(
                p,
                [_feed_request(i, item) for i, item in enumerate(input.movements)],
                idempotency_key=input.idempotency_key,
            ),
        )
        if result is None:
            return StockMovementPayload(errors=errors)
        return StockMovementPayload(
            movements=[Movement.from_model(m) for m in result.movements],
            replayed=result.replayed,
        )

    @strawberry.mutation
    async def receive_stock(self, info: Info, input: ReceiveStockInput) -> StockMovementPayload:
        return await _record(
            info, "receiveStock", input.idempotency_key, lambda: _receive_request(input)
        )

    @strawberry.mutation
    async def dispense_stock(self, info: Info, input: DispenseStockInput) -> StockMovementPayload:
        return await _record(
            info,
            "dispenseStock",
            input.idempotency_key,
            lambda: MovementRequest(
                kind=models.MovementKind.DISPENSE,
                location_id=decode_id(input.location, Location, "location"),
                quantity=input.quantity,
                lot_id=_optional(input.lot, Lot, "lot"),
                product_id=_optional(input.product, Product, "product"),
                patient_reference=input.patient_reference,
            ),
        )

    @strawberry.mutation
    async def return_stock(self, info: Info, input: ReturnStockInput) -> StockMovementPayload:
        return await _record(
            info,
            "returnStock",
            input.idempotency_key,
            lambda: MovementRequest(
                kind=models.MovementKind.RETURN,
                location_id=decode_id(input.location, Location, "location"),
                quantity=input.quantity,
                lot_id=decode_id(input.lot, Lot, "lot"),
                patient_reference=input.patient_reference,
                reason=input.reason,
            ),
        )

    @strawberry.mutation
    async def adjust_stock(self, info: Info, input: AdjustStockInput) -> StockMovementPayload:
        return await _record(
            info,
            "adjustStock",
            input.idempotency_key,
            lambda: MovementRequest(
                kind=models.MovementKind.ADJUST,
                location_id=decode_id(input.location, Location, "location"),
                quantity=input.quantity,
                lot_id=decode_id(input.lot, Lot, "lot"),
                reason=input.reason,
            ),
        )

    @strawberry.mutation
    async def dispose_stock(self, info: Info, input: DisposeStockInput) -> StockMovementPayload:
        reason = input.reason.value + (f": {input.note.strip()}" if input.note else "")
        return await _record(
            info,
            "disposeStock",
            input.idempotency_key,
            lambda: MovementRequest(
                kind=models.MovementKind.DISPOSE,
                location_id=decode_id(input.location, Location, "location"),
                quantity=input.quantity,
                lot_id=decode_id(input.lot, Lot, "lot"),
                reason=reason[:200],
            ),
        )


@strawberry.type(description="A balance that changed: where, which lot, how much is left now.")
class StockChange:
    quantity: int
    location: Location
    lot: Lot
    product: Product
    movement: Movement = strawberry.field(
        description="The movement that caused it (kind, signed quantity, actor)."
    )


_stock_lookups = SharedLookups()


async def _stock_change(db: Database, payload: dict[str, Any]) -> StockChange:
    """The rows behind one stock event, read once however many subscribers receive it."""

    async def load() -> StockChange:
        async with db.read() as session:
            location = await session.get(network_models.Location, payload["location_id"])
            lot = await session.get(catalog_models.Lot, payload["lot_id"])
            product = await session.get(catalog_models.Product, payload["product_id"])
            movement = await session.get(models.Movement, payload["movement_id"])
        return StockChange(
            quantity=payload["quantity"],
            location=Location.from_model(location),
            lot=Lot.from_model(lot),
            product=Product.from_model(product),
            movement=Movement.from_model(movement),
        )

    return await _stock_lookups.get(payload["movement_id"], load)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Stock changes within your scope, as they commit.")
    async def stock_changed(
        self,
        info: Info,
        locations: list[relay.GlobalID] | None = None,
        products: list[relay.GlobalID] | None = None,
    ) -> AsyncGenerator[StockChange, None]:
        principal = info.context.require_principal()
        principal.require(Permission.STOCK_READ)
        wanted_locations = {decode_id(x, Location, "locations") for x in locations or []}
        for location_id in wanted_locations:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        wanted_products = {decode_id(x, Product, "products") for x in products or []}
        async with info.context.services.bus.subscribe(STOCK_TOPIC) as subscription:
            while True:
                payload = (await subscription.get()).payload
                if wanted_locations and payload["location_id"] not in wanted_locations:
                    continue
                if wanted_products and payload["product_id"] not in wanted_products:
                    continue
                if not principal.sees_location(payload["location_id"]):
                    continue
                info.context.loaders.clear()  # nested fields read fresh rows per event
                yield await _stock_change(info.context.db, payload)
