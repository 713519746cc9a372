"""Budget- and space-constrained ordering across many products: a mixed-integer program.

When the suggestions together cost more than the budget or fill more than the shelves, which
ones should be cut? Each product i gets an integer number of packs n_i (and a binary y_i "order
at all", so a minimum order applies only when ordering), and the program minimises the expected
cost of the order over the planning horizon:

    stock-out:  p_i · E[(D_i - y)⁺]        D_i: demand over lead time + cycle
    expiry:     e_i · E[(y - U_i)⁺]        U_i: demand before the new stock expires
    holding:    h_i · E[(y - D_i)⁺]        what is still on the shelf at the end
    ordering:   K_i · y_i

with y = position_i + pack_i · n_i, D and U normal with the forecast's mean and sd (the normal
loss function sd·(φ(z) - z·(1 - Φ(z)))). Every term is convex in y, so their sum is replaced by
its piecewise-linear interpolation over a few breakpoints per product (`breakpoints`, spread
evenly over 0..the most packs worth considering, always including the integers at the ends):
an epigraph variable t_i ≥ each secant line, exact at the breakpoints and never below the true
cost between them; no extra binaries are needed because the function is convex.

Constraints: Σ pack_cost·n ≤ budget, Σ pack_volume·n ≤ free capacity, n_i ≥ minimum·y_i,
n_i ≤ max·y_i, and y_i = 1 for lines that must be ordered (a critical item below its reorder
point). HiGHS solves it under a time limit.

The answer names the binding constraint(s): a constraint binds when dropping it would lower the
expected cost (checked by re-solving without it), which is what a manager asks ("is it the money
or the shelves?"), rather than a slack near zero, which can happen by accident. It degrades
instead of raising: when the must-order minimums alone do not fit, the lowest-priority ones stop
being mandatory (and the plan says which); when the solver stops at its time limit, its best
solution is returned; when it finds none, a greedy fill (best cost reduction per unit of the
scarcest resource) is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from server.core.errors import InvalidInput
from server.replenishment.rules import MAX_QUANTITY, _integer, _number

DEFAULT_TIME_LIMIT = 10.0  # seconds for the whole plan (all solves together)
DEFAULT_BREAKPOINTS = 9
MAX_LINES = 100_000


class PlanStatus(StrEnum):
    OPTIMAL = "OPTIMAL"
    TIME_LIMIT = "TIME_LIMIT"  # the solver's best solution when the clock ran out
    HEURISTIC = "HEURISTIC"  # the solver found nothing in time: a greedy fill


class PlanConstraint(StrEnum):
    BUDGET = "BUDGET"
    SPACE = "SPACE"


@dataclass(frozen=True)
class OrderLine:
    """One product that may be ordered; quantities in units, costs per unit unless 'pack'."""

    product_id: int
    position: float
    demand_mean: float  # over lead time + cycle
    demand_sd: float
    pack_size: int
    pack_cost: float
    pack_volume: float = 0.0
    minimum_packs: int = 0
    max_packs: int | None = None  # e.g. the shelf-life cap in packs
    stockout_cost: float = 0.0
    holding_cost: float = 0.0
    ordering_cost: float = 0.0
    expiry_cost: float = 0.0
    usable_mean: float | None = None  # demand before expiry; None: does not expire in time
    usable_sd: float = 0.0
    priority: int = 0  # lower is more important (ProductClass order)
    must_order: bool = False

    def __post_init__(self) -> None:
        _integer("product_id", self.product_id, lo=-MAX_QUANTITY)
        _number("position", self.position, lo=-MAX_QUANTITY)
        for name in (
            "demand_mean",
            "demand_sd",
            "pack_cost",
            "pack_volume",
            "stockout_cost",
            "holding_cost",
            "ordering_cost",
            "expiry_cost",
            "usable_sd",
        ):
            _number(name, getattr(self, name), hi=1e12)
        _integer("pack_size", self.pack_size, lo=1)
        _integer("minimum_packs", self.minimum_packs)
        if self.max_packs is not None:
            _integer("max_packs", self.max_packs)
        if self.usable_mean is not None:
            _number("usable_mean", self.usable_mean)
        _integer("priority", self.priority, lo=-1000, hi=1000)


@dataclass
class Plan:
    status: PlanStatus
    packs: dict[int, int]
    quantities: dict[int, int]
    expected_cost: float
    spend: float
    volume: float
    binding: list[PlanConstraint]
    dropped: list[int] = field(default_factory=list)  # must-orders that no longer had to be
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _loss(mean: float, sd: float, y: np.ndarray) -> np.ndarray:
    """E[(D - y)⁺] for D ~ normal(mean, sd); with sd = 0, (mean - y)⁺."""
    if sd <= 0:
        return np.maximum(mean - y, 0.0)
    from scipy.stats import norm

    z = (y - mean) / sd
    return sd * (norm.pdf(z) - z * norm.sf(z))


def expected_cost(line: OrderLine, quantity: np.ndarray) -> np.ndarray:
    """Expected stock-out + expiry + holding cost of ordering `quantity` units (no ordering)."""
    y = line.position + np.asarray(quantity, dtype=float)
    short = _loss(line.demand_mean, line.demand_sd, y)
    left = y - line.demand_mean + short
    cost = line.stockout_cost * short + line.holding_cost * left
    if line.usable_mean is not None and line.expiry_cost > 0:
        expired = y - line.usable_mean + _loss(line.usable_mean, line.usable_sd, y)
        cost = cost + line.expiry_cost * expired
    return cost


def _upper_packs(line: OrderLine) -> int:
    """The most packs worth considering: enough to cover demand + 4sd, never above max_packs."""
    need = line.demand_mean + 4 * line.demand_sd - line.position
    upper = max(math.ceil(max(need, 0.0) / line.pack_size), line.minimum_packs, 1)
    if line.max_packs is not None:
        upper = min(upper, line.max_packs)
    return int(min(upper, MAX_QUANTITY // line.pack_size))


def _segments(line: OrderLine, upper: int, breakpoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Secant lines (slope per pack, intercept) of the convex cost over 0..upper packs."""
    if upper == 0:
        c0 = float(expected_cost(line, np.array([0.0]))[0])
        return np.array([0.0]), np.array([c0])
    points = np.unique(np.round(np.linspace(0, upper, min(breakpoints, upper + 1))).astype(int))
    costs = expected_cost(line, points * line.pack_size)
    slopes = np.diff(costs) / np.diff(points)
    intercepts = costs[:-1] - slopes * points[:-1]
    return slopes, intercepts


