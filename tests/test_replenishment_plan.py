"""Suggestions cut to a budget and to free space: the plan never exceeds either, never adds to
a suggestion, names what binds, keeps critical items ordered first, and leaves suggestions that
fit untouched."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from server.core.errors import InvalidInput
from server.replenishment.optimise import PlanConstraint
from server.replenishment.plan import plan_orders
from server.replenishment.rules import (
    ContractTerms,
    DemandForecast,
    InventoryPosition,
    ProductClass,
    PurchaseItem,
    Suggestion,
    suggest_purchase,
)

TODAY = date(2026, 3, 1)


def item(
    pid: int, rate: float, price: str, cls: ProductClass = ProductClass.STANDARD
) -> PurchaseItem:
    contract = ContractTerms(
        supplier_id=1,
        supplier="S",
        reference=f"C{pid}",
        valid_from=TODAY - timedelta(days=10),
        valid_until=TODAY + timedelta(days=300),
        unit_price=Decimal(price),
        lead_time_days=7,
        pack_size=10,
        minimum_order=10,
    )
    return PurchaseItem(
        pid,
        1,
        cls,
        DemandForecast((rate,) * 120, ((rate + 1) ** 0.5,) * 120),
        InventoryPosition(0, 0, 0, 0),
        [contract],
    )


def pairs(
    specs: list[tuple[int, float, str, ProductClass]],
) -> list[tuple[PurchaseItem, Suggestion]]:
    out = []
    for pid, rate, price, cls in specs:
        i = item(pid, rate, price, cls)
        out.append((i, suggest_purchase(i, TODAY)))
    return out


SPECS = [
    (1, 10.0, "2.00", ProductClass.CRITICAL),
    (2, 20.0, "1.00", ProductClass.STANDARD),
    (3, 5.0, "8.00", ProductClass.NON_ESSENTIAL),
    (4, 8.0, "3.00", ProductClass.STANDARD),
    (5, 12.0, "0.50", ProductClass.CONTROLLED),
]


def spend(items: list[tuple[PurchaseItem, Suggestion]]) -> float:
    return sum(float(s.value or 0) for _, s in items)


def test_suggestions_that_fit_are_the_plan_unchanged() -> None:
    items = pairs(SPECS)
    plan = plan_orders(items, TODAY, budget=spend(items) + 1, capacity=1e6)
    assert not plan.optimised and plan.binding == []
    assert [p.quantity for p in plan.lines] == [s.quantity for _, s in items]
    assert all(p.cut == 0 for p in plan.lines)


def test_a_budget_below_the_suggestions_binds_and_is_respected() -> None:
    items = pairs(SPECS)
    budget = spend(items) * 0.5
    plan = plan_orders(items, TODAY, budget=budget)
    assert plan.optimised and plan.binding == [PlanConstraint.BUDGET]
    assert plan.spend <= budget + 1e-6
    assert plan.suggested_spend == pytest.approx(spend(items))
    by = {p.suggestion.product_id: p for p in plan.lines}
    for p in plan.lines:
        assert 0 <= p.quantity <= p.suggestion.quantity and p.quantity % 10 == 0
    assert sum(p.cut for p in plan.lines) > 0
    # critical and controlled items are still ordered
    assert by[1].quantity > 0 and by[5].quantity > 0 and by[1].must_order


def test_space_binds_when_the_shelves_are_the_limit() -> None:
    items = pairs(SPECS)
    packs = sum(s.quantity for _, s in items)
    plan = plan_orders(items, TODAY, budget=spend(items) * 10, capacity=packs * 0.6)
    assert plan.binding == [PlanConstraint.SPACE]
    assert plan.space <= packs * 0.6 + 1e-6


def test_space_per_pack_counts() -> None:
    items = pairs(SPECS)
    bulky = {3: 5.0}  # product 3 takes five times the room
    total = sum(s.quantity * bulky.get(s.product_id, 1.0) for _, s in items)
    plan = plan_orders(items, TODAY, capacity=total * 0.7, pack_space=bulky)
    assert plan.space <= total * 0.7 + 1e-6
    assert plan.space == pytest.approx(
        sum(p.quantity * bulky.get(p.suggestion.product_id, 1.0) for p in plan.lines)
    )


def test_when_even_critical_items_do_not_fit_the_plan_says_so() -> None:
    items = pairs(SPECS)
    plan = plan_orders(items, TODAY, budget=10.0)  # less than the critical minimums
    assert plan.spend <= 10.0 + 1e-6
    assert plan.dropped  # a must-order gave way
    assert any("must be ordered" in m for m in plan.messages)


def test_a_zero_budget_orders_nothing() -> None:
    plan = plan_orders(pairs(SPECS), TODAY, budget=0)
    assert plan.spend == 0 and all(p.quantity == 0 for p in plan.lines)
    assert PlanConstraint.BUDGET in plan.binding


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(InvalidInput):
        plan_orders(pairs(SPECS), TODAY, budget=float("nan"))
    with pytest.raises(InvalidInput):
        plan_orders(pairs(SPECS), TODAY, budget=-5)
    with pytest.raises(InvalidInput):
        plan_orders(pairs(SPECS), TODAY, pack_space={1: -1.0})
