"""Pure replenishment rules: lead time, lead-time demand, safety stock, reorder point, order-up-to
level, inventory position, order quantity, contract choice, shelf-life cap and ward par levels.

No I/O: the service gathers the numbers (deliveries, contracts, balances, open lines, forecasts)
and these functions turn them into suggestions, each with `why`, every number behind it.

The policy is a periodic-review (R, s, S): every review period R the inventory position is
compared with the reorder point s, the demand expected over lead time + review period plus a
safety stock; below s an order brings the position up to S = s + a cycle quantity (the economic
order quantity, never less than one review period's demand), rounded up to whole packs, at least
the contract's minimum, and never more than the forecast says will be used before the stock
expires.

Lead-time demand combines forecast uncertainty and lead-time variability with the standard
formula sd² = Σsd_t² + d²·sd_L² (Σsd_t² is L·sd_d² generalised to a forecast whose spread changes
period by period). It was chosen over a quantile convolution because it is closed-form, cheap
for thousands of items and every term can be shown to the pharmacist; the shape that matters for
slow, skewed demand is restored by taking the reorder point from a gamma distribution with that
mean and variance (`Distribution.GAMMA`, the default), which never goes negative and has the
right-hand tail a normal lacks when the mean is only a few units.

Lead times are not normal either: most deliveries come near the promised day and a few come
very late. Once there are enough measured deliveries (MIN_LEAD_TIME_OBSERVATIONS), the reorder
point is therefore also computed by a quantile convolution: the service-level quantile of the
mixture, over the observed lead times l_j, of demand over l_j + R; the reorder point is the
larger of the two answers (the formula's, and the convolution's, which sees the late tail the
formula's sd_L averages away). With fewer deliveries, the formula with a floored spread.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from server.core.errors import InvalidInput

MAX_QUANTITY = 2**31 - 1  # what the database's integer columns hold; anything above is refused
MAX_DAYS = 3660  # ten years: a lead time, review period or shelf life beyond this is a typo

MIN_LEAD_TIME_OBSERVATIONS = 5  # fewer deliveries than this cannot measure a spread
LEAD_TIME_SPREAD_FLOOR = 0.25  # sd_L is at least this share of the mean when evidence is thin
LEAD_TIME_MIN_SD_DAYS = 0.5  # even a perfectly regular supplier is half a day either way
LEAD_TIME_SAMPLES = 50  # the convolution uses the latest deliveries only (suppliers change)

DEFAULT_REVIEW_DAYS = 1.0  # suggestions are recomputed daily
DEFAULT_HOLDING_RATE = 0.25  # a year's holding cost as a share of unit cost (capital, space, risk)
DEFAULT_ORDERING_COST = 15.0  # cost of one purchase-order line (raising, receiving, paying)
MAX_CYCLE_DAYS = 90.0  # never order more than a quarter's demand in one go (keeps stock fresh)


class ProductClass(StrEnum):
    CRITICAL = "CRITICAL"  # life-saving, no substitute: a stock-out harms a patient
    CONTROLLED = "CONTROLLED"  # scheduled drugs: emergency procurement is slow and audited
    STANDARD = "STANDARD"
    NON_ESSENTIAL = "NON_ESSENTIAL"  # substitutes exist, a short wait is acceptable


# Target cycle service level: the probability that demand over lead time + review period is met
# from stock. Critical and controlled items are protected harder because their stock-out costs
# more than the extra stock does.
SERVICE_LEVELS: Mapping[ProductClass, float] = {
    ProductClass.CRITICAL: 0.995,
    ProductClass.CONTROLLED: 0.99,
    ProductClass.STANDARD: 0.98,
    ProductClass.NON_ESSENTIAL: 0.95,
}


# What a unit short costs, as a multiple of its unit price: the emergency purchase, the nurse's
# time, the substitute, and for critical items the harm a delay risks. Used by the budget plan
# (which lines to cut first) and for each item's newsvendor service level.
STOCKOUT_COST_MULTIPLE: Mapping[ProductClass, float] = {
    ProductClass.CRITICAL: 20.0,
    ProductClass.CONTROLLED: 10.0,
    ProductClass.STANDARD: 5.0,
    ProductClass.NON_ESSENTIAL: 2.0,
}


class Distribution(StrEnum):
    NORMAL = "NORMAL"
    GAMMA = "GAMMA"


class LeadTimeSource(StrEnum):
    MEASURED = "MEASURED"  # enough deliveries: their mean and spread
    FEW_DELIVERIES = "FEW_DELIVERIES"  # some deliveries: blended with the contract, floored spread
    CONTRACT = "CONTRACT"  # none yet: the contract's lead time, floored spread


class SuggestionKind(StrEnum):
    PURCHASE = "PURCHASE"
    TRANSFER = "TRANSFER"


class SuggestionReason(StrEnum):
    """Why a suggestion is zero or smaller than the order-up-to level asks for."""

    ABOVE_REORDER_POINT = "ABOVE_REORDER_POINT"
    NO_VALID_CONTRACT = "NO_VALID_CONTRACT"
    CAPPED_BY_SHELF_LIFE = "CAPPED_BY_SHELF_LIFE"
    SHELF_LIFE_BELOW_MINIMUM = "SHELF_LIFE_BELOW_MINIMUM"
    CAPPED_BY_CENTRAL_STOCK = "CAPPED_BY_CENTRAL_STOCK"
    NO_CENTRAL_STOCK = "NO_CENTRAL_STOCK"


# --- input checks --------------------------------------------------------------------------------


def _number(name: str, value: Any, *, lo: float = 0.0, hi: float = MAX_QUANTITY) -> float:
    """A finite number in [lo, hi], or a refusal naming the field (NaN, inf, negative, 2^31)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidInput(f"{name} must be a number, got {value!r}", field=name)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number, got {value!r}", field=name)
    if number < lo:
        raise InvalidInput(f"{name} must be at least {lo:g}, got {value!r}", field=name)
    if number > hi:
        raise InvalidInput(f"{name} must be at most {hi:g}, got {value!r}", field=name)
    return number


