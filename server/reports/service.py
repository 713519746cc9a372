"""Reports: read-only figures aggregated from the ledger. Knows nothing about GraphQL.

Expiry and waste report
-----------------------
"How much did we throw away, and what was it worth?" Two sources make up the answer, each row
carrying a month (YYYY-MM, UTC), a location, a reason code, a product, a quantity in packs
(always positive) and its value:

* **Disposals**: DISPOSE movements whose `occurred_at` falls in the half-open period
  [since 00:00 UTC, until 00:00 UTC), in the month they occurred. The reason code is the part of
  the stored reason before any ``":"`` (``"DAMAGED: dropped vial"`` -> ``DAMAGED``), upper-cased;
  a reason that is free text rather than a code (spaces, punctuation) or empty counts as
  ``OTHER``, so one typo cannot split the report into a row per sentence.
* **Expired on the shelf** (reason ``EXPIRED_ON_SHELF``): lots whose expiry date falls in
  [since, until) and that have already expired (expiry date before today, the same rule as the
  EXPIRED_ON_SHELF alert) while a location still holds a positive balance of them. The quantity
  is that *current* balance, in the month of the expiry date. It is a snapshot, not a
  reconstruction of the balance on the expiry day: stock that expired and was disposed of later
  is counted once, as a disposal, in the month it was disposed of. Negative balances (locations
  that allow them) are not waste and are ignored.

Value is quantity x the product's *current* unit cost: the catalogue keeps no cost history, so
a report rerun after a price change revalues the past. Values keep the cost's four decimals.
Only locations the principal sees are read; asking for one outside that scope is FORBIDDEN.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ColumnElement, SQLColumnExpression, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import COST_PRECISION, Lot, Product
from server.core.db import Database, midnight_utc, utcnow
from server.core.errors import InvalidInput, NotFound
from server.core.security import Permission, Principal
from server.inventory.models import Balance, Movement, MovementKind
from server.network.models import Location

EXPIRED_ON_SHELF = "EXPIRED_ON_SHELF"
OTHER = "OTHER"
MAX_PERIOD_YEARS = 3


class WasteGrouping(StrEnum):
    MONTH = "MONTH"
    LOCATION = "LOCATION"
    REASON = "REASON"
    PRODUCT = "PRODUCT"


DEFAULT_GROUPING: tuple[WasteGrouping, ...] = (
    WasteGrouping.MONTH,
    WasteGrouping.LOCATION,
    WasteGrouping.REASON,
)


@dataclass(frozen=True)
class WasteItem:
    """One aggregated fact from the database, before grouping: packs lost at a unit cost."""

    month: str
    location_id: int
    reason: str
    product_id: int
    quantity: int
    unit_cost: Decimal


@dataclass(frozen=True)
class WasteRow:
    """One line of the report; a dimension not grouped by is None."""

    month: str | None
    location_id: int | None
    reason: str | None
    product_id: int | None
    quantity: int
    value: Decimal


@dataclass(frozen=True)
class WasteTotals:
    quantity: int
    value: Decimal


@dataclass(frozen=True)
class WasteReport:
    since: date
    until: date
    group_by: tuple[WasteGrouping, ...]
    rows: list[WasteRow]
    totals: WasteTotals


# --- pure rules ------------------------------------------------------------------------------


def add_years(day: date, years: int) -> date:
    """The same calendar day `years` later; 29 February becomes 28 February in common years."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def validate_period(since: date, until: date) -> None:
    """A period runs forward and spans at most three years, so one report stays cheap."""
    if since > until:
        raise InvalidInput(
            f"since ({since.isoformat()}) is after until ({until.isoformat()})", field="since"
        )
    if until > add_years(since, MAX_PERIOD_YEARS):
        raise InvalidInput(
            f"a report covers at most {MAX_PERIOD_YEARS} years; "
            f"{since.isoformat()} to {until.isoformat()} is longer",
            field="until",
        )


def reason_code(reason: str | None) -> str:
    """The code before any ':' of a stored disposal reason; free text or nothing is OTHER."""
    code = (reason or "").split(":", 1)[0].strip().upper()
    if not code or not code.replace("_", "").isalnum() or not code.isascii():
        return OTHER
    return code


