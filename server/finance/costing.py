"""Pure money arithmetic: periods, the moving weighted average cost, projections. No I/O.

Weighted average cost (WAC), per product and organisation: every receipt re-blends the average,
`(quantity on hand x average + quantity received x price) / (quantity on hand + received)`;
every issue leaves at the average of the moment. It is what hospital pharmacy accounting uses,
it needs no cost layers per lot (lots of one product mix on shelves and in FEFO picks, so FIFO
layers would be a fiction to maintain), and it changes only at receipts, so an issue's value
never depends on which lot FEFO happened to pick.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

from server.core.errors import InvalidInput
from server.finance.models import CostSource, PeriodKind
from server.forecasting.series import Granularity
from server.inventory.models import MovementKind

CENT = Decimal("0.0001")  # amounts are kept to 4 places
UNIT = Decimal("0.000001")  # unit costs to 6
ZERO = Decimal(0)

# Inflows whose price is known at the moment they happen: they move the average.
PRICED_INFLOWS = frozenset({MovementKind.RECEIVE, MovementKind.PRODUCE})
# Spend: what a department consumed (dispensed or wasted), net of what patients brought back.
SPEND_KINDS = frozenset({MovementKind.DISPENSE, MovementKind.DISPOSE, MovementKind.RETURN})


def amount(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def unit_cost(value: Decimal) -> Decimal:
    return value.quantize(UNIT, rounding=ROUND_HALF_EVEN)


# --- periods -----------------------------------------------------------------------------------

_PERIOD = re.compile(r"^(\d{4})(?:-(?:(\d{2})|Q([1-4])))?$")


@dataclass(frozen=True)
class Period:
    """A calendar month, quarter or year (UTC): [start, end)."""

    kind: PeriodKind
    start: date
    end: date  # exclusive

    @property
    def label(self) -> str:
        if self.kind is PeriodKind.MONTH:
            return self.start.strftime("%Y-%m")
        if self.kind is PeriodKind.QUARTER:
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return str(self.start.year)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def contains(self, other: Period) -> bool:
        return self.start <= other.start and other.end <= self.end


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def parse_period(text: str, field: str = "period") -> Period:
    """ "2026-12" (a month), "2026-Q4" (a quarter) or "2026" (a year)."""
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"{text!r} is not a period: use YYYY-MM, YYYY-Qn or YYYY", field=field)
    year, month, quarter = int(match[1]), match[2], match[3]
    if not 1900 <= year <= 9998:
        raise InvalidInput(f"year {year} is out of range", field=field)
    if month is not None:
        if not 1 <= int(month) <= 12:
            raise InvalidInput(f"month {month} does not exist", field=field)
        start = date(year, int(month), 1)
        return Period(PeriodKind.MONTH, start, _add_months(start, 1))
    if quarter is not None:
        start = date(year, 3 * (int(quarter) - 1) + 1, 1)
        return Period(PeriodKind.QUARTER, start, _add_months(start, 3))
    return Period(PeriodKind.YEAR, date(year, 1, 1), date(year + 1, 1, 1))


def period_of(kind: PeriodKind, day: date) -> Period:
    """The period of `kind` containing `day`."""
    if kind is PeriodKind.MONTH:
        start = day.replace(day=1)
        return Period(kind, start, _add_months(start, 1))
    if kind is PeriodKind.QUARTER:
        start = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        return Period(kind, start, _add_months(start, 3))
    return Period(kind, date(day.year, 1, 1), date(day.year + 1, 1, 1))


# --- the moving average ------------------------------------------------------------------------


@dataclass
class Position:
    """Quantity and value of a product on hand in an organisation, as costing sees them."""

    quantity: int = 0
    value: Decimal = ZERO
    average: Decimal | None = None


@dataclass(frozen=True)
class CostItem:
    """One movement to value, in ledger order. `price` is the price paid (receipts) or the
    standard cost (production); `fallback` the catalogue's unit cost, used where no average
    exists yet."""

    kind: MovementKind
    organisation_id: int
    product_id: int
    lot_id: int
    quantity: int  # signed
    reference: str | None = None
    price: Decimal | None = None
    price_source: CostSource = CostSource.CATALOG
    fallback: Decimal = ZERO


@dataclass(frozen=True)
class Valuation:
    unit_cost: Decimal
    value: Decimal  # signed like the quantity
    source: CostSource


def value_movements(
    items: Sequence[CostItem],
    positions: dict[tuple[int, int], Position],
    transfers_out: dict[tuple[str, int], tuple[int, Decimal]],
) -> list[Valuation]:
    """Value `items` in order, updating `positions` ((organisation, product) -> Position) and
    `transfers_out` ((reference, lot) -> packs and value sent so far, positive).

    A transfer's receipt takes the unit cost its dispatch left with, so a transfer moves value
    from one shelf to another and creates or destroys none (also between organisations)."""
    out: list[Valuation] = []
    for item in items:
        position = positions.setdefault((item.organisation_id, item.product_id), Position())
        price, source = item.price, item.price_source
        if item.kind is MovementKind.TRANSFER_IN and item.reference is not None:
            sent = transfers_out.get((item.reference, item.lot_id))
            if sent is not None and sent[0] > 0:
                price, source = unit_cost(sent[1] / sent[0]), CostSource.TRANSFER
        priced = price is not None and (
            item.kind in PRICED_INFLOWS or source is CostSource.TRANSFER
        )
        if priced and item.quantity > 0:
            assert price is not None
            value = amount(price * item.quantity)
            before = position.quantity
            position.quantity += item.quantity
            if before <= 0 or position.average is None:
                position.average = price
                position.value = amount(price * position.quantity)
            else:
                position.value += value
                position.average = unit_cost(position.value / position.quantity)
            out.append(Valuation(unit_cost(price), value, source))
            continue
        unit = position.average if position.average is not None else unit_cost(item.fallback)
        value = amount(unit * item.quantity)
        position.quantity += item.quantity
        if position.quantity <= 0:
            position.value = amount(unit * position.quantity)
        else:
            position.value += value
        if position.average is None:
            position.average = unit
        out.append(Valuation(unit, value, CostSource.AVERAGE))
        if item.kind is MovementKind.TRANSFER_OUT and item.reference is not None:
            key = (item.reference, item.lot_id)
            packs, total = transfers_out.get(key, (0, ZERO))
            transfers_out[key] = (packs - item.quantity, total - value)
    return out


# --- reports -----------------------------------------------------------------------------------


class ForecastSource(StrEnum):
    """How a row's spend to period end was projected."""

    FORECAST = "FORECAST"
    RUN_RATE = "RUN_RATE"
    MIXED = "MIXED"
    PERIOD_CLOSED = "PERIOD_CLOSED"


