"""Money: weighted average costing, transfers that keep value, spend against budget with its
alerts, and the per-patient billing export, on both databases (pure maths first)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.alerts.models import Alert, AlertKind
from server.catalog.models import Product
from server.core.db import utcnow
from server.core.errors import InvalidInput
from server.finance import costing
from server.finance.costing import CostItem, Position
from server.finance.models import AverageCost, CostSource, MovementCost, PeriodKind
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.suppliers.models import Contract, ContractLine
from tests.conftest import Caller, Demo, first_product_id, gid, token_for

# --- pure --------------------------------------------------------------------------------------


def test_wac_blends_receipts_and_issues_leave_at_the_average() -> None:
    positions: dict[tuple[int, int], Position] = {}
    items = [
        CostItem(
            MovementKind.RECEIVE,
            1,
            7,
            1,
            100,
            price=Decimal("10"),
            price_source=CostSource.CONTRACT,
        ),
        CostItem(MovementKind.DISPENSE, 1, 7, 1, -40),
        CostItem(
            MovementKind.RECEIVE, 1, 7, 2, 60, price=Decimal("13"), price_source=CostSource.CONTRACT
        ),
        CostItem(MovementKind.DISPOSE, 1, 7, 2, -10),
    ]
    out = costing.value_movements(items, positions, {})
    assert [v.value for v in out] == [
        Decimal("1000"),
        Decimal("-400"),
        Decimal("780"),
        Decimal("-115"),
    ]
    # 60 x 10 + 60 x 13 over 120 packs
    assert out[3].unit_cost == Decimal("11.5")
    assert positions[(1, 7)].quantity == 110 and positions[(1, 7)].value == Decimal("1265")


def test_a_transfer_moves_value_and_creates_none() -> None:
    positions: dict[tuple[int, int], Position] = {}
    sent: dict[tuple[str, int], tuple[int, Decimal]] = {}
    costing.value_movements(
        [
            CostItem(
                MovementKind.RECEIVE,
                1,
                7,
                1,
                10,
                price=Decimal("3"),
                price_source=CostSource.CONTRACT,
            ),
            CostItem(MovementKind.TRANSFER_OUT, 1, 7, 1, -4, reference="TR-1"),
            CostItem(
                MovementKind.RECEIVE,
                1,
                7,
                1,
                6,
                price=Decimal("9"),
                price_source=CostSource.CONTRACT,
            ),
        ],
        positions,
        sent,
    )
    (arrived,) = costing.value_movements(
        [CostItem(MovementKind.TRANSFER_IN, 1, 7, 1, 4, reference="TR-1")], positions, sent
    )
    assert arrived.source is CostSource.TRANSFER and arrived.value == Decimal("12")
    assert positions[(1, 7)].value == Decimal("30") + Decimal("54")


@pytest.mark.parametrize(
    ("text", "kind", "start", "end"),
    [
        ("2026-02", PeriodKind.MONTH, date(2026, 2, 1), date(2026, 3, 1)),
        ("2026-Q4", PeriodKind.QUARTER, date(2026, 10, 1), date(2027, 1, 1)),
        ("2026", PeriodKind.YEAR, date(2026, 1, 1), date(2027, 1, 1)),
    ],
)
def test_periods(text: str, kind: PeriodKind, start: date, end: date) -> None:
    period = costing.parse_period(text)
    assert (period.kind, period.start, period.end, period.label) == (kind, start, end, text)


@pytest.mark.parametrize("text", ["2026-13", "2026-Q5", "26", "2026-1", "", "NaN"])
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        costing.parse_period(text)


def test_run_rate_and_forecast_projection() -> None:
    period = costing.parse_period("2026-04")  # 30 days
    assert costing.run_rate(Decimal("100"), period, date(2026, 4, 10)) == Decimal("200")
    packs = costing.forecast_quantity(
        costing.Granularity.DAILY, date(2026, 4, 10), [2.0] * 30, date(2026, 4, 11), period.end
    )
    assert packs == 40.0
    short = costing.forecast_quantity(
        costing.Granularity.DAILY, date(2026, 4, 10), [2.0] * 5, date(2026, 4, 11), period.end
    )
    assert short is None


# --- on the database ---------------------------------------------------------------------------


async def _contract(demo: Demo, product_id: int, price: str, start: date, until: date) -> None:
    async with demo.services.db.write() as session:
        contract = Contract(
            supplier_id=demo.orgs["MedDistri Wholesale"],
            buyer_id=demo.orgs["St. Aurelia General Hospital"],
            reference=f"C-{uuid.uuid4().hex[:8]}",
            valid_from=start,
            valid_until=until,
        )
        session.add(contract)
        await session.flush()
        session.add(
            ContractLine(
                contract_id=contract.id,
                product_id=product_id,
                unit_price=Decimal(price),
                lead_time_days=3,
            )
        )


async def _receive(demo: Demo, product_id: int, quantity: int, days_ago: int) -> int:
    result = await demo.services.ledger.record(
        demo.principals["admin"],
        [
            MovementRequest(
                MovementKind.RECEIVE,
                demo.locations["HOSP-CP"],
                quantity,
                counterparty_id=demo.orgs["MedDistri Wholesale"],
                occurred_at=utcnow() - timedelta(days=days_ago),
                new_lot=NewLot(
                    product_id, f"F{uuid.uuid4().hex[:8].upper()}", date.today() + timedelta(400)
                ),
            )
        ],
        operation="test.receive",
    )
    return result.movements[0].lot_id


async def _move(
    demo: Demo, kind: MovementKind, location: str, lot_id: int, qty: int, **kw: Any
) -> int:
    result = await demo.services.ledger.record(
        demo.principals["admin"],
        [MovementRequest(kind, demo.locations[location], qty, lot_id=lot_id, **kw)],
        operation=f"test.{kind.value.lower()}",
    )
    return result.movements[0].id


async def _cost(demo: Demo, movement_id: int) -> MovementCost:
    async with demo.services.db.read() as session:
        row = await session.get(MovementCost, movement_id)
    assert row is not None
    return row


async def _wac(demo: Demo, product_id: int) -> Decimal:
    async with demo.services.db.read() as session:
        row = (
            await session.execute(
                select(AverageCost.average_cost).where(
                    AverageCost.organisation_id == demo.orgs["St. Aurelia General Hospital"],
                    AverageCost.product_id == product_id,
                )
            )
        ).scalar_one()
    return Decimal(row)


async def test_receipts_at_contract_prices_blend_the_average(demo: Demo) -> None:
    product_id = await first_product_id(demo.services)
    today = date.today()
    await _contract(demo, product_id, "10.00", today - timedelta(60), today - timedelta(31))
    await _contract(demo, product_id, "12.00", today - timedelta(30), today - timedelta(11))
    await _contract(demo, product_id, "16.50", today - timedelta(10), today + timedelta(30))
    first = await _receive(demo, product_id, 100, 40)
    await _receive(demo, product_id, 50, 20)
    assert await _wac(demo, product_id) == Decimal("10.666667")  # (1000 + 600) / 150
    issued = await _move(demo, MovementKind.DISPENSE, "HOSP-CP", first, 30, patient_reference="P1")
    cost = await _cost(demo, issued)
    assert cost.source is CostSource.AVERAGE and cost.unit_cost == Decimal("10.666667")
    assert cost.value == Decimal("-320.0000")
    third = await _receive(demo, product_id, 80, 1)
    receipt = await _cost(demo, (await _latest_movement(demo, third)))
    assert receipt.source is CostSource.CONTRACT and receipt.unit_cost == Decimal("16.5")
    # 120 packs worth 1280 plus 80 x 16.5
    assert await _wac(demo, product_id) == Decimal("13.000000")
    disposed = await _move(demo, MovementKind.DISPOSE, "HOSP-CP", first, 5, reason="DAMAGED")
    assert (await _cost(demo, disposed)).value == Decimal("-65.0000")


async def _latest_movement(demo: Demo, lot_id: int) -> int:
    from server.inventory.models import Movement

    async with demo.services.db.read() as session:
        return int(
            (
                await session.execute(
                    select(Movement.id)
                    .where(Movement.lot_id == lot_id)
                    .order_by(Movement.id.desc())
                )
            )
            .scalars()
            .first()
        )


async def test_receipt_without_price_falls_back_to_the_catalogue(demo: Demo) -> None:
    product_id = await first_product_id(demo.services, 1)
    lot = await _receive(demo, product_id, 10, 0)
    async with demo.services.db.read() as session:
        catalogue = (await session.get(Product, product_id)).unit_cost  # type: ignore[union-attr]
    cost = await _cost(demo, await _latest_movement(demo, lot))
    assert cost.source is CostSource.CATALOG and cost.unit_cost == Decimal(catalogue)


async def test_transfers_keep_value_when_the_average_moves_between(demo: Demo) -> None:
    product_id = await first_product_id(demo.services, 2)
    today = date.today()
    await _contract(demo, product_id, "4.00", today - timedelta(30), today - timedelta(6))
    await _contract(demo, product_id, "10.00", today - timedelta(5), today + timedelta(5))
    lot = await _receive(demo, product_id, 20, 10)
    out = await _move(demo, MovementKind.TRANSFER_OUT, "HOSP-CP", lot, 5, reference="TR-KEEP")
    await _receive(demo, product_id, 20, 0)  # the average becomes 7 meanwhile
    arrived = await _move(demo, MovementKind.TRANSFER_IN, "WARD-A", lot, 5, reference="TR-KEEP")
    sent, got = await _cost(demo, out), await _cost(demo, arrived)
    assert sent.value == Decimal("-20.0000") and got.value == Decimal("20.0000")
    assert got.source is CostSource.TRANSFER
    async with demo.services.db.read() as session:
        position = (
            await session.execute(
                select(AverageCost).where(
                    AverageCost.organisation_id == demo.orgs["St. Aurelia General Hospital"],
                    AverageCost.product_id == product_id,
                )
            )
        ).scalar_one()
    # 20 x 4 + 20 x 10: value on hand is what was paid, whatever moved between shelves
    assert position.quantity == 40 and Decimal(position.value) == Decimal("280")


SPEND = """query($period: String!, $groupBy: SpendGrouping!) {
  spendReport(period: $period, groupBy: $groupBy) {
    currency spend budget forecast period
    rows { atcCode spend budget remaining percent forecast forecastSource
           location { code } supplier { name } }
  }
}"""
SET_BUDGET = """mutation($input: SetBudgetInput!) {
  setBudget(input: $input) { budget { id amount period warningPercent location { code } }
                             errors { code field message } }
}"""


async def _ward_spend(demo: Demo, product_offset: int = 3) -> tuple[int, int]:
    """Stock on WARD-A and WARD-B at 2.50 a pack; returns (product, lot). The product is not a
    controlled drug, so a dispense may go without a patient reference (the unbilled case)."""
    from server.catalog.models import Product

    async with demo.services.db.read() as session:
        product_id = (
            await session.execute(
                select(Product.id)
                .where(Product.controlled_schedule.is_(None))
                .order_by(Product.id)
                .offset(product_offset)
                .limit(1)
            )
        ).scalar_one()
    today = date.today()
    await _contract(demo, product_id, "2.50", today - timedelta(400), today + timedelta(30))
    lot = await _receive(demo, product_id, 200, 0)
    for ward in ("WARD-A", "WARD-B"):
        await _move(demo, MovementKind.TRANSFER_OUT, "HOSP-CP", lot, 50, reference=f"T-{ward}")
        await _move(demo, MovementKind.TRANSFER_IN, ward, lot, 50, reference=f"T-{ward}")
    return product_id, lot


async def test_spend_by_location_atc_and_supplier(demo: Demo, as_user: Any) -> None:
    product_id, lot = await _ward_spend(demo)
    await _move(demo, MovementKind.DISPENSE, "WARD-A", lot, 8, patient_reference="ENC-1")
    await _move(demo, MovementKind.DISPENSE, "WARD-B", lot, 4, patient_reference="ENC-2")
    await _move(demo, MovementKind.RETURN, "WARD-B", lot, 1, patient_reference="ENC-2")
    await _move(demo, MovementKind.DISPOSE, "WARD-A", lot, 2, reason="DAMAGED")
    pharmacist: Caller = await as_user("pharmacist")
    month = date.today().strftime("%Y-%m")
    await pharmacist.ok(
        SET_BUDGET,
        input={
            "location": gid("Location", demo.locations["WARD-A"]),
            "period": month,
            "amount": "100",
        },
    )
    by_location = await pharmacist.call(SPEND, period=month, groupBy="LOCATION")
    assert by_location["currency"] == "EUR"
    rows = {r["location"]["code"]: r for r in by_location["rows"]}
    assert Decimal(rows["WARD-A"]["spend"]) == Decimal("25")  # (8 + 2) x 2.50
    assert Decimal(rows["WARD-B"]["spend"]) == Decimal("7.5")  # (4 - 1) x 2.50
    assert Decimal(rows["WARD-A"]["budget"]) == 100 and Decimal(rows["WARD-A"]["remaining"]) == 75
    assert Decimal(rows["WARD-A"]["percent"]) == 25
    assert rows["WARD-B"]["budget"] is None and rows["WARD-B"]["percent"] is None
    assert rows["WARD-A"]["forecastSource"] in ("RUN_RATE", "FORECAST")
    assert Decimal(rows["WARD-A"]["forecast"]) >= Decimal("25")
    async with demo.services.db.read() as session:
        atc = (await session.get(Product, product_id)).atc_code  # type: ignore[union-attr]
    by_atc = await pharmacist.call(SPEND, period=month, groupBy="ATC")
    assert [(r["atcCode"], Decimal(r["spend"])) for r in by_atc["rows"]] == [(atc, Decimal("32.5"))]
    by_supplier = await pharmacist.call(SPEND, period=month, groupBy="SUPPLIER")
    assert [(r["supplier"]["name"], Decimal(r["spend"])) for r in by_supplier["rows"]] == [
        ("MedDistri Wholesale", Decimal("32.5"))
    ]
    assert Decimal(by_supplier["spend"]) == Decimal(by_location["spend"]) == Decimal("32.5")
    # A past period is closed: nothing spent, nothing to come.
    closed = await pharmacist.call(SPEND, period="2020", groupBy="LOCATION")
    assert closed["rows"] == [] and Decimal(closed["spend"]) == 0
    # A nurse sees no money at all.
    nurse: Caller = await as_user("nurse")
    assert "may not" in await nurse.forbidden_read(SPEND, period=month, groupBy="LOCATION")


async def _budget_alerts(demo: Demo) -> dict[AlertKind, int]:
    async with demo.services.db.read() as session:
        rows = (
            (
                await session.execute(
                    select(Alert.kind).where(
                        Alert.kind.in_((AlertKind.BUDGET_WARNING, AlertKind.BUDGET_EXCEEDED)),
                        Alert.active.is_(True),
                    )
                )
            )
            .scalars()
            .all()
        )
    return {kind: rows.count(kind) for kind in set(rows)}


async def test_budget_alerts_at_the_crossing_and_not_before(demo: Demo, as_user: Any) -> None:
    _product, lot = await _ward_spend(demo, 4)
    pharmacist: Caller = await as_user("pharmacist")
    month = date.today().strftime("%Y-%m")
    await pharmacist.ok(
        SET_BUDGET,
        input={
            "location": gid("Location", demo.locations["WARD-A"]),
            "period": month,
            "amount": "50",
            "warningPercent": 90,
        },
    )
    await _move(demo, MovementKind.DISPENSE, "WARD-A", lot, 17, patient_reference="X")  # 42.50
    assert await _budget_alerts(demo) == {}
    await _move(demo, MovementKind.DISPENSE, "WARD-A", lot, 1, patient_reference="X")  # 45.00
    assert await _budget_alerts(demo) == {AlertKind.BUDGET_WARNING: 1}
    await _move(demo, MovementKind.DISPENSE, "WARD-A", lot, 1, patient_reference="X")  # 47.50
    assert await _budget_alerts(demo) == {AlertKind.BUDGET_WARNING: 1}  # once, not again
    await _move(demo, MovementKind.DISPENSE, "WARD-A", lot, 1, patient_reference="X")  # 50.00
    assert await _budget_alerts(demo) == {AlertKind.BUDGET_EXCEEDED: 1}
    # Raising the budget clears the alert.
    await pharmacist.ok(
        SET_BUDGET,
        input={
            "location": gid("Location", demo.locations["WARD-A"]),
            "period": month,
            "amount": "500",
        },
    )
    assert await _budget_alerts(demo) == {}


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "1e400", "0.00001", "-5"])
async def test_bad_amounts_are_refused_with_typed_errors(
    demo: Demo, as_user: Any, amount: str
) -> None:
    pharmacist: Caller = await as_user("pharmacist")
    body = await pharmacist.raw(
        SET_BUDGET,
        input={
            "location": gid("Location", demo.locations["WARD-A"]),
            "period": "2026-01",
            "amount": amount,
        },
    )
    if body.get("errors"):
        assert body["errors"][0]["extensions"]["code"] in (
            "INVALID_INPUT",
            "GRAPHQL_VALIDATION_FAILED",
        ), body
    else:
        (error,) = body["data"]["setBudget"]["errors"]
        assert error["code"] == "INVALID_INPUT" and error["field"] == "amount", body
    with pytest.raises(InvalidInput):
        await demo.services.finance.set_budget(
            demo.principals["pharmacist"],
            location_id=demo.locations["WARD-A"],
            period="2026-01",
            amount=Decimal(amount),
        )


async def test_budget_roles_and_organisations(demo: Demo, as_user: Any) -> None:
    warehouse: Caller = await as_user("warehouse")
    await warehouse.refused(
        SET_BUDGET,
        "FORBIDDEN",
        input={
            "location": gid("Location", demo.locations["HOSP-WH"]),
            "period": "2026",
            "amount": "10",
        },
    )
    pharmacist: Caller = await as_user("pharmacist")
    await pharmacist.refused(
        SET_BUDGET,
        "FORBIDDEN",  # another organisation's location
        input={
            "location": gid("Location", demo.locations["PHARM-01"]),
            "period": "2026",
            "amount": "10",
        },
    )
    await pharmacist.refused(
        SET_BUDGET,
        "INVALID_INPUT",
        input={
            "location": gid("Location", demo.locations["WARD-A"]),
            "period": "2026-13",
            "amount": "10",
        },
    )
    for period in ("2026-01", "2026-02", "2026-03"):
        await pharmacist.ok(
            SET_BUDGET,
            input={
                "location": gid("Location", demo.locations["WARD-C"]),
                "period": period,
                "amount": "100",
            },
        )
    quarter = await pharmacist.call(SPEND, period="2026-Q1", groupBy="LOCATION")
    (row,) = [r for r in quarter["rows"] if r["location"]["code"] == "WARD-C"]
    assert Decimal(row["budget"]) == 300  # three months make the quarter's budget
    listed = await pharmacist.call(
        "query { budgets(first: 10) { totalCount"
        " edges { node { period amount location { code } } } } }"
    )
    assert listed["totalCount"] == 3


async def test_billing_csv_scope_and_content(demo: Demo, client: httpx.AsyncClient) -> None:
    _product, lot = await _ward_spend(demo, 5)
    await _move(
        demo,
        MovementKind.DISPENSE,
        "WARD-A",
        lot,
        3,
        patient_reference="=ENC-42",
        reference="ENC-42/1",
    )
    await _move(demo, MovementKind.DISPENSE, "WARD-B", lot, 2, patient_reference="ENC-43")
    await _move(demo, MovementKind.DISPENSE, "WARD-B", lot, 1)  # no patient: not billed
    today = date.today().isoformat()
    url = f"/reports/patient-usage.csv?from={today}&to={today}"

    async def get(username: str | None, target: str = url) -> httpx.Response:
        headers = {}
        if username:
            headers["Authorization"] = f"Bearer {await token_for(client, username)}"
        return await client.get(target, headers=headers)

    response = await get("pharmacist")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["patient_reference"], r["location"], r["quantity"], r["total"]) for r in rows] == [
        ("'=ENC-42", "WARD-A", "3", "7.5000"),  # a formula-looking cell is neutralised
        ("ENC-43", "WARD-B", "2", "5.0000"),
    ]
    assert rows[0]["encounter"] == "ENC-42/1" and rows[0]["unit_cost"] == "2.500000"
    assert rows[0]["currency"] == "EUR"
    # The warehouse manager's scope holds no ward: no rows, not someone else's patients.
    scoped = await get("warehouse")
    assert scoped.status_code == 200 and len(scoped.text.strip().splitlines()) == 1
    assert (
        await get("warehouse", url + f"&location={gid('Location', demo.locations['WARD-A'])}")
    ).status_code == 403
    assert (await get("nurse")).status_code == 403  # no finance read
    assert (await get(None)).status_code == 401
    assert (
        await get("pharmacist", "/reports/patient-usage.csv?from=2026-13-01&to=2026-01-01")
    ).status_code == 400
    bad = await get("pharmacist", f"/reports/patient-usage.csv?from={today}&to=2000-01-01")
    assert (
        bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    )
    # The GraphQL view of the same rows.
    pharmacist = Caller(client, await token_for(client, "pharmacist"))
    page = await pharmacist.call(
        """query($from: Date!, $to: Date!) { patientUsage(from: $from, to: $to, first: 1) {
             totalCount hasNextPage
             rows { patientReference quantity total location { code } } } }""",
        **{"from": today, "to": today},
    )
    assert page["totalCount"] == 2 and page["hasNextPage"] is True
    assert page["rows"][0]["patientReference"] == "=ENC-42"


async def test_a_shipment_received_against_a_po_is_priced_from_its_line(
    demo: Demo, client: httpx.AsyncClient, as_user: Any
) -> None:
    """The real flow: order at 7.25, ship, receive with receiveShipmentLine; the receipt
    carries the PO line's price even though the catalogue and a contract say otherwise."""
    from tests.test_procurement import (
        RECEIVE,
        World,
        acknowledged_order,
        delivered_shipment,
        wholesaler_stock,
    )

    actors = {u: await as_user(u) for u in ("admin", "pharmacist", "supplier")}
    world = World(
        demo, client, actors, [await first_product_id(demo.services, i) for i in range(3)]
    )
    today = date.today()
    await _contract(demo, world.products[0], "99.00", today - timedelta(5), today + timedelta(5))
    lot = await wholesaler_stock(world, 0, 40, "FIN-PO1")
    order = await acknowledged_order(world, [(0, 30, "7.25")])
    shipment = await delivered_shipment(world, order, [(0, lot, 30)])
    await world.pharmacist.ok(
        RECEIVE, shipment=shipment["id"], line=shipment["lines"][0]["id"], quantity=30
    )
    async with demo.services.db.read() as session:
        cost = (
            await session.execute(
                select(MovementCost)
                .where(MovementCost.kind == MovementKind.RECEIVE, MovementCost.lot_id == lot.id)
                .where(MovementCost.organisation_id == demo.orgs["St. Aurelia General Hospital"])
            )
        ).scalar_one()
    assert cost.source is CostSource.PURCHASE_ORDER and cost.unit_cost == Decimal("7.25")
    assert cost.value == Decimal("217.5") and cost.supplier_id == demo.orgs["MedDistri Wholesale"]
    assert await _wac(demo, world.products[0]) == Decimal("7.25")


