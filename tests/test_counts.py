"""Stock counts on both databases: variances become signed COUNT movements on the current
balance, stock moved after a lot was counted is kept and explained, uncounted lots are left
alone, closed counts stay closed, and every refusal leaves the database as it was."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.core.audit import AuditEvent
from server.counts.models import CountStatus, StockCount, StockCountLine
from server.counts.service import balance_after_count, count_variance, describe_line
from server.inventory.models import Movement, MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import Caller, Demo, balance_of, gid, gql, receive, row_counts

ERRORS = "errors { code field message }"
LINE = """
    lot { id } product { id } countedQuantity systemQuantityAtCount variance
    currentSystemQuantity movementsSinceCounted { id kind quantity } movementsSinceCountedQuantity
    adjustment { id kind quantity reason reference recordedBy { username } balanceAfter }
    balanceAfterCount explanation countedBy { username }
"""
START = f"""
mutation($location: ID!, $reason: String) {{
  startCount(input: {{ location: $location, reason: $reason }}) {{
    stockCount {{ id status reason startedBy {{ username }} location {{ code }} }} {ERRORS}
  }}
}}"""
RECORD = f"""
mutation($count: ID!, $lot: ID!, $qty: Int!) {{
  recordCountLine(input: {{ id: $count, lot: $lot, countedQuantity: $qty }}) {{
    line {{ {LINE} }} {ERRORS}
  }}
}}"""
FINALIZE = f"""
mutation($count: ID!, $key: String) {{
  finalizeCount(input: {{ id: $count, idempotencyKey: $key }}) {{
    stockCount {{ id status closedBy {{ username }} closedAt }}
    lines {{ {LINE} }}
    uncountedLots {{ quantity lot {{ id }} }}
    movements {{ id kind quantity recordedBy {{ username }} reason reference }}
    replayed {ERRORS}
  }}
}}"""
CANCEL = f"""
mutation($count: ID!, $reason: String!) {{
  cancelCount(input: {{ id: $count, reason: $reason }}) {{
    stockCount {{ id status closedBy {{ username }} }} {ERRORS}
  }}
}}"""
COUNT = f"""
query($id: ID!) {{
  stockCount(id: $id) {{
    id status startedBy {{ username }} lines {{ {LINE} }} uncountedLots {{ quantity lot {{ id }} }}
  }}
}}"""
COUNTS = """
query($location: ID, $status: CountStatus) {
  stockCounts(first: 20, location: $location, status: $status) {
    edges { node { id status location { code } } }
  }
}"""


class Counter(Caller):
    """A demo user's count calls, by location code and lot id."""

    def __init__(self, http: httpx.AsyncClient, token: str, username: str, demo: Demo) -> None:
        super().__init__(http, token, username)
        self.demo = demo

    async def start(self, location: str, reason: str | None = None) -> dict[str, Any]:
        location_gid = gid("Location", self.demo.locations[location])
        return await self.call(START, location=location_gid, reason=reason)

    async def record(self, count: str, lot_id: int, qty: int) -> dict[str, Any]:
        return await self.call(RECORD, count=count, lot=gid("Lot", lot_id), qty=qty)

    async def finalize(self, count: str, key: str | None = None) -> dict[str, Any]:
        return await self.call(FINALIZE, count=count, key=key)

    async def cancel(self, count: str, reason: str = "wrong shelf") -> dict[str, Any]:
        return await self.call(CANCEL, count=count, reason=reason)

    async def view(self, count: str) -> dict[str, Any]:
        return await self.call(COUNT, id=count)

    async def started(self, location: str, reason: str | None = None) -> str:
        payload = await self.start(location, reason)
        assert payload["errors"] == [], payload
        return str(payload["stockCount"]["id"])


@pytest.fixture
def as_counter(as_user: Any, demo: Demo) -> Any:
    """`await as_counter("nurse")`: conftest's `as_user` with this file's count shortcuts."""
    return lambda username: as_user(username, Counter, demo=demo)


