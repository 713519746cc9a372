"""Consumption history and forecasts, and the dashboard's stock figures. No GraphQL here.

Consumption
-----------
Net consumption of a product is what left to patients: DISPENSE packs minus RETURN packs
(patients bringing packs back), per ISO week (UTC, weeks start on Monday), at one location or
every location the principal sees. Transfers, disposals and counts are not consumption: they
move or lose stock, nobody used it. The current week is incomplete, so it is never fitted: the
history ends with the last complete week, and the forecast starts with the current week.

The history starts with the window (`history_weeks` back) or, for a product first stocked
later, with the week of its first movement in scope, so a new product does not look like one
with months of zero demand.

Stock figures
-------------
Value is quantity x the product's *current* unit cost (the catalogue keeps no cost history),
over positive balances only: a negative balance (a location that allows it) is a debt of
paperwork, not stock. Expired and quarantined packs still count: they are on the shelf, and
that is exactly the exposure the expiry figure shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Date,
    SQLColumnExpression,
    case,
    cast,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import COST_PRECISION, Lot, Product
from server.core.db import Database, midnight_utc, utcnow
from server.core.errors import Forbidden, InvalidInput, NotFound
from server.core.security import Permission, Principal
from server.forecasting.classify import DemandClass
from server.forecasting.engine import Refused, SeriesForecast, StoredForecast, forecast_many
from server.forecasting.forecast import (
    Forecast,
    WeekQuantity,
    fill_weeks,
    forecast_consumption,
    monday_of,
)
from server.forecasting.models import ForecastRun, StoredSeriesForecast
from server.forecasting.series import Granularity
from server.inventory.models import Balance, Movement, MovementKind
from server.network.models import Location, Organisation

MAX_HISTORY_WEEKS = 156  # three years, the same bound as the waste report
MAX_HORIZON_WEEKS = 52
MAX_RANKING = 50
CONSUMPTION_KINDS = (MovementKind.DISPENSE, MovementKind.RETURN)
# what the stored series read: consumption, and disposals reported beside it (never forecast:
# stock thrown away was not used, so it is not demand)
SERIES_KINDS = (*CONSUMPTION_KINDS, MovementKind.DISPOSE)

# WHO ATC anatomical main groups: the first letter of an ATC code.
ATC_GROUPS = {
    "A": "Alimentary tract and metabolism",
    "B": "Blood and blood forming organs",
    "C": "Cardiovascular system",
    "D": "Dermatologicals",
    "G": "Genito-urinary system and sex hormones",
    "H": "Systemic hormonal preparations",
    "J": "Antiinfectives for systemic use",
    "L": "Antineoplastic and immunomodulating agents",
    "M": "Musculo-skeletal system",
    "N": "Nervous system",
    "P": "Antiparasitic products",
    "R": "Respiratory system",
    "S": "Sensory organs",
    "V": "Various",
}
UNCLASSIFIED = "Unclassified"


class ExpiryBucket(StrEnum):
    EXPIRED = "EXPIRED"
    DAYS_0_30 = "DAYS_0_30"
    DAYS_31_60 = "DAYS_31_60"
    DAYS_61_90 = "DAYS_61_90"


EXPOSURE_DAYS = 90


@dataclass(frozen=True)
class ConsumptionForecast:
    product_id: int
    location_id: int | None
    last_complete_week: date
    history: list[WeekQuantity]
    forecast: Forecast


@dataclass(frozen=True)
class ProductConsumption:
    product_id: int
    quantity: int


@dataclass(frozen=True)
class Figure:
    """Packs and their value for one slice (a location, an ATC group, an expiry bucket)."""

    key: str | int | None
    packs: int
    value: Decimal


@dataclass(frozen=True)
class StockValue:
    packs: int
    value: Decimal
    by_location: list[Figure]
    by_atc_group: list[Figure]  # key: the ATC letter, None for products without an ATC code


@dataclass(frozen=True)
class ExpiryExposure:
    today: date
    buckets: list[Figure]  # key: ExpiryBucket, every bucket in order, empty ones included


# --- pure rules ------------------------------------------------------------------------------


def validate_weeks(history_weeks: int, horizon_weeks: int) -> None:
    if not 1 <= history_weeks <= MAX_HISTORY_WEEKS:
        raise InvalidInput(
            f"historyWeeks must be between 1 and {MAX_HISTORY_WEEKS}", field="history_weeks"
        )
    if not 1 <= horizon_weeks <= MAX_HORIZON_WEEKS:
        raise InvalidInput(
            f"horizonWeeks must be between 1 and {MAX_HORIZON_WEEKS}", field="horizon_weeks"
        )


def atc_group(atc_code: str | None) -> str | None:
    """The anatomical main group (first letter) of an ATC code; None when unknown."""
    letter = (atc_code or "")[:1].upper()
    return letter if letter in ATC_GROUPS else None


def expiry_bucket(expiry: date, today: date) -> ExpiryBucket | None:
    """Expired means before today (the EXPIRED_ON_SHELF rule); a lot expiring today has 0 days
    left. Beyond 90 days: no bucket."""
    days = (expiry - today).days
    if days < 0:
        return ExpiryBucket.EXPIRED
    if days <= 30:
        return ExpiryBucket.DAYS_0_30
    if days <= 60:
        return ExpiryBucket.DAYS_31_60
    if days <= EXPOSURE_DAYS:
        return ExpiryBucket.DAYS_61_90
    return None


def sum_figures(rows: Sequence[tuple[str | int | None, int, Decimal]]) -> list[Figure]:
    """(key, packs, unit cost) rows summed per key; value per row first, so costs never average."""
    packs: dict[str | int | None, int] = defaultdict(int)
    values: dict[str | int | None, Decimal] = defaultdict(Decimal)
    for key, quantity, cost in rows:
        packs[key] += quantity
        values[key] += Decimal(cost) * quantity
    return [Figure(k, packs[k], values[k].quantize(COST_PRECISION)) for k in packs]


# --- queries ---------------------------------------------------------------------------------


def _week_expr(dialect: str, column: SQLColumnExpression[datetime]) -> ColumnElement[date]:
    """Monday of a UTC timestamp's ISO week, computed by the database so it groups rows."""
    if dialect == "sqlite":
        # Stored as naive UTC text: back 6 days, then forward to the next Monday (or stay).
        return func.date(column, "-6 days", "weekday 1")
    return cast(func.date_trunc("week", func.timezone("UTC", column)), Date)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


