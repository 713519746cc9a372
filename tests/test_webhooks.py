"""Webhooks against a real receiving HTTP server (uvicorn on a free port, in the test's loop):
signatures verified with standardwebhooks, retries after 500s, order, scope, nothing sent for a
rolled-back change, a delivery left pending at a restart delivered by the next process, two
workers never sending one message twice, 410 disabling the endpoint, replay, and the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.config import Settings
from server.core.errors import InvalidInput
from server.core.events import Event
from server.purchasing.service import OrderLineFields
from server.services import Services
from server.webhooks import rules
from server.webhooks.models import DeliveryStatus, WebhookDelivery
from server.webhooks.rules import RetrySchedule
from tests.conftest import TEST_SECRET, Demo, eventually, first_product_id, free_port, gid

PO = rules.WebhookEventType.PURCHASE_ORDER_UPDATED.value
HOSPITAL = "St. Aurelia General Hospital"
PHARMACY = "Lindenhof Pharmacy"


def hook_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        webhook_allow_hosts="127.0.0.1",
        webhook_retry_schedule="0.1,0.1,0.1",
        webhook_poll_seconds=0.2,
        webhook_timeout_seconds=5,
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Every service of these tests may target the local receiver and retries fast."""
    return hook_settings(database_url)


# --- the receiver ------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str

    @property
    def message(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A real HTTP server: records every request; answers each path from its script of status
    codes (then 204)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    # path -> how many times to answer 500 to the first message seen there (its retries)
    fail_first: dict[str, int] = field(default_factory=dict)
    _first: dict[str, str] = field(default_factory=dict)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    state = Receiver(f"http://127.0.0.1:{port}")

    async def hook(request: Request) -> Response:
        path = request.url.path
        state.requests.append(
            Received(path, dict(request.headers), (await request.body()).decode())
        )
        first = state._first.setdefault(path, request.headers.get("webhook-id", ""))
        if first == request.headers.get("webhook-id") and state.fail_first.get(path, 0) > 0:
            state.fail_first[path] -= 1
            return Response(status_code=500)
        script = state.scripts.get(path)
        return Response(status_code=script.pop(0) if script else 204)

    app = Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), what="receiver started")
    yield state
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def _started(server: uvicorn.Server) -> bool:
    return server.started


# --- helpers -----------------------------------------------------------------------------------


async def endpoint(
    demo: Demo, receiver: Receiver, organisation: str, path: str, types: list[str]
) -> tuple[int, str]:
    made = await demo.services.webhooks.create_endpoint(
        demo.principals["admin"],
        organisation_id=demo.orgs[organisation],
        url=receiver.url + path,
        description=f"test {path}",
        event_types=types,
    )
    return made.endpoint.id, made.secret


async def order(demo: Demo, quantity: int = 5) -> int:
    """A purchase order of the hospital from the wholesaler: one purchase_order.updated."""
    product = await first_product_id(demo.services)
    created = await demo.services.purchasing.create_order(
        demo.principals["pharmacist"],
        supplier_id=demo.orgs["MedDistri Wholesale"],
        deliver_to_id=demo.locations["HOSP-CP"],
        lines=[OrderLineFields(product, quantity, Decimal("2.50"))],
    )
    return created.id


def verified(received: Received, secret: str) -> dict[str, Any]:
    """The body, once its Standard Webhooks signature checks out with `secret`."""
    return dict(Webhook(secret).verify(received.body, received.headers))


async def deliveries(services: Services) -> list[WebhookDelivery]:
    async with services.db.read() as session:
        return list(
            (await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id))).scalars()
        )


# --- pure rules --------------------------------------------------------------------------------


def test_urls_must_be_http_and_public_unless_allowed() -> None:
    assert rules.check_url("https://hooks.example.com/x", ()) == "https://hooks.example.com/x"
    for bad in (
        "ftp://example.com/x",
        "https:///nohost",
        "https://user:pw@example.com/",
        "http://127.0.0.1:8000/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:192.168.0.1]/x",
        "http://intranet/x",
        "http://printer.local/x",
        "",
    ):
        with pytest.raises(InvalidInput):
            rules.check_url(bad, ())
    assert rules.check_url("http://127.0.0.1:9/x", ("127.0.0.1",))
    assert rules.check_url("http://10.1.2.3/x", ("10.0.0.0/8",))
    with pytest.raises(InvalidInput):
        rules.check_url("http://10.1.2.3/x", ("127.0.0.1",))


