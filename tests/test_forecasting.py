"""Forecasting and dashboard figures: the pure forecast and bucket rules without a database, then
`consumptionForecast`, `topConsumption`, `stockValue` and `expiryExposure` over GraphQL on both
databases, against a ledger written (backdated) through the real ledger service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from server.core.db import utcnow
from server.forecasting.forecast import (
    MIN_HISTORY_WEEKS,
    ForecastMethod,
    NoForecastReason,
    WeekQuantity,
    fill_weeks,
    forecast_consumption,
    is_intermittent,
    monday_of,
)
from server.forecasting.service import ExpiryBucket, atc_group, expiry_bucket
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from tests.conftest import Demo, balance_of, first_product_id, gid, gql, token_for

# --- pure functions ----------------------------------------------------------------------------

MONDAY = date(2025, 1, 6)


def weekly(values: list[int], start: date = MONDAY) -> list[WeekQuantity]:
    return [WeekQuantity(start + timedelta(days=7 * i), v) for i, v in enumerate(values)]


def test_flat_poisson_demand_forecasts_near_the_mean_with_an_interval() -> None:
    rng = np.random.default_rng(7)
    history = weekly([int(v) for v in rng.poisson(40, 26)])
    result = forecast_consumption(history, 8)
    assert result.method is ForecastMethod.AUTO_ETS and result.reason is None
    assert len(result.points) == 8
    assert [p.week_start for p in result.points] == [
        history[-1].week_start + timedelta(days=7 * (i + 1)) for i in range(8)
    ]
    for point in result.points:
        assert abs(point.quantity - 40) < 40 * 0.15, point
        assert point.low is not None and point.high is not None
        assert point.low < point.quantity < point.high
        # An 80 % interval of Poisson(40) is roughly +-1.28 sd = +-8 packs; allow for fitting.
        assert 4 < point.high - point.low < 40
    assert result.level == 80


def test_intermittent_demand_uses_croston_without_an_interval() -> None:
    values = [0, 0, 3, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0]
    assert is_intermittent(values)
    result = forecast_consumption(weekly(values), 4)
    assert result.method is ForecastMethod.CROSTON_OPTIMIZED
    assert len(result.points) == 4
    assert all(p.low is None and p.high is None for p in result.points)
    # Croston forecasts a rate: between the average (13/26) and the average non-zero size.
    assert 0.2 < result.points[0].quantity < 2.5


def test_intermittency_threshold() -> None:
    ten = [5] * 10
    assert not is_intermittent([0, 0, 0, *ten[:7]])  # exactly 30 % zeros: still regular
    assert is_intermittent([0, 0, 0, 0, *ten[:6]])  # 40 %
    assert not is_intermittent([])


def test_short_history_is_a_result_not_an_exception() -> None:
    short = forecast_consumption(weekly([5] * (MIN_HISTORY_WEEKS - 1)), 8)
    assert short.method is None and short.points == []
    assert short.reason is NoForecastReason.INSUFFICIENT_HISTORY
    assert forecast_consumption([], 8).reason is NoForecastReason.INSUFFICIENT_HISTORY
    enough = forecast_consumption(weekly([5, 6, 4, 5, 7, 5, 6, 4]), 2)
    assert enough.method is ForecastMethod.AUTO_ETS and len(enough.points) == 2


def test_no_consumption_and_negative_weeks() -> None:
    nothing = forecast_consumption(weekly([0] * 12), 4)
    assert nothing.reason is NoForecastReason.NO_CONSUMPTION and nothing.points == []
    # More returned than dispensed in a week is fitted as 0, and forecasts are never negative.
    returns = forecast_consumption(weekly([-3, 10, 12, 9, 11, 10, 8, 12, 10, -1]), 3)
    assert returns.method is ForecastMethod.AUTO_ETS
    assert all(p.quantity >= 0 and (p.low or 0) >= 0 for p in returns.points)


def test_weeks_and_buckets() -> None:
    assert monday_of(date(2025, 1, 12)) == date(2025, 1, 6)  # Sunday
    assert monday_of(date(2025, 1, 6)) == date(2025, 1, 6)
    filled = fill_weeks([WeekQuantity(date(2025, 1, 13), 4)], date(2025, 1, 8), date(2025, 1, 20))
    assert filled == weekly([0, 4, 0])
    today = date(2025, 3, 10)
    assert expiry_bucket(today - timedelta(days=1), today) is ExpiryBucket.EXPIRED
    assert expiry_bucket(today, today) is ExpiryBucket.DAYS_0_30
    assert expiry_bucket(today + timedelta(days=30), today) is ExpiryBucket.DAYS_0_30
    assert expiry_bucket(today + timedelta(days=31), today) is ExpiryBucket.DAYS_31_60
    assert expiry_bucket(today + timedelta(days=60), today) is ExpiryBucket.DAYS_31_60
    assert expiry_bucket(today + timedelta(days=61), today) is ExpiryBucket.DAYS_61_90
    assert expiry_bucket(today + timedelta(days=90), today) is ExpiryBucket.DAYS_61_90
    assert expiry_bucket(today + timedelta(days=91), today) is None
    assert atc_group("n02be01") == "N" and atc_group(None) is None and atc_group("X1") is None


# --- a backdated ledger -----------------------------------------------------------------------

FORECAST_QUERY = """
query($product: ID!, $location: ID, $historyWeeks: Int! = 26, $horizonWeeks: Int! = 8) {
  consumptionForecast(product: $product, location: $location, historyWeeks: $historyWeeks,
                      horizonWeeks: $horizonWeeks) {
    method reason intervalLevel lastCompleteWeek
    history { weekStart quantity }
    forecast { weekStart quantity low high }
    product { id } location { code }
  }
}
"""


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


@dataclass
class History:
    product: int
    sparse_product: int
    this_week: date
    ward_a: dict[date, int]  # expected net consumption per week at WARD-A
    ward_b: dict[date, int]


async def _record(demo: Demo, requests: list[MovementRequest]) -> list[int]:
    result = await demo.services.ledger.record(
        demo.principals["admin"], requests, operation="test.forecast"
    )
    return [m.lot_id for m in result.movements]


async def _receive(
    demo: Demo, location: str, qty: int, product: int, batch: str, expiry: date, when: datetime
) -> int:
    (lot,) = await _record(
        demo,
        [
            MovementRequest(
                MovementKind.RECEIVE,
                demo.locations[location],
                qty,
                new_lot=NewLot(product, batch, expiry),
                occurred_at=when,
            )
        ],
    )
    return lot


def _out(demo: Demo, kind: MovementKind, location: str, lot: int, qty: int, when: datetime):
    return MovementRequest(kind, demo.locations[location], qty, lot_id=lot, occurred_at=when)


@pytest.fixture
async def history(demo: Demo) -> History:
    """20 complete weeks of dispensing at WARD-A and WARD-B (with returns at WARD-A), movements
    on the week boundaries, this week's dispensing, and noise that is not consumption."""
    product = await first_product_id(demo.services)
    sparse = await first_product_id(demo.services, offset=1)
    this_week = monday_of(utcnow().date())
    start = this_week - timedelta(weeks=20)
    far = this_week + timedelta(days=800)
    lot_a = await _receive(demo, "WARD-A", 5000, product, "FCA1", far, at(start - timedelta(3)))
    lot_b = await _receive(demo, "WARD-B", 5000, product, "FCB1", far, at(start - timedelta(3)))
    lot_s = await _receive(demo, "WARD-A", 500, sparse, "FCS1", far, at(start - timedelta(3)))
    D, R = MovementKind.DISPENSE, MovementKind.RETURN
    requests, ward_a, ward_b = [], {}, {}
    for i in range(20):
        week = start + timedelta(weeks=i)
        a1, a2, back, b = 30 + (i % 5), 10 + (i % 3), i % 4, 20 + (i % 7)
        requests += [
            _out(demo, D, "WARD-A", lot_a, a1, at(week, 0, 0)),  # Monday 00:00 UTC: this week
            _out(demo, D, "WARD-A", lot_a, a2, at(week + timedelta(6), 23, 59)),  # Sunday night
            _out(demo, D, "WARD-B", lot_b, b, at(week + timedelta(3))),
        ]
        if back:
            requests.append(_out(demo, R, "WARD-A", lot_a, back, at(week + timedelta(2))))
        if i % 4 == 0:  # the sparse product: one week in four
            requests.append(_out(demo, D, "WARD-A", lot_s, 2, at(week + timedelta(1))))
        ward_a[week], ward_b[week] = a1 + a2 - back, b
    # This (incomplete) week, and movements that are not consumption: none of them count.
    requests += [
        _out(demo, D, "WARD-A", lot_a, 99, at(this_week, 0, 0)),
        MovementRequest(
            MovementKind.ADJUST,
            demo.locations["WARD-A"],
            -5,
            lot_id=lot_a,
            reason="count correction",
            occurred_at=at(start + timedelta(8)),
            witness_id=demo.users["pharmacist"],  # a controlled drug's adjustment is witnessed
        ),
        MovementRequest(
            MovementKind.DISPOSE,
            demo.locations["WARD-B"],
            7,
            lot_id=lot_b,
            reason="DAMAGED",
            occurred_at=at(start + timedelta(9)),
        ),
    ]
    await _record(demo, requests)
    return History(product, sparse, this_week, ward_a, ward_b)


