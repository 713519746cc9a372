"""recordProduction: a manufacturer commissions lots (PRODUCE) and serials through the ledger,
feeding supervision's total input; EPCIS commissioning events take the same path."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.catalog.models import Lot, Product, ProductGtin
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.core.security import Role
from server.demo import DEMO_PASSWORD
from server.production.models import CommissionedSerial
from server.scanning.models import DecommissionedSerial
from server.services import Services
from tests.conftest import ROOT, Demo, check_ledger, gid, gql, row_counts, token_for

MFG = "Helvepharm Manufacturing AG"
HOSP = "St. Aurelia General Hospital"

PRODUCE = """
mutation($input: RecordProductionInput!) {
  recordProduction(input: $input) {
    movement { id kind quantity balanceAfter location { code } organisation { name } }
    lot { id batchNumber expiryDate }
    gtin serialCount replayed
    errors { code field message }
  }
}"""
SCAN = """
mutation($input: RecordScanInput!) {
  recordScan(input: $input) { movements { kind quantity } errors { code field message } }
}"""
IMPORT = """
mutation($organisation: ID!, $document: JSON!) {
  importEpcis(input: { organisation: $organisation, document: $document }) {
    imported alreadyImported rejected { index reason } movements { kind quantity }
    errors { code field message }
  }
}"""


async def maker(demo: Demo, username: str = "maker", role: Role = Role.WAREHOUSE_MANAGER) -> int:
    """A manufacturer's user (the demo network has none)."""
    user = await demo.services.network.create_user(
        demo.principals["admin"],
        username=username,
        full_name="Mia Maker",
        password=DEMO_PASSWORD,
        roles=[role],
        organisation_id=demo.orgs[MFG],
    )
    return user.id


async def a_product(services: Services) -> tuple[Product, str]:
    async with services.db.read() as session:
        product, gtin = (
            await session.execute(
                select(Product, func.min(ProductGtin.gtin))
                .join(ProductGtin, ProductGtin.product_id == Product.id)
                .group_by(Product.id)
                .order_by(Product.id)
                .limit(1)
            )
        ).one()
    return product, gtin


def production(demo: Demo, product: Product, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "location": gid("Location", demo.locations["MFG-01"]),
        "product": gid("Product", product.id),
        "batchNumber": "P2026A",
        "expiryDate": (utcnow().date() + timedelta(days=720)).isoformat(),
        "quantity": 3,
        "idempotencyKey": "mes-order-1",
    }
    values.update(overrides)
    return values


async def produce(http: httpx.AsyncClient, token: str, values: dict[str, Any]) -> dict[str, Any]:
    body = await gql(http, PRODUCE, {"input": values}, token)
    assert "errors" not in body, body
    return dict(body["data"]["recordProduction"])


async def total_input(services: Services, demo: Demo, product: Product, batch: str) -> int:
    check = await services.supervision_checks.check(
        demo.principals["admin"], product.approval_number, batch
    )
    return check.analysis.total_input


