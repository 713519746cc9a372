"""Procurement on both databases: a purchase order from draft to received, shipments that move
stock only through the ledger (SHIP by the sender at its origin, RECEIVE by the receiver at the
destination), discrepancies recorded instead of hidden, every illegal transition refused by
name, each party confined to its own orders, concurrent receipts that never double-count,
overdue alerts, and live shipment updates over a real websocket."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.alerts.models import Alert, AlertKind
from server.catalog.models import Lot, ProductGtin
from server.core import audit
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.core.numbering import document_number, next_sequence
from server.core.security import Role
from server.demo import DEMO_PASSWORD
from server.inventory.models import Movement, MovementKind
from server.network.models import LocationKind, OrganisationKind
from server.purchasing import rules as order_rules
from server.purchasing.models import PurchaseOrder, PurchaseOrderStatus
from server.purchasing.rules import OrderAction
from server.purchasing.service import OrderLineFields
from server.scanning.gs1 import GS
from server.shipments import rules as shipment_rules
from server.shipments.models import Discrepancy, Shipment, ShipmentLine, ShipmentStatus
from server.shipments.service import LineReceiptCommand, ShipmentLineFields
from tests.conftest import (
    Caller,
    Demo,
    LiveServer,
    balance_of,
    first_product_id,
    gid,
    receive,
    row_counts,
    token_for,
    wait_for_subscribers,
)
from tests.wsclient import GraphQLWebSocket

ERRORS = "errors { code field message }"
PO_FIELDS = """
  id number status expectedDeliveryDate submittedAt acknowledgedAt closedAt cancelReason total
  supplier { id name } buyer { name } deliverTo { code } createdBy { username }
  lines { id quantity unitPrice receivedQuantity outstandingQuantity contractPrice product { id } }
"""
SHIPMENT_FIELDS = """
  id number status dispatchedAt deliveredAt receivedAt
  sender { name } receiver { name } origin { code } destination { code }
  purchaseOrder { id number status }
  lines {
    id quantity receivedQuantity damagedQuantity outstandingQuantity serials
    lot { id batchNumber } purchaseOrderLine { id }
  }
  events { status locationNote actor { username } }
  discrepancies {
    kind quantity note details lot { batchNumber } line { id } recordedBy { username }
  }