async def _forecast(
    client: httpx.AsyncClient, user: str = "admin", **variables: Any
) -> dict[str, Any]:
    token = await token_for(client, user)
    return await gql(client, FORECAST_QUERY, variables, token=token)


def _series(body: dict[str, Any]) -> dict[date, int]:
    assert "errors" not in body, body
    return {
        date.fromisoformat(p["weekStart"]): p["quantity"]
        for p in body["data"]["consumptionForecast"]["history"]
    }


async def _sql_consumption(demo: Demo, product: int, locations: list[str]) -> dict[date, int]:
    """Independent of the service: plain SQL per week, bounds computed here, no week maths."""
    ids = [demo.locations[c] for c in locations]
    this_week = monday_of(utcnow().date())
    sums = {}
    async with demo.services.db.read() as session:
        for i in range(26, 0, -1):
            week = this_week - timedelta(weeks=i)
            params: dict[str, Any] = {
                "p": product,
                "since": at(week, 0),
                "until": at(week + timedelta(7), 0),
            }
            if demo.services.db.dialect == "sqlite":  # stored as naive UTC text
                params = {
                    **params,
                    "since": params["since"].replace(tzinfo=None),
                    "until": params["until"].replace(tzinfo=None),
                }
            marks = ", ".join(str(int(i)) for i in ids)
            total = (
                await session.execute(
                    text(
                        "SELECT COALESCE(SUM(m.quantity), 0) FROM movements m "
                        "JOIN lots l ON l.id = m.lot_id WHERE l.product_id = :p "
                        "AND m.kind IN ('DISPENSE', 'RETURN') "
                        f"AND m.location_id IN ({marks}) "
                        "AND m.occurred_at >= :since AND m.occurred_at < :until"
                    ),
                    params,
                )
            ).scalar_one()
            sums[week] = -int(total)
    return sums