def _integer(name: str, value: Any, *, lo: int = 0, hi: int = MAX_QUANTITY) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, got {value!r}", field=name)
    if value < lo or value > hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {value!r}", field=name)
    return value


def _r(value: float) -> float:
    """Numbers in `why` are rounded for reading; the arithmetic uses the exact ones."""
    return round(value, 3)


# --- service level -------------------------------------------------------------------------------


def service_level(product_class: ProductClass | str) -> float:
    try:
        return SERVICE_LEVELS[ProductClass(product_class)]
    except ValueError:
        raise InvalidInput(
            f"unknown product class {product_class!r}", field="product_class"
        ) from None


MAX_SERVICE_LEVEL = 0.999  # beyond z = 3.1 the forecast's tail, not the policy, decides


def target_service_level(
    product_class: ProductClass | str,
    rate_per_day: float,
    cycle: float,
    *,
    holding_rate: float = DEFAULT_HOLDING_RATE,
) -> tuple[float, dict[str, Any]]:
    """The newsvendor service level of one item: the critical ratio p / (p + h·T), with p the
    cost of a unit short (STOCKOUT_COST_MULTIPLE times its price), h·T its holding over one order
    cycle T = cycle / rate (the (s, Q) optimum: the chance of running short in a cycle equals
    h·Q / (p·D)), never below the class minimum and never above MAX_SERVICE_LEVEL.

    Prices cancel (both costs are per unit of value), so the ratio depends on the class and the
    cycle: an item ordered every few days meets its risk of running short many times a year,
    and each exposure must be protected harder than for one ordered once a quarter.
    """
    cls = ProductClass(product_class)
    floor = service_level(cls)
    rate = _number("rate_per_day", rate_per_day)
    cycle = _number("cycle_quantity", cycle)
    h = _number("holding_rate", holding_rate, hi=10)
    why: dict[str, Any] = {"class_service_level": floor}
    if rate <= 0 or cycle <= 0:
        return floor, why | {"service_level_rule": "CLASS"}
    cycle_days = min(cycle / rate, MAX_CYCLE_DAYS)
    multiple = STOCKOUT_COST_MULTIPLE[cls]
    holding = h * cycle_days / 365
    ratio = multiple / (multiple + holding)
    level = min(max(ratio, floor), MAX_SERVICE_LEVEL)
    return level, why | {
        "service_level_rule": "CLASS" if level == floor else "CRITICAL_RATIO",
        "cycle_days": _r(cycle_days),
        "stockout_cost_multiple": multiple,
        "holding_over_cycle_multiple": round(holding, 5),
        "critical_ratio": round(ratio, 5),
    }


def z_score(level: float) -> float:
    """The standard normal quantile of a service level (0.98 → 2.054)."""
    level = _number("service_level", level, lo=0.5, hi=0.9999)
    return NormalDist().inv_cdf(level)


# --- lead time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadTime:
    mean_days: float
    sd_days: float
    observations: int
    source: LeadTimeSource
    why: dict[str, Any] = field(default_factory=dict)
    samples: tuple[float, ...] = ()  # measured lead times (latest last) when MEASURED