async def test_production_commissions_a_lot_once_and_feeds_supervision(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    await maker(demo)
    token = await token_for(client, "maker")
    product, gtin = await a_product(demo.services)
    values = production(
        demo, product, serialRange={"first": "SN000001", "last": "SN000003"}, reference="MO-7"
    )
    made = await produce(client, token, values)
    assert made["errors"] == [] and made["replayed"] is False
    assert made["movement"]["kind"] == "PRODUCE"
    assert (made["movement"]["quantity"], made["movement"]["balanceAfter"]) == (3, 3)
    assert made["movement"]["organisation"]["name"] == MFG
    assert (made["gtin"], made["serialCount"]) == (gtin, 3)
    assert await total_input(demo.services, demo, product, "P2026A") == 3

    # The same key again: the first result, nothing written.
    counts = await row_counts(demo.services)
    again = await produce(client, token, values)
    assert again["replayed"] is True and again["movement"]["id"] == made["movement"]["id"]
    assert again["serialCount"] == 3
    assert await row_counts(demo.services) == counts
    # The same key for another request is refused.
    other = await produce(client, token, {**values, "quantity": 4, "serialRange": None})
    assert [e["code"] for e in other["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]

    # A second run of the same lot (same expiry) adds to it; the total input grows.
    second = await produce(
        client, token, production(demo, product, quantity=5, idempotencyKey="mes-order-2")
    )
    assert second["errors"] == [] and second["movement"]["balanceAfter"] == 8
    assert await total_input(demo.services, demo, product, "P2026A") == 8

    async with demo.services.db.read() as session:
        lot = await session.get(Lot, _pk(made["lot"]["id"]))
        assert lot is not None and lot.manufacturer_id == demo.orgs[MFG]
        serials = (
            (
                await session.execute(
                    select(CommissionedSerial.serial).where(CommissionedSerial.lot_id == lot.id)
                )
            )
            .scalars()
            .all()
        )
        assert sorted(serials) == ["SN000001", "SN000002", "SN000003"]
        audited = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "production.record")
            )
        ).scalar_one()
        assert audited == 2  # the first run and the second, not the replay
    await check_ledger(demo.services)


def _pk(global_id: str) -> int:
    from strawberry.relay import GlobalID

    return int(GlobalID.from_id(global_id).node_id)


