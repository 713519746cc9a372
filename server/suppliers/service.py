"""Supplier use cases: the directory of supplying organisations, their contacts, the contracts
buyers agree with them, and supplier performance computed from orders and shipments.

Every write is one transaction that also writes the audit trail. Contacts and contracts are
managed by SUPPLIER_MANAGE; reads need PROCUREMENT_READ, and a supplier sees only its own record.
The contract queries here (`contract_terms`, `current_contract`, `supplier_org`) are shared by
purchasing, which prices its order lines from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Product
from server.core import audit
from server.core.db import Database, midnight_utc, utcnow
from server.core.errors import Duplicate, Forbidden, InvalidInput, NotFound
from server.core.events import EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal, Role
from server.core.steps import took_step
from server.core.validation import optional_text, required_text
from server.network.models import Organisation
from server.purchasing.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus
from server.shipments.models import Discrepancy, Shipment, ShipmentStatus
from server.suppliers import rules
from server.suppliers.models import Contract, ContractLine, SupplierContact
from server.suppliers.parties import (
    SUPPLIER_KINDS,
    require_supplier_visible,
    sees_everything,
    sees_parties,
    supplier_only,
)

CONTACT_COLUMNS = ("organisation_id", "name", "role", "email", "phone")


def require_contract_visible(principal: Principal, contract: Contract) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if not sees_parties(principal, contract.supplier_id, contract.buyer_id):
        raise Forbidden("that contract belongs to other organisations", field="contract")


# --- commands and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ContactFields:
    name: str
    role: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class ContractLineFields:
    product_id: int
    unit_price: Decimal
    lead_time_days: int
    minimum_order_quantity: int = 1


@dataclass(frozen=True)
class PerformanceReport:
    supplier_id: int
    since: date | None
    until: date | None
    buyer_id: int | None  # None: every buyer the principal may see
    figures: rules.Performance


# --- shared queries (purchasing and shipments use them too) -------------------------------------


async def lock_row(session: AsyncSession, model: type[Any], pk: int, field: str, label: str) -> Any:
    """The row, locked for this transaction (SELECT ... FOR UPDATE; SQLite has one writer)."""
    row = (
        await session.execute(select(model).where(model.id == pk).with_for_update())
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{label} {pk} does not exist", field=field)
    return row


async def supplier_org(session: AsyncSession, supplier_id: int) -> Organisation:
    """The organisation, which must be of a supplying kind."""
    org = await session.get(Organisation, supplier_id)
    if org is None:
        raise NotFound(f"organisation {supplier_id} does not exist", field="supplier")
    if org.kind not in SUPPLIER_KINDS:
        raise InvalidInput(
            f"{org.name} is a {org.kind.value.lower()}, not a supplier (manufacturer, "
            "wholesaler or supplier)",
            field="supplier",
        )
    return org


async def require_products(
    session: AsyncSession, product_ids: Iterable[int], *, field: str = "product"
) -> None:
    ids = set(product_ids)
    if not ids:
        return
    found = set(
        (await session.execute(select(Product.id).where(Product.id.in_(ids)))).scalars().all()
    )
    missing = sorted(ids - found)
    if missing:
        raise NotFound(f"product {missing[0]} does not exist", field=field)


async def contract_terms(
    session: AsyncSession, supplier_id: int, buyer_id: int | None, product_ids: Iterable[int]
) -> list[rules.ContractTerm]:
    """Contract lines between the parties for these products (any validity)."""
    ids = sorted(set(product_ids))
    if not ids:
        return []
    stmt = (
        select(Contract, ContractLine)
        .join(ContractLine, ContractLine.contract_id == Contract.id)
        .where(Contract.supplier_id == supplier_id, ContractLine.product_id.in_(ids))
    )
    if buyer_id is not None:
        stmt = stmt.where(Contract.buyer_id == buyer_id)
    return [
        rules.ContractTerm(
            contract_id=c.id,
            product_id=x.product_id,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            unit_price=x.unit_price,
            lead_time_days=x.lead_time_days,
            minimum_order_quantity=x.minimum_order_quantity,
        )
        for c, x in (await session.execute(stmt)).all()
    ]


async def current_contract(
    session: AsyncSession, supplier_id: int, buyer_id: int, on: date
) -> int | None:
    """The most recent contract between the parties valid on `on`, if any."""
    return (
        await session.execute(
            select(Contract.id)
            .where(
                Contract.supplier_id == supplier_id,
                Contract.buyer_id == buyer_id,
                Contract.valid_from <= on,
                Contract.valid_until >= on,
            )
            .order_by(Contract.valid_from.desc(), Contract.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


class SupplierService:
    def __init__(self, db: Database, bus: EventBus, max_page_size: int = 100) -> None:
        self.db = db
        self.bus = bus
        self.max_page_size = max_page_size

    # --- the directory ------------------------------------------------------------------------

    async def suppliers(self, principal: Principal, *, first: int, after: str | None) -> Page[Any]:
        """Supplying organisations by name; a supplier sees only itself."""
        principal.require(Permission.PROCUREMENT_READ)
        stmt = select(Organisation).where(Organisation.kind.in_(SUPPLIER_KINDS))
        if supplier_only(principal):
            stmt = stmt.where(Organisation.id == (principal.organisation_id or 0))
        return await keyset_page(
            self.db,
            stmt,
            keys=[Organisation.name, Organisation.id],
            first=first,
            after=after,
            max_page_size=self.max_page_size,
            key_of=lambda r: [r.name, r.id],
        )

    # --- contacts -----------------------------------------------------------------------------

    async def add_contact(
        self, principal: Principal, supplier_id: int, fields: ContactFields
    ) -> SupplierContact:
        principal.require(Permission.SUPPLIER_MANAGE)
        email = optional_text(fields.email, "email", max_length=200)
        if email is not None and ("@" not in email or " " in email):
            raise InvalidInput(f"{email!r} is not an e-mail address", field="email")
        contact = SupplierContact(
            organisation_id=supplier_id,
            name=required_text(fields.name, "name"),
            role=optional_text(fields.role, "role", max_length=100),
            email=email,
            phone=optional_text(fields.phone, "phone", max_length=50),
        )
        async with self.db.write() as session:
            await supplier_org(session, supplier_id)
            session.add(contact)
            await session.flush()
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    "supplier.contact_add",
                    "SupplierContact",
                    contact.id,
                    after=audit.snapshot(contact, *CONTACT_COLUMNS),
                ),
            )
        return contact

    async def remove_contact(self, principal: Principal, contact_id: int) -> SupplierContact:
        principal.require(Permission.SUPPLIER_MANAGE)
        async with self.db.write() as session:
            contact = await lock_row(session, SupplierContact, contact_id, "contact", "contact")
            before = audit.snapshot(contact, *CONTACT_COLUMNS)
            await session.delete(contact)
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    "supplier.contact_remove", "SupplierContact", contact_id, before=before
                ),
            )
        return contact

    # --- contracts ----------------------------------------------------------------------------

    async def create_contract(
        self,
        principal: Principal,
        *,
        supplier_id: int,
        reference: str,
        valid_from: date,
        valid_until: date,
        lines: Sequence[ContractLineFields],
        buyer_id: int | None = None,
    ) -> Contract:
        """A buyer's agreement with a supplier: prices, lead times and minimum order per product."""
        principal.require(Permission.SUPPLIER_MANAGE)
        reference = required_text(reference, "reference", max_length=64)
        buyer_id = buyer_id if buyer_id is not None else principal.organisation_id
        if buyer_id is None:
            raise InvalidInput("name the buyer organisation", field="buyer")
        if buyer_id != principal.organisation_id and Role.ADMIN not in principal.roles:
            raise Forbidden("you may agree contracts only for your own organisation")
        if valid_until < valid_from:
            raise InvalidInput(
                f"validUntil {valid_until} is before validFrom {valid_from}", field="valid_until"
            )
        if not lines:
            raise InvalidInput("a contract needs at least one product line", field="lines")
        seen: set[int] = set()
        clean: list[ContractLine] = []
        for i, line in enumerate(lines):
            if line.product_id in seen:
                raise Duplicate(
                    f"product {line.product_id} appears twice", field=f"lines.{i}.product"
                )
            seen.add(line.product_id)
            if not 0 <= line.lead_time_days <= 3650:
                raise InvalidInput(
                    "lead time must be between 0 and 3650 days", field=f"lines.{i}.lead_time_days"
                )
            clean.append(
                ContractLine(
                    product_id=line.product_id,
                    unit_price=rules.check_price(line.unit_price, f"lines.{i}.unit_price"),
                    lead_time_days=line.lead_time_days,
                    minimum_order_quantity=rules.check_quantity(
                        line.minimum_order_quantity, f"lines.{i}.minimum_order_quantity"
                    ),
                )
            )
        async with self.db.write() as session:
            await supplier_org(session, supplier_id)
            if await session.get(Organisation, buyer_id) is None:
                raise NotFound(f"organisation {buyer_id} does not exist", field="buyer")
            if buyer_id == supplier_id:
                raise InvalidInput("a supplier cannot contract with itself", field="buyer")
            await require_products(session, seen)
            taken = (
                await session.execute(
                    select(Contract.id).where(
                        Contract.supplier_id == supplier_id, Contract.reference == reference
                    )
                )
            ).first()
            if taken is not None:
                raise Duplicate(
                    f"this supplier already has a contract {reference!r}", field="reference"
                )
            contract = Contract(
                supplier_id=supplier_id,
                buyer_id=buyer_id,
                reference=reference,
                valid_from=valid_from,
                valid_until=valid_until,
                created_at=utcnow(),
            )
            session.add(contract)
            await session.flush()
            for contract_line in clean:
                contract_line.contract_id = contract.id
            session.add_all(clean)
            await session.flush()
            after = {
                **audit.snapshot(
                    contract, "supplier_id", "buyer_id", "reference", "valid_from", "valid_until"
                ),
                "lines": [
                    audit.snapshot(
                        x, "product_id", "unit_price", "lead_time_days", "minimum_order_quantity"
                    )
                    for x in clean
                ],
            }
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry("contract.create", "Contract", contract.id, after=after),
            )
        return contract

    # --- performance --------------------------------------------------------------------------

    async def performance(
        self,
        principal: Principal,
        supplier_id: int,
        *,
        since: date | None = None,
        until: date | None = None,
    ) -> PerformanceReport:
        """On-time, fill, lead time, discrepancy and price figures from orders and shipments.

        Shipments count in the period they were received in; order lines in the period their
        order was submitted in (since inclusive, until exclusive). A buyer sees its own orders'
        figures; the supplier itself and ADMIN/AUDITOR see all buyers.
        """
        require_supplier_visible(principal, supplier_id)
        if since is not None and until is not None and until <= since:
            raise InvalidInput("until must be after since", field="until")
        buyer_id = (
            None
            if sees_everything(principal) or principal.organisation_id == supplier_id
            else principal.organisation_id
        )
        async with self.db.read() as session:
            await supplier_org(session, supplier_id)
            shipments = await _received_facts(session, supplier_id, buyer_id, since, until)
            lines = await _line_facts(session, supplier_id, buyer_id, since, until)
        return PerformanceReport(
            supplier_id, since, until, buyer_id, rules.performance(shipments, lines)
        )


