"""Replenishment rules as pure functions: no database, every number checked by hand."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal

import pytest

from server.core.errors import InvalidInput
from server.replenishment.rules import (
    MAX_SERVICE_LEVEL,
    SERVICE_LEVELS,
    ContractTerms,
    DemandForecast,
    Distribution,
    InventoryPosition,
    LeadTime,
    LeadTimeSource,
    OpenPurchaseLine,
    ProductClass,
    PurchaseItem,
    SuggestionReason,
    TransferLine,
    WardNeed,
    choose_contract,
    cycle_quantity,
    demand_quantile,
    inventory_position,
    lead_time_demand,
    measured_lead_time,
    order_quantity,
    service_level,
    shelf_life_cap,
    stock_levels,
    suggest_purchase,
    target_service_level,
    ward_par_level,
    ward_transfer_suggestions,
)

TODAY = date(2026, 6, 1)


def flat(mean: float, sd: float, days: int = 60) -> DemandForecast:
    return DemandForecast((mean,) * days, (sd,) * days)


def contract(
    ref: str = "C1",
    *,
    start: date = TODAY - timedelta(days=30),
    end: date = TODAY + timedelta(days=300),
    price: str = "2.00",
    lead: int = 7,
    pack: int = 1,
    moq: int = 1,
    supplier_id: int = 1,
) -> ContractTerms:
    return ContractTerms(
        supplier_id, f"S{supplier_id}", ref, start, end, Decimal(price), lead, pack, moq
    )


# --- forecast input -------------------------------------------------------------------------------


def test_forecast_from_an_80_percent_interval_gives_the_normal_spread() -> None:
    # hi80 = mean + 1.2816·sd, so an upper bound 12.816 above the mean is sd 10
    fc = DemandForecast.from_intervals([100.0, 50.0], {0.8: [112.816, 50.0]})
    assert fc.sd[0] == pytest.approx(10.0, rel=1e-3)
    assert fc.sd[1] == 0.0


def test_forecast_refuses_an_upper_bound_below_the_point() -> None:
    with pytest.raises(InvalidInput):
        DemandForecast.from_intervals([10.0], {0.8: [9.0]})


def test_forecast_total_weights_part_periods_and_repeats_the_last_beyond_the_horizon() -> None:
    weekly = DemandForecast((70.0, 140.0), (7.0, 14.0), period_days=7)
    mean, var = weekly.total(10.5)  # one week + half of the second
    assert mean == pytest.approx(70 + 70)
    assert var == pytest.approx(49 + 0.5 * 196)
    mean, _ = weekly.total(21)  # three weeks: the second week repeated
    assert mean == pytest.approx(70 + 140 + 140)
    assert weekly.rate_at(8) == pytest.approx(20.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_forecast_refuses_nonsense(bad: float) -> None:
    with pytest.raises(InvalidInput):
        DemandForecast((bad,), (1.0,))


# --- lead time ------------------------------------------------------------------------------------


def test_lead_time_without_deliveries_is_the_contracts_with_a_floored_spread() -> None:
    lead = measured_lead_time([], 8)
    assert lead.source is LeadTimeSource.CONTRACT
    assert (lead.mean_days, lead.sd_days) == (8, 2.0)  # 25 % of 8 days


def test_lead_time_from_enough_deliveries_is_their_mean_and_spread() -> None:
    days = [5, 7, 9, 7, 7, 7]
    deliveries = [(TODAY, TODAY + timedelta(days=d)) for d in days]
    lead = measured_lead_time(deliveries, 3)
    assert lead.source is LeadTimeSource.MEASURED
    assert lead.mean_days == pytest.approx(7.0)
    assert lead.sd_days == pytest.approx(math.sqrt(8 / 5))
    assert lead.samples == tuple(float(d) for d in days)
    assert lead.why["observations"] == 6


def test_few_deliveries_are_shrunk_toward_the_contract() -> None:
    deliveries = [(TODAY, TODAY + timedelta(days=14)), (TODAY, TODAY + timedelta(days=14))]
    lead = measured_lead_time(deliveries, 5)
    assert lead.source is LeadTimeSource.FEW_DELIVERIES
    assert lead.mean_days == pytest.approx((2 * 14 + 5) / 3)
    assert lead.sd_days == pytest.approx(0.25 * lead.mean_days)  # two equal ones prove nothing


def test_a_delivery_before_its_order_is_refused() -> None:
    with pytest.raises(InvalidInput):
        measured_lead_time([(TODAY, TODAY - timedelta(days=1))], 5)


# --- service level, lead-time demand, reorder point, order-up-to ----------------------------------


def test_critical_and_controlled_items_get_higher_service_levels() -> None:
    assert service_level("CRITICAL") > service_level(ProductClass.STANDARD)
    assert service_level(ProductClass.CONTROLLED) > service_level(ProductClass.STANDARD)
    assert service_level(ProductClass.STANDARD) > service_level(ProductClass.NON_ESSENTIAL)
    assert set(SERVICE_LEVELS) == set(ProductClass)
    with pytest.raises(InvalidInput):
        service_level("VITAL")


def test_the_target_service_level_is_the_newsvendor_ratio_floored_by_the_class() -> None:
    # standard: a unit short costs 5 prices; a 73-day cycle holds a unit for 0.25 * 73/365 = 0.05
    level, why = target_service_level(ProductClass.STANDARD, 10.0, 730.0, holding_rate=0.25)
    assert level == pytest.approx(5 / 5.05) and why["service_level_rule"] == "CRITICAL_RATIO"
    assert why["cycle_days"] == 73
    # a shorter cycle meets the risk more often: a higher level, up to the cap
    short, _ = target_service_level(ProductClass.STANDARD, 10.0, 50.0, holding_rate=0.25)
    assert level < short <= MAX_SERVICE_LEVEL
    # a costly holding (long cycle, high rate) never goes below the class minimum
    floor, why = target_service_level(ProductClass.NON_ESSENTIAL, 1.0, 90.0, holding_rate=10)
    assert floor == SERVICE_LEVELS[ProductClass.NON_ESSENTIAL]
    assert why["service_level_rule"] == "CLASS"
    # no demand: the class level
    assert (
        target_service_level(ProductClass.CRITICAL, 0.0, 0.0)[0]
        == SERVICE_LEVELS[ProductClass.CRITICAL]
    )
    with pytest.raises(InvalidInput):
        target_service_level(ProductClass.STANDARD, float("nan"), 10.0)


def test_lead_time_demand_adds_forecast_and_lead_time_variance() -> None:
    fc = flat(10.0, 3.0)
    lead = LeadTime(6.0, 2.0, 10, LeadTimeSource.MEASURED)
    demand = lead_time_demand(fc, lead, review_days=1.0)
    assert demand.protection_days == 7.0
    assert demand.mean == pytest.approx(70.0)
    # Σsd_t² = 7·9 = 63; (d·sd_L)² = (10·2)² = 400
    assert demand.sd == pytest.approx(math.sqrt(63 + 400))
    assert demand.why["lead_time_demand_sd"] == pytest.approx(math.sqrt(463), abs=1e-3)


def test_reorder_point_is_the_service_level_quantile_and_order_up_to_adds_the_cycle() -> None:
    fc = flat(10.0, 3.0)
    lead = LeadTime(6.0, 2.0, 10, LeadTimeSource.MEASURED)
    demand = lead_time_demand(fc, lead)
    levels = stock_levels(demand, 0.98, 100.0, Distribution.NORMAL)
    assert levels.reorder_point == pytest.approx(70 + 2.0537 * math.sqrt(463), rel=1e-4)
    assert levels.order_up_to == pytest.approx(levels.reorder_point + 100)
    assert levels.safety_stock == pytest.approx(levels.reorder_point - 70)
    higher = stock_levels(demand, 0.995, 100.0, Distribution.NORMAL)
    assert higher.reorder_point > levels.reorder_point


def test_gamma_quantile_has_the_heavier_right_tail_for_slow_movers() -> None:
    normal = demand_quantile(2.0, 2.0, 0.98, Distribution.NORMAL)
    gamma = demand_quantile(2.0, 2.0, 0.98, Distribution.GAMMA)
    assert gamma > normal
    assert demand_quantile(0.0, 1.0, 0.98, Distribution.GAMMA) == 0.0


def test_the_convolution_sees_a_late_tail_the_formula_averages_away() -> None:
    fc = flat(10.0, 0.5)
    days = [5] * 18 + [20, 20]  # mostly five days, sometimes twenty
    deliveries = [(TODAY, TODAY + timedelta(days=d)) for d in days]
    lead = measured_lead_time(deliveries, 5)
    levels = stock_levels(lead_time_demand(fc, lead), 0.95, 0.0, Distribution.NORMAL)
    assert levels.why["reorder_point_method"] == "CONVOLUTION"
    assert levels.reorder_point >= 10 * 21 * 0.99  # the 95 % quantile is a late delivery


def test_cycle_quantity_is_the_eoq_between_a_review_and_a_quarter() -> None:
    q, why = cycle_quantity(10.0, 2.0, ordering_cost=15, holding_rate=0.25)
    assert q == pytest.approx(math.sqrt(2 * 3650 * 15 / 0.5))
    assert why["eoq"] == pytest.approx(q, abs=1e-3)
    cheap, _ = cycle_quantity(10.0, 0.0001)  # an enormous EOQ is capped at 90 days
    assert cheap == pytest.approx(900)
    dear, _ = cycle_quantity(10.0, 1e6)  # a tiny one is at least one review's demand
    assert dear == pytest.approx(10)


# --- inventory position ---------------------------------------------------------------------------


def test_inventory_position_counts_open_orders_and_transfers() -> None:
    position = inventory_position(
        50,
        [OpenPurchaseLine(100, 30), OpenPurchaseLine(10, 12)],  # 70 owed; over-delivery owes 0
        [TransferLine(20, "DISPATCHED"), TransferLine(99, "REQUESTED")],  # 20 in transit
        [TransferLine(15, "APPROVED"), TransferLine(5, "PICKED"), TransferLine(7, "RECEIVED")],
    )
    assert (position.on_order, position.in_transit, position.allocated) == (70, 20, 20)
    assert position.position == 50 + 70 + 20 - 20
    assert position.why()["position"] == 120


# --- contracts ------------------------------------------------------------------------------------


def test_only_a_contract_valid_today_is_chosen_the_cheapest_first() -> None:
    old = contract(
        "OLD", start=TODAY - timedelta(days=400), end=TODAY - timedelta(days=1), price="0.50"
    )
    future = contract("NEXT", start=TODAY + timedelta(days=1), price="0.10")
    dear = contract("DEAR", price="3.00")
    cheap = contract("CHEAP", price="2.00", supplier_id=2)
    choice = choose_contract([old, future, dear, cheap], TODAY)
    assert choice.contract is cheap
    none = choose_contract([old, future], TODAY)
    assert none.contract is None
    assert "OLD ended" in none.reason and "NEXT starts" in none.reason
    assert choose_contract([], TODAY).reason == "no contract for this product"
    # validity includes both ends
    assert contract(start=TODAY, end=TODAY).valid_on(TODAY)


def test_a_contract_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidInput):
        contract(start=TODAY, end=TODAY - timedelta(days=1))


# --- order quantity: packs, minimum, shelf life ---------------------------------------------------


def test_nothing_is_ordered_at_or_above_the_reorder_point() -> None:
    qty = order_quantity(40, 40, 100)
    assert (qty.quantity, qty.reason) == (0, SuggestionReason.ABOVE_REORDER_POINT)


def test_orders_are_rounded_up_to_whole_packs() -> None:
    qty = order_quantity(10, 40, 100, pack_size=12)  # 90 → 8 packs of 12
    assert (qty.packs, qty.quantity, qty.reason) == (8, 96, None)
    assert qty.why["raw"] == 90


def test_orders_are_raised_to_the_minimum_order_in_packs() -> None:
    qty = order_quantity(39, 40, 45, pack_size=10, minimum_order=25)  # 6 → min 25 → 3 packs
    assert (qty.packs, qty.quantity) == (3, 30)
    assert qty.why["raised_to_minimum_packs"] == 3


def test_the_shelf_life_cap_rounds_down_and_says_so() -> None:
    qty = order_quantity(0, 40, 200, pack_size=10, cap=75)
    assert (qty.quantity, qty.reason) == (70, SuggestionReason.CAPPED_BY_SHELF_LIFE)


def test_when_the_minimum_does_not_fit_under_the_cap_nothing_is_suggested() -> None:
    qty = order_quantity(0, 40, 200, pack_size=10, minimum_order=100, cap=75)
    assert (qty.quantity, qty.reason) == (0, SuggestionReason.SHELF_LIFE_BELOW_MINIMUM)


def test_shelf_life_cap_is_what_the_forecast_uses_before_the_new_stock_expires() -> None:
    cap = shelf_life_cap(flat(5.0, 1.0, 100), position=30, lead_days=10, shelf_life_days=20)
    assert cap.cap == pytest.approx(5 * 30 - 30)  # 150 used by expiry, 30 already held
    assert shelf_life_cap(flat(5.0, 1.0), position=500, lead_days=10, shelf_life_days=20).cap == 0


# --- one suggestion, end to end -------------------------------------------------------------------


def item(**changes: object) -> PurchaseItem:
    base: dict[str, object] = {
        "product_id": 7,
        "location_id": 3,
        "product_class": ProductClass.STANDARD,
        "forecast": flat(10.0, 3.0, 120),
        "position": InventoryPosition(20, 0, 0, 0),
        "contracts": [contract(pack=10, moq=50)],
    }
    return PurchaseItem(**(base | changes))  # type: ignore[arg-type]


def test_a_purchase_suggestion_names_supplier_price_and_every_number() -> None:
    s = suggest_purchase(item(), TODAY)
    assert s.supplier_id == 1 and s.contract_reference == "C1"
    assert s.unit_price == Decimal("2.00")
    assert s.quantity > 0 and s.quantity % 10 == 0 and s.quantity >= 50
    assert s.value == Decimal("2.00") * s.quantity
    for key in (
        "on_hand",
        "on_order",
        "in_transit",
        "allocated",
        "position",
        "lead_time_days",
        "lead_time_sd_days",
        "lead_time_source",
        "review_days",
        "forecast_over_protection",
        "service_level",
        "safety_stock",
        "reorder_point",
        "order_up_to",
        "eoq",
        "pack_size",
        "minimum_order",
        "packs",
        "quantity",
        "unit_price",
        "supplier",
        "contract",
    ):
        assert key in s.why, key
    assert s.why["position"] + s.quantity >= s.why["order_up_to"]


def test_no_valid_contract_means_no_quantity_and_a_reason() -> None:
    expired = contract(start=TODAY - timedelta(days=90), end=TODAY - timedelta(days=1))
    s = suggest_purchase(item(contracts=[expired]), TODAY)
    assert (s.quantity, s.reason, s.supplier_id) == (0, SuggestionReason.NO_VALID_CONTRACT, None)


def test_open_orders_stop_a_second_order() -> None:
    s = suggest_purchase(item(position=InventoryPosition(20, 500, 0, 0)), TODAY)
    assert (s.quantity, s.reason) == (0, SuggestionReason.ABOVE_REORDER_POINT)


def test_a_perishable_product_is_capped_by_its_shelf_life() -> None:
    long_lived = suggest_purchase(item(), TODAY)
    short = suggest_purchase(item(shelf_life_days=5.0), TODAY)
    assert short.quantity < long_lived.quantity
    assert short.why["forecast_until_expiry"] == pytest.approx(10 * (7 + 5))
    assert short.quantity <= short.why["forecast_until_expiry"] - 20


# --- ward par levels ------------------------------------------------------------------------------


def need(ward: int, position: float, cls: ProductClass = ProductClass.STANDARD) -> WardNeed:
    return WardNeed(ward, 5, cls, flat(4.0, 2.0), InventoryPosition(position, 0, 0, 0))


def test_par_level_is_forecast_over_review_plus_delivery_plus_safety() -> None:
    par, why = ward_par_level(need(1, 0))
    expected = 4 * 1.5 + 2.0537 * math.sqrt(4 * 1.5)
    assert par == pytest.approx(expected, rel=1e-4)
    assert why["par_level"] == pytest.approx(expected, abs=1e-2)


def test_wards_are_topped_up_to_par_from_central() -> None:
    out = ward_transfer_suggestions([need(1, 0), need(2, 100)], {5: 1000}, central_location_id=9)
    by_ward = {s.location_id: s for s in out}
    assert by_ward[1].quantity == math.ceil(ward_par_level(need(1, 0))[0])
    assert by_ward[1].source_location_id == 9
    assert (by_ward[2].quantity, by_ward[2].reason) == (0, SuggestionReason.ABOVE_REORDER_POINT)


def test_short_central_stock_goes_to_critical_wards_first() -> None:
    needs = [need(1, 0), need(2, 0, ProductClass.CRITICAL)]
    out = {
        s.location_id: s for s in ward_transfer_suggestions(needs, {5: 8}, central_location_id=9)
    }
    assert out[2].quantity == 8 and out[2].reason is SuggestionReason.CAPPED_BY_CENTRAL_STOCK
    assert out[1].quantity == 0 and out[1].reason is SuggestionReason.NO_CENTRAL_STOCK
    assert sum(s.quantity for s in out.values()) <= 8