def test_retry_schedule_backs_off_with_jitter_then_gives_up() -> None:
    schedule = RetrySchedule.parse("5,300,1800,7200,18000,36000,36000")
    assert sum(schedule.delays) / 3600 > 24  # retried for about a day
    for attempt, base in enumerate(schedule.delays, start=1):
        delay = schedule.next_delay(attempt)
        assert delay is not None
        assert base * 0.8 <= delay.total_seconds() <= base * 1.2
    assert schedule.next_delay(len(schedule.delays) + 1) is None


def test_bus_events_map_to_public_types() -> None:
    of = rules.event_type_of
    assert of("shipment", {}) is rules.WebhookEventType.SHIPMENT_UPDATED
    assert of("purchase_order", {}) is rules.WebhookEventType.PURCHASE_ORDER_UPDATED
    assert of("recall", {}) is rules.WebhookEventType.RECALL_CREATED
    assert of("alert", {"kind": "LOW_STOCK"}) is rules.WebhookEventType.STOCK_LOW
    assert (
        of("alert", {"kind": "SUPERVISION_STATUS"})
        is rules.WebhookEventType.SUPERVISION_STATUS_CHANGED
    )
    assert of("alert", {"kind": "EXPIRING_SOON"}) is None
    assert of("stock", {}) is None


def test_secrets_follow_the_standard_webhooks_format() -> None:
    secret = rules.new_secret()
    assert secret.startswith("whsec_")
    Webhook(secret)  # decodes


# --- against the receiver ----------------------------------------------------------------------


async def test_signed_in_order_scoped_and_retried(demo: Demo, receiver: Receiver) -> None:
    services = demo.services
    hosp_id, hosp_secret = await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    await endpoint(demo, receiver, PHARMACY, "/pharm", [PO])  # not a party: receives nothing
    receiver.fail_first["/hosp"] = 2  # the first message fails twice, then gets through
    await services.webhooks.start()
    orders = [await order(demo, quantity=q) for q in (1, 2, 3)]

    await eventually(lambda: _count(receiver, "/hosp", 5), what="3 messages + 2 retries")
    got = receiver.at("/hosp")
    bodies = [verified(r, hosp_secret) for r in got]
    assert {b["type"] for b in bodies} == {PO}
    # First attempts go out one at a time in commit order; a retry holds nothing back, so
    # the first order's retries land after the others (see the service's docstring).
    first_seen = list(dict.fromkeys(b["data"]["purchaseOrder"] for b in bodies))
    assert first_seen == [gid("PurchaseOrder", o) for o in orders]
    assert [b["data"]["purchaseOrder"] for b in bodies].count(gid("PurchaseOrder", orders[0])) == 3
    assert bodies[0]["data"]["buyer"] == gid("Organisation", demo.orgs[HOSPITAL])
    # Every attempt of one message carries the same webhook-id; messages differ.
    ids = [r.headers["webhook-id"] for r in got]
    assert len(set(ids)) == 3 and ids.count(ids[0]) == 3
    with pytest.raises(WebhookVerificationError):
        Webhook(rules.new_secret()).verify(got[0].body, got[0].headers)
    assert receiver.at("/pharm") == []

    async def recorded() -> bool:
        return all(d.status is DeliveryStatus.DELIVERED for d in await deliveries(services))

    await eventually(recorded, what="the answers recorded")
    log = [d for d in await deliveries(services) if d.endpoint_id == hosp_id]
    assert [(d.status, d.attempts, d.response_status) for d in log] == [
        (DeliveryStatus.DELIVERED, 3, 204),
        (DeliveryStatus.DELIVERED, 1, 204),
        (DeliveryStatus.DELIVERED, 1, 204),
    ]
    assert all(d.next_attempt_at is None and d.delivered_at is not None for d in log)


async def _count(receiver: Receiver, path: str, n: int) -> bool:
    return len(receiver.at(path)) >= n