async def _received_facts(
    session: AsyncSession,
    supplier_id: int,
    buyer_id: int | None,
    since: date | None,
    until: date | None,
) -> list[rules.ReceivedShipmentFact]:
    S, P = Shipment, PurchaseOrder
    stmt = (
        select(S.id, S.received_at, P.submitted_at, P.expected_delivery_date)
        .join(P, P.id == S.purchase_order_id)
        .where(S.sender_id == supplier_id, S.status == ShipmentStatus.RECEIVED)
    )
    if buyer_id is not None:
        stmt = stmt.where(P.buyer_id == buyer_id)
    if since is not None:
        stmt = stmt.where(S.received_at >= midnight_utc(since))
    if until is not None:
        stmt = stmt.where(S.received_at < midnight_utc(until))
    rows = (await session.execute(stmt)).all()
    counts: dict[int | None, int] = {}  # discrepancies of these shipments: never None
    if rows:
        counts = dict(
            (
                await session.execute(
                    select(Discrepancy.shipment_id, func.count(Discrepancy.id))
                    .where(Discrepancy.shipment_id.in_([r[0] for r in rows]))
                    .group_by(Discrepancy.shipment_id)
                )
            ).all()
        )
    facts = []
    for shipment_id, received_at, submitted_at, expected in rows:
        assert received_at is not None  # a RECEIVED shipment has its received_at
        facts.append(
            rules.ReceivedShipmentFact(
                received_at=received_at,
                order_submitted_at=submitted_at,
                order_expected_date=expected,
                discrepancies=counts.get(shipment_id, 0),
            )
        )
    return facts


