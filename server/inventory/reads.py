"""Stock reads (no writes, no GraphQL): stock levels and movement history in a principal's
scope, paged, and the rows behind one stock event for the `stockChanged` subscription."""

from __future__ import annotations

import functools
from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Bundle

from server.catalog.models import Lot, Product
from server.core.events import SharedLookups
from server.core.pagination import Page, Reader, keyset_page
from server.core.security import Permission, Principal
from server.inventory.models import Balance, Movement, MovementKind
from server.network.models import Location


@functools.cache
def columns_of(model: type[Any]) -> Bundle[Any]:
    """Every mapped column of `model`, selected as one plain row named after the model whose
    attributes are the model's (`row.Lot.batch_number`): what the API types copy, read
    without the identity map and instance state an ORM entity costs per row."""
    mapper = sa_inspect(model)
    return Bundle(model.__name__, *(getattr(model, a.key) for a in mapper.column_attrs))


def readable_locations(principal: Principal, location_id: int | None) -> list[int] | None:
    """The locations a stock read may cover: the one asked for (if in scope), else the whole
    scope; None means every location."""
    return principal.readable_locations(Permission.STOCK_READ, location_id)


async def stock_page(
    db: Reader,
    principal: Principal,
    *,
    location_id: int | None,
    product_id: int | None,
    expiring_before: date | None,
    include_empty: bool,
    first: int,
    after: str | None,
    max_page_size: int,
    with_related: Sequence[type[Lot] | type[Product] | type[Location]] = (),
) -> Page[Row[Any]]:
    """Balances per (location, lot) in scope, earliest expiry first.

    Each row is the balance's columns (by attribute name) and its lot's `expiry_date`, as a
    plain row: a page only copies them, so no ORM entity is built per balance. The columns of
    each model of `with_related` (the balance's Lot, its Product, its Location) come in the
    same statement, as plain rows too: `row.Lot.batch_number`, `row.Product.name`,
    `row.Location.code`. A page's relations need no query of their own, and no ORM entity.
    """
    stmt = select(
        *Balance.__table__.columns, Lot.expiry_date, *(columns_of(m) for m in with_related)
    ).join(Lot, Lot.id == Balance.lot_id)
    if Product in with_related:
        stmt = stmt.join(Product, Product.id == Lot.product_id)
    if Location in with_related:
        stmt = stmt.join(Location, Location.id == Balance.location_id)
    if (locations := readable_locations(principal, location_id)) is not None:
        stmt = stmt.where(Balance.location_id.in_(locations))
    if product_id is not None:
        stmt = stmt.where(Lot.product_id == product_id)
    if expiring_before is not None:
        stmt = stmt.where(Lot.expiry_date < expiring_before)
    if not include_empty:
        stmt = stmt.where(Balance.quantity != 0)
    return await keyset_page(
        db,
        stmt,
        keys=[Lot.expiry_date, Balance.id],
        first=first,
        after=after,
        max_page_size=max_page_size,
        key_of=lambda r: [r.expiry_date, r.id],
    )


async def movements_page(
    db: Reader,
    principal: Principal,
    *,
    location_id: int | None,
    product_id: int | None,
    lot_id: int | None,
    kinds: Sequence[MovementKind],
    since: datetime | None,
    until: datetime | None,
    first: int,
    after: str | None,
    max_page_size: int,
) -> Page[Movement]:
    """Movements in scope, newest first; `until` is exclusive."""
    stmt = select(Movement)
    if (locations := readable_locations(principal, location_id)) is not None:
        stmt = stmt.where(Movement.location_id.in_(locations))
    if product_id is not None:
        stmt = stmt.where(Movement.lot_id.in_(select(Lot.id).where(Lot.product_id == product_id)))
    if lot_id is not None:
        stmt = stmt.where(Movement.lot_id == lot_id)
    if kinds:
        stmt = stmt.where(Movement.kind.in_(kinds))
    if since is not None:
        stmt = stmt.where(Movement.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(Movement.occurred_at < until)
    return await keyset_page(
        db,
        stmt,
        keys=[Movement.id],
        first=first,
        after=after,
        max_page_size=max_page_size,
        descending=True,
        key_of=lambda r: [r.id],
    )


@dataclass(frozen=True)
class StockChangeRows:
    """What one stock event is about, as rows."""

    quantity: int
    location: Location
    lot: Lot
    product: Product
    movement: Movement


_stock_lookups = SharedLookups()


def wants_stock_event(
    principal: Principal,
    payload: dict[str, Any],
    *,
    locations: Set[int],
    products: Set[int],
) -> bool:
    """Whether a subscriber (watching `locations`/`products`, everything in scope when
    empty) receives this stock event."""
    if locations and payload["location_id"] not in locations:
        return False
    if products and payload["product_id"] not in products:
        return False
    return principal.sees_location(payload["location_id"])


async def stock_change(db: Reader, payload: dict[str, Any]) -> StockChangeRows:
    """The rows behind one stock event, read once however many subscribers receive it."""

    async def load() -> StockChangeRows:
        async with db.read() as session:
            location = await session.get(Location, payload["location_id"])
            lot = await session.get(Lot, payload["lot_id"])
            product = await session.get(Product, payload["product_id"])
            movement = await session.get(Movement, payload["movement_id"])
        return StockChangeRows(payload["quantity"], location, lot, product, movement)

    return await _stock_lookups.get(payload["movement_id"], load)