def _days_between(ordered: date | datetime, received: date | datetime) -> float:
    if isinstance(ordered, datetime) != isinstance(received, datetime):
        raise InvalidInput("a delivery's dates must both be dates or both datetimes")
    if isinstance(ordered, datetime):
        days = (received - ordered).total_seconds() / 86400  # type: ignore[operator]
    elif isinstance(ordered, date):
        days = float((received - ordered).days)  # type: ignore[operator]
    else:
        raise InvalidInput(f"ordered_at must be a date, got {ordered!r}", field="ordered_at")
    if days < 0:
        raise InvalidInput(
            f"a delivery was received ({received}) before it was ordered ({ordered})",
            field="received_at",
        )
    return days


def measured_lead_time(
    deliveries: Iterable[tuple[date | datetime, date | datetime]],
    contract_days: float,
    *,
    min_observations: int = MIN_LEAD_TIME_OBSERVATIONS,
    spread_floor: float = LEAD_TIME_SPREAD_FLOOR,
) -> LeadTime:
    """The supplier's lead time from (ordered_at, received_at) pairs of real deliveries.

    Contracts promise; deliveries tell. With enough deliveries their mean and standard deviation
    are used. With a few, the mean is shrunk toward the contract (one late delivery is not a new
    lead time: the contract counts as one observation) and the spread is floored at
    `spread_floor` of the mean, because two close deliveries prove no regularity. With none, the
    contract's lead time with the floored spread.
    """
    contract = _number("contract_lead_time_days", contract_days, hi=MAX_DAYS)
    observed = [_days_between(o, r) for o, r in deliveries]
    for days in observed:
        _number("lead_time_days", days, hi=MAX_DAYS)
    n = len(observed)
    floor = max(LEAD_TIME_MIN_SD_DAYS, spread_floor * contract)
    if n == 0:
        return LeadTime(
            contract,
            floor,
            0,
            LeadTimeSource.CONTRACT,
            {"contract_days": contract, "observations": 0, "sd_floor": _r(floor)},
        )
    mean = sum(observed) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in observed) / (n - 1)) if n > 1 else 0.0
    why: dict[str, Any] = {
        "contract_days": contract,
        "observations": n,
        "observed_mean_days": _r(mean),
        "observed_sd_days": _r(sd),
    }
    if n >= min_observations:
        used_sd = max(sd, LEAD_TIME_MIN_SD_DAYS)
        samples = tuple(observed[-LEAD_TIME_SAMPLES:])
        return LeadTime(mean, used_sd, n, LeadTimeSource.MEASURED, why, samples)
    blended = (n * mean + contract) / (n + 1)
    used_sd = max(sd, spread_floor * blended, LEAD_TIME_MIN_SD_DAYS)
    why |= {"blended_mean_days": _r(blended), "sd_floor": _r(spread_floor * blended)}
    return LeadTime(blended, used_sd, n, LeadTimeSource.FEW_DELIVERIES, why)


# --- demand forecast (input) ---------------------------------------------------------------------


@dataclass(frozen=True)
class DemandForecast:
    """Per-period forecast means and standard deviations, starting today.

    `period_days` is the forecast's granularity (1 daily, 7 weekly, ~30.44 monthly); lead times
    and review periods are in days and converted.
    """

    mean: tuple[float, ...]
    sd: tuple[float, ...]
    period_days: float = 1.0

    def __post_init__(self) -> None:
        if not self.mean:
            raise InvalidInput("a forecast needs at least one period", field="mean")
        if len(self.mean) != len(self.sd):
            raise InvalidInput("a forecast needs one spread per period", field="sd")
        if len(self.mean) > 100_000:
            raise InvalidInput("a forecast of more than 100,000 periods is refused", field="mean")
        _number("period_days", self.period_days, lo=1e-3, hi=366)
        for k, (m, s) in enumerate(zip(self.mean, self.sd, strict=True)):
            _number(f"mean[{k}]", m)
            _number(f"sd[{k}]", s)

    @classmethod
    def from_intervals(
        cls,
        mean: Sequence[float],
        upper: Mapping[float, Sequence[float]],
        *,
        period_days: float = 1.0,
    ) -> DemandForecast:
        """From points and the upper bounds of central intervals ({0.8: hi80, 0.95: hi95}).

        sd_t is the largest (hi - mean) / z of the given levels: the upper half-width, because
        safety stock protects against the upper tail, and the largest, because a calibrated 95 %
        interval that is wider than a normal one says the tail is heavy.
        """
        if not upper:
            raise InvalidInput("at least one interval is needed", field="upper")
        sds = [0.0] * len(mean)
        for level, highs in upper.items():
            level = _number("interval_level", level, lo=0.5, hi=0.999)
            if len(highs) != len(mean):
                raise InvalidInput("an interval needs one bound per period", field="upper")
            z = NormalDist().inv_cdf((1 + level) / 2)
            for k, (m, hi) in enumerate(zip(mean, highs, strict=True)):
                m = _number(f"mean[{k}]", m)
                hi = _number(f"upper[{k}]", hi)
                if hi < m:
                    raise InvalidInput(f"upper bound {hi} below the mean {m}", field="upper")
                sds[k] = max(sds[k], (hi - m) / z)
        return cls(tuple(float(m) for m in mean), tuple(sds), period_days)

    def total(self, days: float) -> tuple[float, float]:
        """Mean and variance of demand over the next `days` (fractional periods are weighted;
        beyond the horizon the last period is repeated)."""
        periods = max(days / self.period_days, 0.0)
        cum_mean, cum_var = self._cumulative
        n = len(self.mean)
        k = int(periods)
        if k >= n:
            extra = periods - n
            return cum_mean[n] + extra * self.mean[-1], cum_var[n] + extra * self.sd[-1] ** 2
        frac = periods - k
        return cum_mean[k] + frac * self.mean[k], cum_var[k] + frac * self.sd[k] ** 2

    @functools.cached_property
    def _cumulative(self) -> tuple[list[float], list[float]]:
        return [0.0, *itertools.accumulate(self.mean)], [
            0.0,
            *itertools.accumulate(s * s for s in self.sd),
        ]

    def rate_at(self, days: float) -> float:
        """Demand per day around day `days`: what one more day of lead time costs."""
        i = min(int(days / self.period_days), len(self.mean) - 1)
        return self.mean[i] / self.period_days

    def horizon_days(self) -> float:
        return len(self.mean) * self.period_days