async def test_a_rolled_back_change_sends_nothing(demo: Demo, receiver: Receiver) -> None:
    services = demo.services
    await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    await services.webhooks.start()
    payload = {
        "purchase_order_id": 999999,
        "number": "PO-ROLLED-BACK",
        "status": "DRAFT",
        "change": "test",
        "buyer_id": demo.orgs[HOSPITAL],
        "supplier_id": demo.orgs["MedDistri Wholesale"],
    }
    with pytest.raises(RuntimeError):
        async with services.db.write() as session:
            await services.bus.emit(session, [Event("purchase_order", payload)])
            raise RuntimeError("the change fails after emitting")
    marker = await order(demo)  # committed after the failure: it must arrive, alone
    await eventually(lambda: _count(receiver, "/hosp", 1), what="the committed message")
    await asyncio.sleep(0.5)  # a worker round or two: the rolled-back one would be here by now
    assert [r.message["data"]["purchaseOrder"] for r in receiver.at("/hosp")] == [
        gid("PurchaseOrder", marker)
    ]
    assert len(await deliveries(services)) == 1


async def test_a_delivery_pending_at_restart_goes_out_from_the_next_process(
    demo: Demo, receiver: Receiver, database_url: str
) -> None:
    # The first process commits changes but never runs its worker (it "crashes" first).
    _, secret = await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    first = await order(demo)
    second = await order(demo)
    assert [d.status for d in await deliveries(demo.services)] == [DeliveryStatus.PENDING] * 2
    await demo.services.close()

    restarted = Services.build(hook_settings(database_url))
    try:
        await restarted.webhooks.start()
        await eventually(lambda: _count(receiver, "/hosp", 2), what="delivered after restart")
        assert [verified(r, secret)["data"]["purchaseOrder"] for r in receiver.at("/hosp")] == [
            gid("PurchaseOrder", first),
            gid("PurchaseOrder", second),
        ]
    finally:
        await restarted.close()


async def test_two_workers_never_send_one_message_twice(
    demo: Demo, receiver: Receiver, database_url: str
) -> None:
    await endpoint(demo, receiver, HOSPITAL, "/a", [PO])
    await endpoint(demo, receiver, HOSPITAL, "/b", [PO])
    for _ in range(10):
        await order(demo)  # 20 deliveries waiting
    workers = [Services.build(hook_settings(database_url)) for _ in range(2)]
    try:
        await asyncio.gather(*(w.webhooks.start() for w in workers))
        await eventually(lambda: _count_all(receiver, 20), what="20 deliveries")
        await asyncio.sleep(0.5)
        ids = [r.headers["webhook-id"] for r in receiver.requests]
        assert len(ids) == 20 and len(set(ids)) == 20
    finally:
        for w in workers:
            await w.close()


async def _count_all(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n


async def test_retries_run_out_then_replay_sends_the_same_message(
    demo: Demo, receiver: Receiver
) -> None:
    services = demo.services
    _, secret = await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    receiver.scripts["/hosp"] = [500, 503, 502, 500]  # the schedule allows 1 + 3 attempts
    await services.webhooks.start()
    await order(demo)

    async def failed() -> bool:
        return [d.status for d in await deliveries(services)] == [DeliveryStatus.FAILED]

    await eventually(failed, what="given up")
    (gave_up,) = await deliveries(services)
    assert (gave_up.attempts, gave_up.response_status) == (4, 500)
    assert gave_up.next_attempt_at is None

    replay = await services.webhooks.replay(demo.principals["admin"], gave_up.id)
    assert replay.replay_of_id == gave_up.id
    await eventually(lambda: _count(receiver, "/hosp", 5), what="the replay")
    last = receiver.at("/hosp")[-1]
    assert last.headers["webhook-id"] == gave_up.message_id
    assert verified(last, secret) == json.loads(gave_up.body)
    expected = {gave_up.id: DeliveryStatus.FAILED, replay.id: DeliveryStatus.DELIVERED}

    async def recorded() -> bool:
        return {d.id: d.status for d in await deliveries(services)} == expected

    await eventually(recorded, what="the replay recorded as delivered")


async def test_410_disables_the_endpoint_and_rotation_signs_with_both_secrets(
    demo: Demo, receiver: Receiver
) -> None:
    services, admin = demo.services, demo.principals["admin"]
    endpoint_id, old_secret = await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    rotated = await services.webhooks.rotate_secret(admin, endpoint_id)
    receiver.scripts["/hosp"] = [204, 410]
    await services.webhooks.start()
    await order(demo)
    await eventually(lambda: _count(receiver, "/hosp", 1), what="the first message")
    first = receiver.at("/hosp")[0]
    # During the overlap both the new and the previous secret verify.
    assert verified(first, rotated.secret) == verified(first, old_secret)
    await order(demo)

    async def disabled() -> bool:
        async with services.db.read() as session:
            from server.webhooks.models import WebhookEndpoint

            row = await session.get(WebhookEndpoint, endpoint_id)
            return row is not None and not row.enabled

    await eventually(disabled, what="disabled by 410")
    await order(demo)  # captured for nobody: the endpoint is off
    await asyncio.sleep(0.4)
    assert len(receiver.at("/hosp")) == 2
    assert [d.status for d in await deliveries(services)] == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
    ]


