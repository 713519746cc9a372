"""Scanning over GraphQL on both databases: a nurse's scan moves stock through the ledger, every
refusal is a typed error that leaves no trace, a serial leaves stock only once (and a second
attempt raises an alert that outlives the refusal), and replays change nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.catalog.demo_data import make_gtin14
from server.catalog.models import Lot, ProductGtin
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.core.errors import DomainError, ErrorCode
from server.scanning.gs1 import GS
from server.scanning.models import DecommissionedSerial
from server.scanning.service import ScanAction, ScanCommand
from tests.conftest import (
    Demo,
    balance_of,
    first_product_id,
    gid,
    gql,
    receive,
    row_counts,
    token_for,
)

RECORD = """
mutation($input: RecordScanInput!) {
  recordScan(input: $input) {
    scan {
      valid symbology gtin ndc batchNumber expiryDate serial expired daysToExpiry quantityOnHand
      errors { code message }
      product { id name }
      lot { id batchNumber expiryDate }
    }
    movements { id kind quantity balanceAfter patientReference }
    replayed
    errors { code field message }
  }
}
"""

PARSE = """
query($barcode: String!, $location: ID) {
  parseBarcode(barcode: $barcode, location: $location) {
    valid symbology gtin ndc batchNumber expiryDate serial expired daysToExpiry quantityOnHand
    errors { code field message }
    product { id name }
    lot { id batchNumber }
  }
}
"""

ALERTS = """
query { alerts(first: 10) { edges { node { kind message details location { code } } } } }
"""

UNKNOWN_GTIN = make_gtin14("0761234599999")  # valid check digit, not in the catalogue


def datamatrix(gtin: str, batch: str | None, expiry: date | None, serial: str | None) -> str:
    """GS1 DataMatrix content as a camera scanner returns it (]d2 prefix, GS separators)."""
    text = f"]d201{gtin}"
    if expiry is not None:
        text += f"17{expiry:%y%m%d}"
    if batch is not None:
        text += f"10{batch}{GS}"
    if serial is not None:
        text += f"21{serial}"
    return text.rstrip(GS)


def human_readable(gtin: str, batch: str, expiry: date, serial: str) -> str:
    return f"(01){gtin}(17){expiry:%y%m%d}(10){batch}(21){serial}"


def digital_link(gtin: str, batch: str, expiry: date, serial: str) -> str:
    return f"https://id.gs1.org/01/{gtin}/10/{batch}/21/{serial}?17={expiry:%y%m%d}"


async def _gtin(demo: Demo, product_id: int) -> str:
    async with demo.services.db.read() as session:
        return (
            await session.execute(
                select(ProductGtin.gtin)
                .where(ProductGtin.product_id == product_id)
                .order_by(ProductGtin.id)
                .limit(1)
            )
        ).scalar_one()


async def _lot(demo: Demo, lot_id: int) -> Lot:
    async with demo.services.db.read() as session:
        lot = await session.get(Lot, lot_id)
    assert lot is not None
    return lot


async def scan(
    http: httpx.AsyncClient,
    token: str,
    barcode: str,
    location_id: int,
    action: str = "DISPENSE",
    *,
    key: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = await gql(
        http,
        RECORD,
        {
            "input": {
                "barcode": barcode,
                "location": gid("Location", location_id),
                "action": action,
                "idempotencyKey": key or f"scan-{uuid.uuid4().hex}",
                **extra,
            }
        },
        token,
    )
    assert "errors" not in body, body
    return dict(body["data"]["recordScan"])


def _refused(payload: dict[str, Any], code: str) -> str:
    assert payload["movements"] == [], payload
    assert [e["code"] for e in payload["errors"]] == [code], payload
    return str(payload["errors"][0]["message"])


@pytest.fixture
async def ward_lot(demo: Demo) -> tuple[int, int, str, date]:
    """10 packs of a fresh batch in WARD-A: (product id, lot id, GTIN, expiry)."""
    product_id = await first_product_id(demo.services)
    lot_id = await receive(demo, "WARD-A", 10, batch="WA-1", product_id=product_id)
    lot = await _lot(demo, lot_id)
    return product_id, lot_id, await _gtin(demo, product_id), lot.expiry_date


async def test_nurse_dispenses_by_datamatrix_human_readable_and_digital_link(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    product_id, lot_id, gtin, expiry = ward_lot
    ward = demo.locations["WARD-A"]
    nurse = await token_for(client, "nurse")
    forms = [
        (datamatrix(gtin, "WA-1", expiry, "S-DM"), "GS1_DATAMATRIX"),
        (datamatrix(gtin, "WA-1", expiry, "S-GS").replace(GS, "<GS>"), "GS1_DATAMATRIX"),
        (human_readable(gtin, "WA-1", expiry, "S-HRI"), "GS1_HUMAN_READABLE"),
        (digital_link(gtin, "WA-1", expiry, "S-DL"), "GS1_DIGITAL_LINK"),
    ]
    for left, (barcode, symbology) in enumerate(forms, start=1):
        payload = await scan(client, nurse, barcode, ward, patientReference="ENC-7")
        assert payload["errors"] == []
        assert payload["replayed"] is False
        [movement] = payload["movements"]
        assert (movement["kind"], movement["quantity"], movement["balanceAfter"]) == (
            "DISPENSE",
            -1,
            10 - left,
        )
        assert movement["patientReference"] == "ENC-7"
        parsed = payload["scan"]
        assert parsed["valid"] is True
        assert parsed["symbology"] == symbology
        assert (parsed["gtin"], parsed["batchNumber"]) == (gtin, "WA-1")
        assert parsed["expiryDate"] == expiry.isoformat()
        assert parsed["product"]["id"] == gid("Product", product_id)
        assert parsed["lot"]["id"] == gid("Lot", lot_id)
        assert parsed["expired"] is False
        assert parsed["daysToExpiry"] == (expiry - utcnow().date()).days
    assert await balance_of(demo.services, ward, lot_id) == 6
    async with demo.services.db.read() as session:
        serials = set((await session.execute(select(DecommissionedSerial.serial))).scalars().all())
        audited = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "serial.decommission")
            )
        ).scalar_one()
    assert serials == {"S-DM", "S-GS", "S-HRI", "S-DL"}
    assert audited == 4


async def test_parse_barcode_previews_without_recording(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    product_id, lot_id, gtin, expiry = ward_lot
    nurse = await token_for(client, "nurse")
    before = await row_counts(demo.services)
    ward = gid("Location", demo.locations["WARD-A"])

    async def parse(barcode: str, location: str | None = None) -> dict[str, Any]:
        body = await gql(client, PARSE, {"barcode": barcode, "location": location}, nurse)
        assert "errors" not in body, body
        return dict(body["data"]["parseBarcode"])

    known = await parse(datamatrix(gtin, "WA-1", expiry, "P1"), ward)
    assert known["valid"] is True and known["errors"] == []
    assert known["lot"] == {"id": gid("Lot", lot_id), "batchNumber": "WA-1"}
    assert known["quantityOnHand"] == 10
    assert known["serial"] == "P1"

    new_batch = await parse(datamatrix(gtin, "NEW-9", expiry, None))
    assert new_batch["valid"] is True
    assert new_batch["product"]["id"] == gid("Product", product_id)
    assert new_batch["lot"] is None

    unknown = await parse(datamatrix(UNKNOWN_GTIN, "X", expiry, None))
    assert unknown["valid"] is False
    assert [e["code"] for e in unknown["errors"]] == ["UNKNOWN_PRODUCT"]
    assert unknown["gtin"] == UNKNOWN_GTIN and unknown["product"] is None

    mismatch = await parse(datamatrix(gtin, "WA-1", expiry + timedelta(days=31), None))
    assert [e["code"] for e in mismatch["errors"]] == ["EXPIRY_MISMATCH"]

    broken = await parse(f"01{gtin[:9]}")
    assert broken["valid"] is False and broken["gtin"] is None
    assert broken["errors"][0]["code"] == "BARCODE_INVALID"
    assert "needs 14" in broken["errors"][0]["message"]

    ndc = await parse(make_gtin14("0030045044021")[1:])
    assert ndc["ndc"] == "0045044021" and ndc["symbology"] == "EAN_13"

    # Another ward's stock is not the nurse's to read.
    other = await gql(
        client,
        PARSE,
        {"barcode": gtin, "location": gid("Location", demo.locations["WARD-B"])},
        nurse,
    )
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await row_counts(demo.services) == before


async def test_receive_of_an_unknown_batch_creates_the_lot_with_the_barcode_expiry(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    product_id = await first_product_id(demo.services)
    gtin = await _gtin(demo, product_id)
    pharmacist = await token_for(client, "pharmacist")
    cp = demo.locations["HOSP-CP"]
    expiry = date(utcnow().year + 2, 6, 30)
    barcode = f"]d201{gtin}17{expiry:%y%m}00" + f"10RX-NEW{GS}"  # day 00: end of month
    payload = await scan(client, pharmacist, barcode, cp, "RECEIVE", quantity=12)
    assert payload["errors"] == []
    [movement] = payload["movements"]
    assert (movement["kind"], movement["quantity"]) == ("RECEIVE", 12)
    assert payload["scan"]["lot"]["batchNumber"] == "RX-NEW"
    assert payload["scan"]["lot"]["expiryDate"] == expiry.isoformat()
    async with demo.services.db.read() as session:
        lot = (
            await session.execute(
                select(Lot).where(Lot.product_id == product_id, Lot.batch_number == "RX-NEW")
            )
        ).scalar_one()
    assert lot.expiry_date == expiry
    assert await balance_of(demo.services, cp, lot.id) == 12

    # A new batch whose barcode has no expiry cannot be created from the scan.
    before = await row_counts(demo.services)
    refused = await scan(client, pharmacist, f"01{gtin}10RX-NOEXP", cp, "RECEIVE")
    assert "no expiry date" in _refused(refused, "UNKNOWN_BATCH")
    assert await row_counts(demo.services) == before


async def test_refusals_are_typed_and_leave_no_trace(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    _, lot_id, gtin, expiry = ward_lot
    ward = demo.locations["WARD-A"]
    nurse = await token_for(client, "nurse")
    before = await row_counts(demo.services)

    unknown_batch = await scan(client, nurse, datamatrix(gtin, "NOPE-1", expiry, None), ward)
    assert "NOPE-1" in _refused(unknown_batch, "UNKNOWN_BATCH")
    assert unknown_batch["scan"]["batchNumber"] == "NOPE-1"

    wrong_expiry = expiry + timedelta(days=40)
    mismatch = await scan(client, nurse, datamatrix(gtin, "WA-1", wrong_expiry, None), ward)
    message = _refused(mismatch, "EXPIRY_MISMATCH")
    assert expiry.isoformat() in message and wrong_expiry.isoformat() in message

    unknown = await scan(client, nurse, datamatrix(UNKNOWN_GTIN, "WA-1", None, None), ward)
    assert UNKNOWN_GTIN in _refused(unknown, "UNKNOWN_PRODUCT")

    for garbage, says in [
        ("", "empty"),
        (f"01{gtin[:-1]}0", "bad check digit"),
        (f"01{gtin}1727", "truncated"),
        ("hello", "not a GS1 barcode"),
    ]:
        invalid = await scan(client, nurse, garbage, ward)
        assert says in _refused(invalid, "BARCODE_INVALID")
        assert invalid["scan"]["valid"] is False

    no_batch = await scan(client, nurse, gtin, ward, "RETURN")
    assert "no batch number" in _refused(no_batch, "INVALID_INPUT")

    serial_many = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, "S9"), ward, quantity=2
    )
    assert "quantity must be 1" in _refused(serial_many, "INVALID_INPUT")

    dispose_without_reason = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, None), ward, "DISPOSE"
    )
    _refused(dispose_without_reason, "INVALID_INPUT")

    too_many = await scan(client, nurse, datamatrix(gtin, "WA-1", expiry, None), ward, quantity=11)
    _refused(too_many, "INSUFFICIENT_STOCK")

    assert await row_counts(demo.services) == before
    assert await balance_of(demo.services, ward, lot_id) == 10


async def test_nurse_cannot_scan_in_another_ward(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    product_id, _, gtin, expiry = ward_lot
    await receive(demo, "WARD-B", 5, batch="WA-1", product_id=product_id, expiry_days=365)
    nurse = await token_for(client, "nurse")
    before = await row_counts(demo.services)
    payload = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, "SB-1"), demo.locations["WARD-B"]
    )
    _refused(payload, "FORBIDDEN")
    # A nurse receives nothing, even in her own ward.
    receipt = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, None), demo.locations["WARD-A"], "RECEIVE"
    )
    _refused(receipt, "FORBIDDEN")
    assert await row_counts(demo.services) == before


async def test_expired_lot_is_not_dispensed(demo: Demo, client: httpx.AsyncClient) -> None:
    product_id = await first_product_id(demo.services)
    lot_id = await receive(demo, "WARD-A", 3, batch="OLD-1", expiry_days=-5, product_id=product_id)
    lot = await _lot(demo, lot_id)
    gtin = await _gtin(demo, product_id)
    nurse = await token_for(client, "nurse")
    before = await row_counts(demo.services)
    barcode = datamatrix(gtin, "OLD-1", lot.expiry_date, "EXP-1")
    payload = await scan(client, nurse, barcode, demo.locations["WARD-A"])
    assert lot.expiry_date.isoformat() in _refused(payload, "EXPIRED_LOT")
    assert payload["scan"]["expired"] is True
    assert payload["scan"]["daysToExpiry"] == -5
    assert await row_counts(demo.services) == before
    # Disposing of it is what should happen, and that is allowed.
    disposed = await scan(
        client, nurse, barcode, demo.locations["WARD-A"], "DISPOSE", reason="EXPIRED"
    )
    assert disposed["errors"] == []
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot_id) == 2


async def test_a_serial_leaves_stock_once_and_a_second_try_raises_an_alert(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    _, lot_id, gtin, expiry = ward_lot
    ward = demo.locations["WARD-A"]
    nurse = await token_for(client, "nurse")
    barcode = datamatrix(gtin, "WA-1", expiry, "PACK-0001")
    first = await scan(client, nurse, barcode, ward)
    assert first["errors"] == []
    before = await row_counts(demo.services)

    again = await scan(client, nurse, human_readable(gtin, "WA-1", expiry, "PACK-0001"), ward)
    message = _refused(again, "SERIAL_ALREADY_DECOMMISSIONED")
    assert "WARD-A" in message and utcnow().date().isoformat() in message
    disposal = await scan(client, nurse, barcode, ward, "DISPOSE", reason="DAMAGED")
    _refused(disposal, "SERIAL_ALREADY_DECOMMISSIONED")
    assert await row_counts(demo.services) == before
    assert await balance_of(demo.services, ward, lot_id) == 9

    pharmacist = await token_for(client, "pharmacist")
    alerts = await gql(client, ALERTS, token=pharmacist)
    twice = [
        e["node"]
        for e in alerts["data"]["alerts"]["edges"]
        if e["node"]["kind"] == "SERIAL_DECOMMISSIONED_TWICE"
    ]
    assert len(twice) == 1  # one live alert per (GTIN, serial), however many attempts
    assert twice[0]["details"]["serial"] == "PACK-0001"
    assert twice[0]["details"]["first_location"] == "WARD-A"
    assert twice[0]["location"]["code"] == "WARD-A"

    # The patient brings the pack back: it re-enters stock and may be dispensed again.
    returned = await scan(client, nurse, barcode, ward, "RETURN", reason="not used")
    assert returned["errors"] == []
    assert await balance_of(demo.services, ward, lot_id) == 10
    again_after_return = await scan(client, nurse, barcode, ward)
    assert again_after_return["errors"] == []
    async with demo.services.db.read() as session:
        actions = (
            (
                await session.execute(
                    select(AuditEvent.action)
                    .where(AuditEvent.action.like("serial.%"))
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["serial.decommission", "serial.recommission", "serial.decommission"]


async def test_concurrent_scans_of_one_serial_decommission_it_once(
    demo: Demo, ward_lot: tuple[int, int, str, date]
) -> None:
    _, lot_id, gtin, expiry = ward_lot
    ward = demo.locations["WARD-A"]
    barcode = datamatrix(gtin, "WA-1", expiry, "RACE-1")

    async def attempt(n: int) -> str:
        command = ScanCommand(barcode, ward, ScanAction.DISPENSE, idempotency_key=f"race-{n}")
        try:
            await demo.services.scanning.record(demo.principals["nurse"], command)
        except DomainError as error:
            return error.code.value
        return "OK"

    outcomes = await asyncio.gather(*[attempt(n) for n in range(4)])
    assert sorted(outcomes) == ["OK"] + [ErrorCode.SERIAL_ALREADY_DECOMMISSIONED.value] * 3
    assert await balance_of(demo.services, ward, lot_id) == 9


async def test_replaying_a_scan_returns_the_first_result_and_changes_nothing(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    _, lot_id, gtin, expiry = ward_lot
    ward = demo.locations["WARD-A"]
    nurse = await token_for(client, "nurse")
    barcode = datamatrix(gtin, "WA-1", expiry, "REPLAY-1")
    first = await scan(client, nurse, barcode, ward, key="outbox-7")
    after_first = await row_counts(demo.services)
    replays = [await scan(client, nurse, barcode, ward, key="outbox-7") for _ in range(2)]
    for replay in replays:
        assert replay["replayed"] is True
        assert replay["errors"] == []
        assert replay["movements"] == first["movements"]
        assert replay["scan"]["lot"] == first["scan"]["lot"]
    assert await row_counts(demo.services) == after_first
    assert await balance_of(demo.services, ward, lot_id) == 9
    reused = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, "REPLAY-2"), ward, key="outbox-7"
    )
    _refused(reused, "IDEMPOTENCY_KEY_REUSED")


async def test_count_reports_the_system_quantity_and_records_nothing(
    demo: Demo, client: httpx.AsyncClient, ward_lot: tuple[int, int, str, date]
) -> None:
    _, lot_id, gtin, expiry = ward_lot
    nurse = await token_for(client, "nurse")
    before = await row_counts(demo.services)
    payload = await scan(
        client, nurse, datamatrix(gtin, "WA-1", expiry, "C-1"), demo.locations["WARD-A"], "COUNT"
    )
    assert payload["errors"] == [] and payload["movements"] == []
    assert payload["scan"]["quantityOnHand"] == 10
    assert payload["scan"]["lot"]["id"] == gid("Lot", lot_id)
    assert await row_counts(demo.services) == before
    async with demo.services.db.read() as session:
        assert (
            await session.execute(select(func.count()).select_from(DecommissionedSerial))
        ).scalar_one() == 0


async def test_a_plain_ean_dispenses_first_expired_first_out(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    product_id = await first_product_id(demo.services)
    late = await receive(demo, "WARD-A", 2, expiry_days=300, product_id=product_id)
    early = await receive(demo, "WARD-A", 2, expiry_days=40, product_id=product_id)
    gtin = await _gtin(demo, product_id)
    nurse = await token_for(client, "nurse")
    payload = await scan(client, nurse, gtin[1:], demo.locations["WARD-A"], quantity=3)
    assert payload["errors"] == []
    assert payload["scan"]["symbology"] == "EAN_13"
    assert payload["scan"]["lot"] is None  # two lots were used
    assert [m["quantity"] for m in payload["movements"]] == [-2, -1]
    assert await balance_of(demo.services, demo.locations["WARD-A"], early) == 0
    assert await balance_of(demo.services, demo.locations["WARD-A"], late) == 1


async def test_a_decommissioned_serial_cannot_be_received_back(demo, client) -> None:
    """A dispensed pack turning up in a delivery is a falsification signal, not stock."""
    from datetime import timedelta

    from server.catalog.demo_data import DEMO_PRODUCTS, make_gtin14
    from server.core.db import utcnow
    from tests.conftest import first_product_id

    product_id = await first_product_id(demo.services)
    gtin = make_gtin14(DEMO_PRODUCTS[0].gtin_bodies[0])
    expiry = utcnow().date() + timedelta(days=300)
    await receive(demo, "WARD-A", 3, batch="SERIALRX", product_id=product_id, expiry_days=300)
    barcode = f"]d201{gtin}17{expiry:%y%m%d}10SERIALRX\x1d21PACK-0001"
    mutation = """mutation($input: RecordScanInput!) {
      recordScan(input: $input) { movements { id } errors { code message } } }"""
    nurse = await token_for(client, "nurse")
    pharmacist = await token_for(client, "pharmacist")
    ward = gid("Location", demo.locations["WARD-A"])
    dispensed = await gql(
        client,
        mutation,
        {
            "input": {
                "barcode": barcode,
                "location": ward,
                "action": "DISPENSE",
                "idempotencyKey": "rx-1",
            }
        },
        nurse,
    )
    assert dispensed["data"]["recordScan"]["errors"] == []
    received = await gql(
        client,
        mutation,
        {
            "input": {
                "barcode": barcode,
                "location": gid("Location", demo.locations["HOSP-CP"]),
                "action": "RECEIVE",
                "idempotencyKey": "rx-2",
            }
        },
        pharmacist,
    )
    errors = received["data"]["recordScan"]["errors"]
    assert errors and errors[0]["code"] == "SERIAL_ALREADY_DECOMMISSIONED"
    assert "WARD-A" in errors[0]["message"]