# --- lead-time demand, safety stock, reorder point ------------------------------------------------


@dataclass(frozen=True)
class LeadTimeDemand:
    mean: float
    sd: float
    protection_days: float
    why: dict[str, Any] = field(default_factory=dict)
    # (mean, variance) of demand over l_j + R for each measured lead time l_j: the convolution
    components: tuple[tuple[float, float], ...] = ()


def lead_time_demand(
    forecast: DemandForecast, lead_time: LeadTime, review_days: float = DEFAULT_REVIEW_DAYS
) -> LeadTimeDemand:
    """Demand over lead time + review period: sd² = Σsd_t² + d²·sd_L² (see the module docstring).

    Σsd_t² runs over the protection period (forecast errors of different periods taken as
    independent); d is the forecast rate at the end of the lead time, since a late delivery
    costs the days at that rate.
    """
    review = _number("review_days", review_days, lo=0, hi=MAX_DAYS)
    protection = lead_time.mean_days + review
    mean, demand_var = forecast.total(protection)
    rate = forecast.rate_at(lead_time.mean_days)
    lead_var = (rate * lead_time.sd_days) ** 2
    sd = math.sqrt(demand_var + lead_var)
    why = {
        "lead_time_days": _r(lead_time.mean_days),
        "lead_time_sd_days": _r(lead_time.sd_days),
        "lead_time_source": lead_time.source.value,
        "review_days": _r(review),
        "protection_days": _r(protection),
        "forecast_over_protection": _r(mean),
        "forecast_sd_over_protection": _r(math.sqrt(demand_var)),
        "demand_rate_per_day": _r(rate),
        "lead_time_variability_sd": _r(math.sqrt(lead_var)),
        "lead_time_demand_sd": _r(sd),
        "forecast_extended": protection > forecast.horizon_days(),
    }
    components = tuple(forecast.total(lead + review) for lead in lead_time.samples)
    return LeadTimeDemand(mean, sd, protection, why, components)


def demand_quantile(mean: float, sd: float, level: float, distribution: Distribution) -> float:
    """The `level` quantile of demand with this mean and sd (normal, or gamma by moments)."""
    if mean <= 0:
        return 0.0
    if sd <= 0:
        return mean
    if distribution is Distribution.NORMAL:
        return mean + NormalDist().inv_cdf(level) * sd
    from scipy.stats import gamma  # imported here: scipy.stats costs a noticeable import

    shape = (mean / sd) ** 2
    return float(gamma.ppf(level, shape, scale=sd**2 / mean))