async def test_a_disabled_endpoint_holds_its_deliveries_until_enabled(
    demo: Demo, receiver: Receiver
) -> None:
    services, admin = demo.services, demo.principals["admin"]
    endpoint_id, _ = await endpoint(demo, receiver, HOSPITAL, "/hosp", [PO])
    held = [await order(demo), await order(demo)]  # pending; the worker is not running yet
    await services.webhooks.update_endpoint(admin, endpoint_id, enabled=False)
    await order(demo)  # not captured at all: the endpoint is off
    await services.webhooks.start()
    await asyncio.sleep(1.0)
    assert receiver.requests == []
    assert services.webhooks.rounds < 15  # waits (poll 0.2 s) instead of spinning on held rows
    await services.webhooks.update_endpoint(admin, endpoint_id, enabled=True)
    await eventually(lambda: _count(receiver, "/hosp", 2), what="the held deliveries")
    assert [r.message["data"]["purchaseOrder"] for r in receiver.at("/hosp")] == [
        gid("PurchaseOrder", o) for o in held
    ]
    assert len(await deliveries(services)) == 2


async def test_shipments_reach_both_parties_and_only_the_types_asked_for(
    demo: Demo, receiver: Receiver
) -> None:
    from datetime import timedelta

    from server.core.db import utcnow
    from server.purchasing.models import PurchaseOrderLine
    from server.shipments.service import ShipmentLineFields

    services = demo.services
    shipped = rules.WebhookEventType.SHIPMENT_UPDATED.value
    await endpoint(demo, receiver, HOSPITAL, "/hosp", [shipped])  # the receiver
    await endpoint(demo, receiver, "MedDistri Wholesale", "/whs", [shipped])  # the sender
    await endpoint(demo, receiver, PHARMACY, "/pharm", [shipped, PO])  # neither
    await services.webhooks.start()
    order_id = await order(demo)
    await services.purchasing.submit_order(
        demo.principals["pharmacist"], order_id, utcnow().date() + timedelta(days=7)
    )
    await services.purchasing.acknowledge_order(demo.principals["supplier"], order_id)
    async with services.db.read() as session:
        line_id = (
            await session.execute(
                select(PurchaseOrderLine.id).where(PurchaseOrderLine.order_id == order_id)
            )
        ).scalar_one()
    shipment = await services.shipments.create_shipment(
        demo.principals["supplier"],
        order_id=order_id,
        lines=[ShipmentLineFields(line_id, "WH-1", utcnow().date() + timedelta(days=400), 5)],
    )
    for path in ("/hosp", "/whs"):
        await eventually(lambda path=path: _count(receiver, path, 1), what=f"{path} message")
    await asyncio.sleep(0.4)
    for path in ("/hosp", "/whs"):
        (got,) = receiver.at(path)  # the order's own events were not asked for
        assert got.message["type"] == shipped
        assert got.message["data"]["shipment"] == gid("Shipment", shipment.id)
        assert got.message["data"]["change"] == "CREATED"
    assert receiver.at("/pharm") == []


