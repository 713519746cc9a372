"""Controlled drugs on both databases: disposals, adjustments and count variances need a
witness (a second, different pharmacist or nurse of the organisation re-entering their
password, throttled like sign-in), dispenses need a patient reference, the register's running
balance is the ledger's, its CSV and PDF exports parse and keep to scope, and a count that
differs from the register raises an alert."""

from __future__ import annotations

import csv
import io
import re
import zlib
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.alerts.models import Alert, AlertKind
from server.catalog.models import Product
from server.controlled.models import MovementWitness
from server.controlled.service import running_balances
from server.core.audit import AuditEvent
from server.core.security import Role
from server.inventory.models import Balance
from server.network.models import OrganisationKind
from tests.conftest import DEMO_PASSWORD, Caller, Demo, gid, receive, row_counts, token_for

ERRORS = "errors { code field message }"
DISPOSE = f"""
mutation($location: ID!, $lot: ID!, $qty: Int!, $key: String!, $witness: WitnessInput) {{
  disposeStock(input: {{ location: $location, lot: $lot, quantity: $qty, reason: DAMAGED,
                         idempotencyKey: $key, witness: $witness }}) {{
    movements {{ id kind quantity balanceAfter }} replayed {ERRORS}
  }}
}}"""
ADJUST = f"""
mutation($location: ID!, $lot: ID!, $qty: Int!, $key: String!, $witness: WitnessInput) {{
  adjustStock(input: {{ location: $location, lot: $lot, quantity: $qty, reason: "found",
                        idempotencyKey: $key, witness: $witness }}) {{
    movements {{ id quantity }} {ERRORS}
  }}
}}"""
DISPENSE = f"""
mutation($location: ID!, $product: ID!, $qty: Int!, $key: String!, $patient: String) {{
  dispenseStock(input: {{ location: $location, product: $product, quantity: $qty,
                          idempotencyKey: $key, patientReference: $patient }}) {{
    movements {{ id quantity patientReference }} {ERRORS}
  }}
}}"""
REGISTER = """
query($product: ID!, $location: ID!, $from: Date, $to: Date) {
  controlledRegister(product: $product, location: $location, from: $from, to: $to) {
    openingBalance closingBalance periodFrom periodTo generatedAt
    product { name strength } location { code } organisation { name }
    entries {
      kind quantity balance batchNumber reason reference patientReference
      patientReferenceHidden occurredAt movement { id balanceAfter }
      recordedBy { username } witnessedBy { username }
    }
  }
}"""
START = f"""
mutation($location: ID!) {{
  startCount(input: {{ location: $location }}) {{ stockCount {{ id }} {ERRORS} }}
}}"""
RECORD = f"""
mutation($count: ID!, $lot: ID!, $qty: Int!) {{
  recordCountLine(input: {{ id: $count, lot: $lot, countedQuantity: $qty }}) {{ {ERRORS} }}
}}"""
FINALIZE = f"""
mutation($count: ID!, $witness: WitnessInput) {{
  finalizeCount(input: {{ id: $count, witness: $witness }}) {{
    movements {{ id quantity }} {ERRORS}
  }}
}}"""

WITNESS = {"username": "pharmacist", "password": DEMO_PASSWORD}


async def _product(demo: Demo, name: str) -> int:
    async with demo.services.db.read() as session:
        return int(
            (
                await session.execute(
                    select(Product.id).where(Product.name == name).order_by(Product.id).limit(1)
                )
            ).scalar_one()
        )


async def _oxycodone(demo: Demo) -> int:
    return await _product(demo, "Oxycodone hydrochloride")


async def _witnesses(demo: Demo) -> dict[int, int]:
    async with demo.services.db.read() as session:
        rows = await session.execute(
            select(MovementWitness.movement_id, MovementWitness.witness_id)
        )
        return dict(rows.all())


def _dispose_vars(demo: Demo, lot: int, key: str, witness: Any = None, qty: int = 1) -> Any:
    return {
        "location": gid("Location", demo.locations["WARD-A"]),
        "lot": gid("Lot", lot),
        "qty": qty,
        "key": key,
        "witness": witness,
    }


