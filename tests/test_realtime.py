"""Live updates over graphql-transport-ws against real servers: scope, fan-out across
PostgreSQL workers, and subscribers that vanish or never read."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from server.demo import DEMO_PASSWORD
from tests.conftest import (
    METRICS_AUTH,
    Demo,
    LiveServer,
    balance_of,
    gid,
    gql,
    receive,
    start_server,
    token_for,
    wait_for_subscribers,
)
from tests.wsclient import GraphQLWebSocket

STOCK_CHANGED = """subscription($locations: [ID!]) {
  stockChanged(locations: $locations) {
    quantity
    location { code }
    lot { batchNumber }
    product { name }
    movement { kind quantity actor }
  }
}"""

DISPENSE = """mutation($input: DispenseStockInput!) {
  dispenseStock(input: $input) { movements { id } errors { code message } }
}"""


async def _dispense(http: httpx.AsyncClient, token: str, location: int, lot: int) -> None:
    body = await gql(
        http,
        DISPENSE,
        {
            "input": {
                "location": gid("Location", location),
                "lot": gid("Lot", lot),
                "quantity": 1,
                "idempotencyKey": uuid.uuid4().hex,
            }
        },
        token,
    )
    assert body["data"]["dispenseStock"]["errors"] == [], body


async def _next_data(ws: GraphQLWebSocket, wait_seconds: float = 5) -> dict:
    message = await asyncio.wait_for(ws.receive(), wait_seconds)
    assert message["type"] == "next", message
    return message["payload"]["data"]


async def test_stock_changes_reach_subscribers_in_scope_only(
    demo: Demo, live_server: LiveServer
) -> None:
    ward_a = await receive(demo, "WARD-A", 5, batch="LIVE-A")
    ward_b = await receive(demo, "WARD-B", 5, batch="LIVE-B")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        pharmacist = await token_for(http, "pharmacist")
        watcher = await GraphQLWebSocket.open(live_server.url, nurse)
        await watcher.subscribe(STOCK_CHANGED)
        await wait_for_subscribers(live_server.url, 1)
        # Out of her scope first: she must not hear about WARD-B.
        await _dispense(http, pharmacist, demo.locations["WARD-B"], ward_b)
        await _dispense(http, pharmacist, demo.locations["WARD-A"], ward_a)
        event = (await _next_data(watcher))["stockChanged"]
        assert event["location"]["code"] == "WARD-A"
        assert event["lot"]["batchNumber"] == "LIVE-A"
        assert event["quantity"] == 4
        assert event["movement"] == {"kind": "DISPENSE", "quantity": -1, "actor": "pharmacist"}
        await watcher.close()


async def test_subscription_auth_and_limits(demo: Demo, live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
    with pytest.raises(ConnectionClosed) as rejected:
        await GraphQLWebSocket.open(live_server.url, "not-a-token")
    assert rejected.value.rcvd.code == 4403
    ws = await GraphQLWebSocket.open(live_server.url, nurse)
    # Asking for a ward outside her scope is refused by name.
    await ws.subscribe(STOCK_CHANGED, {"locations": [gid("Location", demo.locations["WARD-B"])]})
    refused = await asyncio.wait_for(ws.receive(), 5)
    assert refused["type"] in ("error", "next")
    assert "FORBIDDEN" in str(refused)
    if refused["type"] == "next":
        assert (await asyncio.wait_for(ws.receive(), 5))["type"] == "complete"
    for _ in range(21):  # the limit is 20 per connection
        await ws.subscribe(STOCK_CHANGED)
    limited = await asyncio.wait_for(ws.receive(), 5)
    assert limited["type"] == "error" and "limit" in str(limited).lower()
    await ws.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])


async def test_dropped_and_stalled_subscribers_neither_leak_nor_stall_others(
    demo: Demo, live_server: LiveServer
) -> None:
    lot = await receive(demo, "WARD-A", 400, batch="FLOOD")
    ward = demo.locations["WARD-A"]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        # Ten clients that connect, subscribe and drop without a goodbye.
        for _ in range(10):
            ws = await GraphQLWebSocket.open(live_server.url, nurse)
            await ws.subscribe(STOCK_CHANGED)
            ws.connection.transport.abort()
        # One that subscribes and never reads, with a tiny receive buffer.
        stalled = await GraphQLWebSocket.open(live_server.url, nurse, max_queue=1)
        await stalled.subscribe(STOCK_CHANGED)
        healthy = await GraphQLWebSocket.open(live_server.url, nurse)
        await healthy.subscribe(STOCK_CHANGED)
        await wait_for_subscribers(live_server.url, 2)  # dropped sockets were cleaned up
        rss_before = _rss_kib(live_server.process.pid)
        seen = 0
        for _ in range(300):
            await _dispense(http, nurse, ward, lot)
        while seen < 300:
            data = await _next_data(healthy, wait_seconds=10)
            seen += 1
            assert data["stockChanged"]["location"]["code"] == "WARD-A"
        assert data["stockChanged"]["quantity"] == 100
        growth = _rss_kib(live_server.process.pid) - rss_before
        assert growth < 30_000, f"server grew by {growth} KiB while one client never read"
        await healthy.close()
        await stalled.close()
    assert await balance_of(demo.services, ward, lot) == 100


@pytest.mark.postgres_only  # several workers need PostgreSQL; SQLite is one process by design
async def test_event_from_worker_a_reaches_subscriber_on_worker_b(
    demo: Demo, database_url: str
) -> None:
    lot = await receive(demo, "WARD-A", 3, batch="FANOUT")
    worker_a = start_server(database_url)
    worker_b = start_server(database_url)
    try:
        async with httpx.AsyncClient(base_url=worker_a.url, timeout=30) as http:
            nurse = await token_for(http, "nurse")
            ws = await GraphQLWebSocket.open(worker_b.url, nurse)
            await ws.subscribe(STOCK_CHANGED)
            await wait_for_subscribers(worker_b.url, 1)
            await _dispense(http, nurse, demo.locations["WARD-A"], lot)
            event = (await _next_data(ws))["stockChanged"]
            assert event["lot"]["batchNumber"] == "FANOUT"
            assert event["quantity"] == 2
            await ws.close()
    finally:
        for worker in (worker_a, worker_b):
            worker.process.terminate()
            worker.process.wait(timeout=10)


ALERT_RAISED = (
    """subscription { alertRaised { kind message location { code } product { name } } }"""
)


async def test_alerts_are_pushed_to_subscribers_in_scope(
    demo: Demo, live_server: LiveServer
) -> None:
    from tests.conftest import first_product_id

    product_id = await first_product_id(demo.services)
    lot = await receive(demo, "WARD-A", 3, batch="LOWSTOCK", product_id=product_id)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        pharmacist = await token_for(http, "pharmacist")
        nurse_b = await token_for(http, "nurse.b")
        watcher = await GraphQLWebSocket.open(live_server.url, nurse)
        await watcher.subscribe(ALERT_RAISED)
        other_ward = await GraphQLWebSocket.open(live_server.url, nurse_b)
        await other_ward.subscribe(ALERT_RAISED)
        await wait_for_subscribers(live_server.url, 2, "alert")
        body = await gql(
            http,
            """mutation($l: ID!, $p: ID!) {
            setMinimumLevel(input: { location: $l, product: $p, minimumQuantity: 5 }) {
              errors { code } } }""",
            {"l": gid("Location", demo.locations["WARD-A"]), "p": gid("Product", product_id)},
            pharmacist,
        )
        assert body["data"]["setMinimumLevel"]["errors"] == []
        alert = (await _next_data(watcher))["alertRaised"]
        assert alert["kind"] == "LOW_STOCK"
        assert alert["location"]["code"] == "WARD-A"
        assert "minimum 5" in alert["message"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other_ward.receive(), 1.0)
        await watcher.close()
        await other_ward.close()
    assert await balance_of(demo.services, demo.locations["WARD-A"], lot) == 3


# --- shared fan-out: one execution per (document, variables, scope class) and event ----------


def _metric(url: str, name: str) -> int:
    match = re.search(
        rf"^{name} (\d+)$", httpx.get(f"{url}/metrics", headers=METRICS_AUTH).text, re.MULTILINE
    )
    assert match, f"no {name} in /metrics"
    return int(match.group(1))


async def _raw_next(ws: GraphQLWebSocket, wait_seconds: float = 5) -> str:
    """The next message exactly as it came over the wire (text, not parsed)."""
    text = await asyncio.wait_for(ws.connection.recv(), wait_seconds)
    assert isinstance(text, str)
    return text


async def test_same_document_and_scope_share_one_execution_and_identical_bytes(
    demo: Demo, live_server: LiveServer
) -> None:
    from server.core.security import Role

    lot = await receive(demo, "WARD-A", 5, batch="SHARED")
    # A second nurse of the same ward: another user, the same scope class.
    await demo.services.network.create_user(
        None,
        username="nurse.a2",
        full_name="Nadia Nurse",
        password=DEMO_PASSWORD,
        roles=[Role.NURSE],
        organisation_id=demo.principals["nurse"].organisation_id,
        location_ids=[demo.locations["WARD-A"]],
    )
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        nurse_a2 = await token_for(http, "nurse.a2")
        first = await GraphQLWebSocket.open(live_server.url, nurse)
        second = await GraphQLWebSocket.open(live_server.url, nurse_a2)
        await first.subscribe(STOCK_CHANGED)
        await second.subscribe(STOCK_CHANGED)
        await wait_for_subscribers(live_server.url, 2)  # the bus counts members, not groups
        assert _metric(live_server.url, "apotheca_subscription_groups") == 1
        executions = _metric(live_server.url, "apotheca_subscription_executions_total")
        for expected_quantity in (4, 3):
            await _dispense(http, nurse, demo.locations["WARD-A"], lot)
            a, b = await _raw_next(first), await _raw_next(second)
            assert a == b, "members of one group must receive the same bytes"
            event = json.loads(a)["payload"]["data"]["stockChanged"]
            assert event["quantity"] == expected_quantity
            assert event["location"]["code"] == "WARD-A"
            assert event["movement"]["actor"] == "nurse"
        # One execution per event for the whole group, not one per subscriber.
        assert _metric(live_server.url, "apotheca_subscription_executions_total") == executions + 2
        await first.close()
        await second.close()


async def test_different_scopes_never_share_a_group(demo: Demo, live_server: LiveServer) -> None:
    ward_a = await receive(demo, "WARD-A", 5, batch="SCOPE-A")
    ward_b = await receive(demo, "WARD-B", 5, batch="SCOPE-B")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        nurse_b = await token_for(http, "nurse.b")
        pharmacist = await token_for(http, "pharmacist")
        watcher_a = await GraphQLWebSocket.open(live_server.url, nurse)
        watcher_b = await GraphQLWebSocket.open(live_server.url, nurse_b)
        await watcher_a.subscribe(STOCK_CHANGED)  # the same document, no variables
        await watcher_b.subscribe(STOCK_CHANGED)
        await wait_for_subscribers(live_server.url, 2)
        assert _metric(live_server.url, "apotheca_subscription_groups") == 2
        executions = _metric(live_server.url, "apotheca_subscription_executions_total")
        await _dispense(http, pharmacist, demo.locations["WARD-B"], ward_b)
        await _dispense(http, pharmacist, demo.locations["WARD-A"], ward_a)
        seen_a = (await _next_data(watcher_a))["stockChanged"]
        seen_b = (await _next_data(watcher_b))["stockChanged"]
        assert (seen_a["location"]["code"], seen_a["lot"]["batchNumber"]) == ("WARD-A", "SCOPE-A")
        assert (seen_b["location"]["code"], seen_b["lot"]["batchNumber"]) == ("WARD-B", "SCOPE-B")
        # Neither hears the other ward's event, before or after her own.
        for watcher in (watcher_a, watcher_b):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(watcher.receive(), 1.0)
        # Each group executed only for the event its scope may see.
        assert _metric(live_server.url, "apotheca_subscription_executions_total") == executions + 2
        await watcher_a.close()
        await watcher_b.close()


async def test_a_member_that_cannot_keep_up_drops_its_oldest_and_holds_no_one_up() -> None:
    """In-process: a group of a stalled member (its socket never drains) and a healthy one."""
    from strawberry.types.execution import ExecutionResult

    from server.core.fanout import END, FanoutHub, Member

    events = 50
    hub = FanoutHub(lambda data: json.dumps(data, separators=(",", ":")), queue_size=4)
    stream_done = asyncio.Event()

    async def results():  # the shared subscription: one result per event, produced at once
        for i in range(events):
            yield ExecutionResult(data={"n": i}, errors=None)
            await asyncio.sleep(0)
        stream_done.set()

    async def open_stream():
        return results()

    never = asyncio.Event()
    received: list[str] = []

    async def stalled_send(_: str) -> None:
        await never.wait()  # a socket whose write buffer never drains

    async def healthy_send(text: str) -> None:
        received.append(text)

    stalled = Member(stalled_send, hub.queue_size)
    healthy = Member(healthy_send, hub.queue_size)
    key = ("doc", None, "{}", "scope")
    stalled_task = asyncio.create_task(hub.serve(key, stalled, open_stream))
    healthy_task = asyncio.create_task(hub.serve(key, healthy, open_stream))
    assert await asyncio.wait_for(healthy_task, 5) == END
    assert stream_done.is_set(), "the stalled member held up the group"
    assert [json.loads(text)["data"]["n"] for text in received] == list(range(events))
    assert hub.executions == events  # once per event, not once per member
    # The stalled member holds at most its bound; everything older was dropped and counted.
    assert stalled.sent == 0
    assert stalled.dropped >= events - hub.queue_size - 1
    assert hub.dropped == stalled.dropped
    stalled_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled_task
    assert hub.groups == 0
