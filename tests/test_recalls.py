"""Recalls on both databases: lots become RECALLED in one transaction, every holder gets exactly
one RECALL alert, the ledger then refuses to issue the lot but still lets it be destroyed, a lot
is recalled once, and only pharmacists (for their hospital), regulators and admins may recall."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from server.alerts.models import Alert, AlertKind
from server.catalog.models import Lot, LotStatus
from server.core.audit import AuditEvent, verify
from server.core.db import utcnow
from server.core.errors import DomainError
from server.core.numbering import document_number, next_sequence
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.supervision.models import Recall, RecallLot
from tests.conftest import (
    Caller,
    Demo,
    balance_of,
    first_product_id,
    gid,
    gql,
    row_counts,
)

K = MovementKind
ERRORS = "errors { code field message }"
RECALL = f"""
mutation($lots: [ID!], $product: ID, $batch: String, $reason: String!, $reference: String) {{
  recallLots(input: {{lots: $lots, product: $product, batchNumber: $batch, reason: $reason,
                     reference: $reference}}) {{
    recall {{
      id reference reason initiatedBy {{ username fullName }} initiatedAt
      lots {{ previousStatus lot {{ id status batchNumber }} }}
      alerts {{ kind message location {{ code }} lot {{ id }} details }}
      holders {{ quantity location {{ code }} lot {{ id }} alert {{ id kind }} }}
    }}
    {ERRORS}
  }}
}}"""
RECALLS = """
query($lot: ID, $after: String) {
  recalls(first: 1, lot: $lot, after: $after) {
    edges { node { id reference lots { lot { id } } holders { quantity location { code } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
DISPENSE = f"""
mutation($input: DispenseStockInput!) {{
  dispenseStock(input: $input) {{ movements {{ quantity }} {ERRORS} }}
}}"""
DISPOSE = f"""
mutation($input: DisposeStockInput!) {{
  disposeStock(input: $input) {{ movements {{ kind quantity reason balanceAfter }} {ERRORS} }}
}}"""
TRACE = "query($lot: ID!) { traceLot(lot: $lot) { lot { status } backward { quantity } } }"

WHS_NAME = "MedDistri Wholesale"
MFG_NAME = "Helvepharm Manufacturing AG"
HOSP_NAME = "St. Aurelia General Hospital"


async def stocked_lot(
    demo: Demo, *, product_id: int | None = None, batch: str | None = None, to_hospital: bool = True
) -> int:
    """Produced 100, shipped to the wholesaler; 60 on to the central pharmacy, 10 of it to
    ward A. Holders then: WHS-DC 40, HOSP-CP 50, WARD-A 10 (MFG-01 holds nothing)."""
    loc, org = demo.locations, demo.orgs
    product_id = product_id or await first_product_id(demo.services)
    batch = batch or f"RC{uuid.uuid4().hex[:8].upper()}"
    admin = demo.principals["admin"]
    ledger = demo.services.ledger
    new_lot = NewLot(product_id, batch, utcnow().date().replace(year=utcnow().year + 2))
    first = await ledger.record(
        admin, [MovementRequest(K.PRODUCE, loc["MFG-01"], 100, new_lot=new_lot)], operation="t"
    )
    lot = first.movements[0].lot_id
    ref = f"DN-{batch}"
    steps = [
        MovementRequest(
            K.SHIP, loc["MFG-01"], 100, lot_id=lot, counterparty_id=org[WHS_NAME], reference=ref
        ),
        MovementRequest(
            K.RECEIVE, loc["WHS-DC"], 100, lot_id=lot, counterparty_id=org[MFG_NAME], reference=ref
        ),
    ]
    if to_hospital:
        steps += [
            MovementRequest(
                K.SHIP, loc["WHS-DC"], 60, lot_id=lot, counterparty_id=org[HOSP_NAME], reference=ref
            ),
            MovementRequest(
                K.RECEIVE,
                loc["HOSP-CP"],
                60,
                lot_id=lot,
                counterparty_id=org[WHS_NAME],
                reference=ref,
            ),
            MovementRequest(K.TRANSFER_OUT, loc["HOSP-CP"], 10, lot_id=lot, reference=f"T-{batch}"),
            MovementRequest(K.TRANSFER_IN, loc["WARD-A"], 10, lot_id=lot, reference=f"T-{batch}"),
        ]
    for step in steps:
        await ledger.record(admin, [step], operation="t")
    return lot


class Recaller(Caller):
    """A caller who recalls (the reason defaults to a plausible one)."""

    async def recall(self, **variables: Any) -> dict[str, Any]:
        variables.setdefault("reason", "sterility failure at the manufacturer")
        body = await self.raw(RECALL, **variables)
        assert "errors" not in body, body
        return dict(body["data"]["recallLots"])


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


async def lot_status(demo: Demo, lot_id: int) -> LotStatus:
    async with demo.services.db.read() as session:
        return (await session.get(Lot, lot_id)).status


async def recall_alerts(demo: Demo) -> list[Alert]:
    async with demo.services.db.read() as session:
        return list(
            (
                await session.execute(
                    select(Alert).where(Alert.kind == AlertKind.RECALL).order_by(Alert.id)
                )
            ).scalars()
        )


async def world(demo: Demo) -> dict[str, Any]:
    """What a refused recall must leave as it was."""
    state: dict[str, Any] = dict(await row_counts(demo.services))
    async with demo.services.db.read() as session:
        state["lots"] = (await session.execute(select(Lot.id, Lot.status).order_by(Lot.id))).all()
        state["recalls"] = (await session.execute(select(Recall.id))).all()
        state["recall_lots"] = (await session.execute(select(RecallLot.lot_id))).all()
        state["alerts"] = (await session.execute(select(Alert.id))).all()
    return state


# --- pure ----------------------------------------------------------------------------------------


def next_reference(year: int, existing: list[str]) -> str:
    return document_number("RC", year, next_sequence("RC", year, existing))


def test_reference_numbering() -> None:
    assert next_reference(2026, []) == "RC-2026-00001"
    assert next_reference(2026, ["RC-2026-00001", "RC-2026-00041", "RC-2025-00099"]) == (
        "RC-2026-00042"
    )
    assert next_reference(2026, ["RC-2026-URGENT", "RC-2026-123456"]) == "RC-2026-123457"


# --- recalling -----------------------------------------------------------------------------------


async def test_recall_by_lot_quarantines_it_and_alerts_every_holder(
    demo: Demo, as_user: Any
) -> None:
    lot = await stocked_lot(demo)
    pharmacist = await as_user("pharmacist", Recaller)
    payload = await pharmacist.recall(lots=[gid("Lot", lot)])
    assert payload["errors"] == [], payload
    recall = payload["recall"]
    year = utcnow().year
    assert re.fullmatch(rf"RC-{year}-\d{{5}}", recall["reference"])
    assert recall["reason"] == "sterility failure at the manufacturer"
    assert recall["initiatedBy"] == {"username": "pharmacist", "fullName": "Paula Pharmacist"}
    assert recall["lots"] == [
        {
            "previousStatus": "RELEASED",
            "lot": {
                "id": gid("Lot", lot),
                "status": "RECALLED",
                "batchNumber": recall["lots"][0]["lot"]["batchNumber"],
            },
        }
    ]
    assert await lot_status(demo, lot) is LotStatus.RECALLED

    # Exactly one alert per location holding stock; MFG-01 (empty) gets none.
    held = {h["location"]["code"]: h["quantity"] for h in recall["holders"]}
    assert held == {"HOSP-CP": 50, "WARD-A": 10, "WHS-DC": 40}
    stored = await recall_alerts(demo)
    assert sorted((a.location_id, a.lot_id) for a in stored) == sorted(
        (demo.locations[code], lot) for code in held
    )
    batch = recall["lots"][0]["lot"]["batchNumber"]
    for alert in recall["alerts"]:
        assert alert["kind"] == "RECALL"
        assert batch in alert["message"]
        assert recall["reference"] in alert["message"]
        assert "sterility failure" in alert["message"]
        assert (
            f"{held[alert['location']['code']]} held at {alert['location']['code']}"
            in (alert["message"])
        )
        assert alert["details"]["recall_reference"] == recall["reference"]
    assert all(a.active for a in stored)

    async with demo.services.db.read() as session:
        events = (
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action.in_(["recall.create", "lot.recall"]))
                )
            )
            .scalars()
            .all()
        )
        assert (await verify(session)).ok
    by_action = {e.action: e for e in events}
    assert by_action["lot.recall"].before == {"status": "RELEASED"}
    assert by_action["lot.recall"].entity_id == str(lot)
    assert by_action["recall.create"].actor_name == "pharmacist"
    assert len(by_action["recall.create"].after["holders"]) == 3
    assert by_action["recall.create"].reason == "sterility failure at the manufacturer"


async def test_after_a_recall_the_lot_cannot_be_issued_but_can_be_destroyed(
    demo: Demo, as_user: Any
) -> None:
    lot = await stocked_lot(demo)
    assert (await (await as_user("regulator", Recaller)).recall(lots=[gid("Lot", lot)]))[
        "errors"
    ] == []
    loc = demo.locations
    nurse = await as_user("nurse", Recaller)
    dispense = await nurse.raw(
        DISPENSE,
        input={
            "location": gid("Location", loc["WARD-A"]),
            "lot": gid("Lot", lot),
            "quantity": 1,
            "patientReference": "ENC-77",
            "idempotencyKey": uuid.uuid4().hex,
        },
    )
    payload = dispense["data"]["dispenseStock"]
    assert codes(payload) == ["LOT_NOT_ISSUABLE"], payload
    assert "recalled" in payload["errors"][0]["message"]
    # FEFO never picks it either: nothing else of the product is on the ward.
    product = await first_product_id(demo.services)
    fefo = await nurse.raw(
        DISPENSE,
        input={
            "location": gid("Location", loc["WARD-A"]),
            "product": gid("Product", product),
            "quantity": 1,
            "idempotencyKey": uuid.uuid4().hex,
        },
    )
    assert codes(fefo["data"]["dispenseStock"]) == ["INSUFFICIENT_STOCK"]

    admin = demo.principals["admin"]
    for request in (
        MovementRequest(K.SHIP, loc["WHS-DC"], 5, lot_id=lot, counterparty_id=demo.orgs[HOSP_NAME]),
        MovementRequest(K.TRANSFER_OUT, loc["HOSP-CP"], 5, lot_id=lot, reference="T-X"),
        MovementRequest(K.DISPENSE, loc["HOSP-CP"], 1, lot_id=lot),
    ):
        with pytest.raises(DomainError) as refused:
            await demo.services.ledger.record(admin, [request], operation="t")
        assert refused.value.code == "LOT_NOT_ISSUABLE", request.kind
    assert await balance_of(demo.services, loc["WARD-A"], lot) == 10

    disposed = await nurse.raw(
        DISPOSE,
        input={
            "location": gid("Location", loc["WARD-A"]),
            "lot": gid("Lot", lot),
            "quantity": 10,
            "reason": "RECALLED",
            "note": "returned to pharmacy for destruction",
            "idempotencyKey": uuid.uuid4().hex,
        },
    )
    payload = disposed["data"]["disposeStock"]
    assert payload["errors"] == [], payload
    assert payload["movements"] == [
        {
            "kind": "DISPOSE",
            "quantity": -10,
            "reason": "RECALLED: returned to pharmacy for destruction",
            "balanceAfter": 0,
        }
    ]
    assert await balance_of(demo.services, loc["WARD-A"], lot) == 0


async def test_recall_by_product_and_batch_touches_only_that_product(
    demo: Demo, as_user: Any
) -> None:
    """A batch number is unique per product: two products may share one."""
    first = await first_product_id(demo.services)
    second = await first_product_id(demo.services, offset=1)
    batch = f"SH{uuid.uuid4().hex[:6].upper()}"
    lot_a = await stocked_lot(demo, product_id=first, batch=batch)
    lot_b = await stocked_lot(demo, product_id=second, batch=batch)
    regulator = await as_user("regulator", Recaller)
    payload = await regulator.recall(product=gid("Product", second), batch=f"  {batch} ")
    assert payload["errors"] == [], payload
    assert [x["lot"]["id"] for x in payload["recall"]["lots"]] == [gid("Lot", lot_b)]
    assert await lot_status(demo, lot_b) is LotStatus.RECALLED
    assert await lot_status(demo, lot_a) is LotStatus.RELEASED
    assert {a.lot_id for a in await recall_alerts(demo)} == {lot_b}
    assert len(payload["recall"]["holders"]) == 3

    unknown = await regulator.recall(product=gid("Product", first), batch="NOPE1")
    assert codes(unknown) == ["NOT_FOUND"] and unknown["errors"][0]["field"] == "batchNumber"


async def test_several_lots_in_one_recall_one_alert_per_holder_and_lot(
    demo: Demo, as_user: Any
) -> None:
    lots = [await stocked_lot(demo), await stocked_lot(demo)]
    payload = await (await as_user("admin", Recaller)).recall(
        lots=[gid("Lot", x) for x in lots], reference="FDA-2026-0042"
    )
    assert payload["errors"] == [], payload
    assert payload["recall"]["reference"] == "FDA-2026-0042"
    assert sorted(x["lot"]["id"] for x in payload["recall"]["lots"]) == sorted(
        gid("Lot", x) for x in lots
    )
    pairs = [(a.location_id, a.lot_id) for a in await recall_alerts(demo)]
    assert len(pairs) == len(set(pairs)) == 6  # 3 holders x 2 lots
    assert [await lot_status(demo, x) for x in lots] == [LotStatus.RECALLED] * 2


async def test_recalling_twice_names_the_earlier_recall_and_changes_nothing(
    demo: Demo, as_user: Any
) -> None:
    lot = await stocked_lot(demo)
    fresh = await stocked_lot(demo)
    regulator = await as_user("regulator", Recaller)
    first = await regulator.recall(lots=[gid("Lot", lot)], reason="label mix-up")
    reference = first["recall"]["reference"]
    before = await world(demo)
    for lots in ([lot], [fresh, lot]):  # all or nothing: the fresh lot is not recalled either
        again = await regulator.recall(lots=[gid("Lot", x) for x in lots])
        assert again["recall"] is None
        assert codes(again) == ["LOT_ALREADY_RECALLED"], again
        assert reference in again["errors"][0]["message"]
        assert "label mix-up" in again["errors"][0]["message"]
    assert await world(demo) == before
    assert await lot_status(demo, fresh) is LotStatus.RELEASED

    second = await regulator.recall(lots=[gid("Lot", fresh)])
    number = int(reference.rsplit("-", 1)[1])
    assert second["recall"]["reference"] == f"{reference[:8]}{number + 1:05d}"
    taken = await regulator.recall(lots=[gid("Lot", await stocked_lot(demo))], reference=reference)
    assert codes(taken) == ["DUPLICATE"]


async def test_a_quarantined_lot_remembers_its_previous_status(demo: Demo, as_user: Any) -> None:
    lot = await stocked_lot(demo)
    async with demo.services.db.write() as session:
        (await session.get(Lot, lot)).status = LotStatus.QUARANTINED
    payload = await (await as_user("regulator", Recaller)).recall(lots=[gid("Lot", lot)])
    assert payload["recall"]["lots"][0]["previousStatus"] == "QUARANTINED"
    async with demo.services.db.read() as session:
        (row,) = (await session.execute(select(RecallLot))).scalars().all()
    assert (row.lot_id, row.previous_status) == (lot, "QUARANTINED")


# --- who may recall ------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["nurse", "auditor", "warehouse", "supplier"])
async def test_only_pharmacists_regulators_and_admins_recall(
    demo: Demo, as_user: Any, username: str
) -> None:
    lot = await stocked_lot(demo)
    before = await world(demo)
    payload = await (await as_user(username, Recaller)).recall(lots=[gid("Lot", lot)])
    assert codes(payload) == ["FORBIDDEN"], payload
    assert await world(demo) == before


async def test_auditor_traces_but_cannot_recall(demo: Demo, as_user: Any) -> None:
    lot = await stocked_lot(demo)
    auditor = await as_user("auditor", Recaller)
    traced = await auditor.raw(TRACE, lot=gid("Lot", lot))
    assert "errors" not in traced, traced
    assert traced["data"]["traceLot"]["backward"][0]["quantity"] == 100
    assert codes(await auditor.recall(lots=[gid("Lot", lot)])) == ["FORBIDDEN"]


async def test_a_pharmacist_recalls_for_the_hospital_a_regulator_anywhere(
    demo: Demo, as_user: Any
) -> None:
    """A lot that never reached the hospital is outside the hospital pharmacist's reach."""
    wholesale_only = await stocked_lot(demo, to_hospital=False)
    refused = await (await as_user("pharmacist", Recaller)).recall(
        lots=[gid("Lot", wholesale_only)]
    )
    assert codes(refused) == ["FORBIDDEN"], refused
    assert await lot_status(demo, wholesale_only) is LotStatus.RELEASED
    allowed = await (await as_user("regulator", Recaller)).recall(lots=[gid("Lot", wholesale_only)])
    assert allowed["errors"] == []
    assert [h["location"]["code"] for h in allowed["recall"]["holders"]] == ["WHS-DC"]


# --- bad input -----------------------------------------------------------------------------------


async def test_bad_input_is_refused_field_by_field(demo: Demo, as_user: Any) -> None:
    lot = await stocked_lot(demo)
    product = await first_product_id(demo.services)
    admin = await as_user("admin", Recaller)
    before = await world(demo)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"lots": [gid("Lot", lot)], "reason": "   "}, "INVALID_INPUT", "reason"),
        ({"lots": [gid("Lot", lot)], "reason": "x" * 501}, "INVALID_INPUT", "reason"),
        ({"lots": []}, "INVALID_INPUT", "lots"),
        ({}, "INVALID_INPUT", "lots"),
        ({"product": gid("Product", product)}, "INVALID_INPUT", "lots"),
        (
            {"lots": [gid("Lot", lot)], "product": gid("Product", product), "batch": "B1"},
            "INVALID_INPUT",
            "lots",
        ),
        ({"lots": [gid("Lot", 999_999)]}, "NOT_FOUND", "lots"),
        ({"lots": [gid("Product", lot)]}, "INVALID_ID", "lots"),
        ({"product": gid("Product", 999_999), "batch": "B1"}, "NOT_FOUND", "product"),
        (
            {"product": gid("Product", product), "batch": "has space"},
            "INVALID_INPUT",
            "batchNumber",
        ),
        ({"lots": [gid("Lot", lot)], "reference": "r" * 65}, "INVALID_INPUT", "reference"),
    ]
    for variables, code, field in cases:
        payload = await admin.recall(**variables)
        assert payload["recall"] is None, variables
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], variables
    assert await world(demo) == before
    anonymous = await gql(admin.http, RECALL, {"lots": [gid("Lot", lot)], "reason": "x"})
    assert codes(anonymous["data"]["recallLots"]) == ["UNAUTHENTICATED"]