async def _scope(
    session: AsyncSession, principal: Principal, location_id: int | None
) -> list[int] | None:
    """The locations a figure may read: the one asked for (if in scope), else the principal's
    scope (None: everywhere). Out of scope is FORBIDDEN; an unknown location NOT_FOUND."""
    scope = principal.readable_locations(Permission.STOCK_READ, location_id)
    if location_id is not None and await session.get(Location, location_id) is None:
        raise NotFound(f"location {location_id} does not exist", field="location")
    return scope


# --- stored forecasts: the background refresh and its readers ---------------------------------
#
# A series is net consumption (DISPENSE minus RETURN) of one product at one location, or summed
# over every location of one organisation, per period, up to the last complete period; the
# packs disposed of (DISPOSE) in each period are stored beside it, reported but not forecast.
# The refresh reads every series of a granularity in one grouped query, refits only those whose
# history changed since their stored forecast (same values, same first and last period, same
# engine settings: same hash), and stores the rest untouched. Requests only read what is stored.

HORIZONS = {Granularity.DAILY: 28, Granularity.WEEKLY: 13, Granularity.MONTHLY: 6}
HISTORY_PERIODS = {Granularity.DAILY: 1095, Granularity.WEEKLY: 156, Granularity.MONTHLY: 60}
# Part of every history hash: changing the engine's settings refits every series once.
ENGINE_VERSION = "engine-2"
STORED_LEVEL = 80


@dataclass(frozen=True)
class RefreshResult:
    granularity: Granularity
    last_period: date
    series_total: int
    refitted: int
    unchanged: int
    removed: int
    seconds: float


# (product, location, organisation): exactly one of the last two is set
SeriesKey = tuple[int, int | None, int | None]


@dataclass(frozen=True)
class SeriesHistory:
    start: date
    values: tuple[float, ...]  # consumption per period from `start`
    disposals: tuple[float, ...] = ()  # packs disposed of in the same periods (reported only)


def last_complete_period(granularity: Granularity, today: date) -> date:
    """The period before the one containing `today`: the current one is still filling up."""
    return granularity.shift(granularity.period_start(today), -1)


