"""A location's purchase suggestions cut to a budget and to free storage space (pure, no I/O).

The suggestions are each product's unconstrained answer. When together they cost more than the
budget or fill more than the free space, the ordering MILP (`optimise.optimise_orders`) chooses
what to cut: each product's packs may go from its suggestion down to zero (or to nothing below
the contract's minimum), minimising the expected stock-out + expiry + holding + ordering cost
over lead time + one cycle. Critical and controlled items below their reorder point must still
be ordered (at least their minimum); when even those do not fit, the lowest class gives way
first and the plan says so. The plan never adds to a suggestion: ordering more than the rules
asked for is not what a tight budget calls for.

When the suggestions fit, they are the plan unchanged and the solver is not run.

The cost figures are the suggestion's own: a unit short costs STOCKOUT_COST_MULTIPLE times its
price by class, a unit left at the end of the cycle its holding over one more cycle, a unit
expired its price, an order line the item's ordering cost. Space is counted in the caller's
units per pack (1 when not given: the capacity is then a number of packs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from server.core.errors import InvalidInput
from server.replenishment import optimise
from server.replenishment.optimise import OrderLine, Plan, PlanConstraint, PlanStatus
from server.replenishment.rules import (
    _PRIORITY,
    MAX_CYCLE_DAYS,
    STOCKOUT_COST_MULTIPLE,
    ProductClass,
    PurchaseItem,
    Suggestion,
    _number,
    choose_contract,
    lead_time_demand,
    measured_lead_time,
)

PLAN_TIME_LIMIT = 5.0  # seconds: a pharmacist is waiting for the answer
MUST_ORDER = (ProductClass.CRITICAL, ProductClass.CONTROLLED)


@dataclass(frozen=True)
class PlannedLine:
    suggestion: Suggestion
    quantity: int  # what the plan orders (a multiple of the pack, 0: cut entirely)
    space: float  # the planned quantity's space
    must_order: bool  # a critical or controlled item below its reorder point

    @property
    def cut(self) -> int:
        return self.suggestion.quantity - self.quantity


@dataclass(frozen=True)
class OrderPlan:
    lines: list[PlannedLine]
    budget: float | None
    capacity: float | None
    suggested_spend: float
    suggested_space: float
    spend: float
    space: float
    binding: list[PlanConstraint]
    optimised: bool  # False: the suggestions fit and are the plan unchanged
    status: PlanStatus
    expected_cost: float | None
    dropped: list[int] = field(default_factory=list)  # must-orders that could not all fit
    messages: list[str] = field(default_factory=list)


def order_line(item: PurchaseItem, suggestion: Suggestion, on: date, space: float) -> OrderLine:
    """The MILP's view of one suggestion: demand over lead time + cycle, costs per unit, and at
    most the suggested packs."""
    choice = choose_contract(item.contracts, on)
    contract = choice.contract
    if contract is None:
        raise InvalidInput(f"product {item.product_id} has no valid contract", field="product")
    price = float(contract.unit_price)
    lead = measured_lead_time(item.deliveries, contract.lead_time_days)
    demand = lead_time_demand(item.forecast, lead, item.review_days)
    rate = item.forecast.rate_at(lead.mean_days)
    cycle = float(suggestion.why.get("cycle_quantity", 0.0))
    cycle_days = min(cycle / rate, MAX_CYCLE_DAYS) if rate > 0 else item.review_days
    horizon = demand.protection_days + cycle_days
    mean, var = item.forecast.total(horizon)
    sd = math.sqrt(var + (rate * lead.sd_days) ** 2)
    usable_mean = usable_sd = None
    if item.shelf_life_days is not None:
        usable_mean, usable_var = item.forecast.total(lead.mean_days + item.shelf_life_days)
        usable_sd = math.sqrt(usable_var)
    pack = contract.pack_size
    cls = ProductClass(item.product_class)
    return OrderLine(
        product_id=item.product_id,
        position=item.position.position,
        demand_mean=mean,
        demand_sd=sd,
        pack_size=pack,
        pack_cost=price * pack,
        pack_volume=space * pack,
        minimum_packs=math.ceil(contract.minimum_order / pack),
        max_packs=suggestion.packs,
        stockout_cost=STOCKOUT_COST_MULTIPLE[cls] * price,
        holding_cost=price * item.holding_rate * max(cycle_days, item.review_days) / 365,
        ordering_cost=item.ordering_cost,
        expiry_cost=price if usable_mean is not None else 0.0,
        usable_mean=usable_mean,
        usable_sd=usable_sd or 0.0,
        priority=_PRIORITY[cls],
        must_order=cls in MUST_ORDER,
    )


def plan_orders(
    items: Sequence[tuple[PurchaseItem, Suggestion]],
    on: date,
    *,
    budget: float | None = None,
    capacity: float | None = None,
    pack_space: Mapping[int, float] | None = None,
    time_limit: float = PLAN_TIME_LIMIT,
) -> OrderPlan:
    """The suggestions (quantity > 0, under a contract) cut to fit `budget` (money) and
    `capacity` (free space, in the units of `pack_space`, per unit of product; 1 when absent)."""
    if budget is not None:
        budget = _number("budget", budget, hi=1e15)
    if capacity is not None:
        capacity = _number("storage_capacity", capacity, lo=-1e15, hi=1e15)
    space_of = dict(pack_space or {})
    for pid, value in space_of.items():
        _number(f"space[{pid}]", value, hi=1e9)
    kept = [(i, s) for i, s in items if s.quantity > 0 and s.unit_price is not None]
    spaces = [space_of.get(s.product_id, 1.0) for _, s in kept]
    must = [ProductClass(i.product_class) in MUST_ORDER for i, _ in kept]
    spend0 = sum(float(s.unit_price or 0) * s.quantity for _, s in kept)
    space0 = sum(sp * s.quantity for (_, s), sp in zip(kept, spaces, strict=True))
    fits = (budget is None or spend0 <= budget + 1e-9) and (
        capacity is None or space0 <= capacity + 1e-9
    )
    if fits:
        return OrderPlan(
            [
                PlannedLine(s, s.quantity, sp * s.quantity, m)
                for (_, s), sp, m in zip(kept, spaces, must, strict=True)
            ],
            budget,
            capacity,
            spend0,
            space0,
            spend0,
            space0,
            [],
            False,
            PlanStatus.OPTIMAL,
            None,
            [],
            ["the suggestions fit: nothing was cut"],
        )
    lines = [order_line(i, s, on, sp) for (i, s), sp in zip(kept, spaces, strict=True)]
    plan: Plan = optimise.optimise_orders(
        lines, budget=budget, capacity=capacity, time_limit=time_limit
    )
    planned = []
    for (_, s), sp, m in zip(kept, spaces, must, strict=True):
        quantity = plan.quantities.get(s.product_id, 0)
        planned.append(PlannedLine(s, quantity, sp * quantity, m))
    if not plan.binding:
        # the suggestions do not fit, so a limit is binding by definition; the re-solve can
        # miss it only when the solver ran out of time: name what is over
        if budget is not None and spend0 > budget + 1e-9:
            plan.binding.append(PlanConstraint.BUDGET)
        if capacity is not None and space0 > capacity + 1e-9:
            plan.binding.append(PlanConstraint.SPACE)
        plan.messages = [m for m in plan.messages if not m.startswith("no constraint binds")]
    return OrderPlan(
        planned,
        budget,
        capacity,
        spend0,
        space0,
        plan.spend,
        plan.volume,
        plan.binding,
        True,
        plan.status,
        plan.expected_cost,
        plan.dropped,
        plan.messages,
    )