async def world(demo: Demo) -> dict[str, Any]:
    """Everything a refused count call must leave as it was."""
    counts: dict[str, Any] = dict(await row_counts(demo.services))
    async with demo.services.db.read() as session:
        counts["stock_count_lines"] = (
            await session.execute(
                select(
                    StockCountLine.id,
                    StockCountLine.counted_quantity,
                    StockCountLine.last_movement_id_at_count,
                ).order_by(StockCountLine.id)
            )
        ).all()
        counts["stock_counts"] = (
            await session.execute(
                select(StockCount.id, StockCount.status, StockCount.closed_by).order_by(
                    StockCount.id
                )
            )
        ).all()
    return counts


async def dispense(demo: Demo, location: str, lot_id: int, quantity: int) -> None:
    await demo.services.ledger.record(
        demo.principals["pharmacist"],
        [MovementRequest(MovementKind.DISPENSE, demo.locations[location], quantity, lot_id=lot_id)],
        operation="test.dispense",
    )


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


def by_lot(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["lot"]["id"]: line for line in lines}


# --- pure maths ---------------------------------------------------------------------------------


def test_variance_and_final_balance_are_plain_arithmetic() -> None:
    assert count_variance(12, 10) == 2
    assert count_variance(3, 5) == -2
    assert count_variance(0, 0) == 0
    # Counted 8 when the system said 10; 3 dispensed since: the shelf now holds 5.
    assert balance_after_count(8, -3) == 5
    assert balance_after_count(8, 0) == 8


def test_a_line_explains_itself() -> None:
    text = describe_line(
        batch="B1",
        counted=8,
        system_at_count=10,
        quantity_since=-3,
        movements_since=1,
        adjustment=-2,
        final=5,
    )
    assert text == (
        "lot B1: counted 8, system held 10 when counted; -3 moved since (1 movement, kept); "
        "adjusted by -2; balance 5"
    )
    assert "moved since" not in describe_line(
        batch="B1",
        counted=4,
        system_at_count=4,
        quantity_since=0,
        movements_since=0,
        adjustment=0,
        final=4,
    )


# --- the happy path -----------------------------------------------------------------------------


async def test_a_full_count_posts_signed_count_movements(demo: Demo, as_counter: Any) -> None:
    """+2 on one lot, -2 on another, +1 of a lot the system did not know was here."""
    over = await receive(demo, "WARD-A", 10)
    short = await receive(demo, "WARD-A", 5)
    found = await receive(demo, "HOSP-CP", 4)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A", "quarterly stock-take")

    for lot_id, qty in ((over, 12), (short, 3), (found, 1)):
        payload = await pharmacist.record(count, lot_id, qty)
        assert payload["errors"] == [], payload
    live = by_lot((await pharmacist.view(count))["lines"])
    assert live[gid("Lot", over)]["variance"] == 2
    assert live[gid("Lot", short)]["variance"] == -2
    assert live[gid("Lot", found)]["systemQuantityAtCount"] == 0
    assert live[gid("Lot", found)]["variance"] == 1
    assert live[gid("Lot", short)]["balanceAfterCount"] == 3
    assert all(line["adjustment"] is None for line in live.values())

    result = await pharmacist.finalize(count)
    assert result["errors"] == [], result
    assert result["stockCount"]["status"] == "FINALIZED"
    assert result["stockCount"]["closedBy"] == {"username": "pharmacist"}
    assert result["stockCount"]["closedAt"] is not None
    assert result["uncountedLots"] == []
    movements = sorted(
        (m["quantity"], m["kind"], m["recordedBy"]["username"]) for m in result["movements"]
    )
    assert movements == [
        (-2, "COUNT", "pharmacist"),
        (1, "COUNT", "pharmacist"),
        (2, "COUNT", "pharmacist"),
    ]
    count_pk = await _pk(demo, count)
    assert {m["reason"] for m in result["movements"]} == {"quarterly stock-take"}
    assert {m["reference"] for m in result["movements"]} == {f"COUNT-{count_pk}"}
    lines = by_lot(result["lines"])
    assert lines[gid("Lot", over)]["adjustment"]["quantity"] == 2
    assert lines[gid("Lot", short)]["adjustment"]["balanceAfter"] == 3
    for lot_id, qty in ((over, 12), (short, 3), (found, 1)):
        assert await balance_of(demo.services, demo.locations["WARD-A"], lot_id) == qty
        assert lines[gid("Lot", lot_id)]["balanceAfterCount"] == qty
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], found) == 4

    async with demo.services.db.read() as session:
        event = (
            await session.execute(select(AuditEvent).where(AuditEvent.action == "count.finalize"))
        ).scalar_one()
    assert event.actor_name == "pharmacist"
    assert event.entity_id == str(count_pk)
    assert event.after["status"] == "FINALIZED"

    # After finalizing, the count still explains itself: its own COUNT movement is the
    # adjustment, not a "movement since counted".
    after = by_lot((await pharmacist.view(count))["lines"])
    assert after[gid("Lot", over)]["movementsSinceCounted"] == []
    assert after[gid("Lot", over)]["adjustment"]["quantity"] == 2
    assert after[gid("Lot", over)]["balanceAfterCount"] == 12


