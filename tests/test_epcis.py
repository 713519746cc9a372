"""EPCIS 2.0: movements exported as ObjectEvents that validate against GS1's JSON schema, with
deterministic hash-based IDs; documents of constituents that do not use Apotheca imported as
their movements (idempotent, every unmappable event listed back with its reason); the
standard's own examples imported or reported cleanly; and a round trip into an empty database
that reproduces the same supervision totals. Pure mapping first, then both databases."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.catalog.models import Lot, Product, ProductGtin
from server.config import Settings
from server.core.gs1 import gtin_check_digit
from server.core.migrate import upgrade
from server.demo import seed_demo
from server.integrations import epcis
from server.integrations.epcis import ExportMovement, PartyRef, Unmappable
from server.inventory.models import Balance, MovementKind
from server.inventory.service import MovementRequest
from server.network.models import Location, Organisation, OrganisationKind, User
from server.services import Services
from server.supervision.models import BatchConstituentTotal, BatchEdgeTotal
from server.supervision.totals import COUNTERS
from tests.conftest import (
    ROOT,
    RUN_ID,
    TEST_SECRET,
    Demo,
    Template,
    _pg_admin,
    _pg_dsn,
    _sa_url,
    gid,
    gql,
    receive,
    row_counts,
    token_for,
)
from tests.test_trace import HOSP_NAME, MFG_NAME, PHARM_NAME, WHS_NAME, build_chain

K = MovementKind
# A copy of ../shared/epcis (the GS1 schema and the standard's examples) kept with the tests,
# so a clone on its own can run them.
EPCIS_DIR = ROOT / "tests" / "data" / "epcis"
EXAMPLES = sorted(EPCIS_DIR.glob("*.jsonld"))
EXAMPLE_DOCUMENTS = {path.name: json.loads(path.read_text()) for path in EXAMPLES}
T0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
WHS_GLN = "7612345000015"
CLINIC = "Bergdorf Clinic"
CLINIC_GLN = "761234500004" + gtin_check_digit("761234500004")


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads((EPCIS_DIR / "EPCIS-JSON-Schema.json").read_text())
    return epcis.schema_validator(schema)


def assert_valid(validator: Any, document: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == [], errors[:5]


def events_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["epcisBody"]["eventList"])


def make_movement(kind: MovementKind, quantity: int, **kw: Any) -> ExportMovement:
    values: dict[str, Any] = {
        "movement_id": 7,
        "kind": kind,
        "quantity": quantity,
        "occurred_at": T0,
        "gtin": "07612345000107",
        "approval_number": "CH-12345",
        "batch_number": "B/01 X",
        "expiry_date": date(2027, 1, 31),
        "location_code": "WHS-DC",
        "reporter": PartyRef(gln=WHS_GLN, name=WHS_NAME),
    }
    values.update(kw)
    return ExportMovement(**values)


SIGNED = {
    K.PRODUCE: 40,
    K.SHIP: -30,
    K.RECEIVE: 30,
    K.TRANSFER_OUT: -5,
    K.TRANSFER_IN: 5,
    K.DISPENSE: -2,
    K.RETURN: 1,
    K.DISPOSE: -1,
    K.ADJUST: -3,
    K.COUNT: 2,
}


# --- pure mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_validator_accepts_the_standards_examples(validator: Any, path: Path) -> None:
    assert_valid(validator, json.loads(path.read_text()))


def test_the_validator_checks_formats_offline(validator: Any) -> None:
    document = json.loads((EPCIS_DIR / "Example_9.6.2-ObjectEvent.jsonld").read_text())
    bad = copy.deepcopy(document)
    bad["epcisBody"]["eventList"][0]["readPoint"]["id"] = "not a uri"
    bad["epcisBody"]["eventList"][0]["eventTime"] = "2013-06-08 14:58"
    messages = {e.message for e in validator.iter_errors(bad)}
    assert "'not a uri' is not a 'uri'" in messages
    assert "'2013-06-08 14:58' is not a 'date-time'" in messages


@pytest.mark.parametrize("kind", list(K))
def test_each_kind_maps_to_a_valid_event_and_back(validator: Any, kind: MovementKind) -> None:
    counterparty = PartyRef(gln=None, name="Lindenhof Pharmacy & Co")
    movement = make_movement(
        kind,
        SIGNED[kind],
        counterparty=counterparty,
        manufacturer=PartyRef(gln="7612345000008", name=MFG_NAME),
        reference="DN 7/1",
        reason="DAMAGED" if kind in (K.DISPOSE, K.ADJUST) else None,
    )
    event = epcis.movement_event(movement)
    document = epcis.epcis_document([event], creation_date=T0)
    assert_valid(validator, document)
    vocabulary = epcis.KIND_VOCABULARY[kind]
    assert (event["bizStep"], event["disposition"], event["action"]) == (
        vocabulary.biz_step,
        vocabulary.disposition,
        vocabulary.action,
    )
    assert event["quantityList"] == [
        {
            "epcClass": "https://id.gs1.org/01/07612345000107/10/B%2F01%20X",
            "quantity": abs(SIGNED[kind]),
        }
    ]
    assert event["bizLocation"] == {"id": f"https://id.gs1.org/414/{WHS_GLN}/254/WHS-DC"}
    assert ("ilmd" in event) is (kind is K.PRODUCE)
    assert "patient" not in json.dumps(event).lower()
    outflow = SIGNED[kind] < 0
    ours = {"source": f"https://id.gs1.org/417/{WHS_GLN}"}
    theirs = {"source": counterparty.uri()}
    sources = [{k: v for k, v in s.items() if k != "type"} for s in event["sourceList"]]
    assert sources[0] == (ours if outflow else theirs)

    parsed = epcis.parse_event(event)
    assert parsed.event_id == event["eventID"]
    assert parsed.kind is kind
    assert parsed.occurred_at == T0
    assert [(x.item.gtin, x.batch, x.quantity) for x in parsed.lines] == [
        ("07612345000107", "B/01 X", abs(SIGNED[kind]))
    ]
    assert parsed.signed_quantity == (SIGNED[kind] if kind in (K.ADJUST, K.COUNT) else None)
    assert parsed.location == epcis.LocationRef(WHS_GLN, "WHS-DC")
    assert parsed.counterparty_uris == (counterparty.uri(),)
    assert epcis.parse_party(parsed.counterparty_uris[0]) == PartyRef(name=counterparty.name)
    assert epcis.parse_party(parsed.reporter_uri or "") == PartyRef(gln=WHS_GLN)
    assert (parsed.reference, parsed.expiry) == ("DN 7/1", date(2027, 1, 31))
    assert parsed.reason == movement.reason


def test_event_ids_are_hashes_of_the_content() -> None:
    first = epcis.movement_event(make_movement(K.SHIP, -30))
    again = epcis.movement_event(make_movement(K.SHIP, -30))
    assert first == again
    assert first["eventID"].startswith("ni:///sha-256;") and first["eventID"].endswith(
        "?ver=CBV2.0"
    )
    assert epcis.hash_event_id(first) == first["eventID"]
    # Another movement with the same content is another event; any change is another ID.
    assert (
        epcis.movement_event(make_movement(K.SHIP, -30, movement_id=8))["eventID"]
        != first["eventID"]
    )
    assert epcis.movement_event(make_movement(K.SHIP, -31))["eventID"] != first["eventID"]


def test_identifiers_without_a_gln_or_gtin_use_apotheca_uris(validator: Any) -> None:
    event = epcis.movement_event(
        make_movement(
            K.RECEIVE,
            4,
            gtin=None,
            reporter=PartyRef(gln=None, name="Regional Medicines Agency"),
            location_code="A-VERY-LONG-LOCATION-CODE-123",
        )
    )
    assert event["quantityList"][0]["epcClass"] == (
        "https://apotheca.example/product/CH-12345/lot/B%2F01%20X"
    )
    assert event["readPoint"]["id"] == (
        "https://apotheca.example/location/A-VERY-LONG-LOCATION-CODE-123"
    )
    assert event["destinationList"][0]["destination"] == (
        "https://apotheca.example/org/Regional%20Medicines%20Agency"
    )
    assert_valid(validator, epcis.epcis_document([event], creation_date=T0))
    parsed = epcis.parse_event(event)
    assert parsed.lines[0].item == epcis.ItemRef(approval_number="CH-12345")
    assert parsed.location == epcis.LocationRef(code="A-VERY-LONG-LOCATION-CODE-123")


def test_gs1_identifiers_decode_without_knowing_the_company_prefix_length() -> None:
    lgtin = epcis.parse_epc_class("urn:epc:class:lgtin:4012345.012345.998877")
    assert (lgtin.item.gtin, lgtin.batch) == ("04012345123456", "998877")
    link = epcis.parse_epc_class("https://example.com/01/4012345123456/10/AB%2F1?17=270600")
    assert (link.item.gtin, link.batch, link.expiry) == (
        "04012345123456",
        "AB/1",
        date(2027, 6, 30),
    )
    pattern = epcis.parse_epc_class("urn:epc:idpat:sgtin:4012345.098765.*")
    assert (pattern.item.gtin, pattern.batch) == ("04012345987652", None)
    sgtin = epcis.parse_epc("urn:epc:id:sgtin:0614141.107346.2017")
    assert (sgtin.item.gtin, sgtin.serial) == ("10614141073464", "2017")
    assert epcis.parse_party("urn:epc:id:pgln:7612345.00001") == PartyRef(gln=WHS_GLN)
    assert epcis.parse_party("urn:epc:id:sgln:7612345.00001.0") == PartyRef(gln=WHS_GLN)
    assert epcis.parse_location("urn:epc:id:sgln:0614141.07346.1234") == epcis.LocationRef(
        "0614141073467", "1234"
    )
    with pytest.raises(Unmappable, match="check digit"):
        epcis.parse_epc_class("https://id.gs1.org/01/04012345123457/10/X")
    with pytest.raises(Unmappable, match="not a trade item"):
        epcis.parse_epc("urn:epc:id:sscc:0614141.1234567890")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "AggregationEvent"}, "unsupported event type AggregationEvent"),
        ({"bizStep": "stocking", "apotheca:kind": None}, "bizStep stocking has no"),
        ({"bizStep": None, "apotheca:kind": None}, "has no bizStep"),
        (
            {"quantityList": [{"epcClass": "https://id.gs1.org/01/07612345000107/10/B1"}]},
            "no quantity",
        ),
        ({"quantityList": [{"epcClass": "urn:x:y", "quantity": 1}]}, "names no trade item"),
        ({"quantityList": []}, "names no trade items"),
        ({"apotheca:quantity": 0}, "non-zero signed apotheca:quantity"),
        ({"eventTime": "yesterday"}, "not an ISO 8601 date-time"),
        ({"errorDeclaration": {"declarationTime": "2025-01-01T00:00:00Z"}}, "declares an error"),
    ],
)
def test_unmappable_events_say_why(change: dict[str, Any], reason: str) -> None:
    event = epcis.movement_event(make_movement(K.ADJUST, -3, reason="BROKEN"))
    for key, value in change.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    with pytest.raises(Unmappable, match=reason):
        epcis.parse_event(event)


# --- export on both databases ------------------------------------------------------------------

EXPORT = """query($since: DateTime, $until: DateTime, $organisation: ID, $lot: ID, $first: Int) {
  epcisExport(since: $since, until: $until, organisation: $organisation, lot: $lot, first: $first)
}"""
IMPORT = """mutation($organisation: ID!, $document: JSON!) {
  importEpcis(input: {organisation: $organisation, document: $document}) {
    organisation { name }
    imported alreadyImported
    rejected { index eventId eventType reason }
    warnings { eventId message }
    movements {
      kind quantity reference occurredAt
      location { code } organisation { name } counterparty { name } lot { batchNumber }
    }
    errors { code field message }
  }
}"""


async def export_as(http: httpx.AsyncClient, username: str, **variables: Any) -> dict[str, Any]:
    result = await gql(http, EXPORT, variables, await token_for(http, username))
    assert "errors" not in result, result
    return dict(result["data"]["epcisExport"])


async def test_export_of_a_chain_validates_and_is_deterministic(
    client: httpx.AsyncClient, demo: Demo, validator: Any
) -> None:
    lot, t = await build_chain(demo)
    document = await export_as(client, "regulator", lot=gid("Lot", lot))
    assert_valid(validator, document)
    events = events_of(document)
    assert len(events) == 16 and document["apotheca:complete"] is True
    assert len({e["eventID"] for e in events}) == 16
    assert all(epcis.hash_event_id(e) == e["eventID"] for e in events)
    assert [e["apotheca:kind"] for e in events[:3]] == ["PRODUCE", "SHIP", "RECEIVE"]
    assert document["creationDate"] >= events[-1]["eventTime"]  # the latest recorded_at

    async with demo.services.db.read() as session:
        batch = (await session.get(Lot, lot)).batch_number  # type: ignore[union-attr]
        gtin = (
            (
                await session.execute(
                    select(ProductGtin.gtin)
                    .join(Lot, Lot.product_id == ProductGtin.product_id)
                    .where(Lot.id == lot)
                    .order_by(ProductGtin.gtin)
                )
            )
            .scalars()
            .first()
        )
    ship = events[1]
    assert ship["eventTime"] == epcis.format_time(t["shipped1"])
    assert (ship["bizStep"], ship["disposition"], ship["action"]) == (
        "shipping",
        "in_transit",
        "OBSERVE",
    )
    assert ship["quantityList"] == [
        {"epcClass": f"https://id.gs1.org/01/{gtin}/10/{batch}", "quantity": 500}
    ]
    assert ship["readPoint"] == {"id": "https://id.gs1.org/414/7612345000008/254/MFG-01"}
    assert ship["sourceList"] == [
        {"type": "owning_party", "source": "https://id.gs1.org/417/7612345000008"},
        {"type": "possessing_party", "source": "https://id.gs1.org/417/7612345000008"},
    ]
    assert ship["destinationList"][0] == {
        "type": "owning_party",
        "destination": f"https://id.gs1.org/417/{WHS_GLN}",
    }
    assert ship["bizTransactionList"] == [
        {"bizTransaction": "https://apotheca.example/reference/DN-T1"}
    ]
    assert events[0]["ilmd"]["cbvmda:lotNumber"] == batch
    dispenses = [e for e in events if e["apotheca:kind"] == "DISPENSE"]
    assert len(dispenses) == 4 and "ENC-1" not in json.dumps(document)

    again = await export_as(client, "auditor", lot=gid("Lot", lot))
    assert json.dumps(again, sort_keys=True) == json.dumps(document, sort_keys=True)
    service = await demo.services.epcis.export(None, lot_id=lot)
    assert service == document


async def test_export_filters_and_scope(client: httpx.AsyncClient, demo: Demo) -> None:
    _, t = await build_chain(demo)
    everything = events_of(await export_as(client, "admin"))
    assert len(everything) == 16
    page = await export_as(client, "admin", first=2)
    assert [e["eventID"] for e in events_of(page)] == [e["eventID"] for e in everything[:2]]
    assert page["apotheca:complete"] is False
    window = await export_as(
        client, "regulator", since=t["shipped1"].isoformat(), until=t["received2"].isoformat()
    )
    assert [e["apotheca:kind"] for e in events_of(window)] == ["SHIP", "RECEIVE", "SHIP"]
    mfg = await export_as(client, "auditor", organisation=gid("Organisation", demo.orgs[MFG_NAME]))
    assert [e["apotheca:kind"] for e in events_of(mfg)] == ["PRODUCE", "SHIP"]

    # Others see their own organisation only, and their own locations within it.
    hospital = events_of(await export_as(client, "pharmacist"))
    hosp_uri = "https://id.gs1.org/417/7612345000022"
    assert len(hospital) == 9 and {e["apotheca:reporter"] for e in hospital} == {hosp_uri}
    ward = events_of(await export_as(client, "nurse"))
    assert {e["bizLocation"]["id"].rsplit("/", 1)[-1] for e in ward} == {"WARD-A"}
    assert len(ward) == 5

    token = await token_for(client, "pharmacist")
    other = await gql(
        client, EXPORT, {"organisation": gid("Organisation", demo.orgs[MFG_NAME])}, token
    )
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    supplier = await gql(client, EXPORT, {}, await token_for(client, "supplier"))
    assert supplier["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    too_many = await gql(client, EXPORT, {"first": 0}, token)
    assert too_many["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    missing = await gql(client, EXPORT, {"lot": gid("Lot", 999_999)}, token)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    anonymous = await gql(client, EXPORT, {})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# --- import on both databases ------------------------------------------------------------------


def lgtin(gtin: str, batch: str) -> str:
    return f"urn:epc:class:lgtin:{gtin[1:8]}.{gtin[0]}{gtin[8:13]}.{batch}"


def sgtin(gtin: str, serial: str) -> str:
    return f"urn:epc:id:sgtin:{gtin[1:8]}.{gtin[0]}{gtin[8:13]}.{serial}"


def foreign_event(event_id: str | None, biz_step: str, hours: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": (T0 + timedelta(hours=hours)).isoformat(),
        "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE",
        "bizStep": biz_step,
    }
    if event_id is not None:
        event["eventID"] = event_id
    event.update(fields)
    return event


def foreign_document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": [epcis.EPCIS_CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2025-05-02T00:00:00Z",
        "epcisBody": {"eventList": events},
    }


async def product_gtin(demo: Demo, lot_id: int) -> tuple[str, str]:
    async with demo.services.db.read() as session:
        lot = await session.get(Lot, lot_id)
        assert lot is not None
        gtin = (
            (
                await session.execute(
                    select(ProductGtin.gtin)
                    .where(ProductGtin.product_id == lot.product_id)
                    .order_by(ProductGtin.gtin)
                )
            )
            .scalars()
            .first()
        )
    assert gtin is not None
    return gtin, lot.batch_number


async def clinic(demo: Demo) -> int:
    org = await demo.services.network.create_organisation(
        demo.principals["admin"], name=CLINIC, kind=OrganisationKind.HOSPITAL, gln=CLINIC_GLN
    )
    return org.id


async def import_as(
    http: httpx.AsyncClient, username: str, organisation: int, document: Any
) -> dict[str, Any]:
    variables = {"organisation": gid("Organisation", organisation), "document": document}
    result = await gql(http, IMPORT, variables, await token_for(http, username))
    assert "errors" not in result, result
    return dict(result["data"]["importEpcis"])


async def test_a_constituents_document_becomes_its_movements_once(
    client: httpx.AsyncClient, demo: Demo, validator: Any
) -> None:
    lot = await receive(demo, "HOSP-WH", 10, expiry_days=300)
    gtin, batch = await product_gtin(demo, lot)
    clinic_id = await clinic(demo)
    unknown = "0999999999999" + gtin_check_digit("0999999999999")
    here = {"id": f"urn:epc:id:sgln:{CLINIC_GLN[:7]}.{CLINIC_GLN[7:12]}.0"}
    events = [
        # Listed first, happened after the receipt: applied in eventTime order.
        foreign_event(
            "urn:uuid:e0",
            "dispensing",
            2,
            disposition="dispensed",
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 10}],
            bizLocation=here,
        ),
        foreign_event(
            "urn:uuid:e1",
            "receiving",
            0,
            disposition="in_progress",
            quantityList=[{"epcClass": f"https://id.gs1.org/01/{gtin}/10/{batch}", "quantity": 50}],
            bizLocation=here,
            sourceList=[{"type": "owning_party", "source": "urn:epc:id:pgln:7612345.00001"}],
            destinationList=[
                {"type": "owning_party", "destination": f"https://id.gs1.org/417/{CLINIC_GLN}"}
            ],
            bizTransactionList=[{"type": "desadv", "bizTransaction": "urn:example:desadv:77"}],
        ),
        foreign_event(
            "urn:uuid:e2",
            "shipping",
            3,
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 100}],
        ),
        foreign_event(
            "urn:uuid:e3",
            "receiving",
            1,
            quantityList=[{"epcClass": f"https://id.gs1.org/01/{unknown}/10/X1", "quantity": 5}],
        ),
        {
            "type": "AggregationEvent",
            "eventID": "urn:uuid:e4",
            "eventTime": "2025-05-01T08:00:00Z",
            "eventTimeZoneOffset": "+00:00",
            "action": "ADD",
            "parentID": "urn:epc:id:sscc:0614141.1234567890",
            "childEPCs": [sgtin(gtin, "S9")],
        },
        foreign_event(
            "urn:uuid:e5",
            "commissioning",
            1,
            action="ADD",
            epcList=[sgtin(gtin, "S1"), sgtin(gtin, "S2"), sgtin(gtin, "S3")],
            ilmd={"cbvmda:lotNumber": "NEWLOT1", "cbvmda:itemExpirationDate": "2027-03-31"},
        ),
        foreign_event(
            "urn:uuid:e6",
            "inspecting",
            1,
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 1}],
        ),
        foreign_event(  # no eventID: identified by the hash of its content
            None,
            "receiving",
            4,
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 5}],
            sourceList=[
                {"type": "possessing_party", "source": "https://id.gs1.org/417/4000001000005"}
            ],
        ),
        foreign_event(
            "urn:uuid:e1",
            "receiving",
            5,
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 1}],
        ),
        foreign_event(
            "urn:uuid:e9",
            "receiving",
            5,
            quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 2, "uom": "KGM"}],
        ),
        foreign_event(
            "urn:uuid:e10",
            "receiving",
            5,
            epcList=[sgtin(gtin, "S7")],
        ),
    ]
    document = foreign_document(events)
    assert_valid(validator, document)
    hashed = epcis.hash_event_id(events[7])
    before = await row_counts(demo.services)

    # Only the supervising authority enters a constituent's data.
    refused = await import_as(client, "pharmacist", clinic_id, document)
    assert refused["errors"][0]["code"] == "FORBIDDEN" and refused["imported"] == []
    assert await row_counts(demo.services) == before

    result = await import_as(client, "regulator", clinic_id, document)
    assert result["errors"] == [] and result["organisation"] == {"name": CLINIC}
    assert result["imported"] == ["urn:uuid:e1", "urn:uuid:e5", "urn:uuid:e0", hashed]
    rejected = {r["index"]: (r["eventId"], r["eventType"], r["reason"]) for r in result["rejected"]}
    assert sorted(rejected) == [2, 3, 4, 6, 8, 9, 10]
    code = f"EPCIS-{clinic_id}"
    assert rejected[2][2] == (
        f"insufficient stock at {code}: only 40 of lot {batch} on hand at {code}, 100 requested"
    )
    assert rejected[3][2] == f"unknown GTIN {unknown}: no product in the catalogue has it"
    assert rejected[4][1:] == (
        "AggregationEvent",
        "unsupported event type AggregationEvent: packing into or out of containers moves no "
        "stock between holders",
    )
    assert "bizStep inspecting" in rejected[6][2]
    assert rejected[8][:2] == ("urn:uuid:e1", "ObjectEvent")
    assert rejected[8][2] == "repeats the eventID of event 1 in this document"
    assert rejected[9][2] == f"quantity of GTIN {gtin} is in KGM, not in packs"
    assert rejected[10][2].startswith(f"no lot for GTIN {gtin}")
    assert result["warnings"] == [
        {
            "eventId": hashed,
            "message": "counterparty https://id.gs1.org/417/4000001000005 is not a known "
            "organisation: recorded without one",
        }
    ]
    movements = [
        (
            m["kind"],
            m["quantity"],
            m["location"]["code"],
            m["organisation"]["name"],
            m["counterparty"] and m["counterparty"]["name"],
            m["lot"]["batchNumber"],
            m["reference"],
        )
        for m in result["movements"]
    ]
    assert movements == [
        ("RECEIVE", 50, code, CLINIC, WHS_NAME, batch, "urn:example:desadv:77"),
        ("PRODUCE", 3, code, CLINIC, None, "NEWLOT1", None),
        ("DISPENSE", -10, code, CLINIC, None, batch, None),
        ("RECEIVE", 5, code, CLINIC, None, batch, None),
    ]
    assert datetime.fromisoformat(result["movements"][0]["occurredAt"]) == T0

    async with demo.services.db.read() as session:
        location = (
            await session.execute(select(Location).where(Location.code == code))
        ).scalar_one()
        assert location.organisation_id == clinic_id
        new_lot = (
            await session.execute(select(Lot).where(Lot.batch_number == "NEWLOT1"))
        ).scalar_one()
        assert (new_lot.expiry_date, new_lot.manufacturer_id) == (date(2027, 3, 31), clinic_id)
        totals = {
            t.batch_number: (t.received, t.produced, t.dispensed)
            for t in (
                await session.execute(
                    select(BatchConstituentTotal).where(
                        BatchConstituentTotal.organisation_id == clinic_id
                    )
                )
            ).scalars()
        }
        assert totals == {batch: (55, 0, 10), "NEWLOT1": (0, 3, 0)}
        balances = dict(
            (
                await session.execute(
                    select(Balance.lot_id, Balance.quantity).where(
                        Balance.location_id == location.id
                    )
                )
            ).all()
        )
        assert balances == {lot: 45, new_lot.id: 3}

    # The same document again changes nothing and says so.
    counts = await row_counts(demo.services)
    again = await import_as(client, "admin", clinic_id, document)
    assert again["imported"] == [] and again["movements"] == []
    assert sorted(again["alreadyImported"]) == sorted(result["imported"])
    assert [r["index"] for r in again["rejected"]] == [2, 3, 4, 6, 8, 9, 10]
    assert await row_counts(demo.services) == counts

    # A rejected event is retried by the next import: with stock enough it goes through.
    top_up = foreign_event(
        "urn:uuid:e11",
        "receiving",
        2,
        quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 60}],
    )
    retry = await import_as(client, "regulator", clinic_id, foreign_document([top_up, events[2]]))
    assert retry["imported"] == ["urn:uuid:e11", "urn:uuid:e2"] and retry["rejected"] == []


async def test_import_refusals_are_errors_not_crashes(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    not_a_document = await import_as(client, "admin", demo.orgs[PHARM_NAME], {"type": "Event"})
    assert not_a_document["errors"][0]["code"] == "INVALID_INPUT"
    assert not_a_document["errors"][0]["field"] == "document"
    listless = await import_as(client, "admin", demo.orgs[PHARM_NAME], [1, 2])
    assert listless["errors"][0]["code"] == "INVALID_INPUT"
    nobody = await import_as(client, "admin", 999_999, foreign_document([]))
    assert nobody["errors"][0]["code"] == "NOT_FOUND"
    garbage = await import_as(
        client,
        "admin",
        demo.orgs[PHARM_NAME],
        foreign_document([42, {"type": "ObjectEvent"}, {"eventTime": "2025-05-01T08:00:00Z"}]),
    )
    assert [(r["index"], r["eventType"], r["reason"]) for r in garbage["rejected"]] == [
        (0, None, "not an event object"),
        (1, "ObjectEvent", "the event has no eventTime"),
        (2, None, "unsupported event type (none): only ObjectEvents become movements"),
    ]


async def test_several_locations_need_the_event_to_name_one(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    lot = await receive(demo, "HOSP-WH", 10)
    gtin, batch = await product_gtin(demo, lot)
    quantity = [{"epcClass": lgtin(gtin, batch), "quantity": 4}]
    document = foreign_document(
        [
            foreign_event("urn:uuid:w1", "receiving", 0, quantityList=quantity),
            foreign_event(
                "urn:uuid:w2",
                "receiving",
                1,
                quantityList=quantity,
                bizLocation={"id": "https://apotheca.example/location/ward-b"},
            ),
            foreign_event(  # another organisation's location is not the constituent's
                "urn:uuid:w3",
                "receiving",
                2,
                quantityList=quantity,
                bizLocation={"id": "https://apotheca.example/location/WHS-DC"},
            ),
        ]
    )
    result = await import_as(client, "regulator", demo.orgs[HOSP_NAME], document)
    assert result["imported"] == ["urn:uuid:w2"]
    assert result["movements"][0]["location"]["code"] == "WARD-B"
    reasons = {r["eventId"]: r["reason"] for r in result["rejected"]}
    assert reasons["urn:uuid:w1"].startswith(
        f"the event names no location, which is not one of {HOSP_NAME}'s locations"
    )
    assert "location https://apotheca.example/location/WHS-DC" in reasons["urn:uuid:w3"]


async def test_only_recorded_events_announce_stock_changes(demo: Demo) -> None:
    """A rejected event's savepoint is rolled back with its stock events; the events of those
    recorded before and after it still go out after commit (on both buses)."""
    services = demo.services
    await services.start()
    lot = await receive(demo, "HOSP-WH", 10)
    gtin, batch = await product_gtin(demo, lot)
    clinic_id = await clinic(demo)
    quantity = [{"epcClass": lgtin(gtin, batch), "quantity": 5}]
    document = foreign_document(
        [
            foreign_event("urn:uuid:s1", "receiving", 0, quantityList=quantity),
            foreign_event(
                "urn:uuid:s2",
                "shipping",
                1,
                quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 50}],
            ),
            foreign_event("urn:uuid:s3", "dispensing", 2, quantityList=quantity),
        ]
    )
    async with services.bus.subscribe("stock") as subscription:
        result = await services.epcis.import_document(
            demo.principals["regulator"], clinic_id, document
        )
        announced = []
        with contextlib.suppress(TimeoutError):
            while True:
                announced.append(await asyncio.wait_for(subscription.get(), timeout=1))
    assert result.imported == ["urn:uuid:s1", "urn:uuid:s3"]
    assert [r.event_id for r in result.rejected] == ["urn:uuid:s2"]
    assert sorted(e.payload["movement_id"] for e in announced) == sorted(
        m.id for m in result.movements
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_the_standards_examples_import_or_are_reported(
    client: httpx.AsyncClient, demo: Demo, path: Path
) -> None:
    document = EXAMPLE_DOCUMENTS[path.name]
    count = len(document["epcisBody"]["eventList"])
    pharmacy = demo.orgs[PHARM_NAME]
    before = await row_counts(demo.services)
    result = await import_as(client, "regulator", pharmacy, document)
    assert result["errors"] == []
    assert (
        len(result["imported"]) + len(result["alreadyImported"]) + len(result["rejected"]) == count
    )
    assert all(r["reason"] and r["eventId"] for r in result["rejected"])
    reasons = [r["reason"] for r in result["rejected"]]
    expected = {
        "Example-TransactionEvents-2020_07_03y.jsonld": ["unsupported event type TransactionEvent"]
        * 2,
        "Example_9.6.1-ObjectEvent.jsonld": ["unknown GTIN 10614141073464"] * 2,
        "Example_9.6.2-ObjectEvent.jsonld": ["unknown GTIN 04012345123456"],
        "Example_9.6.3-AggregationEvent.jsonld": ["unsupported event type AggregationEvent"],
        "Example_9.6.4-TransformationEvent.jsonld": ["unsupported event type TransformationEvent"],
    }[path.name]
    assert [r[: len(e)] for r, e in zip(reasons, expected, strict=True)] == expected
    assert await row_counts(demo.services) == before

    # With the examples' GTINs in the catalogue, what still stops them is named.
    product_id = (await first_product(demo)).id
    async with demo.services.db.write() as session:
        for gtin in ("10614141073464", "04012345123456"):
            session.add(ProductGtin(product_id=product_id, gtin=gtin))
    again = await import_as(client, "regulator", pharmacy, document)
    reasons = [r["reason"] for r in again["rejected"]]
    if path.name == "Example_9.6.1-ObjectEvent.jsonld":
        assert all(r.startswith("no lot for GTIN 10614141073464") for r in reasons)
    if path.name == "Example_9.6.2-ObjectEvent.jsonld":
        assert reasons == ["quantity of GTIN 04012345123456 is in KGM, not in packs"]
    assert again["imported"] == []


async def first_product(demo: Demo) -> Product:
    async with demo.services.db.read() as session:
        return (await session.execute(select(Product).order_by(Product.id).limit(1))).scalar_one()


# --- round trip into an empty database ---------------------------------------------------------


@pytest.fixture
async def fresh(template: Template, tmp_path: Path) -> AsyncIterator[Services]:
    """A second, empty database with the same network and catalogue and no stock."""
    if template.backend == "postgresql":
        name = f"apotheca_epcis_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        template.clones.append(name)
        url = _sa_url(_pg_dsn(name))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await upgrade(url)
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    await seed_demo(services, history_days=-1)
    yield services
    await services.close()


async def supervision_state(services: Services) -> dict[str, Any]:
    """Totals, edges and balances keyed by names, so two databases' ids do not matter."""
    async with services.db.read() as session:
        names = dict((await session.execute(select(Organisation.id, Organisation.name))).all())
        constituents = sorted(
            (
                t.approval_number,
                t.batch_number,
                names[t.organisation_id],
                *(getattr(t, counter) for counter in COUNTERS),
            )
            for t in (await session.execute(select(BatchConstituentTotal))).scalars()
        )
        edges = sorted(
            (
                e.approval_number,
                e.batch_number,
                names[e.sender_id],
                names[e.receiver_id],
                e.shipped,
                e.received,
                e.last_shipped_at,
            )
            for e in (await session.execute(select(BatchEdgeTotal))).scalars()
        )
        balances = sorted(
            (
                await session.execute(
                    select(
                        Location.code, Product.approval_number, Lot.batch_number, Balance.quantity
                    )
                    .join(Location, Location.id == Balance.location_id)
                    .join(Lot, Lot.id == Balance.lot_id)
                    .join(Product, Product.id == Lot.product_id)
                )
            ).all()
        )
        lots = sorted(
            (
                await session.execute(
                    select(
                        Product.approval_number,
                        Lot.batch_number,
                        Lot.expiry_date,
                        Organisation.name,
                    )
                    .join(Product, Product.id == Lot.product_id)
                    .outerjoin(Organisation, Organisation.id == Lot.manufacturer_id)
                )
            ).all()
        )
    return {"constituents": constituents, "edges": edges, "balances": balances, "lots": lots}


