"""Catalogue use cases: products with their GTINs, lots, and the all-or-nothing CSV import."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import COST_PRECISION, Lot, Product, ProductGtin, StorageCondition
from server.core import audit
from server.core.db import Database
from server.core.errors import DomainError, Duplicate, InvalidInput
from server.core.gs1 import normalize_gtin
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.validation import (
    LIKE_ESCAPE,
    ensure_unique,
    get_or_not_found,
    like_pattern,
    required_text,
)

ATC_PATTERN = re.compile(r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")
SCHEDULE_PATTERN = re.compile(r"^[A-Z0-9]{1,8}$")
BATCH_PATTERN = re.compile(r"^[\x21-\x7e]{1,20}$")  # GS1 AI (10): up to 20 printable chars


@dataclass
class ProductFields:
    """A product as typed by a person or read from a CSV row, before it is checked."""

    name: str
    strength: str
    dosage_form: str
    unit: str
    approval_number: str
    gtins: list[str] = field(default_factory=list)
    atc_code: str | None = None
    controlled_schedule: str | None = None
    storage: StorageCondition = StorageCondition.ROOM
    unit_cost: Decimal = Decimal("0")
    critical: bool = False


def clean_product_fields(fields: ProductFields) -> ProductFields:
    """Pure checks of one product; raises InvalidInput naming the field."""
    atc = (fields.atc_code or "").strip().upper() or None
    if atc and not ATC_PATTERN.match(atc):
        raise InvalidInput(f"{atc!r} is not an ATC code like N02BE01", field="atc_code")
    schedule = (fields.controlled_schedule or "").strip().upper() or None
    if schedule and not SCHEDULE_PATTERN.match(schedule):
        raise InvalidInput(f"{schedule!r} is not a schedule like II", field="controlled_schedule")
    if fields.unit_cost < 0:
        raise InvalidInput("unit cost cannot be negative", field="unit_cost")
    gtins = [normalize_gtin(g, field="gtins") for g in fields.gtins if g.strip()]
    if len(set(gtins)) != len(gtins):
        raise InvalidInput("the same GTIN is listed twice", field="gtins")
    return ProductFields(
        name=required_text(fields.name, "name"),
        strength=required_text(fields.strength, "strength", max_length=100),
        dosage_form=required_text(fields.dosage_form, "dosage_form", max_length=100),
        unit=required_text(fields.unit, "unit", max_length=50),
        approval_number=required_text(fields.approval_number, "approval_number", max_length=64),
        gtins=gtins,
        atc_code=atc,
        controlled_schedule=schedule,
        storage=StorageCondition(fields.storage),
        unit_cost=Decimal(fields.unit_cost),
        critical=bool(fields.critical),
    )


def product_snapshot(product: Product, gtins: Sequence[str]) -> dict[str, object]:
    return {
        "name": product.name,
        "strength": product.strength,
        "dosage_form": product.dosage_form,
        "unit": product.unit,
        "approval_number": product.approval_number,
        "atc_code": product.atc_code,
        "controlled_schedule": product.controlled_schedule,
        "storage": product.storage.value,
        "unit_cost": str(Decimal(product.unit_cost).quantize(COST_PRECISION)),
        "active": product.active,
        "critical": product.critical,
        "gtins": list(gtins),
    }


def clean_batch_number(batch_number: str) -> str:
    batch = (batch_number or "").strip()
    if not BATCH_PATTERN.match(batch):
        raise InvalidInput(
            "a batch number is 1-20 printable characters without spaces", field="batch_number"
        )
    return batch


@dataclass(frozen=True)
class ImportRowError:
    row: int
    field: str | None
    message: str


class CatalogImportError(DomainError):
    def __init__(self, errors: list[ImportRowError]) -> None:
        super().__init__(f"{len(errors)} invalid row(s); nothing was imported", field="csv")
        self.errors = errors


CSV_COLUMNS = (
    "name",
    "strength",
    "dosage_form",
    "unit",
    "atc_code",
    "approval_number",
    "gtins",
    "controlled_schedule",
    "storage",
    "unit_cost",
)


def parse_catalog_csv(text: str) -> tuple[list[tuple[int, ProductFields]], list[ImportRowError]]:
    """Read every row and collect every problem, so the user fixes the file in one pass."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [
        c
        for c in ("name", "strength", "dosage_form", "unit", "approval_number")
        if c not in (reader.fieldnames or [])
    ]
    if missing:
        return [], [ImportRowError(1, None, f"missing column(s): {', '.join(missing)}")]
    products: list[tuple[int, ProductFields]] = []
    errors: list[ImportRowError] = []
    seen_approvals: dict[str, int] = {}
    seen_gtins: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        try:
            try:
                cost = Decimal((row.get("unit_cost") or "0").strip() or "0")
            except InvalidOperation:
                raise InvalidInput(
                    f"{row.get('unit_cost')!r} is not a number", field="unit_cost"
                ) from None
            storage_text = (row.get("storage") or "ROOM").strip().upper() or "ROOM"
            if storage_text not in StorageCondition.__members__:
                raise InvalidInput(
                    f"storage must be one of {', '.join(StorageCondition)}", field="storage"
                )
            cleaned = clean_product_fields(
                ProductFields(
                    name=row.get("name") or "",
                    strength=row.get("strength") or "",
                    dosage_form=row.get("dosage_form") or "",
                    unit=row.get("unit") or "",
                    approval_number=row.get("approval_number") or "",
                    gtins=[g for g in (row.get("gtins") or "").split(";")],
                    atc_code=row.get("atc_code"),
                    controlled_schedule=row.get("controlled_schedule"),
                    storage=StorageCondition(storage_text),
                    unit_cost=cost,
                )
            )
        except InvalidInput as exc:
            errors.append(ImportRowError(line, exc.field, exc.message))
            continue
        if (first := seen_approvals.get(cleaned.approval_number)) is not None:
            errors.append(
                ImportRowError(line, "approval_number", f"approval number also on row {first}")
            )
            continue
        seen_approvals[cleaned.approval_number] = line
        for gtin in cleaned.gtins:
            if (first := seen_gtins.get(gtin)) is not None:
                errors.append(ImportRowError(line, "gtins", f"GTIN {gtin} also on row {first}"))
            seen_gtins.setdefault(gtin, line)
        products.append((line, cleaned))
    return products, errors