async def _pk(demo: Demo, count_gid: str) -> int:
    from strawberry.relay import from_base64

    return int(from_base64(count_gid)[1])


async def test_default_reason_names_the_count(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "HOSP-WH", 7)
    warehouse = await as_counter("warehouse")
    count = await warehouse.started("HOSP-WH")
    await warehouse.record(count, lot, 6)
    result = await warehouse.finalize(count)
    (movement,) = result["movements"]
    assert movement["reason"] == f"stock count #{await _pk(demo, count)}"
    assert movement["recordedBy"] == {"username": "warehouse"}


async def test_a_matching_count_writes_no_movement(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 6)
    admin = await as_counter("admin")
    count = await admin.started("WARD-A")
    await admin.record(count, lot, 6)
    before = await row_counts(demo.services)
    result = await admin.finalize(count)
    assert result["errors"] == [] and result["movements"] == []
    assert result["lines"][0]["adjustment"] is None
    assert result["lines"][0]["balanceAfterCount"] == 6
    after = await row_counts(demo.services)
    assert after["movements"] == before["movements"]


# --- concurrent dispensing ----------------------------------------------------------------------


async def test_dispensing_after_a_lot_was_counted_is_kept_and_reported(
    demo: Demo, as_counter: Any
) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 8)  # two missing
    await dispense(demo, "WARD-A", lot, 3)  # the nurse takes three packs off the counted shelf

    (live,) = (await pharmacist.view(count))["lines"]
    assert live["systemQuantityAtCount"] == 10
    assert live["currentSystemQuantity"] == 7
    assert [m["quantity"] for m in live["movementsSinceCounted"]] == [-3]
    assert live["movementsSinceCountedQuantity"] == -3
    assert live["variance"] == -2
    assert live["balanceAfterCount"] == 5

    result = await pharmacist.finalize(count)
    assert result["errors"] == [], result
    (line,) = result["lines"]
    assert line["movementsSinceCountedQuantity"] == -3
    assert [m["kind"] for m in line["movementsSinceCounted"]] == ["DISPENSE"]
    assert line["adjustment"]["quantity"] == -2
    assert line["balanceAfterCount"] == 5
    assert line["currentSystemQuantity"] == 5
    assert "-3 moved since" in line["explanation"]
    # counted 8, then 3 dispensed: 5, not 8 (the dispense is not overwritten)
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 8 - 3