async def test_stored_forecasts_project_the_spend_to_period_end(demo: Demo) -> None:
    """A stored daily forecast of 2 packs a day at WARD-C, at 2.50 a pack: the rest of the
    period is projected from it, not from the run rate."""
    from server.core.db import utcnow as now
    from server.forecasting.models import ForecastRun, StoredSeriesForecast

    product_id, lot = await _ward_spend(demo, 6)
    await _move(demo, MovementKind.TRANSFER_OUT, "HOSP-CP", lot, 20, reference="T-C")
    await _move(demo, MovementKind.TRANSFER_IN, "WARD-C", lot, 20, reference="T-C")
    await _move(demo, MovementKind.DISPENSE, "WARD-C", lot, 4, patient_reference="P")  # 10.00
    today = date.today()
    async with demo.services.db.write() as session:
        run = ForecastRun(
            granularity="DAILY",
            last_period=today,
            horizon=400,
            series_total=1,
            series_refitted=1,
            seconds=0.1,
        )
        session.add(run)
        await session.flush()
        session.add(
            StoredSeriesForecast(
                product_id=product_id,
                location_id=demo.locations["WARD-C"],
                granularity="DAILY",
                run_id=run.id,
                computed_at=now(),
                history_hash="x",
                history_start=today,
                last_period=today,
                history=[4.0],
                first_period=today,
                points=[2.0] * 400,
                low_80=[0.0] * 400,
                high_80=[4.0] * 400,
                low_95=[0.0] * 400,
                high_95=[5.0] * 400,
                model="NAIVE",
                season_length=7,
                demand_class="SMOOTH",
                history_length=1,
                backtest_windows=0,
                interval_source="NONE",
                candidates={},
                errors=[],
            )
        )
    report = await demo.services.finance.spend_report(
        demo.principals["pharmacist"], period=today.strftime("%Y-%m"), group_by="LOCATION"
    )
    (row,) = [r for r in report.rows if r.location_id == demo.locations["WARD-C"]]
    period = costing.period_of(PeriodKind.MONTH, today)
    days_left = (period.end - today).days - 1
    assert row.forecast_source is costing.ForecastSource.FORECAST
    assert row.forecast == Decimal("10") + Decimal(2 * days_left) * Decimal("2.5")