async def test_weekly_consumption_matches_the_plan_and_an_independent_sum(
    history: History, demo: Demo, client: httpx.AsyncClient
) -> None:
    everywhere = await _forecast(client, product=gid("Product", history.product))
    series = _series(everywhere)
    expected = {w: history.ward_a[w] + history.ward_b[w] for w in history.ward_a}
    # The product first moved 3 days before the first week: history starts that week.
    first = min(expected) - timedelta(weeks=1)
    assert min(series) == first and series[first] == 0
    assert {w: q for w, q in series.items() if w != first} == expected
    assert history.this_week not in series  # the current week is never fitted
    sql = await _sql_consumption(demo, history.product, ["WARD-A", "WARD-B"])
    assert series == {w: q for w, q in sql.items() if w >= first}
    result = everywhere["data"]["consumptionForecast"]
    assert result["lastCompleteWeek"] == (history.this_week - timedelta(7)).isoformat()
    assert result["method"] == "AUTO_ETS" and result["reason"] is None
    assert result["intervalLevel"] == 80 and result["location"] is None
    assert result["forecast"][0]["weekStart"] == history.this_week.isoformat()
    assert len(result["forecast"]) == 8
    level = sum(expected.values()) / len(expected)
    for point in result["forecast"]:
        assert abs(point["quantity"] - level) < level * 0.2
        assert point["low"] <= point["quantity"] <= point["high"]

    ward_a = await _forecast(
        client,
        product=gid("Product", history.product),
        location=gid("Location", demo.locations["WARD-A"]),
        horizonWeeks=3,
    )
    assert {w: q for w, q in _series(ward_a).items() if w != first} == history.ward_a
    assert ward_a["data"]["consumptionForecast"]["location"] == {"code": "WARD-A"}
    assert len(ward_a["data"]["consumptionForecast"]["forecast"]) == 3


async def test_history_weeks_cuts_the_window(history: History, client: httpx.AsyncClient) -> None:
    body = await _forecast(client, product=gid("Product", history.product), historyWeeks=6)
    series = _series(body)
    assert sorted(series) == [history.this_week - timedelta(weeks=k) for k in range(6, 0, -1)]
    assert body["data"]["consumptionForecast"]["reason"] == "INSUFFICIENT_HISTORY"
    assert body["data"]["consumptionForecast"]["forecast"] == []


