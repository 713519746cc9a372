"""GraphQL for replenishment: reorder suggestions for a location and turning accepted ones into
draft purchase orders (per supplier) or ward transfer requests. Thin: the service decides."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, MutationError, attempt, decode_id, relation
from server.core.graphql_enums import described_enum
from server.network import models as network_models
from server.network.api import Location, Organisation
from server.purchasing.api import PurchaseOrder
from server.replenishment import rules
from server.replenishment.service import PurchaseChoice, Suggestions, TransferChoice
from server.suppliers.api import organisation_id
from server.transfers.api.types import Transfer

SuggestionKind = described_enum(
    rules.SuggestionKind,
    "Where a suggested quantity comes from.",
    PURCHASE="Bought from a supplier under a contract valid today.",
    TRANSFER="Sent to a ward from the pharmacy that supplies it.",
)

SuggestionReason = described_enum(
    rules.SuggestionReason,
    "Why a suggestion is zero or smaller than the order-up-to level asks for.",
    ABOVE_REORDER_POINT="The inventory position is at or above the reorder point (par level).",
    NO_VALID_CONTRACT="No contract of the buyer for this product is valid today.",
    CAPPED_BY_SHELF_LIFE="Cut to what the forecast uses before the new stock would expire.",
    SHELF_LIFE_BELOW_MINIMUM="Even the contract's minimum order would expire before it is used.",
    CAPPED_BY_CENTRAL_STOCK="The pharmacy has less than the wards need; shared out.",
    NO_CENTRAL_STOCK="The pharmacy has none to send.",
)


@strawberry.type(description="What to order or ask for, how much, from whom, and why.")
class ReorderSuggestion:
    kind: SuggestionKind = strawberry.field(  # type: ignore[valid-type]
        description="A purchase from a supplier or a transfer from the pharmacy."
    )
    quantity: int = strawberry.field(description="Packs suggested (0: none needed or possible).")
    reason: SuggestionReason | None = strawberry.field(  # type: ignore[valid-type]
        description="Why the quantity is zero or capped; null when it is the full need."
    )
    contract_reference: str | None = strawberry.field(
        description="The contract the purchase is under; null for transfers."
    )
    unit_price: Decimal | None = strawberry.field(
        description="The contract's price per pack; null for transfers."
    )
    why: JSON = strawberry.field(
        description="Every number behind the suggestion: stock on hand, on order, in transit "
        "and allocated, the forecast and its source, lead time (measured or the contract's), "
        "service level, safety stock, reorder point, order-up-to level, pack and minimum "
        "rounding, the shelf-life cap."
    )
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int]
    supplier_id: strawberry.Private[int | None]
    source_location_id: strawberry.Private[int | None]

    product: Product = relation(catalog_models.Product, "product_id", description="What.")
    location: Location = relation(
        network_models.Location, "location_id", description="Where it is needed."
    )
    supplier: Organisation | None = relation(
        network_models.Organisation, "supplier_id", description="Who sells it; null for transfers."
    )
    source_location: Location | None = relation(
        network_models.Location,
        "source_location_id",
        description="The pharmacy a ward is topped up from; null for purchases.",
    )

    @strawberry.field(description="quantity * unitPrice; null for transfers.")
    def value(self) -> Decimal | None:
        return None if self.unit_price is None else self.unit_price * self.quantity

    @classmethod
    def from_rule(cls, s: rules.Suggestion) -> ReorderSuggestion:
        return cls(
            kind=s.kind,
            quantity=s.quantity,
            reason=s.reason,
            contract_reference=s.contract_reference,
            unit_price=s.unit_price,
            why=cast(JSON, s.why),
            product_id=s.product_id,
            location_id=s.location_id,
            supplier_id=s.supplier_id,
            source_location_id=s.source_location_id,
        )


@strawberry.type(description="A location's reorder suggestions for today.")
class ReorderSuggestions:
    kind: SuggestionKind = strawberry.field(  # type: ignore[valid-type]
        description="TRANSFER for a ward supplied by a pharmacy, else PURCHASE."
    )
    suggestions: list[ReorderSuggestion] = strawberry.field(
        description="One per product, those needing something first."
    )
    location_id: strawberry.Private[int]
    source_location_id: strawberry.Private[int | None]

    location: Location = relation(
        network_models.Location, "location_id", description="The location."
    )
    source_location: Location | None = relation(
        network_models.Location,
        "source_location_id",
        description="The pharmacy that tops up this ward; null for purchases.",
    )

    @classmethod
    def from_result(cls, result: Suggestions) -> ReorderSuggestions:
        return cls(
            kind=result.kind,
            suggestions=[ReorderSuggestion.from_rule(s) for s in result.suggestions],
            location_id=result.location_id,
            source_location_id=result.source_location_id,
        )


@strawberry.input(description="One accepted purchase suggestion (its quantity may be changed).")
class AcceptedPurchaseInput:
    product: relay.GlobalID = strawberry.field(description="The product.")
    supplier: relay.GlobalID = strawberry.field(
        description="The supplier (or its organisation) whose contract the product is under."
    )
    quantity: int = strawberry.field(description="Packs to order.")


@strawberry.input(description="Accepted purchase suggestions of one location.")
class CreatePurchaseOrdersFromSuggestionsInput:
    location: relay.GlobalID = strawberry.field(description="The location to deliver to.")
    lines: list[AcceptedPurchaseInput] = strawberry.field(
        description="The accepted suggestions (1-200), one per product."
    )


@strawberry.type(description="The draft orders created, one per supplier, or why not.")
class CreatePurchaseOrdersFromSuggestionsPayload:
    purchase_orders: list[PurchaseOrder] = strawberry.field(
        default_factory=list, description="DRAFT orders, one per supplier; empty when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list,
        description="Why it was refused (nothing was created); empty on success.",
    )


@strawberry.input(description="One accepted ward suggestion (its quantity may be changed).")
class AcceptedTransferInput:
    location: relay.GlobalID = strawberry.field(description="The ward.")
    product: relay.GlobalID = strawberry.field(description="The product.")
    quantity: int = strawberry.field(description="Packs to ask the pharmacy for.")


@strawberry.input(description="Accepted ward suggestions.")
class CreateTransfersFromSuggestionsInput:
    lines: list[AcceptedTransferInput] = strawberry.field(
        description="The accepted suggestions (1-200), one per ward and product."
    )


@strawberry.type(description="The transfer requests created, one per ward, or why not.")
class CreateTransfersFromSuggestionsPayload:
    transfers: list[Transfer] = strawberry.field(
        default_factory=list, description="REQUESTED transfers, one per ward."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class Query:
    @strawberry.field(
        description="Today's reorder suggestions for a location: a ward gets transfers from "
        "the pharmacy that supplies it, any other location purchases under a valid contract. "
        "A location outside your scope is FORBIDDEN.",
        metadata=weigh(200),
    )
    async def reorder_suggestions(
        self,
        info: Info,
        location: Annotated[relay.GlobalID, strawberry.argument(description="The location.")],
        include_not_needed: Annotated[
            bool,
            strawberry.argument(
                description="Also list products that need nothing today, with the reason."
            ),
        ] = False,
    ) -> ReorderSuggestions:
        principal = info.context.require_principal()
        result = await info.context.services.replenishment.suggestions(
            principal,
            decode_id(location, Location, "location"),
            include_not_needed=include_not_needed,
        )
        return ReorderSuggestions.from_result(result)


def _purchase_choice(line: AcceptedPurchaseInput, field: str) -> PurchaseChoice:
    return PurchaseChoice(
        product_id=decode_id(line.product, Product, f"{field}.product"),
        supplier_id=organisation_id(line.supplier, f"{field}.supplier"),
        quantity=line.quantity,
    )


def _transfer_choice(line: AcceptedTransferInput, field: str) -> TransferChoice:
    return TransferChoice(
        location_id=decode_id(line.location, Location, f"{field}.location"),
        product_id=decode_id(line.product, Product, f"{field}.product"),
        quantity=line.quantity,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Accepted purchase suggestions become DRAFT purchase orders, one per "
        "supplier, all or none."
    )
    async def create_purchase_orders_from_suggestions(
        self, info: Info, input: CreatePurchaseOrdersFromSuggestionsInput
    ) -> CreatePurchaseOrdersFromSuggestionsPayload:
        orders, errors = await attempt(
            info,
            lambda p: info.context.services.replenishment.create_purchase_orders(
                p,
                decode_id(input.location, Location, "location"),
                [_purchase_choice(x, f"lines.{i}") for i, x in enumerate(input.lines)],
            ),
        )
        return CreatePurchaseOrdersFromSuggestionsPayload(
            purchase_orders=[PurchaseOrder.from_model(o) for o in orders or []], errors=errors
        )

    @strawberry.mutation(
        description="Accepted ward suggestions become transfer requests from each ward's "
        "pharmacy, one per ward."
    )
    async def create_transfers_from_suggestions(
        self, info: Info, input: CreateTransfersFromSuggestionsInput
    ) -> CreateTransfersFromSuggestionsPayload:
        transfers, errors = await attempt(
            info,
            lambda p: info.context.services.replenishment.create_transfers(
                p, [_transfer_choice(x, f"lines.{i}") for i, x in enumerate(input.lines)]
            ),
        )
        return CreateTransfersFromSuggestionsPayload(
            transfers=[Transfer.from_model(t) for t in transfers or []], errors=errors
        )