"""
CREATE_PO = f"""
mutation($input: CreatePurchaseOrderInput!) {{
  createPurchaseOrder(input: $input) {{ purchaseOrder {{ {PO_FIELDS} }} {ERRORS} }}
}}"""
SUBMIT_PO = f"""
mutation($order: ID!, $date: Date) {{
  submitPurchaseOrder(input: {{ id: $order, expectedDeliveryDate: $date }}) {{
    purchaseOrder {{ {PO_FIELDS} }} {ERRORS}
  }}
}}"""
ACK_PO = f"""
mutation($order: ID!) {{
  acknowledgePurchaseOrder(input: {{ id: $order }}) {{ purchaseOrder {{ {PO_FIELDS} }} {ERRORS} }}
}}"""
CANCEL_PO = f"""
mutation($order: ID!, $reason: String!) {{
  cancelPurchaseOrder(input: {{ id: $order, reason: $reason }}) {{
    purchaseOrder {{ {PO_FIELDS} }} {ERRORS}
  }}
}}"""
ADD_LINE = f"""
mutation($order: ID!, $line: PurchaseOrderLineInput!) {{
  addPurchaseOrderLine(input: {{ id: $order, line: $line }}) {{
    purchaseOrder {{ {PO_FIELDS} }} {ERRORS}
  }}
}}"""
UPDATE_LINE = f"""
mutation($line: ID!, $quantity: Int, $unitPrice: Decimal) {{
  updatePurchaseOrderLine(input: {{ id: $line, quantity: $quantity, unitPrice: $unitPrice }}) {{
    purchaseOrder {{ {PO_FIELDS} }} {ERRORS}
  }}
}}"""
REMOVE_LINE = f"""
mutation($line: ID!) {{
  removePurchaseOrderLine(input: {{ id: $line }}) {{ purchaseOrder {{ {PO_FIELDS} }} {ERRORS} }}
}}"""
CREATE_SHIPMENT = f"""
mutation($input: CreateShipmentInput!) {{
  createShipment(input: $input) {{ shipment {{ {SHIPMENT_FIELDS} }} {ERRORS} }}
}}"""
UPDATE_STATUS = f"""
mutation($shipment: ID!, $status: ShipmentStatus!, $note: String) {{
  updateShipmentStatus(input: {{ id: $shipment, status: $status, locationNote: $note }}) {{
    shipment {{ {SHIPMENT_FIELDS} }} {ERRORS}
  }}
}}"""
RECEIVE = f"""
mutation(
  $shipment: ID!, $line: ID, $quantity: Int!, $damaged: Int! = 0, $lot: ReceivedLotInput,
  $barcode: String, $over: Boolean! = false, $key: String, $note: String
) {{
  receiveShipmentLine(input: {{
    id: $shipment, line: $line, quantity: $quantity, damagedQuantity: $damaged,
    lot: $lot, barcode: $barcode, declareOver: $over, idempotencyKey: $key, note: $note
  }}) {{
    shipment {{ id status }}
    line {{ id quantity receivedQuantity damagedQuantity }}
    purchaseOrder {{ id status }}
    movements {{
      id kind quantity balanceAfter reference actor
      location {{ code }} organisation {{ name }} counterparty {{ name }} lot {{ batchNumber }}
    }}
    discrepancies {{ kind quantity details lot {{ batchNumber }} }}
    replayed {ERRORS}
  }}
}}"""
COMPLETE = f"""
mutation($shipment: ID!, $note: String) {{
  completeShipmentReceipt(input: {{ id: $shipment, note: $note }}) {{
    shipment {{ {SHIPMENT_FIELDS} }}
    shortDiscrepancies {{ kind quantity lot {{ batchNumber }} details }}
    {ERRORS}
  }}
}}"""
PO = f"query($id: ID!) {{ purchaseOrder(id: $id) {{ {PO_FIELDS} shipments {{ id }} }} }}"
SHIPMENT = f"query($id: ID!) {{ shipment(id: $id) {{ {SHIPMENT_FIELDS} }} }}"
PO_LIST = """
query($supplier: ID, $status: PurchaseOrderStatus) {
  purchaseOrders(first: 50, supplier: $supplier, status: $status) {
    edges { node { id number status supplier { name } } }
  }
}"""
SHIPMENT_LIST = "query { shipments(first: 50) { edges { node { id number status } } } }"
SUPPLIER = """
query($id: ID!) {
  supplier(id: $id) {
    id name kind organisation { id }
    contacts { id name role email phone }
    contracts { id reference validFrom validUntil validToday buyer { name }
                lines { unitPrice leadTimeDays minimumOrderQuantity product { id } } }
    purchaseOrders(first: 10) { edges { node { id number status } } }
    performance { shipmentsReceived orderedQuantity }
  }
}"""
SUPPLIERS = "query { suppliers(first: 20) { edges { node { id name kind } } } }"
ADD_CONTACT = f"""
mutation($input: SupplierContactInput!) {{
  addSupplierContact(input: $input) {{ contact {{ id name role email phone }} {ERRORS} }}
}}"""
REMOVE_CONTACT = f"""
mutation($contact: ID!) {{
  removeSupplierContact(input: {{ id: $contact }}) {{ removedId {ERRORS} }}
}}"""
CREATE_CONTRACT = f"""
mutation($input: CreateContractInput!) {{
  createContract(input: $input) {{
    contract {{ id reference validFrom validUntil supplier {{ name }} buyer {{ name }}
               lines {{ unitPrice leadTimeDays minimumOrderQuantity product {{ id }} }} }}
    {ERRORS}
  }}
}}"""


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class World:
    demo: Demo
    http: httpx.AsyncClient
    actors: dict[str, Caller]
    products: list[int]

    def __getattr__(self, name: str) -> Caller:
        if name in self.actors:
            return self.actors[name]
        raise AttributeError(name)

    @property
    def whs(self) -> str:
        return gid("Supplier", self.demo.orgs["MedDistri Wholesale"])

    def location(self, code: str) -> str:
        return gid("Location", self.demo.locations[code])

    def product(self, index: int) -> str:
        return gid("Product", self.products[index])


@pytest.fixture
async def world(demo: Demo, client: httpx.AsyncClient, as_user: Any) -> World:
    actors = {}
    for username in ("admin", "pharmacist", "warehouse", "nurse", "supplier", "auditor"):
        actors[username] = await as_user(username)
    products = [await first_product_id(demo.services, i) for i in range(3)]
    return World(demo, client, actors, products)


async def second_supplier(world: World) -> Caller:
    """Another wholesaler with its own SUPPLIER user."""
    network, admin = world.demo.services.network, world.demo.principals["admin"]
    org = await network.create_organisation(
        admin, name="Second Supply GmbH", kind=OrganisationKind.WHOLESALER
    )
    await network.create_location(
        admin, organisation_id=org.id, code="SEC-DC", name="Second DC", kind=LocationKind.WAREHOUSE
    )
    await network.create_user(
        admin,
        username="supplier2",
        full_name="Sid Second",
        password=DEMO_PASSWORD,
        roles=[Role.SUPPLIER],
        organisation_id=org.id,
    )
    return Caller(world.http, await token_for(world.http, "supplier2"), "supplier2")


async def wholesaler_stock(world: World, product: int, quantity: int, batch: str) -> Lot:
    """Stock the wholesaler holds at WHS-DC, so a dispatch has something to ship."""
    lot_id = await receive(
        world.demo, "WHS-DC", quantity, batch=batch, product_id=world.products[product]
    )
    async with world.demo.services.db.read() as session:
        lot = await session.get(Lot, lot_id)
    assert lot is not None
    return lot


async def acknowledged_order(
    world: World, lines: list[tuple[int, int, str]], deliver_to: str = "HOSP-CP"
) -> dict[str, Any]:
    """A PO (product index, quantity, price) that is submitted and acknowledged."""
    created = await world.pharmacist.ok(
        CREATE_PO,
        input={
            "supplier": world.whs,
            "deliverTo": world.location(deliver_to),
            "lines": [
                {"product": world.product(p), "quantity": q, "unitPrice": price}
                for p, q, price in lines
            ],
            "expectedDeliveryDate": (utcnow().date() + timedelta(days=7)).isoformat(),
        },
    )
    order_id = created["purchaseOrder"]["id"]
    await world.pharmacist.ok(SUBMIT_PO, order=order_id)
    return dict((await world.supplier.ok(ACK_PO, order=order_id))["purchaseOrder"])


async def planned_shipment(
    world: World, order: dict[str, Any], lines: list[tuple[int, Lot, int]]
) -> dict[str, Any]:
    """A shipment by the supplier: (order line index, lot, quantity)."""
    payload = await world.supplier.ok(
        CREATE_SHIPMENT,
        input={
            "purchaseOrder": order["id"],
            "carrier": "SwissPost",
            "lines": [
                {
                    "purchaseOrderLine": order["lines"][i]["id"],
                    "batchNumber": lot.batch_number,
                    "expiryDate": lot.expiry_date.isoformat(),
                    "quantity": q,
                }
                for i, lot, q in lines
            ],
        },
    )
    return dict(payload["shipment"])


async def delivered_shipment(
    world: World, order: dict[str, Any], lines: list[tuple[int, Lot, int]]
) -> dict[str, Any]:
    shipment = await planned_shipment(world, order, lines)
    for status in ("DISPATCHED", "IN_TRANSIT", "DELIVERED"):
        shipment = (await world.supplier.ok(UPDATE_STATUS, shipment=shipment["id"], status=status))[
            "shipment"
        ]
    return dict(shipment)


async def audit_since(world: World, after_id: int) -> list[tuple[str, str, str, str]]:
    async with world.demo.services.db.read() as session:
        rows = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.id > after_id).order_by(AuditEvent.id)
            )
        ).scalars()
        return [(e.action, e.actor_name, e.role, e.entity_type) for e in rows]


async def last_audit_id(world: World) -> int:
    async with world.demo.services.db.read() as session:
        return int((await session.execute(select(func.max(AuditEvent.id)))).scalar_one() or 0)


async def state(world: World) -> dict[str, Any]:
    """Everything a refused call must leave as it was."""
    counts: dict[str, Any] = dict(await row_counts(world.demo.services))
    async with world.demo.services.db.read() as session:
        for model in (PurchaseOrder, Shipment, Discrepancy, Alert):
            counts[model.__tablename__] = (
                await session.execute(select(func.count()).select_from(model))
            ).scalar_one()
        counts["order_status"] = (
            await session.execute(select(PurchaseOrder.id, PurchaseOrder.status).order_by("id"))
        ).all()
        counts["shipment_status"] = (
            await session.execute(select(Shipment.id, Shipment.status).order_by("id"))
        ).all()
        counts["received"] = (
            await session.execute(
                select(ShipmentLine.id, ShipmentLine.received_quantity).order_by("id")
            )
        ).all()
    return counts


def pk(global_id: str) -> int:
    from strawberry.relay import GlobalID

    return int(GlobalID.from_id(global_id).node_id)


# --- pure rules ----------------------------------------------------------------------------------


def test_order_state_machine_names_the_current_state() -> None:
    assert (
        order_rules.check_order_action("PO-1", PurchaseOrderStatus.DRAFT, OrderAction.SUBMIT)
        is PurchaseOrderStatus.SUBMITTED
    )
    with pytest.raises(order_rules.InvalidTransition) as refused:
        order_rules.check_order_action("PO-1", PurchaseOrderStatus.RECEIVED, OrderAction.CANCEL)
    assert refused.value.code.value == "INVALID_TRANSITION"
    assert refused.value.current == "RECEIVED"
    assert "PO-1 is RECEIVED" in refused.value.message
    assert order_rules.order_status_after_receipt(
        PurchaseOrderStatus.ACKNOWLEDGED, [(10, 4), (5, 0)]
    ) is (PurchaseOrderStatus.PARTIALLY_RECEIVED)
    assert (
        order_rules.order_status_after_receipt(
            PurchaseOrderStatus.PARTIALLY_RECEIVED, [(10, 10), (5, 6)]
        )
        is PurchaseOrderStatus.RECEIVED
    )
    assert (
        order_rules.order_status_after_receipt(PurchaseOrderStatus.ACKNOWLEDGED, [(10, 0)])
        is PurchaseOrderStatus.ACKNOWLEDGED
    )


def test_receipt_arithmetic() -> None:
    plan = shipment_rules.plan_line_receipt(
        shipped=10,
        received=0,
        damaged=0,
        good_now=8,
        damaged_now=2,
        declare_over=False,
        line_label="line 1",
    )
    assert (plan.good, plan.damaged, plan.over) == (8, 2, 0)
    with pytest.raises(shipment_rules.AlreadyReceived, match="already fully received"):
        shipment_rules.plan_line_receipt(
            shipped=10,
            received=8,
            damaged=2,
            good_now=1,
            damaged_now=0,
            declare_over=False,
            line_label="line 1",
        )
    over = shipment_rules.plan_line_receipt(
        shipped=10,
        received=8,
        damaged=0,
        good_now=5,
        damaged_now=0,
        declare_over=True,
        line_label="line 1",
    )
    assert over.over == 3
    assert shipment_rules.shortfall(10, 6, 1) == 3
    assert shipment_rules.shortfall(10, 12, 0) == 0
    assert document_number("PO", 2026, 7) == "PO-2026-00007"
    assert next_sequence("PO", 2026, ["PO-2026-00041"]) == 42
    assert next_sequence("PO", 2026, []) == 1


# --- the whole journey -------------------------------------------------------------------------


async def test_order_to_receipt_moves_stock_only_through_the_ledger(world: World) -> None:
    demo, services = world.demo, world.demo.services
    whs_dc, cp = demo.locations["WHS-DC"], demo.locations["HOSP-CP"]
    lot_a = await wholesaler_stock(world, 0, 50, "LC-A1")
    lot_b = await wholesaler_stock(world, 1, 30, "LC-B1")
    year = utcnow().year

    # A contract prices product 0; product 1 is priced by hand.
    await world.pharmacist.ok(
        CREATE_CONTRACT,
        input={
            "supplier": world.whs,
            "reference": "MD-2026",
            "validFrom": (utcnow().date() - timedelta(days=30)).isoformat(),
            "validUntil": (utcnow().date() + timedelta(days=300)).isoformat(),
            "lines": [
                {
                    "product": world.product(0),
                    "unitPrice": "2.50",
                    "leadTimeDays": 5,
                    "minimumOrderQuantity": 10,
                }
            ],
        },
    )
    mark = await last_audit_id(world)
    created = await world.pharmacist.ok(
        CREATE_PO,
        input={
            "supplier": world.whs,
            "deliverTo": world.location("HOSP-CP"),
            "lines": [
                {"product": world.product(0), "quantity": 20},
                {"product": world.product(1), "quantity": 10, "unitPrice": "4.00"},
            ],
            "note": "monthly top-up",
        },
    )
    order = created["purchaseOrder"]
    assert order["number"] == f"PO-{year}-00001"
    assert order["status"] == "DRAFT"
    assert order["buyer"]["name"] == "St. Aurelia General Hospital"
    assert order["createdBy"] == {"username": "pharmacist"}
    assert [Decimal(x["unitPrice"]) for x in order["lines"]] == [Decimal("2.5"), Decimal("4")]
    assert Decimal(order["lines"][0]["contractPrice"]) == Decimal("2.5")
    assert order["lines"][1]["contractPrice"] is None
    assert Decimal(order["total"]) == Decimal("90")

    submitted = (await world.pharmacist.ok(SUBMIT_PO, order=order["id"]))["purchaseOrder"]
    assert submitted["status"] == "SUBMITTED"
    # No date given: today + the contract's lead time.
    assert submitted["expectedDeliveryDate"] == (utcnow().date() + timedelta(days=5)).isoformat()
    order = (await world.supplier.ok(ACK_PO, order=order["id"]))["purchaseOrder"]
    assert order["status"] == "ACKNOWLEDGED" and order["acknowledgedAt"]
    assert (await audit_since(world, mark)) == [
        ("purchase_order.create", "pharmacist", "PHARMACIST", "PurchaseOrder"),
        ("purchase_order.submit", "pharmacist", "PHARMACIST", "PurchaseOrder"),
        ("purchase_order.acknowledge", "supplier", "SUPPLIER", "PurchaseOrder"),
    ]

    # The supplier announces the shipment; its origin defaults to its only location.
    mark = await last_audit_id(world)
    shipment = await planned_shipment(world, order, [(0, lot_a, 20), (1, lot_b, 10)])
    assert shipment["number"] == f"SH-{year}-00001"
    assert shipment["status"] == "PLANNED"
    assert shipment["origin"]["code"] == "WHS-DC"
    assert shipment["destination"]["code"] == "HOSP-CP"
    assert shipment["sender"]["name"] == "MedDistri Wholesale"
    assert await balance_of(services, whs_dc, lot_a.id) == 50  # planning moves nothing

    # Dispatch: SHIP at WHS-DC, reported by the wholesaler, naming the hospital.
    dispatched = (
        await world.supplier.ok(UPDATE_STATUS, shipment=shipment["id"], status="DISPATCHED")
    )["shipment"]
    assert dispatched["status"] == "DISPATCHED" and dispatched["dispatchedAt"]
    assert await balance_of(services, whs_dc, lot_a.id) == 30
    assert await balance_of(services, whs_dc, lot_b.id) == 20
    async with services.db.read() as session:
        ships = (
            (
                await session.execute(
                    select(Movement).where(Movement.kind == MovementKind.SHIP).order_by(Movement.id)
                )
            )
            .scalars()
            .all()
        )
    assert [(m.location_id, m.lot_id, m.quantity) for m in ships] == [
        (whs_dc, lot_a.id, -20),
        (whs_dc, lot_b.id, -10),
    ]
    assert {m.organisation_id for m in ships} == {demo.orgs["MedDistri Wholesale"]}
    assert {m.counterparty_id for m in ships} == {demo.orgs["St. Aurelia General Hospital"]}
    assert {m.reference for m in ships} == {shipment["number"]}
    assert {m.actor_id for m in ships} == {demo.users["supplier"]}

    moving = (
        await world.supplier.ok(
            UPDATE_STATUS, shipment=shipment["id"], status="IN_TRANSIT", note="Zurich hub"
        )
    )["shipment"]
    moving = (
        await world.supplier.ok(
            UPDATE_STATUS, shipment=shipment["id"], status="IN_TRANSIT", note="Basel depot"
        )
    )["shipment"]
    delivered = (
        await world.supplier.ok(UPDATE_STATUS, shipment=shipment["id"], status="DELIVERED")
    )["shipment"]
    assert delivered["deliveredAt"] and moving["status"] == "IN_TRANSIT"
    assert await balance_of(services, cp, lot_a.id) == 0  # delivered is not received
    assert (await audit_since(world, mark)) == [
        ("shipment.create", "supplier", "SUPPLIER", "Shipment"),
        ("stock.ship", "supplier", "SUPPLIER", "Movement"),
        ("stock.ship", "supplier", "SUPPLIER", "Movement"),
        ("shipment.dispatched", "supplier", "SUPPLIER", "Shipment"),
        ("shipment.in_transit", "supplier", "SUPPLIER", "Shipment"),
        ("shipment.in_transit", "supplier", "SUPPLIER", "Shipment"),
        ("shipment.delivered", "supplier", "SUPPLIER", "Shipment"),
    ]

    # The hospital receives line by line at HOSP-CP.
    mark = await last_audit_id(world)
    first = await world.pharmacist.ok(
        RECEIVE, shipment=shipment["id"], line=shipment["lines"][0]["id"], quantity=20
    )
    (movement,) = first["movements"]
    assert movement == {
        "id": movement["id"],
        "kind": "RECEIVE",
        "quantity": 20,
        "balanceAfter": 20,
        "reference": shipment["number"],
        "actor": "pharmacist",
        "location": {"code": "HOSP-CP"},
        "organisation": {"name": "St. Aurelia General Hospital"},
        "counterparty": {"name": "MedDistri Wholesale"},
        "lot": {"batchNumber": "LC-A1"},
    }
    assert first["discrepancies"] == []
    assert first["purchaseOrder"]["status"] == "PARTIALLY_RECEIVED"
    assert first["line"]["receivedQuantity"] == 20
    assert await balance_of(services, cp, lot_a.id) == 20
    assert (await audit_since(world, mark)) == [
        ("stock.receive", "pharmacist", "PHARMACIST", "Movement"),
        ("shipment.receive_line", "pharmacist", "PHARMACIST", "ShipmentLine"),
        ("purchase_order.receipt", "pharmacist", "PHARMACIST", "PurchaseOrder"),
    ]

    second = await world.pharmacist.ok(
        RECEIVE, shipment=shipment["id"], line=shipment["lines"][1]["id"], quantity=10
    )
    assert second["purchaseOrder"]["status"] == "RECEIVED"
    assert await balance_of(services, cp, lot_b.id) == 10

    mark = await last_audit_id(world)
    done = await world.pharmacist.ok(COMPLETE, shipment=shipment["id"], note="all good")
    assert done["shortDiscrepancies"] == []
    final = done["shipment"]
    assert final["status"] == "RECEIVED" and final["receivedAt"]
    assert [(e["status"], e["actor"]["username"], e["locationNote"]) for e in final["events"]] == [
        ("PLANNED", "supplier", None),
        ("DISPATCHED", "supplier", None),
        ("IN_TRANSIT", "supplier", "Zurich hub"),
        ("IN_TRANSIT", "supplier", "Basel depot"),
        ("DELIVERED", "supplier", None),
        ("RECEIVED", "pharmacist", "all good"),
    ]
    assert final["discrepancies"] == []
    assert [x["quantity"] for x in final["lines"]] == [20, 10]  # the sender's numbers stand
    assert (await audit_since(world, mark)) == [
        ("shipment.received", "pharmacist", "PHARMACIST", "Shipment"),
    ]
    po = await world.pharmacist.call(PO, id=order["id"])
    assert po["status"] == "RECEIVED" and po["closedAt"]
    assert [(x["receivedQuantity"], x["outstandingQuantity"]) for x in po["lines"]] == [
        (20, 0),
        (10, 0),
    ]
    assert po["shipments"] == [{"id": shipment["id"]}]
    # Shipped equals received on this edge, and the audit chain holds.
    assert (
        await balance_of(services, whs_dc, lot_a.id) + await balance_of(services, cp, lot_a.id)
        == 50
    )
    async with services.db.read() as session:
        assert (await audit.verify(session)).ok


async def test_partial_receipt_then_completion_records_short(world: World) -> None:
    lot = await wholesaler_stock(world, 0, 40, "LC-P1")
    order = await acknowledged_order(world, [(0, 30, "1.00")])
    shipment = await delivered_shipment(world, order, [(0, lot, 20)])
    line = shipment["lines"][0]["id"]
    part = await world.pharmacist.ok(RECEIVE, shipment=shipment["id"], line=line, quantity=12)
    assert part["purchaseOrder"]["status"] == "PARTIALLY_RECEIVED"
    assert part["shipment"]["status"] == "DELIVERED"  # still receiving
    done = await world.pharmacist.ok(COMPLETE, shipment=shipment["id"])
    (short,) = done["shortDiscrepancies"]
    assert short["kind"] == "SHORT" and short["quantity"] == 8
    assert short["lot"]["batchNumber"] == "LC-P1"
    assert short["details"] == {
        "shipment_line_id": pk(line),
        "shipped": 20,
        "received": 12,
        "damaged": 0,
    }
    assert done["shipment"]["lines"][0]["quantity"] == 20  # not adjusted to 12
    assert done["shipment"]["lines"][0]["outstandingQuantity"] == 8
    po = await world.pharmacist.call(PO, id=order["id"])
    assert po["status"] == "PARTIALLY_RECEIVED"
    assert po["lines"][0]["receivedQuantity"] == 12
    assert await balance_of(world.demo.services, world.demo.locations["HOSP-CP"], lot.id) == 12


async def test_damaged_over_and_wrong_lot_are_recorded_not_hidden(world: World) -> None:
    services, cp = world.demo.services, world.demo.locations["HOSP-CP"]
    lot_a = await wholesaler_stock(world, 0, 40, "LC-D1")
    lot_b = await wholesaler_stock(world, 1, 40, "LC-D2")
    order = await acknowledged_order(world, [(0, 10, "1.00"), (1, 5, "2.00")])
    shipment = await delivered_shipment(world, order, [(0, lot_a, 10), (1, lot_b, 5)])
    line_a, line_b = (x["id"] for x in shipment["lines"])
    sid = shipment["id"]

    damaged = await world.pharmacist.ok(RECEIVE, shipment=sid, line=line_a, quantity=7, damaged=2)
    assert damaged["movements"][0]["quantity"] == 7  # damaged packs never enter stock
    assert [(d["kind"], d["quantity"]) for d in damaged["discrepancies"]] == [("DAMAGED", 2)]
    assert damaged["line"]["damagedQuantity"] == 2
    assert await balance_of(services, cp, lot_a.id) == 7

    # One pack is still owed: two more are refused, naming what was received...
    message = await world.pharmacist.refused(
        RECEIVE, "ALREADY_RECEIVED", shipment=sid, line=line_a, quantity=2
    )
    assert "7 received and 2 damaged of 10 shipped" in message
    # ...unless the surplus is declared: OVER 1.
    over = await world.pharmacist.ok(RECEIVE, shipment=sid, line=line_a, quantity=2, over=True)
    assert [(d["kind"], d["quantity"]) for d in over["discrepancies"]] == [("OVER", 1)]
    assert await balance_of(services, cp, lot_a.id) == 9

    # The other line arrives as a batch the sender did not declare.
    wrong = await world.pharmacist.ok(
        RECEIVE,
        shipment=sid,
        line=line_b,
        quantity=5,
        lot={
            "batchNumber": "LC-XX",
            "expiryDate": (utcnow().date() + timedelta(days=200)).isoformat(),
        },
    )
    (discrepancy,) = wrong["discrepancies"]
    assert discrepancy["kind"] == "WRONG_LOT" and discrepancy["quantity"] == 5
    assert discrepancy["lot"]["batchNumber"] == "LC-XX"
    assert discrepancy["details"]["expected_batch"] == "LC-D2"
    assert wrong["movements"][0]["lot"]["batchNumber"] == "LC-XX"
    assert await balance_of(services, cp, lot_b.id) == 0
    async with services.db.read() as session:
        actual = (await session.execute(select(Lot).where(Lot.batch_number == "LC-XX"))).scalar()
    assert await balance_of(services, cp, actual.id) == 5

    done = await world.pharmacist.ok(COMPLETE, shipment=sid)
    assert done["shortDiscrepancies"] == []  # every pack is accounted for
    view = done["shipment"]
    assert sorted((d["kind"], d["quantity"]) for d in view["discrepancies"]) == [
        ("DAMAGED", 2),
        ("OVER", 1),
        ("WRONG_LOT", 5),
    ]
    assert [
        (x["quantity"], x["receivedQuantity"], x["damagedQuantity"], x["outstandingQuantity"])
        for x in view["lines"]
    ] == [(10, 9, 2, 0), (5, 5, 0, 0)]
    assert {d["line"]["id"] for d in view["discrepancies"]} == {line_a, line_b}
    po = await world.pharmacist.call(PO, id=order["id"])
    assert po["status"] == "PARTIALLY_RECEIVED"  # 9 of 10 good packs of product 0


async def test_receiving_by_scanning_packs(world: World) -> None:
    services, cp = world.demo.services, world.demo.locations["HOSP-CP"]
    lot = await wholesaler_stock(world, 0, 10, "LC-S1")
    order = await acknowledged_order(world, [(0, 3, "1.00")])
    shipment = await delivered_shipment(world, order, [(0, lot, 3)])
    async with services.db.read() as session:
        gtin = (
            (
                await session.execute(
                    select(ProductGtin.gtin).where(ProductGtin.product_id == world.products[0])
                )
            )
            .scalars()
            .first()
        )

    def datamatrix(batch: str, expiry: date, serial: str) -> str:
        return f"]d201{gtin}17{expiry:%y%m%d}10{batch}{GS}21{serial}"

    # The scan names the lot; the line is found from it.
    ok = await world.pharmacist.ok(
        RECEIVE,
        shipment=shipment["id"],
        quantity=1,
        barcode=datamatrix("LC-S1", lot.expiry_date, "S1"),
    )
    assert ok["discrepancies"] == [] and ok["line"]["receivedQuantity"] == 1
    # A batch that is not on the shipment: WRONG_LOT, and the new lot is created from the scan.
    expiry = utcnow().date() + timedelta(days=400)
    wrong = await world.pharmacist.ok(
        RECEIVE, shipment=shipment["id"], quantity=1, barcode=datamatrix("LC-S9", expiry, "S2")
    )
    assert [(d["kind"], d["details"]["received_batch"]) for d in wrong["discrepancies"]] == [
        ("WRONG_LOT", "LC-S9")
    ]
    assert wrong["line"]["id"] == shipment["lines"][0]["id"]
    # A serial is one pack; a bad barcode is a typed refusal.
    await world.pharmacist.refused(
        RECEIVE,
        "INVALID_INPUT",
        shipment=shipment["id"],
        quantity=2,
        barcode=datamatrix("LC-S1", lot.expiry_date, "S3"),
    )
    await world.pharmacist.refused(
        RECEIVE, "BARCODE_INVALID", shipment=shipment["id"], quantity=1, barcode="]d2017612"
    )
    assert await balance_of(services, cp, lot.id) == 1


async def test_a_receipt_replayed_with_its_key_changes_nothing(world: World) -> None:
    lot = await wholesaler_stock(world, 0, 10, "LC-I1")
    order = await acknowledged_order(world, [(0, 4, "1.00")])
    shipment = await delivered_shipment(world, order, [(0, lot, 4)])
    args = {"shipment": shipment["id"], "line": shipment["lines"][0]["id"], "key": "rcv-1"}
    first = await world.pharmacist.ok(RECEIVE, quantity=3, damaged=1, **args)
    before = await state(world)
    again = await world.pharmacist.ok(RECEIVE, quantity=3, damaged=1, **args)
    assert again["replayed"] is True
    assert [m["id"] for m in again["movements"]] == [m["id"] for m in first["movements"]]
    assert [d["kind"] for d in again["discrepancies"]] == ["DAMAGED"]
    assert await state(world) == before
    await world.pharmacist.refused(RECEIVE, "IDEMPOTENCY_KEY_REUSED", quantity=1, **args)


# --- illegal transitions -----------------------------------------------------------------------


async def test_every_illegal_order_transition_names_the_current_state(world: World) -> None:
    services, demo = world.demo.services, world.demo
    pharmacist, supplier = demo.principals["pharmacist"], demo.principals["supplier"]
    purchasing, shipping = services.purchasing, services.shipments
    lot = await wholesaler_stock(world, 0, 100, "LC-T1")
    supplier_id, cp = demo.orgs["MedDistri Wholesale"], demo.locations["HOSP-CP"]
    due = utcnow().date() + timedelta(days=3)

    async def order_in(status: PurchaseOrderStatus) -> PurchaseOrder:
        order = await purchasing.create_order(
            pharmacist,
            supplier_id=supplier_id,
            deliver_to_id=cp,
            lines=[OrderLineFields(world.products[0], 4, Decimal("1"))],
            expected_delivery_date=due,
        )
        if status is PurchaseOrderStatus.DRAFT:
            return order
        if status is PurchaseOrderStatus.CANCELLED:
            return await purchasing.cancel_order(pharmacist, order.id, "changed our mind")
        order = await purchasing.submit_order(pharmacist, order.id)
        if status is PurchaseOrderStatus.SUBMITTED:
            return order
        order = await purchasing.acknowledge_order(supplier, order.id)
        if status is PurchaseOrderStatus.ACKNOWLEDGED:
            return order
        (po_line,) = [x for x in await _order_lines(world, order.id)]
        shipment = await shipping.create_shipment(
            supplier,
            order_id=order.id,
            lines=[ShipmentLineFields(po_line, lot.batch_number, lot.expiry_date, 4)],
        )
        await shipping.update_shipment_status(supplier, shipment.id, ShipmentStatus.DISPATCHED)
        quantity = 2 if status is PurchaseOrderStatus.PARTIALLY_RECEIVED else 4
        result = await shipping.receive_line(
            pharmacist,
            LineReceiptCommand(
                shipment.id, quantity, line_id=(await _lines(world, shipment.id))[0]
            ),
        )
        assert result.order is not None and result.order.status is status
        return result.order

    orders = {status: await order_in(status) for status in PurchaseOrderStatus}
    before = await state(world)
    tried = 0
    for status, order in orders.items():
        order_gid = gid("PurchaseOrder", order.id)
        line_gid = gid("PurchaseOrderLine", (await _order_lines(world, order.id))[0])
        attempts = {
            OrderAction.SUBMIT: (world.pharmacist, SUBMIT_PO, {"order": order_gid}),
            OrderAction.ACKNOWLEDGE: (world.supplier, ACK_PO, {"order": order_gid}),
            OrderAction.CANCEL: (world.pharmacist, CANCEL_PO, {"order": order_gid, "reason": "x"}),
            OrderAction.EDIT: (
                world.pharmacist,
                ADD_LINE,
                {
                    "order": order_gid,
                    "line": {"product": world.product(1), "quantity": 1, "unitPrice": "1"},
                },
            ),
            OrderAction.SHIP: (
                world.supplier,
                CREATE_SHIPMENT,
                {
                    "input": {
                        "purchaseOrder": order_gid,
                        "lines": [
                            {
                                "purchaseOrderLine": line_gid,
                                "batchNumber": lot.batch_number,
                                "expiryDate": lot.expiry_date.isoformat(),
                                "quantity": 1,
                            }
                        ],
                    }
                },
            ),
        }
        for action, (actor, document, variables) in attempts.items():
            allowed, _ = order_rules.ORDER_ACTIONS[action]
            if status in allowed:
                continue
            message = await actor.refused(document, "INVALID_TRANSITION", **variables)
            assert f"is {status.value}" in message, (status, action, message)
            tried += 1
        if status is not PurchaseOrderStatus.DRAFT:
            for document, variables in (
                (UPDATE_LINE, {"line": line_gid, "quantity": 9}),
                (REMOVE_LINE, {"line": line_gid}),
            ):
                message = await world.pharmacist.refused(
                    document, "INVALID_TRANSITION", **variables
                )
                assert f"is {status.value}" in message
                tried += 1
    # SUBMIT 5, ACKNOWLEDGE 5, CANCEL 3, EDIT 5, SHIP 4, and line edits on 5 non-drafts
    assert tried == 22 + 5 * 2
    assert await state(world) == before


async def test_every_illegal_shipment_transition_names_the_current_state(world: World) -> None:
    demo = world.demo
    shipping = demo.services.shipments
    pharmacist, supplier = demo.principals["pharmacist"], demo.principals["supplier"]
    lot = await wholesaler_stock(world, 0, 100, "LC-T2")
    order = await acknowledged_order(world, [(0, 50, "1.00")])
    po_line = pk(order["lines"][0]["id"])
    steps = [ShipmentStatus.DISPATCHED, ShipmentStatus.IN_TRANSIT, ShipmentStatus.DELIVERED]

    async def shipment_in(status: ShipmentStatus) -> int:
        shipment = await shipping.create_shipment(
            supplier,
            order_id=pk(order["id"]),
            lines=[ShipmentLineFields(po_line, lot.batch_number, lot.expiry_date, 1)],
        )
        if status is ShipmentStatus.CANCELLED:
            await shipping.update_shipment_status(supplier, shipment.id, status)
            return shipment.id
        for step in steps:
            if status is ShipmentStatus.PLANNED:
                break
            await shipping.update_shipment_status(supplier, shipment.id, step)
            if step is status:
                break
        if status is ShipmentStatus.RECEIVED:
            await shipping.complete_receipt(pharmacist, shipment.id)
        return shipment.id

    shipments = {status: await shipment_in(status) for status in ShipmentStatus}
    before = await state(world)
    tried = 0
    for current, shipment_id in shipments.items():
        sid = gid("Shipment", shipment_id)
        line = gid("ShipmentLine", (await _lines(world, shipment_id))[0])
        for target in ShipmentStatus:
            if target in shipment_rules.SHIPMENT_TRANSITIONS[current]:
                continue
            if target is ShipmentStatus.RECEIVED:
                message = await world.pharmacist.refused(
                    COMPLETE, "INVALID_TRANSITION", shipment=sid
                )
            elif target is ShipmentStatus.PLANNED:
                continue  # nothing ever goes back to PLANNED; the API has no way to ask
            else:
                message = await world.supplier.refused(
                    UPDATE_STATUS, "INVALID_TRANSITION", shipment=sid, status=target.value
                )
            assert f"is {current.value}" in message, (current, target, message)
            tried += 1
        if current not in shipment_rules.RECEIVABLE:
            message = await world.pharmacist.refused(
                RECEIVE, "INVALID_TRANSITION", shipment=sid, line=line, quantity=1
            )
            assert f"is {current.value}" in message
            tried += 1
    # PLANNED 3, DISPATCHED 2, IN_TRANSIT 2, DELIVERED 4, RECEIVED 5, CANCELLED 5 + 3 receipts
    assert tried == 24
    # RECEIVED is the receiver's: the sender cannot set it.
    await world.supplier.refused(
        UPDATE_STATUS,
        "INVALID_INPUT",
        shipment=gid("Shipment", shipments[ShipmentStatus.DELIVERED]),
        status="RECEIVED",
    )
    assert await state(world) == before


async def test_cancelling_an_order_cancels_planned_shipments_but_not_moving_ones(
    world: World,
) -> None:
    lot = await wholesaler_stock(world, 0, 20, "LC-C1")
    order = await acknowledged_order(world, [(0, 5, "1.00")])
    planned = await planned_shipment(world, order, [(0, lot, 5)])
    cancelled = await world.pharmacist.ok(CANCEL_PO, order=order["id"], reason="budget freeze")
    assert cancelled["purchaseOrder"]["status"] == "CANCELLED"
    assert cancelled["purchaseOrder"]["cancelReason"] == "budget freeze"
    view = await world.supplier.call(SHIPMENT, id=planned["id"])
    assert view["status"] == "CANCELLED"

    other = await acknowledged_order(world, [(0, 5, "1.00")])
    moving = await planned_shipment(world, other, [(0, lot, 5)])
    await world.supplier.ok(UPDATE_STATUS, shipment=moving["id"], status="DISPATCHED")
    message = await world.pharmacist.refused(
        CANCEL_PO, "INVALID_TRANSITION", order=other["id"], reason="too late"
    )
    assert "is ACKNOWLEDGED" in message and moving["number"] in message


# --- who may do what ----------------------------------------------------------------------------


async def test_a_supplier_sees_and_changes_only_its_own_orders(world: World) -> None:
    lot = await wholesaler_stock(world, 0, 20, "LC-R1")
    order = await acknowledged_order(world, [(0, 5, "1.00")])
    shipment = await planned_shipment(world, order, [(0, lot, 5)])
    other = await second_supplier(world)

    # Their own: visible to MedDistri's user.
    mine = await world.supplier.call(PO, id=order["id"])
    assert mine["number"] == order["number"]
    listed = await world.supplier.call(PO_LIST)
    assert [e["node"]["id"] for e in listed["edges"]] == [order["id"]]

    # Another supplier's, by id: FORBIDDEN, not empty, and naming none of its numbers.
    refusals = [
        await other.forbidden_read(PO, id=order["id"]),
        await other.forbidden_read(SHIPMENT, id=shipment["id"]),
        await other.refused(ACK_PO, "FORBIDDEN", order=order["id"]),
    ]
    secrets = [order["number"], shipment["number"]]
    assert not [m for m in refusals for n in secrets if n in m], refusals
    await other.forbidden_read(PO_LIST, supplier=world.whs)
    await other.forbidden_read(SUPPLIER, id=world.whs)
    assert (await other.call(PO_LIST))["edges"] == []
    assert (await other.call(SHIPMENT_LIST))["edges"] == []
    names = [e["node"]["name"] for e in (await other.call(SUPPLIERS))["edges"]]
    assert names == ["Second Supply GmbH"]
    before = await state(world)
    await other.refused(ACK_PO, "FORBIDDEN", order=order["id"])
    await other.refused(UPDATE_STATUS, "FORBIDDEN", shipment=shipment["id"], status="DISPATCHED")
    await other.refused(
        CREATE_SHIPMENT,
        "FORBIDDEN",
        input={
            "purchaseOrder": order["id"],
            "lines": [
                {
                    "purchaseOrderLine": order["lines"][0]["id"],
                    "batchNumber": "LC-R1",
                    "expiryDate": lot.expiry_date.isoformat(),
                    "quantity": 1,
                }
            ],
        },
    )
    # The supplier itself may not do the buyer's part.
    await world.supplier.refused(CANCEL_PO, "FORBIDDEN", order=order["id"], reason="no")
    await world.supplier.refused(
        RECEIVE, "FORBIDDEN", shipment=shipment["id"], line=shipment["lines"][0]["id"], quantity=1
    )
    await world.supplier.refused(COMPLETE, "FORBIDDEN", shipment=shipment["id"])
    # ...and the buyer may not do the supplier's.
    await world.pharmacist.refused(
        UPDATE_STATUS, "FORBIDDEN", shipment=shipment["id"], status="DISPATCHED"
    )
    assert await state(world) == before


async def test_nurse_cannot_order_and_auditor_reads_everything_but_changes_nothing(
    world: World,
) -> None:
    lot = await wholesaler_stock(world, 0, 20, "LC-R2")
    order = await acknowledged_order(world, [(0, 5, "1.00")])
    shipment = await delivered_shipment(world, order, [(0, lot, 5)])
    draft = (
        await world.pharmacist.ok(
            CREATE_PO,
            input={
                "supplier": world.whs,
                "deliverTo": world.location("HOSP-CP"),
                "lines": [{"product": world.product(0), "quantity": 2, "unitPrice": "1"}],
            },
        )
    )["purchaseOrder"]
    create = {
        "input": {
            "supplier": world.whs,
            "deliverTo": world.location("WARD-A"),
            "lines": [{"product": world.product(0), "quantity": 1, "unitPrice": "1"}],
        }
    }
    before = await state(world)
    await world.nurse.refused(CREATE_PO, "FORBIDDEN", **create)
    await world.nurse.forbidden_read(PO_LIST)
    await world.nurse.forbidden_read(PO, id=order["id"])
    # The warehouse manager orders only for his own locations.
    await world.warehouse.refused(
        CREATE_PO, "FORBIDDEN", input={**create["input"], "deliverTo": world.location("HOSP-CP")}
    )

    # The auditor reads all of it...
    assert (await world.auditor.call(PO, id=order["id"]))["number"] == order["number"]
    assert (await world.auditor.call(SHIPMENT, id=shipment["id"]))["status"] == "DELIVERED"
    assert len((await world.auditor.call(PO_LIST))["edges"]) == 2
    assert len((await world.auditor.call(SHIPMENT_LIST))["edges"]) == 1
    assert (await world.auditor.call(SUPPLIER, id=world.whs))["name"] == "MedDistri Wholesale"
    # ...and changes none of it.
    line = shipment["lines"][0]["id"]
    for document, variables in (
        (CREATE_PO, create),
        (SUBMIT_PO, {"order": draft["id"]}),
        (ACK_PO, {"order": order["id"]}),
        (CANCEL_PO, {"order": order["id"], "reason": "audit"}),
        (ADD_LINE, {"order": draft["id"], "line": {"product": world.product(1), "quantity": 1}}),
        (REMOVE_LINE, {"line": draft["lines"][0]["id"]}),
        (UPDATE_STATUS, {"shipment": shipment["id"], "status": "IN_TRANSIT"}),
        (RECEIVE, {"shipment": shipment["id"], "line": line, "quantity": 1}),
        (COMPLETE, {"shipment": shipment["id"]}),
        (ADD_CONTACT, {"input": {"supplier": world.whs, "name": "Eve"}}),
    ):
        await world.auditor.refused(document, "FORBIDDEN", **variables)
    assert await state(world) == before


async def test_suppliers_contacts_contracts_and_order_history(world: World) -> None:
    added = await world.pharmacist.ok(
        ADD_CONTACT,
        input={
            "supplier": world.whs,
            "name": "Mara Meier",
            "role": "Key account",
            "email": "mara@meddistri.example",
            "phone": "+41 61 000 00 00",
        },
    )
    contact = added["contact"]
    await world.pharmacist.refused(
        ADD_CONTACT, "INVALID_INPUT", input={"supplier": world.whs, "name": "X", "email": "nope"}
    )
    hospital = gid("Supplier", world.demo.orgs["St. Aurelia General Hospital"])
    await world.pharmacist.refused(
        ADD_CONTACT, "INVALID_INPUT", input={"supplier": hospital, "name": "Not a supplier"}
    )
    await world.supplier.refused(
        ADD_CONTACT, "FORBIDDEN", input={"supplier": world.whs, "name": "Self-service"}
    )
    today = utcnow().date()
    contract = {
        "supplier": world.whs,
        "reference": "MD-FRAME",
        "validFrom": (today - timedelta(days=1)).isoformat(),
        "validUntil": (today + timedelta(days=365)).isoformat(),
        "lines": [
            {
                "product": world.product(0),
                "unitPrice": "3.2",
                "leadTimeDays": 4,
                "minimumOrderQuantity": 12,
            }
        ],
    }
    made = (await world.pharmacist.ok(CREATE_CONTRACT, input=contract))["contract"]
    assert made["buyer"]["name"] == "St. Aurelia General Hospital"
    assert made["lines"][0]["minimumOrderQuantity"] == 12
    await world.pharmacist.refused(CREATE_CONTRACT, "DUPLICATE", input=contract)
    await world.pharmacist.refused(
        CREATE_CONTRACT,
        "INVALID_INPUT",
        input={**contract, "reference": "BACKWARDS", "validUntil": "2000-01-01"},
    )
    # Below the contract's minimum order: refused, naming it; without a price and contract: too.
    message = await world.pharmacist.refused(
        CREATE_PO,
        "INVALID_INPUT",
        input={
            "supplier": world.whs,
            "deliverTo": world.location("HOSP-CP"),
            "lines": [{"product": world.product(0), "quantity": 5}],
        },
    )
    assert "minimum order" in message and "12" in message
    await world.pharmacist.refused(
        CREATE_PO,
        "INVALID_INPUT",
        input={
            "supplier": world.whs,
            "deliverTo": world.location("HOSP-CP"),
            "lines": [{"product": world.product(2), "quantity": 5}],
        },
    )
    draft = (
        await world.pharmacist.ok(
            CREATE_PO,
            input={
                "supplier": world.whs,
                "deliverTo": world.location("HOSP-CP"),
                "lines": [{"product": world.product(0), "quantity": 12}],
            },
        )
    )["purchaseOrder"]
    assert Decimal(draft["lines"][0]["unitPrice"]) == Decimal("3.2")
    edited = (
        await world.pharmacist.ok(
            ADD_LINE,
            order=draft["id"],
            line={"product": world.product(2), "quantity": 3, "unitPrice": "7.5"},
        )
    )["purchaseOrder"]
    assert len(edited["lines"]) == 2
    await world.pharmacist.refused(
        ADD_LINE,
        "DUPLICATE",
        order=draft["id"],
        line={"product": world.product(2), "quantity": 3, "unitPrice": "7.5"},
    )
    edited = (await world.pharmacist.ok(UPDATE_LINE, line=edited["lines"][1]["id"], quantity=6))[
        "purchaseOrder"
    ]
    assert edited["lines"][1]["quantity"] == 6
    edited = (await world.pharmacist.ok(REMOVE_LINE, line=edited["lines"][1]["id"]))[
        "purchaseOrder"
    ]
    assert len(edited["lines"]) == 1

    view = await world.pharmacist.call(SUPPLIER, id=world.whs)
    assert view["kind"] == "WHOLESALER"
    assert view["organisation"]["id"] == gid("Organisation", world.demo.orgs["MedDistri Wholesale"])
    assert [c["name"] for c in view["contacts"]] == ["Mara Meier"]
    assert [c["reference"] for c in view["contracts"]] == ["MD-FRAME"]
    assert view["contracts"][0]["validToday"] is True
    assert [e["node"]["id"] for e in view["purchaseOrders"]["edges"]] == [draft["id"]]
    # The supplier sees its own record, contacts and contracts included.
    own = await world.supplier.call(SUPPLIER, id=world.whs)
    assert [c["reference"] for c in own["contracts"]] == ["MD-FRAME"]
    removed = await world.pharmacist.ok(REMOVE_CONTACT, contact=contact["id"])
    assert removed["removedId"] == contact["id"]
    assert (await world.pharmacist.call(SUPPLIER, id=world.whs))["contacts"] == []
    await world.pharmacist.refused(REMOVE_CONTACT, "NOT_FOUND", contact=contact["id"])


# --- concurrency, alerts, live updates ----------------------------------------------------------


async def test_concurrent_receipts_of_one_line_never_double_receive(world: World) -> None:
    """Both ask for the whole line at once: one is booked, the other is refused with
    ALREADY_RECEIVED naming what was received; stock moves once."""
    services, cp = world.demo.services, world.demo.locations["HOSP-CP"]
    lot = await wholesaler_stock(world, 0, 20, "LC-X1")
    order = await acknowledged_order(world, [(0, 10, "1.00")])
    shipment = await delivered_shipment(world, order, [(0, lot, 10)])
    warehouse_admin = world.admin
    variables = {"shipment": shipment["id"], "line": shipment["lines"][0]["id"], "quantity": 10}
    results = await asyncio.gather(
        world.pharmacist.call(RECEIVE, **variables), warehouse_admin.call(RECEIVE, **variables)
    )
    succeeded = [r for r in results if not r["errors"]]
    refused = [r for r in results if r["errors"]]
    assert len(succeeded) == 1 and len(refused) == 1, results
    (error,) = refused[0]["errors"]
    assert error["code"] == "ALREADY_RECEIVED"
    assert "already fully received (10 received of 10 shipped)" in error["message"]
    assert await balance_of(services, cp, lot.id) == 10
    async with services.db.read() as session:
        receipts = (
            await session.execute(
                select(func.count()).where(
                    Movement.kind == MovementKind.RECEIVE, Movement.location_id == cp
                )
            )
        ).scalar_one()
        line = await session.get(ShipmentLine, pk(shipment["lines"][0]["id"]))
    assert receipts == 1 and line.received_quantity == 10


async def test_overdue_shipments_raise_one_alert_at_the_destination(world: World) -> None:
    shipping = world.demo.services.shipments
    lot = await wholesaler_stock(world, 0, 20, "LC-O1")
    order = await acknowledged_order(world, [(0, 10, "1.00")])  # due in 7 days
    late = await planned_shipment(world, order, [(0, lot, 5)])
    await world.supplier.ok(UPDATE_STATUS, shipment=late["id"], status="DISPATCHED")
    later = await world.supplier.ok(
        CREATE_SHIPMENT,
        input={
            "purchaseOrder": order["id"],
            "expectedAt": (utcnow() + timedelta(days=30)).isoformat(),
            "lines": [
                {
                    "purchaseOrderLine": order["lines"][0]["id"],
                    "batchNumber": lot.batch_number,
                    "expiryDate": lot.expiry_date.isoformat(),
                    "quantity": 5,
                }
            ],
        },
    )
    assert later["shipment"]["status"] == "PLANNED"
    today = utcnow().date()
    assert (await shipping.check_overdue_shipments(today)).overdue == 0
    check = await shipping.check_overdue_shipments(today + timedelta(days=10))
    assert (check.overdue, check.raised) == (1, 1)
    again = await shipping.check_overdue_shipments(today + timedelta(days=11))
    assert (again.overdue, again.raised) == (1, 0)  # one live alert per shipment
    async with world.demo.services.db.read() as session:
        (alert,) = (
            (await session.execute(select(Alert).where(Alert.kind == AlertKind.SHIPMENT_OVERDUE)))
            .scalars()
            .all()
        )
    assert alert.location_id == world.demo.locations["HOSP-CP"]
    assert late["number"] in alert.message and "3 days overdue" in alert.message
    assert alert.details["shipment"] == late["number"]
    # Receiving it resolves the alert.
    await world.pharmacist.ok(RECEIVE, shipment=late["id"], line=late["lines"][0]["id"], quantity=5)
    await world.pharmacist.ok(COMPLETE, shipment=late["id"])
    async with world.demo.services.db.read() as session:
        resolved = await session.get(Alert, alert.id)
    assert resolved is not None and resolved.active is False
    assert (await shipping.check_overdue_shipments(today + timedelta(days=12))).overdue == 0


SHIPMENT_UPDATED = """
subscription($shipment: ID) {
  shipmentUpdated(shipment: $shipment) {
    change status occurredAt
    shipment { number status origin { code } events { status actor { username } } }
  }
}"""


async def test_shipment_updates_reach_the_parties_over_a_websocket(
    world: World, live_server: LiveServer
) -> None:
    lot = await wholesaler_stock(world, 0, 20, "LC-W1")
    order = await acknowledged_order(world, [(0, 5, "1.00")])
    shipment = await planned_shipment(world, order, [(0, lot, 5)])
    outsider = await second_supplier(world)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        tokens = {u: await token_for(http, u) for u in ("pharmacist", "supplier2", "nurse")}
        supplier = Caller(http, await token_for(http, "supplier"), "supplier")
        hospital = await GraphQLWebSocket.open(live_server.url, tokens["pharmacist"])
        await hospital.subscribe(SHIPMENT_UPDATED, {"shipment": shipment["id"]})
        stranger = await GraphQLWebSocket.open(live_server.url, tokens["supplier2"])
        await stranger.subscribe(SHIPMENT_UPDATED)
        # Following another organisation's shipment by id is refused by name.
        await stranger.subscribe(SHIPMENT_UPDATED, {"shipment": shipment["id"]})
        refused = await asyncio.wait_for(stranger.receive(), 5)
        assert "FORBIDDEN" in str(refused), refused
        if refused["type"] == "next":
            assert (await asyncio.wait_for(stranger.receive(), 5))["type"] == "complete"
        nurse = await GraphQLWebSocket.open(live_server.url, tokens["nurse"])
        await nurse.subscribe(SHIPMENT_UPDATED)
        assert "FORBIDDEN" in str(await asyncio.wait_for(nurse.receive(), 5))
        await wait_for_subscribers(http, 2, "shipment")  # the hospital's and the stranger's

        await supplier.ok(UPDATE_STATUS, shipment=shipment["id"], status="DISPATCHED")
        message = await asyncio.wait_for(hospital.receive(), 5)
        assert message["type"] == "next", message
        event = message["payload"]["data"]["shipmentUpdated"]
        assert event["change"] == "STATUS_CHANGED" and event["status"] == "DISPATCHED"
        assert event["shipment"]["number"] == shipment["number"]
        assert event["shipment"]["origin"] == {"code": "WHS-DC"}
        assert [e["status"] for e in event["shipment"]["events"]] == ["PLANNED", "DISPATCHED"]
        # The other supplier hears nothing of it.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stranger.receive(), 0.5)
        for ws in (hospital, stranger, nurse):
            await ws.close()
    assert outsider.username == "supplier2"


# --- small helpers that read ids ----------------------------------------------------------------


async def _order_lines(world: World, order_id: int) -> list[int]:
    from server.purchasing.models import PurchaseOrderLine

    async with world.demo.services.db.read() as session:
        return list(
            (
                await session.execute(
                    select(PurchaseOrderLine.id)
                    .where(PurchaseOrderLine.order_id == order_id)
                    .order_by(PurchaseOrderLine.id)
                )
            ).scalars()
        )


async def _lines(world: World, shipment_id: int) -> list[int]:
    async with world.demo.services.db.read() as session:
        return list(
            (
                await session.execute(
                    select(ShipmentLine.id)
                    .where(ShipmentLine.shipment_id == shipment_id)
                    .order_by(ShipmentLine.id)
                )
            ).scalars()
        )
