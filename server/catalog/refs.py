"""Products as the ledger's hooks need them, from the process's reference cache.

Every movement is valued (finance) and checked against the controlled-drug rules, and both
used to read the product row again in the writing transaction. Products are reference data
(migration 0014's triggers advance `reference_version` whenever one changes), so a write reads
each product once per process and version, not once per movement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product
from server.core.cache import cached_many


@dataclass(frozen=True)
class ProductRef:
    """The product fields a ledger hook reads (immutable, so a cached copy is safe to share)."""

    id: int
    name: str
    strength: str
    approval_number: str
    controlled_schedule: str | None
    unit_cost: Decimal


_PRODUCTS = select(
    Product.id,
    Product.name,
    Product.strength,
    Product.approval_number,
    Product.controlled_schedule,
    Product.unit_cost,
).where(Product.id.in_(bindparam("ids", expanding=True)))


async def _load_products(session: AsyncSession, ids: set[int]) -> dict[int, ProductRef]:
    rows = await session.execute(_PRODUCTS, {"ids": list(ids)})
    return {
        row.id: ProductRef(
            row.id,
            row.name,
            row.strength,
            row.approval_number,
            row.controlled_schedule,
            Decimal(row.unit_cost if row.unit_cost is not None else 0),
        )
        for row in rows
    }


async def products_of(session: AsyncSession, ids: Iterable[int]) -> dict[int, ProductRef]:
    """The named products as this transaction sees them (absent ids stay absent), from the
    cache when its reference version is current."""
    wanted = set(ids)
    if not wanted:
        return {}
    return await cached_many(session, "catalog.products", wanted, _load_products)


# Lots are read in every write (not reference data: their status changes with recalls). A
# statement selecting LOT_COLUMNS first, run on the driver (server.core.db.run), gives rows
# that `lot_from_row` turns into Lots outside the session: the ledger and scans only read them.
LOT_COLUMNS = tuple(Lot.__table__.c)
_LOT_FIELDS = tuple(column.key for column in LOT_COLUMNS)


def lot_from_row(row: Sequence[Any]) -> Lot:
    """A Lot from a row whose first columns are LOT_COLUMNS (loading the session's own
    instance costs more than the query)."""
    return Lot(**dict(zip(_LOT_FIELDS, row, strict=False)))
