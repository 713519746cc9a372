"""Lot traces: hops rebuilt from both reported sides of every shipment and transfer, holders
with exact quantities and dates, patient references redacted outside the caller's scope, and
the same report as CSV. Pure assembly first (no database), then the API on both databases."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.db import utcnow
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.supervision.trace import (
    HOP_COLUMNS,
    Hop,
    HopKind,
    HopStatus,
    LotHeader,
    Names,
    TraceMovement,
    assemble_trace,
    backward_hops,
    pair_fifo,
    read_trace_csv,
    trace_csv,
)
from tests.conftest import Demo, balance_of, first_product_id, gid, gql, token_for

K = MovementKind
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
MFG, WHS, HOSP = 1, 2, 3
L_MFG, L_WHS, L_CP, L_WH, L_WARD = 10, 20, 30, 31, 40


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


class Rows:
    """Movement rows with increasing ids, written like each organisation would report them."""

    def __init__(self) -> None:
        self.rows: list[TraceMovement] = []

    def add(
        self, kind: MovementKind, location: int, org: int, qty: int, hour: int, **kw: Any
    ) -> TraceMovement:
        signed = qty if kind in (K.PRODUCE, K.RECEIVE, K.TRANSFER_IN, K.RETURN) else -qty
        if kind in (K.ADJUST, K.COUNT):
            signed = qty
        row = TraceMovement(len(self.rows) + 1, kind, location, org, signed, at(hour), **kw)
        self.rows.append(row)
        return row


def chain() -> Rows:
    r = Rows()
    r.add(K.PRODUCE, L_MFG, MFG, 100, 0)
    r.add(K.SHIP, L_MFG, MFG, 100, 1, counterparty_id=WHS, reference="DN-1")
    r.add(K.RECEIVE, L_WHS, WHS, 100, 2, counterparty_id=MFG, reference="DN-1")
    r.add(K.SHIP, L_WHS, WHS, 60, 3, counterparty_id=HOSP, reference="DN-2")
    r.add(K.RECEIVE, L_CP, HOSP, 50, 4, counterparty_id=WHS, reference="DN-2")
    r.add(K.RECEIVE, L_WH, HOSP, 10, 4, counterparty_id=WHS, reference="DN-2")
    r.add(K.TRANSFER_OUT, L_CP, HOSP, 20, 5, reference="TR-1")
    r.add(K.TRANSFER_IN, L_WARD, HOSP, 20, 6, reference="TR-1")
    r.add(K.DISPENSE, L_WARD, HOSP, 3, 7, patient_reference="ENC-1")
    r.add(K.DISPENSE, L_WARD, HOSP, 2, 8, patient_reference="ENC-2")
    r.add(K.RETURN, L_WARD, HOSP, 1, 9, patient_reference="ENC-2")
    r.add(K.DISPOSE, L_WARD, HOSP, 1, 10)
    r.add(K.DISPENSE, L_CP, HOSP, 4, 11, patient_reference="ENC-3")
    r.add(K.COUNT, L_WH, HOSP, -1, 12)
    return r


def hop_tuple(h: Hop) -> tuple[Any, ...]:
    return (
        h.kind,
        h.status,
        h.from_organisation_id,
        h.from_location_id,
        h.to_organisation_id,
        h.to_location_id,
        h.quantity,
        h.shipped_at,
        h.received_at,
        h.reference,
    )


# --- pure assembly -------------------------------------------------------------------------------


def test_backward_pairs_each_shipment_with_its_receipts() -> None:
    hops = backward_hops(chain().rows)
    assert [hop_tuple(h) for h in hops] == [
        (HopKind.PRODUCED, HopStatus.COMPLETE, None, None, MFG, L_MFG, 100, None, at(0), None),
        (HopKind.SHIPMENT, HopStatus.COMPLETE, MFG, L_MFG, WHS, L_WHS, 100, at(1), at(2), "DN-1"),
        # One delivery note received in two parts: two hops, each with its own quantity.
        (HopKind.SHIPMENT, HopStatus.COMPLETE, WHS, L_WHS, HOSP, L_CP, 50, at(3), at(4), "DN-2"),
        (HopKind.SHIPMENT, HopStatus.COMPLETE, WHS, L_WHS, HOSP, L_WH, 10, at(3), at(4), "DN-2"),
        (HopKind.TRANSFER, HopStatus.COMPLETE, HOSP, L_CP, HOSP, L_WARD, 20, at(5), at(6), "TR-1"),
    ]


def test_forward_holdings_per_location_and_organisation() -> None:
    trace = assemble_trace(chain().rows)
    by_location = {h.location_id: h for h in trace.locations}
    assert [h.location_id for h in trace.locations] == [L_MFG, L_WHS, L_CP, L_WH, L_WARD]
    ward = by_location[L_WARD]
    assert (ward.received, ward.dispensed, ward.returned, ward.disposed, ward.balance) == (
        20,
        5,
        1,
        1,
        15,
    )
    assert (ward.first_at, ward.last_at, ward.movements) == (at(6), at(10), 5)
    cp = by_location[L_CP]
    assert (cp.received, cp.sent, cp.dispensed, cp.balance) == (50, 20, 4, 26)
    assert (by_location[L_WH].adjusted, by_location[L_WH].balance) == (-1, 9)
    mfg = by_location[L_MFG]
    assert (mfg.produced, mfg.sent, mfg.balance) == (100, 100, 0)
    assert by_location[L_WHS].balance == 40

    orgs = {h.organisation_id: h for h in trace.organisations}
    assert [h.organisation_id for h in trace.organisations] == [MFG, WHS, HOSP]
    assert all(h.location_id is None for h in trace.organisations)
    hosp = orgs[HOSP]
    # The ward transfer stays inside the hospital: it is neither received nor sent by it.
    assert (hosp.received, hosp.sent, hosp.dispensed, hosp.disposed) == (60, 0, 9, 1)
    assert (hosp.returned, hosp.adjusted, hosp.balance) == (1, -1, 50)
    assert (hosp.first_at, hosp.last_at, hosp.movements) == (at(4), at(12), 10)
    assert trace.on_hand == 40 + 50 == sum(h.balance for h in trace.organisations)
    for h in [*trace.locations, *trace.organisations]:
        assert h.balance == (
            h.produced + h.received - h.sent - h.dispensed - h.disposed + h.returned + h.adjusted
        )


def test_patients_and_redaction() -> None:
    rows = chain().rows
    trace = assemble_trace(rows)
    assert [
        (p.patient_reference, p.location_id, p.quantity, p.occurred_at) for p in trace.patients
    ] == [
        ("ENC-1", L_WARD, 3, at(7)),
        ("ENC-2", L_WARD, 2, at(8)),
        ("ENC-3", L_CP, 4, at(11)),
    ]
    assert trace.redacted_patients == 0
    only_ward = assemble_trace(rows, lambda location_id: location_id == L_WARD)
    assert [(p.patient_reference, p.redacted, p.quantity) for p in only_ward.patients] == [
        ("ENC-1", False, 3),
        ("ENC-2", False, 2),
        (None, True, 4),
    ]
    assert only_ward.redacted_patients == 1
    # Redaction hides the person, never the stock: hops and holders are the same.
    assert only_ward.hops == trace.hops
    assert only_ward.locations == trace.locations


def test_one_sided_reports_stay_visible() -> None:
    r = Rows()
    r.add(K.RECEIVE, L_WHS, WHS, 30, 0, counterparty_id=99, reference="EXT-7")  # supplier offline
    r.add(K.RECEIVE, L_WHS, WHS, 5, 0, reference=None)  # nobody named
    r.add(K.SHIP, L_WHS, WHS, 12, 1, counterparty_id=HOSP, reference="DN-9")  # still on the road
    r.add(K.TRANSFER_OUT, L_CP, HOSP, 4, 2)  # no reference: cannot be paired
    r.add(K.TRANSFER_IN, L_WARD, HOSP, 4, 3)
    hops = backward_hops(r.rows)
    assert [
        (h.kind, h.status, h.from_organisation_id, h.to_organisation_id, h.quantity) for h in hops
    ] == [
        (HopKind.SHIPMENT, HopStatus.NOT_SHIPPED, 99, WHS, 30),
        (HopKind.SHIPMENT, HopStatus.NOT_SHIPPED, None, WHS, 5),
        (HopKind.SHIPMENT, HopStatus.NOT_RECEIVED, WHS, HOSP, 12),
        (HopKind.TRANSFER, HopStatus.NOT_RECEIVED, HOSP, None, 4),
        (HopKind.TRANSFER, HopStatus.NOT_SHIPPED, None, HOSP, 4),
    ]
    assert hops[2].to_location_id is None and hops[2].received_at is None
    assert hops[0].from_location_id is None and hops[0].shipped_at is None
    trace = assemble_trace(r.rows)
    assert trace.not_received == 16
    # An unpaired internal transfer is not cancelled out of the organisation's totals.
    hosp = next(h for h in trace.organisations if h.organisation_id == HOSP)
    assert (hosp.received, hosp.sent, hosp.balance) == (4, 4, 0)


def test_fifo_split_of_two_shipments_under_one_reference() -> None:
    r = Rows()
    a = r.add(K.SHIP, L_WHS, WHS, 10, 0, counterparty_id=HOSP, reference="PO-1")
    b = r.add(K.SHIP, L_WHS, WHS, 10, 1, counterparty_id=HOSP, reference="PO-1")
    x = r.add(K.RECEIVE, L_CP, HOSP, 15, 2, counterparty_id=WHS, reference="PO-1")
    y = r.add(K.RECEIVE, L_CP, HOSP, 3, 3, counterparty_id=WHS, reference="PO-1")
    pairs = [(o and o.id, i and i.id, q) for o, i, q in pair_fifo([b, a], [y, x])]
    assert pairs == [(a.id, x.id, 10), (b.id, x.id, 5), (b.id, y.id, 3), (b.id, None, 2)]
    # A different reference or receiver never pairs.
    other = r.add(K.RECEIVE, L_CP, HOSP, 2, 4, counterparty_id=WHS, reference="PO-2")
    statuses = {(h.reference, h.status) for h in backward_hops([*r.rows, other])}
    assert ("PO-2", HopStatus.NOT_SHIPPED) in statuses
    assert ("PO-1", HopStatus.NOT_RECEIVED) in statuses


@settings(max_examples=150, deadline=None)
@given(
    shipped=st.lists(st.integers(1, 50), max_size=5),
    received=st.lists(st.integers(1, 50), max_size=5),
)
def test_pairing_conserves_both_sides(shipped: list[int], received: list[int]) -> None:
    """Whatever the split, hops account for every pack each side reported, exactly once."""
    r = Rows()
    for i, qty in enumerate(shipped):
        r.add(K.SHIP, L_WHS, WHS, qty, i, counterparty_id=HOSP, reference="DN")
    for i, qty in enumerate(received):
        r.add(K.RECEIVE, L_CP, HOSP, qty, i, counterparty_id=WHS, reference="DN")
    hops = backward_hops(r.rows)
    assert sum(h.quantity for h in hops if h.shipped_at is not None) == sum(shipped)
    assert sum(h.quantity for h in hops if h.received_at is not None) == sum(received)
    complete = sum(h.quantity for h in hops if h.status is HopStatus.COMPLETE)
    assert complete == min(sum(shipped), sum(received))
    assert all(h.quantity > 0 for h in hops)


def test_csv_sections_parse_back_and_formulas_are_defused() -> None:
    r = chain()
    r.add(K.DISPENSE, L_WARD, HOSP, 1, 13, patient_reference="=HYPERLINK(1)")
    names = Names(
        {MFG: "Maker AG", WHS: "Dist, Inc.", HOSP: "St. Clinic"},
        {L_MFG: "MFG", L_WHS: "WHS", L_CP: "CP", L_WH: "WH", L_WARD: "WARD"},
    )
    header = LotHeader("Drug 5 mg", "AP-1", "B1", date(2027, 1, 31), "RELEASED")
    text = trace_csv(assemble_trace(r.rows), header, names)
    raw = [row for row in csv.reader(io.StringIO(text)) if row]
    assert raw[0] == [
        "section",
        "product",
        "approval_number",
        "batch_number",
        "expiry_date",
        "status",
    ]
    assert raw[1] == ["lot", "Drug 5 mg", "AP-1", "B1", "2027-01-31", "RELEASED"]
    assert raw[2] == ["section", *HOP_COLUMNS]
    sections = read_trace_csv(text)
    assert [len(sections[s]) for s in ("lot", "hop", "location", "organisation", "patient")] == [
        1,
        5,
        5,
        3,
        4,
    ]
    assert sections["hop"][2] == {
        "kind": "SHIPMENT",
        "status": "COMPLETE",
        "from_organisation": "Dist, Inc.",
        "from_location": "WHS",
        "to_organisation": "St. Clinic",
        "to_location": "CP",
        "quantity": "50",
        "shipped_at": at(3).isoformat(),
        "received_at": at(4).isoformat(),
        "reference": "DN-2",
    }
    ward = next(x for x in sections["location"] if x["location"] == "WARD")
    assert (ward["received"], ward["dispensed"], ward["balance"]) == ("20", "6", "14")
    wh = next(x for x in sections["location"] if x["location"] == "WH")
    assert wh["adjusted"] == "-1"  # numbers are never escaped
    assert sections["patient"][-1]["patient_reference"] == "'=HYPERLINK(1)"


# --- the API on both databases -------------------------------------------------------------------

TRACE = """
query($lot: ID!) {
  traceLot(lot: $lot) {
    lot { id batchNumber status } product { id }
    backward {
      kind status quantity shippedAt receivedAt reference
      fromOrganisation { name } fromLocation { code } toOrganisation { name } toLocation { code }
    }
    forward {
      onHand redactedPatientReferences
      locations {
        location { code } organisation { name }
        produced received sent dispensed disposed returned adjusted balance movements
        firstAt lastAt
      }
      organisations {
        location { code } organisation { name }
        produced received sent dispensed disposed returned adjusted balance firstAt lastAt
      }
      patients { patientReference redacted quantity dispensedAt location { code } }
    }
  }
}"""
TRACE_CSV = "query($lot: ID!) { traceLotCsv(lot: $lot) }"

MFG_NAME = "Helvepharm Manufacturing AG"
WHS_NAME = "MedDistri Wholesale"
HOSP_NAME = "St. Aurelia General Hospital"
PHARM_NAME = "Lindenhof Pharmacy"


def iso(value: datetime) -> str:
    return value.isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def build_chain(demo: Demo) -> tuple[int, dict[str, datetime]]:
    """Manufacturer -> wholesaler -> hospital (two stores) and pharmacy -> ward -> patients,
    each side recorded by hand through the ledger, with dates a day apart."""
    loc, org = demo.locations, demo.orgs
    base = (utcnow() - timedelta(days=20)).replace(microsecond=0)
    t = {
        name: base + timedelta(days=i)
        for i, name in enumerate(
            [
                "produced",
                "shipped1",
                "received1",
                "shipped2",
                "received2",
                "shipped3",
                "received3",
                "out",
                "in",
                "enc1",
                "enc2",
                "enc3",
                "rx",
                "returned",
                "disposed",
            ]
        )
    }
    product = await first_product_id(demo.services)
    batch = f"TR{uuid.uuid4().hex[:8].upper()}"
    admin = demo.principals["admin"]
    ledger = demo.services.ledger
    produced = await ledger.record(
        admin,
        [
            MovementRequest(
                K.PRODUCE,
                loc["MFG-01"],
                500,
                new_lot=NewLot(product, batch, base.date() + timedelta(days=400), org[MFG_NAME]),
                occurred_at=t["produced"],
            )
        ],
        operation="test.produce",
    )
    lot = produced.movements[0].lot_id

    def move(kind: MovementKind, where: str, qty: int, when: str, **kw: Any) -> MovementRequest:
        return MovementRequest(kind, loc[where], qty, lot_id=lot, occurred_at=t[when], **kw)

    steps = [
        move(K.SHIP, "MFG-01", 500, "shipped1", counterparty_id=org[WHS_NAME], reference="DN-T1"),
        move(
            K.RECEIVE, "WHS-DC", 500, "received1", counterparty_id=org[MFG_NAME], reference="DN-T1"
        ),
        move(K.SHIP, "WHS-DC", 300, "shipped2", counterparty_id=org[HOSP_NAME], reference="DN-T2"),
        move(
            K.RECEIVE, "HOSP-CP", 280, "received2", counterparty_id=org[WHS_NAME], reference="DN-T2"
        ),
        move(
            K.RECEIVE, "HOSP-WH", 20, "received2", counterparty_id=org[WHS_NAME], reference="DN-T2"
        ),
        move(K.SHIP, "WHS-DC", 50, "shipped3", counterparty_id=org[PHARM_NAME], reference="DN-T3"),
        move(
            K.RECEIVE, "PHARM-01", 30, "received3", counterparty_id=org[WHS_NAME], reference="DN-T3"
        ),
        move(K.TRANSFER_OUT, "HOSP-CP", 40, "out", reference="TR-T1"),
        move(K.TRANSFER_IN, "WARD-A", 40, "in", reference="TR-T1"),
        move(K.DISPENSE, "WARD-A", 3, "enc1", patient_reference="ENC-1"),
        move(K.DISPENSE, "WARD-A", 2, "enc2", patient_reference="ENC-2"),
        move(K.DISPENSE, "HOSP-CP", 1, "enc3", patient_reference="ENC-3"),
        move(K.DISPENSE, "PHARM-01", 1, "rx", patient_reference="RX-9"),
        move(K.RETURN, "WARD-A", 1, "returned", patient_reference="ENC-2"),
        move(K.DISPOSE, "WARD-A", 2, "disposed", reason="DAMAGED"),
    ]
    for step in steps:  # one by one, as each organisation would report its own side
        await ledger.record(admin, [step], operation="test.chain")
    return lot, t


async def trace_as(http: httpx.AsyncClient, username: str, lot: int) -> dict[str, Any]:
    result = await gql(http, TRACE, {"lot": gid("Lot", lot)}, await token_for(http, username))
    assert "errors" not in result, result
    return dict(result["data"]["traceLot"])


async def test_trace_backward_and_forward_with_exact_quantities_and_dates(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    lot, t = await build_chain(demo)
    trace = await trace_as(client, "regulator", lot)
    assert trace["lot"]["id"] == gid("Lot", lot)
    hops = [
        (
            h["kind"],
            h["status"],
            h["fromOrganisation"] and h["fromOrganisation"]["name"],
            h["fromLocation"] and h["fromLocation"]["code"],
            h["toOrganisation"] and h["toOrganisation"]["name"],
            h["toLocation"] and h["toLocation"]["code"],
            h["quantity"],
            h["shippedAt"] and parse(h["shippedAt"]),
            h["receivedAt"] and parse(h["receivedAt"]),
            h["reference"],
        )
        for h in trace["backward"]
    ]
    assert hops == [
        ("PRODUCED", "COMPLETE", None, None, MFG_NAME, "MFG-01", 500, None, t["produced"], None),
        (
            "SHIPMENT",
            "COMPLETE",
            MFG_NAME,
            "MFG-01",
            WHS_NAME,
            "WHS-DC",
            500,
            t["shipped1"],
            t["received1"],
            "DN-T1",
        ),
        (
            "SHIPMENT",
            "COMPLETE",
            WHS_NAME,
            "WHS-DC",
            HOSP_NAME,
            "HOSP-CP",
            280,
            t["shipped2"],
            t["received2"],
            "DN-T2",
        ),
        (
            "SHIPMENT",
            "COMPLETE",
            WHS_NAME,
            "WHS-DC",
            HOSP_NAME,
            "HOSP-WH",
            20,
            t["shipped2"],
            t["received2"],
            "DN-T2",
        ),
        # 50 shipped to the pharmacy, 30 received: the other 20 are still unaccounted for.
        (
            "SHIPMENT",
            "NOT_RECEIVED",
            WHS_NAME,
            "WHS-DC",
            PHARM_NAME,
            None,
            20,
            t["shipped3"],
            None,
            "DN-T3",
        ),
        (
            "SHIPMENT",
            "COMPLETE",
            WHS_NAME,
            "WHS-DC",
            PHARM_NAME,
            "PHARM-01",
            30,
            t["shipped3"],
            t["received3"],
            "DN-T3",
        ),
        (
            "TRANSFER",
            "COMPLETE",
            HOSP_NAME,
            "HOSP-CP",
            HOSP_NAME,
            "WARD-A",
            40,
            t["out"],
            t["in"],
            "TR-T1",
        ),
    ]

    forward = trace["forward"]
    assert forward["onHand"] == 500 - 20 - 7 + 1 - 2
    assert forward["redactedPatientReferences"] == 0
    locations = {h["location"]["code"]: h for h in forward["locations"]}
    assert list(locations) == ["MFG-01", "WHS-DC", "HOSP-WH", "HOSP-CP", "PHARM-01", "WARD-A"]
    expected = {  # produced received sent dispensed disposed returned adjusted balance
        "MFG-01": (500, 0, 500, 0, 0, 0, 0, 0, "produced", "shipped1"),
        "WHS-DC": (0, 500, 350, 0, 0, 0, 0, 150, "received1", "shipped3"),
        "HOSP-CP": (0, 280, 40, 1, 0, 0, 0, 239, "received2", "enc3"),
        "HOSP-WH": (0, 20, 0, 0, 0, 0, 0, 20, "received2", "received2"),
        "PHARM-01": (0, 30, 0, 1, 0, 0, 0, 29, "received3", "rx"),
        "WARD-A": (0, 40, 0, 5, 2, 1, 0, 34, "in", "disposed"),
    }
    for code, (*counters, first, last) in expected.items():
        h = locations[code]
        assert [
            h[k]
            for k in (
                "produced",
                "received",
                "sent",
                "dispensed",
                "disposed",
                "returned",
                "adjusted",
                "balance",
            )
        ] == counters, code
        assert (parse(h["firstAt"]), parse(h["lastAt"])) == (t[first], t[last]), code
        assert h["balance"] == await balance_of(demo.services, demo.locations[code], lot)
    assert locations["WARD-A"]["organisation"]["name"] == HOSP_NAME

    orgs = {h["organisation"]["name"]: h for h in forward["organisations"]}
    assert list(orgs) == [MFG_NAME, WHS_NAME, HOSP_NAME, PHARM_NAME]
    hosp = orgs[HOSP_NAME]
    assert hosp["location"] is None
    assert (hosp["received"], hosp["sent"], hosp["dispensed"], hosp["disposed"]) == (300, 0, 6, 2)
    assert (hosp["returned"], hosp["balance"]) == (1, 239 + 20 + 34)
    assert (parse(hosp["firstAt"]), parse(hosp["lastAt"])) == (t["received2"], t["disposed"])
    assert (orgs[WHS_NAME]["received"], orgs[WHS_NAME]["sent"]) == (500, 350)

    patients = [
        (
            p["patientReference"],
            p["redacted"],
            p["location"]["code"],
            p["quantity"],
            parse(p["dispensedAt"]),
        )
        for p in forward["patients"]
    ]
    assert patients == [
        ("ENC-1", False, "WARD-A", 3, t["enc1"]),
        ("ENC-2", False, "WARD-A", 2, t["enc2"]),
        ("ENC-3", False, "HOSP-CP", 1, t["enc3"]),
        ("RX-9", False, "PHARM-01", 1, t["rx"]),
    ]


async def test_patient_references_only_within_scope(client: httpx.AsyncClient, demo: Demo) -> None:
    lot, _ = await build_chain(demo)
    full = await trace_as(client, "regulator", lot)
    for username, visible in (
        ("auditor", {"ENC-1", "ENC-2", "ENC-3", "RX-9"}),
        ("admin", {"ENC-1", "ENC-2", "ENC-3", "RX-9"}),
        ("pharmacist", {"ENC-1", "ENC-2", "ENC-3"}),  # the hospital, not the retail pharmacy
        ("warehouse", set()),  # hospital warehouse only: no patients there
    ):
        trace = await trace_as(client, username, lot)
        refs = {p["patientReference"] for p in trace["forward"]["patients"]} - {None}
        assert refs == visible, username
        hidden = [p for p in trace["forward"]["patients"] if p["redacted"]]
        assert trace["forward"]["redactedPatientReferences"] == len(hidden) == 4 - len(visible)
        assert all(p["patientReference"] is None for p in hidden)
        # Every hop and every holder is still shown: only people are hidden.
        assert trace["backward"] == full["backward"], username
        assert trace["forward"]["locations"] == full["forward"]["locations"], username
        assert [p["quantity"] for p in trace["forward"]["patients"]] == [3, 2, 1, 1]


@pytest.mark.parametrize("username", ["nurse", "supplier"])
async def test_trace_needs_trace_read(client: httpx.AsyncClient, demo: Demo, username: str) -> None:
    lot, _ = await build_chain(demo)
    token = await token_for(client, username)
    for document in (TRACE, TRACE_CSV):
        result = await gql(client, document, {"lot": gid("Lot", lot)}, token)
        assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN", result


async def test_trace_of_unknown_or_wrong_id(client: httpx.AsyncClient, demo: Demo) -> None:
    token = await token_for(client, "auditor")
    missing = await gql(client, TRACE, {"lot": gid("Lot", 999_999)}, token)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    wrong = await gql(client, TRACE, {"lot": gid("Location", 1)}, token)
    assert wrong["errors"][0]["extensions"]["code"] == "INVALID_ID"
    anonymous = await gql(client, TRACE, {"lot": gid("Lot", 1)})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_lot_without_movements_has_an_empty_trace(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    from server.catalog.models import Lot

    async with demo.services.db.write() as session:
        lot = Lot(
            product_id=await first_product_id(demo.services),
            batch_number="EMPTY1",
            expiry_date=date(2030, 1, 1),
        )
        session.add(lot)
        await session.flush()
        lot_id = lot.id
    trace = await trace_as(client, "auditor", lot_id)
    assert trace["backward"] == []
    assert trace["forward"]["locations"] == [] and trace["forward"]["patients"] == []
    assert trace["forward"]["onHand"] == 0


async def test_trace_csv_parses_back_to_the_same_report(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    lot, t = await build_chain(demo)
    token = await token_for(client, "pharmacist")
    result = await gql(client, TRACE_CSV, {"lot": gid("Lot", lot)}, token)
    assert "errors" not in result, result
    text = result["data"]["traceLotCsv"]
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    assert rows[0][0] == "section" and rows[1][0] == "lot"
    sections = read_trace_csv(text)
    (lot_row,) = sections["lot"]
    assert lot_row["status"] == "RELEASED" and lot_row["batch_number"].startswith("TR")
    hops = [
        (
            h["kind"],
            h["status"],
            h["from_location"],
            h["to_organisation"],
            h["to_location"],
            int(h["quantity"]),
            h["shipped_at"],
            h["received_at"],
            h["reference"],
        )
        for h in sections["hop"]
    ]
    assert hops[0] == (
        "PRODUCED",
        "COMPLETE",
        "",
        MFG_NAME,
        "MFG-01",
        500,
        "",
        iso(t["produced"]),
        "",
    )
    assert hops[2] == (
        "SHIPMENT",
        "COMPLETE",
        "WHS-DC",
        HOSP_NAME,
        "HOSP-CP",
        280,
        iso(t["shipped2"]),
        iso(t["received2"]),
        "DN-T2",
    )
    assert hops[4] == (
        "SHIPMENT",
        "NOT_RECEIVED",
        "WHS-DC",
        PHARM_NAME,
        "",
        20,
        iso(t["shipped3"]),
        "",
        "DN-T3",
    )
    assert len(hops) == 7
    balances = {x["location"]: int(x["balance"]) for x in sections["location"]}
    assert balances == {
        "MFG-01": 0,
        "WHS-DC": 150,
        "HOSP-WH": 20,
        "HOSP-CP": 239,
        "PHARM-01": 29,
        "WARD-A": 34,
    }
    orgs = {x["organisation"]: x for x in sections["organisation"]}
    assert (orgs[HOSP_NAME]["received"], orgs[HOSP_NAME]["dispensed"]) == ("300", "6")
    patients = [
        (p["patient_reference"], p["redacted"], p["location"], p["quantity"])
        for p in sections["patient"]
    ]
    # The hospital pharmacist sees the hospital's patients; the retail one is redacted.
    assert patients == [
        ("ENC-1", "", "WARD-A", "3"),
        ("ENC-2", "", "WARD-A", "2"),
        ("ENC-3", "", "HOSP-CP", "1"),
        ("", "yes", "PHARM-01", "1"),
    ]