async def _line_facts(
    session: AsyncSession,
    supplier_id: int,
    buyer_id: int | None,
    since: date | None,
    until: date | None,
) -> list[rules.OrderLineFact]:
    P, L = PurchaseOrder, PurchaseOrderLine
    stmt = (
        select(
            P.buyer_id,
            P.submitted_at,
            L.product_id,
            L.quantity,
            L.received_quantity,
            L.unit_price,
        )
        .join(L, L.order_id == P.id)
        .where(
            P.supplier_id == supplier_id,
            P.submitted_at.is_not(None),
            P.status.not_in([PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.CANCELLED]),
        )
    )
    if buyer_id is not None:
        stmt = stmt.where(P.buyer_id == buyer_id)
    if since is not None:
        stmt = stmt.where(P.submitted_at >= midnight_utc(since))
    if until is not None:
        stmt = stmt.where(P.submitted_at < midnight_utc(until))
    rows = (await session.execute(stmt)).all()
    terms_by_buyer: dict[int, list[rules.ContractTerm]] = {}
    for buyer in {r[0] for r in rows}:
        terms_by_buyer[buyer] = await contract_terms(
            session, supplier_id, buyer, [r[2] for r in rows if r[0] == buyer]
        )
    facts = []
    for buyer, submitted_at, product_id, quantity, received, price in rows:
        assert submitted_at is not None  # the query keeps submitted orders only
        term = rules.valid_term(terms_by_buyer[buyer], product_id, submitted_at.date())
        facts.append(
            rules.OrderLineFact(
                ordered=quantity,
                received=received,
                unit_price=price,
                contract_price=term.unit_price if term else None,
            )
        )
    return facts
