"""Supplier performance is computed from orders and shipments, never typed in: the pure maths
without a database, then a hand-built history on both databases with every figure checked."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from server.core.db import utcnow
from server.purchasing.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus
from server.shipments.models import Discrepancy, DiscrepancyKind, Shipment, ShipmentStatus
from server.suppliers import rules
from server.suppliers.models import Contract, ContractLine
from server.suppliers.rules import OrderLineFact, ReceivedShipmentFact
from tests.conftest import Demo, first_product_id, gid, gql, token_for


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


# --- pure maths ----------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in (7, 1, 3, 10, 2, 9, 4, 8, 6, 5)]
    assert rules.percentile(values, 0.9) == 9.0
    assert rules.percentile(values, 0.5) == 5.0
    assert rules.percentile([4.0], 0.9) == 4.0
    assert rules.percentile([4.0, 10.0, 4.0, 18.0], 0.9) == 18.0
    assert rules.percentile([], 0.9) is None


def test_on_time_and_lead_time_of_one_shipment() -> None:
    fact = ReceivedShipmentFact(
        at("2026-01-10T23:00"), at("2026-01-05T11:00"), date(2026, 1, 10), 0
    )
    assert rules.on_time(fact)  # later that day still counts
    assert rules.lead_time_days(fact) == 5.5
    late = ReceivedShipmentFact(at("2026-01-11T00:00"), None, date(2026, 1, 10), 0)
    assert not rules.on_time(late)
    assert rules.lead_time_days(late) is None
    assert not rules.on_time(ReceivedShipmentFact(at("2026-01-01T00:00"), None, None, 0))


def test_fill_rate_caps_over_delivery_per_line() -> None:
    lines = [
        OrderLineFact(100, 110, Decimal(1), None),
        OrderLineFact(100, 50, Decimal(1), None),
    ]
    assert rules.fill(lines) == (200, 150)  # 110 of 100 does not make up the other line's gap


def test_price_variance_is_quantity_weighted_against_the_contract() -> None:
    lines = [
        OrderLineFact(100, 0, Decimal("10.00"), Decimal("10.00")),  # on contract
        OrderLineFact(25, 0, Decimal("4.40"), Decimal("4.00")),  # +10
        OrderLineFact(100, 0, Decimal("10.50"), Decimal("10.00")),  # +50
        OrderLineFact(100, 0, Decimal("3.80"), Decimal("4.00")),  # -20
        OrderLineFact(75, 0, Decimal("5.00"), None),  # no contract: not priced
    ]
    # (0 + 10 + 50 - 20) / (1000 + 100 + 1000 + 400) * 100
    assert rules.price_variance_percent(lines) == (325, 1.6)
    assert rules.price_variance_percent([OrderLineFact(1, 0, Decimal(1), None)]) == (0, None)
    assert rules.price_variance_percent([]) == (0, None)


def test_performance_with_no_history_has_no_rates() -> None:
    empty = rules.performance([], [])
    assert empty.shipments_received == 0
    assert empty.on_time_rate is None and empty.fill_rate is None
    assert empty.average_lead_time_days is None and empty.p90_lead_time_days is None
    assert empty.discrepancy_rate is None and empty.price_variance_percent is None


def test_contract_term_valid_on_a_date_prefers_the_newest_contract() -> None:
    old = rules.ContractTerm(1, 7, date(2025, 1, 1), date(2026, 12, 31), Decimal(5), 3, 1)
    new = rules.ContractTerm(2, 7, date(2026, 1, 1), date(2026, 6, 30), Decimal(4), 2, 1)
    assert rules.valid_term([old, new], 7, date(2026, 3, 1)) is new
    assert rules.valid_term([old, new], 7, date(2026, 8, 1)) is old
    assert rules.valid_term([old, new], 7, date(2024, 8, 1)) is None
    assert rules.valid_term([old, new], 8, date(2026, 3, 1)) is None


# --- a hand-built history ----------------------------------------------------------------------

PERFORMANCE = """
query($supplier: ID!, $since: Date, $until: Date) {
  supplierPerformance(supplier: $supplier, since: $since, until: $until) {
    since until shipmentsReceived shipmentsOnTime onTimeDeliveryRate
    orderedQuantity receivedQuantity fillRate averageLeadTimeDays leadTimeP90Days
    shipmentsWithDiscrepancies discrepancyRate pricedQuantity priceVariancePercent
    supplier { name } buyer { name }
  }
}"""


async def build_history(demo: Demo) -> None:
    """Written as rows, so every date is exactly what the figures below assume.

    Contract (hospital, valid 2025-12-01..2026-12-31): product 0 at 10.00, product 1 at 4.00.
    Orders to MedDistri (submitted / expected):
      O1 2026-01-05 / 01-10: p0 100 @ 10.00 recv 100; p1 25 @ 4.40 recv 25
      O2 2026-02-01 / 02-05: p0 100 @ 10.50 recv 110 (over); p2 75 @ 5.00 recv 15 (no contract)
      O3 2026-03-01 / 03-04: p1 100 @ 3.80 recv 35
      O4 2026-01-20 CANCELLED: p0 500 @ 99 (ignored)
      O5 2025-12-15 / 12-20: p0 10 @ 10.00 recv 10 (submitted before the period)
      O6 (Lindenhof Pharmacy) 2026-02-10 / 02-11: p0 10 @ 12.00 recv 10
    Shipments (received):
      S1 O1 2026-01-09 on time, 4 d          S2 O1 2026-01-15 late, 10 d, 1 discrepancy
      S3 O2 2026-02-05 on time, 4 d, 2 disc. S4 O5 2026-01-02 late, 18 d
      S5 O2 2026-04-10 (after the period)    S6 O1 IN_TRANSIT (not received)
      S7 O6 2026-02-12 late, 2 d (the pharmacy's)
    """
    services = demo.services
    p = [await first_product_id(services, i) for i in range(3)]
    whs = demo.orgs["MedDistri Wholesale"]
    hosp = demo.orgs["St. Aurelia General Hospital"]
    pharm = demo.orgs["Lindenhof Pharmacy"]
    user = demo.users["pharmacist"]
    async with services.db.write() as session:
        contract = Contract(
            supplier_id=whs,
            buyer_id=hosp,
            reference="HIST-1",
            valid_from=date(2025, 12, 1),
            valid_until=date(2026, 12, 31),
            created_at=at("2025-11-30T00:00"),
        )
        session.add(contract)
        await session.flush()
        session.add_all(
            [
                ContractLine(
                    contract_id=contract.id,
                    product_id=p[0],
                    unit_price=Decimal("10.00"),
                    lead_time_days=5,
                    minimum_order_quantity=1,
                ),
                ContractLine(
                    contract_id=contract.id,
                    product_id=p[1],
                    unit_price=Decimal("4.00"),
                    lead_time_days=5,
                    minimum_order_quantity=1,
                ),
            ]
        )

        async def order(
            n: int,
            submitted: str,
            expected: str,
            lines: list[tuple[int, int, str, int]],
            status: PurchaseOrderStatus = PurchaseOrderStatus.PARTIALLY_RECEIVED,
            buyer: int = hosp,
            deliver_to: str = "HOSP-CP",
        ) -> PurchaseOrder:
            row = PurchaseOrder(
                number=f"PO-HIST-{n}",
                buyer_id=buyer,
                supplier_id=whs,
                deliver_to_id=demo.locations[deliver_to],
                status=status,
                expected_delivery_date=date.fromisoformat(expected),
                created_by=user,
                created_at=at(submitted),
                submitted_at=at(submitted),
            )
            session.add(row)
            await session.flush()
            for product, quantity, price, received in lines:
                session.add(
                    PurchaseOrderLine(
                        order_id=row.id,
                        product_id=p[product],
                        quantity=quantity,
                        unit_price=Decimal(price),
                        received_quantity=received,
                    )
                )
            return row

        o1 = await order(
            1, "2026-01-05", "2026-01-10", [(0, 100, "10.00", 100), (1, 25, "4.40", 25)]
        )
        o2 = await order(2, "2026-02-01", "2026-02-05", [(0, 100, "10.50", 110), (2, 75, "5", 15)])
        await order(3, "2026-03-01", "2026-03-04", [(1, 100, "3.80", 35)])
        await order(
            4, "2026-01-20", "2026-01-25", [(0, 500, "99", 0)], PurchaseOrderStatus.CANCELLED
        )
        o5 = await order(5, "2025-12-15", "2025-12-20", [(0, 10, "10.00", 10)])
        o6 = await order(
            6, "2026-02-10", "2026-02-11", [(0, 10, "12", 10)], buyer=pharm, deliver_to="PHARM-01"
        )

        async def shipment(
            n: int,
            order: PurchaseOrder,
            received: str | None,
            discrepancies: int = 0,
        ) -> None:
            row = Shipment(
                number=f"SH-HIST-{n}",
                sender_id=whs,
                receiver_id=order.buyer_id,
                destination_id=order.deliver_to_id,
                purchase_order_id=order.id,
                status=ShipmentStatus.RECEIVED if received else ShipmentStatus.IN_TRANSIT,
                created_by=user,
                created_at=order.submitted_at,
                received_at=at(received) if received else None,
            )
            session.add(row)
            await session.flush()
            for _ in range(discrepancies):
                session.add(
                    Discrepancy(
                        shipment_id=row.id,
                        kind=DiscrepancyKind.SHORT,
                        quantity=1,
                        details={},
                        recorded_by=user,
                        recorded_at=row.received_at or utcnow(),
                    )
                )

        await shipment(1, o1, "2026-01-09")
        await shipment(2, o1, "2026-01-15", discrepancies=1)
        await shipment(3, o2, "2026-02-05", discrepancies=2)
        await shipment(4, o5, "2026-01-02")
        await shipment(5, o2, "2026-04-10")
        await shipment(6, o1, None)
        await shipment(7, o6, "2026-02-12", discrepancies=1)


async def figures(
    client: Any, token: str, demo: Demo, since: str | None, until: str | None
) -> dict[str, Any]:
    body = await gql(
        client,
        PERFORMANCE,
        {
            "supplier": gid("Supplier", demo.orgs["MedDistri Wholesale"]),
            "since": since,
            "until": until,
        },
        token,
    )
    assert "errors" not in body, body
    return dict(body["data"]["supplierPerformance"])


async def test_each_figure_from_a_hand_built_history(demo: Demo, client: Any) -> None:
    await build_history(demo)
    pharmacist = await token_for(client, "pharmacist")
    quarter = await figures(client, pharmacist, demo, "2026-01-01", "2026-04-01")
    assert quarter == {
        "since": "2026-01-01",
        "until": "2026-04-01",
        # S1, S2, S3, S4 received in the quarter (S5 after it, S6 in transit, S7 not ours).
        "shipmentsReceived": 4,
        "shipmentsOnTime": 2,  # S1 (01-09 <= 01-10), S3 (02-05 <= 02-05)
        "onTimeDeliveryRate": 0.5,
        # O1, O2, O3 submitted in the quarter; O4 cancelled, O5 before it.
        "orderedQuantity": 400,  # 100 + 25 + 100 + 75 + 100
        "receivedQuantity": 275,  # 100 + 25 + min(110, 100) + 15 + 35
        "fillRate": 0.6875,
        "averageLeadTimeDays": 9.0,  # (4 + 10 + 4 + 18) / 4
        "leadTimeP90Days": 18.0,  # nearest rank ceil(0.9 * 4) = 4th of [4, 4, 10, 18]
        "shipmentsWithDiscrepancies": 2,  # S2, S3
        "discrepancyRate": 0.5,
        "pricedQuantity": 325,  # product 2 has no contract price
        "priceVariancePercent": 1.6,  # (0 + 10 + 50 - 20) / 2500 * 100
        "supplier": {"name": "MedDistri Wholesale"},
        "buyer": {"name": "St. Aurelia General Hospital"},
    }

    # A narrower period: only what happened in January.
    january = await figures(client, pharmacist, demo, "2026-01-01", "2026-02-01")
    assert (january["shipmentsReceived"], january["shipmentsOnTime"]) == (3, 1)  # S1, S2, S4
    assert january["onTimeDeliveryRate"] == pytest.approx(1 / 3)
    assert (january["orderedQuantity"], january["receivedQuantity"]) == (125, 125)  # O1
    assert january["fillRate"] == 1.0
    assert (january["averageLeadTimeDays"], january["leadTimeP90Days"]) == (
        pytest.approx(32 / 3),
        18.0,
    )
    assert january["priceVariancePercent"] == pytest.approx(10 / 1100 * 100, abs=1e-4)

    # All time, still only the hospital's own orders: S5 and O5 join.
    everything = await figures(client, pharmacist, demo, None, None)
    assert everything["shipmentsReceived"] == 5
    assert everything["orderedQuantity"] == 410
    assert everything["averageLeadTimeDays"] == (4 + 10 + 4 + 18 + 68) / 5

    # The auditor sees every buyer: the pharmacy's late shipment and its order count too.
    auditor = await token_for(client, "auditor")
    all_buyers = await figures(client, auditor, demo, "2026-01-01", "2026-04-01")
    assert all_buyers["buyer"] is None
    assert (all_buyers["shipmentsReceived"], all_buyers["shipmentsOnTime"]) == (5, 2)
    assert all_buyers["onTimeDeliveryRate"] == 0.4
    assert all_buyers["shipmentsWithDiscrepancies"] == 3
    assert all_buyers["orderedQuantity"] == 410 and all_buyers["pricedQuantity"] == 325
    # The supplier sees its own figures over all its buyers; the same numbers.
    supplier = await token_for(client, "supplier")
    assert await figures(client, supplier, demo, "2026-01-01", "2026-04-01") == all_buyers


async def test_performance_access_and_input(demo: Demo, client: Any) -> None:
    nurse = await token_for(client, "nurse")
    body = await gql(
        client,
        PERFORMANCE,
        {"supplier": gid("Supplier", demo.orgs["MedDistri Wholesale"])},
        nurse,
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    pharmacist = await token_for(client, "pharmacist")
    backwards = await gql(
        client,
        PERFORMANCE,
        {
            "supplier": gid("Supplier", demo.orgs["MedDistri Wholesale"]),
            "since": "2026-02-01",
            "until": "2026-01-01",
        },
        pharmacist,
    )
    assert backwards["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    not_a_supplier = await gql(
        client,
        PERFORMANCE,
        {"supplier": gid("Supplier", demo.orgs["St. Aurelia General Hospital"])},
        pharmacist,
    )
    assert not_a_supplier["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    empty = await figures(client, pharmacist, demo, None, None)
    assert empty["shipmentsReceived"] == 0 and empty["onTimeDeliveryRate"] is None
