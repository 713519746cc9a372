"""Batch supervision on both databases, with hand-built chains through the real ledger (the demo
network: Helvepharm -> MedDistri -> St. Aurelia / Lindenhof -> patients): every status, the
edge reconciliation naming shipments, status-change alerts and who sees them, scope, the
report, the periodic sweep, and the recomputation of every total from the ledger."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from server.alerts.models import Alert, AlertKind
from server.catalog.models import Product
from server.config import Settings
from server.core.db import utcnow
from server.core.errors import DomainError, ErrorCode
from server.core.security import Principal, Role
from server.demo import DEMO_PASSWORD
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.network.models import Location, Organisation, User
from server.services import Services
from server.supervision.gamma import PartKind, SupervisionStatus
from server.supervision.models import BatchConstituentTotal, BatchStatus
from tests.conftest import ROOT, TEST_SECRET, Demo, first_product_id, gql, token_for

K = MovementKind
S = SupervisionStatus
MFG = "Helvepharm Manufacturing AG"
WHS = "MedDistri Wholesale"
HOSP = "St. Aurelia General Hospital"
PHARM = "Lindenhof Pharmacy"


@dataclass
class Batch:
    approval: str
    number: str
    lot: int


class Chain:
    """Movements of one new batch, each reported on its own, as each organisation would."""

    def __init__(self, demo: Demo, batch: Batch) -> None:
        self.demo = demo
        self.batch = batch

    @classmethod
    async def produce(cls, demo: Demo, quantity: int = 100, product_offset: int = 0) -> Chain:
        product_id = await first_product_id(demo.services, product_offset)
        number = f"SV{uuid.uuid4().hex[:8].upper()}"
        result = await demo.services.ledger.record(
            demo.principals["admin"],
            [
                MovementRequest(
                    K.PRODUCE,
                    demo.locations["MFG-01"],
                    quantity,
                    new_lot=NewLot(
                        product_id,
                        number,
                        utcnow().date() + timedelta(days=400),
                        demo.orgs[MFG],
                    ),
                    reference=f"PROD-{number}",
                )
            ],
            operation="test.produce",
        )
        async with demo.services.db.read() as session:
            approval = (await session.get(Product, product_id)).approval_number
        return cls(demo, Batch(approval, number, result.movements[0].lot_id))

    async def move(
        self,
        kind: MovementKind,
        where: str,
        quantity: int,
        *,
        to: str | None = None,
        reference: str | None = None,
        ago: timedelta | None = None,
        reason: str | None = None,
    ) -> None:
        await self.demo.services.ledger.record(
            self.demo.principals["admin"],
            [
                MovementRequest(
                    kind,
                    self.demo.locations[where],
                    quantity,
                    lot_id=self.batch.lot,
                    counterparty_id=self.demo.orgs[to] if to else None,
                    reference=reference,
                    occurred_at=utcnow() - ago if ago else None,
                    reason=reason,
                )
            ],
            operation="test.chain",
        )

    async def to_hospital(self, quantity: int = 100, hospital: int = 60) -> Chain:
        """Manufacturer -> wholesaler -> hospital, both sides reported."""
        n = self.batch.number
        await self.move(K.SHIP, "MFG-01", quantity, to=WHS, reference=f"DN-{n}-1")
        await self.move(K.RECEIVE, "WHS-DC", quantity, to=MFG, reference=f"DN-{n}-1")
        await self.move(K.SHIP, "WHS-DC", hospital, to=HOSP, reference=f"DN-{n}-2")
        await self.move(K.RECEIVE, "HOSP-CP", hospital, to=WHS, reference=f"DN-{n}-2")
        return self

    async def check(self, user: str = "regulator", **kw: Any):
        return await self.demo.services.supervision_checks.check(
            self.demo.principals[user], self.batch.approval, self.batch.number, **kw
        )

    async def stored_status(self) -> tuple[str, int] | None:
        async with self.demo.services.db.read() as session:
            row = await session.get(BatchStatus, (self.batch.approval, self.batch.number))
            return None if row is None else (row.status, row.gamma)


async def add_user(demo: Demo, username: str, role: Role, organisation: str) -> Principal:
    user = await demo.services.network.create_user(
        demo.principals["admin"],
        username=username,
        full_name=username,
        password=DEMO_PASSWORD,
        roles=[role],
        organisation_id=demo.orgs[organisation],
    )
    principal = await demo.services.network.load_principal(user.id)
    demo.principals[username] = principal
    return principal


async def allow_negative(demo: Demo, code: str) -> None:
    await demo.services.network.update_location(
        demo.principals["admin"], demo.locations[code], allow_negative_stock=True
    )


def parts(check: Any) -> list[tuple[PartKind, int, int, int | None, tuple[str, ...]]]:
    return [
        (p.kind, p.quantity, p.organisation_id, p.counterparty_id, p.references)
        for p in check.analysis.parts
    ]


async def supervision_alerts(services: Services, batch: Batch) -> list[Alert]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(Alert)
            .where(
                Alert.kind == AlertKind.SUPERVISION_STATUS,
                Alert.details["batch_number"].as_string() == batch.number,
            )
            .order_by(Alert.id)
        )
        return list(rows.scalars())


# --- every status ---------------------------------------------------------------------------------


async def test_a_fully_reported_flow_is_normal(demo: Demo) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.TRANSFER_OUT, "HOSP-CP", 20, reference="TR-1")
    await chain.move(K.TRANSFER_IN, "WARD-A", 20, reference="TR-1")
    await chain.move(K.DISPENSE, "WARD-A", 7)
    await chain.move(K.RETURN, "WARD-A", 1)
    await chain.move(K.DISPOSE, "HOSP-CP", 2, reason="damaged")
    check = await chain.check()
    a = check.analysis
    assert (a.total_input, a.total_output, a.system_inventory, a.gamma) == (100, 8, 92, 0)
    assert (a.status, a.parts) == (S.NORMAL, ())
    orgs = demo.orgs
    inventory = {c.organisation_id: c.inventory for c in a.constituents}
    assert inventory == {orgs[MFG]: 0, orgs[WHS]: 40, orgs[HOSP]: 52}
    hospital = next(c for c in a.constituents if c.organisation_id == orgs[HOSP])
    assert (hospital.received, hospital.transferred_out, hospital.transferred_in) == (60, 20, 20)
    assert (hospital.dispensed, hospital.returned, hospital.disposed) == (7, 1, 2)
    assert {(e.sender_id, e.receiver_id, e.shipped, e.received) for e in a.edges} == {
        (orgs[MFG], orgs[WHS], 100, 100),
        (orgs[WHS], orgs[HOSP], 60, 60),
        (orgs[HOSP], orgs[HOSP], 20, 20),  # the ward transfer, inside the hospital
    }
    assert await chain.stored_status() == ("NORMAL", 0)
    assert await supervision_alerts(demo.services, chain.batch) == []


async def test_a_hospital_dispensing_more_than_it_received(demo: Demo) -> None:
    await allow_negative(demo, "HOSP-CP")
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.DISPENSE, "HOSP-CP", 63)
    check = await chain.check()
    assert (check.analysis.gamma, check.analysis.status) == (0, S.NEGATIVE_INVENTORY)
    assert parts(check) == [(PartKind.NEGATIVE_INVENTORY, 0, demo.orgs[HOSP], None, ())]
    assert check.explanation == [
        f"hospital {HOSP} reports inventory -3: issued more than it received"
    ]
    assert await chain.stored_status() == ("NEGATIVE_INVENTORY", 0)
    alerts = await supervision_alerts(demo.services, chain.batch)
    assert sorted((a.organisation_id or 0, a.location_id) for a in alerts) == [
        (0, None),
        (demo.orgs[HOSP], None),
    ]
    assert all(a.active and a.lot_id == chain.batch.lot for a in alerts)
    assert "NEGATIVE_INVENTORY" in alerts[0].message and "-3" in alerts[0].message


async def test_a_pharmacy_receiving_packs_no_manufacturer_produced(demo: Demo) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    ref = f"DN-{chain.batch.number}-X"
    await chain.move(K.RECEIVE, "PHARM-01", 5, to=WHS, reference=ref)
    check = await chain.check()
    assert (check.analysis.gamma, check.analysis.status) == (-5, S.ILLEGAL_INFLOW)
    assert parts(check) == [(PartKind.NOT_SHIPPED, -5, demo.orgs[PHARM], demo.orgs[WHS], (ref,))]
    assert check.explanation == [
        f"pharmacy {PHARM} received 5 from wholesaler {WHS} that wholesaler {WHS} never "
        f"reported shipping: receipt {ref}"
    ]
    edge = next(e for e in check.analysis.edges if e.receiver_id == demo.orgs[PHARM])
    assert (edge.shipped, edge.received, edge.in_transit, edge.unexplained) == (0, 5, 0, -5)
    assert await chain.stored_status() == ("ILLEGAL_INFLOW", -5)
    # Receipts naming no sender at all are illegal inflows too.
    other = await Chain.produce(demo)
    await other.move(K.SHIP, "MFG-01", 100, to=PHARM, reference="DN-P")
    await other.move(K.RECEIVE, "PHARM-01", 100, to=MFG, reference="DN-P")
    await other.move(K.RECEIVE, "PHARM-01", 3, reference="GREY-1")
    assert [(p[0], p[1], p[4]) for p in parts(await other.check())] == [
        (PartKind.UNKNOWN_SOURCE, -3, ("GREY-1",))
    ]


async def test_a_wholesaler_shipping_outside_the_network(demo: Demo) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.SHIP, "WHS-DC", 10, reference="EXPORT-7")
    check = await chain.check()
    a = check.analysis
    assert (a.gamma, a.in_transit, a.unexplained, a.status) == (10, 0, 10, S.OUTFLOW_LEAK)
    assert parts(check) == [(PartKind.LEFT_NETWORK, 10, demo.orgs[WHS], None, ("EXPORT-7",))]
    assert check.explanation == [
        f"wholesaler {WHS} shipped 10 out of the network (no receiving organisation named): "
        "shipment EXPORT-7"
    ]
    assert await chain.stored_status() == ("OUTFLOW_LEAK", 10)


async def test_a_shipment_in_its_transit_window_then_overdue(demo: Demo) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    ref = f"DN-{chain.batch.number}-3"
    await chain.move(K.SHIP, "WHS-DC", 15, to=HOSP, reference=ref)
    check = await chain.check()
    a = check.analysis
    assert (a.gamma, a.in_transit, a.unexplained, a.status) == (15, 15, 0, S.IN_TRANSIT)
    assert parts(check) == [(PartKind.IN_TRANSIT, 15, demo.orgs[WHS], demo.orgs[HOSP], (ref,))]
    edge = next(e for e in a.edges if e.shipped == 75)
    assert [(u.reference, u.quantity, u.in_window) for u in edge.shipments] == [(ref, 15, True)]
    assert await chain.stored_status() == ("IN_TRANSIT", 15)
    assert await supervision_alerts(demo.services, chain.batch) == []  # on the road: no alert

    # Four days later nobody has reported receiving it: the periodic sweep of IN_TRANSIT
    # batches finds the leak without any new movement, and alerts.
    later = utcnow() + timedelta(days=4)
    late = await chain.check(now=later)
    assert (late.analysis.status, late.analysis.unexplained) == (S.OUTFLOW_LEAK, 15)
    assert late.explanation == [
        f"wholesaler {WHS} shipped 15 to hospital {HOSP} that hospital {HOSP} never reported "
        f"receiving: shipment {ref}"
    ]
    sweep = await demo.services.supervision_checks.check_all(in_transit_only=True, now=later)
    key = (chain.batch.approval, chain.batch.number)
    assert [(c.key, c.previous, c.current) for c in sweep.changes] == [
        (key, S.IN_TRANSIT, S.OUTFLOW_LEAK)
    ]
    assert await chain.stored_status() == ("OUTFLOW_LEAK", 15)
    alerts = await supervision_alerts(demo.services, chain.batch)
    assert sorted(a.organisation_id or 0 for a in alerts) == [0, demo.orgs[WHS], demo.orgs[HOSP]]
    assert all(ref in a.message for a in alerts)

    # The receipt arrives after all: NORMAL again, and the leak alerts are resolved.
    await chain.move(K.RECEIVE, "HOSP-CP", 15, to=WHS, reference=ref)
    assert await chain.stored_status() == ("NORMAL", 0)
    assert not any(a.active for a in await supervision_alerts(demo.services, chain.batch))


async def test_a_shipment_dated_past_its_window_is_a_leak_naming_it(demo: Demo) -> None:
    chain = await Chain.produce(demo)
    n, days = chain.batch.number, timedelta(days=1)
    await chain.move(K.SHIP, "MFG-01", 100, to=WHS, reference=f"DN-{n}-1", ago=6 * days)
    await chain.move(K.RECEIVE, "WHS-DC", 100, to=MFG, reference=f"DN-{n}-1", ago=6 * days)
    await chain.move(K.SHIP, "WHS-DC", 60, to=HOSP, reference=f"DN-{n}-2", ago=5 * days)
    await chain.move(K.RECEIVE, "HOSP-CP", 60, to=WHS, reference=f"DN-{n}-2", ago=5 * days)
    ref = f"DN-{n}-OLD"
    await chain.move(K.SHIP, "WHS-DC", 12, to=HOSP, reference=ref, ago=4 * days)
    await chain.move(K.SHIP, "WHS-DC", 3, to=HOSP, reference="DN-NEW")
    check = await chain.check()
    a = check.analysis
    assert (a.gamma, a.in_transit, a.unexplained, a.status) == (15, 3, 12, S.OUTFLOW_LEAK)
    assert [(p[0], p[1], p[4]) for p in parts(check)] == [
        (PartKind.NOT_RECEIVED, 12, (ref,)),
        (PartKind.IN_TRANSIT, 3, ("DN-NEW",)),
    ]
    assert check.summary.endswith("3 in transit within the window, 12 unexplained")


async def test_an_internal_transfer_on_the_road_is_in_transit(demo: Demo) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.TRANSFER_OUT, "HOSP-CP", 9, reference="TR-9")
    check = await chain.check()
    hosp = demo.orgs[HOSP]
    assert check.analysis.status is S.IN_TRANSIT
    assert parts(check) == [(PartKind.IN_TRANSIT, 9, hosp, hosp, ("TR-9",))]
    await chain.move(K.TRANSFER_IN, "WARD-B", 9, reference="TR-9")
    assert (await chain.check()).analysis.status is S.NORMAL


# --- alerts, scope and the API --------------------------------------------------------------------

CHECK = """
query($a: String!, $b: String!) {
  supervision(approvalNumber: $a, batchNumber: $b) {
    approvalNumber batchNumber totalInput totalOutput systemInventory gamma status
    inTransit unexplained transitWindowHours summary scoped
    product { approvalNumber } lot { batchNumber }
    constituents { organisation { name } inventory received shipped dispensed }
    edges {
      sender { name } receiver { name } shipped received inTransit unexplained internal
      unmatchedShipments { reference quantity inTransitWindow shippedAt }
      unmatchedReceipts { reference quantity }
    }
    explanation { kind quantity message references organisation { name } counterparty { name } }
  }
}"""

REPORT = """
query($first: Int!, $after: String, $status: SupervisionStatus, $org: ID) {
  supervisionReport(first: $first, after: $after, status: $status, organisation: $org) {
    edges { cursor node { approvalNumber batchNumber status gamma product { name }
                          check { status explanation { kind } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""

ALERTS = """
{ alerts(first: 50, kinds: [SUPERVISION_STATUS]) { edges { node { message active details } } } }
"""


async def check_as(
    http: httpx.AsyncClient, user: str, batch: Batch, token: str | None = None
) -> dict[str, Any]:
    token = token or await token_for(http, user)
    return await gql(http, CHECK, {"a": batch.approval, "b": batch.number}, token)


async def test_status_alerts_reach_the_regulator_and_the_organisations_involved_only(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await add_user(demo, "lindenhof", Role.PHARMACIST, PHARM)
    await add_user(demo, "meddistri", Role.WAREHOUSE_MANAGER, WHS)
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.SHIP, "WHS-DC", 10, reference="EXPORT-1")  # the wholesaler leaks

    async def alert_batches(user: str) -> list[tuple[str, bool]]:
        result = await gql(client, ALERTS, token=await token_for(client, user))
        assert "errors" not in result, result
        return [
            (e["node"]["details"]["status"], e["node"]["active"])
            for e in result["data"]["alerts"]["edges"]
            if e["node"]["details"]["batch_number"] == chain.batch.number
        ]

    assert await alert_batches("regulator") == [("OUTFLOW_LEAK", True)] * 2
    assert await alert_batches("meddistri") == [("OUTFLOW_LEAK", True)]
    assert await alert_batches("pharmacist") == []  # the hospital is not involved
    assert await alert_batches("lindenhof") == []
    regulator = await gql(client, ALERTS, token=await token_for(client, "regulator"))
    messages = [e["node"]["message"] for e in regulator["data"]["alerts"]["edges"]]
    assert any("EXPORT-1" in m and "OUTFLOW_LEAK" in m for m in messages)

    # Gamma changes sign: the leak alerts are resolved, the new status alerts the hospital.
    await chain.move(K.RECEIVE, "HOSP-CP", 30, to=WHS, reference="DN-PHANTOM")
    assert await chain.stored_status() == ("ILLEGAL_INFLOW", -20)
    # The regulator sees every alert: its own, the hospital's and the wholesaler's.
    assert sorted(await alert_batches("regulator")) == [
        *[("ILLEGAL_INFLOW", True)] * 3,
        *[("OUTFLOW_LEAK", False)] * 2,
    ]
    assert sorted(await alert_batches("pharmacist")) == [("ILLEGAL_INFLOW", True)]
    assert sorted(await alert_batches("meddistri")) == [
        ("ILLEGAL_INFLOW", True),
        ("OUTFLOW_LEAK", False),
    ]
    assert await alert_batches("lindenhof") == []


async def test_scope_a_pharmacy_sees_only_its_batches_and_its_own_side(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await add_user(demo, "lindenhof", Role.PHARMACIST, PHARM)
    hospital_only = await (await Chain.produce(demo)).to_hospital()
    shared = await (await Chain.produce(demo)).to_hospital()
    await shared.move(K.SHIP, "WHS-DC", 20, to=PHARM, reference="DN-PH")
    await shared.move(K.RECEIVE, "PHARM-01", 20, to=WHS, reference="DN-PH")
    await shared.move(K.RECEIVE, "PHARM-01", 2, to=WHS, reference="DN-EXTRA")
    token = await token_for(client, "lindenhof")

    denied = await check_as(client, "lindenhof", hospital_only.batch, token)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN", denied
    with pytest.raises(DomainError) as error:
        await hospital_only.check("lindenhof")
    assert error.value.code is ErrorCode.FORBIDDEN

    mine = (await check_as(client, "lindenhof", shared.batch, token))["data"]["supervision"]
    assert (mine["status"], mine["gamma"], mine["scoped"]) == ("ILLEGAL_INFLOW", -2, True)
    assert (mine["totalInput"], mine["systemInventory"]) == (100, 102)  # batch-wide figures
    assert [c["organisation"]["name"] for c in mine["constituents"]] == [PHARM]
    assert [(e["sender"]["name"], e["receiver"]["name"]) for e in mine["edges"]] == [(WHS, PHARM)]
    assert mine["edges"][0]["unmatchedReceipts"] == [{"reference": "DN-EXTRA", "quantity": 2}]
    assert [(x["kind"], x["quantity"]) for x in mine["explanation"]] == [("NOT_SHIPPED", -2)]

    everything = (await check_as(client, "regulator", shared.batch))["data"]["supervision"]
    assert everything["scoped"] is False
    assert len(everything["constituents"]) == 4 and len(everything["edges"]) == 3
    assert everything["product"]["approvalNumber"] == shared.batch.approval
    assert everything["lot"]["batchNumber"] == shared.batch.number
    hospital = (await check_as(client, "pharmacist", shared.batch))["data"]["supervision"]
    assert {(e["sender"]["name"], e["receiver"]["name"]) for e in hospital["edges"]} == {
        (WHS, HOSP)
    }
    assert hospital["explanation"] == []  # the hospital explains nothing of this gamma

    # No TRACE_READ at all; an unknown batch; a malformed batch number.
    nurse = await check_as(client, "nurse", shared.batch)
    assert nurse["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    unknown = await check_as(client, "regulator", Batch(shared.batch.approval, "NOPE1", 0))
    assert unknown["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    bad = await check_as(client, "regulator", Batch(shared.batch.approval, "has space", 0))
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_INPUT"

    # The report: the pharmacy lists only its own batches, and never another organisation's.
    report = await gql(client, REPORT, {"first": 10}, token)
    rows = report["data"]["supervisionReport"]["edges"]
    assert [r["node"]["batchNumber"] for r in rows] == [shared.batch.number]
    assert rows[0]["node"]["check"]["explanation"] == [{"kind": "NOT_SHIPPED"}]
    other = await gql(client, REPORT, {"first": 10, "org": _org_gid(demo.orgs[HOSP])}, token)
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def _org_gid(org_id: int) -> str:
    from tests.conftest import gid

    return gid("Organisation", org_id)


async def test_report_pages_filters_and_leaves_out_normal_batches(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await allow_negative(demo, "HOSP-CP")
    normal = await (await Chain.produce(demo)).to_hospital()
    leaks = []
    for _ in range(3):
        chain = await (await Chain.produce(demo)).to_hospital()
        await chain.move(K.SHIP, "WHS-DC", 1, reference="EXP")
        leaks.append(chain)
    negative = await (await Chain.produce(demo)).to_hospital()
    await negative.move(K.DISPENSE, "HOSP-CP", 61)
    token = await token_for(client, "regulator")
    seen, after = [], None
    while True:
        page = await gql(client, REPORT, {"first": 2, "after": after}, token)
        assert "errors" not in page, page
        data = page["data"]["supervisionReport"]
        seen += [(e["node"]["batchNumber"], e["node"]["status"]) for e in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(
        [(c.batch.number, "OUTFLOW_LEAK") for c in leaks]
        + [(negative.batch.number, "NEGATIVE_INVENTORY")]
    )
    assert normal.batch.number not in {b for b, _ in seen}
    keys = [(c.batch.approval, c.batch.number) for c in [*leaks, negative]]
    assert [b for b, _ in seen] == [b for _, b in sorted(keys)]  # key order
    only = await gql(client, REPORT, {"first": 10, "status": "NEGATIVE_INVENTORY"}, token)
    assert [e["node"]["batchNumber"] for e in only["data"]["supervisionReport"]["edges"]] == [
        negative.batch.number
    ]
    normal_rows = await gql(client, REPORT, {"first": 10, "status": "NORMAL"}, token)
    assert normal.batch.number in {
        e["node"]["batchNumber"] for e in normal_rows["data"]["supervisionReport"]["edges"]
    }
    by_pharmacy = await gql(client, REPORT, {"first": 10, "org": _org_gid(demo.orgs[PHARM])}, token)
    assert by_pharmacy["data"]["supervisionReport"]["edges"] == []


async def test_a_full_sweep_rebuilds_every_status(demo: Demo) -> None:
    leak = await (await Chain.produce(demo)).to_hospital()
    await leak.move(K.SHIP, "WHS-DC", 4, reference="EXP")
    normal = await (await Chain.produce(demo)).to_hospital()
    async with demo.services.db.write() as session:  # as if the statuses were never kept
        await session.execute(BatchStatus.__table__.delete())
    result = await demo.services.supervision_checks.check_all(chunk_size=1)
    assert result.checked == 2
    assert dict(result.by_status) == {S.OUTFLOW_LEAK: 1, S.NORMAL: 1}
    assert await leak.stored_status() == ("OUTFLOW_LEAK", 4)
    assert await normal.stored_status() == ("NORMAL", 0)
    again = await demo.services.supervision_checks.check_all()
    assert again.checked == 2 and again.changes == []


# --- recomputation from the ledger ------------------------------------------------------------

HISTORY_KINDS = list(MovementKind)
HISTORY_LOCATIONS = ["MFG-01", "WHS-DC", "HOSP-CP", "WARD-A", "PHARM-01"]
HISTORY_PARTIES = [None, MFG, WHS, HOSP, PHARM]

history = st.lists(
    st.tuples(
        st.sampled_from(HISTORY_KINDS),
        st.sampled_from(HISTORY_LOCATIONS),
        st.integers(0, 1),  # which of two lots
        st.integers(-5, 15),  # quantity (signed for ADJUST/COUNT; others refuse <= 0)
        st.sampled_from(HISTORY_PARTIES),
        st.integers(0, 200),  # hours ago
    ),
    min_size=1,
    max_size=25,
)


async def _random_history(url: str, ops: list[tuple[Any, ...]]) -> None:
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    try:
        async with services.db.read() as session:
            locations = {x.code: x.id for x in (await session.execute(select(Location))).scalars()}
            orgs = {o.name: o.id for o in (await session.execute(select(Organisation))).scalars()}
            admin_id = (
                await session.execute(select(User.id).where(User.username == "admin"))
            ).scalar_one()
        admin = await services.network.load_principal(admin_id)
        for code in HISTORY_LOCATIONS:  # so most outflows are accepted
            await services.network.update_location(
                admin, locations[code], allow_negative_stock=True
            )
        product_id = await first_product_id(services)
        lots = []
        for _ in range(2):
            produced = await services.ledger.record(
                admin,
                [
                    MovementRequest(
                        K.PRODUCE,
                        locations["MFG-01"],
                        20,
                        new_lot=NewLot(
                            product_id,
                            f"H{uuid.uuid4().hex[:8].upper()}",
                            utcnow().date() + timedelta(days=300),
                            orgs[MFG],
                        ),
                    )
                ],
                operation="property",
            )
            lots.append(produced.movements[0].lot_id)
        for kind, code, lot, quantity, party, hours in ops:
            request = MovementRequest(
                kind,
                locations[code],
                quantity,
                lot_id=lots[lot],
                counterparty_id=orgs[party] if party else None,
                reference=f"R{hours % 3}",
                reason="property test",
                occurred_at=utcnow() - timedelta(hours=hours),
            )
            try:
                await services.ledger.record(admin, [request], operation="property")
            except DomainError as error:
                assert error.code is ErrorCode.INVALID_INPUT, error
        result = await services.supervision_checks.recompute(chunk_size=7)
        assert result.differences == []
        assert result.batches >= 2
    finally:
        await services.close()


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=history)
def test_running_totals_agree_with_a_recomputation_after_random_histories(
    database_url: str, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_random_history(database_url, ops))


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APOTHECA_DATABASE_URL": database_url, "APOTHECA_SECRET_KEY": TEST_SECRET}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_hand_edited_total_is_reported_and_can_be_repaired(
    demo: Demo, database_url: str
) -> None:
    chain = await (await Chain.produce(demo)).to_hospital()
    await chain.move(K.DISPENSE, "HOSP-CP", 5)
    other = await (await Chain.produce(demo)).to_hospital()
    agree = run_cli(database_url, "supervision-recompute")
    assert agree.returncode == 0, agree.stderr
    assert agree.stdout.startswith("2 batches agree (")
    async with demo.services.db.write() as session:
        C = BatchConstituentTotal
        await session.execute(
            update(C)
            .where(C.batch_number == chain.batch.number, C.organisation_id == demo.orgs[HOSP])
            .values(dispensed=C.dispensed + 3)
        )
    result = await demo.services.supervision_checks.recompute()
    assert [
        (d.batch_number, d.organisations, d.column, d.stored, d.recomputed)
        for d in result.differences
    ] == [(chain.batch.number, (demo.orgs[HOSP],), "dispensed", 8, 5)]
    differ = run_cli(database_url, "supervision-recompute")
    assert differ.returncode == 1
    assert f"batch {chain.batch.number} ({chain.batch.approval}) differs" in differ.stderr
    assert f"constituent {HOSP} ({demo.orgs[HOSP]}) dispensed: running total 8, ledger 5" in (
        differ.stderr
    )
    assert "1 of 2 batches differ" in differ.stderr
    assert other.batch.number not in differ.stderr
    repaired = run_cli(database_url, "supervision-recompute", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired 1 of 2 batches" in repaired.stdout
    assert (await demo.services.supervision_checks.recompute()).differences == []
    assert (await chain.check()).analysis.status is S.NORMAL


async def test_status_rows_are_locked_so_concurrent_writers_see_each_other(demo: Demo) -> None:
    """Receipts at two organisations of one batch, at once: the stored status is the one of
    both committed reports, whichever commits last."""
    chain = await Chain.produce(demo)
    n = chain.batch.number
    await chain.move(K.SHIP, "MFG-01", 50, to=HOSP, reference=f"A-{n}")
    await chain.move(K.SHIP, "MFG-01", 50, to=PHARM, reference=f"B-{n}")
    assert await chain.stored_status() == ("IN_TRANSIT", 100)
    await asyncio.gather(
        chain.move(K.RECEIVE, "HOSP-CP", 50, to=MFG, reference=f"A-{n}"),
        chain.move(K.RECEIVE, "PHARM-01", 50, to=MFG, reference=f"B-{n}"),
    )
    assert await chain.stored_status() == ("NORMAL", 0)


def test_transit_window_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHECA_TRANSIT_WINDOW_HOURS", "5")
    monkeypatch.setenv("APOTHECA_SECRET_KEY", TEST_SECRET)
    assert Settings.from_env().transit_window_hours == 5
    assert Settings().transit_window_hours == 72