def history_hash(history: SeriesHistory, last_period: date, horizon: int) -> str:
    """What a stored forecast was computed from; equal hashes need no refit."""
    text = (
        f"{ENGINE_VERSION}|{horizon}|{history.start}|{last_period}|"
        + ",".join(repr(float(v)) for v in history.values)
        + "|"
        + ",".join(repr(float(v)) for v in history.disposals)
    )
    return hashlib.sha256(text.encode()).hexdigest()


def build_histories(
    rows: Sequence[tuple[SeriesKey, date, float, float]],
    granularity: Granularity,
    last_period: date,
) -> dict[SeriesKey, SeriesHistory]:
    """(series, period start, consumption, disposed) rows as contiguous histories from each
    series' first period with consumption to `last_period`; negative periods count as 0. A
    series that only ever disposed of stock has no history (nothing to forecast)."""
    by_series: dict[SeriesKey, dict[date, tuple[float, float]]] = defaultdict(dict)
    for key, period, quantity, disposed in rows:
        before, thrown = by_series[key].get(period, (0.0, 0.0))
        by_series[key][period] = (before + float(quantity), thrown + float(disposed))
    out: dict[SeriesKey, SeriesHistory] = {}
    for key, periods in by_series.items():
        demanded = [d for d, (q, _) in periods.items() if q > 0]
        if not demanded:
            continue
        start = min(demanded)
        n = granularity.periods_between(start, last_period) + 1
        values, disposals = [0.0] * n, [0.0] * n
        for d, (q, thrown) in periods.items():
            if d >= start:
                values[granularity.periods_between(start, d)] = max(q, 0.0)
                disposals[granularity.periods_between(start, d)] = max(thrown, 0.0)
        out[key] = SeriesHistory(start, tuple(values), tuple(disposals))
    return out


def series_rows(
    rows: Sequence[tuple[int, int, int, date, float, float]],
) -> list[tuple[SeriesKey, date, float, float]]:
    """(product, location, organisation, period, consumption, disposed) ledger sums as rows of
    each location's series and of its organisation's (the sum over its locations)."""
    out: list[tuple[SeriesKey, date, float, float]] = []
    for product, location, organisation, period, used, thrown in rows:
        out.append(((product, location, None), period, used, thrown))
        out.append(((product, None, organisation), period, used, thrown))
    return out


def _period_expr(
    dialect: str, granularity: Granularity, column: SQLColumnExpression[datetime]
) -> ColumnElement[date]:
    """The start of a UTC timestamp's period, computed by the database so it groups rows."""
    if granularity is Granularity.WEEKLY:
        return _week_expr(dialect, column)
    if dialect == "sqlite":
        if granularity is Granularity.DAILY:
            return func.date(column)
        return func.date(column, "start of month")
    utc = func.timezone("UTC", column)
    if granularity is Granularity.DAILY:
        return cast(utc, Date)
    return cast(func.date_trunc("month", utc), Date)


def _stored_view(row: StoredSeriesForecast) -> StoredForecast:
    return StoredForecast(
        points=tuple(row.points),
        lower=tuple(row.low_80),
        upper=tuple(row.high_80),
        level=STORED_LEVEL,
        model=row.model,
        demand_class=row.demand_class,
        mase=row.mase,
        computed_at=row.computed_at,
        granularity=Granularity(row.granularity),
    )