async def test_a_controlled_disposal_needs_a_valid_witness(demo: Demo, as_user: Any) -> None:
    oxy = await _oxycodone(demo)
    lot = await receive(demo, "WARD-A", 10, product_id=oxy)
    # A pharmacist of another organisation knows her password but is not of this hospital.
    other = await demo.services.network.create_organisation(
        demo.principals["admin"], name="Other Hospital", kind=OrganisationKind.HOSPITAL
    )
    await demo.services.network.create_user(
        None,
        username="pharmacist.other",
        full_name="Otto Other",
        password=DEMO_PASSWORD,
        roles=[Role.PHARMACIST],
        organisation_id=other.id,
    )
    nurse: Caller = await as_user("nurse")
    before = await row_counts(demo.services)

    message = await nurse.refused(DISPOSE, "WITNESS_REQUIRED", **_dispose_vars(demo, lot, "d1"))
    assert "Oxycodone" in message and "witness" in message
    wrong = {"username": "pharmacist", "password": "not-the-password"}
    await nurse.refused(DISPOSE, "WITNESS_INVALID", **_dispose_vars(demo, lot, "d2", wrong))
    unknown = {"username": "nobody.here", "password": DEMO_PASSWORD}
    await nurse.refused(DISPOSE, "WITNESS_INVALID", **_dispose_vars(demo, lot, "d3", unknown))
    itself = {"username": "nurse", "password": DEMO_PASSWORD}
    await nurse.refused(DISPOSE, "WITNESS_SAME_USER", **_dispose_vars(demo, lot, "d4", itself))
    warehouse = {"username": "warehouse", "password": DEMO_PASSWORD}
    message = await nurse.refused(
        DISPOSE, "WITNESS_INVALID", **_dispose_vars(demo, lot, "d5", warehouse)
    )
    assert "may not witness" in message
    outsider = {"username": "pharmacist.other", "password": DEMO_PASSWORD}
    message = await nurse.refused(
        DISPOSE, "WITNESS_INVALID", **_dispose_vars(demo, lot, "d6", outsider)
    )
    assert "organisation" in message
    assert await row_counts(demo.services) == before  # every refusal wrote nothing

    done = await nurse.ok(DISPOSE, **_dispose_vars(demo, lot, "d7", WITNESS, qty=2))
    (movement,) = done["movements"]
    movement_id = _pk(movement["id"])
    assert movement["balanceAfter"] == 8
    assert (await _witnesses(demo))[movement_id] == demo.users["pharmacist"]
    async with demo.services.db.read() as session:
        audited = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.entity_type == "Movement", AuditEvent.entity_id == str(movement_id)
                )
            )
        ).scalar_one()
    assert audited.after["witness_id"] == demo.users["pharmacist"]
    # A replay of the key returns the first result, even without re-entering the witness.
    replay = await nurse.ok(DISPOSE, **_dispose_vars(demo, lot, "d7", None, qty=2))
    assert replay["replayed"] is True


async def test_only_controlled_drugs_need_a_witness_and_adjustments_need_one_too(
    demo: Demo, as_user: Any
) -> None:
    plain = await _product(demo, "Paracetamol")
    lot = await receive(demo, "WARD-A", 5, product_id=plain)
    nurse: Caller = await as_user("nurse")
    await nurse.ok(DISPOSE, **_dispose_vars(demo, lot, "p1"))

    oxy_lot = await receive(demo, "WARD-A", 5, product_id=await _oxycodone(demo))
    pharmacist: Caller = await as_user("pharmacist")
    adjust = {
        "location": gid("Location", demo.locations["WARD-A"]),
        "lot": gid("Lot", oxy_lot),
        "qty": 1,
        "key": "a1",
    }
    await pharmacist.refused(ADJUST, "WITNESS_REQUIRED", **adjust)
    witness = {"username": "nurse", "password": DEMO_PASSWORD}
    await pharmacist.ok(ADJUST, **adjust, witness=witness)


async def test_a_controlled_dispense_needs_a_patient_reference(demo: Demo, as_user: Any) -> None:
    oxy = await _oxycodone(demo)
    await receive(demo, "WARD-A", 4, product_id=oxy)
    nurse: Caller = await as_user("nurse")
    args = {"location": gid("Location", demo.locations["WARD-A"]), "product": gid("Product", oxy)}
    await nurse.refused(DISPENSE, "PATIENT_REFERENCE_REQUIRED", **args, qty=1, key="x1")
    await nurse.refused(
        DISPENSE, "PATIENT_REFERENCE_REQUIRED", **args, qty=1, key="x2", patient="  "
    )
    done = await nurse.ok(DISPENSE, **args, qty=1, key="x3", patient="ENC-42")
    assert done["movements"][0]["patientReference"] == "ENC-42"