async def test_commissioned_serials_are_the_ones_scans_decommission(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    await maker(demo)
    token = await token_for(client, "maker")
    product, gtin = await a_product(demo.services)
    expiry = utcnow().date() + timedelta(days=400)
    made = await produce(
        client,
        token,
        production(demo, product, expiryDate=expiry.isoformat(), serials=["A1", "A2"], quantity=2),
    )
    assert made["errors"] == [], made
    barcode = f"(01){gtin}(17){expiry:%y%m%d}(10)P2026A(21)A1"
    scan = {
        "barcode": barcode,
        "location": gid("Location", demo.locations["MFG-01"]),
        "action": "DISPOSE",
        "reason": "damaged",
        "idempotencyKey": "scan-1",
    }
    first = await gql(client, SCAN, {"input": scan}, token)
    assert first["data"]["recordScan"]["errors"] == [], first
    twice = await gql(client, SCAN, {"input": {**scan, "idempotencyKey": "scan-2"}}, token)
    assert [e["code"] for e in twice["data"]["recordScan"]["errors"]] == [
        "SERIAL_ALREADY_DECOMMISSIONED"
    ]
    async with demo.services.db.read() as session:
        gone = (
            await session.execute(
                select(DecommissionedSerial).where(DecommissionedSerial.serial == "A1")
            )
        ).scalar_one()
        made_row = (
            await session.execute(
                select(CommissionedSerial).where(CommissionedSerial.serial == "A1")
            )
        ).scalar_one()
        assert (gone.gtin, gone.lot_id) == (made_row.gtin, made_row.lot_id)
    # A serial in the market, or one that left it, cannot be commissioned again.
    for serial, why in (("A2", "already commissioned"), ("A1", "already commissioned")):
        again = await produce(
            client,
            token,
            production(
                demo,
                product,
                batchNumber="P2026B",
                serials=[serial],
                quantity=1,
                idempotencyKey=f"again-{serial}",
            ),
        )
        assert [e["code"] for e in again["errors"]] == ["DUPLICATE"], again
        assert why in again["errors"][0]["message"]


async def test_production_refusals_are_typed_and_write_nothing(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    await maker(demo)
    token = await token_for(client, "maker")
    product, _ = await a_product(demo.services)
    today = utcnow().date()
    lot_expiry = today + timedelta(days=300)
    seeded = await produce(
        client,
        token,
        production(
            demo,
            product,
            batchNumber="KNOWN1",
            expiryDate=lot_expiry.isoformat(),
            idempotencyKey="seed",
        ),
    )
    assert seeded["errors"] == []
    counts = await row_counts(demo.services)
    cases: list[tuple[str, dict[str, Any], str, str | None]] = [
        (
            "warehouse",
            {"location": gid("Location", demo.locations["HOSP-WH"])},
            "FORBIDDEN",
            "location",
        ),
        (
            "admin",
            {"location": gid("Location", demo.locations["HOSP-WH"])},
            "FORBIDDEN",
            "location",
        ),
        (
            "maker",
            {"location": gid("Location", demo.locations["HOSP-WH"])},
            "FORBIDDEN",
            "location",
        ),
        ("nurse", {}, "FORBIDDEN", None),
        (
            "maker",
            {"expiryDate": (today - timedelta(days=1)).isoformat()},
            "EXPIRED_LOT",
            "expiryDate",
        ),
        ("maker", {"expiryDate": today.isoformat()}, "EXPIRED_LOT", "expiryDate"),
        ("maker", {"quantity": 0}, "INVALID_INPUT", "quantity"),
        ("maker", {"quantity": -3}, "INVALID_INPUT", "quantity"),
        ("maker", {"quantity": 2**31 - 1}, "INVALID_INPUT", "quantity"),
        ("maker", {"serials": ["S1", "S2"]}, "INVALID_INPUT", "serials"),
        ("maker", {"serialRange": {"first": "X01", "last": "X05"}}, "INVALID_INPUT", "serialRange"),
        ("maker", {"serials": ["S1", "S1", "S2"]}, "DUPLICATE", "serials.1"),
        ("maker", {"serials": ["S 1", "S2", "S3"]}, "INVALID_INPUT", "serials.0"),
        (
            "maker",
            {"batchNumber": "KNOWN1", "expiryDate": (lot_expiry + timedelta(days=1)).isoformat()},
            "EXPIRY_MISMATCH",
            "expiryDate",
        ),
        ("maker", {"product": gid("Product", 999_999)}, "NOT_FOUND", "product"),
        ("maker", {"location": gid("Product", 1)}, "INVALID_ID", "location"),
        ("maker", {"idempotencyKey": " "}, "INVALID_INPUT", "idempotencyKey"),
    ]
    for index, (who, change, code, field) in enumerate(cases):
        values = {**production(demo, product, idempotencyKey=f"bad-{index}"), **change}
        refused = await produce(client, await token_for(client, who), values)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [(code, field)], (
            who,
            change,
            refused,
        )
    # recordMovements is no way around these rules.
    feed = await gql(
        client,
        """mutation($input: RecordMovementsInput!) {
          recordMovements(input: $input) { errors { code field } } }""",
        {
            "input": {
                "idempotencyKey": "feed-produce",
                "movements": [
                    {
                        "kind": "PRODUCE",
                        "location": gid("Location", demo.locations["HOSP-WH"]),
                        "lot": gid("Lot", _pk(seeded["lot"]["id"])),
                        "quantity": 5,
                    }
                ],
            }
        },
        await token_for(client, "warehouse"),
    )
    assert feed["data"]["recordMovements"]["errors"] == [
        {"code": "INVALID_INPUT", "field": "movements.0.kind"}
    ]
    # Past Int: refused by GraphQL itself, with a code, never a crash.
    huge = await gql(client, PRODUCE, {"input": production(demo, product, quantity=2**31)}, token)
    assert huge["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert await row_counts(demo.services) == counts


@pytest.fixture
async def https(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """Client credentials are accepted only over HTTPS (or loopback)."""
    from server.app import create_app

    transport = httpx.ASGITransport(app=create_app(services.settings, services))
    async with httpx.AsyncClient(transport=transport, base_url="https://apotheca.test") as http:
        yield http


async def client_token(http: httpx.AsyncClient, demo: Demo, name: str, scope: str) -> str:
    made = await demo.services.clients.create_client(
        None, name=name, organisation_id=demo.orgs[MFG], role=Role.WAREHOUSE_MANAGER, scopes=[scope]
    )
    response = await http.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(made.client.client_id, made.secret),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_an_mes_client_needs_the_production_scope(
    https: httpx.AsyncClient, demo: Demo
) -> None:
    product, _ = await a_product(demo.services)
    writer = await client_token(https, demo, "Helvepharm MES", "production:write")
    reader = await client_token(https, demo, "Helvepharm BI", "stock:read")
    made = await produce(https, writer, production(demo, product, idempotencyKey="mes-1"))
    assert made["errors"] == [] and made["movement"]["quantity"] == 3
    refused = await produce(https, reader, production(demo, product, idempotencyKey="mes-2"))
    assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    assert "scopes (stock:read)" in refused["errors"][0]["message"]


def commissioning_document(
    gtin: str, serials: list[str], batch: str, expiry: date
) -> dict[str, Any]:
    """The standard's Example 9.6.1 ObjectEvent, turned into a commissioning at MFG-01."""
    example = json.loads((ROOT / "tests/data/epcis/Example_9.6.1-ObjectEvent.jsonld").read_text())
    document = copy.deepcopy(example)
    event = document["epcisBody"]["eventList"][0]
    company, item = gtin[1:8], gtin[0] + gtin[8:13]
    event.update(
        {
            "eventID": f"urn:uuid:commission-{batch}",
            "action": "ADD",
            "bizStep": "commissioning",
            "disposition": "active",
            "epcList": [f"urn:epc:id:sgtin:{company}.{item}.{s}" for s in serials],
            "eventTime": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
            "eventTimeZoneOffset": "+00:00",
            "readPoint": {"id": "https://apotheca.example/location/MFG-01"},
            "ilmd": {"cbvmda:lotNumber": batch, "cbvmda:itemExpirationDate": expiry.isoformat()},
        }
    )
    event.pop("bizTransactionList")
    document["epcisBody"]["eventList"] = [event]
    return document


async def test_epcis_commissioning_goes_through_production(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    product, gtin = await a_product(demo.services)
    admin = await token_for(client, "admin")
    expiry = utcnow().date() + timedelta(days=500)
    document = commissioning_document(gtin, ["E1", "E2", "E3"], "EP100", expiry)
    org = gid("Organisation", demo.orgs[MFG])
    result = (await gql(client, IMPORT, {"organisation": org, "document": document}, admin))[
        "data"
    ]["importEpcis"]
    assert result["rejected"] == [] and result["movements"] == [{"kind": "PRODUCE", "quantity": 3}]
    assert await total_input(demo.services, demo, product, "EP100") == 3
    async with demo.services.db.read() as session:
        serials = (
            (
                await session.execute(
                    select(CommissionedSerial.serial)
                    .join(Lot, Lot.id == CommissionedSerial.lot_id)
                    .where(Lot.batch_number == "EP100")
                )
            )
            .scalars()
            .all()
        )
    assert sorted(serials) == ["E1", "E2", "E3"]
    again = (await gql(client, IMPORT, {"organisation": org, "document": document}, admin))["data"][
        "importEpcis"
    ]
    assert again["alreadyImported"] == ["urn:uuid:commission-EP100"]

    # The production rules hold on this path too: a serial twice, an expired lot.
    dup = commissioning_document(gtin, ["E3", "E4"], "EP101", expiry)
    expired = commissioning_document(gtin, ["E9"], "EP102", utcnow().date() - timedelta(days=3))
    for bad, why in ((dup, "E3 of GTIN"), (expired, "not after the production date")):
        refused = (await gql(client, IMPORT, {"organisation": org, "document": bad}, admin))[
            "data"
        ]["importEpcis"]
        assert refused["movements"] == [] and why in refused["rejected"][0]["reason"], refused
    await check_ledger(demo.services)
