"""Demand series at one granularity: periods, seasons, zero-filling and validation. No I/O.

A series is a sequence of `(period_start, quantity)` pairs at one granularity, where
`period_start` is the first day of its period: any day (DAILY), a Monday (WEEKLY, ISO weeks) or
the first of a month (MONTHLY). Periods without movements are simply absent from what the ledger
returns; `fill_periods` and `to_values` put them back as zeros, so the maths below always sees a
contiguous array, oldest first.

Cleaning rules, applied by `clean_quantities` (and therefore by every entry point):
- a negative quantity (more came back than went out) is demand 0: demand is never negative;
- NaN or infinity is refused (`RefusalReason.NOT_FINITE`): the ledger never produces one, so it
  means a bug upstream, and guessing a zero would silently bias the forecast;
- a magnitude above 2^53 is refused (`TOO_LARGE`): floats stop counting packs exactly there;
  anything below (2^31 included) is fine;
- booleans, strings and other non-numbers are refused (`NOT_A_NUMBER`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

import numpy as np

MAX_QUANTITY = float(2**53)


@dataclass(frozen=True)
class Seasonality:
    """The seasonal structure the maths needs; any season length works (4 for quarterly data).

    `season_length` is the main season (1: none). `extra_seasons` are longer ones that only
    MSTL models (daily data: the year). `periods_per_year` sets the obsolescence horizon.
    """

    season_length: int
    periods_per_year: int
    extra_seasons: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.season_length < 1 or self.periods_per_year < 1:
            raise ValueError("season_length and periods_per_year must be at least 1")
        if any(s <= self.season_length for s in self.extra_seasons):
            raise ValueError("extra seasons must be longer than the main season")


class Granularity(StrEnum):
    DAILY = "DAILY"  # season 7 (week); with two years of history also 365 (MSTL)
    WEEKLY = "WEEKLY"  # season 52 (year)
    MONTHLY = "MONTHLY"  # season 12 (year)

    @property
    def seasonality(self) -> Seasonality:
        return _SEASONALITY[self]

    def period_start(self, day: date) -> date:
        """The first day of the period that contains `day`."""
        if self is Granularity.DAILY:
            return day
        if self is Granularity.WEEKLY:
            return day - timedelta(days=day.weekday())
        return day.replace(day=1)

    def shift(self, start: date, periods: int) -> date:
        """The start of the period `periods` after (or before, if negative) the one at `start`."""
        if self is Granularity.DAILY:
            return start + timedelta(days=periods)
        if self is Granularity.WEEKLY:
            return start + timedelta(days=7 * periods)
        months = start.year * 12 + start.month - 1 + periods
        return date(months // 12, months % 12 + 1, 1)

    def periods_between(self, first: date, last: date) -> int:
        """How many periods from the one starting at `first` to the one starting at `last`."""
        if self is Granularity.DAILY:
            return (last - first).days
        if self is Granularity.WEEKLY:
            return (last - first).days // 7
        return (last.year - first.year) * 12 + last.month - first.month


_SEASONALITY = {
    Granularity.DAILY: Seasonality(7, 365, (365,)),
    Granularity.WEEKLY: Seasonality(52, 52),
    Granularity.MONTHLY: Seasonality(12, 12),
}


class RefusalReason(StrEnum):
    NOT_A_NUMBER = "NOT_A_NUMBER"
    NOT_FINITE = "NOT_FINITE"
    TOO_LARGE = "TOO_LARGE"
    MISALIGNED_PERIOD = "MISALIGNED_PERIOD"  # a date that does not start a period
    DUPLICATE_PERIOD = "DUPLICATE_PERIOD"
    AFTER_END = "AFTER_END"  # a period after the last period of the history
    EMPTY = "EMPTY"


class InvalidSeries(ValueError):
    """A series the engine will not forecast, with a typed reason."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def clean_quantities(values: Iterable[object]) -> np.ndarray:
    """Float array of demand: negatives become 0; non-numbers, NaN, ±inf and huge values are
    refused with `InvalidSeries` (see the module docstring)."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise InvalidSeries(RefusalReason.NOT_A_NUMBER, f"value {i} is {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise InvalidSeries(RefusalReason.NOT_FINITE, f"value {i} is {f}")
        if abs(f) > MAX_QUANTITY:
            raise InvalidSeries(RefusalReason.TOO_LARGE, f"value {i} exceeds 2^53")
        out.append(max(f, 0.0))
    return np.asarray(out, dtype=float)


def to_values(
    points: Sequence[tuple[date, float]], granularity: Granularity, last_period: date
) -> np.ndarray:
    """Contiguous demand array (oldest first) from the first given period to `last_period`
    inclusive, absent periods as 0. Refuses dates that do not start a period, a period given
    twice and periods after `last_period`; an empty series is refused too."""
    if not points:
        raise InvalidSeries(RefusalReason.EMPTY, "no periods")
    if granularity.period_start(last_period) != last_period:
        raise InvalidSeries(RefusalReason.MISALIGNED_PERIOD, f"{last_period} starts no period")
    by_period: dict[date, object] = {}
    for day, quantity in points:
        if granularity.period_start(day) != day:
            raise InvalidSeries(
                RefusalReason.MISALIGNED_PERIOD, f"{day} does not start a {granularity} period"
            )
        if day in by_period:
            raise InvalidSeries(RefusalReason.DUPLICATE_PERIOD, f"{day} appears twice")
        if day > last_period:
            raise InvalidSeries(RefusalReason.AFTER_END, f"{day} is after {last_period}")
        by_period[day] = quantity
    first = min(by_period)
    n = granularity.periods_between(first, last_period) + 1
    raw: list[object] = [0.0] * n
    for day, given in by_period.items():
        raw[granularity.periods_between(first, day)] = given
    return clean_quantities(raw)


def fill_periods(
    points: Sequence[tuple[date, float]],
    granularity: Granularity,
    first: date | None = None,
    last: date | None = None,
) -> list[tuple[date, float]]:
    """Every period from `first` to `last` (default: the series' own first and last; both are
    moved to the start of their period), with 0 where the series has none. Quantities given for
    days inside one period are summed, so raw daily movements can be passed at any granularity."""
    totals: dict[date, float] = {}
    for day, quantity in points:
        start = granularity.period_start(day)
        totals[start] = totals.get(start, 0.0) + float(quantity)
    if not totals and (first is None or last is None):
        return []
    start = granularity.period_start(first if first is not None else min(totals))
    end = granularity.period_start(last if last is not None else max(totals))
    filled = []
    while start <= end:
        filled.append((start, totals.get(start, 0.0)))
        start = granularity.shift(start, 1)
    return filled
