"""GraphQL for stock: levels, movement history and the stock-moving mutations."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.errors import InvalidInput
from server.core.graphql import (
    MISSING,
    CountedConnection,
    FromModel,
    Info,
    MutationError,
    PageAfter,
    PageSize,
    attempt,
    coerced_input,
    connection,
    decode_id,
    load_nodes,
    optional_id,
    peek,
    relation,
    request_ip,
    selected_paths,
    sent_id,
    then,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission, WitnessCredentials
from server.inventory import models, reads
from server.inventory.service import (
    MAX_BATCH_MOVEMENTS,
    STOCK_TOPIC,
    LedgerResult,
    MovementRequest,
    NewLot,
)
from server.network import models as network_models
from server.network.api import Location, Organisation, User, username_of

MovementKind = described_enum(
    models.MovementKind,
    "What a movement did; the sign of its quantity follows from it.",
    {
        "RECEIVE": "Stock came in from a supplier or another organisation (+).",
        "SHIP": "Stock left for another organisation (-).",
        "DISPENSE": "Given to a patient (-).",
        "RETURN": "A patient brought packs back; they re-enter stock (+).",
        "ADJUST": "A correction with a reason (+ or -).",
        "DISPOSE": "Waste: expired, damaged, recalled... (-).",
        "PRODUCE": "A manufacturer's output (+).",
        "TRANSFER_OUT": "Sent to another location of the same organisation (-).",
        "TRANSFER_IN": "Received from another location of the same organisation (+).",
        "COUNT": "A stock-take's result, recorded as the difference (+ or -).",
    },
)


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
    assert lot is not None  # a balance's or movement's foreign key
    return await info.context.by_id(catalog_models.Product).load(lot.product_id)


@strawberry.type(description="Quantity on hand of one lot at one location.")
class StockLevel(FromModel, relay.Node):
    id: relay.NodeID[int]
    quantity: int = strawberry.field(
        description="Packs on hand; negative only where the location allows negative stock."
    )
    updated_at: datetime = strawberry.field(description="When a movement last changed it.")
    location_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]

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

    location: Location = relation(
        network_models.Location, "location_id", description="Where the stock is."
    )
    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot held.")

    # Both resolve now when the rows are loaded, else later: `graphql_type` is the field's type.
    @strawberry.field(description="The lot's product.", graphql_type=Product)
    def product(self, info: Info) -> Product | Awaitable[Product]:
        return then(_lot_product(info, self.lot_id), Product.from_model)

    @strawberry.field(description="Quantity times the product's unit cost.", graphql_type=Decimal)
    def value(self, info: Info) -> Decimal | Awaitable[Decimal]:
        return then(_lot_product(info, self.lot_id), lambda p: p.unit_cost * self.quantity)


@strawberry.type(description="One immutable change of stock; `quantity` is signed (+ in, - out).")
class Movement(FromModel, relay.Node):
    id: relay.NodeID[int]
    kind: MovementKind = strawberry.field(description="What the movement did.")  # type: ignore[valid-type]
    quantity: int = strawberry.field(description="Packs, signed: + into stock, - out of it.")
    balance_after: int = strawberry.field(
        description="The balance of this lot at this location right after it."
    )
    reference: str | None = strawberry.field(
        description="What it belongs to: a purchase order, shipment, transfer or count number."
    )
    patient_reference: str | None = strawberry.field(
        description="The patient encounter of a dispense or return, as the caller gave it."
    )
    reason: str | None = strawberry.field(description="Why (adjustments, disposals, counts).")
    occurred_at: datetime = strawberry.field(description="When it happened.")
    recorded_at: datetime = strawberry.field(description="When the ledger recorded it.")
    location_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    organisation_id: strawberry.Private[int]
    counterparty_id: strawberry.Private[int | None]
    actor_id: strawberry.Private[int | None]

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

    location: Location = relation(
        network_models.Location, "location_id", description="Where stock moved."
    )
    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot that moved.")
    organisation: Organisation = relation(
        network_models.Organisation,
        "organisation_id",
        description="The organisation that reported this movement.",
    )
    counterparty: Organisation | None = relation(
        network_models.Organisation,
        "counterparty_id",
        description="The other side (supplier, receiver), when there is one.",
    )
    recorded_by: User | None = relation(
        network_models.User,
        "actor_id",
        description="Who recorded it; null for movements written without a user.",
    )

    @strawberry.field(
        description="Username of who recorded it.",
        deprecation_reason="Use `recordedBy { username }`.",
    )
    async def actor(self, info: Info) -> str | None:
        return await username_of(info, self.actor_id)


@strawberry.type(description="A page of stock levels.")
class StockLevelConnection(CountedConnection[StockLevel]):
    pass


@strawberry.type(description="A page of movements.")
class MovementConnection(CountedConnection[Movement]):
    pass


_STOCK_RELATIONS: tuple[tuple[Any, frozenset[str]], ...] = (
    (catalog_models.Lot, frozenset({"edges.node.lot", "edges.node.product", "edges.node.value"})),
    (
        catalog_models.Product,
        frozenset({"edges.node.lot.product", "edges.node.product", "edges.node.value"}),
    ),
    (network_models.Location, frozenset({"edges.node.location"})),
)


def _stock_relations(info: Info) -> list[Any]:
    """The models a page of stock levels reads its selected nested fields from."""
    wanted = selected_paths(info)
    return [model for model, paths in _STOCK_RELATIONS if paths & wanted]


def _prime_stock_relations(info: Info, rows: list[Any], related: list[Any]) -> None:
    """Hand the lots, products and locations the page's statement read (as plain column rows,
    `reads.columns_of`) to the request's loaders, so the nested fields resolve synchronously
    and share one object per row."""
    for model in related:
        name = model.__name__
        info.context.by_id(model).prime_many({getattr(r, name).id: getattr(r, name) for r in rows})


@strawberry.type
class Query:
    @strawberry.field(description="Stock on hand per lot and location, earliest expiry first.")
    async def stock_levels(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only this location (in your scope)."),
        ] = None,
        product: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only lots of this product.")
        ] = None,
        expiring_before: Annotated[
            date | None, strawberry.argument(description="Only lots expiring before this day.")
        ] = None,
        include_empty: Annotated[
            bool, strawberry.argument(description="Also balances that are now 0.")
        ] = False,
    ) -> StockLevelConnection:
        page = await reads.stock_page(
            info.context,
            info.context.require_principal(),
            location_id=optional_id(location, Location, "location"),
            product_id=optional_id(product, Product, "product"),
            expiring_before=expiring_before,
            include_empty=include_empty,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            with_related=(related := _stock_relations(info)),
        )
        _prime_stock_relations(info, page.rows, related)
        return connection(StockLevelConnection, page, StockLevel.from_model)

    @strawberry.field(description="Movement history, newest first.")
    async def movements(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only this location (in your scope)."),
        ] = None,
        product: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only movements of this product's lots."),
        ] = None,
        lot: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this lot.")
        ] = None,
        kinds: Annotated[
            list[MovementKind] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only these kinds."),
        ] = None,
        since: Annotated[
            datetime | None, strawberry.argument(description="Occurred at or after this moment.")
        ] = None,
        until: Annotated[
            datetime | None, strawberry.argument(description="Occurred before this moment.")
        ] = None,
    ) -> MovementConnection:
        page = await reads.movements_page(
            info.context,
            info.context.require_principal(),
            location_id=optional_id(location, Location, "location"),
            product_id=optional_id(product, Product, "product"),
            lot_id=optional_id(lot, Lot, "lot"),
            kinds=kinds or [],
            since=since,
            until=until,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(MovementConnection, page, Movement.from_model)


# --- mutations -------------------------------------------------------------------------------


class DisposalReason(StrEnum):
    EXPIRED = "EXPIRED"
    DAMAGED = "DAMAGED"
    RECALLED = "RECALLED"
    CONTAMINATED = "CONTAMINATED"
    PATIENT_REFUSED = "PATIENT_REFUSED"
    OTHER = "OTHER"


DisposalReasonEnum = described_enum(
    DisposalReason,
    "Why stock is disposed of.",
    {
        "EXPIRED": "Past its expiry date.",
        "DAMAGED": "Broken, crushed or otherwise unusable.",
        "RECALLED": "Withdrawn by a recall.",
        "CONTAMINATED": "Contaminated or its cold chain broken.",
        "PATIENT_REFUSED": "Prepared for a patient who refused it.",
        "OTHER": "Any other reason; say which in `note`.",
    },
    name="DisposalReason",
)

_KEY = "Client-chosen key: a replay returns the first result and changes nothing."
_LOCATION = "Where the stock moves (in your scope)."
_QUANTITY = "Packs, 1 or more."


@strawberry.input(
    description="A second person confirming a controlled drug's disposal, adjustment or count: "
    "they type their own username and password on the same device."
)
class WitnessInput:
    username: str = strawberry.field(description="The witness's username (not yours).")
    password: str = strawberry.field(description="The witness's password, checked like a sign-in.")


_WITNESS = (
    "Required for a controlled drug: a pharmacist or nurse of the same organisation, other "
    "than you (WITNESS_REQUIRED without it)."
)


@strawberry.input(description="Receive into a location: an existing lot, or product + batch.")
class ReceiveStockInput:
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    quantity: int = strawberry.field(description=_QUANTITY)
    idempotency_key: str = strawberry.field(description=_KEY)
    lot: relay.GlobalID | None = strawberry.field(
        default=None, description="A known lot; else give product, batchNumber and expiryDate."
    )
    product: relay.GlobalID | None = strawberry.field(
        default=None, description="The product of a batch not yet known."
    )
    batch_number: str | None = strawberry.field(
        default=None, description="The new batch's number (1-20 printable characters)."
    )
    expiry_date: date | None = strawberry.field(
        default=None, description="The new batch's expiry date."
    )
    counterparty: relay.GlobalID | None = strawberry.field(
        default=None, description="The organisation it came from."
    )
    reference: str | None = strawberry.field(
        default=None, description="E.g. the delivery note number."
    )


@strawberry.input(description="Without `lot`, lots are picked first-expired-first-out.")
class DispenseStockInput:
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    quantity: int = strawberry.field(description=_QUANTITY)
    idempotency_key: str = strawberry.field(description=_KEY)
    lot: relay.GlobalID | None = strawberry.field(
        default=None, description="The lot to dispense; null: pick by earliest expiry."
    )
    product: relay.GlobalID | None = strawberry.field(
        default=None, description="The product to pick lots of, when no lot is given."
    )
    patient_reference: str | None = strawberry.field(
        default=None,
        description="The patient encounter (up to 100 characters); required for a controlled "
        "drug (PATIENT_REFERENCE_REQUIRED).",
    )


@strawberry.input(description="A patient brings packs back; they re-enter stock.")
class ReturnStockInput:
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    lot: relay.GlobalID = strawberry.field(description="The lot returned.")
    quantity: int = strawberry.field(description=_QUANTITY)
    idempotency_key: str = strawberry.field(description=_KEY)
    patient_reference: str | None = strawberry.field(
        default=None, description="The patient encounter (up to 100 characters)."
    )
    reason: str | None = strawberry.field(default=None, description="Why it came back.")


@strawberry.input(description="A correction: positive adds, negative removes; reason required.")
class AdjustStockInput:
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    lot: relay.GlobalID = strawberry.field(description="The lot corrected.")
    quantity: int = strawberry.field(description="Packs, signed: + adds, - removes; not 0.")
    reason: str = strawberry.field(description="Why (required).")
    idempotency_key: str = strawberry.field(description=_KEY)
    witness: WitnessInput | None = strawberry.field(default=None, description=_WITNESS)


@strawberry.input(description="Waste: expired, damaged, recalled... Removes stock for good.")
class DisposeStockInput:
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    lot: relay.GlobalID = strawberry.field(description="The lot disposed of.")
    quantity: int = strawberry.field(description=_QUANTITY)
    # The enum class itself: described_enum registers it in place, so mypy sees a real type.
    reason: DisposalReason = strawberry.field(description="Why.")
    idempotency_key: str = strawberry.field(description=_KEY)
    note: str | None = strawberry.field(
        default=None, description="More detail, stored with the reason."
    )
    witness: WitnessInput | None = strawberry.field(default=None, description=_WITNESS)


@strawberry.input(
    description="One movement of a feed: a kind, a location, a lot (or, for issues, a product "
    "to pick first-expired-first-out; for receipts, a product with batch and expiry)."
)
class MovementInput:
    # The schema's shape of a feed item: recordMovements reads the coerced values (`Feed`), so
    # a field added here is read in `_feed_request` under its GraphQL name.
    # The enum class itself: described_enum registers it in place, so mypy sees a real type.
    kind: models.MovementKind = strawberry.field(description="What the movement does.")
    location: relay.GlobalID = strawberry.field(description=_LOCATION)
    quantity: int = strawberry.field(
        description="Packs; positive (the kind gives the sign), signed for ADJUST and COUNT."
    )
    lot: relay.GlobalID | None = strawberry.field(default=None, description="The lot.")
    product: relay.GlobalID | None = strawberry.field(
        default=None, description="Without lot: the product to pick (issues) or receive."
    )
    batch_number: str | None = strawberry.field(
        default=None, description="A receipt's new batch number (with product and expiry)."
    )
    expiry_date: date | None = strawberry.field(
        default=None, description="A receipt's new batch's expiry date."
    )
    reason: str | None = strawberry.field(
        default=None, description="Why; required for ADJUST and DISPOSE."
    )
    reference: str | None = strawberry.field(
        default=None, description="What it belongs to in the feeding system."
    )
    patient_reference: str | None = strawberry.field(
        default=None, description="The patient encounter of a dispense or return."
    )
    counterparty: relay.GlobalID | None = strawberry.field(
        default=None, description="The other organisation, if any."
    )
    occurred_at: datetime | None = strawberry.field(
        default=None, description="When it happened (with a zone); now when omitted."
    )
    witness: WitnessInput | None = strawberry.field(
        default=None,
        description="For a controlled drug's DISPOSE, ADJUST or COUNT variance: "
        + _WITNESS[len("Required for a controlled drug: ") :],
    )


@dataclass(frozen=True)
class Feed:
    """recordMovements' input as `_feed` builds it: each movement graphql-core's coerced dict
    (GraphQL field names, every field present), its IDs parsed; see `coerced_input`."""

    movements: list[dict[str, Any]]
    idempotency_key: str


_FEED_IDS = ("location", "lot", "product", "counterparty")


def _feed(value: Mapping[str, Any]) -> Feed:
    """A feed's input without a MovementInput per item: the resolver makes the ledger's
    requests from these dicts (an ID that does not decode is refused here, as Strawberry's
    conversion refuses it)."""
    movements = []
    parsed_ids: dict[str, relay.GlobalID] = {}  # a feed names a few locations and lots, often
    for item in value["movements"]:
        parsed = dict(item)
        for key in _FEED_IDS:
            sent = parsed.get(key)
            if sent is not None:
                global_id = parsed_ids.get(sent)
                if global_id is None:
                    global_id = parsed_ids[sent] = sent_id(sent)
                parsed[key] = global_id
        movements.append(parsed)
    return Feed(movements, value["idempotencyKey"])


@coerced_input(_feed)
@strawberry.input(
    description=f"Up to {MAX_BATCH_MOVEMENTS} movements recorded all or nothing under one key."
)
class RecordMovementsInput:
    movements: list[MovementInput] = strawberry.field(description="The feed's movements.")
    idempotency_key: str = strawberry.field(description=_KEY)


@strawberry.type(description="The movements a stock mutation wrote, or why it was refused.")
class StockMovementPayload:
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The movements written (or first written, replayed)."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


async def _record(
    info: Info,
    operation: str,
    key: str,
    build: Callable[[], MovementRequest],
    witness: WitnessInput | None = None,
) -> StockMovementPayload:
    """One movement through the ledger; with a witness (or for the kinds a controlled drug
    needs one for) through the controlled-drug service, which checks the witness first."""
    result: LedgerResult | None
    if witness is None:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.ledger.record(
                p, [build()], operation=operation, idempotency_key=key
            ),
        )
    else:
        ip = request_ip(info)
        result, errors = await attempt(
            info,
            lambda p: info.context.services.controlled.record(
                p,
                build(),
                witness=WitnessCredentials(witness.username, witness.password),
                ip=ip,
                operation=operation,
                idempotency_key=key,
            ),
        )
    if result is None:
        return StockMovementPayload(errors=errors)
    return StockMovementPayload(
        movements=[Movement.from_model(m) for m in result.movements], replayed=result.replayed
    )


def _feed_request(
    index: int, item: Mapping[str, Any], pks: dict[tuple[relay.GlobalID, type], int]
) -> MovementRequest:
    """One feed item (a `Feed` movement) as a ledger request; a malformed id names the item.
    `pks` holds the ids the feed's earlier items decoded."""
    prefix = f"movements.{index}."

    def pk(key: str, expected: type) -> int | None:
        global_id = item.get(key)
        if global_id is None:
            return None
        found = pks.get((global_id, expected))
        if found is None:
            found = pks[global_id, expected] = decode_id(global_id, expected, prefix + key)
        return found

    kind = item["kind"]  # graphql-core gives the enum member
    if kind is models.MovementKind.PRODUCE:
        # Commissioning has rules of its own (manufacturer, expiry, serials): one way in.
        raise InvalidInput("record production with recordProduction", field=prefix + "kind")
    new_lot = None
    product_id = pk("product", Product)
    batch_number = item.get("batchNumber")
    if item.get("lot") is None and batch_number is not None:
        expiry_date = item.get("expiryDate")
        if product_id is None or expiry_date is None:
            raise InvalidInput(
                "a new batch needs its product and expiry date", field=prefix + "batch_number"
            )
        new_lot = NewLot(product_id, batch_number, expiry_date)
    location_id = pk("location", Location)
    assert location_id is not None  # MovementInput.location is non-null
    return MovementRequest(
        kind=kind,
        location_id=location_id,
        quantity=item["quantity"],
        lot_id=pk("lot", Lot),
        product_id=product_id,
        reason=item.get("reason"),
        reference=item.get("reference"),
        patient_reference=item.get("patientReference"),
        counterparty_id=pk("counterparty", Organisation),
        occurred_at=item.get("occurredAt"),
        new_lot=new_lot,
    )


