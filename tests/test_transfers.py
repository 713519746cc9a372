"""Transfers on both databases: request → approve (partial) → FEFO pick → dispatch
(TRANSFER_OUT, stock in transit) → receive (TRANSFER_IN, discrepancies), within one
organisation and across two; rejection, cancellation, every illegal transition, the roles that
may take each step, and `transferUpdated` over a real websocket."""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from strawberry.relay import from_base64

from server.catalog.models import Lot, LotStatus
from server.core import audit
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.core.errors import DomainError, ErrorCode
from server.core.numbering import document_number, next_sequence
from server.core.security import Role
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest
from server.shipments.models import Discrepancy, DiscrepancyKind
from server.transfers.models import Transfer, TransferStatus
from server.transfers.rules import (
    TERMINAL,
    TRANSITIONS,
    LineNeed,
    LotStock,
    PlannedPick,
    TransferAction,
    allowed_actions,
    next_status,
    receipt_discrepancies,
    suggest_picks,
)
from tests.conftest import (
    DEMO_PASSWORD,
    Caller,
    Demo,
    LiveServer,
    balance_of,
    first_product_id,
    gid,
    gql,
    receive,
    row_counts,
    token_for,
    wait_for_subscribers,
)
from tests.wsclient import GraphQLWebSocket

ERRORS = "errors { code field message }"
TRANSFER = """
    id number status crossOrganisation neededBy note rejectionReason cancellationReason
    requestedBy { username } decidedBy { username } dispatchedBy { username }
    receivedBy { username } dispatchedAt receivedAt allowedActions
    source { code } destination { code }
    lines {
      id requestedQuantity approvedQuantity pickedQuantity receivedQuantity product { id }
      picks { id quantity receivedQuantity lot { id batchNumber } }
    }
    picks { id quantity receivedQuantity lot { id batchNumber } line { id } }
    suggestedPicks { quantity availableAtSource lot { id batchNumber } line { id } }
    inTransit { quantity lot { batchNumber } from { code } to { code } since }
    discrepancies {
      id kind quantity note lot { batchNumber } dispatchedQuantity receivedQuantity
      damagedQuantity recordedBy { username } pick { id }
    }
    movements {
      kind quantity reference location { code } organisation { name } counterparty { name }
    }
    history { action status actor role reason }
"""
REQUEST = f"""
mutation($source: ID!, $destination: ID!, $lines: [TransferLineInput!]!,
         $neededBy: Date, $note: String) {{
  requestTransfer(input: {{source: $source, destination: $destination, lines: $lines,
                           neededBy: $neededBy, note: $note}}) {{
    transfer {{ {TRANSFER} }} {ERRORS}
  }}
}}"""
APPROVE = f"""
mutation($transfer: ID!, $lines: [TransferApprovalInput!]) {{
  approveTransfer(input: {{id: $transfer, lines: $lines}}) {{ transfer {{ {TRANSFER} }} {ERRORS} }}
}}"""
REJECT = f"""
mutation($transfer: ID!, $reason: String!) {{
  rejectTransfer(input: {{id: $transfer, reason: $reason}}) {{ transfer {{ {TRANSFER} }} {ERRORS} }}
}}"""
PICK = f"""
mutation($transfer: ID!, $picks: [TransferPickInput!]) {{
  pickTransfer(input: {{id: $transfer, picks: $picks}}) {{ transfer {{ {TRANSFER} }} {ERRORS} }}
}}"""
DISPATCH = f"""
mutation($transfer: ID!) {{
  dispatchTransfer(input: {{id: $transfer}}) {{
    transfer {{ {TRANSFER} }}
    movements {{ kind quantity balanceAfter reference location {{ code }} lot {{ id }}
                 organisation {{ name }} counterparty {{ name }} actor }}
    {ERRORS}
  }}
}}"""
RECEIVE = f"""
mutation($transfer: ID!, $lines: [TransferReceiptInput!]) {{
  receiveTransfer(input: {{id: $transfer, lines: $lines}}) {{
    transfer {{ {TRANSFER} }}
    movements {{ kind quantity balanceAfter reference location {{ code }} lot {{ id }}
                 organisation {{ name }} counterparty {{ name }} actor }}
    discrepancies {{ kind quantity lot {{ id }} note }}
    {ERRORS}
  }}
}}"""
CANCEL = f"""
mutation($transfer: ID!, $reason: String!) {{
  cancelTransfer(input: {{id: $transfer, reason: $reason}}) {{ transfer {{ {TRANSFER} }} {ERRORS} }}
}}"""
VIEW = f"query($id: ID!) {{ transfer(id: $id) {{ {TRANSFER} }} }}"
LIST = """
query($status: TransferStatus, $location: ID, $after: String, $first: Int! = 20) {
  transfers(first: $first, after: $after, status: $status, location: $location) {
    edges { node { id number status source { code } destination { code } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
IN_TRANSIT = """
query($location: ID) {
  stockInTransit(location: $location) {
    quantity since lot { id batchNumber } product { id } from { code } to { code }
    transfer { number status }
  }
}"""
HOSPITAL = "St. Aurelia General Hospital"
PHARMACY = "Lindenhof Pharmacy"


# --- pure rules ---------------------------------------------------------------------------------


def test_the_state_machine_is_the_table() -> None:
    """Every (state, action) pair: the table's target, or INVALID_TRANSITION naming the state."""
    for status in TransferStatus:
        for action in TransferAction:
            target = TRANSITIONS.get((status, action))
            if target is not None:
                assert next_status(status, action, "TR-2026-00001") is target
                continue
            with pytest.raises(DomainError) as refused:
                next_status(status, action, "TR-2026-00001")
            assert refused.value.code is ErrorCode.INVALID_TRANSITION
            assert f"TR-2026-00001 is {status.value}" in refused.value.message
    for status in TERMINAL:
        assert allowed_actions(status) == []
    assert allowed_actions(TransferStatus.DISPATCHED) == [TransferAction.RECEIVE]
    # Cancelling is possible up to dispatch and never after.
    cancellable = {s for (s, a) in TRANSITIONS if a is TransferAction.CANCEL}
    assert cancellable == {TransferStatus.REQUESTED, TransferStatus.APPROVED, TransferStatus.PICKED}


def test_numbers_are_a_per_year_sequence() -> None:
    assert document_number("TR", 2026, 7) == "TR-2026-00007"
    assert next_sequence("TR", 2026, []) == 1
    assert next_sequence("TR", 2026, ["TR-2026-00041", "TR-2025-00099"]) == 42
    assert next_sequence("TR", 2027, ["TR-2026-00041"]) == 1
    assert next_sequence("TR", 2026, ["TR-2026-123456"]) == 123457