async def supervision_results(services: Services, now: datetime) -> list[Any] | None:
    """Each batch's supervision check (status, gamma and the parts that explain it, with
    organisations by name), when the checks module is there to compute them."""
    try:
        from server.supervision.checks import evaluate
        from server.supervision.gamma import summary
    except ImportError:  # pragma: no cover - supervision checks not built yet
        return None
    async with services.db.read() as session:
        names = dict((await session.execute(select(Organisation.id, Organisation.name))).all())
        keys = sorted(
            set(
                (
                    await session.execute(
                        select(
                            BatchConstituentTotal.approval_number,
                            BatchConstituentTotal.batch_number,
                        )
                    )
                ).all()
            )
        )
        analyses, _ = await evaluate(
            session, [tuple(k) for k in keys], now=now, window=timedelta(hours=72)
        )
    return [
        (
            key,
            a.status,
            a.gamma,
            summary(a),
            sorted(
                (
                    p.kind,
                    p.quantity,
                    names[p.organisation_id],
                    names.get(p.counterparty_id),
                    p.references,
                )
                for p in a.parts
            ),
        )
        for key, a in sorted(analyses.items())
    ]


def gamma_by_batch(constituents: list[tuple[Any, ...]], manufacturers: set[str]) -> dict[Any, int]:
    """gamma = I - O - sum(inv_c) per batch, from the constituent totals (DESIGN.md)."""
    gamma: dict[Any, int] = {}
    for approval, batch, org, *c in constituents:
        produced, received, t_in, returned, adj_in, shipped, t_out, dispensed, disposed, adj_out = c
        inventory = produced + received + t_in + returned + adj_in
        inventory -= shipped + t_out + dispensed + disposed + adj_out
        key = (approval, batch)
        gamma[key] = gamma.get(key, 0) + (produced if org in manufacturers else 0)
        gamma[key] -= dispensed + disposed - returned + inventory
    return gamma