async def test_concurrent_writers_re_blend_one_after_the_other(demo: Demo) -> None:
    """Receipts and dispenses of one product at once: no update of the average is lost, and
    the position is the sum of the valued movements."""
    import asyncio

    from sqlalchemy import func

    product_id = await first_product_id(demo.services, 7)
    today = date.today()
    await _contract(demo, product_id, "3.00", today - timedelta(30), today + timedelta(30))
    lot = await _receive(demo, product_id, 100, 0)
    await asyncio.gather(
        *(
            _move(demo, MovementKind.DISPENSE, "HOSP-CP", lot, 1, patient_reference=f"C{i}")
            for i in range(8)
        ),
        *(_receive(demo, product_id, 10, 0) for _ in range(4)),
    )
    org = demo.orgs["St. Aurelia General Hospital"]
    async with demo.services.db.read() as session:
        position = (
            await session.execute(
                select(AverageCost).where(
                    AverageCost.organisation_id == org, AverageCost.product_id == product_id
                )
            )
        ).scalar_one()
        quantity, value = (
            await session.execute(
                select(func.sum(MovementCost.quantity), func.sum(MovementCost.value)).where(
                    MovementCost.organisation_id == org, MovementCost.product_id == product_id
                )
            )
        ).one()
    assert position.quantity == quantity == 100 - 8 + 40
    assert Decimal(position.value) == Decimal(value) == Decimal(132 * 3)


async def test_backfill_values_what_was_written_before_costing(demo: Demo) -> None:
    """Movements without a valuation (as after migrating a database) get one, once."""
    from sqlalchemy import delete, func

    product_id = await first_product_id(demo.services, 8)
    lot = await _receive(demo, product_id, 30, 1)
    await _move(demo, MovementKind.DISPENSE, "HOSP-CP", lot, 5, patient_reference="B")
    async with demo.services.db.write() as session:
        await session.execute(delete(MovementCost))
        await session.execute(delete(AverageCost))
    assert await demo.services.finance.backfill(batch=1) == 2
    assert await demo.services.finance.backfill() == 0
    async with demo.services.db.read() as session:
        kinds = (await session.execute(select(MovementCost.kind, MovementCost.quantity))).all()
        total = (await session.execute(select(func.count()).select_from(AverageCost))).scalar()
    assert sorted(kinds) == sorted([(MovementKind.RECEIVE, 30), (MovementKind.DISPENSE, -5)])
    assert total == 1