FEED = f"""
mutation($input: RecordMovementsInput!) {{
  recordMovements(input: $input) {{ movements {{ id kind quantity }} replayed {ERRORS} }}
}}"""


async def test_a_feed_carries_witnesses_and_names_the_item_a_rule_refuses(
    demo: Demo, as_user: Any
) -> None:
    """recordMovements (cabinets, pharmacy systems): a controlled disposal in a batch takes
    its witness per item; a missing witness, a wrong one or a dispense without a patient
    reference refuses the whole batch and names the item; nothing is half-written."""
    oxy_lot = await receive(demo, "WARD-A", 10, product_id=await _oxycodone(demo))
    plain_lot = await receive(demo, "WARD-A", 10, product_id=await _product(demo, "Paracetamol"))
    location = gid("Location", demo.locations["WARD-A"])
    nurse: Caller = await as_user("nurse")

    def item(lot: int, kind: str, **more: Any) -> dict[str, Any]:
        return {"kind": kind, "location": location, "lot": gid("Lot", lot), "quantity": 1} | more

    plain = item(plain_lot, "DISPENSE")
    waste = item(oxy_lot, "DISPOSE", reason="DAMAGED")
    before = await row_counts(demo.services)

    async def refused(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        payload = await nurse.call(FEED, input={"movements": items, "idempotencyKey": key})
        assert not payload["movements"]
        (error,) = payload["errors"]
        return dict(error)

    error = await refused([plain, waste], "f1")
    assert (error["code"], error["field"]) == ("WITNESS_REQUIRED", "movements.1.witness")
    wrong = {"username": "pharmacist", "password": "not-it"}
    error = await refused([plain, plain, waste | {"witness": wrong}], "f2")
    assert (error["code"], error["field"]) == ("WITNESS_INVALID", "movements.2.witness")
    dispense = item(oxy_lot, "DISPENSE")
    error = await refused([plain, dispense, waste | {"witness": WITNESS}], "f3")
    assert (error["code"], error["field"]) == (
        "PATIENT_REFERENCE_REQUIRED",
        "movements.1.patientReference",
    )
    assert await row_counts(demo.services) == before

    good = [plain, waste | {"witness": WITNESS}, dispense | {"patientReference": "ENC-7"}]
    done = await nurse.ok(FEED, input={"movements": good, "idempotencyKey": "f4"})
    assert [m["kind"] for m in done["movements"]] == ["DISPENSE", "DISPOSE", "DISPENSE"]
    witnessed = await _witnesses(demo)
    assert witnessed[_pk(done["movements"][1]["id"])] == demo.users["pharmacist"]
    assert _pk(done["movements"][0]["id"]) not in witnessed
    replay = await nurse.ok(FEED, input={"movements": good, "idempotencyKey": "f4"})
    assert replay["replayed"] is True


async def test_failed_witness_passwords_are_throttled_like_sign_in(
    demo: Demo, as_user: Any, client: httpx.AsyncClient
) -> None:
    lot = await receive(demo, "WARD-A", 3, product_id=await _oxycodone(demo))
    nurse: Caller = await as_user("nurse")
    wrong = {"username": "pharmacist", "password": "guess"}
    for attempt in range(5):
        await nurse.refused(
            DISPOSE, "WITNESS_INVALID", **_dispose_vars(demo, lot, f"t{attempt}", wrong)
        )
    # Locked now: even the right password waits, and so does her sign-in from this address.
    await nurse.refused(DISPOSE, "RATE_LIMITED", **_dispose_vars(demo, lot, "t9", WITNESS))
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "pharmacist", "password": DEMO_PASSWORD},
    )
    assert response.status_code == 429


