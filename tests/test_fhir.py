"""The FHIR R4 endpoint against a real running server, with a real FHIR client (fhirpy) and raw
httpx for what no client would send: dispenses become DISPENSE movements once, entered-in-error
reverses them with RETURN, Bundles are all or nothing, scope rules hold, and every refusal is an
OperationOutcome naming the failing element."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError
from sqlalchemy import select

from server.catalog.models import Lot, Product, ProductGtin
from server.core.security import Role
from server.inventory.models import Movement, MovementKind
from server.services import Services
from tests.conftest import (
    Demo,
    LiveServer,
    balance_of,
    check_ledger,
    receive,
    row_counts,
)

GTIN_SYSTEM = "https://www.gs1.org/gtin"
PRODUCT_SYSTEM = "https://apotheca.example/fhir/CodeSystem/product"
EHR = "urn:ehr:st-aurelia:dispense"


@dataclass
class Fhir:
    url: str  # .../fhir
    http: httpx.AsyncClient

    async def token(self, username: str) -> str:
        response = await self.http.post(
            "/auth/token",
            data={"grant_type": "password", "username": username, "password": "apotheca-demo"},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def client(self, username: str) -> AsyncFHIRClient:
        return AsyncFHIRClient(self.url, authorization=f"Bearer {await self.token(username)}")

    async def post(
        self, path: str, body: Any, username: str | None = "nurse", raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/fhir+json"}
        if username is not None:
            headers["Authorization"] = f"Bearer {await self.token(username)}"
        content = raw if raw is not None else json.dumps(body).encode()
        return await self.http.post(f"/fhir{path}", content=content, headers=headers)


@pytest.fixture
async def fhir(live_server: LiveServer) -> AsyncIterator[Fhir]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        yield Fhir(f"{live_server.url}/fhir", http)


async def a_product(services: Services) -> tuple[Product, str]:
    async with services.db.read() as session:
        product, gtin = (
            await session.execute(
                select(Product, ProductGtin.gtin)
                .join(ProductGtin, ProductGtin.product_id == Product.id)
                .order_by(Product.id, ProductGtin.gtin)
                .limit(1)
            )
        ).one()
    return product, gtin


def dispense(
    identifier: str,
    gtin: str,
    quantity: Any = 1,
    *,
    location: str = "WARD-A",
    patient: str = "Patient/p1",
    lot: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "identifier": [{"system": EHR, "value": identifier}],
        "status": status,
        "quantity": {"value": quantity, "unit": "pack"},
        "location": {"reference": f"Location?identifier={location}"},
        "subject": {"reference": patient},
        "context": {"reference": "Encounter/e1"},
        "whenHandedOver": "2026-12-01T09:30:00+01:00",
    }
    coding = [{"system": GTIN_SYSTEM, "code": gtin}]
    if lot is None:
        resource["medicationCodeableConcept"] = {"coding": coding}
    else:
        resource["contained"] = [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"coding": coding},
                "batch": {"lotNumber": lot},
            }
        ]
        resource["medicationReference"] = {"reference": "#med"}
    return resource


def bundle(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": "MedicationDispense"}}
            for r in resources
        ],
    }


def issue_of(response: httpx.Response) -> dict[str, Any]:
    """The one issue of an OperationOutcome (validated as one)."""
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    body = response.json()
    OperationOutcome.model_validate(body)
    (issue,) = body["issue"]
    return dict(issue)


async def movements_of(services: Services, patient: str) -> list[tuple[str, int, str, str]]:
    async with services.db.read() as session:
        rows = (
            await session.execute(
                select(Movement.kind, Movement.quantity, Lot.batch_number, Movement.reference)
                .join(Lot, Lot.id == Movement.lot_id)
                .where(Movement.patient_reference == patient)
                .order_by(Movement.id)
            )
        ).all()
    return [(k.value, q, b, r) for k, q, b, r in rows]


async def test_metadata_is_a_valid_capability_statement(fhir: Fhir) -> None:
    client = await fhir.client("nurse")
    body = await client.execute("metadata", method="get")
    statement = CapabilityStatement.model_validate(dict(body))
    assert statement.fhirVersion == "4.0.1" and statement.kind == "instance"
    (rest,) = statement.rest
    assert [r.type for r in rest.resource] == ["MedicationDispense"]
    assert {p.name for p in rest.resource[0].searchParam} >= {"patient", "_count"}
    unsigned = await fhir.http.get("/fhir/metadata")
    assert unsigned.status_code == 200


async def test_a_dispense_lands_once_and_entered_in_error_returns_it(
    fhir: Fhir, demo: Demo
) -> None:
    services = demo.services
    product, gtin = await a_product(services)
    ward = demo.locations["WARD-A"]
    sooner = await receive(demo, "WARD-A", 5, batch="FH0", expiry_days=100, product_id=product.id)
    later = await receive(demo, "WARD-A", 10, batch="FH1", expiry_days=300, product_id=product.id)
    client = await fhir.client("nurse")

    made = client.resource("MedicationDispense", **dispense("D-1", gtin, 7))
    await made.save()
    assert made.id is not None and made["status"] == "completed"
    # First-expired-first-out: 5 from FH0, then 2 from FH1; patient and encounter kept.
    assert await movements_of(services, "Patient/p1") == [
        ("DISPENSE", -5, "FH0", "Encounter/e1"),
        ("DISPENSE", -2, "FH1", "Encounter/e1"),
    ]
    assert (await balance_of(services, ward, sooner), await balance_of(services, ward, later)) == (
        0,
        8,
    )

    # The same identifier again: the same resource, no second movement.
    counts = await row_counts(services)
    again = client.resource("MedicationDispense", **dispense("D-1", gtin, 7))
    await again.save()
    assert again.id == made.id
    assert await row_counts(services) == counts
    # ... but not for a different dispense.
    conflict = await fhir.post("/MedicationDispense", dispense("D-1", gtin, 3))
    assert conflict.status_code == 409
    assert issue_of(conflict)["code"] == "conflict"
    assert issue_of(conflict)["expression"] == ["MedicationDispense.identifier"]

    # A named lot is taken as named (not FEFO).
    named = client.resource(
        "MedicationDispense", **dispense("D-2", gtin, 1, lot="FH1", patient="Patient/p9")
    )
    await named.save()
    assert await movements_of(services, "Patient/p9") == [("DISPENSE", -1, "FH1", "Encounter/e1")]

    # entered-in-error (PUT of the stored resource) gives back what the dispense took.
    made["status"] = "entered-in-error"
    await made.save()
    assert made["status"] == "entered-in-error"
    assert await movements_of(services, "Patient/p1") == [
        ("DISPENSE", -5, "FH0", "Encounter/e1"),
        ("DISPENSE", -2, "FH1", "Encounter/e1"),
        ("RETURN", 5, "FH0", "Encounter/e1"),
        ("RETURN", 2, "FH1", "Encounter/e1"),
    ]
    assert (await balance_of(services, ward, sooner), await balance_of(services, ward, later)) == (
        5,
        9,
    )
    check = await services.supervision_checks.check(
        demo.principals["admin"], product.approval_number, "FH0"
    )
    assert check.analysis.total_output == 0  # dispensed 5, returned 5
    # Reversing twice, or replaying the original after it, changes nothing.
    counts = await row_counts(services)
    reversal = await fhir.post(
        "/MedicationDispense", dispense("D-1", gtin, 7, status="entered-in-error")
    )
    assert reversal.status_code == 200 and reversal.json()["status"] == "entered-in-error"
    replay = await fhir.post("/MedicationDispense", dispense("D-1", gtin, 7))
    assert replay.status_code == 200 and replay.json()["id"] == made.id
    assert await row_counts(services) == counts
    fetched = await client.get("MedicationDispense", made.id)
    assert fetched["status"] == "entered-in-error"
    await check_ledger(services)


async def test_a_transaction_bundle_is_all_or_nothing(fhir: Fhir, demo: Demo) -> None:
    services = demo.services
    product, gtin = await a_product(services)
    await receive(demo, "WARD-A", 6, batch="BU1", product_id=product.id)
    client = await fhir.client("nurse")
    by_code = dispense("B-2", gtin, 2, patient="Patient/b")
    by_code["medicationCodeableConcept"] = {
        "coding": [{"system": PRODUCT_SYSTEM, "code": product.approval_number}]
    }
    too_many = bundle(
        dispense("B-1", gtin, 2, patient="Patient/b"), by_code, dispense("B-3", gtin, 5)
    )
    counts = await row_counts(services)
    refused = await fhir.post("", too_many)
    assert refused.status_code == 422
    issue = issue_of(refused)
    assert (issue["code"], issue["expression"]) == (
        "business-rule",
        ["Bundle.entry[2].resource.quantity.value"],
    )
    assert await row_counts(services) == counts

    good = bundle(
        dispense("B-1", gtin, 2, patient="Patient/b"),
        by_code,
        dispense("B-3", gtin, 1, patient="Patient/b"),
    )
    answer = await client.execute("", method="post", data=good)
    Bundle.model_validate(dict(answer))
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 3
    assert [m[:2] for m in await movements_of(services, "Patient/b")] == [
        ("DISPENSE", -2),
        ("DISPENSE", -2),
        ("DISPENSE", -1),
    ]
    counts = await row_counts(services)
    replayed = await client.execute("", method="post", data=good)
    assert [e["response"]["status"] for e in replayed["entry"]] == ["200 OK"] * 3
    assert [e["resource"]["id"] for e in replayed["entry"]] == [
        e["resource"]["id"] for e in answer["entry"]
    ]
    assert await row_counts(services) == counts

    # The patient's dispenses, paged by a FHIR client following `next` links.
    found = (
        await client.resources("MedicationDispense")
        .search(patient="Patient/b")
        .limit(2)
        .fetch_all()
    )
    assert sorted(r["identifier"][0]["value"] for r in found) == ["B-1", "B-2", "B-3"]
    assert all(r["subject"]["reference"] == "Patient/b" for r in found)
    first_page = await fhir.http.get(
        "/fhir/MedicationDispense",
        params={"patient": "Patient/b", "_count": "2"},
        headers={"Authorization": f"Bearer {await fhir.token('pharmacist')}"},
    )
    page = first_page.json()
    Bundle.model_validate(page)
    assert page["total"] == 3 and len(page["entry"]) == 2
    assert [x["relation"] for x in page["link"]] == ["self", "next"]

    # A cabinet retrying the same dispense at once: one movement, one 201, the rest replays.
    token = await fhir.token("nurse")
    twins = await asyncio.gather(
        *(
            fhir.http.post(
                "/fhir/MedicationDispense",
                json=dispense("C-1", gtin, 1, patient="Patient/c"),
                headers={"Authorization": f"Bearer {token}"},
            )
            for _ in range(6)
        )
    )
    assert sorted(r.status_code for r in twins) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in twins}) == 1
    assert [m[:2] for m in await movements_of(services, "Patient/c")] == [("DISPENSE", -1)]
    await check_ledger(services)


async def test_scope_rules_hold(fhir: Fhir, demo: Demo) -> None:
    services = demo.services
    product, gtin = await a_product(services)
    await receive(demo, "WARD-A", 4, batch="SC1", product_id=product.id)
    await receive(demo, "WARD-B", 4, batch="SC1", product_id=product.id)
    counts = await row_counts(services)
    other_ward = await fhir.post("/MedicationDispense", dispense("S-1", gtin, 1), "nurse.b")
    assert other_ward.status_code == 403
    assert issue_of(other_ward)["code"] == "forbidden"
    assert issue_of(other_ward)["expression"] == ["MedicationDispense.location"]
    with pytest.raises(ForbiddenError):
        await (
            (await fhir.client("nurse.b"))
            .resource("MedicationDispense", **dispense("S-1", gtin, 1))
            .save()
        )
    assert await row_counts(services) == counts

    own = await fhir.post("/MedicationDispense", dispense("S-2", gtin, 1, patient="Patient/s"))
    assert own.status_code == 201
    # nurse.b's search covers her ward only; the auditor reads everything; a supplier nothing.
    nurse_b = (
        await (await fhir.client("nurse.b"))
        .resources("MedicationDispense")
        .search(patient="Patient/s")
        .fetch_all()
    )
    auditor = (
        await (await fhir.client("auditor"))
        .resources("MedicationDispense")
        .search(patient="Patient/s")
        .fetch_all()
    )
    assert (len(nurse_b), len(auditor)) == (0, 1)
    supplier = await fhir.http.get(
        "/fhir/MedicationDispense",
        headers={"Authorization": f"Bearer {await fhir.token('supplier')}"},
    )
    assert supplier.status_code == 403 and issue_of(supplier)["code"] == "forbidden"
    # nurse.b may not reverse nurse A's dispense either.
    reverse = await fhir.post(
        "/MedicationDispense",
        dispense("S-2", gtin, 1, patient="Patient/s", status="entered-in-error"),
        "nurse.b",
    )
    assert reverse.status_code == 403

    # An EHR's OAuth2 client: dispense:write dispenses, stock:read alone is refused.
    async def client_token(name: str, scope: str) -> str:
        made = await services.clients.create_client(
            None,
            name=name,
            organisation_id=demo.orgs["St. Aurelia General Hospital"],
            role=Role.PHARMACIST,
            scopes=[scope],
        )
        response = await fhir.http.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(made.client.client_id, made.secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    ehr = AsyncFHIRClient(
        fhir.url, authorization=f"Bearer {await client_token('EHR', 'dispense:write')}"
    )
    await ehr.resource("MedicationDispense", **dispense("S-3", gtin, 1, location="WARD-B")).save()
    reader = await client_token("EHR reports", "stock:read")
    response = await fhir.http.post(
        "/fhir/MedicationDispense",
        json=dispense("S-4", gtin, 1),
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert (
        response.status_code == 403 and "scopes (stock:read)" in issue_of(response)["diagnostics"]
    )


async def test_malformed_input_is_an_operation_outcome_never_a_crash(
    fhir: Fhir, demo: Demo
) -> None:
    services = demo.services
    product, gtin = await a_product(services)
    await receive(demo, "WARD-A", 3, batch="MF1", product_id=product.id)
    unknown_gtin = "04000000000006"  # a valid check digit, in no catalogue
    counts = await row_counts(services)
    d = dispense
    cases: list[tuple[str, Any, bytes | None, int, str, str | None]] = [
        (
            "/MedicationDispense",
            None,
            b'{"resourceType": "MedicationDispense",',
            400,
            "structure",
            None,
        ),
        ("/MedicationDispense", None, b"\xff\xfe{}", 400, "structure", None),
        (
            "/MedicationDispense",
            None,
            json.dumps(d("M-1", gtin)).replace('"value": 1', '"value": NaN').encode(),
            400,
            "structure",
            None,
        ),
        (
            "/MedicationDispense",
            {"resourceType": "Patient", "id": "x"},
            None,
            400,
            "invalid",
            "MedicationDispense.resourceType",
        ),
        ("/MedicationDispense", [1, 2], None, 400, "structure", "MedicationDispense"),
        (
            "/MedicationDispense",
            d("M-1", unknown_gtin),
            None,
            422,
            "not-found",
            "MedicationDispense.medicationCodeableConcept",
        ),
        (
            "/MedicationDispense",
            d("M-1", "04000000000007"),
            None,
            422,
            "value",
            "MedicationDispense.medicationCodeableConcept.coding[0].code",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, location="NOWHERE"),
            None,
            422,
            "not-found",
            "MedicationDispense.location",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, 4),
            None,
            422,
            "business-rule",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, "NaN"),
            None,
            400,
            "invalid",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, -1),
            None,
            422,
            "value",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, 0),
            None,
            422,
            "value",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, 1.5),
            None,
            422,
            "value",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, 10**12),
            None,
            422,
            "value",
            "MedicationDispense.quantity.value",
        ),
        (
            "/MedicationDispense",
            None,
            json.dumps(d("M-1", gtin)).replace('"value": 1', '"value": 1e400').encode(),
            422,
            "value",
            "MedicationDispense.quantity.value",
        ),
        ("/MedicationDispense", d("M-\u0000", gtin), None, 400, "invalid", "identifier[0].value"),
        (
            "/MedicationDispense",
            d("M-1", gtin, lot="NOLOT"),
            None,
            422,
            "not-found",
            "MedicationDispense.contained",
        ),
        (
            "/MedicationDispense",
            {**d("M-1", gtin), "identifier": []},
            None,
            422,
            "required",
            "MedicationDispense.identifier",
        ),
        (
            "/MedicationDispense",
            d("M-1", gtin, status="in-progress"),
            None,
            422,
            "not-supported",
            "MedicationDispense.status",
        ),
        (
            "/MedicationDispense",
            d("NEVER", gtin, status="entered-in-error"),
            None,
            404,
            "not-found",
            "MedicationDispense.identifier",
        ),
        (
            "/MedicationDispense",
            {**d("M-1", gtin), "whenHandedOver": "2999-01-01T00:00:00Z"},
            None,
            422,
            "value",
            "MedicationDispense.whenHandedOver",
        ),
        ("", bundle(d("M-1", gtin), kind="batch"), None, 422, "not-supported", "Bundle.type"),
        (
            "",
            bundle(d("M-1", gtin), {"resourceType": "Patient"}),
            None,
            400,
            "invalid",
            "Bundle.entry[1].resource.resourceType",
        ),
        (
            "",
            bundle(d("M-1", gtin), d("M-1", gtin)),
            None,
            422,
            "duplicate",
            "Bundle.entry[1].resource.identifier",
        ),
        ("", d("M-1", gtin), None, 400, "invalid", "resourceType"),
    ]
    for path, body, raw, status, code, expression in cases:
        response = await fhir.post(path, body, raw=raw)
        assert response.status_code == status, (path, body, raw, response.text)
        issue = issue_of(response)
        assert issue["code"] == code, (body, raw, issue)
        if expression is not None:
            assert any(e.endswith(expression) for e in issue["expression"]), (expression, issue)
    unauthenticated = await fhir.post("/MedicationDispense", d("M-1", gtin), username=None)
    assert unauthenticated.status_code == 401 and issue_of(unauthenticated)["code"] == "login"
    forged = await fhir.http.post(
        "/fhir/MedicationDispense", json=d("M-1", gtin), headers={"Authorization": "Bearer x.y.z"}
    )
    assert forged.status_code == 401
    assert await row_counts(services) == counts
    assert MovementKind.DISPENSE  # nothing was dispensed by any of the above


async def test_a_body_over_the_size_limit_is_a_413_operation_outcome(fhir: Fhir) -> None:
    """Refused before it is read or parsed, in the shape FHIR clients read (not GraphQL's),
    whether its length is declared or it comes chunked; /graphql keeps its own shape."""
    token = await fhir.token("nurse")
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"}
    big = b" " * (256 * 1024 + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (64 * 1024)

    for path, content in (
        ("/fhir/MedicationDispense", big),
        ("/fhir", big),
        ("/fhir/MedicationDispense/1", chunks()),
    ):
        method = "PUT" if path.endswith("/1") else "POST"
        response = await fhir.http.request(method, path, content=content, headers=headers)
        assert response.status_code == 413, (path, response.text)
        issue = issue_of(response)
        assert issue["severity"] == "error" and issue["code"] == "too-costly", issue
        assert "262144 bytes" in issue["diagnostics"]
    response = await fhir.http.post("/graphql", content=big, headers=headers)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