def optimise_orders(
    lines: Sequence[OrderLine],
    *,
    budget: float | None = None,
    capacity: float | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    breakpoints: int = DEFAULT_BREAKPOINTS,
) -> Plan:
    """The packs to order per product under a budget and a free storage capacity (None: no
    limit). Never raises on a feasible-but-tight problem; see the module docstring."""
    started = time.monotonic()
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines per plan", field="lines")
    if budget is not None:
        budget = _number("budget", budget, hi=1e15)
    if capacity is not None:
        capacity = _number("capacity", capacity, lo=-1e15, hi=1e15)
    time_limit = _number("time_limit", time_limit, lo=0.01, hi=3600)
    breakpoints = _integer("breakpoints", breakpoints, lo=2, hi=200)
    ids = [line.product_id for line in lines]
    if len(set(ids)) != len(ids):
        raise InvalidInput("a product appears twice in one plan", field="product_id")
    messages: list[str] = []
    if capacity is not None and capacity < 0:
        messages.append(f"the store is already over capacity by {-capacity:g}: no room to order")
        capacity = 0.0
    if not lines:
        return Plan(PlanStatus.OPTIMAL, {}, {}, 0.0, 0.0, 0.0, [], [], messages)

    lines, dropped = _fit_mandatory(list(lines), budget, capacity, messages)
    uppers = [_upper_packs(line) for line in lines]
    for k, line in enumerate(lines):
        if line.minimum_packs > uppers[k]:
            messages.append(
                f"product {line.product_id}: its minimum of {line.minimum_packs} packs is above "
                f"its cap of {uppers[k]}: not ordered"
            )
            uppers[k] = 0
    model = _Model(lines, uppers, breakpoints)

    def remaining() -> float:
        return max(0.05, time_limit - (time.monotonic() - started))

    solution = model.solve(budget, capacity, remaining())
    if solution is None:
        packs = _greedy(lines, uppers, budget, capacity)
        status = PlanStatus.HEURISTIC
        messages.append("the solver found no solution in time: a greedy fill is returned")
    else:
        packs, optimal = solution
        status = PlanStatus.OPTIMAL if optimal else PlanStatus.TIME_LIMIT
    cost = model.cost(packs)

    binding: list[PlanConstraint] = []
    for name, limit in ((PlanConstraint.BUDGET, budget), (PlanConstraint.SPACE, capacity)):
        if limit is None:
            continue
        relaxed = model.solve(
            None if name is PlanConstraint.BUDGET else budget,
            None if name is PlanConstraint.SPACE else capacity,
            remaining() / 2,
        )
        if relaxed is not None and model.cost(relaxed[0]) < cost - 1e-6 * max(1.0, abs(cost)):
            binding.append(name)
    spend = float(sum(line.pack_cost * n for line, n in zip(lines, packs, strict=True)))
    volume = float(sum(line.pack_volume * n for line, n in zip(lines, packs, strict=True)))
    if binding:
        messages.append("bound by " + " and ".join(b.value.lower() for b in binding))
    else:
        messages.append("no constraint binds: every product gets its unconstrained best order")
    return Plan(
        status,
        {line.product_id: int(n) for line, n in zip(lines, packs, strict=True)},
        {line.product_id: int(n) * line.pack_size for line, n in zip(lines, packs, strict=True)},
        cost,
        spend,
        volume,
        binding,
        dropped,
        messages,
        time.monotonic() - started,
    )


