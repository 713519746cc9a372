"""GraphQL for stock counts: start, record lines, watch the variance live, finalize or cancel.

Scanned entry needs no mutation of its own: the app resolves a scanned DataMatrix to a lot with
`parseBarcode`, then calls `recordCountLine` with that lot's id, exactly as for a typed entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Self

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader

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
    optional_id,
    relation,
    request_ip,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission, WitnessCredentials
from server.counts import models
from server.counts.service import FinalizeResult, LineView
from server.inventory import models as inventory_models
from server.inventory.api import Movement, StockLevel, WitnessInput
from server.network import models as network_models
from server.network.api import Location, User

CountStatus = described_enum(
    models.CountStatus,
    "Where a stock count stands.",
    {
        "OPEN": "Lines may be recorded; stock is not touched yet.",
        "FINALIZED": "Closed: every variance was posted as a COUNT movement.",
        "CANCELLED": "Closed without touching stock.",
    },
)


def _lines_loader(info: Info) -> DataLoader[int, list[LineView]]:
    """One batch per request, so a page of counts does not query once per count."""
    counts = info.context.services.counts
    return info.context.loader(
        ("count_lines",), lambda: DataLoader(load_fn=counts.line_views, cache=True)
    )


def _uncounted_loader(info: Info) -> DataLoader[int, list[inventory_models.Balance]]:
    counts = info.context.services.counts
    return info.context.loader(
        ("count_uncounted",), lambda: DataLoader(load_fn=counts.uncounted, cache=True)
    )


@strawberry.type(description="What was counted of one lot, against what the system held.")
class StockCountLine:
    counted_quantity: int = strawberry.field(description="Packs found on the shelf.")
    system_quantity_at_count: int = strawberry.field(
        description="The balance of this lot here at the moment the line was recorded."
    )
    variance: int = strawberry.field(
        description="countedQuantity - systemQuantityAtCount: what finalizing will post."
    )
    current_system_quantity: int = strawberry.field(description="The balance now (live).")
    movements_since_counted: list[Movement] = strawberry.field(
        description="Movements of this lot here after it was counted (up to closing); kept."
    )
    movements_since_counted_quantity: int = strawberry.field(
        description="Their signed sum: why the balance moved although the shelf was counted."
    )
    adjustment: Movement | None = strawberry.field(
        description="The COUNT movement finalizing wrote (null while open or with no variance)."
    )
    balance_after_count: int | None = strawberry.field(
        description="OPEN: what finalizing now would leave; FINALIZED: what it left."
    )
    explanation: str = strawberry.field(
        description="The line's arithmetic in words, for the person reviewing the count."
    )
    counted_at: datetime = strawberry.field(description="When the line was last recorded.")
    lot_id: strawberry.Private[int]
    product_id: strawberry.Private[int]
    counted_by_id: strawberry.Private[int]

    @classmethod
    def from_view(cls, view: LineView) -> Self:
        line = view.line
        return cls(
            counted_quantity=line.counted_quantity,
            system_quantity_at_count=line.system_quantity_at_count,
            variance=view.variance,
            current_system_quantity=view.current_quantity,
            movements_since_counted=[Movement.from_model(m) for m in view.movements_since],
            movements_since_counted_quantity=view.quantity_since,
            adjustment=Movement.from_model(view.adjustment) if view.adjustment else None,
            balance_after_count=view.balance_after_count,
            explanation=view.explanation,
            counted_at=line.counted_at,
            lot_id=line.lot_id,
            product_id=view.lot.product_id,
            counted_by_id=line.counted_by,
        )

    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot counted.")
    product: Product = relation(
        catalog_models.Product, "product_id", description="The counted lot's product."
    )
    counted_by: User | None = relation(
        network_models.User, "counted_by_id", description="Who last recorded this line."
    )


@strawberry.type(description="A stock-take of one location: OPEN, then FINALIZED or CANCELLED.")
class StockCount(FromModel, relay.Node):
    __columns__ = {"started_by_id": "started_by", "closed_by_id": "closed_by"}

    id: relay.NodeID[int]
    status: CountStatus = strawberry.field(description="OPEN, FINALIZED or CANCELLED.")  # type: ignore[valid-type]
    reason: str | None = strawberry.field(description="Why the count was started, if given.")
    started_at: datetime = strawberry.field(description="When the count was opened.")
    closed_at: datetime | None = strawberry.field(
        description="When it was finalized or cancelled; null while OPEN."
    )
    location_id: strawberry.Private[int]
    started_by_id: strawberry.Private[int]
    closed_by_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.StockCount,
            node_ids,
            cls.from_model,
            permission=Permission.STOCK_READ,
            location_of=lambda row: row.location_id,
        )

    location: Location = relation(
        network_models.Location, "location_id", description="The location being counted."
    )
    started_by: User | None = relation(
        network_models.User, "started_by_id", description="Who opened the count."
    )
    closed_by: User | None = relation(
        network_models.User,
        "closed_by_id",
        description="Who finalized or cancelled it; null while OPEN.",
    )

    @strawberry.field(description="Counted lots with their live variance, in counting order.")
    async def lines(self, info: Info) -> list[StockCountLine]:
        return [StockCountLine.from_view(v) for v in await _lines_loader(info).load(self.id)]

    @strawberry.field(
        description="Lots with stock here that no line mentions (live). Finalizing leaves "
        "them untouched: a lot is only corrected when it was counted."
    )
    async def uncounted_lots(self, info: Info) -> list[StockLevel]:
        return [StockLevel.from_model(b) for b in await _uncounted_loader(info).load(self.id)]


@strawberry.type(description="A page of stock counts.")
class StockCountConnection(CountedConnection[StockCount]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="One stock count with its live variance; null if none.")
    async def stock_count(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="The count's ID.")],
    ) -> StockCount | None:
        node_id = str(decode_id(id, StockCount, "id"))
        return (await StockCount.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Stock counts in your scope, newest first.")
    async def stock_counts(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only counts of this location (in your scope)."),
        ] = None,
        status: Annotated[
            CountStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only counts in this status."),
        ] = None,
    ) -> StockCountConnection:
        page = await info.context.services.counts.counts_page(
            info.context.require_principal(),
            location_id=optional_id(location, Location, "location"),
            status=status,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(StockCountConnection, page, StockCount.from_model)


# --- mutations -------------------------------------------------------------------------------


@strawberry.input(description="Open a count at a location.")
class StartCountInput:
    location: relay.GlobalID = strawberry.field(
        description="The location to count; one OPEN count per location."
    )
    reason: str | None = strawberry.field(
        default=None, description="Why (up to 200 characters), e.g. a monthly stock-take."
    )


@strawberry.input(description="What is on the shelf of one lot, in an OPEN count.")
class RecordCountLineInput:
    id: relay.GlobalID = strawberry.field(description="The stock count.")
    lot: relay.GlobalID = strawberry.field(
        description="The lot counted (from parseBarcode when scanned)."
    )
    counted_quantity: int = strawberry.field(
        description="Packs found, 0 to 1,000,000,000; replaces an earlier line of this lot."
    )


@strawberry.input(description="Post a count's variances.")
class FinalizeCountInput:
    id: relay.GlobalID = strawberry.field(description="The OPEN stock count.")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Client-chosen key: a replay returns the first result and changes nothing.",
    )
    witness: WitnessInput | None = strawberry.field(
        default=None,
        description="Required when a controlled drug's count differs from its register: a "
        "pharmacist or nurse of the same organisation, other than you (WITNESS_REQUIRED).",
    )


@strawberry.input(description="Abandon an OPEN count.")
class CancelCountInput:
    id: relay.GlobalID = strawberry.field(description="The OPEN stock count.")
    reason: str = strawberry.field(description="Why it is abandoned (required, up to 200).")


@strawberry.type(description="The count a mutation opened or closed, or why it was refused.")
class StockCountPayload:
    stock_count: StockCount | None = strawberry.field(
        default=None, description="The count after the change; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The line recorded, or why it was refused.")
class CountLinePayload:
    line: StockCountLine | None = strawberry.field(
        default=None, description="The line as recorded; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The outcome of a count, line by line, and what it left alone.")
class FinalizeCountPayload:
    stock_count: StockCount | None = strawberry.field(
        default=None, description="The FINALIZED count; null when refused."
    )
    lines: list[StockCountLine] = strawberry.field(
        default_factory=list,
        description="Per counted lot: counted, system at count, movements since, adjustment, "
        "final balance.",
    )
    uncounted_lots: list[StockLevel] = strawberry.field(
        default_factory=list, description="Lots with stock that were not counted: untouched."
    )
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The COUNT movements written."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


def _finalize_payload(result: FinalizeResult) -> FinalizeCountPayload:
    return FinalizeCountPayload(
        stock_count=StockCount.from_model(result.count),
        lines=[StockCountLine.from_view(v) for v in result.lines],
        uncounted_lots=[StockLevel.from_model(b) for b in result.uncounted],
        movements=[Movement.from_model(m) for m in result.movements],
        replayed=result.replayed,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Open a count at a location (one open count per location); needs "
        "count management there."
    )
    async def start_count(self, info: Info, input: StartCountInput) -> StockCountPayload:
        count, errors = await attempt(
            info,
            lambda p: info.context.services.counts.start(
                p, decode_id(input.location, Location, "location"), input.reason
            ),
        )
        return StockCountPayload(stock_count=count and StockCount.from_model(count), errors=errors)

    @strawberry.mutation(
        description="Record what is on the shelf of one lot; recording it again replaces the "
        "line and its snapshot. Typed or scanned: resolve a scan with parseBarcode, then send "
        "the lot's id here."
    )
    async def record_count_line(self, info: Info, input: RecordCountLineInput) -> CountLinePayload:
        view, errors = await attempt(
            info,
            lambda p: info.context.services.counts.record_line(
                p,
                decode_id(input.id, StockCount, "id"),
                decode_id(input.lot, Lot, "lot"),
                input.counted_quantity,
            ),
        )
        return CountLinePayload(line=view and StockCountLine.from_view(view), errors=errors)

    @strawberry.mutation(
        description="Post every variance as a COUNT movement on the current balance, in one "
        "transaction; movements after a lot was counted are kept and reported."
    )
    async def finalize_count(self, info: Info, input: FinalizeCountInput) -> FinalizeCountPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.controlled.finalize_count(
                p,
                decode_id(input.id, StockCount, "id"),
                input.idempotency_key,
                witness=(
                    WitnessCredentials(input.witness.username, input.witness.password)
                    if input.witness
                    else None
                ),
                ip=request_ip(info),
            ),
        )
        return _finalize_payload(result) if result else FinalizeCountPayload(errors=errors)

    @strawberry.mutation(description="Abandon an open count; stock is not touched.")
    async def cancel_count(self, info: Info, input: CancelCountInput) -> StockCountPayload:
        closed, errors = await attempt(
            info,
            lambda p: info.context.services.counts.cancel(
                p, decode_id(input.id, StockCount, "id"), input.reason
            ),
        )
        return StockCountPayload(
            stock_count=closed and StockCount.from_model(closed), errors=errors
        )