def without_ids(events: list[dict[str, Any]]) -> list[str]:
    drop = {"eventID", "apotheca:movement"}
    return sorted(
        epcis.canonical_json({k: v for k, v in e.items() if k not in drop}) for e in events
    )


async def test_round_trip_into_an_empty_database_gives_the_same_supervision(
    demo: Demo, fresh: Services, validator: Any
) -> None:
    lot, t = await build_chain(demo)
    # Signed kinds too: an unexplained gain and a counted loss.
    admin = demo.principals["admin"]
    for kind, where, quantity, reason in (
        (K.ADJUST, "WHS-DC", 2, "FOUND"),
        (K.COUNT, "HOSP-WH", -1, None),
        (K.SHIP, "WHS-DC", 4, None),  # to nobody: leaves the network
    ):
        await demo.services.ledger.record(
            admin,
            [
                MovementRequest(
                    kind,
                    demo.locations[where],
                    quantity,
                    lot_id=lot,
                    reason=reason,
                    occurred_at=t["disposed"] + timedelta(hours=1),
                )
            ],
            operation="test.epcis",
        )
    document = await demo.services.epcis.export(None)
    assert_valid(validator, document)
    events = events_of(document)
    assert len(events) == 19

    # Each organisation's events, entered as that constituent: the others' are refused.
    async with fresh.db.read() as session:
        orgs = dict((await session.execute(select(Organisation.name, Organisation.id))).all())
        regulator_id = (
            await session.execute(select(User.id).where(User.username == "regulator"))
        ).scalar_one()
    regulator = await fresh.network.load_principal(regulator_id)
    imported: list[str] = []
    for name, org_id in sorted(orgs.items()):
        result = await fresh.epcis.import_document(regulator, org_id, document)
        assert result.warnings == []
        # Events another organisation's import already recorded are skipped as such.
        assert set(result.already_imported) <= set(imported)
        imported += result.imported
        for rejection in result.rejected:
            assert rejection.reason.startswith("reported by ")
            assert rejection.reason.endswith(f"not by {name}: import it as that organisation")
    assert sorted(imported) == sorted(e["eventID"] for e in events)

    original = await supervision_state(demo.services)
    copied = await supervision_state(fresh)
    assert copied["constituents"] == original["constituents"]
    assert copied["edges"] == original["edges"]
    assert copied["balances"] == original["balances"]
    assert copied["lots"] == original["lots"]
    manufacturers = {MFG_NAME}
    gamma = gamma_by_batch(original["constituents"], manufacturers)
    assert gamma == gamma_by_batch(copied["constituents"], manufacturers)
    # 20 not received by the pharmacy, 4 shipped to nobody, 2 found (a gain), 1 counted missing
    assert list(gamma.values()) == [20 + 4 - 2 + 1]

    now = datetime.now(UTC)
    checked = await supervision_results(fresh, now)
    assert checked == await supervision_results(demo.services, now)
    assert checked is None or [gamma for _, _, gamma, _, _ in checked] == [23]

    # Exported again from the copy, the events are the same but for the movement ids.
    exported = await fresh.epcis.export(None)
    assert without_ids(events_of(exported)) == without_ids(events)
    # And importing everything again anywhere changes nothing.
    counts = await row_counts(fresh)
    again = await fresh.epcis.import_document(regulator, orgs[HOSP_NAME], document)
    assert again.imported == [] and len(again.already_imported) == 19
    assert await row_counts(fresh) == counts