async def test_recording_a_lot_again_replaces_the_line_and_its_snapshot(
    demo: Demo, as_counter: Any
) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 8)
    await dispense(demo, "WARD-A", lot, 3)
    payload = await pharmacist.record(count, lot, 6)
    assert payload["line"]["systemQuantityAtCount"] == 7
    assert payload["line"]["variance"] == -1
    (line,) = (await pharmacist.view(count))["lines"]
    assert line["countedQuantity"] == 6
    assert line["movementsSinceCounted"] == []
    result = await pharmacist.finalize(count)
    assert result["lines"][0]["adjustment"]["quantity"] == -1
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 6


async def test_a_count_that_would_go_negative_is_refused_and_nothing_is_written(
    demo: Demo, as_counter: Any
) -> None:
    """Counted 5 of 10, then 8 dispensed: -5 on a balance of 2 cannot be right; re-count."""
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 5)
    await dispense(demo, "WARD-A", lot, 8)
    before = await world(demo)
    result = await pharmacist.finalize(count)
    assert codes(result) == ["INSUFFICIENT_STOCK"]
    assert "record this lot again" in result["errors"][0]["message"]
    assert await world(demo) == before
    assert (await pharmacist.view(count))["status"] == "OPEN"


# --- uncounted lots, cancel, closed counts ------------------------------------------------------


async def test_uncounted_lots_are_listed_and_left_alone(demo: Demo, as_counter: Any) -> None:
    counted = await receive(demo, "WARD-A", 10)
    forgotten = await receive(demo, "WARD-A", 4)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, counted, 9)
    live = await pharmacist.view(count)
    assert live["uncountedLots"] == [{"quantity": 4, "lot": {"id": gid("Lot", forgotten)}}]

    result = await pharmacist.finalize(count)
    assert result["uncountedLots"] == [{"quantity": 4, "lot": {"id": gid("Lot", forgotten)}}]
    assert await balance_of(demo.services, demo.locations["WARD-A"], forgotten) == 4
    async with demo.services.db.read() as session:
        touched = (
            await session.execute(
                select(func.count()).where(
                    Movement.lot_id == forgotten, Movement.kind == MovementKind.COUNT
                )
            )
        ).scalar_one()
    assert touched == 0


async def test_cancel_writes_no_movements_and_closes_the_count(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 2)
    before = await row_counts(demo.services)
    cancelled = await pharmacist.cancel(count, "interrupted by an emergency")
    assert cancelled["errors"] == []
    assert cancelled["stockCount"] == {
        "id": count,
        "status": "CANCELLED",
        "closedBy": {"username": "pharmacist"},
    }
    after = await row_counts(demo.services)
    assert after["movements"] == before["movements"]
    assert after["balances"] == before["balances"]
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 10

    frozen = await world(demo)
    for refused in (
        await pharmacist.record(count, lot, 3),
        await pharmacist.finalize(count),
        await pharmacist.cancel(count),
    ):
        assert codes(refused) == ["COUNT_CLOSED"]
        assert "CANCELLED" in refused["errors"][0]["message"]
    assert await world(demo) == frozen
    # The location is free again.
    assert (await pharmacist.start("WARD-A"))["errors"] == []


async def test_finalizing_twice_is_refused_naming_the_status(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 9)
    assert (await pharmacist.finalize(count))["errors"] == []
    before = await world(demo)
    again = await pharmacist.finalize(count)
    assert codes(again) == ["COUNT_CLOSED"]
    assert "FINALIZED" in again["errors"][0]["message"]
    recorded = await pharmacist.record(count, lot, 1)
    assert codes(recorded) == ["COUNT_CLOSED"]
    assert await world(demo) == before


async def test_a_second_open_count_at_a_location_is_refused(demo: Demo, as_counter: Any) -> None:
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    before = await world(demo)
    second = await (await as_counter("admin")).start("WARD-A")
    assert codes(second) == ["COUNT_ALREADY_OPEN"]
    assert f"#{await _pk(demo, count)}" in second["errors"][0]["message"]
    assert second["errors"][0]["field"] == "location"
    assert await world(demo) == before
    # Another location is independent.
    assert (await pharmacist.start("WARD-B"))["errors"] == []


