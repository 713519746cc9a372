"""Replenishment benchmark: a year of daily demand for many products under three policies.

    .venv/bin/python bench/replenishment.py [--seed 1] [--seeds 1 2 3] [--products 240]

Each product has two years of history (what the ledger already holds) and is then simulated for
a year of daily demand: smooth, seasonal, trending, intermittent or going obsolete. Suppliers'
lead times vary (log-normal around the contract's, with occasional long delays); every received
lot expires after a remaining shelf life drawn around the product's typical one (a fifth of the
products are perishable, one to four months); stock is issued first-expired-first-out and expired
lots are written off; unmet demand is lost (sourced elsewhere at a penalty).

Policies, all under the same contract rules (pack size, minimum order) and the same random
draws (an order placed on day t for product i gets the same lead time and lot shelf life under
every policy):
(a) Apotheca: `server.replenishment.rules.suggest_purchase` every day, fed by an honest
    forecaster written here (it sees only the past; refreshed weekly): weighted least squares on
    weekly totals with a damped trend and, when it earns its keep, a yearly harmonic; a
    day-of-week profile; spread from its residuals (never below Poisson); "obsolete" when the
    run of empty days is too long to be chance. Measured lead times come from the policy's own
    deliveries (plus a few from history). Each item's service level is its newsvendor critical
    ratio p / (p + h·T) (the cost of a unit short against holding it over one order cycle T
    from the EOQ), never below its class's minimum (`rules.target_service_level`); the cost
    multiples it uses are the product's configured ones (`rules.STOCKOUT_COST_MULTIPLE`), which
    are also what the bench charges.
(b) Min/max set the usual way: min = average lead-time demand + a fixed buffer of
    BUFFER_DAYS days of average demand, max = min + a month of average demand; averages over
    the trailing year, re-set every quarter; order up to max when the position falls to min.
(c) Clairvoyant: knows future demand, the lead time of each order and each lot's shelf life; it
    plans each order to arrive the day stock would run out, sized by the EOQ cycle and never
    more than can be used before it expires (a heuristic lower bound, not a proven optimum).
(d) Oracle: policy (a) told the true daily mean and variance of demand and the true lead-time
    distribution instead of forecasting and measuring them, but not the draws. It separates the
    two gaps: Apotheca / oracle is the price of forecasting, oracle / clairvoyant the price of
    not knowing the future, which no forecaster removes.

Why the aim "cost <= 1.3x clairvoyant" is not reached: the clairvoyant knows each day's demand
and each order's lead time, so it holds only cycle stock and never runs short. Any policy that
does not see the draws must hold safety stock against demand noise (negative binomial days,
intermittent lumps) and against late deliveries (8 % of orders arrive 1.5-2.5x the contract's
lead time), or pay for stock-outs. The oracle, which knows every distribution exactly, costs
2.7-3.3x the clairvoyant (seed 1: 408,498 against 123,855), its holding alone nearly twice
the clairvoyant's whole cost; Apotheca costs 1.18-1.48x the oracle. So against this bound the
aim is out of reach for a non-clairvoyant policy of this kind; the measurable target is the
oracle, and the remaining gap to it is the forecaster's (slow to follow seasonal ramps, since
it refits weekly: on seed 1 one seasonal product's ramp is 44 % of Apotheca's shortage cost).

Recorded (240 products; seed 7 played no part in choosing the change):

    seed  Apotheca fill %  expired/issued %  cost / min/max  / clairvoyant  / oracle
    1     99.82            0.38              0.367           4.221          1.280
    2     99.79            0.73              0.372           3.960          1.228
    3     99.70            0.35              0.508           4.065          1.483
    7     99.83            0.92              0.365           3.298          1.175

With the class service levels instead (before the newsvendor ratio): fill 99.47, 99.71, 99.43,
99.36 %; cost / min/max 0.407, 0.409, 0.725, 0.677; / clairvoyant 4.68, 4.36, 5.80, 6.12.

Costs: holding HOLDING_RATE a year of the stock's value, a stock-out penalty per unit short of
a multiple of its unit cost by class, the value of expired units, ORDERING_COST per order line.
The server's forecasting engine is not used: the benchmark measures the policy, with a forecaster
anyone can read.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.replenishment.rules import (
    LEAD_TIME_SAMPLES,
    ContractTerms,
    DemandForecast,
    Distribution,
    InventoryPosition,
    LeadTime,
    LeadTimeSource,
    OpenPurchaseLine,
    ProductClass,
    PurchaseItem,
    cycle_quantity,
    inventory_position,
    lead_time_demand,
    measured_lead_time,
    stock_levels,
    suggest_purchase,
    target_service_level,
)

HISTORY_DAYS = 730
SIM_DAYS = 365
START = HISTORY_DAYS
END = HISTORY_DAYS + SIM_DAYS
TAIL = 400  # demand is generated past the end so forecasts and the clairvoyant can look ahead
HORIZON_DAYS = 180
REFRESH_DAYS = 7
BUFFER_DAYS = 14
LATE_SHARE = 0.08  # orders delivered 50-150 % later than the contract says
HOLDING_RATE = 0.25
ORDERING_COST = 15.0
STOCKOUT_MULTIPLE = {
    ProductClass.CRITICAL: 20.0,
    ProductClass.CONTROLLED: 10.0,
    ProductClass.STANDARD: 5.0,
    ProductClass.NON_ESSENTIAL: 2.0,
}
DAY0 = date(2024, 1, 1)
PATTERNS = ("smooth", "seasonal", "trending", "intermittent", "obsolete")
SHARES = (0.25, 0.20, 0.20, 0.20, 0.15)


@dataclass
class Product:
    id: int
    pattern: str
    product_class: ProductClass
    unit_cost: float
    pack_size: int
    minimum_order: int
    lead_days: int  # the contract's
    shelf_life: float  # typical remaining shelf life on receipt
    demand: np.ndarray  # HISTORY_DAYS + SIM_DAYS + TAIL days
    lead: np.ndarray  # actual lead time of an order placed on day t
    life: np.ndarray  # remaining shelf life on receipt of an order placed on day t
    history_deliveries: list[tuple[date, date]]
    initial_lots: list[tuple[int, int]]  # (expiry day, quantity) at the start
    true_mean: np.ndarray  # the generating process's daily mean and variance (for the oracle)
    true_var: np.ndarray

    @property
    def contract(self) -> ContractTerms:
        return ContractTerms(
            supplier_id=1,
            supplier="Supplier",
            reference=f"C-{self.id}",
            valid_from=DAY0,
            valid_until=DAY0 + timedelta(days=END + TAIL),
            unit_price=Decimal(str(round(self.unit_cost, 4))),
            lead_time_days=self.lead_days,
            pack_size=self.pack_size,
            minimum_order=self.minimum_order,
        )


def make_products(count: int, seed: int) -> list[Product]:
    rng = np.random.default_rng(seed)
    total = END + TAIL
    t = np.arange(total)
    dow = t % 7
    products = []
    kinds = rng.choice(len(PATTERNS), size=count, p=SHARES)
    for i in range(count):
        pattern = PATTERNS[kinds[i]]
        rate = float(np.exp(rng.uniform(np.log(0.5), np.log(60))))
        weekday = np.where(dow >= 5, rng.uniform(0.6, 1.0), 1.0)
        if pattern == "smooth":
            mean = rate * weekday * np.ones(total)
        elif pattern == "seasonal":
            amp, phase = rng.uniform(0.3, 0.6), rng.uniform(0, 365)
            mean = rate * weekday * (1 + amp * np.sin(2 * np.pi * (t + phase) / 365))
        elif pattern == "trending":
            growth = rng.uniform(-0.6, 0.6)
            mean = rate * weekday * np.exp(growth * (t - START) / 365)
        elif pattern == "intermittent":
            mean = None
        else:  # obsolete: steady or lumpy, then nothing from a day in the simulated year
            mean = rate * weekday * np.ones(total) if rng.random() < 0.5 else None
        if mean is None:
            p = rng.uniform(0.03, 0.3)
            size = rng.uniform(0.5, 8)
            demand = (rng.random(total) < p) * (1 + rng.poisson(size, total))
            true_mean = np.full(total, p * (1 + size))
            true_var = p * (1 + 3 * size + size**2) - true_mean**2
        else:
            k = 5.0  # negative binomial: variance = mean + mean²/k
            demand = rng.poisson(rng.gamma(k, np.maximum(mean, 1e-9) / k))
            true_mean = np.maximum(mean, 0.0)
            true_var = true_mean + true_mean**2 / k
        if pattern == "obsolete":
            gone = START + int(rng.uniform(30, 240))
            demand[gone:] = 0
            true_mean[gone:] = true_var[gone:] = 0.0
        demand = demand.astype(np.int64)
        avg = max(float(demand[:START].mean()), 0.05)
        pack = max(s for s in (1, 5, 10, 20, 50, 100) if s <= max(1.0, avg * 3))
        moq = pack * int(rng.choice([1, 1, 2, 4]))
        lead_days = int(rng.choice([2, 3, 5, 7, 10, 14, 21]))
        lead = np.maximum(1, np.round(lead_days * rng.lognormal(0, 0.25, total)))
        late = rng.random(total) < LATE_SHARE
        lead = (lead + late * np.round(lead_days * rng.uniform(0.5, 1.5, total))).astype(int)
        perishable = rng.random() < 0.2
        shelf = float(rng.uniform(25, 120) if perishable else rng.uniform(300, 1000))
        life = np.round(shelf * rng.uniform(0.85, 1.05, total)).astype(int)
        deliveries = []
        for _ in range(int(rng.integers(0, 9))):  # the same supplier, before the simulated year
            ordered = DAY0 + timedelta(days=int(rng.integers(0, START - 60)))
            days = max(1, round(lead_days * rng.lognormal(0, 0.25)))
            if rng.random() < LATE_SHARE:
                days += round(lead_days * rng.uniform(0.5, 1.5))
            deliveries.append((ordered, ordered + timedelta(days=int(days))))
        deliveries.sort()
        recent = max(float(demand[START - 28 : START].mean()), 0.0)
        stock = math.ceil(recent * (lead_days + 20))
        lots = []
        if stock > 0:
            for share in (0.4, 0.6):
                lots.append((START + int(shelf * rng.uniform(0.4, 1.0)), int(stock * share) + 1))
        cls = ProductClass(
            rng.choice(
                [c.value for c in ProductClass], p=[0.15, 0.10, 0.60, 0.15]
            )  # critical, controlled, standard, non-essential
        )
        products.append(
            Product(
                i,
                pattern,
                cls,
                float(np.clip(rng.lognormal(np.log(8), 1.2), 0.2, 2000)),
                pack,
                moq,
                lead_days,
                shelf,
                demand,
                lead,
                life,
                deliveries,
                sorted(lots),
                true_mean,
                np.maximum(true_var, 0.0),
            )
        )
    return products


def true_lead_times(p: Product, seed: int, n: int = LEAD_TIME_SAMPLES) -> tuple[float, ...]:
    """Draws from the process that makes the product's lead times (a separate generator, so
    the simulated series are the same with or without the oracle)."""
    rng = np.random.default_rng([seed, p.id])
    lead = np.maximum(1, np.round(p.lead_days * rng.lognormal(0, 0.25, n)))
    late = rng.random(n) < LATE_SHARE
    return tuple(float(x) for x in lead + late * np.round(p.lead_days * rng.uniform(0.5, 1.5, n)))


# --- the honest forecaster ------------------------------------------------------------------------


def forecast(history: np.ndarray, horizon: int = HORIZON_DAYS) -> DemandForecast:
    """Daily means and spreads for the next `horizon` days from the past only."""
    days = len(history)
    weeks = min(104, days // 7)
    if weeks < 4:
        mean = max(float(history.mean()), 0.0) if days else 0.0
        return DemandForecast((mean,) * horizon, (math.sqrt(mean),) * horizon)
    recent = history[days - 7 * weeks :]
    w = recent.reshape(weeks, 7).sum(axis=1).astype(float)
    # obsolete: a run of empty days that chance would produce less than once in a thousand
    nonzero = np.flatnonzero(history)
    run = days - 1 - nonzero[-1] if nonzero.size else days
    if run >= 14:
        before = history[max(0, days - run - 365) : days - run]
        p = min(float((before > 0).mean()) if before.size else 0.0, 0.95)
        if p > 0 and run * math.log1p(-p) < math.log(1e-3):
            return DemandForecast((0.0,) * horizon, (0.0,) * horizon)
    k = np.arange(weeks) - (weeks - 1)  # 0 is the latest week: the intercept is today's level
    weights = 0.5 ** (-k / 26)
    trend_cols = [np.ones(weeks), k.astype(float)]
    season_cols = [np.sin(2 * np.pi * k / 52.18), np.cos(2 * np.pi * k / 52.18)]

    def fit(cols: list[np.ndarray]) -> tuple[np.ndarray, float]:
        x = np.column_stack(cols)
        sw = np.sqrt(weights)
        beta, *_ = np.linalg.lstsq(x * sw[:, None], w * sw, rcond=None)
        resid = w - x @ beta
        return beta, float((weights * resid**2).sum() / weights.sum())

    beta, mse = fit(trend_cols)
    seasonal = False
    n_eff = weights.sum() ** 2 / (weights**2).sum()
    if weeks >= 78:
        beta_s, mse_s = fit(trend_cols + season_cols)
        if mse_s > 0 and mse / mse_s > math.exp(2 * 2 / n_eff):  # AIC: two more parameters
            beta, mse, seasonal = beta_s, mse_s, True
    params = len(beta)
    mse *= n_eff / max(n_eff - params, 1.0)
    level, slope = float(beta[0]), float(beta[1])
    profile = (recent[-84:].reshape(-1, 7).sum(axis=0) + 5.0) / (recent[-84:].sum() + 35.0)
    phi = 0.97  # damped trend: a trend is trusted for weeks, not for years
    out_mean, out_var = [], []
    horizon_weeks = horizon // 7 + 2
    for h in range(1, horizon_weeks + 1):
        damped = phi * (1 - phi**h) / (1 - phi)
        value = level + slope * damped
        if seasonal:
            value += beta[2] * math.sin(2 * math.pi * h / 52.18) + beta[3] * math.cos(
                2 * math.pi * h / 52.18
            )
        value = max(value, 0.0)
        var = max(mse * (1 + 1 / n_eff), value)  # never below Poisson
        for d in range(7):
            share = profile[(days + 7 * (h - 1) + d) % 7]
            out_mean.append(value * share)
            out_var.append(var * share)
    return DemandForecast(tuple(out_mean[:horizon]), tuple(math.sqrt(v) for v in out_var[:horizon]))


# --- policies -------------------------------------------------------------------------------------


class Apotheca:
    name = "Apotheca"

    def __init__(self, product: Product, distribution: Distribution = Distribution.GAMMA) -> None:
        self.p = product
        self.contract = product.contract
        self.deliveries = list(product.history_deliveries)
        self.distribution = distribution
        self.fc: DemandForecast | None = None
        self.reorder_point = 0.0
        self.next_refresh = START

    def _lead_time(self) -> LeadTime:
        return measured_lead_time(self.deliveries, self.contract.lead_time_days)

    def _forecast(self, day: int) -> DemandForecast:
        return forecast(self.p.demand[: day + 1])

    def _levels(self) -> None:
        assert self.fc is not None
        lead = self._lead_time()
        demand = lead_time_demand(self.fc, lead, 1.0)
        rate = self.fc.rate_at(lead.mean_days)
        cycle, _ = cycle_quantity(
            rate, self.p.unit_cost, ordering_cost=ORDERING_COST, holding_rate=HOLDING_RATE
        )
        level, _ = target_service_level(
            self.p.product_class, rate, cycle, holding_rate=HOLDING_RATE
        )
        self.reorder_point = stock_levels(demand, level, cycle, self.distribution).reorder_point

    def received(self, ordered: int, day: int) -> None:
        self.deliveries.append((DAY0 + timedelta(days=ordered), DAY0 + timedelta(days=day)))
        self._levels()

    def order(self, day: int, on_hand: int, pipeline: list[list[int]]) -> int:
        if day >= self.next_refresh:
            self.fc = self._forecast(day)
            self.next_refresh = day + REFRESH_DAYS
            self._levels()
        if on_hand + sum(q[1] for q in pipeline) >= self.reorder_point:
            return 0
        position = inventory_position(on_hand, [OpenPurchaseLine(q[1]) for q in pipeline])
        assert self.fc is not None
        item = self._item(position)
        return suggest_purchase(item, DAY0 + timedelta(days=day)).quantity

    def _item(self, position: InventoryPosition) -> PurchaseItem:
        assert self.fc is not None
        return PurchaseItem(
            self.p.id,
            1,
            self.p.product_class,
            self.fc,
            position,
            [self.contract],
            self.deliveries,
            shelf_life_days=self.p.shelf_life,
            ordering_cost=ORDERING_COST,
            holding_rate=HOLDING_RATE,
            distribution=self.distribution,
        )


class Oracle(Apotheca):
    """The same policy told the truth about the distributions: the generating process's daily
    mean and variance instead of a forecast, and its lead-time distribution (as many draws as
    the policy would use measured deliveries) instead of the measured one. It does not know the
    draws themselves. What it costs above the clairvoyant is the price of uncertainty that no
    forecaster can remove; what Apotheca costs above it is the price of forecasting."""

    name = "oracle"

    def __init__(self, product: Product, seed: int) -> None:
        super().__init__(product)
        samples = true_lead_times(product, seed)
        mean = sum(samples) / len(samples)
        sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1))
        self.lead = LeadTime(mean, sd, len(samples), LeadTimeSource.MEASURED, {}, samples)

    def _lead_time(self) -> LeadTime:
        return self.lead

    def _forecast(self, day: int) -> DemandForecast:
        ahead = slice(day + 1, day + 1 + HORIZON_DAYS)
        return DemandForecast(
            tuple(float(x) for x in self.p.true_mean[ahead]),
            tuple(math.sqrt(float(x)) for x in self.p.true_var[ahead]),
        )

    def _item(self, position: InventoryPosition) -> PurchaseItem:
        # the measured deliveries are replaced by the true distribution: the rules' lead-time
        # estimate from deliveries is bypassed by handing them the samples as deliveries
        item = super()._item(position)
        return replace(
            item,
            deliveries=[(DAY0, DAY0 + timedelta(days=float(x))) for x in self.lead.samples],
        )


def _round_order(raw: float, pack: int, moq: int) -> int:
    packs = max(math.ceil(raw / pack), math.ceil(moq / pack))
    return packs * pack


class MinMax:
    name = "min/max"

    def __init__(self, product: Product, buffer_days: float = BUFFER_DAYS) -> None:
        self.p = product
        self.buffer_days = buffer_days
        self.next_reset = START

    def received(self, ordered: int, day: int) -> None:
        pass

    def order(self, day: int, on_hand: int, pipeline: list[list[int]]) -> int:
        if day >= self.next_reset:
            avg = float(self.p.demand[max(0, day - 365) : day].mean())
            self.min = avg * self.p.lead_days + self.buffer_days * avg
            self.max = self.min + 30.4 * avg
            self.next_reset = day + 91
        position = on_hand + sum(q[1] for q in pipeline)
        if position > self.min or self.max <= 0:
            return 0
        return _round_order(self.max - position, self.p.pack_size, self.p.minimum_order)


class Clairvoyant:
    name = "clairvoyant"

    def __init__(self, product: Product) -> None:
        self.p = product
        self.plan = plan_clairvoyant(product)

    def received(self, ordered: int, day: int) -> None:
        pass

    def order(self, day: int, on_hand: int, pipeline: list[list[int]]) -> int:
        return self.plan.get(day, 0)


def plan_clairvoyant(p: Product) -> dict[int, int]:
    """Orders timed to arrive the day stock would run out, each covering an EOQ cycle of the
    true demand, capped at what will be used before the lot expires."""
    demand, cum = p.demand, np.concatenate([[0], np.cumsum(p.demand)])
    lots = [list(x) for x in p.initial_lots]
    arrivals: dict[int, list[tuple[int, int]]] = {}
    orders: dict[int, int] = {}
    for a in range(START, END):
        for expiry, qty in arrivals.pop(a, []):
            bisect.insort(lots, [expiry, qty])
        while lots and lots[0][0] <= a:
            lots.pop(0)
        stock = sum(q for _, q in lots)
        if stock < demand[a]:
            free = [t for t in range(START, a + 1) if t not in orders]
            on_time = [t for t in free if t + p.lead[t] <= a]
            if on_time:
                when = max(on_time)
            elif free:
                when = min(free, key=lambda t: t + p.lead[t])
            else:
                when = None
            if when is not None:
                arrive = max(a, when + int(p.lead[when]))
                rate = float(demand[a : a + 90].mean())
                cycle_days = 1
                if rate > 0:
                    eoq = math.sqrt(2 * rate * 365 * ORDERING_COST / (HOLDING_RATE * p.unit_cost))
                    cycle_days = int(min(max(round(eoq / rate), 1), 90))
                need = cum[arrive + cycle_days] - cum[a] - stock
                usable = cum[min(when + int(p.lead[when]) + int(p.life[when]), len(demand))]
                cap = usable - cum[a] - stock
                short = cum[arrive + 1] - cum[a] - stock
                qty = max(min(need, cap), short, 1)
                qty = _round_order(qty, p.pack_size, p.minimum_order)
                orders[when] = qty
                expiry = when + int(p.lead[when]) + int(p.life[when])
                if when + p.lead[when] <= a:
                    bisect.insort(lots, [expiry, qty])
                else:
                    arrivals.setdefault(arrive, []).append((expiry, qty))
        left = int(demand[a])
        while left and lots:
            take = min(left, lots[0][1])
            lots[0][1] -= take
            left -= take
            if lots[0][1] == 0:
                lots.pop(0)
    return orders


# --- the simulator --------------------------------------------------------------------------------


@dataclass
class Totals:
    demanded: float = 0.0
    issued: float = 0.0
    issued_value: float = 0.0
    short_units: float = 0.0
    stockout_days: int = 0
    expired_units: float = 0.0
    expired_value: float = 0.0
    stock_value_days: float = 0.0
    holding: float = 0.0
    shortage: float = 0.0
    ordering: float = 0.0
    orders: int = 0
    by_pattern: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return self.holding + self.shortage + self.expired_value + self.ordering


def simulate(policy: Apotheca | Oracle | MinMax | Clairvoyant, p: Product, totals: Totals) -> None:
    lots = [list(x) for x in p.initial_lots]
    pipeline: list[list[int]] = []  # [arrival day, quantity, expiry day, order day]
    penalty = STOCKOUT_MULTIPLE[p.product_class] * p.unit_cost
    short_product = demanded_product = 0.0
    for day in range(START, END):
        if pipeline:
            for lot in [x for x in pipeline if x[0] == day]:
                bisect.insort(lots, [lot[2], lot[1]])
                pipeline.remove(lot)
                policy.received(lot[3], day)
        while lots and lots[0][0] <= day:
            _, qty = lots.pop(0)
            totals.expired_units += qty
            totals.expired_value += qty * p.unit_cost
        want = int(p.demand[day])
        left = want
        while left and lots:
            take = min(left, lots[0][1])
            lots[0][1] -= take
            left -= take
            if lots[0][1] == 0:
                lots.pop(0)
        totals.demanded += want
        demanded_product += want
        totals.issued += want - left
        totals.issued_value += (want - left) * p.unit_cost
        if left:
            totals.short_units += left
            short_product += left
            totals.stockout_days += 1
            totals.shortage += left * penalty
        on_hand = sum(q for _, q in lots)
        value = on_hand * p.unit_cost
        totals.stock_value_days += value
        totals.holding += value * HOLDING_RATE / 365
        qty = policy.order(day, on_hand, pipeline)
        if qty > 0:
            arrive = day + int(p.lead[day])
            pipeline.append([arrive, qty, arrive + int(p.life[day]), day])
            totals.orders += 1
            totals.ordering += ORDERING_COST
    row = totals.by_pattern.setdefault(p.pattern, [0.0, 0.0])
    row[0] += demanded_product
    row[1] += short_product


def run(seed: int, count: int) -> dict[str, Totals]:
    products = make_products(count, seed)
    policies = {
        "Apotheca": lambda p: Apotheca(p),
        f"min/max ({BUFFER_DAYS}-day buffer)": lambda p: MinMax(p),
        "min/max (7-day buffer)": lambda p: MinMax(p, 7),
        "oracle (true distributions)": lambda p: Oracle(p, seed),
        "clairvoyant": lambda p: Clairvoyant(p),
    }
    out = {}
    for name, make in policies.items():
        totals = Totals()
        for p in products:
            simulate(make(p), p, totals)
        out[name] = totals
    return out


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.ljust(w) if k == 0 else h.rjust(w)
            for k, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if k == 0 else c.rjust(w)
                for k, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def report(seed: int, count: int, results: dict[str, Totals], seconds: float) -> None:
    print(
        f"\nseed {seed}: {count} products, {SIM_DAYS} days simulated after {HISTORY_DAYS} "
        f"days of history ({seconds:.1f} s)"
    )
    headers = [
        "policy",
        "fill %",
        "stock-out days",
        "expired units",
        "expired value",
        "expired/issued %",
        "avg stock value",
        "orders",
        "holding",
        "shortage",
        "ordering",
        "total cost",
    ]
    rows = []
    for name, t in results.items():
        rows.append(
            [
                name,
                f"{100 * t.issued / max(t.demanded, 1):.2f}",
                f"{t.stockout_days}",
                f"{t.expired_units:,.0f}",
                f"{t.expired_value:,.0f}",
                f"{100 * t.expired_value / max(t.issued_value, 1e-9):.2f}",
                f"{t.stock_value_days / SIM_DAYS:,.0f}",
                f"{t.orders}",
                f"{t.holding:,.0f}",
                f"{t.shortage:,.0f}",
                f"{t.ordering:,.0f}",
                f"{t.total_cost:,.0f}",
            ]
        )
    print(table(headers, rows))
    ours = results["Apotheca"].total_cost
    minmax = results[f"min/max ({BUFFER_DAYS}-day buffer)"].total_cost
    minmax7 = results["min/max (7-day buffer)"].total_cost
    best = results["clairvoyant"].total_cost
    oracle = results["oracle (true distributions)"].total_cost
    print(
        f"cost ratios: Apotheca / min/max {ours / minmax:.3f} (aim <= 0.7), "
        f"/ min/max 7-day {ours / minmax7:.3f}, / clairvoyant {ours / best:.3f} (aim <= 1.3), "
        f"/ oracle {ours / oracle:.3f}; oracle / clairvoyant {oracle / best:.3f}"
    )
    fill = {
        name: "  ".join(
            f"{pat} {100 * (1 - s / max(d, 1)):.2f}" for pat, (d, s) in sorted(t.by_pattern.items())
        )
        for name, t in results.items()
    }
    for name, line in fill.items():
        print(f"  fill % by pattern, {name}: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="*")
    parser.add_argument("--products", type=int, default=240)
    args = parser.parse_args()
    for seed in args.seeds or [args.seed]:
        started = time.monotonic()
        results = run(seed, args.products)
        report(seed, args.products, results, time.monotonic() - started)


if __name__ == "__main__":
    main()