# --- command line ----------------------------------------------------------------------------


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


async def test_cli_export_and_import(
    demo: Demo, database_url: str, tmp_path: Path, validator: Any
) -> None:
    lot, _ = await build_chain(demo)
    gtin, batch = await product_gtin(demo, lot)
    exported = run_cli(database_url, "epcis-export", "--lot", batch)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert_valid(validator, document)
    assert len(events_of(document)) == 16 and "exported 16 events" in exported.stderr
    assert document == await demo.services.epcis.export(None, lot_id=lot)
    out = tmp_path / "hospital.jsonld"
    by_org = run_cli(
        database_url, "epcis-export", "--organisation", HOSP_NAME, "--output", str(out)
    )
    assert by_org.returncode == 0, by_org.stderr
    assert len(events_of(json.loads(out.read_text()))) == 9

    await clinic(demo)
    foreign = tmp_path / "clinic.jsonld"
    foreign.write_text(
        json.dumps(
            foreign_document(
                [
                    foreign_event(
                        "urn:uuid:c1",
                        "receiving",
                        0,
                        quantityList=[{"epcClass": lgtin(gtin, batch), "quantity": 7}],
                    ),
                    json.loads((EPCIS_DIR / "Example_9.6.3-AggregationEvent.jsonld").read_text())[
                        "epcisBody"
                    ]["eventList"][0],
                ]
            )
        )
    )
    imported = run_cli(database_url, "epcis-import", "--organisation", CLINIC, str(foreign))
    assert imported.returncode == 0, imported.stderr
    assert "1 events imported (1 movements), 0 already imported, 1 rejected" in imported.stdout
    assert "unsupported event type AggregationEvent" in imported.stdout
    again = run_cli(database_url, "epcis-import", "--organisation", CLINIC, str(foreign))
    assert "0 events imported (0 movements), 1 already imported, 1 rejected" in again.stdout
    unknown = run_cli(database_url, "epcis-import", "--organisation", "Nobody", str(foreign))
    assert unknown.returncode == 1 and "no organisation named 'Nobody'" in unknown.stderr
