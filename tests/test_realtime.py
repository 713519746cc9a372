"""Live updates over graphql-transport-ws against real servers: scope, fan-out across
PostgreSQL workers, and subscribers that vanish or never read."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import (
    Demo,
    LiveServer,
    balance_of,
    gid,
    gql,
    receive,
    start_server,
    token_for,
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
        await asyncio.sleep(0.3)
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


def _subscribers(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics").text
    return int(re.search(r'apotheca_subscribers\{topic="stock"\} (\d+)', metrics).group(1))


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
        await asyncio.sleep(0.5)
        assert _subscribers(live_server.url) == 2, "dropped sockets were not cleaned up"
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
            await asyncio.sleep(0.5)
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
        await asyncio.sleep(0.3)
        body = await gql(
            http,
            """mutation($l: ID!, $p: ID!) {
            setMinimumLevel(location: $l, product: $p, minimumQuantity: 5) {
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