async def test_recalls_and_alerts_follow_the_readers_scope(demo: Demo, receiver: Receiver) -> None:
    """A recall goes to every organisation that reads stock (not to a supplier-only view);
    a low-stock alert only to the organisation of its shelf."""
    services = demo.services
    recall, low = rules.WebhookEventType.RECALL_CREATED.value, rules.WebhookEventType.STOCK_LOW
    await endpoint(demo, receiver, HOSPITAL, "/hosp", [recall, low.value])
    await endpoint(demo, receiver, PHARMACY, "/pharm", [low.value])
    from tests.conftest import receive

    lot = await receive(demo, "HOSP-CP", 5)
    await services.webhooks.start()
    await services.supervision.recall_lots(
        demo.principals["regulator"], reason="webhook test", lot_ids=[lot]
    )
    await eventually(lambda: _count(receiver, "/hosp", 1), what="the recall")
    message = receiver.at("/hosp")[0].message
    assert message["type"] == recall
    assert message["data"]["lots"] == [gid("Lot", lot)]
    # A low-stock alert at the hospital's pharmacy, through the real alert path.
    from server.alerts.models import AlertKind
    from server.alerts.service import AlertSpec

    async with services.db.write() as session:
        await services.alerts.raise_alert(
            session,
            AlertSpec(
                AlertKind.LOW_STOCK,
                "webhook-test-low",
                "low at HOSP-CP",
                location_id=demo.locations["HOSP-CP"],
            ),
        )
    await eventually(lambda: _count(receiver, "/hosp", 2), what="the low-stock alert")
    assert receiver.at("/hosp")[1].message["type"] == low.value
    await asyncio.sleep(0.3)
    assert receiver.at("/pharm") == []


async def test_a_batch_back_to_normal_is_announced_to_those_alerted(
    demo: Demo, receiver: Receiver
) -> None:
    """supervision.status_changed both ways: into OUTFLOW_LEAK (one message per alerted
    organisation) and back to NORMAL when the missing receipt arrives, which only resolves
    alerts; the pharmacy, never involved, hears neither."""
    from datetime import timedelta

    from server.core.db import utcnow
    from server.inventory.models import MovementKind as K
    from tests.test_supervision import WHS, Chain

    changed = rules.WebhookEventType.SUPERVISION_STATUS_CHANGED.value
    _, hosp_secret = await endpoint(demo, receiver, HOSPITAL, "/hosp", [changed])
    await endpoint(demo, receiver, PHARMACY, "/pharm", [changed])
    await demo.services.webhooks.start()
    chain = await (await Chain.produce(demo)).to_hospital()
    ref = f"DN-{chain.batch.number}-3"
    await chain.move(K.SHIP, "WHS-DC", 15, to=HOSPITAL, reference=ref)
    await demo.services.supervision_checks.check_all(
        in_transit_only=True, now=utcnow() + timedelta(days=4)
    )
    await eventually(lambda: _count(receiver, "/hosp", 1), what="the leak")
    await chain.move(K.RECEIVE, "HOSP-CP", 15, to=WHS, reference=ref)
    await eventually(lambda: _count(receiver, "/hosp", 2), what="the recovery")

    leak, recovery = (verified(r, hosp_secret) for r in receiver.at("/hosp"))
    assert {leak["type"], recovery["type"]} == {changed}
    batch = {"approvalNumber": chain.batch.approval, "batchNumber": chain.batch.number}
    assert leak["data"] | batch == leak["data"]
    assert (leak["data"]["status"], leak["data"]["previousStatus"]) == (
        "OUTFLOW_LEAK",
        "IN_TRANSIT",
    )
    assert leak["data"]["alert"] is not None
    assert recovery["data"] == {
        "alert": None,
        "kind": "SUPERVISION_STATUS",
        "location": None,
        "message": f"Batch {chain.batch.number} ({chain.batch.approval}): back to NORMAL "
        "from OUTFLOW_LEAK",
        "status": "NORMAL",
        "previousStatus": "OUTFLOW_LEAK",
        "gamma": 0,
        **batch,
    }
    await asyncio.sleep(0.3)
    assert receiver.at("/pharm") == []


# --- the admin API -----------------------------------------------------------------------------