async def test_intermittent_product_gets_croston(
    history: History, client: httpx.AsyncClient
) -> None:
    body = await _forecast(client, product=gid("Product", history.sparse_product))
    result = body["data"]["consumptionForecast"]
    assert result["method"] == "CROSTON_OPTIMIZED" and result["intervalLevel"] is None
    assert all(p["low"] is None and p["high"] is None for p in result["forecast"])
    assert sum(_series(body).values()) == 2 * 5


async def test_new_product_has_insufficient_history(demo: Demo, client: httpx.AsyncClient) -> None:
    product = await first_product_id(demo.services, offset=2)
    this_week = monday_of(utcnow().date())
    lot = await _receive(
        demo,
        "WARD-A",
        100,
        product,
        "FCN1",
        this_week + timedelta(400),
        at(this_week - timedelta(weeks=5)),
    )
    await _record(
        demo,
        [
            _out(demo, MovementKind.DISPENSE, "WARD-A", lot, 3, at(this_week - timedelta(weeks=k)))
            for k in range(5, 0, -1)
        ],
    )
    body = await _forecast(client, product=gid("Product", product))
    result = body["data"]["consumptionForecast"]
    assert result["reason"] == "INSUFFICIENT_HISTORY" and result["method"] is None
    assert [p["quantity"] for p in result["history"]] == [3] * 5  # not 21 zero weeks first
    never = await _forecast(
        client, product=gid("Product", await first_product_id(demo.services, 3))
    )
    assert never["data"]["consumptionForecast"]["history"] == []
    assert never["data"]["consumptionForecast"]["reason"] == "INSUFFICIENT_HISTORY"


async def test_forecast_scope(history: History, demo: Demo, client: httpx.AsyncClient) -> None:
    product = gid("Product", history.product)
    nurse = _series(await _forecast(client, "nurse", product=product))
    assert {w: q for w, q in nurse.items() if q} == {
        w: q for w, q in history.ward_a.items() if q
    }  # WARD-A only
    ward_b = gid("Location", demo.locations["WARD-B"])
    forbidden = await _forecast(client, "nurse", product=product, location=ward_b)
    assert forbidden["data"] is None
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    supplier = await _forecast(client, "supplier", product=product)
    assert supplier["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Regulators and auditors read stock everywhere (STOCK_READ, global roles).
    for reader in ("regulator", "auditor", "pharmacist"):
        assert _series(await _forecast(client, reader, product=product)) == _series(
            await _forecast(client, product=product)
        )
    anonymous = await gql(client, FORECAST_QUERY, {"product": product})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("variables", "code", "field"),
    [
        ({"product": gid("Product", 999999)}, "NOT_FOUND", "product"),
        ({"product": gid("Location", 1)}, "INVALID_ID", "product"),
        ({"product": "not-an-id"}, "INVALID_ID", None),
        ({"location": gid("Location", 999999)}, "NOT_FOUND", "location"),
        ({"location": gid("Product", 1)}, "INVALID_ID", "location"),
        ({"historyWeeks": 0}, "INVALID_INPUT", "historyWeeks"),
        ({"historyWeeks": 157}, "INVALID_INPUT", "historyWeeks"),
        ({"horizonWeeks": 0}, "INVALID_INPUT", "horizonWeeks"),
        ({"horizonWeeks": 53}, "INVALID_INPUT", "horizonWeeks"),
    ],
)
async def test_bad_input_is_typed(
    demo: Demo, client: httpx.AsyncClient, variables: dict[str, Any], code: str, field: str | None
) -> None:
    product = gid("Product", await first_product_id(demo.services))
    body = await _forecast(client, **{"product": product, **variables})
    error = body["errors"][0]
    assert error["extensions"]["code"] == code, body
    if field is not None:
        assert error["extensions"]["field"] == field


TOP_QUERY = """
query($location: ID, $weeks: Int! = 8) {
  topConsumption(location: $location, weeks: $weeks, first: 5) { quantity product { id } }
}
"""


