"""GraphQL for manufacturers: recordProduction commissions a lot and its serials."""

from __future__ import annotations

from datetime import date

import strawberry
from strawberry import relay

from server.catalog.api import Lot, Product
from server.core.graphql import Info, MutationError, attempt, decode_id
from server.inventory.api import Movement
from server.network.api import Location
from server.production import rules
from server.production.service import Commission, Commissioned


@strawberry.input(
    description="Serials from `first` to `last` inclusive: the same prefix, then a counter of "
    "the same width (SN000001 to SN000500)."
)
class SerialRangeInput:
    first: str = strawberry.field(description="The first serial of the run.")
    last: str = strawberry.field(description="The last serial of the run (inclusive).")


@strawberry.input(
    description="A lot a manufacturer commissions at one of its own sites; replays with the "
    "same key change nothing."
)
class RecordProductionInput:
    location: relay.GlobalID = strawberry.field(
        description="The production site: a location of your own manufacturer organisation."
    )
    product: relay.GlobalID = strawberry.field(description="The product made.")
    batch_number: str = strawberry.field(
        description="The lot's batch number (GS1 AI 10, 1-20 characters)."
    )
    expiry_date: date = strawberry.field(
        description="The lot's expiry date: after today; a known batch keeps its own."
    )
    quantity: int = strawberry.field(description="Packs made (1 to 1,000,000,000).")
    serials: list[str] = strawberry.field(
        default_factory=list,
        description="One GS1 serial (AI 21) per pack, when the packs are serialised.",
    )
    serial_range: SerialRangeInput | None = strawberry.field(
        default=None, description="Instead of `serials`: a consecutive run, one per pack."
    )
    gtin: str | None = strawberry.field(
        default=None,
        description="Which of the product's GTINs the serials are of; its first when omitted.",
    )
    reference: str | None = strawberry.field(
        default=None, description="The production order in the manufacturer's system (≤ 100)."
    )
    idempotency_key: str = strawberry.field(
        description="Client-chosen key: a replay returns the first result and changes nothing."
    )


@strawberry.type(description="The PRODUCE movement recordProduction wrote, or why not.")
class RecordProductionPayload:
    movement: Movement | None = strawberry.field(
        default=None, description="The PRODUCE movement; null when refused."
    )
    lot: Lot | None = strawberry.field(
        default=None, description="The lot commissioned (created on its first production)."
    )
    gtin: str | None = strawberry.field(
        default=None, description="The GTIN its serials were commissioned under, if any."
    )
    serial_count: int = strawberry.field(
        default=0, description="How many serials were commissioned with it."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


def _command(input: RecordProductionInput) -> Commission:
    serial_range = (
        rules.SerialRange(input.serial_range.first, input.serial_range.last)
        if input.serial_range is not None
        else None
    )
    return Commission(
        location_id=decode_id(input.location, Location, "location"),
        product_id=decode_id(input.product, Product, "product"),
        batch_number=input.batch_number,
        expiry_date=input.expiry_date,
        quantity=input.quantity,
        serials=tuple(input.serials),
        serial_range=serial_range,
        gtin=input.gtin,
        reference=input.reference,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A manufacturer commissions a lot at one of its sites: a PRODUCE movement "
        "(the batch's total input for supervision) and, when given, its serial numbers, which "
        "scans later decommission."
    )
    async def record_production(
        self, info: Info, input: RecordProductionInput
    ) -> RecordProductionPayload:
        production = info.context.services.production
        result: Commissioned | None
        result, errors = await attempt(
            info, lambda p: production.record(p, _command(input), input.idempotency_key)
        )
        if result is None:
            return RecordProductionPayload(errors=errors)
        return RecordProductionPayload(
            movement=Movement.from_model(result.movement),
            lot=Lot.from_model(result.lot),
            gtin=result.gtin,
            serial_count=result.serials,
            replayed=result.replayed,
        )