class CatalogService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_product(self, principal: Principal | None, fields: ProductFields) -> Product:
        if principal is not None:
            principal.require(Permission.CATALOG_MANAGE)
        cleaned = clean_product_fields(fields)
        async with self.db.write() as session:
            product = await self._insert_product(session, cleaned)
            await audit.record(
                session,
                principal,
                action="product.create",
                entity_type="Product",
                entity_id=product.id,
                after=product_snapshot(product, cleaned.gtins),
            )
            return product

    async def update_product(
        self,
        principal: Principal,
        product_id: int,
        fields: ProductFields,
        *,
        active: bool | None = None,
    ) -> Product:
        principal.require(Permission.CATALOG_MANAGE)
        cleaned = clean_product_fields(fields)
        async with self.db.write() as session:
            product = await get_or_not_found(session, Product, product_id, "id")
            before = product_snapshot(product, await self._gtins(session, product.id))
            await ensure_unique(
                session,
                Product.approval_number,
                cleaned.approval_number,
                "approval_number",
                exclude_id=product.id,
            )
            for gtin in cleaned.gtins:
                owner = (
                    await session.execute(
                        select(ProductGtin.product_id).where(ProductGtin.gtin == gtin)
                    )
                ).scalar()
                if owner is not None and owner != product.id:
                    raise Duplicate(f"GTIN {gtin} belongs to another product", field="gtins")
            for attribute in (
                "name",
                "strength",
                "dosage_form",
                "unit",
                "approval_number",
                "atc_code",
                "controlled_schedule",
                "storage",
                "unit_cost",
                "critical",
            ):
                setattr(product, attribute, getattr(cleaned, attribute))
            if active is not None:
                product.active = active
            await session.execute(delete(ProductGtin).where(ProductGtin.product_id == product.id))
            await session.flush()
            session.add_all([ProductGtin(product_id=product.id, gtin=g) for g in cleaned.gtins])
            await session.flush()
            await audit.record(
                session,
                principal,
                action="product.update",
                entity_type="Product",
                entity_id=product.id,
                before=before,
                after=product_snapshot(product, cleaned.gtins),
            )
            return product

    async def import_csv(self, principal: Principal | None, text: str) -> list[Product]:
        """All rows or none: any invalid row (or clash with the database) imports nothing."""
        if principal is not None:
            principal.require(Permission.CATALOG_MANAGE)
        rows, errors = parse_catalog_csv(text)
        async with self.db.write() as session:
            created: list[Product] = []
            for line, fields in rows:
                try:
                    product = await self._insert_product(session, fields)
                except DomainError as exc:
                    errors.append(ImportRowError(line, exc.field, exc.message))
                    continue
                created.append(product)
                await audit.record(
                    session,
                    principal,
                    action="product.import",
                    entity_type="Product",
                    entity_id=product.id,
                    after=product_snapshot(product, fields.gtins),
                )
            if errors:
                # Raising rolls back every insert above: the file imports whole or not at all.
                raise CatalogImportError(sorted(errors, key=lambda e: e.row))
            return created

    async def _insert_product(self, session: AsyncSession, fields: ProductFields) -> Product:
        await ensure_unique(
            session, Product.approval_number, fields.approval_number, "approval_number"
        )
        clash = (
            await session.execute(
                select(Product.id).where(
                    Product.name == fields.name,
                    Product.strength == fields.strength,
                    Product.dosage_form == fields.dosage_form,
                )
            )
        ).first()
        if clash:
            raise Duplicate(
                f"{fields.name} {fields.strength} {fields.dosage_form} already exists", field="name"
            )
        for gtin in fields.gtins:
            await ensure_unique(session, ProductGtin.gtin, gtin, "gtins")
        product = Product(
            name=fields.name,
            strength=fields.strength,
            dosage_form=fields.dosage_form,
            unit=fields.unit,
            approval_number=fields.approval_number,
            atc_code=fields.atc_code,
            controlled_schedule=fields.controlled_schedule,
            storage=fields.storage,
            unit_cost=fields.unit_cost,
            critical=fields.critical,
        )
        session.add(product)
        await session.flush()
        session.add_all([ProductGtin(product_id=product.id, gtin=g) for g in fields.gtins])
        await session.flush()
        return product

    # --- reads ----------------------------------------------------------------------------------

    async def products_page(
        self,
        principal: Principal,
        *,
        search: str | None,
        gtin: str | None,
        atc_code: str | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Product]:
        """Products by name substring, exact GTIN (any length, normalised) or ATC prefix."""
        principal.require(Permission.CATALOG_READ)
        stmt = select(Product)
        if search:
            stmt = stmt.where(Product.name.ilike(like_pattern(search), escape=LIKE_ESCAPE))
        if gtin:
            wanted = normalize_gtin(gtin)
            stmt = stmt.where(
                Product.id.in_(select(ProductGtin.product_id).where(ProductGtin.gtin == wanted))
            )
        if atc_code:
            stmt = stmt.where(
                Product.atc_code.startswith(atc_code.strip().upper(), autoescape=True)
            )
        return await keyset_page(
            self.db,
            stmt,
            keys=[Product.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r.id],
        )

    async def lots_page(
        self,
        principal: Principal,
        *,
        product_id: int | None,
        batch_number: str | None,
        expiring_before: date | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Lot]:
        """Lots in expiry order (earliest first), then by id."""
        principal.require(Permission.CATALOG_READ)
        stmt = select(Lot)
        if product_id is not None:
            stmt = stmt.where(Lot.product_id == product_id)
        if batch_number:
            stmt = stmt.where(Lot.batch_number == batch_number.strip())
        if expiring_before is not None:
            stmt = stmt.where(Lot.expiry_date < expiring_before)
        return await keyset_page(
            self.db,
            stmt,
            keys=[Lot.expiry_date, Lot.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r.expiry_date, r.id],
        )

    @staticmethod
    async def _gtins(session: AsyncSession, product_id: int) -> list[str]:
        return list(
            (
                await session.execute(
                    select(ProductGtin.gtin)
                    .where(ProductGtin.product_id == product_id)
                    .order_by(ProductGtin.id)
                )
            ).scalars()
        )