def mixture_quantile(
    components: Sequence[tuple[float, float]], level: float, distribution: Distribution
) -> float:
    """The `level` quantile of an equal-weight mixture of demand distributions (one per
    measured lead time), by bisection on the mixture's distribution function."""
    import numpy as np
    from scipy.special import gammainc, ndtr

    means = np.array([m for m, _ in components], dtype=float)
    sds = np.sqrt(np.array([v for _, v in components], dtype=float))
    if not len(means) or means.max() <= 0:
        return 0.0
    lo, hi = (
        0.0,
        max(demand_quantile(m, s, level, distribution) for m, s in zip(means, sds, strict=True)),
    )
    hi = max(hi, float(means.max()))
    live = (means > 0) & (sds > 0)
    point = ~live  # zero spread: all mass at the mean

    m, s = means[live], sds[live]
    shape, scale = (m / s) ** 2, s**2 / np.where(m > 0, m, 1.0)

    def cdf(x: float) -> float:
        total = float(np.sum(point & (means <= x)))
        if live.any():
            if distribution is Distribution.NORMAL:
                total += float(ndtr((x - m) / s).sum())
            else:
                total += float(gammainc(shape, x / scale).sum())
        return total / len(means)

    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-3 * max(1.0, hi):
            break
    return hi


@dataclass(frozen=True)
class StockLevels:
    service_level: float
    z: float
    safety_stock: float
    reorder_point: float
    cycle_quantity: float
    order_up_to: float
    why: dict[str, Any] = field(default_factory=dict)


def cycle_quantity(
    rate_per_day: float,
    unit_cost: float,
    *,
    review_days: float = DEFAULT_REVIEW_DAYS,
    ordering_cost: float = DEFAULT_ORDERING_COST,
    holding_rate: float = DEFAULT_HOLDING_RATE,
) -> tuple[float, dict[str, Any]]:
    """How much one order should add on top of the reorder point: the economic order quantity
    sqrt(2·D·K / (h·c)), at least one review period's demand (otherwise the next review would
    order again) and at most MAX_CYCLE_DAYS of demand."""
    rate = _number("rate_per_day", rate_per_day)
    cost = _number("unit_cost", unit_cost)
    k = _number("ordering_cost", ordering_cost, hi=1e9)
    h = _number("holding_rate", holding_rate, hi=10)
    annual = rate * 365
    eoq = math.sqrt(2 * annual * k / (h * cost)) if cost > 0 and h > 0 else annual
    low, high = rate * review_days, rate * MAX_CYCLE_DAYS
    q = min(max(eoq, low), max(high, low))
    return q, {
        "annual_demand": _r(annual),
        "eoq": _r(eoq),
        "cycle_min_review_demand": _r(low),
        "cycle_max_days": MAX_CYCLE_DAYS,
        "cycle_quantity": _r(q),
    }


def stock_levels(
    demand: LeadTimeDemand,
    level: float,
    cycle: float,
    distribution: Distribution = Distribution.GAMMA,
) -> StockLevels:
    """Safety stock, reorder point s and order-up-to S = s + cycle quantity."""
    level = _number("service_level", level, lo=0.5, hi=0.9999)
    cycle = _number("cycle_quantity", cycle)
    z = NormalDist().inv_cdf(level)
    formula = demand_quantile(demand.mean, demand.sd, level, distribution)
    s, method, convolution = formula, "FORMULA", None
    if demand.components:
        convolution = mixture_quantile(demand.components, level, distribution)
        if convolution > formula:
            s, method = convolution, "CONVOLUTION"
    safety = s - demand.mean
    effective_z = safety / demand.sd if demand.sd > 0 else 0.0
    big_s = s + cycle
    return StockLevels(
        level,
        z,
        safety,
        s,
        cycle,
        big_s,
        demand.why
        | {
            "service_level": level,
            "z": _r(z),
            "distribution": distribution.value,
            "effective_z": _r(effective_z),
            "reorder_point_formula": _r(formula),
            "reorder_point_convolution": None if convolution is None else _r(convolution),
            "reorder_point_method": method,
            "safety_stock": _r(safety),
            "reorder_point": _r(s),
            "order_up_to": _r(big_s),
        },
    )


# --- inventory position --------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPurchaseLine:
    ordered: float
    received: float = 0.0


@dataclass(frozen=True)
class TransferLine:
    quantity: float
    status: str  # a TransferStatus value


_IN_TRANSIT = {"DISPATCHED"}  # left the source, not yet received
_ALLOCATED = {"APPROVED", "PICKED"}  # promised to another location, still on our shelves


@dataclass(frozen=True)
class InventoryPosition:
    on_hand: float
    on_order: float
    in_transit: float
    allocated: float

    @property
    def position(self) -> float:
        return self.on_hand + self.on_order + self.in_transit - self.allocated

    def why(self) -> dict[str, Any]:
        return {
            "on_hand": _r(self.on_hand),
            "on_order": _r(self.on_order),
            "in_transit": _r(self.in_transit),
            "allocated": _r(self.allocated),
            "position": _r(self.position),
        }