async def test_concurrent_witness_guesses_are_counted_before_hashing(
    demo: Demo, as_user: Any
) -> None:
    """Eight wrong witness passwords at once: each counts before it is hashed, so only the
    pair's allowance (5) is checked at all and the rest are refused as rate-limited."""
    import asyncio
    from collections import Counter

    lot = await receive(demo, "WARD-A", 3, product_id=await _oxycodone(demo))
    nurse: Caller = await as_user("nurse")
    wrong = {"username": "pharmacist", "password": "guess"}
    payloads = await asyncio.gather(
        *(nurse.call(DISPOSE, **_dispose_vars(demo, lot, f"c{n}", wrong)) for n in range(8))
    )
    codes = Counter(p["errors"][0]["code"] for p in payloads)
    assert codes == {"WITNESS_INVALID": 5, "RATE_LIMITED": 3}, codes


async def test_the_register_runs_the_ledger_balance(demo: Demo, as_user: Any) -> None:
    oxy = await _oxycodone(demo)
    lot_a = await receive(demo, "WARD-A", 10, product_id=oxy)
    lot_b = await receive(demo, "WARD-A", 6, product_id=oxy, expiry_days=500)
    nurse: Caller = await as_user("nurse")
    args = {"location": gid("Location", demo.locations["WARD-A"]), "product": gid("Product", oxy)}
    await nurse.ok(DISPENSE, **args, qty=12, key="r1", patient="ENC-7")  # across both lots
    await nurse.ok(DISPOSE, **_dispose_vars(demo, lot_b, "r2", WITNESS, qty=1))

    pharmacist: Caller = await as_user("pharmacist")
    register = await pharmacist.call(REGISTER, **args)
    entries = register["entries"]
    assert [e["kind"] for e in entries] == ["RECEIVE", "RECEIVE", "DISPENSE", "DISPENSE", "DISPOSE"]
    assert register["openingBalance"] == 0
    assert [e["balance"] for e in entries] == running_balances(0, [e["quantity"] for e in entries])
    async with demo.services.db.read() as session:
        on_hand = sum(
            (
                await session.execute(
                    select(Balance.quantity).where(
                        Balance.location_id == demo.locations["WARD-A"],
                        Balance.lot_id.in_([lot_a, lot_b]),
                    )
                )
            ).scalars()
        )
    assert register["closingBalance"] == entries[-1]["balance"] == on_hand == 3
    assert entries[-1]["witnessedBy"] == {"username": "pharmacist"}
    assert entries[-1]["recordedBy"] == {"username": "nurse"}
    assert entries[2]["patientReference"] == "ENC-7"
    assert register["product"]["name"] == "Oxycodone hydrochloride"

    # A period after everything: opening = closing = the balance, no entries.
    later = await pharmacist.call(REGISTER, **args, **{"from": "2999-01-01"})
    assert later["entries"] == [] and later["openingBalance"] == later["closingBalance"] == 3

    # Scope: a nurse of ward B may not read ward A's register; non-controlled is refused.
    nurse_b: Caller = await as_user("nurse.b")
    assert "scope" in await nurse_b.forbidden_read(REGISTER, **args)
    body = await pharmacist.raw(
        REGISTER, **{**args, "product": gid("Product", await _product(demo, "Paracetamol"))}
    )
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert "not a controlled drug" in body["errors"][0]["message"]


def _pk(global_id: str) -> int:
    from strawberry.relay import GlobalID

    return int(GlobalID.from_id(global_id).node_id)


def _pdf_text(data: bytes) -> str:
    """The page content of an fpdf2 document: its deflated streams, inflated."""
    text = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            # A decompressor object, not zlib.decompress: the regex may take a final \r of
            # the compressed bytes for the line end, and the text is all there before it.
            text.append(zlib.decompressobj().decompress(match.group(1)).decode("latin-1"))
        except zlib.error:
            text.append(match.group(1).decode("latin-1"))
    return "\n".join(text)