async def test_concurrent_starts_open_one_count(demo: Demo) -> None:
    location = demo.locations["WARD-A"]
    outcomes = await asyncio.gather(
        *(
            demo.services.counts.start(demo.principals[name], location)
            for name in ("admin", "pharmacist", "nurse")
        ),
        return_exceptions=True,
    )
    opened = [o for o in outcomes if isinstance(o, StockCount)]
    refused = [o for o in outcomes if not isinstance(o, StockCount)]
    assert len(opened) == 1
    assert [getattr(e, "code", e) for e in refused] == ["COUNT_ALREADY_OPEN"] * 2


async def test_concurrent_finalizes_post_the_variance_once(demo: Demo) -> None:
    lot = await receive(demo, "WARD-A", 10)
    admin, pharmacist = demo.principals["admin"], demo.principals["pharmacist"]
    count = await demo.services.counts.start(admin, demo.locations["WARD-A"])
    await demo.services.counts.record_line(admin, count.id, lot, 7)
    outcomes = await asyncio.gather(
        demo.services.counts.finalize(admin, count.id),
        demo.services.counts.finalize(pharmacist, count.id),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["DomainError", "FinalizeResult"]
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 7


async def test_finalize_with_an_idempotency_key_replays(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 11)
    first = await pharmacist.finalize(count, key="count-key-1")
    assert first["errors"] == [] and first["replayed"] is False
    before = await world(demo)
    again = await pharmacist.finalize(count, key="count-key-1")
    assert again["errors"] == [] and again["replayed"] is True
    assert [m["id"] for m in again["movements"]] == [m["id"] for m in first["movements"]]
    assert again["lines"][0]["balanceAfterCount"] == 11
    assert await world(demo) == before
    stolen = await (await as_counter("admin")).finalize(count, key="count-key-1")
    assert codes(stolen) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await world(demo) == before


# --- access -------------------------------------------------------------------------------------


async def test_nurse_cannot_count_another_ward(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-B", 10)
    admin = await as_counter("admin")
    count = await admin.started("WARD-B")
    await admin.record(count, lot, 9)
    nurse = await as_counter("nurse")  # scoped to WARD-A
    before = await world(demo)
    for refused in (
        await nurse.start("WARD-B"),
        await nurse.record(count, lot, 1),
        await nurse.finalize(count),
        await nurse.cancel(count),
    ):
        assert codes(refused) == ["FORBIDDEN"], refused
    assert await world(demo) == before
    read = await gql(nurse.http, COUNT, {"id": count}, nurse.token)
    assert read["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    listing = await gql(
        nurse.http, COUNTS, {"location": gid("Location", demo.locations["WARD-B"])}, nurse.token
    )
    assert listing["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_nurse_starts_and_records_a_count_in_her_ward(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    nurse = await as_counter("nurse")
    count = await nurse.started("WARD-A")
    payload = await nurse.record(count, lot, 10)
    assert payload["errors"] == [] and payload["line"]["countedBy"] == {"username": "nurse"}
    result = await nurse.finalize(count)  # no variance: nothing to post
    assert result["errors"] == [] and result["stockCount"]["status"] == "FINALIZED"


async def test_nurse_finalizes_a_count_with_a_variance_in_her_ward(
    demo: Demo, as_counter: Any
) -> None:
    lot = await receive(demo, "WARD-A", 10)
    nurse = await as_counter("nurse")
    count = await nurse.started("WARD-A")
    await nurse.record(count, lot, 9)
    result = await nurse.finalize(count)
    assert result["errors"] == [], result


async def test_auditor_reads_counts_but_cannot_write(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    pharmacist = await as_counter("pharmacist")
    count = await pharmacist.started("WARD-A")
    await pharmacist.record(count, lot, 9)
    auditor = await as_counter("auditor")
    before = await world(demo)
    for refused in (
        await auditor.start("WARD-B"),
        await auditor.record(count, lot, 1),
        await auditor.finalize(count),
        await auditor.cancel(count),
    ):
        assert codes(refused) == ["FORBIDDEN"], refused
    assert await world(demo) == before
    view = await auditor.view(count)
    assert view["startedBy"] == {"username": "pharmacist"} and view["lines"][0]["variance"] == -1
    listing = await auditor.call(COUNTS, status="OPEN")
    assert [e["node"]["id"] for e in listing["edges"]] == [count]


async def test_counts_listing_follows_scope_and_filters(demo: Demo, as_counter: Any) -> None:
    admin = await as_counter("admin")
    ward_a = await admin.started("WARD-A")
    ward_b = await admin.started("WARD-B")
    await admin.cancel(ward_b)
    every = await admin.call(COUNTS)
    assert [e["node"]["id"] for e in every["edges"]] == [ward_b, ward_a]  # newest first
    cancelled = await admin.call(COUNTS, status="CANCELLED")
    assert [e["node"]["id"] for e in cancelled["edges"]] == [ward_b]
    nurse = await as_counter("nurse")
    mine = await nurse.call(COUNTS)
    assert [e["node"]["location"]["code"] for e in mine["edges"]] == ["WARD-A"]
    supplier = await as_counter("supplier")
    refused = await gql(supplier.http, COUNTS, {}, supplier.token)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_input_is_refused_with_nothing_written(demo: Demo, as_counter: Any) -> None:
    lot = await receive(demo, "WARD-A", 10)
    admin = await as_counter("admin")
    count = await admin.started("WARD-A")
    before = await world(demo)
    negative = await admin.record(count, lot, -1)
    assert codes(negative) == ["INVALID_INPUT"]
    assert negative["errors"][0]["field"] == "countedQuantity"
    huge = await admin.record(count, lot, 2_000_000_000)
    assert codes(huge) == ["INVALID_INPUT"]
    wrong_type = await admin.call(RECORD, count=gid("Lot", lot), lot=gid("Lot", lot), qty=1)
    assert codes(wrong_type) == ["INVALID_ID"]
    missing_lot = await admin.record(count, 999_999, 1)
    assert codes(missing_lot) == ["NOT_FOUND"]
    missing_count = await admin.call(FINALIZE, count=gid("StockCount", 999_999))
    assert codes(missing_count) == ["NOT_FOUND"]
    empty = await admin.finalize(count)
    assert codes(empty) == ["INVALID_INPUT"]
    assert "no counted lines" in empty["errors"][0]["message"]
    no_reason = await admin.cancel(count, "  ")
    assert codes(no_reason) == ["INVALID_INPUT"]
    long_reason = await admin.start("WARD-B", "x" * 201)
    assert codes(long_reason) == ["INVALID_INPUT"]
    assert await world(demo) == before
    missing = await gql(admin.http, COUNT, {"id": gid("StockCount", 999_999)}, admin.token)
    assert missing["data"] == {"stockCount": None} and "errors" not in missing


async def test_services_can_be_used_without_graphql(demo: Demo) -> None:
    """The service owns its transactions: the same flow straight through `services.counts`."""
    lot = await receive(demo, "HOSP-CP", 20)
    principal = demo.principals["pharmacist"]
    counts = demo.services.counts
    count = await counts.start(principal, demo.locations["HOSP-CP"], "spot check")
    view = await counts.record_line(principal, count.id, lot, 18)
    assert view.variance == -2 and view.balance_after_count == 18
    result = await counts.finalize(principal, count.id)
    assert result.count.status is CountStatus.FINALIZED
    assert [m.quantity for m in result.movements] == [-2]
    assert result.movements[0].actor_id == demo.users["pharmacist"]
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == 18