def inventory_position(
    on_hand: float,
    open_purchase_lines: Iterable[OpenPurchaseLine] = (),
    inbound_transfers: Iterable[TransferLine] = (),
    outbound_transfers: Iterable[TransferLine] = (),
) -> InventoryPosition:
    """On hand + on order (what open PO lines still owe) + in transit (transfers to us,
    dispatched, not received) - allocated (transfers from us approved, not yet dispatched).

    Decisions use the position, not the shelf: stock already ordered must not be ordered again,
    and stock promised to a ward is not ours to count.
    """
    hand = _number("on_hand", on_hand, lo=-MAX_QUANTITY)  # negative when a location allows it
    on_order = 0.0
    for line in open_purchase_lines:
        ordered = _number("ordered", line.ordered)
        received = _number("received", line.received)
        on_order += max(0.0, ordered - received)  # an over-delivery owes nothing, never less
    in_transit = sum(
        _number("quantity", t.quantity) for t in inbound_transfers if t.status in _IN_TRANSIT
    )
    allocated = sum(
        _number("quantity", t.quantity) for t in outbound_transfers if t.status in _ALLOCATED
    )
    return InventoryPosition(hand, on_order, in_transit, allocated)


# --- contracts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractTerms:
    supplier_id: int
    supplier: str
    reference: str
    valid_from: date
    valid_until: date
    unit_price: Decimal
    lead_time_days: int
    pack_size: int = 1
    minimum_order: int = 1  # units

    def __post_init__(self) -> None:
        _integer("pack_size", self.pack_size, lo=1)
        _integer("minimum_order", self.minimum_order, lo=0)
        _integer("lead_time_days", self.lead_time_days, lo=0, hi=MAX_DAYS)
        _number("unit_price", self.unit_price, hi=1e9)
        if self.valid_until < self.valid_from:
            raise InvalidInput("a contract ends before it starts", field="valid_until")

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_until


@dataclass(frozen=True)
class ContractChoice:
    contract: ContractTerms | None
    reason: str


def choose_contract(contracts: Iterable[ContractTerms], on: date) -> ContractChoice:
    """The contract to order under on `on`: only one valid that day; of those the lowest unit
    price, then the shortest lead time. None valid → no supplier suggestion, and the reason says
    which contracts exist and why each does not apply (ordering outside a contract is a
    procurement decision, not something to suggest)."""
    contracts = list(contracts)
    valid = [c for c in contracts if c.valid_on(on)]
    if valid:
        best = min(valid, key=lambda c: (c.unit_price, c.lead_time_days, c.reference))
        return ContractChoice(best, f"{best.reference} valid {best.valid_from}..{best.valid_until}")
    if not contracts:
        return ContractChoice(None, "no contract for this product")
    parts = [
        f"{c.reference} ended {c.valid_until}"
        if c.valid_until < on
        else f"{c.reference} starts {c.valid_from}"
        for c in sorted(contracts, key=lambda c: c.valid_from)
    ]
    return ContractChoice(None, f"no contract valid on {on}: " + "; ".join(parts))


# --- shelf life and order quantity ----------------------------------------------------------------


@dataclass(frozen=True)
class ShelfLifeCap:
    cap: float  # units that can still be used before the new stock expires
    why: dict[str, Any] = field(default_factory=dict)


def shelf_life_cap(
    forecast: DemandForecast, position: float, lead_days: float, shelf_life_days: float
) -> ShelfLifeCap:
    """The most an order may add: forecast demand from now until the new stock expires (arrival
    after the lead time + its typical remaining shelf life on receipt) minus the position, which
    is used first (first-expired-first-out). More than that is forecast to be thrown away."""
    lead = _number("lead_days", lead_days, hi=MAX_DAYS)
    life = _number("shelf_life_days", shelf_life_days, hi=MAX_DAYS)
    usable, _ = forecast.total(lead + life)
    cap = max(0.0, usable - position)
    return ShelfLifeCap(
        cap,
        {
            "shelf_life_on_receipt_days": _r(life),
            "forecast_until_expiry": _r(usable),
            "shelf_life_cap": _r(cap),
        },
    )


@dataclass(frozen=True)
class OrderQuantity:
    quantity: int
    packs: int
    reason: SuggestionReason | None
    why: dict[str, Any] = field(default_factory=dict)


