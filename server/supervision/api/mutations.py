"""Mutations of supervision: `recallLots`."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog.api import Lot, Product
from server.core.graphql import Info, MutationError, attempt, decode_id
from server.supervision.api.types import Recall


@strawberry.input(
    description="Which lots to recall, and why: `lots`, or `product` with `batchNumber`."
)
class RecallLotsInput:
    reason: str = strawberry.field(description="Why: shown on every RECALL alert and audited.")
    lots: list[relay.GlobalID] | None = strawberry.field(
        default=None, description="The lots to recall (Lot IDs, at most 100)."
    )
    product: relay.GlobalID | None = strawberry.field(
        default=None, description="With batchNumber: every lot of that product's batch."
    )
    batch_number: str | None = strawberry.field(
        default=None, description="With product: the batch whose lots to recall."
    )
    reference: str | None = strawberry.field(
        default=None, description="The recall's number; null: the next RC-YYYY-NNNNN."
    )


@strawberry.type(description="The result of recallLots.")
class RecallLotsPayload:
    recall: Recall | None = strawberry.field(
        default=None, description="The recall made; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Recall lots (or product + batchNumber) everywhere at once: each becomes "
        "RECALLED and can no longer be shipped, transferred or dispensed (disposal stays "
        "possible); every location holding stock gets a RECALL alert. ADMIN and REGULATOR "
        "any lot; a PHARMACIST lots handled in their scope."
    )
    async def recall_lots(
        self,
        info: Info,
        input: Annotated[
            RecallLotsInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> RecallLotsPayload:
        lots = input.lots
        result, errors = await attempt(
            info,
            lambda p: info.context.services.supervision.recall_lots(
                p,
                reason=input.reason,
                lot_ids=None if lots is None else [decode_id(x, Lot, "lots") for x in lots],
                product_id=None
                if input.product is None
                else decode_id(input.product, Product, "product"),
                batch_number=input.batch_number,
                reference=input.reference,
            ),
        )
        return RecallLotsPayload(recall=result and Recall.from_model(result.recall), errors=errors)