def _row_values(
    result: SeriesForecast, history: SeriesHistory, last_period: date, digest: str
) -> dict[str, object]:
    return {
        "history_hash": digest,
        "history_start": history.start,
        "last_period": last_period,
        "history": list(history.values),
        "disposals": list(history.disposals),
        "first_period": result.periods[0],
        "points": list(result.points),
        "low_80": list(result.low_80),
        "high_80": list(result.high_80),
        "low_95": list(result.low_95),
        "high_95": list(result.high_95),
        "model": result.model,
        "season_length": result.season_length,
        "mase": _finite(result.mase),
        "bias": _finite(result.bias),
        "baseline_model": result.baseline_model,
        "baseline_mase": _finite(result.baseline_mase),
        "baseline_bias": _finite(result.baseline_bias),
        "demand_class": result.demand_class.value,
        "adi": result.adi,
        "cv2": result.cv2,
        "history_length": result.history_length,
        "backtest_windows": result.backtest_windows,
        "interval_source": result.interval_source.value,
        "candidates": {
            n: [_finite(s.mase), _finite(s.bias), _finite(s.mae)]
            for n, s in result.candidates.items()
        },
        "errors": [list(r) for r in result.errors],
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class ForecastStore:
    """The refresh job and the readers of stored forecasts (mixed into ForecastingService)."""

    db: Database

    async def refresh(
        self,
        granularities: Sequence[Granularity] | None = None,
        *,
        today: date | None = None,
        jobs: int = 1,
    ) -> list[RefreshResult]:
        """Recompute the stored forecasts whose history changed; one run per granularity."""
        today = today or utcnow().date()
        return [
            await self._refresh_one(Granularity(g), today, jobs)
            for g in (granularities or list(Granularity))
        ]

    async def _refresh_one(self, g: Granularity, today: date, jobs: int) -> RefreshResult:
        started_at = utcnow()
        clock = time.perf_counter()
        last = last_complete_period(g, today)
        first = g.shift(last, -(HISTORY_PERIODS[g] - 1))
        horizon = HORIZONS[g]
        M = Movement
        period = _period_expr(self.db.dialect, g, M.occurred_at).label("period")
        disposal = M.kind == MovementKind.DISPOSE
        stmt = (
            select(
                Lot.product_id,
                M.location_id,
                Location.organisation_id,
                period,
                -func.sum(case((disposal, 0), else_=M.quantity)),
                -func.sum(case((disposal, M.quantity), else_=0)),
            )
            .join(Lot, Lot.id == M.lot_id)
            .join(Location, Location.id == M.location_id)
            .where(
                M.kind.in_(SERIES_KINDS),
                M.occurred_at >= midnight_utc(first),
                M.occurred_at < midnight_utc(g.shift(last, 1)),
            )
            .group_by(Lot.product_id, M.location_id, Location.organisation_id, period)
        )
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).all()
            stored = await self._stored_keys(session, g, with_errors=True)
        histories = build_histories(
            series_rows(
                [
                    (int(p), int(loc), int(org), _as_date(d), float(q), float(x))
                    for p, loc, org, d, q, x in rows
                ]
            ),
            g,
            last,
        )
        digests = {k: history_hash(h, last, horizon) for k, h in histories.items()}
        changed = [k for k, d in digests.items() if stored.get(k, (0, None))[1] != d]
        prior = {k: (c, e) for k, (_, h, c, e) in stored.items() if k in histories and e}
        results: dict[SeriesKey, SeriesForecast | Refused] = {}
        if changed:
            results = await asyncio.to_thread(
                _forecast_changed, {k: histories[k] for k in changed}, g, last, horizon, prior, jobs
            )
        async with self.db.write() as session:
            if self.db.dialect == "postgresql":
                # Several workers may refresh at once: one writes at a time, and a series
                # another worker already stored with this very history is left as it is.
                await session.execute(
                    select(func.pg_advisory_xact_lock(func.hashtext(f"apotheca-forecast-{g}")))
                )
            # what is stored now (another worker may have written since the read above)
            now_stored = await self._stored_keys(session, g, with_errors=False)
            changed = [k for k in changed if now_stored.get(k, (0, None))[1] != digests[k]]
            removed = [k for k in now_stored if k not in histories]
            run = ForecastRun(
                granularity=g.value,
                last_period=last,
                horizon=horizon,
                started_at=started_at,
                series_total=len(histories),
                series_refitted=len(changed),
                series_removed=len(removed),
                seconds=0.0,
            )
            session.add(run)
            await session.flush()
            gone = [now_stored[k][0] for k in changed + removed if k in now_stored]
            for chunk in range(0, len(gone), 500):
                await session.execute(
                    delete(StoredSeriesForecast).where(
                        StoredSeriesForecast.id.in_(gone[chunk : chunk + 500])
                    )
                )
            now, keep = utcnow(), set(changed)
            fresh = [
                {
                    "product_id": k[0],
                    "location_id": k[1],
                    "organisation_id": k[2],
                    "granularity": g.value,
                    "run_id": run.id,
                    "computed_at": now,
                    **_row_values(r, histories[k], last, digests[k]),
                }
                for k, r in results.items()
                if isinstance(r, SeriesForecast) and k in keep
            ]
            for chunk in range(0, len(fresh), 500):
                await session.execute(insert(StoredSeriesForecast), fresh[chunk : chunk + 500])
            run.seconds = time.perf_counter() - clock
            run.finished_at = utcnow()
        return RefreshResult(
            g,
            last,
            len(histories),
            len(changed),
            len(histories) - len(changed),
            len(removed),
            run.seconds,
        )

    async def stored_forecast(
        self,
        session: AsyncSession,
        product_id: int,
        location_id: int,
        granularity: Granularity,
    ) -> StoredForecast | None:
        """The latest stored forecast of one series, inside the caller's transaction; None when
        the refresh has not computed one (no consumption there yet, or not run yet)."""
        row = await self._stored_row(session, product_id, location_id, Granularity(granularity))
        return _stored_view(row) if row is not None else None

    async def forecast(
        self,
        principal: Principal,
        *,
        product_id: int,
        location_id: int | None = None,
        organisation_id: int | None = None,
        granularity: Granularity,
        horizon: int | None = None,
    ) -> StoredSeriesForecast | None:
        """A stored forecast of a location (for someone who may read stock there) or of an
        organisation (the sum over its locations: for someone who may read stock at every one
        of them), FORBIDDEN otherwise, cut to `horizon` periods (default: all stored); None
        until the refresh has computed one."""
        g = Granularity(granularity)
        horizon = HORIZONS[g] if horizon is None else horizon
        if not 1 <= horizon <= HORIZONS[g]:
            raise InvalidInput(
                f"horizon must be between 1 and {HORIZONS[g]} for {g.value}", field="horizon"
            )
        if (location_id is None) == (organisation_id is None):
            raise InvalidInput("give either a location or an organisation", field="location")
        async with self.db.read() as session:
            if location_id is not None:
                await _scope(session, principal, location_id)
            else:
                await _organisation_scope(session, principal, organisation_id)
            if await session.get(Product, product_id) is None:
                raise NotFound(f"product {product_id} does not exist", field="product")
            row = await self._stored_row(
                session, product_id, location_id, g, organisation_id=organisation_id
            )
            if row is None:
                return None
            session.expunge(row)
        for name in ("points", "low_80", "high_80", "low_95", "high_95"):
            setattr(row, name, list(getattr(row, name))[:horizon])
        return row

    async def latest_runs(self) -> list[ForecastRun]:
        """The newest run of each granularity (for operators and the CLI)."""
        async with self.db.read() as session:
            newest = (
                select(func.max(ForecastRun.id)).group_by(ForecastRun.granularity).scalar_subquery()
            )
            rows = await session.execute(select(ForecastRun).where(ForecastRun.id.in_(newest)))
            return list(rows.scalars())

    async def _stored_row(
        self,
        session: AsyncSession,
        product_id: int,
        location_id: int | None,
        g: Granularity,
        *,
        organisation_id: int | None = None,
    ) -> StoredSeriesForecast | None:
        F = StoredSeriesForecast
        stmt = select(F).where(F.product_id == product_id, F.granularity == g.value)
        if location_id is not None:
            stmt = stmt.where(F.location_id == location_id)
        else:
            stmt = stmt.where(F.organisation_id == organisation_id, F.location_id.is_(None))
        return (await session.execute(stmt)).scalar_one_or_none()

    async def _stored_keys(
        self, session: AsyncSession, g: Granularity, *, with_errors: bool
    ) -> dict[SeriesKey, tuple[int, str, str, list[list[float]] | None]]:
        """Every stored series of a granularity: key -> (row id, history hash, demand class,
        backtest errors when asked for)."""
        F = StoredSeriesForecast
        stmt = select(
            F.id, F.product_id, F.location_id, F.organisation_id, F.history_hash, F.demand_class
        ).where(F.granularity == g.value)
        out: dict[SeriesKey, tuple[int, str, str, list[list[float]] | None]] = {
            (p, loc, org): (i, h, c, None) for i, p, loc, org, h, c in await session.execute(stmt)
        }
        if with_errors:
            errors = select(F.id, F.errors).where(F.granularity == g.value)
            by_id = dict((i, e) for i, e in await session.execute(errors))
            out = {k: (i, h, c, by_id.get(i)) for k, (i, h, c, _) in out.items()}
        return out