def _fit_mandatory(
    lines: list[OrderLine], budget: float | None, capacity: float | None, messages: list[str]
) -> tuple[list[OrderLine], list[int]]:
    """Make must-orders optional, lowest priority (then largest spend) first, until their
    minimums fit the budget and the capacity; the rest of the problem is then always feasible
    (ordering nothing is)."""
    from dataclasses import replace

    def minimum(line: OrderLine) -> int:
        return max(line.minimum_packs, 1)

    must = [k for k, line in enumerate(lines) if line.must_order]
    must.sort(key=lambda k: (-lines[k].priority, -lines[k].pack_cost * minimum(lines[k])))
    dropped: list[int] = []

    def fits() -> bool:
        kept = [lines[k] for k in must if lines[k].must_order]
        spend = sum(line.pack_cost * minimum(line) for line in kept)
        volume = sum(line.pack_volume * minimum(line) for line in kept)
        return (budget is None or spend <= budget + 1e-9) and (
            capacity is None or volume <= capacity + 1e-9
        )

    for k in must:
        if fits():
            break
        line = lines[k]
        lines[k] = replace(line, must_order=False)
        dropped.append(line.product_id)
        messages.append(
            f"product {line.product_id} (priority {line.priority}) must be ordered but its "
            f"minimum does not fit with the others: left to the optimiser"
        )
    # a must-order capped at zero packs (no shelf life left, say) cannot be forced either
    for k, line in enumerate(lines):
        if line.must_order and line.max_packs is not None and line.max_packs < minimum(line):
            lines[k] = replace(line, must_order=False)
            dropped.append(line.product_id)
            messages.append(
                f"product {line.product_id} must be ordered but its cap of {line.max_packs} "
                f"packs is below its minimum"
            )
    return lines, dropped