def test_fefo_suggestion_skips_expired_and_held_lots_and_shares_stock() -> None:
    today = date(2026, 3, 1)

    def lot(lot_id: int, product: int, days: int, qty: int, status: LotStatus) -> LotStock:
        return LotStock(lot_id, product, f"B{lot_id}", today + timedelta(days=days), status, qty)

    stock = [
        lot(1, 10, -1, 50, LotStatus.RELEASED),  # expired yesterday
        lot(2, 10, 5, 50, LotStatus.QUARANTINED),  # held
        lot(3, 10, 90, 8, LotStatus.RELEASED),
        lot(4, 10, 30, 3, LotStatus.RELEASED),  # earliest issuable
        lot(5, 10, 0, 0, LotStatus.RELEASED),  # expires today but none left
        lot(6, 20, 10, 5, LotStatus.RECALLED),
    ]
    needs = [LineNeed(100, 10, 5), LineNeed(101, 10, 10), LineNeed(102, 20, 2)]
    assert suggest_picks(needs, stock, today) == [
        PlannedPick(100, 4, 3),
        PlannedPick(100, 3, 2),
        PlannedPick(101, 3, 6),  # what is left: partial, never the same packs twice
    ]


def test_a_receipt_explains_every_difference() -> None:
    assert receipt_discrepancies(5, 5) == []
    assert receipt_discrepancies(5, 4) == [(DiscrepancyKind.SHORT, 1)]
    assert receipt_discrepancies(5, 7) == [(DiscrepancyKind.OVER, 2)]
    assert receipt_discrepancies(5, 3, 2) == [(DiscrepancyKind.DAMAGED, 2)]
    assert receipt_discrepancies(5, 2, 1) == [
        (DiscrepancyKind.DAMAGED, 1),
        (DiscrepancyKind.SHORT, 2),
    ]
    assert receipt_discrepancies(5, 0) == [(DiscrepancyKind.SHORT, 5)]


# --- helpers ------------------------------------------------------------------------------------


class TransferCaller(Caller):
    """A signed-in user with the transfer shortcuts: request by location codes, view."""

    def __init__(self, http: httpx.AsyncClient, token: str, username: str, *, demo: Demo) -> None:
        super().__init__(http, token, username)
        self.demo = demo

    async def request(
        self, source: str, destination: str, lines: list[tuple[int, int]], **extra: Any
    ) -> dict[str, Any]:
        return await self.call(
            REQUEST,
            source=gid("Location", self.demo.locations[source]),
            destination=gid("Location", self.demo.locations[destination]),
            lines=[{"product": gid("Product", p), "quantity": q} for p, q in lines],
            **extra,
        )

    async def view(self, transfer: str) -> dict[str, Any]:
        return await self.call(VIEW, id=transfer)


@pytest.fixture
def as_user(as_user: Any, demo: Demo) -> Any:
    """The conftest `as_user`, signing in as a TransferCaller."""

    async def sign_in(username: str) -> TransferCaller:
        return await as_user(username, TransferCaller, demo=demo)

    return sign_in


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


async def world(demo: Demo) -> dict[str, Any]:
    """Everything a refused transfer call must leave as it was."""
    state: dict[str, Any] = dict(await row_counts(demo.services))
    async with demo.services.db.read() as session:
        state["transfers"] = (
            await session.execute(
                select(Transfer.id, Transfer.status, Transfer.decided_by).order_by(Transfer.id)
            )
        ).all()
        state["discrepancies"] = (
            await session.execute(select(Discrepancy.id).order_by(Discrepancy.id))
        ).all()
    return state


async def set_lot_status(demo: Demo, lot_id: int, status: LotStatus) -> None:
    async with demo.services.db.write() as session:
        await session.execute(update(Lot).where(Lot.id == lot_id).values(status=status))


async def pharmacy_user(demo: Demo) -> str:
    """A pharmacist of Lindenhof Pharmacy (another organisation); returns the username."""
    await demo.services.network.create_user(
        demo.principals["admin"],
        username="lindenhof",
        full_name="Lena Lindenhof",
        password=DEMO_PASSWORD,
        roles=[Role.PHARMACIST],
        organisation_id=demo.orgs[PHARMACY],
    )
    return "lindenhof"


async def approved_transfer(
    demo: Demo, as_user: Any, quantity: int = 4, destination: str = "WARD-A"
) -> tuple[str, int]:
    """A transfer of `quantity` packs from HOSP-CP, approved in full; returns (id, lot id)."""
    product = await first_product_id(demo.services)
    lot = await receive(demo, "HOSP-CP", 20, product_id=product)
    requester = await as_user("nurse" if destination == "WARD-A" else "pharmacist")
    created = await requester.request("HOSP-CP", destination, [(product, quantity)])
    transfer = created["transfer"]["id"]
    await (await as_user("pharmacist")).ok(APPROVE, transfer=transfer)
    return transfer, lot


async def transfer_in(demo: Demo, as_user: Any, status: TransferStatus) -> str:
    """A WARD-A transfer driven to `status` (as admin, who may take every step)."""
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 5, product_id=product)
    admin = await as_user("admin")
    created = await admin.request("HOSP-CP", "WARD-A", [(product, 2)])
    transfer = created["transfer"]["id"]
    path = {
        TransferStatus.REQUESTED: [],
        TransferStatus.REJECTED: [(REJECT, {"reason": "not stocked for wards"})],
        TransferStatus.CANCELLED: [(CANCEL, {"reason": "asked twice"})],
        TransferStatus.APPROVED: [(APPROVE, {})],
        TransferStatus.PICKED: [(APPROVE, {}), (PICK, {})],
        TransferStatus.DISPATCHED: [(APPROVE, {}), (PICK, {}), (DISPATCH, {})],
        TransferStatus.RECEIVED: [(APPROVE, {}), (PICK, {}), (DISPATCH, {}), (RECEIVE, {})],
    }[status]
    for document, variables in path:
        await admin.ok(document, transfer=transfer, **variables)
    return transfer


async def transfer_audit(demo: Demo) -> list[tuple[str, str]]:
    async with demo.services.db.read() as session:
        rows = await session.execute(
            select(AuditEvent.action, AuditEvent.actor_name)
            .where(AuditEvent.action.like("transfer.%"))
            .order_by(AuditEvent.seq)
        )
        return [(a, n) for a, n in rows.all()]


async def chain_ok(demo: Demo) -> bool:
    async with demo.services.db.read() as session:
        return (await audit.verify(session)).ok


# --- the whole life within the hospital ---------------------------------------------------------