async def test_top_consumption(history: History, demo: Demo, client: httpx.AsyncClient) -> None:
    token = await token_for(client, "pharmacist")
    body = await gql(client, TOP_QUERY, {"weeks": 4}, token=token)
    assert "errors" not in body, body
    rows = body["data"]["topConsumption"]
    last4 = [history.this_week - timedelta(weeks=k) for k in range(4, 0, -1)]
    assert rows[0] == {
        "product": {"id": gid("Product", history.product)},
        "quantity": sum(history.ward_a[w] + history.ward_b[w] for w in last4),
    }
    sparse = sum(2 for w in last4 if (w - min(history.ward_a)).days // 7 % 4 == 0)
    assert len(rows) == 2 and rows[1]["quantity"] == sparse
    nurse = await token_for(client, "nurse.b")
    only_b = await gql(client, TOP_QUERY, {"weeks": 4}, token=nurse)
    assert only_b["data"]["topConsumption"] == [
        {
            "product": {"id": gid("Product", history.product)},
            "quantity": sum(history.ward_b[w] for w in last4),
        }
    ]


# --- stock value and expiry exposure -----------------------------------------------------------

VALUE_QUERY = """
query($location: ID) {
  stockValue(location: $location) {
    packs value
    byLocation { packs value location { code } }
    byAtcGroup { code name packs value }
  }
  expiryExposure(location: $location) { today buckets { bucket packs value } }
}
"""


async def _independent_values(demo: Demo, locations: list[str] | None = None) -> dict[str, Any]:
    """sum(quantity x unit cost) over positive balances, from raw rows, summed here."""
    async with demo.services.db.read() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT b.location_id, b.quantity, p.unit_cost, p.atc_code, l.expiry_date "
                    "FROM balances b JOIN lots l ON l.id = b.lot_id "
                    "JOIN products p ON p.id = l.product_id"
                )
            )
        ).all()
    codes = {v: k for k, v in demo.locations.items()}
    by_location: dict[str, Decimal] = {}
    by_group: dict[str | None, int] = {}
    packs, value = 0, Decimal(0)
    for location_id, quantity, cost, atc, _expiry in rows:
        code = codes[location_id]
        if quantity <= 0 or (locations is not None and code not in locations):
            continue
        worth = Decimal(str(cost)) * quantity
        packs += quantity
        value += worth
        by_location[code] = by_location.get(code, Decimal(0)) + worth
        group = atc[0] if atc else None
        by_group[group] = by_group.get(group, 0) + quantity
    return {"packs": packs, "value": value, "by_location": by_location, "by_group": by_group}


@pytest.fixture
async def shelves(demo: Demo) -> date:
    """Three products at four locations, lots expiring around every bucket boundary."""
    today = utcnow().date()
    products = [await first_product_id(demo.services, offset=k) for k in (0, 5, 9)]
    long_ago = at(today - timedelta(days=200))
    plan = [
        ("HOSP-CP", 0, -10, 12),  # expired 10 days ago
        ("HOSP-CP", 1, -1, 3),  # expired yesterday
        ("WARD-A", 0, 0, 5),  # expires today: 0 days left
        ("WARD-A", 2, 30, 7),
        ("WARD-B", 1, 31, 4),
        ("WARD-B", 2, 60, 6),
        ("HOSP-WH", 0, 61, 20),
        ("HOSP-WH", 1, 90, 8),
        ("HOSP-WH", 2, 91, 50),  # beyond 90 days: no bucket
        ("WARD-A", 1, 400, 9),
    ]
    for index, (location, p, days, qty) in enumerate(plan):
        await _receive(
            demo, location, qty, products[p], f"SV{index}", today + timedelta(days), long_ago
        )
    # An emptied shelf holds a zero balance, an overdrawn one a negative balance (its location
    # allows it): neither is stock on hand, so neither is worth anything or expires.
    yesterday = at(today - timedelta(1))
    lot = await _receive(demo, "WARD-B", 2, products[0], "SVGONE", today + timedelta(5), long_ago)
    await _record(demo, [_out(demo, MovementKind.DISPENSE, "WARD-B", lot, 2, yesterday)])
    await demo.services.network.update_location(
        demo.principals["admin"], demo.locations["WARD-C"], allow_negative_stock=True
    )
    lot = await _receive(demo, "WARD-C", 1, products[1], "SVNEG", today + timedelta(5), long_ago)
    adjust = MovementRequest(
        MovementKind.ADJUST,
        demo.locations["WARD-C"],
        -4,
        lot_id=lot,
        reason="miscount",
        occurred_at=yesterday,
        witness_id=demo.users["pharmacist"],
    )
    await _record(demo, [adjust])
    assert await balance_of(demo.services, demo.locations["WARD-C"], lot) == -3
    return today


