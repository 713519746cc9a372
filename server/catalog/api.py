"""GraphQL for products, their GTINs, and lots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Annotated, Self

import strawberry
from strawberry import relay

from server.catalog import models
from server.catalog.service import ProductFields
from server.core.db import utcnow
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
from server.network import models as network_models
from server.network.api import Organisation

StorageCondition = described_enum(
    models.StorageCondition,
    "How a product must be stored.",
    {
        "ROOM": "At room temperature (15-25 °C).",
        "REFRIGERATED": "In a fridge (2-8 °C).",
        "FROZEN": "Frozen (-25 to -15 °C).",
    },
)
LotStatus = described_enum(
    models.LotStatus,
    "Whether a lot may be issued.",
    {
        "RELEASED": "Usable: may be dispensed and shipped (until it expires).",
        "QUARANTINED": "Held back pending a decision; never issued.",
        "RECALLED": "Recalled by its manufacturer or a regulator; never issued.",
    },
)


@strawberry.type(description="A medicine as stocked: one strength of one dosage form.")
class Product(FromModel, relay.Node):
    id: relay.NodeID[int]
    name: str = strawberry.field(description="The medicine's name, e.g. Paracetamol.")
    strength: str = strawberry.field(description="E.g. 500 mg.")
    dosage_form: str = strawberry.field(description="E.g. tablet, vial.")
    unit: str = strawberry.field(description="What one counted pack is, e.g. box of 20.")
    approval_number: str = strawberry.field(
        description="The marketing authorisation number; with a batch number it keys supervision."
    )
    atc_code: str | None = strawberry.field(description="WHO ATC code, e.g. N02BE01.")
    controlled_schedule: str | None = strawberry.field(
        description="The controlled-drug schedule (e.g. II); null when not controlled."
    )
    storage: StorageCondition = strawberry.field(description="How it must be stored.")  # type: ignore[valid-type]
    unit_cost: Decimal = strawberry.field(description="Cost of one unit, in the home currency.")
    active: bool = strawberry.field(description="False once withdrawn from the catalogue.")
    critical: bool = strawberry.field(
        description="Life-saving with no ready substitute: reordering protects it hardest."
    )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Product, node_ids, cls.from_model)

    @strawberry.field(description="Its GTINs, as GTIN-14, in the order they were given.")
    async def gtins(self, info: Info) -> list[str]:
        rows = await info.context.grouped(
            "gtins_by_product", models.ProductGtin.product_id, models.ProductGtin.id
        ).load(self.id)
        return [r.gtin for r in rows]

    @strawberry.field(description="Whether this is a controlled substance (has a schedule).")
    def controlled(self) -> bool:
        return self.controlled_schedule is not None


@strawberry.type(description="One batch of a product, with its expiry date.")
class Lot(FromModel, relay.Node):
    id: relay.NodeID[int]
    batch_number: str = strawberry.field(description="As printed on the pack (GS1 AI 10).")
    expiry_date: date = strawberry.field(description="Last day the lot may be used.")
    status: LotStatus = strawberry.field(description="Whether the lot may be issued.")  # type: ignore[valid-type]
    product_id: strawberry.Private[int]
    manufacturer_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Lot, node_ids, cls.from_model)

    @strawberry.field(description="True when the expiry date is before today (UTC).")
    def expired(self) -> bool:
        return self.expiry_date < utcnow().date()

    product: Product = relation(models.Product, "product_id", description="The lot's product.")
    manufacturer: Organisation | None = relation(
        network_models.Organisation,
        "manufacturer_id",
        description="Who produced the lot, when known.",
    )


@strawberry.type(description="A page of products.")
class ProductConnection(CountedConnection[Product]):
    pass


@strawberry.type(description="A page of lots.")
class LotConnection(CountedConnection[Lot]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Search by name (substring), exact GTIN, or ATC code prefix.")
    async def products(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        search: Annotated[
            str | None, strawberry.argument(description="Part of the name, any case.")
        ] = None,
        gtin: Annotated[
            str | None, strawberry.argument(description="A GTIN-8, -12, -13 or -14.")
        ] = None,
        atc_code: Annotated[
            str | None, strawberry.argument(description="The start of an ATC code, e.g. N02.")
        ] = None,
    ) -> ProductConnection:
        page = await info.context.services.catalog.products_page(
            info.context.require_principal(),
            search=search,
            gtin=gtin,
            atc_code=atc_code,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(ProductConnection, page, Product.from_model)

    @strawberry.field(description="Lots in expiry order (earliest first).")
    async def lots(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        product: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only lots of this product.")
        ] = None,
        batch_number: Annotated[
            str | None, strawberry.argument(description="Only lots with this batch number.")
        ] = None,
        expiring_before: Annotated[
            date | None, strawberry.argument(description="Only lots expiring before this day.")
        ] = None,
    ) -> LotConnection:
        page = await info.context.services.catalog.lots_page(
            info.context.require_principal(),
            product_id=optional_id(product, Product, "product"),
            batch_number=batch_number,
            expiring_before=expiring_before,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(LotConnection, page, Lot.from_model)


@strawberry.input(description="A product's details; its GTINs replace any it had.")
class ProductInput:
    name: str = strawberry.field(description="The medicine's name.")
    strength: str = strawberry.field(description="E.g. 500 mg (up to 100 characters).")
    dosage_form: str = strawberry.field(description="E.g. tablet (up to 100 characters).")
    unit: str = strawberry.field(description="What one pack is (up to 50 characters).")
    approval_number: str = strawberry.field(
        description="Marketing authorisation number; unique in the catalogue."
    )
    gtins: list[str] = strawberry.field(
        default_factory=list,
        description="GTIN-8/12/13/14 with a valid check digit; each belongs to one product.",
    )
    atc_code: str | None = strawberry.field(default=None, description="E.g. N02BE01.")
    controlled_schedule: str | None = strawberry.field(
        default=None, description="E.g. II; null for a product that is not controlled."
    )
    storage: StorageCondition = strawberry.field(  # type: ignore[valid-type]
        default=models.StorageCondition.ROOM, description="How it must be stored."
    )
    unit_cost: Decimal = strawberry.field(
        default=Decimal("0"), description="Cost of one unit; 0 or more."
    )
    critical: bool = strawberry.field(
        default=False,
        description="Life-saving with no ready substitute (reordering keeps the highest "
        "service level for it); false when not given.",
    )

    def to_fields(self) -> ProductFields:
        return ProductFields(
            name=self.name,
            strength=self.strength,
            dosage_form=self.dosage_form,
            unit=self.unit,
            approval_number=self.approval_number,
            gtins=list(self.gtins),
            atc_code=self.atc_code,
            controlled_schedule=self.controlled_schedule,
            storage=self.storage,
            unit_cost=self.unit_cost,
            critical=self.critical,
        )


@strawberry.input(description="Replace a product's details and GTINs; withdraw or restore it.")
class UpdateProductInput(ProductInput):
    id: relay.GlobalID = strawberry.field(description="The product.")
    active: bool | None = strawberry.field(
        default=None, description="false withdraws it, true restores it; null leaves it."
    )


@strawberry.type(description="The product created or updated, or why it was refused.")
class ProductPayload:
    product: Product | None = strawberry.field(
        default=None, description="The product as stored; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Add a product to the catalogue; needs catalogue management.")
    async def create_product(self, info: Info, input: ProductInput) -> ProductPayload:
        product, errors = await attempt(
            info, lambda p: info.context.services.catalog.create_product(p, input.to_fields())
        )
        return ProductPayload(product=product and Product.from_model(product), errors=errors)

    @strawberry.mutation(
        description="Replace a product's details and GTINs; needs catalogue management."
    )
    async def update_product(self, info: Info, input: UpdateProductInput) -> ProductPayload:
        product, errors = await attempt(
            info,
            lambda p: info.context.services.catalog.update_product(
                p, decode_id(input.id, Product, "id"), input.to_fields(), active=input.active
            ),
        )
        return ProductPayload(product=product and Product.from_model(product), errors=errors)
