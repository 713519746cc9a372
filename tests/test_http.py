"""Over a real uvicorn server: concurrent nurses on the last packs, and replays over HTTP."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.conftest import Demo, LiveServer, balance_of, gid, gql, receive, token_for

DISPENSE = """
mutation($input: DispenseStockInput!) {
  dispenseStock(input: $input) {
    replayed
    movements { id quantity balanceAfter lot { batchNumber } }
    errors { code field message }
  }
}"""


async def test_twenty_concurrent_dispenses_for_the_last_ten_packs(
    demo: Demo, live_server: LiveServer
) -> None:
    lot_id = await receive(demo, "WARD-A", 10)
    ward = demo.locations["WARD-A"]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        token = await token_for(http, "nurse")

        async def dispense() -> dict:
            variables = {
                "input": {
                    "location": gid("Location", ward),
                    "lot": gid("Lot", lot_id),
                    "quantity": 1,
                    "idempotencyKey": uuid.uuid4().hex,
                }
            }
            return await gql(http, DISPENSE, variables, token)

        results = await asyncio.gather(*[dispense() for _ in range(20)])
    payloads = [r["data"]["dispenseStock"] for r in results]
    assert all("errors" not in r for r in results)
    succeeded = [p for p in payloads if not p["errors"]]
    refused = [p for p in payloads if p["errors"]]
    assert len(succeeded) == 10
    assert len(refused) == 10
    assert {p["errors"][0]["code"] for p in refused} == {"INSUFFICIENT_STOCK"}
    assert sorted(p["movements"][0]["balanceAfter"] for p in succeeded) == list(range(10))
    assert await balance_of(demo.services, ward, lot_id) == 0


async def test_replayed_http_mutation_changes_stock_once(
    demo: Demo, live_server: LiveServer
) -> None:
    lot_id = await receive(demo, "WARD-A", 5)
    ward = demo.locations["WARD-A"]
    variables = {
        "input": {
            "location": gid("Location", ward),
            "lot": gid("Lot", lot_id),
            "quantity": 2,
            "patientReference": "ENC-1",
            "idempotencyKey": "outbox-7f3a",
        }
    }
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        token = await token_for(http, "nurse")
        results = [await gql(http, DISPENSE, variables, token) for _ in range(3)]
    payloads = [r["data"]["dispenseStock"] for r in results]
    assert [p["replayed"] for p in payloads] == [False, True, True]
    assert len({p["movements"][0]["id"] for p in payloads}) == 1
    assert await balance_of(demo.services, ward, lot_id) == 3