async def _organisation_scope(
    session: AsyncSession, principal: Principal, organisation_id: int | None
) -> None:
    """An organisation's totals are for someone who reads stock at every one of its locations
    (FORBIDDEN otherwise: a ward nurse does not see the whole hospital); NOT_FOUND if unknown."""
    principal.require(Permission.STOCK_READ)
    if organisation_id is None or await session.get(Organisation, organisation_id) is None:
        raise NotFound(f"organisation {organisation_id} does not exist", field="organisation")
    if principal.location_ids is None:
        return
    locations = await session.scalars(
        select(Location.id).where(Location.organisation_id == organisation_id)
    )
    if not set(locations) <= principal.location_ids:
        raise Forbidden(
            f"some of organisation {organisation_id}'s locations are outside "
            f"{principal.username}'s scope",
            field="organisation",
        )


def _forecast_changed(
    histories: dict[SeriesKey, SeriesHistory],
    g: Granularity,
    last: date,
    horizon: int,
    prior: Mapping[SeriesKey, tuple[str, list[list[float]] | None]],
    jobs: int,
) -> dict[SeriesKey, SeriesForecast | Refused]:
    """The engine over the changed series (in a worker thread: it is CPU-bound); the stored
    errors of the unchanged ones join the interval calibration."""
    series = {
        k: [(g.shift(h.start, i), q) for i, q in enumerate(h.values) if q] or [(h.start, 0.0)]
        for k, h in histories.items()
    }
    return forecast_many(
        series,
        g,
        horizon,
        last_period=last,
        jobs=jobs,
        prior_errors={
            k: (DemandClass(c), np.asarray(e, dtype=float)) for k, (c, e) in prior.items()
        },
    )