def month_of(day: date | datetime) -> str:
    """YYYY-MM; datetimes are taken in UTC, as the ledger stores them."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC) if day.tzinfo else day
    return f"{day.year:04d}-{day.month:02d}"


def normalise_grouping(group_by: Iterable[WasteGrouping] | None) -> tuple[WasteGrouping, ...]:
    """None means the default (month, location, reason); order kept, duplicates dropped."""
    if group_by is None:
        return DEFAULT_GROUPING
    return tuple(dict.fromkeys(WasteGrouping(g) for g in group_by))


_RowKey = tuple[str | None, int | None, str | None, int | None]


def _sort_key(row: WasteRow) -> tuple[str, int, str, int]:
    return (row.month or "", row.location_id or 0, row.reason or "", row.product_id or 0)


def group_waste(items: Iterable[WasteItem], group_by: Sequence[WasteGrouping]) -> list[WasteRow]:
    """Sum quantity and value per combination of the chosen dimensions; zero rows are dropped.

    Value is computed per item (each has its own unit cost) before summing, so grouping
    products together never averages their prices.
    """
    wanted = set(group_by)
    quantities: dict[_RowKey, int] = defaultdict(int)
    values: dict[_RowKey, Decimal] = defaultdict(Decimal)
    for item in items:
        key = (
            item.month if WasteGrouping.MONTH in wanted else None,
            item.location_id if WasteGrouping.LOCATION in wanted else None,
            item.reason if WasteGrouping.REASON in wanted else None,
            item.product_id if WasteGrouping.PRODUCT in wanted else None,
        )
        quantities[key] += item.quantity
        values[key] += Decimal(item.unit_cost) * item.quantity
    rows = [
        WasteRow(*key, quantity=quantity, value=values[key].quantize(COST_PRECISION))
        for key, quantity in quantities.items()
        if quantity
    ]
    return sorted(rows, key=_sort_key)


def total_of(rows: Iterable[WasteRow]) -> WasteTotals:
    quantity, value = 0, Decimal(0)
    for row in rows:
        quantity += row.quantity
        value += row.value
    return WasteTotals(quantity, value.quantize(COST_PRECISION))


# --- queries ---------------------------------------------------------------------------------


def _month_expr(dialect: str, column: SQLColumnExpression[datetime]) -> ColumnElement[str]:
    """YYYY-MM of a UTC timestamp in SQL, so the database groups before rows reach Python."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m", column)  # stored as naive UTC text
    return func.to_char(func.timezone("UTC", column), "YYYY-MM")


class ReportService:
    """Read-only report queries; each runs in one read transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def waste_report(
        self,
        principal: Principal,
        *,
        since: date,
        until: date,
        location_id: int | None = None,
        group_by: Iterable[WasteGrouping] | None = None,
        today: date | None = None,
    ) -> WasteReport:
        """Expiry and waste between `since` (inclusive) and `until` (exclusive); see module doc."""
        scope = principal.readable_locations(Permission.STOCK_READ, location_id)
        validate_period(since, until)
        grouping = normalise_grouping(group_by)
        today = today or utcnow().date()
        async with self.db.read() as session:
            if location_id is not None and await session.get(Location, location_id) is None:
                raise NotFound(f"location {location_id} does not exist", field="location")
            items = [
                *await self._disposals(session, since, until, scope),
                *await self._expired_on_shelf(session, since, min(until, today), scope),
            ]
        rows = group_waste(items, grouping)
        return WasteReport(since, until, grouping, rows, total_of(rows))

    async def _disposals(
        self, session: AsyncSession, since: date, until: date, scope: list[int] | None
    ) -> list[WasteItem]:
        M = Movement
        month = _month_expr(self.db.dialect, M.occurred_at).label("month")
        stmt = (
            select(
                month,
                M.location_id,
                M.reason,
                Lot.product_id,
                Product.unit_cost,
                func.sum(M.quantity),
            )
            .join(Lot, Lot.id == M.lot_id)
            .join(Product, Product.id == Lot.product_id)
            .where(
                M.kind == MovementKind.DISPOSE,
                M.occurred_at >= midnight_utc(since),
                M.occurred_at < midnight_utc(until),
            )
            .group_by(month, M.location_id, M.reason, Lot.product_id, Product.unit_cost)
        )
        if scope is not None:
            stmt = stmt.where(M.location_id.in_(scope))
        rows = (await session.execute(stmt)).all()
        return [
            WasteItem(
                month=str(m),
                location_id=loc,
                reason=reason_code(reason),
                product_id=product_id,
                quantity=-int(total),  # DISPOSE quantities are stored negative
                unit_cost=Decimal(cost),
            )
            for m, loc, reason, product_id, cost, total in rows
        ]

    async def _expired_on_shelf(
        self, session: AsyncSession, since: date, before: date, scope: list[int] | None
    ) -> list[WasteItem]:
        if before <= since:
            return []
        stmt = (
            select(
                Lot.expiry_date,
                Balance.location_id,
                Lot.product_id,
                Product.unit_cost,
                func.sum(Balance.quantity),
            )
            .join(Lot, Lot.id == Balance.lot_id)
            .join(Product, Product.id == Lot.product_id)
            .where(Balance.quantity > 0, Lot.expiry_date >= since, Lot.expiry_date < before)
            .group_by(Lot.expiry_date, Balance.location_id, Lot.product_id, Product.unit_cost)
        )
        if scope is not None:
            stmt = stmt.where(Balance.location_id.in_(scope))
        rows = (await session.execute(stmt)).all()
        return [
            WasteItem(
                month=month_of(expiry),
                location_id=loc,
                reason=EXPIRED_ON_SHELF,
                product_id=product_id,
                quantity=int(total),
                unit_cost=Decimal(cost),
            )
            for expiry, loc, product_id, cost, total in rows
        ]