def order_quantity(
    position: float,
    reorder_point: float,
    order_up_to: float,
    *,
    pack_size: int = 1,
    minimum_order: int = 0,
    cap: float | None = None,
) -> OrderQuantity:
    """Zero at or above the reorder point; below it, up to S, rounded UP to whole packs, at
    least the minimum order (itself rounded up to packs), and never above `cap` (the shelf-life
    cap: rounded DOWN to packs; when the minimum does not fit under it, nothing is suggested,
    since the contract cannot deliver an amount that will be used)."""
    position = _number("position", position, lo=-MAX_QUANTITY)
    s = _number("reorder_point", reorder_point)
    big_s = _number("order_up_to", order_up_to)
    pack = _integer("pack_size", pack_size, lo=1)
    moq = _integer("minimum_order", minimum_order)
    if big_s < s:
        raise InvalidInput("the order-up-to level is below the reorder point", field="order_up_to")
    why: dict[str, Any] = {
        "position": _r(position),
        "reorder_point": _r(s),
        "order_up_to": _r(big_s),
        "pack_size": pack,
        "minimum_order": moq,
    }
    if position >= s:
        return OrderQuantity(0, 0, SuggestionReason.ABOVE_REORDER_POINT, why | {"raw": 0})
    raw = big_s - position
    packs = math.ceil(raw / pack - 1e-9)
    why |= {"raw": _r(raw), "rounded_to_packs": packs}
    min_packs = math.ceil(moq / pack)
    if packs < min_packs:
        packs = min_packs
        why["raised_to_minimum_packs"] = packs
    reason = None
    if cap is not None:
        cap = _number("cap", cap)
        cap_packs = math.floor(cap / pack + 1e-9)
        why["cap_packs"] = cap_packs
        if packs > cap_packs:
            if cap_packs < max(min_packs, 1):
                why["packs"] = 0
                return OrderQuantity(0, 0, SuggestionReason.SHELF_LIFE_BELOW_MINIMUM, why)
            packs, reason = cap_packs, SuggestionReason.CAPPED_BY_SHELF_LIFE
    quantity = packs * pack
    if quantity > MAX_QUANTITY:
        raise InvalidInput("the suggested quantity does not fit a quantity column", field="raw")
    why |= {"packs": packs, "quantity": quantity}
    return OrderQuantity(quantity, packs, reason, why)


# --- suggestions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    kind: SuggestionKind
    product_id: int
    location_id: int
    quantity: int
    packs: int
    reason: SuggestionReason | None
    why: dict[str, Any]
    supplier_id: int | None = None
    contract_reference: str | None = None
    unit_price: Decimal | None = None
    source_location_id: int | None = None  # transfers: the central pharmacy

    @property
    def value(self) -> Decimal | None:
        return None if self.unit_price is None else self.unit_price * self.quantity


@dataclass(frozen=True)
class PurchaseItem:
    """Everything one purchase suggestion needs for one product at one location."""

    product_id: int
    location_id: int
    product_class: ProductClass
    forecast: DemandForecast
    position: InventoryPosition
    contracts: Sequence[ContractTerms]
    deliveries: Sequence[tuple[date | datetime, date | datetime]] = ()
    shelf_life_days: float | None = None  # typical remaining shelf life on receipt
    review_days: float = DEFAULT_REVIEW_DAYS
    ordering_cost: float = DEFAULT_ORDERING_COST
    holding_rate: float = DEFAULT_HOLDING_RATE
    distribution: Distribution = Distribution.GAMMA


def suggest_purchase(item: PurchaseItem, on: date) -> Suggestion:
    """What to order for one product today, from which contract, and why."""
    choice = choose_contract(item.contracts, on)
    base = item.position.why() | {"product_class": ProductClass(item.product_class).value}
    if choice.contract is None:
        return Suggestion(
            SuggestionKind.PURCHASE,
            item.product_id,
            item.location_id,
            0,
            0,
            SuggestionReason.NO_VALID_CONTRACT,
            base | {"contract": choice.reason},
        )
    contract = choice.contract
    lead = measured_lead_time(item.deliveries, contract.lead_time_days)
    demand = lead_time_demand(item.forecast, lead, item.review_days)
    rate = item.forecast.rate_at(lead.mean_days)
    cycle, cycle_why = cycle_quantity(
        rate,
        float(contract.unit_price),
        review_days=item.review_days,
        ordering_cost=item.ordering_cost,
        holding_rate=item.holding_rate,
    )
    level, level_why = target_service_level(
        item.product_class, rate, cycle, holding_rate=item.holding_rate
    )
    levels = stock_levels(demand, level, cycle, item.distribution)
    cap = None
    cap_why: dict[str, Any] = {}
    if item.shelf_life_days is not None:
        capped = shelf_life_cap(
            item.forecast, item.position.position, lead.mean_days, item.shelf_life_days
        )
        cap, cap_why = capped.cap, capped.why
    qty = order_quantity(
        item.position.position,
        levels.reorder_point,
        levels.order_up_to,
        pack_size=contract.pack_size,
        minimum_order=contract.minimum_order,
        cap=cap,
    )
    why = (
        base
        | lead.why
        | levels.why
        | cycle_why
        | level_why
        | cap_why
        | qty.why
        | {
            "contract": choice.reason,
            "supplier": contract.supplier,
            "unit_price": str(contract.unit_price),
            "value": str(contract.unit_price * qty.quantity),
        }
    )
    return Suggestion(
        SuggestionKind.PURCHASE,
        item.product_id,
        item.location_id,
        qty.quantity,
        qty.packs,
        qty.reason,
        why,
        supplier_id=contract.supplier_id,
        contract_reference=contract.reference,
        unit_price=contract.unit_price,
    )