class ForecastingService(ForecastStore):
    """Figures and stored forecasts; each public method runs in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def consumption_forecast(
        self,
        principal: Principal,
        *,
        product_id: int,
        location_id: int | None = None,
        history_weeks: int = 26,
        horizon_weeks: int = 8,
        today: date | None = None,
    ) -> ConsumptionForecast:
        """Weekly net consumption up to the last complete week, and its forecast."""
        validate_weeks(history_weeks, horizon_weeks)
        this_week = monday_of(today or utcnow().date())
        last_complete = this_week - timedelta(days=7)
        window_start = this_week - timedelta(days=7 * history_weeks)
        async with self.db.read() as session:
            scope = await _scope(session, principal, location_id)
            if await session.get(Product, product_id) is None:
                raise NotFound(f"product {product_id} does not exist", field="product")
            first_seen = await self._first_movement(session, product_id, scope)
            points = await self._weekly(session, product_id, scope, window_start, this_week)
        if first_seen is None or monday_of(first_seen) > last_complete:
            history: list[WeekQuantity] = []
        else:
            start = max(window_start, monday_of(first_seen))
            history = fill_weeks(points, start, last_complete)
        # statsforecast is CPU-bound (and slow to import): keep it off the event loop.
        forecast = await asyncio.to_thread(forecast_consumption, history, horizon_weeks)
        return ConsumptionForecast(product_id, location_id, last_complete, history, forecast)

    async def top_consumption(
        self,
        principal: Principal,
        *,
        location_id: int | None = None,
        weeks: int = 8,
        first: int = 10,
        today: date | None = None,
    ) -> list[ProductConsumption]:
        """The products with the most net consumption over the last `weeks` complete weeks."""
        if not 1 <= weeks <= MAX_HISTORY_WEEKS:
            raise InvalidInput(f"weeks must be between 1 and {MAX_HISTORY_WEEKS}", field="weeks")
        if not 1 <= first <= MAX_RANKING:
            raise InvalidInput(f"first must be between 1 and {MAX_RANKING}", field="first")
        this_week = monday_of(today or utcnow().date())
        M = Movement
        used = (-func.sum(M.quantity)).label("used")
        stmt = (
            select(Lot.product_id, used)
            .join(Lot, Lot.id == M.lot_id)
            .where(
                M.kind.in_(CONSUMPTION_KINDS),
                M.occurred_at >= midnight_utc(this_week - timedelta(days=7 * weeks)),
                M.occurred_at < midnight_utc(this_week),
            )
            .group_by(Lot.product_id)
            .having(-func.sum(M.quantity) > 0)
            .order_by(used.desc(), Lot.product_id)
            .limit(first)
        )
        async with self.db.read() as session:
            scope = await _scope(session, principal, location_id)
            if scope is not None:
                stmt = stmt.where(M.location_id.in_(scope))
            rows = (await session.execute(stmt)).all()
        return [ProductConsumption(int(p), int(q)) for p, q in rows]

    async def stock_value(
        self, principal: Principal, *, location_id: int | None = None
    ) -> StockValue:
        """Value of positive stock on hand at current unit cost, by location and ATC group."""
        stmt = (
            select(
                Balance.location_id,
                Product.atc_code,
                Product.unit_cost,
                func.sum(Balance.quantity),
            )
            .join(Lot, Lot.id == Balance.lot_id)
            .join(Product, Product.id == Lot.product_id)
            .where(Balance.quantity > 0)
            .group_by(Balance.location_id, Product.id, Product.atc_code, Product.unit_cost)
        )
        async with self.db.read() as session:
            scope = await _scope(session, principal, location_id)
            if scope is not None:
                stmt = stmt.where(Balance.location_id.in_(scope))
            rows = (await session.execute(stmt)).all()
        by_location = sum_figures([(loc, int(q), Decimal(c)) for loc, _atc, c, q in rows])
        by_group = sum_figures([(atc_group(atc), int(q), Decimal(c)) for _l, atc, c, q in rows])
        return StockValue(
            packs=sum(f.packs for f in by_location),
            value=sum((f.value for f in by_location), Decimal(0)).quantize(COST_PRECISION),
            by_location=sorted(by_location, key=lambda f: (-f.value, f.key)),
            by_atc_group=sorted(by_group, key=lambda f: (-f.value, f.key or "~")),
        )

    async def expiry_exposure(
        self, principal: Principal, *, location_id: int | None = None, today: date | None = None
    ) -> ExpiryExposure:
        """Packs and value expired on the shelf, and expiring in 0-30, 31-60 and 61-90 days."""
        today = today or utcnow().date()
        stmt = (
            select(Lot.expiry_date, Product.unit_cost, func.sum(Balance.quantity))
            .join(Lot, Lot.id == Balance.lot_id)
            .join(Product, Product.id == Lot.product_id)
            .where(
                Balance.quantity > 0,
                Lot.expiry_date <= today + timedelta(days=EXPOSURE_DAYS),
            )
            .group_by(Lot.expiry_date, Product.id, Product.unit_cost)
        )
        async with self.db.read() as session:
            scope = await _scope(session, principal, location_id)
            if scope is not None:
                stmt = stmt.where(Balance.location_id.in_(scope))
            rows = (await session.execute(stmt)).all()
        found = {
            f.key: f
            for f in sum_figures(
                [(expiry_bucket(_as_date(e), today), int(q), Decimal(c)) for e, c, q in rows]
            )
        }
        zero = Decimal(0).quantize(COST_PRECISION)
        buckets = [found.get(b, Figure(b, 0, zero)) for b in ExpiryBucket]
        return ExpiryExposure(today, buckets)

    # --- helpers -------------------------------------------------------------------------------

    async def _first_movement(
        self, session: AsyncSession, product_id: int, scope: list[int] | None
    ) -> date | None:
        """The day this product first moved (any kind) where we look: its history starts there."""
        stmt = (
            select(func.min(Movement.occurred_at))
            .join(Lot, Lot.id == Movement.lot_id)
            .where(Lot.product_id == product_id)
        )
        if scope is not None:
            stmt = stmt.where(Movement.location_id.in_(scope))
        first = (await session.execute(stmt)).scalar()
        if first is None:
            return None
        if isinstance(first, str):  # SQLite aggregates lose the column type
            first = datetime.fromisoformat(first)
        return first.astimezone(UTC).date() if first.tzinfo else first.date()

    async def _weekly(
        self,
        session: AsyncSession,
        product_id: int,
        scope: list[int] | None,
        since: date,
        before: date,
    ) -> list[WeekQuantity]:
        M = Movement
        week = _week_expr(self.db.dialect, M.occurred_at).label("week")
        stmt = (
            select(week, func.sum(M.quantity))
            .join(Lot, Lot.id == M.lot_id)
            .where(
                Lot.product_id == product_id,
                M.kind.in_(CONSUMPTION_KINDS),
                M.occurred_at >= midnight_utc(since),
                M.occurred_at < midnight_utc(before),
            )
            .group_by(week)
        )
        if scope is not None:
            stmt = stmt.where(M.location_id.in_(scope))
        rows = (await session.execute(stmt)).all()
        # DISPENSE is stored negative and RETURN positive: consumption is minus their sum.
        return [WeekQuantity(_as_date(w), -int(total)) for w, total in rows]