# --- reading recalls -----------------------------------------------------------------------------


async def test_recalls_query_pages_and_scopes_holders(demo: Demo, as_user: Any) -> None:
    lots = [await stocked_lot(demo), await stocked_lot(demo)]
    regulator = await as_user("regulator", Recaller)
    references = [
        (await regulator.recall(lots=[gid("Lot", x)]))["recall"]["reference"] for x in lots
    ]

    first = await regulator.raw(RECALLS)
    page = first["data"]["recalls"]
    assert [e["node"]["reference"] for e in page["edges"]] == [references[1]]  # newest first
    assert page["pageInfo"]["hasNextPage"] is True
    second = await regulator.raw(RECALLS, after=page["pageInfo"]["endCursor"])
    assert [e["node"]["reference"] for e in second["data"]["recalls"]["edges"]] == [references[0]]
    only = await regulator.raw(RECALLS, lot=gid("Lot", lots[0]))
    (edge,) = only["data"]["recalls"]["edges"]
    assert edge["node"]["lots"] == [{"lot": {"id": gid("Lot", lots[0])}}]
    assert {h["location"]["code"] for h in edge["node"]["holders"]} == {
        "WHS-DC",
        "HOSP-CP",
        "WARD-A",
    }

    # The ward nurse sees the recall, and only the holders she can see: her ward.
    nurse = await as_user("nurse", Recaller)
    mine = await nurse.raw(RECALLS, lot=gid("Lot", lots[0]))
    (edge,) = mine["data"]["recalls"]["edges"]
    assert edge["node"]["holders"] == [{"quantity": 10, "location": {"code": "WARD-A"}}]
    node = await nurse.raw(
        "query($id: ID!) { node(id: $id) { ... on Recall { reference } } }", id=edge["node"]["id"]
    )
    assert node["data"]["node"] == {"reference": references[0]}
    supplier = await (await as_user("supplier", Recaller)).raw(RECALLS)
    assert supplier["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_concurrent_recalls_get_distinct_references_and_one_wins_a_lot(
    demo: Demo,
) -> None:
    import asyncio

    service = demo.services.supervision
    regulator, admin = demo.principals["regulator"], demo.principals["admin"]
    a, b = await stocked_lot(demo), await stocked_lot(demo)
    results = await asyncio.gather(
        service.recall_lots(regulator, reason="first", lot_ids=[a]),
        service.recall_lots(admin, reason="second", lot_ids=[b]),
    )
    references = {r.recall.reference for r in results}
    assert len(references) == 2
    shared = await stocked_lot(demo)
    outcomes = await asyncio.gather(
        service.recall_lots(regulator, reason="twin 1", lot_ids=[shared]),
        service.recall_lots(admin, reason="twin 2", lot_ids=[shared]),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], DomainError) and errors[0].code == "LOT_ALREADY_RECALLED"
    async with demo.services.db.read() as session:
        rows = (await session.execute(select(RecallLot).where(RecallLot.lot_id == shared))).all()
    assert len(rows) == 1
    assert len([x for x in await recall_alerts(demo) if x.lot_id == shared]) == 3