def _feed_requests(feed: Feed) -> list[MovementRequest]:
    pks: dict[tuple[relay.GlobalID, type], int] = {}
    return [_feed_request(i, item, pks) for i, item in enumerate(feed.movements)]


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
        lot_id=optional_id(input.lot, Lot, "lot"),
        new_lot=new_lot,
        counterparty_id=optional_id(input.counterparty, Organisation, "counterparty"),
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
        self,
        info: Info,
        # Built by `_feed` from graphql-core's values, the schema's type still the input's.
        input: Annotated[Feed, strawberry.argument(graphql_type=RecordMovementsInput)],
    ) -> StockMovementPayload:
        result: LedgerResult | None
        witnesses = {
            i: WitnessCredentials(witness["username"], witness["password"])
            for i, item in enumerate(input.movements)
            if (witness := item.get("witness")) is not None
        }
        if witnesses:
            ip = request_ip(info)
            result, errors = await attempt(
                info,
                lambda p: info.context.services.controlled.record_feed(
                    p,
                    _feed_requests(input),
                    witnesses=witnesses,
                    ip=ip,
                    idempotency_key=input.idempotency_key,
                ),
            )
        else:
            result, errors = await attempt(
                info,
                lambda p: info.context.services.ledger.record_feed(
                    p,
                    _feed_requests(input),
                    idempotency_key=input.idempotency_key,
                ),
            )
        if result is None:
            return StockMovementPayload(errors=errors)
        return StockMovementPayload(
            movements=[Movement.from_model(m) for m in result.movements],
            replayed=result.replayed,
        )

    @strawberry.mutation(
        description="Receive stock into a location (a known lot, or a new batch of a "
        "product); needs receiving rights there."
    )
    async def receive_stock(self, info: Info, input: ReceiveStockInput) -> StockMovementPayload:
        return await _record(
            info, "receiveStock", input.idempotency_key, lambda: _receive_request(input)
        )

    @strawberry.mutation(
        description="Dispense to a patient; without a lot, the earliest-expiring usable "
        "lots are used. A controlled drug needs the patient reference."
    )
    async def dispense_stock(self, info: Info, input: DispenseStockInput) -> StockMovementPayload:
        return await _record(
            info,
            "dispenseStock",
            input.idempotency_key,
            lambda: MovementRequest(
                kind=models.MovementKind.DISPENSE,
                location_id=decode_id(input.location, Location, "location"),
                quantity=input.quantity,
                lot_id=optional_id(input.lot, Lot, "lot"),
                product_id=optional_id(input.product, Product, "product"),
                patient_reference=input.patient_reference,
            ),
        )

    @strawberry.mutation(description="A patient's returned packs re-enter stock.")
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

    @strawberry.mutation(
        description="Correct a balance with a reason; needs adjustment rights at the location, "
        "and a witness for a controlled drug."
    )
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
            input.witness,
        )

    @strawberry.mutation(
        description="Dispose of stock as waste (expired, damaged, recalled...); a controlled "
        "drug needs a witness."
    )
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
            input.witness,
        )


