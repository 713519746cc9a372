"""Reorder suggestions through GraphQL on both databases: purchases under a valid contract,
draft purchase orders grouped by supplier, ward transfers from the central pharmacy, and scope
(a nurse sees only her wards' suggestions)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from server.core.db import utcnow
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.suppliers.service import ContractLineFields
from tests.conftest import Caller, Demo, first_product_id, gid

AsUser = Callable[..., Awaitable[Caller]]

SUGGESTIONS = """
query($location: ID!, $all: Boolean! = false) {
  reorderSuggestions(location: $location, includeNotNeeded: $all) {
    kind
    sourceLocation { code }
    suggestions {
      kind quantity reason contractReference unitPrice value why
      product { id } location { code } supplier { id name } sourceLocation { code }
    }
  }
}
"""

CREATE_POS = """
mutation($input: CreatePurchaseOrdersFromSuggestionsInput!) {
  createPurchaseOrdersFromSuggestions(input: $input) {
    purchaseOrders { number status supplier { name } deliverTo { code }
                     lines { quantity unitPrice product { id } } }
    errors { code field message }
  }
}
"""

CREATE_TRANSFERS = """
mutation($input: CreateTransfersFromSuggestionsInput!) {
  createTransfersFromSuggestions(input: $input) {
    transfers { number status note }
    errors { code field message }
  }
}
"""

WHOLESALER = "MedDistri Wholesale"
HOSPITAL = "St. Aurelia General Hospital"


async def history(
    demo: Demo, location: str, product_id: int, *, received: int, per_day: int, days: int = 56
) -> None:
    """A receipt `days + 4` days ago, then `per_day` packs dispensed at noon (UTC) of every day
    up to yesterday: whatever the time of day the test runs, each falls on its own day."""
    now = utcnow()
    admin = demo.principals["admin"]
    loc = demo.locations[location]
    result = await demo.services.ledger.record(
        admin,
        [
            MovementRequest(
                MovementKind.RECEIVE,
                loc,
                received,
                new_lot=NewLot(
                    product_id,
                    f"T{uuid.uuid4().hex[:10].upper()}",
                    now.date() + timedelta(days=300),
                ),
                occurred_at=now - timedelta(days=days + 4),
            )
        ],
        operation="test.receive",
    )
    lot_id = result.movements[0].lot_id
    noon = datetime.combine(now.date(), time(12), tzinfo=UTC)
    await demo.services.ledger.record(
        admin,
        [
            MovementRequest(
                MovementKind.DISPENSE,
                loc,
                per_day,
                lot_id=lot_id,
                occurred_at=noon - timedelta(days=d),
            )
            for d in range(1, days + 1)
        ],
        operation="test.dispense",
    )


async def contract(demo: Demo, product_id: int, *, days_left: int = 200, ref: str = "RC-1") -> None:
    today = utcnow().date()
    await demo.services.suppliers.create_contract(
        demo.principals["admin"],
        supplier_id=demo.orgs[WHOLESALER],
        buyer_id=demo.orgs[HOSPITAL],
        reference=ref,
        valid_from=today - timedelta(days=300),
        valid_until=today + timedelta(days=days_left),
        lines=[ContractLineFields(product_id, Decimal("2.50"), 7, 10)],
    )


def only(payload: dict[str, Any], product_id: int) -> dict[str, Any]:
    (found,) = [
        s for s in payload["suggestions"] if s["product"]["id"] == gid("Product", product_id)
    ]
    return found


async def test_purchase_suggestion_names_contract_price_and_numbers_then_becomes_a_draft(
    demo: Demo, as_user: AsUser
) -> None:
    product = await first_product_id(demo.services)
    await contract(demo, product)
    await history(demo, "HOSP-CP", product, received=600, per_day=10)  # 40 left
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])

    result = await pharmacist.call(SUGGESTIONS, location=cp)
    assert result["kind"] == "PURCHASE" and result["sourceLocation"] is None
    s = only(result, product)
    assert s["kind"] == "PURCHASE" and s["reason"] is None
    assert s["supplier"]["name"] == WHOLESALER and s["contractReference"] == "RC-1"
    assert Decimal(s["unitPrice"]) == Decimal("2.50")
    assert Decimal(s["value"]) == Decimal("2.50") * s["quantity"]
    why = s["why"]
    assert why["on_hand"] == 40 and why["on_order"] == 0 and why["position"] == 40
    assert why["forecast_source"] == "LEDGER_AVERAGE" and why["daily_rate"] == 10
    assert why["lead_time_source"] == "CONTRACT" and why["lead_time_days"] == 7
    assert why["reorder_point"] > 80  # 8 days of 10 a day, plus safety stock
    assert s["quantity"] >= 10 and 40 + s["quantity"] >= why["order_up_to"]

    payload = await pharmacist.ok(
        CREATE_POS,
        input={
            "location": cp,
            "lines": [
                {
                    "product": gid("Product", product),
                    "supplier": s["supplier"]["id"],
                    "quantity": s["quantity"],
                }
            ],
        },
    )
    (order,) = payload["purchaseOrders"]
    assert order["status"] == "DRAFT" and order["deliverTo"]["code"] == "HOSP-CP"
    assert order["supplier"]["name"] == WHOLESALER
    (line,) = order["lines"]
    assert line["quantity"] == s["quantity"] and Decimal(line["unitPrice"]) == Decimal("2.50")

    # the draft is on order now: nothing more is suggested for the product
    again = await pharmacist.call(SUGGESTIONS, location=cp, all=True)
    s = only(again, product)
    assert s["quantity"] == 0 and s["reason"] == "ABOVE_REORDER_POINT"
    assert s["why"]["on_order"] == line["quantity"]


async def test_an_expired_contract_suggests_nothing_and_says_so(
    demo: Demo, as_user: AsUser
) -> None:
    product = await first_product_id(demo.services)
    await contract(demo, product, days_left=-1)
    await history(demo, "HOSP-CP", product, received=600, per_day=10)
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    assert all(
        s["product"]["id"] != gid("Product", product)
        for s in (await pharmacist.call(SUGGESTIONS, location=cp))["suggestions"]
    )
    s = only(await pharmacist.call(SUGGESTIONS, location=cp, all=True), product)
    assert (s["quantity"], s["reason"], s["supplier"]) == (0, "NO_VALID_CONTRACT", None)
    assert "ended" in s["why"]["contract"]
    message = await pharmacist.refused(
        CREATE_POS,
        "INVALID_INPUT",
        input={
            "location": cp,
            "lines": [
                {
                    "product": gid("Product", product),
                    "supplier": gid("Supplier", demo.orgs[WHOLESALER]),
                    "quantity": 20,
                }
            ],
        },
    )
    assert "valid" in message


async def test_drafts_are_grouped_by_supplier_all_or_none(demo: Demo, as_user: AsUser) -> None:
    first = await first_product_id(demo.services)
    second = await first_product_id(demo.services, offset=1)
    await contract(demo, first, ref="RC-A")
    await contract(demo, second, ref="RC-B")
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    supplier = gid("Supplier", demo.orgs[WHOLESALER])
    lines = [
        {"product": gid("Product", first), "supplier": supplier, "quantity": 20},
        {"product": gid("Product", second), "supplier": supplier, "quantity": 5},  # below 10
    ]
    await pharmacist.refused(CREATE_POS, "INVALID_INPUT", input={"location": cp, "lines": lines})
    lines[1]["quantity"] = 30
    (order,) = (await pharmacist.ok(CREATE_POS, input={"location": cp, "lines": lines}))[
        "purchaseOrders"
    ]
    assert len(order["lines"]) == 2


async def test_ward_is_topped_up_from_central_and_a_nurse_sees_only_her_wards(
    demo: Demo, as_user: AsUser
) -> None:
    product = await first_product_id(demo.services)
    await history(demo, "WARD-A", product, received=113, per_day=2)  # 1 left
    await history(demo, "HOSP-CP", product, received=500, per_day=1)
    nurse = await as_user("nurse")
    ward = gid("Location", demo.locations["WARD-A"])

    result = await nurse.call(SUGGESTIONS, location=ward)
    assert result["kind"] == "TRANSFER" and result["sourceLocation"]["code"] == "HOSP-CP"
    s = only(result, product)
    assert s["kind"] == "TRANSFER" and s["supplier"] is None and s["unitPrice"] is None
    assert s["why"]["on_hand"] == 1 and s["why"]["forecast_source"] == "LEDGER_AVERAGE"
    assert 1 + s["quantity"] >= s["why"]["par_level"] and s["quantity"] > 0
    assert s["why"]["central_available"] > 0

    for other in ("WARD-B", "HOSP-CP"):
        await nurse.forbidden_read(SUGGESTIONS, location=gid("Location", demo.locations[other]))

    payload = await nurse.ok(
        CREATE_TRANSFERS,
        input={
            "lines": [
                {"location": ward, "product": gid("Product", product), "quantity": s["quantity"]}
            ]
        },
    )
    (transfer,) = payload["transfers"]
    assert transfer["status"] == "REQUESTED"
    again = only(await nurse.call(SUGGESTIONS, location=ward, all=True), product)
    assert again["quantity"] == 0 and again["why"]["on_order"] == s["quantity"]

    await nurse.refused(
        CREATE_TRANSFERS,
        "FORBIDDEN",
        input={
            "lines": [
                {
                    "location": gid("Location", demo.locations["WARD-B"]),
                    "product": gid("Product", product),
                    "quantity": 1,
                }
            ]
        },
    )
    await nurse.refused(
        CREATE_POS,
        "FORBIDDEN",
        input={
            "location": ward,
            "lines": [
                {
                    "product": gid("Product", product),
                    "supplier": gid("Supplier", demo.orgs[WHOLESALER]),
                    "quantity": 10,
                }
            ],
        },
    )


async def test_a_ward_without_a_pharmacy_cannot_get_transfers(demo: Demo, as_user: AsUser) -> None:
    pharmacist = await as_user("pharmacist")
    product = await first_product_id(demo.services)
    await pharmacist.refused(
        CREATE_TRANSFERS,
        "INVALID_INPUT",
        input={
            "lines": [
                {
                    "location": gid("Location", demo.locations["HOSP-CP"]),
                    "product": gid("Product", product),
                    "quantity": 1,
                }
            ]
        },
    )


@pytest.mark.parametrize("who", ["supplier"])
async def test_those_without_stock_access_are_refused(
    demo: Demo, as_user: AsUser, who: str
) -> None:
    caller = await as_user(who)
    await caller.forbidden_read(SUGGESTIONS, location=gid("Location", demo.locations["HOSP-CP"]))


@dataclass(frozen=True)
class Stored:
    """The shape the forecasting room stores (weekly points with an 80 % interval)."""

    points: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    level: int = 80
    model: str = "AutoETS"
    granularity: str = "WEEKLY"


class StoredSource:
    async def stored_forecast(
        self, session: Any, product_id: int, location_id: int, granularity: Any
    ) -> Stored | None:
        assert granularity == "WEEKLY"
        return Stored((140.0,) * 26, (120.0,) * 26, (165.0,) * 26)


async def test_a_stored_forecast_is_used_when_there_is_one(demo: Demo) -> None:
    from server.replenishment.service import ReplenishmentService

    product = await first_product_id(demo.services)
    await contract(demo, product)
    await history(demo, "HOSP-CP", product, received=600, per_day=10)
    s = demo.services
    service = ReplenishmentService(s.db, s.purchasing, s.transfers, s.alerts, StoredSource())
    result = await service.suggestions(demo.principals["pharmacist"], demo.locations["HOSP-CP"])
    (found,) = [x for x in result.suggestions if x.product_id == product]
    assert found.why["forecast_source"] == "STORED"
    assert found.why["forecast_models"] == ["AutoETS"] * len(found.why["served_locations"])
    # three served locations' weekly 140 each: 60 a day over 8 days of protection
    wards = len(found.why["served_locations"])
    assert found.why["forecast_over_protection"] == pytest.approx(wards * 20 * 8, rel=1e-3)


async def active_low_stock(demo: Demo, location: str, product_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from server.alerts.models import Alert, AlertKind

    async with demo.services.db.read() as session:
        rows = (
            await session.execute(
                select(Alert).where(
                    Alert.kind == AlertKind.LOW_STOCK,
                    Alert.active.is_(True),
                    Alert.location_id == demo.locations[location],
                    Alert.product_id == product_id,
                )
            )
        ).scalars()
        return [dict(a.details) for a in rows]


async def test_low_stock_follows_the_reorder_point_and_a_manual_minimum_wins(demo: Demo) -> None:
    product = await first_product_id(demo.services)
    await contract(demo, product)
    await history(demo, "HOSP-CP", product, received=600, per_day=10)  # 40 left
    assert await active_low_stock(demo, "HOSP-CP", product) == []

    written = await demo.services.replenishment.refresh_reorder_points()
    assert written >= 1
    (details,) = await active_low_stock(demo, "HOSP-CP", product)
    assert details["source"] == "REORDER_POINT" and details["on_hand"] == 40
    assert details["minimum"] > 80

    await demo.services.alerts.set_minimum_level(
        demo.principals["admin"],
        location_id=demo.locations["HOSP-CP"],
        product_id=product,
        minimum_quantity=5,
    )
    assert await active_low_stock(demo, "HOSP-CP", product) == []
    await demo.services.replenishment.refresh_reorder_points()  # still the manual level
    assert await active_low_stock(demo, "HOSP-CP", product) == []


PLAN = """
query($input: ReorderPlanInput!) {
  reorderPlan(input: $input) {
    status optimised binding budget storageCapacity suggestedSpend spend suggestedSpace space
    expectedCost messages location { code } mustOrdersDropped { id }
    lines { quantity cut space mustOrder value
            suggestion { quantity unitPrice product { id } supplier { id } } }
  }
}
"""


async def three_suggestions(demo: Demo) -> list[int]:
    products = [await first_product_id(demo.services, offset=k) for k in range(3)]
    for k, product in enumerate(products):
        await contract(demo, product, ref=f"RP-{k}")
        per_day = 5 + 5 * k
        await history(demo, "HOSP-CP", product, received=56 * per_day + 20, per_day=per_day)
    return products


async def test_a_budget_plan_cuts_suggestions_names_the_budget_and_keeps_within_it(
    demo: Demo, as_user: AsUser
) -> None:
    products = await three_suggestions(demo)
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    suggested = [
        s
        for s in (await pharmacist.call(SUGGESTIONS, location=cp))["suggestions"]
        if s["product"]["id"] in {gid("Product", p) for p in products}
    ]
    assert len(suggested) == 3 and all(s["quantity"] > 0 for s in suggested)
    total = sum(Decimal(s["value"]) for s in suggested)

    roomy = await pharmacist.call(PLAN, input={"location": cp, "budget": str(total * 2)})
    assert roomy["optimised"] is False and roomy["binding"] == []
    assert all(line["cut"] == 0 for line in roomy["lines"])

    budget = (total / 2).quantize(Decimal("0.01"))
    plan = await pharmacist.call(PLAN, input={"location": cp, "budget": str(budget)})
    assert plan["optimised"] is True and plan["binding"] == ["BUDGET"]
    assert plan["status"] in ("OPTIMAL", "TIME_LIMIT")
    assert Decimal(plan["spend"]) <= budget and Decimal(plan["suggestedSpend"]) >= total
    ours = [
        x
        for x in plan["lines"]
        if x["suggestion"]["product"]["id"] in {gid("Product", p) for p in products}
    ]
    assert sum(x["cut"] for x in ours) > 0
    for x in plan["lines"]:
        assert 0 <= x["quantity"] <= x["suggestion"]["quantity"]
        assert x["cut"] == x["suggestion"]["quantity"] - x["quantity"]
        assert Decimal(x["value"]) == Decimal(x["suggestion"]["unitPrice"]) * x["quantity"]
    assert plan["location"]["code"] == "HOSP-CP" and plan["expectedCost"] is not None


async def test_storage_capacity_in_packs_or_per_product_space_binds_as_space(
    demo: Demo, as_user: AsUser
) -> None:
    products = await three_suggestions(demo)
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    packs = (await pharmacist.call(PLAN, input={"location": cp, "storageCapacity": 1e9}))[
        "suggestedSpace"
    ]
    plan = await pharmacist.call(PLAN, input={"location": cp, "storageCapacity": packs * 0.5})
    assert plan["binding"] == ["SPACE"] and plan["space"] <= packs * 0.5 + 1e-6

    bulky = {"product": gid("Product", products[2]), "space": 4.0}
    plan = await pharmacist.call(
        PLAN, input={"location": cp, "storageCapacity": packs, "packSpace": [bulky]}
    )
    assert plan["binding"] == ["SPACE"] and plan["space"] <= packs + 1e-6
    assert plan["suggestedSpace"] > packs


async def test_a_plan_needs_a_limit_and_is_refused_for_wards_and_nurses(
    demo: Demo, as_user: AsUser
) -> None:
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    ward = gid("Location", demo.locations["WARD-A"])
    for variables in ({"location": cp}, {"location": ward, "budget": "100"}):
        body = await pharmacist.raw(PLAN, input=variables)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", body
    body = await pharmacist.raw(PLAN, input={"location": cp, "budget": "-1"})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", body
    nurse = await as_user("nurse")
    await nurse.forbidden_read(PLAN, input={"location": ward, "budget": "100"})
    await nurse.forbidden_read(PLAN, input={"location": cp, "budget": "100"})


PRODUCT = """
query($id: ID!) {
  node(id: $id) {
    ... on Product { name strength dosageForm unit approvalNumber gtins atcCode
                     controlledSchedule storage unitCost critical }
  }
}
"""

UPDATE_PRODUCT = """
mutation($input: UpdateProductInput!) {
  updateProduct(input: $input) { product { critical } errors { code field message } }
}
"""


async def test_a_product_marked_critical_gets_the_critical_service_level(
    demo: Demo, as_user: AsUser
) -> None:
    """`critical` is set through updateProduct's input and read back; replenishment then serves
    the product at the CRITICAL class floor (0.995) instead of STANDARD's (0.98)."""
    product = await first_product_id(demo.services)
    await contract(demo, product)
    await history(demo, "HOSP-CP", product, received=600, per_day=10)
    admin, pharmacist = await as_user("admin"), await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])
    details = await admin.call(PRODUCT, id=gid("Product", product))
    assert details["critical"] is False

    before = only(await pharmacist.call(SUGGESTIONS, location=cp, all=True), product)
    assert before["why"]["product_class"] == "STANDARD"
    assert before["why"]["class_service_level"] == 0.98

    fields = {k: v for k, v in details.items() if k != "critical"}
    marked = await admin.ok(
        UPDATE_PRODUCT, input={"id": gid("Product", product), **fields, "critical": True}
    )
    assert marked["product"]["critical"] is True
    after = only(await pharmacist.call(SUGGESTIONS, location=cp, all=True), product)
    assert after["why"]["product_class"] == "CRITICAL"
    assert after["why"]["class_service_level"] == 0.995
    assert after["why"]["service_level"] >= 0.995
    assert after["why"]["reorder_point"] > before["why"]["reorder_point"]

    # the input's default is false: an update that leaves it out unmarks the product
    cleared = await admin.ok(UPDATE_PRODUCT, input={"id": gid("Product", product), **fields})
    assert cleared["product"]["critical"] is False


