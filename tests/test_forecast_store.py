"""Stored forecasts on both databases: the background refresh (incremental), the replenishment
contract `stored_forecast`, the `forecast` query with its scope, and `apotheca forecast-refresh`.

The ledger is written (backdated) through the real ledger service: 60 weeks of dispensing of one
product at WARD-A (with returns) and of another, intermittently, at WARD-B.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from server.core.db import utcnow
from server.forecasting.engine import StoredForecast
from server.forecasting.models import ForecastRun, StoredSeriesForecast
from server.forecasting.series import Granularity
from server.forecasting.service import HORIZONS, last_complete_period
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from tests.conftest import Demo, first_product_id, gid
from tests.test_cli import run_cli

WEEKS = 60
D, R = MovementKind.DISPENSE, MovementKind.RETURN


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


@dataclass
class Ledger:
    steady: int  # product dispensed weekly at WARD-A
    sparse: int  # product dispensed one week in three at WARD-B
    lot_a: int
    today: date
    weekly_a: dict[date, float]  # expected net consumption per complete week at WARD-A
    returns_a: dict[date, float]  # packs returned per week at WARD-A (on their own day)


async def _record(demo: Demo, requests: list[MovementRequest]) -> list[int]:
    result = await demo.services.ledger.record(
        demo.principals["admin"], requests, operation="test.forecast_store"
    )
    return [m.lot_id for m in result.movements]


def _out(demo: Demo, kind: MovementKind, ward: str, lot: int, qty: int, when: datetime):
    return MovementRequest(kind, demo.locations[ward], qty, lot_id=lot, occurred_at=when)


@pytest.fixture
async def ledger(demo: Demo) -> Ledger:
    steady = await first_product_id(demo.services)
    sparse = await first_product_id(demo.services, offset=1)
    today = utcnow().date()
    this_week = Granularity.WEEKLY.period_start(today)
    start = this_week - timedelta(weeks=WEEKS)
    far = today + timedelta(days=900)
    lots = []
    for ward, product, batch in (("WARD-A", steady, "FS-A"), ("WARD-B", sparse, "FS-B")):
        receive = MovementRequest(
            MovementKind.RECEIVE,
            demo.locations[ward],
            20000,
            new_lot=NewLot(product, batch, far),
            occurred_at=at(start - timedelta(days=2)),
        )
        lots += await _record(demo, [receive])
    lot_a, lot_b = lots
    requests, weekly_a, returns_a = [], {}, {}
    for i in range(WEEKS):
        week = start + timedelta(weeks=i)
        used, back = 40 + (i * 7) % 11, i % 3
        requests += [
            _out(demo, D, "WARD-A", lot_a, used - 10, at(week)),
            _out(demo, D, "WARD-A", lot_a, 10, at(week + timedelta(days=6), 23)),
        ]
        if back:
            requests.append(_out(demo, R, "WARD-A", lot_a, back, at(week + timedelta(days=2))))
        if i % 3 == 0:
            requests.append(_out(demo, D, "WARD-B", lot_b, 2 + i % 4, at(week + timedelta(1))))
        weekly_a[week], returns_a[week] = float(used - back), float(back)
    # the current, incomplete week does not count, nor does a disposal
    requests.append(_out(demo, D, "WARD-A", lot_a, 500, at(this_week, 0)))
    requests.append(
        MovementRequest(
            MovementKind.DISPOSE,
            demo.locations["WARD-A"],
            9,
            lot_id=lot_a,
            reason="DAMAGED",
            occurred_at=at(start + timedelta(days=9)),
        )
    )
    await _record(demo, requests)
    return Ledger(steady, sparse, lot_a, today, weekly_a, returns_a)


async def test_refresh_stores_forecasts_and_skips_unchanged_series(
    demo: Demo, ledger: Ledger
) -> None:
    service = demo.services.forecasting
    (first,) = await service.refresh([Granularity.WEEKLY], today=ledger.today)
    # two location series and the hospital's two (each the sum over its locations)
    assert (first.series_total, first.refitted, first.unchanged) == (4, 4, 0)
    assert first.last_period == last_complete_period(Granularity.WEEKLY, ledger.today)
    async with demo.services.db.read() as session:
        stored = await service.stored_forecast(
            session, ledger.steady, demo.locations["WARD-A"], Granularity.WEEKLY
        )
        row = (
            await session.execute(
                select(StoredSeriesForecast).where(
                    StoredSeriesForecast.product_id == ledger.steady,
                    StoredSeriesForecast.location_id == demo.locations["WARD-A"],
                )
            )
        ).scalar_one()
        sparse = await service.stored_forecast(
            session, ledger.sparse, demo.locations["WARD-B"], Granularity.WEEKLY
        )
        nothing = await service.stored_forecast(
            session, ledger.sparse, demo.locations["WARD-A"], Granularity.WEEKLY
        )
    # the contract replenishment reads
    assert isinstance(stored, StoredForecast)
    assert stored.level == 80 and stored.granularity is Granularity.WEEKLY
    assert (
        len(stored.points) == len(stored.lower) == len(stored.upper) == HORIZONS[stored.granularity]
    )
    assert all(
        0 <= lo <= p <= hi
        for lo, p, hi in zip(stored.lower, stored.points, stored.upper, strict=True)
    )
    assert stored.demand_class == "SMOOTH" and stored.mase is not None
    assert 30 < stored.points[0] < 60  # weekly use is 38-50 packs
    assert nothing is None
    assert sparse is not None and sparse.demand_class in ("INTERMITTENT", "LUMPY")
    # the history is the ledger's weekly net consumption, this week excluded
    history = {Granularity.WEEKLY.shift(row.history_start, i): q for i, q in enumerate(row.history)}
    assert history == ledger.weekly_a
    assert row.first_period == Granularity.WEEKLY.shift(row.last_period, 1)

    # nothing changed: nothing refitted, the stored row untouched
    (again,) = await service.refresh([Granularity.WEEKLY], today=ledger.today)
    assert (again.series_total, again.refitted, again.unchanged) == (4, 0, 4)
    async with demo.services.db.read() as session:
        same = await service.stored_forecast(
            session, ledger.steady, demo.locations["WARD-A"], Granularity.WEEKLY
        )
        runs = (await session.execute(select(func.count(ForecastRun.id)))).scalar_one()
    assert same is not None and same.computed_at == stored.computed_at
    assert runs == 2

    # a late-recorded dispense in a past week changes that series and its organisation's only
    past = Granularity.WEEKLY.shift(row.last_period, -3)
    await _record(demo, [_out(demo, D, "WARD-A", ledger.lot_a, 5, at(past + timedelta(days=1)))])
    (late,) = await service.refresh([Granularity.WEEKLY], today=ledger.today)
    assert (late.refitted, late.unchanged) == (2, 2)
    async with demo.services.db.read() as session:
        fresh = await service.stored_forecast(
            session, ledger.steady, demo.locations["WARD-A"], Granularity.WEEKLY
        )
    assert fresh is not None and fresh.computed_at > stored.computed_at


async def test_every_granularity_refreshes(demo: Demo, ledger: Ledger) -> None:
    results = await demo.services.forecasting.refresh(today=ledger.today)
    assert [r.granularity for r in results] == list(Granularity)
    assert all(r.series_total == 4 and r.refitted == 4 for r in results)
    async with demo.services.db.read() as session:
        for g in Granularity:
            stored = await demo.services.forecasting.stored_forecast(
                session, ledger.steady, demo.locations["WARD-A"], g
            )
            assert stored is not None and len(stored.points) == HORIZONS[g], g
    daily = await _row(demo, ledger.steady, "WARD-A", Granularity.DAILY)
    monthly = await _row(demo, ledger.steady, "WARD-A", Granularity.MONTHLY)
    by_week: dict[date, float] = {}
    for i, q in enumerate(daily.history):
        week = Granularity.WEEKLY.period_start(Granularity.DAILY.shift(daily.history_start, i))
        by_week[week] = by_week.get(week, 0.0) + q
    # a day with only a return nets below 0, which counts as no demand (never negative)
    this_week = Granularity.WEEKLY.period_start(ledger.today)
    assert by_week.pop(this_week, 500.0) == 500.0  # days of the current week are complete
    assert by_week == {w: q + ledger.returns_a[w] for w, q in ledger.weekly_a.items()}
    # 60 weeks of days: the most windows (6); 14 months: too short for the fewest monthly
    # backtest windows (3): the mean, no MASE
    assert daily.backtest_windows == 6
    assert monthly.model == "HistoricAverage" and monthly.mase is None


async def _row(demo: Demo, product: int, ward: str, g: Granularity) -> StoredSeriesForecast:
    async with demo.services.db.read() as session:
        return (
            await session.execute(
                select(StoredSeriesForecast).where(
                    StoredSeriesForecast.product_id == product,
                    StoredSeriesForecast.location_id == demo.locations[ward],
                    StoredSeriesForecast.granularity == g.value,
                )
            )
        ).scalar_one()


FORECAST = """
query($product: ID!, $location: ID!, $granularity: ForecastGranularity!, $horizon: Int) {
  forecast(product: $product, location: $location, granularity: $granularity,
           horizon: $horizon) {
    granularity model seasonLength mase bias baselineModel baselineMase baselineBias
    demandClass adi cv2 historyLength backtestWindows lastPeriod computedAt
    history { periodStart quantity }
    points { periodStart quantity low80 high80 low95 high95 }
    candidates { model mase bias }
    product { id } location { code }
  }
}
"""


async def test_forecast_query_reads_storage_within_scope(
    demo: Demo, ledger: Ledger, as_user: Any
) -> None:
    admin = await as_user("admin")
    variables = {
        "product": gid("Product", ledger.steady),
        "location": gid("Location", demo.locations["WARD-A"]),
        "granularity": "WEEKLY",
    }
    # before any refresh: null, and no model is fitted inside the request
    assert (await admin.raw(FORECAST, **variables))["data"] == {"forecast": None}
    await demo.services.forecasting.refresh([Granularity.WEEKLY], today=ledger.today)

    body = await admin.raw(FORECAST, **variables, horizon=4)
    assert "errors" not in body, body
    f = body["data"]["forecast"]
    assert f["granularity"] == "WEEKLY" and f["demandClass"] == "SMOOTH"
    # 60 weeks: windows while training keeps 3/4 of the 3-window one (33 weeks): 4
    assert f["location"] == {"code": "WARD-A"} and f["backtestWindows"] == 4
    assert f["baselineModel"] == "SEASONAL_NAIVE" or f["baselineModel"] == "NAIVE"
    assert f["model"] in {c["model"] for c in f["candidates"]}
    assert len(f["points"]) == 4 and f["historyLength"] == WEEKS
    assert [p["periodStart"] for p in f["points"]][:1] == [
        (date.fromisoformat(f["lastPeriod"]) + timedelta(weeks=1)).isoformat()
    ]
    for p in f["points"]:
        assert 0 <= p["low95"] <= p["low80"] <= p["quantity"] <= p["high80"] <= p["high95"]
    history = {date.fromisoformat(h["periodStart"]): h["quantity"] for h in f["history"]}
    assert history == ledger.weekly_a

    # a nurse of WARD-A reads WARD-A, not WARD-B
    nurse = await as_user("nurse")
    assert (await nurse.raw(FORECAST, **variables))["data"]["forecast"]["model"] == f["model"]
    ward_b = {
        **variables,
        "product": gid("Product", ledger.sparse),
        "location": gid("Location", demo.locations["WARD-B"]),
    }
    denied = await nurse.raw(FORECAST, **ward_b)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN", denied
    assert (await admin.raw(FORECAST, **ward_b))["data"]["forecast"] is not None
    too_far = await admin.raw(FORECAST, **variables, horizon=HORIZONS[Granularity.WEEKLY] + 1)
    assert too_far["errors"][0]["extensions"]["code"] == "INVALID_INPUT", too_far


async def test_cli_forecast_refresh(demo: Demo, ledger: Ledger, database_url: str) -> None:
    first = run_cli(database_url, "forecast-refresh", "--granularity", "WEEKLY", password="")
    assert first.returncode == 0, first.stderr
    assert "4 series, 4 refitted, 0 unchanged" in first.stdout, first.stdout
    again = run_cli(database_url, "forecast-refresh", "--granularity", "WEEKLY", password="")
    assert "4 series, 0 refitted, 4 unchanged" in again.stdout, again.stdout


ORGANISATION_FORECAST = """
query($product: ID!, $organisation: ID, $location: ID) {
  forecast(product: $product, organisation: $organisation, location: $location,
           granularity: WEEKLY) {
    model history { periodStart quantity disposed } points { quantity }
    location { code } organisation { name }
  }
}
"""
HOSPITAL = "St. Aurelia General Hospital"


async def test_an_organisation_series_sums_its_locations_and_disposals_are_reported(
    demo: Demo, ledger: Ledger, as_user: Any
) -> None:
    """The hospital's series is the sum of its wards' consumption, period by period; DISPOSE is
    reported beside consumption (never in it); the whole hospital is for someone who sees
    every ward, and exactly one of location and organisation is asked for."""
    this_week = Granularity.WEEKLY.period_start(ledger.today)
    (lot_b,) = await _record(
        demo,
        [
            MovementRequest(
                MovementKind.RECEIVE,
                demo.locations["WARD-B"],
                500,
                new_lot=NewLot(ledger.steady, "FS-B2", ledger.today + timedelta(days=900)),
                occurred_at=at(this_week - timedelta(weeks=WEEKS + 1)),
            )
        ],
    )
    extra = {this_week - timedelta(weeks=w): float(w) for w in (2, 5, 9)}
    await _record(
        demo,
        [
            _out(demo, D, "WARD-B", lot_b, int(q), at(week + timedelta(days=3)))
            for week, q in extra.items()
        ]
        + [
            MovementRequest(
                MovementKind.DISPOSE,
                demo.locations["WARD-B"],
                4,
                lot_id=lot_b,
                reason="EXPIRED",
                occurred_at=at(this_week - timedelta(weeks=5, days=-1)),
            )
        ],
    )
    await demo.services.forecasting.refresh([Granularity.WEEKLY], today=ledger.today)
    admin = await as_user("admin")
    product = gid("Product", ledger.steady)
    hospital = gid("Organisation", demo.orgs[HOSPITAL])

    whole = await admin.call(ORGANISATION_FORECAST, product=product, organisation=hospital)
    assert whole["organisation"] == {"name": HOSPITAL} and whole["location"] is None
    consumed = {date.fromisoformat(h["periodStart"]): h["quantity"] for h in whole["history"]}
    expected = dict(ledger.weekly_a)
    for week, q in extra.items():
        expected[week] = expected.get(week, 0.0) + q
    assert consumed == expected
    disposed = {date.fromisoformat(h["periodStart"]): h["disposed"] for h in whole["history"]}
    first_week = min(ledger.weekly_a)
    # WARD-A's 9 damaged packs in its second week, WARD-B's 4 expired ones five weeks ago
    assert {w: q for w, q in disposed.items() if q} == {
        first_week + timedelta(weeks=1): 9.0,
        this_week - timedelta(weeks=5): 4.0,
    }
    assert len(whole["points"]) == HORIZONS[Granularity.WEEKLY]

    ward_a = await admin.call(
        ORGANISATION_FORECAST, product=product, location=gid("Location", demo.locations["WARD-A"])
    )
    assert ward_a["organisation"] is None and ward_a["location"] == {"code": "WARD-A"}
    assert {h["periodStart"]: h["quantity"] for h in ward_a["history"]} == {
        d.isoformat(): q for d, q in ledger.weekly_a.items()
    }

    nurse = await as_user("nurse")  # WARD-A only: not the whole hospital
    denied = await nurse.raw(ORGANISATION_FORECAST, product=product, organisation=hospital)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN", denied
    for both in (
        {},
        {"organisation": hospital, "location": gid("Location", demo.locations["WARD-A"])},
    ):
        refused = await admin.raw(ORGANISATION_FORECAST, product=product, **both)
        assert refused["errors"][0]["extensions"]["code"] == "INVALID_INPUT", refused
