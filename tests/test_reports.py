"""The expiry and waste report: pure grouping and period rules without a database, then
`wasteReport` over GraphQL on both databases against a ledger written in the past."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from server.catalog.models import Product
from server.core.errors import InvalidInput
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.reports.service import (
    EXPIRED_ON_SHELF,
    ReportService,
    WasteGrouping,
    WasteItem,
    WasteRow,
    add_years,
    group_waste,
    month_of,
    normalise_grouping,
    reason_code,
    total_of,
    validate_period,
)
from tests.conftest import Demo, first_product_id, gid, gql, token_for

# --- pure functions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "code"),
    [
        ("EXPIRED", "EXPIRED"),
        ("DAMAGED: dropped on the floor", "DAMAGED"),
        ("PATIENT_REFUSED:  ", "PATIENT_REFUSED"),
        ("recalled: batch notice 12", "RECALLED"),
        ("  CONTAMINATED ", "CONTAMINATED"),
        ("broken vial, see note", "OTHER"),  # free text, not a code
        ("", "OTHER"),
        (None, "OTHER"),
        (": only a note", "OTHER"),
    ],
)
def test_reason_code(stored: str | None, code: str) -> None:
    assert reason_code(stored) == code


def test_month_of_dates_and_utc_datetimes() -> None:
    from datetime import timedelta, timezone

    assert month_of(date(2025, 2, 28)) == "2025-02"
    assert month_of(datetime(2025, 1, 31, 23, 59, tzinfo=UTC)) == "2025-01"
    # 00:30 on 1 February in UTC+2 is still January in UTC, which is how the ledger reports.
    assert month_of(datetime(2025, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == "2025-01"


def test_period_rules() -> None:
    validate_period(date(2025, 1, 1), date(2025, 1, 1))  # empty period is allowed
    validate_period(date(2024, 2, 29), date(2027, 2, 28))  # exactly three years
    with pytest.raises(InvalidInput, match="after"):
        validate_period(date(2025, 2, 1), date(2025, 1, 1))
    with pytest.raises(InvalidInput, match="at most 3 years"):
        validate_period(date(2024, 2, 29), date(2027, 3, 1))
    assert add_years(date(2024, 2, 29), 3) == date(2027, 2, 28)
    assert add_years(date(2024, 2, 29), 4) == date(2028, 2, 29)


def _item(month: str, loc: int, reason: str, product: int, qty: int, cost: str) -> WasteItem:
    return WasteItem(month, loc, reason, product, qty, Decimal(cost))


ITEMS = [
    _item("2025-01", 1, "DAMAGED", 10, 3, "2.5000"),
    _item("2025-01", 1, "DAMAGED", 11, 2, "10.0000"),
    _item("2025-01", 2, "EXPIRED", 10, 4, "2.5000"),
    _item("2025-02", 1, "DAMAGED", 10, 1, "2.5000"),
    _item("2025-02", 2, EXPIRED_ON_SHELF, 11, 7, "10.0000"),
]


def test_group_by_default_dimensions() -> None:
    rows = group_waste(ITEMS, normalise_grouping(None))
    assert rows == [
        WasteRow("2025-01", 1, "DAMAGED", None, 5, Decimal("27.5000")),
        WasteRow("2025-01", 2, "EXPIRED", None, 4, Decimal("10.0000")),
        WasteRow("2025-02", 1, "DAMAGED", None, 1, Decimal("2.5000")),
        WasteRow("2025-02", 2, EXPIRED_ON_SHELF, None, 7, Decimal("70.0000")),
    ]
    assert total_of(rows).quantity == 17 and total_of(rows).value == Decimal("110.0000")


def test_group_by_reason_values_each_product_at_its_own_cost() -> None:
    rows = group_waste(ITEMS, [WasteGrouping.REASON])
    assert [(r.reason, r.quantity, r.value) for r in rows] == [
        ("DAMAGED", 6, Decimal("30.0000")),  # 3x2.5 + 2x10 + 1x2.5, not 6 x an average cost
        ("EXPIRED", 4, Decimal("10.0000")),
        (EXPIRED_ON_SHELF, 7, Decimal("70.0000")),
    ]
    assert all(r.month is None and r.location_id is None and r.product_id is None for r in rows)


def test_group_by_product_and_nothing() -> None:
    by_product = group_waste(ITEMS, [WasteGrouping.PRODUCT, WasteGrouping.MONTH])
    assert [(r.month, r.product_id, r.quantity) for r in by_product] == [
        ("2025-01", 10, 7),
        ("2025-01", 11, 2),
        ("2025-02", 10, 1),
        ("2025-02", 11, 7),
    ]
    (everything,) = group_waste(ITEMS, [])
    assert everything == WasteRow(None, None, None, None, 17, Decimal("110.0000"))
    assert group_waste([], normalise_grouping(None)) == []
    assert total_of([]).quantity == 0 and total_of([]).value == Decimal("0")


def test_grouping_is_normalised() -> None:
    twice = [WasteGrouping.REASON, WasteGrouping.REASON, WasteGrouping.MONTH]
    assert normalise_grouping(twice) == (WasteGrouping.REASON, WasteGrouping.MONTH)
    assert normalise_grouping(None) == (
        WasteGrouping.MONTH,
        WasteGrouping.LOCATION,
        WasteGrouping.REASON,
    )


# --- the report over GraphQL -------------------------------------------------------------------

WASTE_QUERY = """
query($since: Date!, $until: Date!, $location: ID, $groupBy: [WasteGrouping!]) {
  wasteReport(since: $since, until: $until, location: $location, groupBy: $groupBy) {
    since until groupBy
    rows { month reason quantity value location { code } product { id } }
    totals { quantity value }
  }
}
"""

JAN = date(2025, 1, 1)
MAR = date(2025, 3, 1)


def at(day: int, month: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


@dataclass
class WasteWorld:
    cost1: Decimal
    cost2: Decimal
    product2: int


async def _record(demo: Demo, request: MovementRequest) -> int:
    result = await demo.services.ledger.record(
        demo.principals["admin"], [request], operation="test.waste"
    )
    return result.movements[0].lot_id


async def _receive(
    demo: Demo, location: str, qty: int, product: int, batch: str, expiry: date, when: datetime
) -> int:
    return await _record(
        demo,
        MovementRequest(
            MovementKind.RECEIVE,
            demo.locations[location],
            qty,
            new_lot=NewLot(product, batch, expiry),
            occurred_at=when,
        ),
    )


async def _dispose(
    demo: Demo, location: str, lot: int, qty: int, reason: str, when: datetime
) -> None:
    await _record(
        demo,
        MovementRequest(
            MovementKind.DISPOSE,
            demo.locations[location],
            qty,
            lot_id=lot,
            reason=reason,
            occurred_at=when,
        ),
    )


@pytest.fixture
async def world(demo: Demo) -> WasteWorld:
    """January and February 2025 at HOSP-CP, WARD-A and WARD-B, with noise around them."""
    p1 = await first_product_id(demo.services)
    p2 = await first_product_id(demo.services, offset=1)
    async with demo.services.db.read() as session:
        cost1 = (await session.get(Product, p1)).unit_cost
        cost2 = (await session.get(Product, p2)).unit_cost
    assert cost1 > 0 and cost2 > 0 and cost1 != cost2
    far = date(2027, 1, 1)
    cp = await _receive(demo, "HOSP-CP", 50, p1, "RPCP1", far, at(2, 1))
    ward_a = await _receive(demo, "WARD-A", 20, p1, "RPWA1", far, at(2, 1))
    ward_b = await _receive(demo, "WARD-B", 20, p2, "RPWB1", far, at(2, 1))
    await _dispose(demo, "HOSP-CP", cp, 3, "DAMAGED: dropped", at(10, 1))
    await _dispose(demo, "HOSP-CP", cp, 2, "DAMAGED", at(20, 1))
    await _dispose(demo, "HOSP-CP", cp, 4, "EXPIRED", at(5, 2))
    await _dispose(demo, "WARD-A", ward_a, 5, "CONTAMINATED: opened", at(14, 2))
    await _dispose(demo, "WARD-B", ward_b, 6, "RECALLED: notice 7", at(31, 1, 23, 59))
    # Outside the period on either side, and not waste at all: none of these count.
    await _dispose(demo, "HOSP-CP", cp, 1, "DAMAGED", at(1, 3, 0, 0))
    await _dispose(demo, "HOSP-CP", cp, 1, "DAMAGED", datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    await _record(
        demo,
        MovementRequest(
            MovementKind.DISPENSE, demo.locations["WARD-A"], 2, lot_id=ward_a, occurred_at=at(3, 2)
        ),
    )
    # Expired on the shelf on 20 February with 7 packs still at WARD-A.
    await _receive(demo, "WARD-A", 7, p2, "RPWA2", date(2025, 2, 20), at(5, 1))
    # Expires after the period: not in it. Expired in it but fully disposed: only the disposal.
    await _receive(demo, "WARD-A", 9, p2, "RPWA3", date(2025, 3, 15), at(5, 1))
    gone = await _receive(demo, "WARD-B", 3, p1, "RPWB2", date(2025, 2, 10), at(5, 1))
    await _dispose(demo, "WARD-B", gone, 3, "EXPIRED: found in sweep", at(12, 2))
    return WasteWorld(cost1, cost2, p2)


async def _report(
    client: httpx.AsyncClient, user: str = "admin", **variables: Any
) -> dict[str, Any]:
    token = await token_for(client, user)
    variables = {"since": JAN.isoformat(), "until": MAR.isoformat(), **variables}
    return await gql(client, WASTE_QUERY, variables, token=token)


def _rows(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    assert "errors" not in body, body
    return [
        (
            r["month"],
            r["location"] and r["location"]["code"],
            r["reason"],
            r["quantity"],
            Decimal(r["value"]),
        )
        for r in body["data"]["wasteReport"]["rows"]
    ]


async def test_rows_per_month_location_and_reason(
    world: WasteWorld, demo: Demo, client: httpx.AsyncClient
) -> None:
    body = await _report(client)
    c1, c2 = world.cost1, world.cost2
    expected = [
        ("2025-01", "HOSP-CP", "DAMAGED", 5, 5 * c1),
        ("2025-01", "WARD-B", "RECALLED", 6, 6 * c2),
        ("2025-02", "HOSP-CP", "EXPIRED", 4, 4 * c1),
        ("2025-02", "WARD-A", "CONTAMINATED", 5, 5 * c1),
        ("2025-02", "WARD-A", EXPIRED_ON_SHELF, 7, 7 * c2),
        ("2025-02", "WARD-B", "EXPIRED", 3, 3 * c1),
    ]
    key = lambda row: (row[0], row[1], row[2])  # noqa: E731
    assert sorted(_rows(body), key=key) == sorted(expected, key=key)
    report = body["data"]["wasteReport"]
    assert report["groupBy"] == ["MONTH", "LOCATION", "REASON"]
    assert report["since"] == "2025-01-01" and report["until"] == "2025-03-01"
    assert all(r["product"] is None for r in report["rows"])
    assert report["totals"]["quantity"] == 30
    assert Decimal(report["totals"]["value"]) == 17 * c1 + 13 * c2


async def test_grouped_by_reason_and_product(world: WasteWorld, client: httpx.AsyncClient) -> None:
    by_reason = _rows(await _report(client, groupBy=["REASON"]))
    assert [(r[2], r[3]) for r in by_reason] == [
        ("CONTAMINATED", 5),
        ("DAMAGED", 5),
        ("EXPIRED", 7),
        (EXPIRED_ON_SHELF, 7),
        ("RECALLED", 6),
    ]
    assert all(r[0] is None and r[1] is None for r in by_reason)
    body = await _report(client, groupBy=["PRODUCT"])
    products = {r["product"]["id"]: r["quantity"] for r in body["data"]["wasteReport"]["rows"]}
    assert products[gid("Product", world.product2)] == 13


async def test_one_location_and_empty_periods(
    world: WasteWorld, demo: Demo, client: httpx.AsyncClient
) -> None:
    ward_a = gid("Location", demo.locations["WARD-A"])
    rows = _rows(await _report(client, location=ward_a))
    assert {(r[1], r[2]) for r in rows} == {
        ("WARD-A", "CONTAMINATED"),
        ("WARD-A", EXPIRED_ON_SHELF),
    }
    # The half-open period: until 1 February leaves out February and the lot expiring in it.
    january = _rows(await _report(client, until="2025-02-01"))
    assert {r[0] for r in january} == {"2025-01"} and len(january) == 2
    empty = await _report(client, since="2025-01-01", until="2025-01-01")
    assert empty["data"]["wasteReport"]["rows"] == []
    assert empty["data"]["wasteReport"]["totals"] == {"quantity": 0, "value": "0.0000"}


async def test_expired_on_shelf_waits_for_the_expiry_to_pass(world: WasteWorld, demo: Demo) -> None:
    """The same lot is not waste yet the day it expires, only from the day after."""
    service = ReportService(demo.services.db)  # directly, to choose `today`
    admin = demo.principals["admin"]
    on_expiry = await service.waste_report(
        admin, since=JAN, until=MAR, today=date(2025, 2, 20), group_by=[WasteGrouping.REASON]
    )
    after = await service.waste_report(
        admin, since=JAN, until=MAR, today=date(2025, 2, 21), group_by=[WasteGrouping.REASON]
    )
    assert EXPIRED_ON_SHELF not in {r.reason for r in on_expiry.rows}
    assert {r.reason: r.quantity for r in after.rows}[EXPIRED_ON_SHELF] == 7


async def test_nurse_sees_only_her_ward(
    world: WasteWorld, demo: Demo, client: httpx.AsyncClient
) -> None:
    rows = _rows(await _report(client, "nurse"))
    assert {r[1] for r in rows} == {"WARD-A"}
    assert sum(r[3] for r in rows) == 12
    forbidden = await _report(client, "nurse", location=gid("Location", demo.locations["WARD-B"]))
    assert forbidden["data"] is None
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    supplier = await _report(client, "supplier")
    assert supplier["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await gql(client, WASTE_QUERY, {"since": "2025-01-01", "until": "2025-02-01"})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("since", "until", "field"),
    [("2025-03-01", "2025-01-01", "since"), ("2022-01-01", "2025-01-02", "until")],
)
async def test_bad_periods_are_invalid_input(
    demo: Demo, client: httpx.AsyncClient, since: str, until: str, field: str
) -> None:
    body = await _report(client, since=since, until=until)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == field


async def test_unknown_or_malformed_location(demo: Demo, client: httpx.AsyncClient) -> None:
    body = await _report(client, location=gid("Location", 999999))
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = await _report(client, location=gid("Product", 1))
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ID"
