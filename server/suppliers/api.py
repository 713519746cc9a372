"""GraphQL for suppliers: the supplier directory, contacts, contracts and performance.

Reads by id of something belonging to other organisations are FORBIDDEN (never null); lists
show only what the caller's organisation is a party to (everything for ADMIN and AUDITOR).
The helpers at the top (`organisation_id`, `renamed`) are shared with the
purchasing and shipments APIs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Self, TypeVar

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
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
    parse_pks,
    relation,
)
from server.core.security import Permission
from server.network import models as network_models
from server.network.api import Organisation, OrganisationKind
from server.suppliers import models
from server.suppliers.parties import SUPPLIER_KINDS, require_supplier_visible, sees_parties
from server.suppliers.service import (
    ContactFields,
    ContractLineFields,
    PerformanceReport,
    require_contract_visible,
)

if TYPE_CHECKING:
    from server.purchasing.api import PurchaseOrderConnection

    # The model's enum: server.purchasing.api registers this very class with Strawberry (its
    # PurchaseOrderStatus, which the lazy annotation below names), and mypy sees a real type.
    from server.purchasing.models import PurchaseOrderStatus

PURCHASING = "server.purchasing.api"
E = TypeVar("E", bound=Enum)


# --- shared by the supplier-document APIs ------------------------------------------------------


def organisation_id(value: relay.GlobalID | str, field: str) -> int:
    """A supplier is an organisation: accept either kind of ID."""
    return decode_id(value, ("Supplier", Organisation), field)


def renamed(errors: list[MutationError], **names: str) -> list[MutationError]:
    """Errors naming the service's target (`order`, `shipment`, `line`) name the input's `id`."""
    for error in errors:
        if error.field in names:
            error.field = names[error.field]
    return errors


# --- types ---------------------------------------------------------------------------------------


@strawberry.type(description="Someone to call at a supplier.")
class SupplierContact(FromModel, relay.Node):
    id: relay.NodeID[int]
    name: str = strawberry.field(description="The person's name.")
    role: str | None = strawberry.field(description="What they do (sales, quality...), if known.")
    email: str | None = strawberry.field(description="E-mail address, if known.")
    phone: str | None = strawberry.field(description="Phone number as given, if known.")

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.SupplierContact,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=lambda p, row: require_supplier_visible(p, row.organisation_id),
        )


@strawberry.type(description="Price, lead time and minimum order agreed for one product.")
class ContractLine(FromModel):
    unit_price: Decimal = strawberry.field(description="Agreed price per pack.")
    lead_time_days: int = strawberry.field(
        description="Days from order submission to delivery the supplier promises."
    )
    minimum_order_quantity: int = strawberry.field(
        description="Fewest packs an order line may ask for."
    )
    product_id: strawberry.Private[int]

    product: Product = relation(
        catalog_models.Product, "product_id", description="The product agreed on."
    )


@strawberry.type(description="What a buyer agreed with a supplier for a period.")
class Contract(FromModel, relay.Node):
    id: relay.NodeID[int]
    reference: str = strawberry.field(description="The parties' reference, unique per supplier.")
    valid_from: date = strawberry.field(description="First day the contract applies (inclusive).")
    valid_until: date = strawberry.field(description="Last day the contract applies (inclusive).")
    created_at: datetime = strawberry.field(description="When it was recorded.")
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.Contract,
            node_ids,
            cls.from_model,
            permission=Permission.PROCUREMENT_READ,
            check=require_contract_visible,
        )

    @strawberry.field(description="True when today is within the validity dates.")
    def valid_today(self) -> bool:
        return self.valid_from <= utcnow().date() <= self.valid_until

    supplier: Supplier = relation(
        network_models.Organisation, "supplier_id", description="The supplier that agreed."
    )
    buyer: Organisation = relation(
        network_models.Organisation, "buyer_id", description="The buying organisation."
    )

    @strawberry.field(description="The products agreed on, in the order they were entered.")
    async def lines(self, info: Info) -> list[ContractLine]:
        rows = await info.context.grouped(
            "contract_lines", models.ContractLine.contract_id, models.ContractLine.id
        ).load(self.id)
        return [ContractLine.from_model(r) for r in rows]


@strawberry.type(description="Supplier performance over a period, computed from the records.")
class SupplierPerformance:
    since: date | None = strawberry.field(description="Inclusive; null means from the start.")
    until: date | None = strawberry.field(description="Exclusive; null means up to now.")
    shipments_received: int = strawberry.field(
        description="Shipments against orders whose receipt was completed in the period."
    )
    shipments_on_time: int = strawberry.field(
        description="Of those, received (UTC date) on or before the order's expected date."
    )
    on_time_delivery_rate: float | None = strawberry.field(
        description="shipmentsOnTime / shipmentsReceived (0..1); null without shipments."
    )
    ordered_quantity: int = strawberry.field(
        description="Packs ordered on orders submitted in the period (not draft or cancelled)."
    )
    received_quantity: int = strawberry.field(
        description="Packs received on those lines, each line capped at what it ordered."
    )
    fill_rate: float | None = strawberry.field(
        description="receivedQuantity / orderedQuantity (0..1); null without ordered packs."
    )
    average_lead_time_days: float | None = strawberry.field(
        description="Order submitted -> shipment received, in days, averaged over shipments."
    )
    lead_time_p90_days: float | None = strawberry.field(
        description="90th percentile of the same (nearest rank: an observed lead time)."
    )
    shipments_with_discrepancies: int = strawberry.field(
        description="Received shipments with at least one discrepancy."
    )
    discrepancy_rate: float | None = strawberry.field(
        description="Received shipments with at least one discrepancy / shipments received."
    )
    priced_quantity: int = strawberry.field(
        description="Ordered packs that had a contract price valid when the order was submitted."
    )
    price_variance_percent: float | None = strawberry.field(
        description="sum((price - contract price) * qty) / sum(contract price * qty) * 100."
    )
    supplier_id: strawberry.Private[int]
    buyer_id: strawberry.Private[int | None]

    @classmethod
    def from_result(cls, r: PerformanceReport) -> Self:
        f = r.figures
        return cls(
            since=r.since,
            until=r.until,
            shipments_received=f.shipments_received,
            shipments_on_time=f.shipments_on_time,
            on_time_delivery_rate=f.on_time_rate,
            ordered_quantity=f.ordered_quantity,
            received_quantity=f.received_quantity,
            fill_rate=f.fill_rate,
            average_lead_time_days=f.average_lead_time_days,
            lead_time_p90_days=f.p90_lead_time_days,
            shipments_with_discrepancies=f.shipments_with_discrepancies,
            discrepancy_rate=f.discrepancy_rate,
            priced_quantity=f.priced_quantity,
            price_variance_percent=f.price_variance_percent,
            supplier_id=r.supplier_id,
            buyer_id=r.buyer_id,
        )

    supplier: Supplier = relation(
        network_models.Organisation, "supplier_id", description="The supplier measured."
    )
    buyer: Organisation | None = relation(
        network_models.Organisation,
        "buyer_id",
        description="The buyer the figures are limited to (null: all buyers).",
    )


@strawberry.type(description="An organisation that supplies (manufacturer, wholesaler, supplier).")
class Supplier(FromModel, relay.Node):
    id: relay.NodeID[int]
    name: str = strawberry.field(description="The organisation's name.")
    kind: OrganisationKind = strawberry.field(  # type: ignore[valid-type]
        description="MANUFACTURER, WHOLESALER or SUPPLIER."
    )
    gln: str | None = strawberry.field(description="GS1 Global Location Number, if known.")

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()
        principal.require(Permission.PROCUREMENT_READ)
        rows = await info.context.by_id(network_models.Organisation).load_many(parse_pks(node_ids))
        found: list[Self | None] = []
        for row in rows:
            if row is None or row.kind not in SUPPLIER_KINDS:
                found.append(None)
                continue
            require_supplier_visible(principal, row.id)
            found.append(cls.from_model(row))
        return found

    organisation: Organisation = relation(
        network_models.Organisation, "id", description="The same organisation in the network."
    )

    @strawberry.field(description="People to call at this supplier.")
    async def contacts(self, info: Info) -> list[SupplierContact]:
        rows = await info.context.grouped(
            "supplier_contacts", models.SupplierContact.organisation_id, models.SupplierContact.id
        ).load(self.id)
        return [SupplierContact.from_model(r) for r in rows]

    @strawberry.field(
        description="Contracts with this supplier that your organisation is party to."
    )
    async def contracts(self, info: Info) -> list[Contract]:
        principal = info.context.require_principal()
        rows = await info.context.grouped(
            "supplier_contracts", models.Contract.supplier_id, models.Contract.valid_from
        ).load(self.id)
        return [
            Contract.from_model(r)
            for r in rows
            if sees_parties(principal, r.supplier_id, r.buyer_id)
        ]

    @strawberry.field(description="Order history with this supplier, newest first.")
    async def purchase_orders(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        status: Annotated[
            Annotated[PurchaseOrderStatus, strawberry.lazy(PURCHASING)] | None,
            strawberry.argument(description="Only orders in this status."),
        ] = None,
    ) -> Annotated[PurchaseOrderConnection, strawberry.lazy(PURCHASING)]:
        from server.purchasing.api import orders_connection

        return await orders_connection(info, first, after, supplier_id=self.id, status=status)

    @strawberry.field(description="On-time, fill, lead-time, discrepancy and price figures.")
    async def performance(
        self,
        info: Info,
        since: Annotated[
            date | None, strawberry.argument(description="First day (inclusive).")
        ] = None,
        until: Annotated[
            date | None, strawberry.argument(description="Day the period ends (exclusive).")
        ] = None,
    ) -> SupplierPerformance:
        return await _performance(info, self.id, since, until)


async def _performance(
    info: Info, supplier_id: int, since: date | None, until: date | None
) -> SupplierPerformance:
    result = await info.context.services.suppliers.performance(
        info.context.require_principal(), supplier_id, since=since, until=until
    )
    return SupplierPerformance.from_result(result)


@strawberry.type(description="A page of suppliers.")
class SupplierConnection(CountedConnection[Supplier]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Supplier organisations by name (a supplier sees only itself).")
    async def suppliers(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
    ) -> SupplierConnection:
        page = await info.context.services.suppliers.suppliers(
            info.context.require_principal(), first=first, after=after
        )
        return connection(SupplierConnection, page, Supplier.from_model)

    @strawberry.field(description="One supplier; null when the organisation is not a supplier.")
    async def supplier(
        self,
        info: Info,
        id: Annotated[
            relay.GlobalID,
            strawberry.argument(description="A Supplier or Organisation ID."),
        ],
    ) -> Supplier | None:
        node_id = str(organisation_id(id, "id"))
        return (await Supplier.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Performance of one supplier over a period.", metadata=weigh(100))
    async def supplier_performance(
        self,
        info: Info,
        supplier: Annotated[
            relay.GlobalID, strawberry.argument(description="A Supplier or Organisation ID.")
        ],
        since: Annotated[
            date | None, strawberry.argument(description="First day (inclusive).")
        ] = None,
        until: Annotated[
            date | None, strawberry.argument(description="Day the period ends (exclusive).")
        ] = None,
    ) -> SupplierPerformance:
        return await _performance(info, organisation_id(supplier, "supplier"), since, until)


# --- mutations ---------------------------------------------------------------------------------


@strawberry.input(description="Someone to call at a supplier.")
class SupplierContactInput:
    supplier: relay.GlobalID = strawberry.field(description="The supplier (or its organisation).")
    name: str = strawberry.field(description="The person's name.")
    role: str | None = strawberry.field(default=None, description="What they do, if known.")
    email: str | None = strawberry.field(default=None, description="E-mail address.")
    phone: str | None = strawberry.field(default=None, description="Phone number.")


@strawberry.input(description="Which contact to remove.")
class RemoveSupplierContactInput:
    id: relay.GlobalID = strawberry.field(description="The SupplierContact to remove.")


@strawberry.input(description="Price, lead time and minimum order for one product.")
class ContractLineInput:
    product: relay.GlobalID = strawberry.field(description="The product (once per contract).")
    unit_price: Decimal = strawberry.field(description="Price per pack, 0 or more.")
    lead_time_days: int = strawberry.field(description="Promised days to deliver (0..3650).")
    minimum_order_quantity: int = strawberry.field(
        default=1, description="Fewest packs an order line may ask for."
    )


@strawberry.input(description="A new contract between a buyer and a supplier.")
class CreateContractInput:
    supplier: relay.GlobalID = strawberry.field(description="The supplier (or its organisation).")
    reference: str = strawberry.field(description="The parties' reference, unique per supplier.")
    valid_from: date = strawberry.field(description="First day it applies (inclusive).")
    valid_until: date = strawberry.field(description="Last day it applies (inclusive).")
    lines: list[ContractLineInput] = strawberry.field(description="At least one product line.")
    buyer: relay.GlobalID | None = strawberry.field(
        default=None, description="Default: your organisation (only ADMIN may name another)."
    )


@strawberry.type(description="The contact added, or why not.")
class SupplierContactPayload:
    contact: SupplierContact | None = strawberry.field(
        default=None, description="The new contact; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The contact removed, or why not.")
class RemoveSupplierContactPayload:
    removed_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The removed contact's ID; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The contract created, or why not.")
class ContractPayload:
    contract: Contract | None = strawberry.field(
        default=None, description="The new contract; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Add someone to call at a supplier (SUPPLIER_MANAGE).")
    async def add_supplier_contact(
        self, info: Info, input: SupplierContactInput
    ) -> SupplierContactPayload:
        contact, errors = await attempt(
            info,
            lambda p: info.context.services.suppliers.add_contact(
                p,
                organisation_id(input.supplier, "supplier"),
                ContactFields(input.name, input.role, input.email, input.phone),
            ),
        )
        return SupplierContactPayload(
            contact=contact and SupplierContact.from_model(contact), errors=errors
        )

    @strawberry.mutation(description="Remove a supplier's contact (SUPPLIER_MANAGE).")
    async def remove_supplier_contact(
        self, info: Info, input: RemoveSupplierContactInput
    ) -> RemoveSupplierContactPayload:
        removed, errors = await attempt(
            info,
            lambda p: info.context.services.suppliers.remove_contact(
                p, decode_id(input.id, SupplierContact, "id")
            ),
        )
        return RemoveSupplierContactPayload(
            removed_id=input.id if removed is not None else None,
            errors=renamed(errors, contact="id"),
        )

    @strawberry.mutation(description="Agree prices, lead times and minimum orders with a supplier.")
    async def create_contract(self, info: Info, input: CreateContractInput) -> ContractPayload:
        contract, errors = await attempt(
            info,
            lambda p: info.context.services.suppliers.create_contract(
                p,
                supplier_id=organisation_id(input.supplier, "supplier"),
                buyer_id=optional_id(input.buyer, Organisation, "buyer"),
                reference=input.reference,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
                lines=[
                    ContractLineFields(
                        product_id=decode_id(x.product, Product, f"lines.{i}.product"),
                        unit_price=x.unit_price,
                        lead_time_days=x.lead_time_days,
                        minimum_order_quantity=x.minimum_order_quantity,
                    )
                    for i, x in enumerate(input.lines)
                ],
            ),
        )
        return ContractPayload(contract=contract and Contract.from_model(contract), errors=errors)
