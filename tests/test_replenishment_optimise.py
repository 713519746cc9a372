"""The ordering MILP: it respects the budget and the capacity, names what binds, and degrades
instead of failing when the must-orders do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from server.core.errors import InvalidInput
from server.replenishment.optimise import (
    OrderLine,
    PlanConstraint,
    PlanStatus,
    _greedy,
    _upper_packs,
    expected_cost,
    optimise_orders,
)


def line(pid: int, **changes: object) -> OrderLine:
    base: dict[str, object] = {
        "product_id": pid,
        "position": 0.0,
        "demand_mean": 100.0,
        "demand_sd": 20.0,
        "pack_size": 10,
        "pack_cost": 20.0,  # 2.00 a unit
        "pack_volume": 1.0,
        "stockout_cost": 10.0,
        "holding_cost": 0.2,
        "ordering_cost": 5.0,
    }
    return OrderLine(**(base | changes))  # type: ignore[arg-type]


def lines(n: int = 12) -> list[OrderLine]:
    rng = np.random.default_rng(3)
    return [
        line(
            i,
            demand_mean=float(rng.uniform(20, 200)),
            demand_sd=float(rng.uniform(5, 40)),
            pack_cost=float(rng.uniform(5, 60)),
            pack_volume=float(rng.uniform(0.5, 3)),
            stockout_cost=float(rng.uniform(2, 20)),
        )
        for i in range(n)
    ]


def test_unconstrained_plan_orders_about_the_newsvendor_quantity() -> None:
    plan = optimise_orders([line(1)])
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.binding == []
    # critical ratio 10 / 10.2 ≈ 0.98 → about mean + 2.05·sd = 141 units: 14 or 15 packs
    assert plan.packs[1] in (14, 15)
    assert plan.quantities[1] == plan.packs[1] * 10


def test_the_budget_is_respected_and_named_when_it_binds() -> None:
    free = optimise_orders(lines())
    budget = free.spend * 0.5
    plan = optimise_orders(lines(), budget=budget)
    assert plan.spend <= budget + 1e-6
    assert plan.binding == [PlanConstraint.BUDGET]
    assert plan.expected_cost > free.expected_cost
    assert plan.spend == pytest.approx(sum(x.pack_cost * plan.packs[x.product_id] for x in lines()))


def test_the_capacity_is_respected_and_named_when_it_binds() -> None:
    free = optimise_orders(lines())
    capacity = free.volume * 0.4
    plan = optimise_orders(lines(), capacity=capacity, budget=free.spend * 10)
    assert plan.volume <= capacity + 1e-6
    assert plan.binding == [PlanConstraint.SPACE]


def test_both_can_bind() -> None:
    free = optimise_orders(lines())
    plan = optimise_orders(lines(), budget=free.spend * 0.5, capacity=free.volume * 0.5)
    assert plan.spend <= free.spend * 0.5 + 1e-6
    assert plan.volume <= free.volume * 0.5 + 1e-6
    assert plan.binding  # at least one of them, named


def test_minimum_orders_are_all_or_nothing() -> None:
    plan = optimise_orders([line(1, minimum_packs=30), line(2)], budget=20.0 * 25)
    assert plan.packs[1] == 0 or plan.packs[1] >= 30
    assert plan.spend <= 500


def test_the_shelf_life_cap_limits_packs() -> None:
    plan = optimise_orders([line(1, max_packs=4)])
    assert plan.packs[1] == 4
    assert _upper_packs(line(1, max_packs=4)) == 4


def test_expiry_cost_cuts_an_order_that_would_go_off() -> None:
    fresh = optimise_orders([line(1)])
    perishable = optimise_orders([line(1, usable_mean=60.0, usable_sd=10.0, expiry_cost=2.0)])
    assert perishable.packs[1] < fresh.packs[1]


def test_must_orders_that_do_not_fit_degrade_to_optional_lowest_priority_first() -> None:
    critical = line(1, must_order=True, priority=0, minimum_packs=5)
    other = line(2, must_order=True, priority=2, minimum_packs=5)
    plan = optimise_orders([critical, other], budget=20.0 * 6)  # room for one minimum only
    assert plan.dropped == [2]
    assert plan.packs[1] >= 5
    assert plan.spend <= 120
    assert any("product 2" in m for m in plan.messages)


def test_over_capacity_store_orders_nothing_and_says_why() -> None:
    plan = optimise_orders(lines(3), capacity=-5.0)
    assert plan.volume == 0 and all(n == 0 for n in plan.packs.values())
    assert "over capacity" in plan.messages[0]


def test_zero_budget_is_feasible_and_orders_nothing() -> None:
    plan = optimise_orders(lines(4), budget=0.0)
    assert plan.spend == 0 and plan.status is PlanStatus.OPTIMAL


def test_the_greedy_fallback_respects_budget_and_capacity() -> None:
    items = lines()
    uppers = [_upper_packs(x) for x in items]
    packs = _greedy(items, uppers, 300.0, 20.0)
    assert sum(x.pack_cost * n for x, n in zip(items, packs, strict=True)) <= 300 + 1e-9
    assert sum(x.pack_volume * n for x, n in zip(items, packs, strict=True)) <= 20 + 1e-9
    assert packs.sum() > 0


def test_milp_is_never_worse_than_greedy_on_the_exact_cost() -> None:
    items = lines()
    plan = optimise_orders(items, budget=400.0)
    greedy = _greedy(items, [_upper_packs(x) for x in items], 400.0, None)
    greedy_cost = sum(
        float(expected_cost(x, np.array([n * x.pack_size]))[0]) + (x.ordering_cost if n else 0)
        for x, n in zip(items, greedy, strict=True)
    )
    # piecewise-linear over a few breakpoints: allow a small approximation gap
    assert plan.expected_cost <= greedy_cost * 1.02


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInput):
        optimise_orders([line(1), line(1)])
    with pytest.raises(InvalidInput):
        optimise_orders([line(1)], budget=float("nan"))
    with pytest.raises(InvalidInput):
        line(1, pack_size=0)