@strawberry.type(description="A balance that changed: where, which lot, how much is left now.")
class StockChange:
    quantity: int = strawberry.field(description="The balance after the change.")
    location: Location = strawberry.field(description="Where it changed.")
    lot: Lot = strawberry.field(description="The lot whose balance changed.")
    product: Product = strawberry.field(description="The lot's product.")
    movement: Movement = strawberry.field(
        description="The movement that caused it (kind, signed quantity, actor)."
    )

    @classmethod
    def from_rows(cls, rows: reads.StockChangeRows) -> Self:
        return cls(
            quantity=rows.quantity,
            location=Location.from_model(rows.location),
            lot=Lot.from_model(rows.lot),
            product=Product.from_model(rows.product),
            movement=Movement.from_model(rows.movement),
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Stock changes within your scope, as they commit.")
    async def stock_changed(
        self,
        info: Info,
        locations: Annotated[
            list[relay.GlobalID] | None,
            strawberry.argument(description="Only these locations (each in your scope)."),
        ] = None,
        products: Annotated[
            list[relay.GlobalID] | None, strawberry.argument(description="Only these products.")
        ] = None,
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
                if not reads.wants_stock_event(
                    principal, payload, locations=wanted_locations, products=wanted_products
                ):
                    continue
                info.context.loaders.clear()  # nested fields read fresh rows per event
                yield StockChange.from_rows(await reads.stock_change(info.context.db, payload))