async def rising_history(
    demo: Demo, location: str, product_id: int, *, days: int, base: int
) -> None:
    """A receipt before `days` days of dispensing whose daily use rises by one pack every four
    weeks from `base`: a series whose model forecast and plain average differ."""
    now = utcnow()
    admin = demo.principals["admin"]
    used = [base + (days - d) // 28 for d in range(days, 0, -1)]
    result = await demo.services.ledger.record(
        admin,
        [
            MovementRequest(
                MovementKind.RECEIVE,
                demo.locations[location],
                sum(used) + 20,
                new_lot=NewLot(
                    product_id,
                    f"T{uuid.uuid4().hex[:10].upper()}",
                    now.date() + timedelta(days=600),
                ),
                occurred_at=now - timedelta(days=days + 2),
            )
        ],
        operation="test.receive",
    )
    lot_id = result.movements[0].lot_id
    noon = datetime.combine(now.date(), time(12), tzinfo=UTC)  # each on its own day
    await demo.services.ledger.record(
        admin,
        [
            MovementRequest(
                MovementKind.DISPENSE,
                demo.locations[location],
                q,
                lot_id=lot_id,
                occurred_at=noon - timedelta(days=d),
            )
            for d, q in zip(range(days, 0, -1), used, strict=True)
        ],
        operation="test.dispense",
    )


async def test_reorder_suggestions_use_the_forecasts_a_real_refresh_stored(
    demo: Demo, as_user: AsUser
) -> None:
    """History at the central pharmacy and its three wards, the real weekly refresh, then the
    central pharmacy's suggestion: its forecast is the stored one of every served location (the
    models and the numbers), not the ledger average it used before the refresh."""
    from server.forecasting.series import Granularity
    from server.replenishment.service import combine, from_stored

    product = await first_product_id(demo.services)
    await contract(demo, product)
    served = ("HOSP-CP", "WARD-A", "WARD-B", "WARD-C")
    for base, code in enumerate(served, start=1):
        await rising_history(demo, code, product, days=280, base=base)
    pharmacist = await as_user("pharmacist")
    cp = gid("Location", demo.locations["HOSP-CP"])

    before = only(await pharmacist.call(SUGGESTIONS, location=cp, all=True), product)
    assert before["why"]["forecast_source"] == "LEDGER_AVERAGE"

    await demo.services.forecasting.refresh([Granularity.WEEKLY])
    forecasting = demo.services.forecasting
    async with demo.services.db.read() as session:
        stored = [
            await forecasting.stored_forecast(
                session, product, demo.locations[code], Granularity.WEEKLY
            )
            for code in served
        ]
    assert all(s is not None for s in stored)
    kept = [s for s in stored if s is not None]

    after = only(await pharmacist.call(SUGGESTIONS, location=cp, all=True), product)
    why = after["why"]
    assert why["forecast_source"] == "STORED"
    assert why["served_locations"] == [demo.locations[c] for c in served]
    assert why["forecast_models"] == [s.model for s in kept]
    assert why["forecast_level"] == 80
    mean, var = combine([from_stored(s) for s in kept]).total(why["protection_days"])
    assert why["forecast_over_protection"] == pytest.approx(mean, abs=2e-3)
    assert why["forecast_sd_over_protection"] == pytest.approx(var**0.5, abs=2e-3)
    assert why["forecast_over_protection"] != before["why"]["forecast_over_protection"]
