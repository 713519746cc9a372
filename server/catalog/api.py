"""GraphQL for products, their GTINs, and lots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Self

import strawberry
from sqlalchemy import or_, select
from strawberry import relay

from server.catalog import models
from server.catalog.service import ProductFields
from server.core.db import utcnow
from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    paginate,
    related,
)
from server.core.gs1 import normalize_gtin
from server.core.security import Permission
from server.core.validation import LIKE_ESCAPE, like_pattern
from server.network import models as network_models
from server.network.api import Organisation

StorageCondition = strawberry.enum(models.StorageCondition)
LotStatus = strawberry.enum(models.LotStatus)


@strawberry.type
class Product(relay.Node):
    id: relay.NodeID[int]
    name: str
    strength: str
    dosage_form: str
    unit: str
    approval_number: str
    atc_code: str | None
    controlled_schedule: str | None
    storage: StorageCondition  # type: ignore[valid-type]
    unit_cost: Decimal
    active: bool

    @classmethod
    def from_model(cls, p: models.Product) -> Self:
        return cls(
            id=p.id,
            name=p.name,
            strength=p.strength,
            dosage_form=p.dosage_form,
            unit=p.unit,
            approval_number=p.approval_number,
            atc_code=p.atc_code,
            controlled_schedule=p.controlled_schedule,
            storage=p.storage,
            unit_cost=p.unit_cost,
            active=p.active,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Product, node_ids, cls.from_model)

    @strawberry.field
    async def gtins(self, info: Info) -> list[str]:
        rows = await info.context.grouped(
            "gtins_by_product", models.ProductGtin.product_id, models.ProductGtin.id
        ).load(self.id)
        return [r.gtin for r in rows]

    @strawberry.field(description="Whether this is a controlled substance (has a schedule).")
    def controlled(self) -> bool:
        return self.controlled_schedule is not None


@strawberry.type
class Lot(relay.Node):
    id: relay.NodeID[int]
    batch_number: str
    expiry_date: date
    status: LotStatus  # type: ignore[valid-type]
    product_id: strawberry.Private[int]
    manufacturer_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, lot: models.Lot) -> Self:
        return cls(
            id=lot.id,
            batch_number=lot.batch_number,
            expiry_date=lot.expiry_date,
            status=lot.status,
            product_id=lot.product_id,
            manufacturer_id=lot.manufacturer_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Lot, node_ids, cls.from_model)

    @strawberry.field
    def expired(self) -> bool:
        return self.expiry_date < utcnow().date()

    @strawberry.field
    def product(self, info: Info) -> Product:
        return related(info, models.Product, self.product_id, Product.from_model)

    @strawberry.field
    async def manufacturer(self, info: Info) -> Organisation | None:
        return await load_related(
            info, network_models.Organisation, self.manufacturer_id, Organisation.from_model
        )


@strawberry.type
class ProductConnection(CountedConnection[Product]):
    pass


@strawberry.type
class LotConnection(CountedConnection[Lot]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Search by name (substring), exact GTIN, or ATC code prefix.")
    async def products(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        search: str | None = None,
        gtin: str | None = None,
        atc_code: str | None = None,
    ) -> ProductConnection:
        info.context.require_principal().require(Permission.CATALOG_READ)
        stmt = select(models.Product)
        if search:
            stmt = stmt.where(models.Product.name.ilike(like_pattern(search), escape=LIKE_ESCAPE))
        if gtin:
            wanted = normalize_gtin(gtin)
            stmt = stmt.where(
                models.Product.id.in_(
                    select(models.ProductGtin.product_id).where(models.ProductGtin.gtin == wanted)
                )
            )
        if atc_code:
            stmt = stmt.where(
                models.Product.atc_code.startswith(atc_code.strip().upper(), autoescape=True)
            )
        page = await paginate(
            info,
            stmt,
            keys=[models.Product.id],
            first=first,
            after=after,
            key_of=lambda r: [r.id],
        )
        return connection(ProductConnection, page, Product.from_model)

    @strawberry.field(description="Lots in expiry order (earliest first).")
    async def lots(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        product: relay.GlobalID | None = None,
        batch_number: str | None = None,
        expiring_before: date | None = None,
    ) -> LotConnection:
        info.context.require_principal().require(Permission.CATALOG_READ)
        stmt = select(models.Lot)
        if product is not None:
            stmt = stmt.where(models.Lot.product_id == decode_id(product, Product, "product"))
        if batch_number:
            stmt = stmt.where(or_(models.Lot.batch_number == batch_number.strip()))
        if expiring_before is not None:
            stmt = stmt.where(models.Lot.expiry_date < expiring_before)
        page = await paginate(
            info,
            stmt,
            keys=[models.Lot.expiry_date, models.Lot.id],
            first=first,
            after=after,
            key_of=lambda r: [r.expiry_date, r.id],
        )
        return connection(LotConnection, page, Lot.from_model)


@strawberry.input
class ProductInput:
    name: str
    strength: str
    dosage_form: str
    unit: str
    approval_number: str
    gtins: list[str] = strawberry.field(default_factory=list)
    atc_code: str | None = None
    controlled_schedule: str | None = None
    storage: StorageCondition = models.StorageCondition.ROOM  # type: ignore[valid-type]
    unit_cost: Decimal = Decimal("0")

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
        )


@strawberry.type
class ProductPayload:
    product: Product | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_product(self, info: Info, input: ProductInput) -> ProductPayload:
        product, errors = await attempt(
            info, lambda p: info.context.services.catalog.create_product(p, input.to_fields())
        )
        return ProductPayload(product=product and Product.from_model(product), errors=errors)

    @strawberry.mutation(description="Replace a product's details and GTINs.")
    async def update_product(
        self, info: Info, id: relay.GlobalID, input: ProductInput, active: bool | None = None
    ) -> ProductPayload:
        product, errors = await attempt(
            info,
            lambda p: info.context.services.catalog.update_product(
                p, decode_id(id, Product, "id"), input.to_fields(), active=active
            ),
        )
        return ProductPayload(product=product and Product.from_model(product), errors=errors)