def percent(spend: Decimal, budget: Decimal | None) -> Decimal | None:
    """Spend as a percentage of the budget, 2 places; None without a (positive) budget."""
    if budget is None or budget <= 0:
        return None
    return (spend * 100 / budget).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def run_rate(spend: Decimal, period: Period, today: date) -> Decimal:
    """Spend to period end at the pace so far: spend / elapsed days x remaining days."""
    elapsed = max(0, min((today - period.start).days + 1, period.days))
    remaining = max(0, (period.end - max(today + timedelta(days=1), period.start)).days)
    if elapsed == 0:
        return ZERO
    return amount(spend * remaining / elapsed)


def forecast_quantity(
    granularity: Granularity,
    first_period: date,
    points: Iterable[float],
    since: date,
    until: date,
) -> float | None:
    """Forecast packs in [since, until), each period's point prorated by the days it overlaps;
    None when the forecast's horizon does not reach `until`."""
    total = 0.0
    start = first_period
    reached = False
    for point in points:
        end = granularity.shift(start, 1)
        overlap = (min(end, until) - max(start, since)).days
        if overlap > 0:
            total += max(0.0, float(point)) * overlap / (end - start).days
        if end >= until:
            reached = True
            break
        start = end
    if since >= until:
        return 0.0
    return total if reached and first_period <= since else None


def check_currency(code: str) -> str:
    """An ISO 4217 alphabetic code: three capital letters."""
    if not re.fullmatch(r"[A-Z]{3}", code or ""):
        raise InvalidInput(f"{code!r} is not an ISO 4217 currency code", field="currency")
    return code
