"""Demand forecasting maths: a weekly consumption series in, a forecast out. No I/O.

Why these models
----------------
Hospital consumption of one product comes in two shapes. Busy products (analgesics, IV fluids)
are used every week with noise around a slowly moving level: simple exponential smoothing fits
them, and AutoETS picks the error/trend form by information criterion, with a prediction
interval. Rarely used products (antidotes, orphan drugs) have many zero weeks: ETS would
forecast a meaningless fraction spread over every week, so Croston's method (optimised
smoothing) forecasts demand size and interval separately; it gives a mean rate and no interval.

The seasonal models are left out on purpose: 26 weeks (the default history) cannot estimate a
yearly season, and a weekly rhythm disappears inside a weekly total.

statsforecast is imported inside `forecast_series` because importing it costs seconds; the
server only pays that when someone first asks for a forecast (and in a worker thread).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

MIN_HISTORY_WEEKS = 8  # fewer points cannot tell a level from noise
INTERMITTENT_ZERO_SHARE = 0.30  # more zero weeks than this: Croston, not ETS
INTERVAL_LEVEL = 80  # percent; wide enough to plan with, narrow enough to mean something


class ForecastMethod(StrEnum):
    AUTO_ETS = "AUTO_ETS"
    CROSTON_OPTIMIZED = "CROSTON_OPTIMIZED"


class NoForecastReason(StrEnum):
    INSUFFICIENT_HISTORY = "INSUFFICIENT_HISTORY"
    NO_CONSUMPTION = "NO_CONSUMPTION"


@dataclass(frozen=True)
class WeekQuantity:
    """Net consumption (packs) in the ISO week starting on Monday `week_start`."""

    week_start: date
    quantity: int


@dataclass(frozen=True)
class ForecastPoint:
    week_start: date
    quantity: float
    low: float | None  # None when the model gives no interval (Croston)
    high: float | None


@dataclass(frozen=True)
class Forecast:
    """Either a method with points, or a reason why there is no forecast."""

    method: ForecastMethod | None
    points: list[ForecastPoint]
    reason: NoForecastReason | None = None
    level: int = INTERVAL_LEVEL


def monday_of(day: date) -> date:
    """The Monday that starts `day`'s ISO week."""
    return day - timedelta(days=day.weekday())


def is_intermittent(values: Sequence[float]) -> bool:
    """More than 30 % zero weeks: demand comes in rare lumps, not as a level with noise."""
    return bool(values) and sum(1 for v in values if v <= 0) / len(values) > INTERMITTENT_ZERO_SHARE


def choose_method(values: Sequence[float]) -> ForecastMethod:
    return ForecastMethod.CROSTON_OPTIMIZED if is_intermittent(values) else ForecastMethod.AUTO_ETS


def fill_weeks(points: Sequence[WeekQuantity], first: date, last: date) -> list[WeekQuantity]:
    """Every week from `first` to `last` (Mondays, inclusive); weeks without movements are 0."""
    by_week = {p.week_start: p.quantity for p in points}
    weeks = []
    week = monday_of(first)
    while week <= last:
        weeks.append(WeekQuantity(week, by_week.get(week, 0)))
        week += timedelta(days=7)
    return weeks


def forecast_consumption(history: Sequence[WeekQuantity], horizon: int) -> Forecast:
    """Forecast the `horizon` weeks after a contiguous weekly history (oldest first).

    A week where more came back than went out has negative net consumption; it is fitted as 0
    because demand cannot be negative and Croston needs non-negative data.
    """
    if len(history) < MIN_HISTORY_WEEKS:
        return Forecast(None, [], NoForecastReason.INSUFFICIENT_HISTORY)
    values = tuple(float(max(p.quantity, 0)) for p in history)
    if not any(values):
        return Forecast(None, [], NoForecastReason.NO_CONSUMPTION)
    method, mean, low, high = forecast_series(values, horizon)
    start = history[-1].week_start
    points = [
        ForecastPoint(
            start + timedelta(days=7 * (i + 1)),
            mean[i],
            None if low is None else low[i],
            None if high is None else high[i],
        )
        for i in range(horizon)
    ]
    return Forecast(method, points)


@functools.lru_cache(maxsize=512)
def forecast_series(
    values: tuple[float, ...], horizon: int
) -> tuple[ForecastMethod, tuple[float, ...], tuple[float, ...] | None, tuple[float, ...] | None]:
    """(method, mean, low, high) for `values`; cached on the series itself, so a repeated
    question about unchanged data costs nothing and can never be answered from stale data.
    Values are rounded to 2 decimals and clipped at 0 (packs are never negative)."""
    import numpy as np
    from statsforecast.models import AutoETS, CrostonOptimized

    y = np.asarray(values, dtype=float)
    method = choose_method(values)
    if method is ForecastMethod.CROSTON_OPTIMIZED:
        result = CrostonOptimized().forecast(y=y, h=horizon)
        return method, _clean(result["mean"]), None, None
    result = AutoETS(season_length=1).forecast(y=y, h=horizon, level=[INTERVAL_LEVEL])
    return (
        method,
        _clean(result["mean"]),
        _clean(result[f"lo-{INTERVAL_LEVEL}"]),
        _clean(result[f"hi-{INTERVAL_LEVEL}"]),
    )


def _clean(array: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(max(float(v), 0.0), 2) for v in array)
