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
from server.core.errors import InvalidInput
from server.core.graphql import Info, MutationError, attempt, decode_id, relation
from server.core.graphql_enums import described_enum
from server.network import models as network_models
from server.network.api import Location, Organisation
from server.purchasing.api import PurchaseOrder
from server.replenishment import optimise, rules
from server.replenishment.service import LocationPlan, PurchaseChoice, Suggestions, TransferChoice
from server.suppliers.api import organisation_id
from server.transfers.api.types import Transfer

MAX_PACK_SPACES = 200

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


PlanConstraint = described_enum(
    optimise.PlanConstraint,
    "A limit a reorder plan must respect.",
    BUDGET="The money available for the orders.",
    SPACE="The free storage space at the location.",
)

PlanStatus = described_enum(
    optimise.PlanStatus,
    "How the plan was found.",
    OPTIMAL="The best plan under the cost model (or the suggestions themselves when they fit).",
    TIME_LIMIT="The solver's best plan when its time ran out; it respects every limit.",
    HEURISTIC="The solver found none in time: a greedy fill that respects every limit.",
)


@strawberry.input(description="The storage space one pack of a product takes.")
class PackSpaceInput:
    product: relay.GlobalID = strawberry.field(description="The product.")
    space: float = strawberry.field(
        description="Space per pack, in the same units as storageCapacity (default 1)."
    )


@strawberry.input(description="The limits a location's purchases must fit today.")
class ReorderPlanInput:
    location: relay.GlobalID = strawberry.field(description="The buying location (not a ward).")
    budget: Decimal | None = strawberry.field(
        default=None, description="Money available for all the orders; null: no limit."
    )
    storage_capacity: float | None = strawberry.field(
        default=None,
        description="Free storage space at the location, in packs unless packSpace gives "
        "other units; null: no limit. At least one of budget and storageCapacity is needed.",
    )
    pack_space: list[PackSpaceInput] = strawberry.field(
        default_factory=list,
        description="Space per pack for products that do not take one unit each (at most 200).",
    )


@strawberry.type(description="One suggestion and what the plan orders of it.")
class PlannedOrder:
    suggestion: ReorderSuggestion = strawberry.field(
        description="The unconstrained suggestion, with its why."
    )
    quantity: int = strawberry.field(
        description="Packs the plan orders (at most the suggestion; 0: cut entirely)."
    )
    cut: int = strawberry.field(description="Packs cut from the suggestion.")
    space: float = strawberry.field(description="Storage space the planned quantity takes.")
    must_order: bool = strawberry.field(
        description="A critical or controlled item below its reorder point: kept while the "
        "limits allow its minimum."
    )
    unit_price: strawberry.Private[Decimal | None]

    @strawberry.field(description="quantity * the contract's unit price.")
    def value(self) -> Decimal | None:
        return None if self.unit_price is None else self.unit_price * self.quantity


@strawberry.type(
    description="A location's purchase suggestions cut to a budget and free storage space by "
    "an optimiser minimising expected stock-out, expiry, holding and ordering cost."
)
class ReorderPlan:
    status: PlanStatus = strawberry.field(  # type: ignore[valid-type]
        description="How the plan was found."
    )
    optimised: bool = strawberry.field(
        description="False when the suggestions fit the limits and are the plan unchanged."
    )
    binding: list[PlanConstraint] = strawberry.field(  # type: ignore[valid-type]
        description="The limits that force cuts (dropping one would lower the expected cost)."
    )
    lines: list[PlannedOrder] = strawberry.field(
        description="Every suggestion with a quantity, those still ordered first."
    )
    budget: Decimal | None = strawberry.field(description="The budget given.")
    storage_capacity: float | None = strawberry.field(description="The free space given.")
    suggested_spend: Decimal = strawberry.field(description="What all the suggestions cost.")
    spend: Decimal = strawberry.field(description="What the plan costs.")
    suggested_space: float = strawberry.field(description="The space all the suggestions take.")
    space: float = strawberry.field(description="The space the plan takes.")
    expected_cost: float | None = strawberry.field(
        description="The plan's expected stock-out + expiry + holding + ordering cost over lead "
        "time and one cycle; null when nothing had to be cut."
    )
    messages: list[str] = strawberry.field(
        description="What the planner had to give up, in words (e.g. a critical item whose "
        "minimum did not fit)."
    )
    location_id: strawberry.Private[int]
    dropped_ids: strawberry.Private[list[int]]

    location: Location = relation(
        network_models.Location, "location_id", description="The buying location."
    )

    @strawberry.field(
        description="Critical or controlled items that had to be ordered but whose minimums "
        "did not all fit: left to the optimiser."
    )
    async def must_orders_dropped(self, info: Info) -> list[Product]:
        rows = await info.context.by_id(catalog_models.Product).load_many(self.dropped_ids)
        return [Product.from_model(p) for p in rows if p is not None]

    @classmethod
    def from_result(cls, result: LocationPlan) -> ReorderPlan:
        plan = result.plan
        return cls(
            status=plan.status,
            optimised=plan.optimised,
            binding=list(plan.binding),
            lines=[
                PlannedOrder(
                    suggestion=ReorderSuggestion.from_rule(p.suggestion),
                    quantity=p.quantity,
                    cut=p.cut,
                    space=p.space,
                    must_order=p.must_order,
                    unit_price=p.suggestion.unit_price,
                )
                for p in plan.lines
            ],
            budget=None if plan.budget is None else _money(plan.budget),
            storage_capacity=plan.capacity,
            suggested_spend=_money(plan.suggested_spend),
            spend=_money(plan.spend),
            suggested_space=plan.suggested_space,
            space=plan.space,
            expected_cost=None if plan.expected_cost is None else round(plan.expected_cost, 2),
            messages=list(plan.messages),
            location_id=result.location_id,
            dropped_ids=list(plan.dropped),
        )


def _money(value: float) -> Decimal:
    return Decimal(str(round(value, 2)))


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

    @strawberry.field(
        description="Today's purchase suggestions of a location cut to a budget and free "
        "storage space: what to order, what was cut and which limit binds. Needs procurement "
        "read access; a ward is refused (plan its pharmacy).",
        metadata=weigh(1000),
    )
    async def reorder_plan(
        self,
        info: Info,
        input: Annotated[
            ReorderPlanInput,
            strawberry.argument(description="The location, and the budget and space to plan in."),
        ],
    ) -> ReorderPlan:
        principal = info.context.require_principal()
        if len(input.pack_space) > MAX_PACK_SPACES:
            raise InvalidInput(f"at most {MAX_PACK_SPACES} packSpace entries", field="pack_space")
        spaces = {
            decode_id(x.product, Product, f"packSpace.{i}.product"): x.space
            for i, x in enumerate(input.pack_space)
        }
        result = await info.context.services.replenishment.plan(
            principal,
            decode_id(input.location, Location, "location"),
            budget=None if input.budget is None else float(input.budget),
            storage_capacity=input.storage_capacity,
            pack_space=spaces,
        )
        return ReorderPlan.from_result(result)


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