class _Model:
    """The MILP's fixed parts, re-solved with and without each constraint."""

    def __init__(self, lines: Sequence[OrderLine], uppers: Sequence[int], breakpoints: int):
        from scipy.sparse import coo_matrix

        self.lines = lines
        n = len(lines)
        self.n = n
        self.uppers = np.array(uppers, dtype=float)
        self.segments = [
            _segments(line, upper, breakpoints) for line, upper in zip(lines, uppers, strict=True)
        ]
        # variables: packs n_i (integer), order y_i (binary), cost t_i (continuous)
        self.c = np.concatenate(
            [np.zeros(n), np.array([line.ordering_cost for line in lines]), np.ones(n)]
        )
        rows, cols, vals, lo, hi = [], [], [], [], []
        r = 0
        for i, (slopes, intercepts) in enumerate(self.segments):
            for slope, intercept in zip(slopes, intercepts, strict=True):
                # t_i - slope·n_i ≥ intercept
                rows += [r, r]
                cols += [2 * n + i, i]
                vals += [1.0, -float(slope)]
                lo.append(float(intercept))
                hi.append(np.inf)
                r += 1
        for i, line in enumerate(lines):
            # n_i - upper·y_i ≤ 0 and n_i - minimum·y_i ≥ 0
            rows += [r, r, r + 1, r + 1]
            cols += [i, n + i, i, n + i]
            vals += [
                1.0,
                -float(uppers[i]),
                1.0,
                -float(min(max(line.minimum_packs, 1), uppers[i])),
            ]
            lo += [-np.inf, 0.0]
            hi += [0.0, np.inf]
            r += 2
        self.a = coo_matrix((vals, (rows, cols)), shape=(r, 3 * n)).tocsr()
        self.lo, self.hi = np.array(lo), np.array(hi)
        self.cost_row = np.concatenate(
            [np.array([line.pack_cost for line in lines]), np.zeros(2 * n)]
        )
        self.volume_row = np.concatenate(
            [np.array([line.pack_volume for line in lines]), np.zeros(2 * n)]
        )
        y_low = np.array(
            [
                1.0 if line.must_order and upper > 0 else 0.0
                for line, upper in zip(lines, uppers, strict=True)
            ]
        )
        self.bounds_lo = np.concatenate([np.zeros(n), y_low, np.full(n, -np.inf)])
        self.bounds_hi = np.concatenate([self.uppers, np.ones(n), np.full(n, np.inf)])
        self.integrality = np.concatenate([np.ones(2 * n), np.zeros(n)])

    def solve(
        self, budget: float | None, capacity: float | None, seconds: float
    ) -> tuple[np.ndarray, bool] | None:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import vstack

        blocks, lo, hi = [self.a], [self.lo], [self.hi]
        if budget is not None:
            blocks.append(self.cost_row.reshape(1, -1))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([budget]))
        if capacity is not None:
            blocks.append(self.volume_row.reshape(1, -1))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([capacity]))
        a = vstack(blocks).tocsr() if len(blocks) > 1 else self.a
        result = milp(
            self.c,
            constraints=LinearConstraint(a, np.concatenate(lo), np.concatenate(hi)),
            integrality=self.integrality,
            bounds=Bounds(self.bounds_lo, self.bounds_hi),
            options={"time_limit": seconds, "mip_rel_gap": 1e-6, "presolve": True},
        )
        if result.x is None:
            return None
        packs = np.round(result.x[: self.n]).astype(int)
        return packs, result.status == 0

    def cost(self, packs: Sequence[int] | np.ndarray) -> float:
        """The exact expected cost of a plan (not the piecewise-linear one)."""
        total = 0.0
        for line, n in zip(self.lines, packs, strict=True):
            total += float(expected_cost(line, np.array([n * line.pack_size]))[0])
            if n > 0:
                total += line.ordering_cost
        return total


def _greedy(
    lines: Sequence[OrderLine],
    uppers: Sequence[int],
    budget: float | None,
    capacity: float | None,
) -> np.ndarray:
    """A feasible plan without the solver: must-order minimums first, then one order at a time,
    the one that saves the most expected cost per share of the scarcer resource."""
    packs = np.zeros(len(lines), dtype=int)
    spend = volume = 0.0
    for k, line in enumerate(lines):
        if line.must_order and uppers[k] > 0:
            packs[k] = min(max(line.minimum_packs, 1), uppers[k])
            spend += line.pack_cost * packs[k]
            volume += line.pack_volume * packs[k]
    while True:
        best, best_k, best_step = 0.0, -1, 0
        for k, line in enumerate(lines):
            step = max(line.minimum_packs, 1) if packs[k] == 0 else 1
            if packs[k] + step > uppers[k]:
                continue
            if budget is not None and spend + line.pack_cost * step > budget + 1e-9:
                continue
            if capacity is not None and volume + line.pack_volume * step > capacity + 1e-9:
                continue
            now, then = expected_cost(
                line, np.array([packs[k], packs[k] + step], dtype=float) * line.pack_size
            )
            saving = now - then - (line.ordering_cost if packs[k] == 0 else 0.0)
            use = (line.pack_cost * step / budget if budget else 0.0) + (
                line.pack_volume * step / capacity if capacity else 0.0
            )
            score = saving / max(use, 1e-12)
            if saving > 0 and score > best:
                best, best_k, best_step = score, k, step
        if best_k < 0:
            return packs
        packs[best_k] += best_step
        spend += lines[best_k].pack_cost * best_step
        volume += lines[best_k].pack_volume * best_step