# --- ward par levels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WardNeed:
    """One product on one ward, topped up from the central pharmacy."""

    ward_id: int
    product_id: int
    product_class: ProductClass
    forecast: DemandForecast
    position: InventoryPosition
    review_days: float = 1.0  # how often the ward is topped up
    delivery_days: float = 0.5  # central → ward: a porter round, not a supplier's lead time
    issue_unit: int = 1  # the ward receives whole packs of this many units


def ward_par_level(need: WardNeed) -> tuple[float, dict[str, Any]]:
    """Par = forecast over review + delivery time + z·sd over the same (normal: ward
    quantities are small counts, but the ward is topped up every review, so the tail risk is
    bounded by the next round)."""
    review = _number("review_days", need.review_days, lo=0, hi=MAX_DAYS)
    delivery = _number("delivery_days", need.delivery_days, hi=MAX_DAYS)
    mean, var = need.forecast.total(review + delivery)
    level = service_level(need.product_class)
    z = NormalDist().inv_cdf(level)
    safety = z * math.sqrt(var)
    par = mean + safety
    return par, {
        "review_days": _r(review),
        "delivery_days": _r(delivery),
        "forecast_over_review": _r(mean),
        "forecast_sd_over_review": _r(math.sqrt(var)),
        "service_level": level,
        "z": _r(z),
        "safety_stock": _r(safety),
        "par_level": _r(par),
    }


_PRIORITY = {c: k for k, c in enumerate(ProductClass)}  # CRITICAL first


def ward_transfer_suggestions(
    needs: Iterable[WardNeed],
    central_available: Mapping[int, float],
    *,
    central_location_id: int,
) -> list[Suggestion]:
    """Central → ward transfers that bring each ward's position up to its par level.

    Central's available stock (on hand - allocated, per product) caps the total; when it runs
    short, critical needs are served first, and within one class the wards share in proportion
    to their shortfall, in whole issue units."""
    rows = []
    for need in needs:
        unit = _integer("issue_unit", need.issue_unit, lo=1)
        par, why = ward_par_level(need)
        position = need.position.position
        raw = max(0.0, par - position)
        units = math.ceil(raw / unit - 1e-9) * unit if position < par else 0
        why = need.position.why() | why | {"raw": _r(raw), "rounded_to_issue_units": units}
        rows.append((need, unit, units, why))
    out: list[Suggestion] = []
    by_product: dict[int, list[tuple[WardNeed, int, int, dict[str, Any]]]] = {}
    for row in rows:
        by_product.setdefault(row[0].product_id, []).append(row)
    for product_id, group in by_product.items():
        available = _number(
            "central_available", central_available.get(product_id, 0.0), lo=-MAX_QUANTITY
        )
        left = max(0.0, available)
        group.sort(key=lambda r: (_PRIORITY[ProductClass(r[0].product_class)], r[0].ward_id))
        classes: dict[ProductClass, list[tuple[WardNeed, int, int, dict[str, Any]]]] = {}
        for row in group:
            classes.setdefault(ProductClass(row[0].product_class), []).append(row)
        for cls_rows in classes.values():
            wanted = sum(r[2] for r in cls_rows)
            share = 1.0 if wanted <= left else left / wanted
            for need, unit, units, why in cls_rows:
                give = units if share >= 1 else math.floor(units * share / unit) * unit
                give = int(min(give, left))
                left -= give
                reason = None
                if units == 0:
                    reason = SuggestionReason.ABOVE_REORDER_POINT
                elif give == 0:
                    reason = SuggestionReason.NO_CENTRAL_STOCK
                elif give < units:
                    reason = SuggestionReason.CAPPED_BY_CENTRAL_STOCK
                out.append(
                    Suggestion(
                        SuggestionKind.TRANSFER,
                        product_id,
                        need.ward_id,
                        give,
                        give // unit,
                        reason,
                        why
                        | {
                            "central_available": _r(available),
                            "central_share": _r(share),
                            "quantity": give,
                        },
                        source_location_id=central_location_id,
                    )
                )
    return out