async def find_or_create_lot(
    session: AsyncSession,
    principal: Principal | None,
    *,
    product_id: int,
    batch_number: str,
    expiry_date: date,
    manufacturer_id: int | None = None,
) -> Lot:
    """The lot of (product, batch); a known batch with another expiry is refused, naming both."""
    batch = clean_batch_number(batch_number)
    await get_or_not_found(session, Product, product_id, "product")
    lot = (
        await session.execute(
            select(Lot).where(Lot.product_id == product_id, Lot.batch_number == batch)
        )
    ).scalar_one_or_none()
    if lot is not None:
        if lot.expiry_date != expiry_date:
            raise InvalidInput(
                f"batch {batch} is recorded with expiry {lot.expiry_date.isoformat()}, "
                f"not {expiry_date.isoformat()}",
                field="expiry_date",
            )
        return lot
    lot = Lot(
        product_id=product_id,
        batch_number=batch,
        expiry_date=expiry_date,
        manufacturer_id=manufacturer_id,
    )
    try:
        async with session.begin_nested():
            session.add(lot)
            await session.flush()
    except IntegrityError:
        # A concurrent receipt created the same batch first: use theirs, with the same checks.
        return await find_or_create_lot(
            session, principal, product_id=product_id, batch_number=batch, expiry_date=expiry_date
        )
    await audit.record(
        session,
        principal,
        action="lot.create",
        entity_type="Lot",
        entity_id=lot.id,
        after=audit.snapshot(lot, "product_id", "batch_number", "expiry_date"),
    )
    return lot