async def test_stock_value_equals_an_independent_sum(
    shelves: date, demo: Demo, client: httpx.AsyncClient
) -> None:
    token = await token_for(client, "pharmacist")
    body = await gql(client, VALUE_QUERY, {}, token=token)
    assert "errors" not in body, body
    figures = body["data"]["stockValue"]
    expected = await _independent_values(demo)
    assert figures["packs"] == expected["packs"] == 124
    assert Decimal(figures["value"]) == expected["value"] > 0
    assert {r["location"]["code"]: Decimal(r["value"]) for r in figures["byLocation"]} == expected[
        "by_location"
    ]
    assert {r["code"]: r["packs"] for r in figures["byAtcGroup"]} == expected["by_group"]
    assert sum(Decimal(r["value"]) for r in figures["byAtcGroup"]) == expected["value"]
    values = [Decimal(r["value"]) for r in figures["byLocation"]]
    assert values == sorted(values, reverse=True)  # biggest first, for the chart
    for group in figures["byAtcGroup"]:
        assert group["name"] and (group["code"] is None or len(group["code"]) == 1)


async def test_expiry_exposure_buckets(
    shelves: date, demo: Demo, client: httpx.AsyncClient
) -> None:
    token = await token_for(client, "warehouse")  # scoped to HOSP-WH
    body = await gql(client, VALUE_QUERY, {}, token=token)
    exposure = body["data"]["expiryExposure"]
    assert exposure["today"] == shelves.isoformat()
    assert [(b["bucket"], b["packs"]) for b in exposure["buckets"]] == [
        ("EXPIRED", 0),
        ("DAYS_0_30", 0),
        ("DAYS_31_60", 0),
        ("DAYS_61_90", 28),
    ]
    admin = await gql(client, VALUE_QUERY, {}, token=await token_for(client, "admin"))
    buckets = {b["bucket"]: b for b in admin["data"]["expiryExposure"]["buckets"]}
    assert {k: b["packs"] for k, b in buckets.items()} == {
        "EXPIRED": 15,
        "DAYS_0_30": 12,
        "DAYS_31_60": 10,
        "DAYS_61_90": 28,
    }
    # Each bucket's value is its packs at their own product's cost.
    async with demo.services.db.read() as session:
        costs = dict(
            (
                await session.execute(
                    text(
                        "SELECT l.batch_number, p.unit_cost FROM lots l "
                        "JOIN products p ON p.id = l.product_id"
                    )
                )
            ).all()
        )
    expired = Decimal(str(costs["SV0"])) * 12 + Decimal(str(costs["SV1"])) * 3
    assert Decimal(buckets["EXPIRED"]["value"]) == expired
    # The warehouse manager's stock value is only HOSP-WH.
    wh = body["data"]["stockValue"]
    assert [r["location"]["code"] for r in wh["byLocation"]] == ["HOSP-WH"]
    assert wh["packs"] == 78
    assert Decimal(wh["value"]) == (await _independent_values(demo, ["HOSP-WH"]))["value"]


async def test_figures_scope_and_bad_ids(
    shelves: date, demo: Demo, client: httpx.AsyncClient
) -> None:
    nurse = await token_for(client, "nurse")
    mine = await gql(client, VALUE_QUERY, {}, token=nurse)
    assert [r["location"]["code"] for r in mine["data"]["stockValue"]["byLocation"]] == ["WARD-A"]
    assert mine["data"]["stockValue"]["packs"] == 5 + 7 + 9
    ward_b = gid("Location", demo.locations["WARD-B"])
    forbidden = await gql(client, VALUE_QUERY, {"location": ward_b}, token=nurse)
    assert forbidden["data"] is None
    assert {e["extensions"]["code"] for e in forbidden["errors"]} == {"FORBIDDEN"}
    supplier = await gql(client, VALUE_QUERY, {}, token=await token_for(client, "supplier"))
    assert {e["extensions"]["code"] for e in supplier["errors"]} == {"FORBIDDEN"}
    admin = await token_for(client, "admin")
    one = await gql(client, VALUE_QUERY, {"location": ward_b}, token=admin)
    assert one["data"]["stockValue"]["packs"] == 10
    assert [b["packs"] for b in one["data"]["expiryExposure"]["buckets"]] == [0, 0, 10, 0]
    for bad, code in ((gid("Location", 999999), "NOT_FOUND"), (gid("Lot", 1), "INVALID_ID")):
        body = await gql(client, VALUE_QUERY, {"location": bad}, token=admin)
        assert {e["extensions"]["code"] for e in body["errors"]} == {code}