async def test_a_ward_transfer_from_request_to_receipt(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    cp, ward = demo.locations["HOSP-CP"], demo.locations["WARD-A"]
    expired = await receive(demo, "HOSP-CP", 10, batch="OLD", expiry_days=-3, product_id=product)
    held = await receive(demo, "HOSP-CP", 10, batch="HELD", expiry_days=20, product_id=product)
    early = await receive(demo, "HOSP-CP", 4, batch="EARLY", expiry_days=60, product_id=product)
    late = await receive(demo, "HOSP-CP", 20, batch="LATE", expiry_days=400, product_id=product)
    await set_lot_status(demo, held, LotStatus.QUARANTINED)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")

    # The nurse asks for ten packs for her ward.
    needed_by = (utcnow().date() + timedelta(days=2)).isoformat()
    created = await nurse.request(
        "HOSP-CP", "WARD-A", [(product, 10)], neededBy=needed_by, note="weekend cover"
    )
    assert created["errors"] == [], created
    transfer = created["transfer"]
    assert re.fullmatch(rf"TR-{utcnow().year}-00001", transfer["number"])
    assert transfer["status"] == "REQUESTED"
    assert transfer["requestedBy"]["username"] == "nurse"
    assert transfer["neededBy"] == needed_by and transfer["note"] == "weekend cover"
    assert transfer["crossOrganisation"] is False
    assert transfer["allowedActions"] == ["APPROVE", "REJECT", "CANCEL"]
    assert transfer["suggestedPicks"] == []
    tid = transfer["id"]
    (line,) = transfer["lines"]
    assert line["requestedQuantity"] == 10 and line["approvedQuantity"] is None
    assert await transfer_audit(demo) == [("transfer.request", "nurse")]

    # The pharmacist can spare six.
    approved = await pharmacist.ok(
        APPROVE, transfer=tid, lines=[{"line": line["id"], "approvedQuantity": 6}]
    )
    transfer = approved["transfer"]
    assert transfer["status"] == "APPROVED" and transfer["decidedBy"]["username"] == "pharmacist"
    assert transfer["lines"][0]["approvedQuantity"] == 6
    # FEFO: the four EARLY packs, then two LATE; never the expired or the quarantined lot.
    suggested = [(s["lot"]["batchNumber"], s["quantity"]) for s in transfer["suggestedPicks"]]
    assert suggested == [("EARLY", 4), ("LATE", 2)]
    assert transfer["suggestedPicks"][0]["availableAtSource"] == 4
    assert {s["line"]["id"] for s in transfer["suggestedPicks"]} == {line["id"]}
    assert await transfer_audit(demo) == [
        ("transfer.request", "nurse"),
        ("transfer.approve", "pharmacist"),
    ]

    # Picking without picks saves the suggestion.
    transfer = (await pharmacist.ok(PICK, transfer=tid))["transfer"]
    assert transfer["status"] == "PICKED"
    picks = {p["lot"]["batchNumber"]: p for p in transfer["picks"]}
    assert {b: p["quantity"] for b, p in picks.items()} == {"EARLY": 4, "LATE": 2}
    assert transfer["lines"][0]["pickedQuantity"] == 6
    assert transfer["inTransit"] == [] and transfer["movements"] == []
    assert await balance_of(demo.services, cp, early) == 4  # picking reserves nothing

    # Dispatch: stock leaves the central pharmacy and is on the road.
    before = await row_counts(demo.services)
    dispatched = await pharmacist.ok(DISPATCH, transfer=tid)
    transfer = dispatched["transfer"]
    assert (
        transfer["status"] == "DISPATCHED" and transfer["dispatchedBy"]["username"] == "pharmacist"
    )
    out = sorted((m["lot"]["id"], m["quantity"]) for m in dispatched["movements"])
    assert out == sorted([(gid("Lot", early), -4), (gid("Lot", late), -2)])
    for movement in dispatched["movements"]:
        assert movement["kind"] == "TRANSFER_OUT"
        assert movement["reference"] == transfer["number"]
        assert movement["location"]["code"] == "HOSP-CP"
        assert movement["organisation"]["name"] == HOSPITAL
        assert movement["counterparty"] is None  # within one organisation
        assert movement["actor"] == "pharmacist"
    assert await balance_of(demo.services, cp, early) == 0
    assert await balance_of(demo.services, cp, late) == 18
    assert await balance_of(demo.services, cp, expired) == 10
    assert await balance_of(demo.services, ward, early) == 0
    assert (await row_counts(demo.services))["movements"] == before["movements"] + 2
    on_road = sorted((x["lot"]["batchNumber"], x["quantity"]) for x in transfer["inTransit"])
    assert on_road == [("EARLY", 4), ("LATE", 2)]
    assert {(x["from"]["code"], x["to"]["code"]) for x in transfer["inTransit"]} == {
        ("HOSP-CP", "WARD-A")
    }
    # The nurse sees it coming to her ward; the pharmacist sees it leaving hers.
    for actor, location in ((nurse, "WARD-A"), (pharmacist, "HOSP-CP"), (pharmacist, None)):
        loc = gid("Location", demo.locations[location]) if location else None
        items = (await gql(nurse.http, IN_TRANSIT, {"location": loc}, actor.token))["data"]
        rows = items["stockInTransit"]
        assert sorted((x["lot"]["batchNumber"], x["quantity"]) for x in rows) == on_road
        assert {x["transfer"]["status"] for x in rows} == {"DISPATCHED"}
        assert all(x["since"] for x in rows)
    nurse_b = await as_user("nurse.b")
    hidden = await gql(nurse.http, IN_TRANSIT, {}, nurse_b.token)
    assert hidden["data"]["stockInTransit"] == []

    # The nurse finds one EARLY pack missing.
    received = await nurse.ok(
        RECEIVE,
        transfer=tid,
        lines=[{"pick": picks["EARLY"]["id"], "receivedQuantity": 3, "note": "box torn open"}],
    )
    transfer = received["transfer"]
    assert transfer["status"] == "RECEIVED" and transfer["receivedBy"]["username"] == "nurse"
    ins = sorted((m["lot"]["id"], m["quantity"]) for m in received["movements"])
    assert ins == sorted([(gid("Lot", early), 3), (gid("Lot", late), 2)])
    for movement in received["movements"]:
        assert movement["kind"] == "TRANSFER_IN"
        assert movement["location"]["code"] == "WARD-A"
        assert movement["reference"] == transfer["number"]
        assert movement["counterparty"] is None
        assert movement["actor"] == "nurse"
    assert await balance_of(demo.services, ward, early) == 3
    assert await balance_of(demo.services, ward, late) == 2
    (short,) = transfer["discrepancies"]
    assert short["kind"] == "SHORT" and short["quantity"] == 1
    assert short["lot"]["batchNumber"] == "EARLY" and short["note"] == "box torn open"
    assert (short["dispatchedQuantity"], short["receivedQuantity"]) == (4, 3)
    assert (
        short["recordedBy"]["username"] == "nurse" and short["pick"]["id"] == picks["EARLY"]["id"]
    )
    assert received["discrepancies"][0]["kind"] == "SHORT"
    assert transfer["inTransit"] == []
    assert transfer["lines"][0]["receivedQuantity"] == 5
    assert {p["lot"]["batchNumber"]: p["receivedQuantity"] for p in transfer["picks"]} == {
        "EARLY": 3,
        "LATE": 2,
    }
    assert (await gql(nurse.http, IN_TRANSIT, {}, nurse.token))["data"]["stockInTransit"] == []
    assert transfer["allowedActions"] == []

    # The audit trail: each step by its actor, ledger rows beside them, chain intact.
    assert await transfer_audit(demo) == [
        ("transfer.request", "nurse"),
        ("transfer.approve", "pharmacist"),
        ("transfer.pick", "pharmacist"),
        ("transfer.dispatch", "pharmacist"),
        ("transfer.receive", "nurse"),
        ("transfer.discrepancy", "nurse"),
    ]
    steps = [(s["action"], s["status"], s["actor"]) for s in transfer["history"]]
    assert steps == [
        ("REQUEST", "REQUESTED", "nurse"),
        ("APPROVE", "APPROVED", "pharmacist"),
        ("PICK", "PICKED", "pharmacist"),
        ("DISPATCH", "DISPATCHED", "pharmacist"),
        ("RECEIVE", "RECEIVED", "nurse"),
    ]
    assert transfer["history"][-1]["role"] == "NURSE"  # the nurse acted as herself
    async with demo.services.db.read() as session:
        stock_rows = (
            await session.execute(
                select(AuditEvent.action, AuditEvent.role).where(
                    AuditEvent.action.in_(["stock.transfer_out", "stock.transfer_in"])
                )
            )
        ).all()
    assert sorted(stock_rows) == [
        ("stock.transfer_in", "NURSE"),
        ("stock.transfer_in", "NURSE"),
        ("stock.transfer_out", "PHARMACIST"),
        ("stock.transfer_out", "PHARMACIST"),
    ]
    assert await chain_ok(demo)


# --- across organisations -----------------------------------------------------------------------


async def test_a_transfer_to_another_organisation(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    lot = await receive(demo, "HOSP-CP", 10, batch="XORG", product_id=product)
    lindenhof = await as_user(await pharmacy_user(demo))
    pharmacist = await as_user("pharmacist")

    created = await lindenhof.request("HOSP-CP", "PHARM-01", [(product, 5)])
    assert created["errors"] == [], created
    tid = created["transfer"]["id"]
    assert created["transfer"]["crossOrganisation"] is True
    # The pharmacy cannot approve what the hospital holds.
    assert codes(await lindenhof.call(APPROVE, transfer=tid)) == ["FORBIDDEN"]
    await pharmacist.ok(APPROVE, transfer=tid)
    await pharmacist.ok(PICK, transfer=tid)
    dispatched = await pharmacist.ok(DISPATCH, transfer=tid)
    (out,) = dispatched["movements"]
    assert out["kind"] == "TRANSFER_OUT" and out["quantity"] == -5
    assert out["organisation"]["name"] == HOSPITAL
    assert out["counterparty"]["name"] == PHARMACY
    # Both sides see it on the road.
    for actor in (pharmacist, lindenhof):
        rows = (await gql(actor.http, IN_TRANSIT, {}, actor.token))["data"]["stockInTransit"]
        assert [(x["lot"]["batchNumber"], x["quantity"]) for x in rows] == [("XORG", 5)]
    # The hospital cannot receive into the pharmacy.
    assert codes(await pharmacist.call(RECEIVE, transfer=tid)) == ["FORBIDDEN"]

    received = await lindenhof.ok(RECEIVE, transfer=tid)
    (inflow,) = received["movements"]
    assert inflow["kind"] == "TRANSFER_IN" and inflow["quantity"] == 5
    assert inflow["location"]["code"] == "PHARM-01"
    assert inflow["organisation"]["name"] == PHARMACY
    assert inflow["counterparty"]["name"] == HOSPITAL
    assert inflow["actor"] == "lindenhof"
    assert received["discrepancies"] == []
    assert await balance_of(demo.services, demo.locations["PHARM-01"], lot) == 5
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == 5

    # Each organisation sees its own side of the ledger on the transfer, and the transfer.
    mine = (await pharmacist.view(tid))["movements"]
    theirs = (await lindenhof.view(tid))["movements"]
    assert [(m["kind"], m["organisation"]["name"]) for m in mine] == [("TRANSFER_OUT", HOSPITAL)]
    assert [(m["kind"], m["organisation"]["name"]) for m in theirs] == [("TRANSFER_IN", PHARMACY)]
    auditor = await as_user("auditor")
    assert len((await auditor.view(tid))["movements"]) == 2


# --- reject and cancel --------------------------------------------------------------------------


async def test_a_rejected_request_moves_nothing(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 5, product_id=product)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    tid = (await nurse.request("HOSP-CP", "WARD-A", [(product, 3)]))["transfer"]["id"]
    before = await row_counts(demo.services)
    empty = await pharmacist.call(REJECT, transfer=tid, reason="  ")
    assert codes(empty) == ["INVALID_INPUT"] and empty["errors"][0]["field"] == "reason"
    rejected = (await pharmacist.ok(REJECT, transfer=tid, reason="ward A is over its par level"))[
        "transfer"
    ]
    assert rejected["status"] == "REJECTED"
    assert rejected["rejectionReason"] == "ward A is over its par level"
    assert rejected["decidedBy"]["username"] == "pharmacist"
    assert rejected["history"][-1]["reason"] == "ward A is over its par level"
    assert rejected["suggestedPicks"] == []
    after = await row_counts(demo.services)
    assert after["movements"] == before["movements"]
    assert after["audit_events"] == before["audit_events"] + 1
    # The nurse sees why.
    assert (await nurse.view(tid))["rejectionReason"] == "ward A is over its par level"
    refused = await pharmacist.call(APPROVE, transfer=tid)
    assert (
        codes(refused) == ["INVALID_TRANSITION"] and "REJECTED" in refused["errors"][0]["message"]
    )


async def test_cancel_before_dispatch_and_refused_after(demo: Demo, as_user: Any) -> None:
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    # The requester withdraws her request.
    requested, _ = await approved_transfer(demo, as_user)
    cancelled = (await nurse.ok(CANCEL, transfer=requested, reason="patient discharged"))[
        "transfer"
    ]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["cancellationReason"] == "patient discharged"
    assert cancelled["history"][-1]["actor"] == "nurse"
    # The source's manager cancels a picked one: the picks are dropped, nothing moved.
    picked, lot = await approved_transfer(demo, as_user)
    await pharmacist.ok(PICK, transfer=picked)
    before = await row_counts(demo.services)
    done = (await pharmacist.ok(CANCEL, transfer=picked, reason="fridge failure"))["transfer"]
    assert done["status"] == "CANCELLED" and done["allowedActions"] == []
    assert (await row_counts(demo.services))["movements"] == before["movements"]
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == 20
    # After dispatch, cancelling is refused by name and changes nothing.
    gone, _ = await approved_transfer(demo, as_user)
    await pharmacist.ok(PICK, transfer=gone)
    (out,) = (await pharmacist.ok(DISPATCH, transfer=gone))["movements"]
    lot = int(from_base64(out["lot"]["id"])[1])
    state = await world(demo)
    for actor in (nurse, pharmacist):
        refused = await actor.call(CANCEL, transfer=gone, reason="too late")
        assert codes(refused) == ["INVALID_TRANSITION"], refused
        assert "is DISPATCHED" in refused["errors"][0]["message"]
        assert refused["errors"][0]["field"] == "id"
    assert await world(demo) == state
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == out["balanceAfter"]


# --- the state machine through the API ----------------------------------------------------------


CALLS: dict[TransferAction, tuple[str, dict[str, Any]]] = {
    TransferAction.APPROVE: (APPROVE, {}),
    TransferAction.REJECT: (REJECT, {"reason": "no"}),
    TransferAction.PICK: (PICK, {}),
    TransferAction.DISPATCH: (DISPATCH, {}),
    TransferAction.RECEIVE: (RECEIVE, {}),
    TransferAction.CANCEL: (CANCEL, {"reason": "no"}),
}


@pytest.mark.parametrize("status", list(TransferStatus), ids=lambda s: s.value)
async def test_every_illegal_transition_names_the_current_state(
    demo: Demo, as_user: Any, status: TransferStatus
) -> None:
    tid = await transfer_in(demo, as_user, status)
    admin = await as_user("admin")
    assert (await admin.view(tid))["status"] == status.value
    illegal = [a for a in CALLS if (status, a) not in TRANSITIONS]
    assert illegal, status
    state = await world(demo)
    for action in illegal:
        document, variables = CALLS[action]
        refused = await admin.call(document, transfer=tid, **variables)
        assert codes(refused) == ["INVALID_TRANSITION"], (status, action, refused)
        message = refused["errors"][0]["message"]
        assert f"is {status.value}" in message, message
        assert refused["transfer"] is None
    assert await world(demo) == state


# --- who may do what ----------------------------------------------------------------------------


async def test_roles_and_scope(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 10, product_id=product)
    nurse, nurse_b = await as_user("nurse"), await as_user("nurse.b")
    pharmacist, warehouse = await as_user("pharmacist"), await as_user("warehouse")
    auditor = await as_user("auditor")

    # A nurse asks only for her own ward.
    other_ward = await nurse.request("HOSP-CP", "WARD-B", [(product, 1)])
    assert codes(other_ward) == ["FORBIDDEN"]
    assert codes(await auditor.request("HOSP-CP", "WARD-A", [(product, 1)])) == ["FORBIDDEN"]
    tid = (await nurse.request("HOSP-CP", "WARD-A", [(product, 4)]))["transfer"]["id"]
    state = await world(demo)
    # A nurse cannot approve; the warehouse manager does not own HOSP-CP's stock.
    assert codes(await nurse.call(APPROVE, transfer=tid)) == ["FORBIDDEN"]
    assert codes(await nurse.call(REJECT, transfer=tid, reason="x")) == ["FORBIDDEN"]
    assert codes(await warehouse.call(APPROVE, transfer=tid)) == ["FORBIDDEN"]
    # Nurse B cannot see, cancel or (later) receive Ward A's transfer.
    hidden = await gql(nurse_b.http, VIEW, {"id": tid}, nurse_b.token)
    assert hidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert codes(await nurse_b.call(CANCEL, transfer=tid, reason="x")) == ["FORBIDDEN"]
    assert await world(demo) == state

    await pharmacist.ok(APPROVE, transfer=tid)
    assert codes(await nurse.call(PICK, transfer=tid)) == ["FORBIDDEN"]
    await pharmacist.ok(PICK, transfer=tid)
    assert codes(await nurse.call(DISPATCH, transfer=tid)) == ["FORBIDDEN"]
    await pharmacist.ok(DISPATCH, transfer=tid)
    state = await world(demo)
    refused = await nurse_b.call(RECEIVE, transfer=tid)
    assert codes(refused) == ["FORBIDDEN"] and "scope" in refused["errors"][0]["message"]
    assert await world(demo) == state

    # The auditor reads everything and changes nothing.
    seen = await auditor.view(tid)
    assert seen["status"] == "DISPATCHED" and len(seen["inTransit"]) == 1
    listed = (await auditor.call(LIST))["edges"]
    assert [e["node"]["id"] for e in listed] == [tid]
    assert len((await gql(auditor.http, IN_TRANSIT, {}, auditor.token))["data"]["stockInTransit"])
    for action, (document, variables) in CALLS.items():
        refused = await auditor.call(document, transfer=tid, **variables)
        assert codes(refused) == ["FORBIDDEN"], (action, refused)
    assert await world(demo) == state
    await nurse.ok(RECEIVE, transfer=tid)


async def test_the_list_is_scoped_and_filtered(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 10, product_id=product)
    nurse, nurse_b = await as_user("nurse"), await as_user("nurse.b")
    pharmacist = await as_user("pharmacist")
    a1 = (await nurse.request("HOSP-CP", "WARD-A", [(product, 1)]))["transfer"]["id"]
    b1 = (await nurse_b.request("HOSP-CP", "WARD-B", [(product, 1)]))["transfer"]["id"]
    a2 = (await nurse.request("HOSP-CP", "WARD-A", [(product, 2)]))["transfer"]["id"]
    await pharmacist.ok(APPROVE, transfer=a2)

    def ids(payload: dict[str, Any]) -> list[str]:
        return [e["node"]["id"] for e in payload["edges"]]

    assert ids(await nurse.call(LIST)) == [a2, a1]  # newest first, her ward only
    assert ids(await nurse_b.call(LIST)) == [b1]
    assert ids(await pharmacist.call(LIST)) == [a2, b1, a1]
    assert ids(await pharmacist.call(LIST, status="APPROVED")) == [a2]
    ward_b = gid("Location", demo.locations["WARD-B"])
    assert ids(await pharmacist.call(LIST, location=ward_b)) == [b1]
    refused = await gql(nurse.http, LIST, {"location": ward_b}, nurse.token)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    first = await pharmacist.call(LIST, first=2)
    assert ids(first) == [a2, b1] and first["pageInfo"]["hasNextPage"]
    rest = await pharmacist.call(LIST, first=2, after=first["pageInfo"]["endCursor"])
    assert ids(rest) == [a1] and not rest["pageInfo"]["hasNextPage"]


# --- picking, dispatching and receiving in detail -----------------------------------------------


async def test_edited_picks_are_checked(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    other_product = await first_product_id(demo.services, offset=1)
    good = await receive(demo, "HOSP-CP", 3, batch="GOOD", expiry_days=100, product_id=product)
    more = await receive(demo, "HOSP-CP", 9, batch="MORE", expiry_days=200, product_id=product)
    old = await receive(demo, "HOSP-CP", 9, batch="OLD", expiry_days=-1, product_id=product)
    held = await receive(demo, "HOSP-CP", 9, batch="HELD", expiry_days=50, product_id=product)
    await set_lot_status(demo, held, LotStatus.RECALLED)
    wrong = await receive(demo, "HOSP-CP", 9, batch="WRONG", product_id=other_product)
    elsewhere = await receive(demo, "HOSP-WH", 9, batch="AWAY", product_id=product)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    created = await nurse.request("HOSP-CP", "WARD-A", [(product, 5), (other_product, 2)])
    tid = created["transfer"]["id"]
    line, other_line = (x["id"] for x in created["transfer"]["lines"])
    await pharmacist.ok(APPROVE, transfer=tid, lines=[{"line": other_line, "approvedQuantity": 0}])

    def pick(lot: int, quantity: int, on: str = line) -> dict[str, Any]:
        return {"line": on, "lot": gid("Lot", lot), "quantity": quantity}

    state = await world(demo)
    for picks, code, field in (
        ([pick(wrong, 1)], "INVALID_INPUT", "picks.0.lot"),
        ([pick(old, 1)], "EXPIRED_LOT", "picks.0.lot"),
        ([pick(held, 1)], "LOT_NOT_ISSUABLE", "picks.0.lot"),
        ([pick(good, 3), pick(more, 3)], "INVALID_INPUT", "picks.1.quantity"),  # 6 > 5
        ([pick(good, 4)], "INSUFFICIENT_STOCK", "picks.0.quantity"),
        ([pick(elsewhere, 1)], "INSUFFICIENT_STOCK", "picks.0.quantity"),  # not at the source
        ([pick(good, 0)], "INVALID_INPUT", "picks.0.quantity"),
        ([pick(good, 1), pick(good, 1)], "INVALID_INPUT", "picks.1.lot"),
        ([pick(wrong, 1, other_line)], "INVALID_INPUT", "picks.0.line"),  # approved 0
        ([], "INVALID_INPUT", "picks"),
    ):
        refused = await pharmacist.call(PICK, transfer=tid, picks=picks)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [(code, field)], refused
    assert await world(demo) == state

    # A later lot by choice (FEFO would take GOOD first); picking again replaces the picks.
    first = await pharmacist.ok(PICK, transfer=tid, picks=[pick(more, 5)])
    assert [(p["lot"]["batchNumber"], p["quantity"]) for p in first["transfer"]["picks"]] == [
        ("MORE", 5)
    ]
    assert [
        (s["lot"]["batchNumber"], s["quantity"]) for s in first["transfer"]["suggestedPicks"]
    ] == [("GOOD", 3), ("MORE", 2)]
    second = await pharmacist.ok(PICK, transfer=tid, picks=[pick(good, 2), pick(more, 1)])
    picked = sorted((p["lot"]["batchNumber"], p["quantity"]) for p in second["transfer"]["picks"])
    assert picked == [("GOOD", 2), ("MORE", 1)]  # partial: 3 of the 5 approved
    dispatched = await pharmacist.ok(DISPATCH, transfer=tid)
    assert sorted(m["quantity"] for m in dispatched["movements"]) == [-2, -1]
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], more) == 8


async def test_nothing_issuable_means_no_suggestion(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 9, batch="STALE", expiry_days=-10, product_id=product)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    tid = (await nurse.request("HOSP-CP", "WARD-A", [(product, 2)]))["transfer"]["id"]
    approved = await pharmacist.ok(APPROVE, transfer=tid)
    assert approved["transfer"]["suggestedPicks"] == []
    refused = await pharmacist.call(PICK, transfer=tid)
    assert codes(refused) == ["INSUFFICIENT_STOCK"] and "HOSP-CP" in refused["errors"][0]["message"]
    assert (await pharmacist.view(tid))["status"] == "APPROVED"


async def test_dispatch_without_the_stock_changes_nothing(demo: Demo, as_user: Any) -> None:
    tid, lot = await approved_transfer(demo, as_user, quantity=6)
    pharmacist = await as_user("pharmacist")
    await pharmacist.ok(PICK, transfer=tid)
    # Meanwhile, most of the picked lot is dispensed at the central pharmacy.
    await demo.services.ledger.record(
        demo.principals["pharmacist"],
        [MovementRequest(MovementKind.DISPENSE, demo.locations["HOSP-CP"], 17, lot_id=lot)],
        operation="test.dispense",
    )
    state = await world(demo)
    refused = await pharmacist.call(DISPATCH, transfer=tid)
    assert codes(refused) == ["INSUFFICIENT_STOCK"], refused
    assert refused["errors"][0]["field"] == "id"
    assert "only 3" in refused["errors"][0]["message"]
    assert await world(demo) == state
    assert (await pharmacist.view(tid))["status"] == "PICKED"
    # Picking again fits the picks to what is there; then it goes.
    repicked = await pharmacist.ok(PICK, transfer=tid)
    assert [p["quantity"] for p in repicked["transfer"]["picks"]] == [3]
    await pharmacist.ok(DISPATCH, transfer=tid)
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == 0


async def test_a_receipt_records_over_damaged_and_lost_packs(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    first = await receive(demo, "HOSP-CP", 5, batch="R1", expiry_days=30, product_id=product)
    second = await receive(demo, "HOSP-CP", 5, batch="R2", expiry_days=60, product_id=product)
    third = await receive(demo, "HOSP-CP", 5, batch="R3", expiry_days=90, product_id=product)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    tid = (await nurse.request("HOSP-CP", "WARD-A", [(product, 15)]))["transfer"]["id"]
    await pharmacist.ok(APPROVE, transfer=tid)
    picks = {
        p["lot"]["batchNumber"]: p["id"]
        for p in (await pharmacist.ok(PICK, transfer=tid))["transfer"]["picks"]
    }
    await pharmacist.ok(DISPATCH, transfer=tid)
    state = await world(demo)
    for lines, code, field in (
        (
            [{"pick": picks["R1"], "receivedQuantity": -1}],
            "INVALID_INPUT",
            "lines.0.receivedQuantity",
        ),
        (
            [{"pick": picks["R1"], "receivedQuantity": 1, "damagedQuantity": -2}],
            "INVALID_INPUT",
            "lines.0.damagedQuantity",
        ),
        (
            [
                {"pick": picks["R1"], "receivedQuantity": 1},
                {"pick": picks["R1"], "receivedQuantity": 1},
            ],
            "INVALID_INPUT",
            "lines.1.pick",
        ),
        ([{"pick": tid, "receivedQuantity": 1}], "INVALID_ID", "lines.0.pick"),
    ):
        refused = await nurse.call(RECEIVE, transfer=tid, lines=lines)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [(code, field)], refused
    assert await world(demo) == state

    received = await nurse.ok(
        RECEIVE,
        transfer=tid,
        lines=[
            {"pick": picks["R1"], "receivedQuantity": 6, "note": "one extra in the box"},
            {"pick": picks["R2"], "receivedQuantity": 3, "damagedQuantity": 2},
            {"pick": picks["R3"], "receivedQuantity": 0},
        ],
    )
    kinds = sorted(
        (d["kind"], d["quantity"], d["lot"]["batchNumber"])
        for d in received["transfer"]["discrepancies"]
    )
    assert kinds == [("DAMAGED", 2, "R2"), ("OVER", 1, "R1"), ("SHORT", 5, "R3")]
    damaged = next(d for d in received["transfer"]["discrepancies"] if d["kind"] == "DAMAGED")
    assert (damaged["dispatchedQuantity"], damaged["receivedQuantity"]) == (5, 3)
    assert damaged["damagedQuantity"] == 2
    ward = demo.locations["WARD-A"]
    assert await balance_of(demo.services, ward, first) == 6
    assert await balance_of(demo.services, ward, second) == 3  # damaged packs not in stock
    assert await balance_of(demo.services, ward, third) == 0
    assert sorted(m["quantity"] for m in received["movements"]) == [3, 6]  # no zero movement
    async with demo.services.db.read() as session:
        rows = (
            await session.execute(select(Discrepancy).where(Discrepancy.transfer_id.is_not(None)))
        ).scalars()
        assert {(d.kind, d.quantity, d.shipment_id) for d in rows} == {
            (DiscrepancyKind.OVER, 1, None),
            (DiscrepancyKind.DAMAGED, 2, None),
            (DiscrepancyKind.SHORT, 5, None),
        }
    # The one Discrepancy type: read by id, it names its transfer and pick, and no shipment;
    # either end's staff may read it, another ward's nurse may not.
    by_id = await nurse.raw(DISCREPANCY_NODE, id=damaged["id"])
    assert by_id["data"]["node"] == {
        "kind": "DAMAGED",
        "transfer": {"id": tid},
        "pick": {"id": picks["R2"]},
        "shipment": None,
        "line": None,
        "dispatchedQuantity": 5,
    }, by_id
    assert (await pharmacist.raw(DISCREPANCY_NODE, id=damaged["id"]))["data"]["node"] is not None
    nurse_b = await as_user("nurse.b")
    assert "scope" in await nurse_b.forbidden_read(DISCREPANCY_NODE, id=damaged["id"])
    assert await chain_ok(demo)


DISCREPANCY_NODE = """
query($id: ID!) {
  node(id: $id) {
    ... on Discrepancy {
      kind transfer { id } pick { id } shipment { id } line { id } dispatchedQuantity
    }
  }
}"""


KEYED_DISPATCH = f"""
mutation($transfer: ID!, $key: String) {{
  dispatchTransfer(input: {{id: $transfer, idempotencyKey: $key}}) {{
    transfer {{ status }} movements {{ id quantity }} replayed {ERRORS}
  }}
}}"""
KEYED_RECEIVE = f"""
mutation($transfer: ID!, $lines: [TransferReceiptInput!], $key: String) {{
  receiveTransfer(input: {{id: $transfer, lines: $lines, idempotencyKey: $key}}) {{
    transfer {{ status }} movements {{ id quantity }} discrepancies {{ kind quantity }}
    replayed {ERRORS}
  }}
}}"""


async def test_an_outbox_replay_of_dispatch_and_receipt_lands_once(
    demo: Demo, as_user: Any
) -> None:
    """The PWA resends a step after a lost answer: the first outcome, not INVALID_TRANSITION."""
    tid, lot = await approved_transfer(demo, as_user, quantity=5)
    nurse, pharmacist = await as_user("nurse"), await as_user("pharmacist")
    await pharmacist.ok(PICK, transfer=tid)
    first = await pharmacist.ok(KEYED_DISPATCH, transfer=tid, key="outbox-dispatch-1")
    state = await world(demo)
    again = await pharmacist.ok(KEYED_DISPATCH, transfer=tid, key="outbox-dispatch-1")
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["movements"] == first["movements"] and again["transfer"]["status"] == "DISPATCHED"
    assert await world(demo) == state
    # Without the key, a second dispatch is still refused by the state machine.
    assert codes(await pharmacist.call(KEYED_DISPATCH, transfer=tid)) == ["INVALID_TRANSITION"]

    picks = (await pharmacist.view(tid))["picks"]
    lines = [{"pick": picks[0]["id"], "receivedQuantity": 4}]
    received = await nurse.ok(KEYED_RECEIVE, transfer=tid, lines=lines, key="outbox-receive-1")
    state = await world(demo)
    replay = await nurse.ok(KEYED_RECEIVE, transfer=tid, lines=lines, key="outbox-receive-1")
    assert replay["replayed"] and replay["movements"] == received["movements"]
    assert (
        replay["discrepancies"] == received["discrepancies"] == [{"kind": "SHORT", "quantity": 1}]
    )
    assert await world(demo) == state
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 4
    # The same key for another request is refused, not replayed.
    other = await nurse.call(
        KEYED_RECEIVE,
        transfer=tid,
        lines=[{**lines[0], "receivedQuantity": 5}],
        key="outbox-receive-1",
    )
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]


async def test_bad_requests_are_refused_by_field(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    nurse = await as_user("nurse")
    state = await world(demo)
    yesterday = (utcnow().date() - timedelta(days=1)).isoformat()
    for args, extra, code, field in (
        (("WARD-A", "WARD-A", [(product, 1)]), {}, "INVALID_INPUT", "destination"),
        (("HOSP-CP", "WARD-A", []), {}, "INVALID_INPUT", "lines"),
        (("HOSP-CP", "WARD-A", [(product, 0)]), {}, "INVALID_INPUT", "lines.0.quantity"),
        (
            ("HOSP-CP", "WARD-A", [(product, 1), (product, 2)]),
            {},
            "INVALID_INPUT",
            "lines.1.product",
        ),
        (
            ("HOSP-CP", "WARD-A", [(product, 1)]),
            {"neededBy": yesterday},
            "INVALID_INPUT",
            "neededBy",
        ),
        (("HOSP-CP", "WARD-A", [(999_999, 1)]), {}, "NOT_FOUND", "lines.0.product"),
    ):
        refused = await nurse.request(*args, **extra)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [(code, field)], refused
    assert await world(demo) == state
    # Approval quantities stay within what was asked, and approving nothing is a rejection.
    tid = (await nurse.request("HOSP-CP", "WARD-A", [(product, 3)]))["transfer"]["id"]
    line = (await nurse.view(tid))["lines"][0]["id"]
    pharmacist = await as_user("pharmacist")
    for quantity, field in (
        (4, "lines.0.approvedQuantity"),
        (-1, "lines.0.approvedQuantity"),
        (0, "lines"),
    ):
        refused = await pharmacist.call(
            APPROVE, transfer=tid, lines=[{"line": line, "approvedQuantity": quantity}]
        )
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [("INVALID_INPUT", field)]
    assert (await nurse.view(tid))["status"] == "REQUESTED"


async def test_numbers_follow_each_other(demo: Demo, as_user: Any) -> None:
    product = await first_product_id(demo.services)
    nurse = await as_user("nurse")
    numbers = [
        (await nurse.request("HOSP-CP", "WARD-A", [(product, 1)]))["transfer"]["number"]
        for _ in range(3)
    ]
    year = utcnow().year
    assert numbers == [f"TR-{year}-00001", f"TR-{year}-00002", f"TR-{year}-00003"]


async def test_concurrent_requests_get_distinct_numbers(demo: Demo) -> None:
    from server.transfers.service import LineRequest

    product = await first_product_id(demo.services)
    service = demo.services.transfers

    async def one() -> str:
        transfer = await service.request(
            demo.principals["nurse"],
            source_id=demo.locations["HOSP-CP"],
            destination_id=demo.locations["WARD-A"],
            lines=[LineRequest(product, 1)],
        )
        return transfer.number

    numbers = await asyncio.gather(*(one() for _ in range(8)))
    assert len(set(numbers)) == 8


async def test_concurrent_dispatches_leave_one(demo: Demo, as_user: Any) -> None:
    tid, lot = await approved_transfer(demo, as_user, quantity=4)
    await (await as_user("pharmacist")).ok(PICK, transfer=tid)
    pk = int(from_base64(tid)[1])
    service = demo.services.transfers
    results = await asyncio.gather(
        *(service.dispatch(demo.principals["pharmacist"], pk) for _ in range(3)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(ok) == 1 and len(refused) == 2, results
    assert {r.code for r in refused} == {ErrorCode.INVALID_TRANSITION}
    assert await balance_of(demo.services, demo.locations["HOSP-CP"], lot) == 16


# --- live updates -------------------------------------------------------------------------------


TRANSFER_UPDATED = """subscription($transfer: ID, $locations: [ID!]) {
  transferUpdated(transfer: $transfer, locations: $locations) {
    action status transfer { number status destination { code } requestedBy { username } }
  }
}"""


async def _next(ws: GraphQLWebSocket, wait_seconds: float = 5) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), wait_seconds)
    assert message["type"] == "next", message
    return dict(message["payload"]["data"]["transferUpdated"])


async def test_transfer_updates_reach_subscribers_in_scope_only(
    demo: Demo, live_server: LiveServer
) -> None:
    from server.schema import schema_sdl

    assert "transferUpdated" in schema_sdl(), (
        "server/schema.py must merge transfers_api.Subscription into Subscription"
    )
    product = await first_product_id(demo.services)
    await receive(demo, "HOSP-CP", 10, product_id=product)
    source = gid("Location", demo.locations["HOSP-CP"])

    async def request(http: httpx.AsyncClient, token: str, ward: str) -> dict[str, Any]:
        body = await gql(
            http,
            REQUEST,
            {
                "source": source,
                "destination": gid("Location", demo.locations[ward]),
                "lines": [{"product": gid("Product", product), "quantity": 1}],
            },
            token,
        )
        payload = body["data"]["requestTransfer"]
        assert payload["errors"] == [], payload
        return dict(payload["transfer"])

    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        nurse_b = await token_for(http, "nurse.b")
        pharmacist = await token_for(http, "pharmacist")
        watcher = await GraphQLWebSocket.open(live_server.url, nurse)
        await watcher.subscribe(TRANSFER_UPDATED)
        manager = await GraphQLWebSocket.open(live_server.url, pharmacist)
        await manager.subscribe(
            TRANSFER_UPDATED, {"locations": [gid("Location", demo.locations["WARD-B"])]}
        )
        await wait_for_subscribers(http, 2, "transfer")
        # Ward B's request first: the Ward A nurse must not hear of it.
        ward_b = await request(http, nurse_b, "WARD-B")
        ward_a = await request(http, nurse, "WARD-A")
        event = await _next(watcher)
        assert event["action"] == "REQUEST" and event["status"] == "REQUESTED"
        assert event["transfer"]["number"] == ward_a["number"]
        assert event["transfer"]["destination"]["code"] == "WARD-A"
        assert event["transfer"]["requestedBy"]["username"] == "nurse"
        # The pharmacist asked for Ward B only.
        event = await _next(manager)
        assert event["transfer"]["number"] == ward_b["number"]
        # Approval reaches the nurse after commit, with the status it left.
        body = await gql(http, APPROVE, {"transfer": ward_a["id"]}, pharmacist)
        assert body["data"]["approveTransfer"]["errors"] == []
        event = await _next(watcher)
        assert (event["action"], event["status"]) == ("APPROVE", "APPROVED")
        assert event["transfer"]["status"] == "APPROVED"
        # One transfer by id; someone else's is refused by name.
        single = await GraphQLWebSocket.open(live_server.url, nurse)
        await single.subscribe(TRANSFER_UPDATED, {"transfer": ward_b["id"]})
        refused = await asyncio.wait_for(single.receive(), 5)
        assert "FORBIDDEN" in str(refused)
        await single.close()
        await watcher.close()
        await manager.close()