async def test_exports_csv_and_pdf_in_scope(
    demo: Demo, as_user: Any, client: httpx.AsyncClient
) -> None:
    oxy = await _oxycodone(demo)
    lot = await receive(demo, "WARD-A", 8, product_id=oxy)
    nurse: Caller = await as_user("nurse")
    await nurse.ok(DISPOSE, **_dispose_vars(demo, lot, "e1", WITNESS, qty=2))
    params = {"product": gid("Product", oxy), "location": gid("Location", demo.locations["WARD-A"])}
    token = await token_for(client, "pharmacist")
    auth = {"Authorization": f"Bearer {token}"}

    response = await client.get("/reports/controlled-register.csv", params=params, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["kind"] for r in rows] == ["RECEIVE", "DISPOSE"]
    assert [int(r["balance"]) for r in rows] == [8, 6]
    assert "pharmacist" in rows[1]["witness"] and "nurse" in rows[1]["recorded_by"]

    response = await client.get("/reports/controlled-register.pdf", params=params, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    text = _pdf_text(response.content)
    assert "Oxycodone hydrochloride" in text
    assert "Opening balance" in text and "Closing balance" in text and "Page 1 of" in text

    assert (await client.get("/reports/controlled-register.csv", params=params)).status_code == 401
    other = {"Authorization": f"Bearer {await token_for(client, 'nurse.b')}"}
    refused = await client.get("/reports/controlled-register.pdf", params=params, headers=other)
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    bad = await client.get(
        "/reports/controlled-register.csv", params={**params, "from": "yesterday"}, headers=auth
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["field"] == "from"


async def test_a_count_that_differs_from_the_register_needs_a_witness_and_alerts(
    demo: Demo, as_user: Any
) -> None:
    oxy = await _oxycodone(demo)
    lot = await receive(demo, "WARD-A", 10, product_id=oxy)
    nurse: Caller = await as_user("nurse")
    count = (await nurse.ok(START, location=gid("Location", demo.locations["WARD-A"])))[
        "stockCount"
    ]["id"]
    await nurse.ok(RECORD, count=count, lot=gid("Lot", lot), qty=7)
    before = await row_counts(demo.services)
    await nurse.refused(FINALIZE, "WITNESS_REQUIRED", count=count)
    assert await row_counts(demo.services) == before
    done = await nurse.ok(FINALIZE, count=count, witness=WITNESS)
    (movement,) = done["movements"]
    assert movement["quantity"] == -3
    assert (await _witnesses(demo))[_pk(movement["id"])] == demo.users["pharmacist"]
    async with demo.services.db.read() as session:
        alerts = (
            (
                await session.execute(
                    select(Alert).where(Alert.kind == AlertKind.CONTROLLED_DISCREPANCY)
                )
            )
            .scalars()
            .all()
        )
    (alert,) = alerts
    assert alert.lot_id == lot and alert.location_id == demo.locations["WARD-A"]
    assert alert.details["variance"] == -3 and alert.details["register_before"] == 10
    assert "fewer than the register" in alert.message


@pytest.mark.parametrize("opening", [0, 5])
def test_running_balances_accumulate(opening: int) -> None:
    assert running_balances(opening, [3, -1, -2]) == [opening + 3, opening + 2, opening]
    assert running_balances(opening, []) == []


SCAN = f"""
mutation($input: RecordScanInput!) {{
  recordScan(input: $input) {{ movements {{ id quantity }} {ERRORS} }}
}}"""


async def test_a_scanned_controlled_waste_takes_the_witness_too(demo: Demo, as_user: Any) -> None:
    from server.catalog.models import ProductGtin

    oxy = await _oxycodone(demo)
    await receive(demo, "WARD-A", 3, product_id=oxy, batch="SCANCD1")
    async with demo.services.db.read() as session:
        gtin = (
            await session.execute(select(ProductGtin.gtin).where(ProductGtin.product_id == oxy))
        ).scalar_one()
    nurse: Caller = await as_user("nurse")
    scan = {
        "barcode": f"(01){gtin}(10)SCANCD1",
        "location": gid("Location", demo.locations["WARD-A"]),
        "action": "DISPOSE",
        "reason": "DAMAGED",
    }
    await nurse.refused(SCAN, "WITNESS_REQUIRED", input={**scan, "idempotencyKey": "s1"})
    await nurse.refused(
        SCAN,
        "WITNESS_INVALID",
        input={**scan, "idempotencyKey": "s2", "witness": {**WITNESS, "password": "nope"}},
    )
    done = await nurse.ok(SCAN, input={**scan, "idempotencyKey": "s3", "witness": WITNESS})
    (movement,) = done["movements"]
    assert (await _witnesses(demo))[_pk(movement["id"])] == demo.users["pharmacist"]
    await nurse.refused(
        SCAN,
        "PATIENT_REFERENCE_REQUIRED",
        input={**scan, "action": "DISPENSE", "reason": None, "idempotencyKey": "s4"},
    )