CREATE = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  secret endpoint { id url enabled eventTypes organisation { name } createdBy { username } }
  errors { code field message } } }"""
UPDATE = """mutation($input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $input) {
  endpoint { id enabled eventTypes description } errors { code field message } } }"""
ROTATE = """mutation($input: WebhookEndpointIdInput!) { rotateWebhookSecret(input: $input) {
  secret endpoint { previousSecretUntil } errors { code field message } } }"""
DELETE = """mutation($input: WebhookEndpointIdInput!) { deleteWebhookEndpoint(input: $input) {
  deletedId errors { code field message } } }"""
REPLAY = """mutation($input: ReplayWebhookDeliveryInput!) { replayWebhookDelivery(input: $input) {
  delivery { id status replayOf { id } } errors { code field message } } }"""
ENDPOINTS = """query { webhookEndpoints(first: 10) { totalCount edges { node { id url } } } }"""
DELIVERIES = """query($endpoint: ID) { webhookDeliveries(first: 10, endpoint: $endpoint) {
  totalCount edges { node { id status attempts responseStatus nextAttemptAt eventType messageId
  endpoint { url } } } } }"""


async def test_admin_api_registers_lists_replays_and_refuses(
    demo: Demo, receiver: Receiver, as_user: Any
) -> None:
    admin, pharmacist = await as_user("admin"), await as_user("pharmacist")
    hospital = gid("Organisation", demo.orgs[HOSPITAL])
    made = await admin.ok(
        CREATE,
        input={
            "url": receiver.url + "/api",
            "eventTypes": ["PURCHASE_ORDER_UPDATED", "SHIPMENT_UPDATED"],
            "organisation": hospital,
        },
    )
    assert made["secret"].startswith("whsec_")
    node = made["endpoint"]
    assert node["organisation"]["name"] == HOSPITAL and node["createdBy"]["username"] == "admin"
    assert node["eventTypes"] == ["PURCHASE_ORDER_UPDATED", "SHIPMENT_UPDATED"]
    # The secret is never readable again.
    listed = await admin.call(ENDPOINTS)
    assert listed["totalCount"] == 1 and "secret" not in json.dumps(listed)

    # Refusals are typed errors, never INTERNAL.
    await admin.refused(
        CREATE,
        "INVALID_INPUT",
        input={"url": "http://10.0.0.5/x", "eventTypes": ["STOCK_LOW"], "organisation": hospital},
    )
    await admin.refused(
        CREATE, "INVALID_INPUT", input={"url": receiver.url, "eventTypes": []}
    )  # the admin has no organisation of its own, and no event type was chosen
    await pharmacist.refused(
        CREATE, "FORBIDDEN", input={"url": receiver.url + "/x", "eventTypes": ["STOCK_LOW"]}
    )
    await pharmacist.forbidden_read(ENDPOINTS)

    await demo.services.webhooks.start()
    await order(demo)
    await eventually(lambda: _count(receiver, "/api", 1), what="the order's message")

    async def delivered() -> bool:
        log = await admin.call(DELIVERIES, endpoint=node["id"])
        return bool(log["edges"]) and log["edges"][0]["node"]["status"] == "DELIVERED"

    await eventually(delivered, what="logged as delivered")
    log = await admin.call(DELIVERIES, endpoint=node["id"])
    entry = log["edges"][0]["node"]
    assert (entry["attempts"], entry["responseStatus"], entry["nextAttemptAt"]) == (1, 204, None)
    assert entry["eventType"] == PO and entry["messageId"].startswith("msg_")

    replayed = await admin.ok(REPLAY, input={"id": entry["id"]})
    assert replayed["delivery"]["replayOf"]["id"] == entry["id"]
    await eventually(lambda: _count(receiver, "/api", 2), what="the replay")

    rotated = await admin.ok(ROTATE, input={"id": node["id"]})
    assert rotated["secret"] != made["secret"] and rotated["endpoint"]["previousSecretUntil"]

    off = await admin.ok(
        UPDATE, input={"id": node["id"], "enabled": False, "description": "paused"}
    )
    assert off["endpoint"]["enabled"] is False and off["endpoint"]["description"] == "paused"
    await admin.refused(REPLAY, "INVALID_TRANSITION", input={"id": entry["id"]})
    await admin.refused(UPDATE, "INVALID_INPUT", input={"id": node["id"], "url": "gopher://x"})

    gone = await admin.ok(DELETE, input={"id": node["id"]})
    assert gone["deletedId"] == node["id"]
    assert (await admin.call(ENDPOINTS))["totalCount"] == 0
    assert (await admin.call(DELIVERIES, endpoint=None))["totalCount"] == 0
    await admin.refused(DELETE, "NOT_FOUND", input={"id": node["id"]})
