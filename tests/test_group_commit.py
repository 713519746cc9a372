"""Concurrent writers: SQLite groups them into one transaction (each in its own savepoint), and
PostgreSQL gives each its own; either way every request gets its own outcome, nothing refused
leaves a trace, and nothing acknowledged is lost, even when the server is killed mid-write."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from server.core import audit
from server.core.errors import DomainError, ErrorCode
from server.inventory.models import Movement, MovementKind
from server.inventory.service import MovementRequest
from server.services import Services
from tests.conftest import (
    Demo,
    balance_of,
    check_ledger,
    gid,
    gql,
    receive,
    row_counts,
    start_server,
    token_for,
)

RECORD_MOVEMENTS = """
mutation($input: RecordMovementsInput!) {
  recordMovements(input: $input) {
    replayed
    movements { id kind quantity balanceAfter }
    errors { code field message }
  }
}"""


async def ledger_is_consistent(services: Services) -> None:
    """Balance = sum of its movements on every shelf, and the audit chain verifies."""
    await check_ledger(services)
    async with services.db.read() as session:
        verification = await audit.verify(session)
    assert verification.ok, verification.problem


async def test_fifty_concurrent_dispenses_each_get_their_own_outcome(demo: Demo) -> None:
    services = demo.services
    ward = demo.locations["WARD-A"]
    lot_id = await receive(demo, "WARD-A", 60)
    nurse = demo.principals["nurse"]

    async def dispense(i: int) -> object:
        # Every tenth asks for more than any shelf holds: refused, alone.
        quantity = 1000 if i % 10 == 3 else 1
        try:
            return await services.ledger.record(
                nurse,
                [MovementRequest(MovementKind.DISPENSE, ward, quantity, lot_id=lot_id)],
                operation="dispenseStock",
                idempotency_key=f"gc-{i}",
            )
        except DomainError as error:
            return error

    turns_before = services.db.group_commit.turns if services.db.group_commit else 0
    groups_before = services.db.group_commit.groups if services.db.group_commit else 0
    outcomes = await asyncio.gather(*(dispense(i) for i in range(50)))
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, DomainError)]
    assert refused == [i for i in range(50) if i % 10 == 3]
    assert all(outcomes[i].code is ErrorCode.INSUFFICIENT_STOCK for i in refused)
    landed = [o for o in outcomes if not isinstance(o, DomainError)]
    assert len(landed) == 45 and not any(o.replayed for o in landed)
    # Each landed dispense wrote exactly one movement, and the balances after are all distinct.
    afters = sorted(o.movements[0].balance_after for o in landed)
    assert afters == list(range(15, 60))
    assert await balance_of(services, ward, lot_id) == 15
    await ledger_is_consistent(services)
    if services.db.group_commit is not None:
        group_commit = services.db.group_commit
        turns = group_commit.turns - turns_before
        groups = group_commit.groups - groups_before
        assert turns == 50
        assert groups < turns, "concurrent writers should have shared transactions"
    # Replaying every key changes nothing and gives each its first outcome back.
    counts = await row_counts(services)
    replays = await asyncio.gather(*(dispense(i) for i in range(50)))
    for first, again in zip(outcomes, replays, strict=True):
        if isinstance(first, DomainError):
            assert isinstance(again, DomainError) and again.code is first.code
        else:
            assert again.replayed
            assert [m.id for m in again.movements] == [m.id for m in first.movements]
    assert await row_counts(services) == counts


def feed_item(location: int, lot: int, kind: str, quantity: int) -> dict[str, object]:
    return {
        "kind": kind,
        "location": gid("Location", location),
        "lot": gid("Lot", lot),
        "quantity": quantity,
        "reason": "feed test" if kind in ("ADJUST", "DISPOSE") else None,
    }


async def test_record_movements_is_all_or_nothing_and_names_the_bad_item(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    services = demo.services
    ward = demo.locations["WARD-A"]
    lot_id = await receive(demo, "WARD-A", 10)
    token = await token_for(client, "pharmacist")
    before = await row_counts(services)
    items = [feed_item(ward, lot_id, "DISPENSE", 1) for _ in range(7)]
    items[4] = feed_item(ward, lot_id, "DISPENSE", 50)  # more than the shelf holds
    bad = {"input": {"movements": items, "idempotencyKey": f"feed-{uuid.uuid4()}"}}
    payload = (await gql(client, RECORD_MOVEMENTS, bad, token))["data"]["recordMovements"]
    assert payload["movements"] == []
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INSUFFICIENT_STOCK", "movements.4.quantity")
    ]
    assert await row_counts(services) == before
    assert await balance_of(services, ward, lot_id) == 10

    # An id of the wrong type and an unzoned time name their item too; nothing is written.
    items = [feed_item(ward, lot_id, "DISPENSE", 1) for _ in range(3)]
    items[2]["lot"] = gid("Product", 1)
    malformed = {"input": {"movements": items, "idempotencyKey": f"feed-{uuid.uuid4()}"}}
    errors = (await gql(client, RECORD_MOVEMENTS, malformed, token))["data"]["recordMovements"]
    assert [e["field"] for e in errors["errors"]] == ["movements.2.lot"]
    # One that does not decode at all is refused as a request error, as in every mutation.
    items[2]["lot"] = "not-an-id!"
    undecodable = {"input": {"movements": items, "idempotencyKey": f"feed-{uuid.uuid4()}"}}
    response = await gql(client, RECORD_MOVEMENTS, undecodable, token)
    assert response["data"] is None
    assert [e["extensions"]["code"] for e in response["errors"]] == ["INVALID_ID"]
    items = [feed_item(ward, lot_id, "DISPENSE", 1) | {"occurredAt": "2026-01-01T10:00:00"}]
    naive = {"input": {"movements": items, "idempotencyKey": f"feed-{uuid.uuid4()}"}}
    response = await gql(client, RECORD_MOVEMENTS, naive, token)
    errors = (response.get("data") or {}).get("recordMovements") or {}
    assert errors.get("errors") or response.get("errors"), response
    assert await row_counts(services) == before

    # The good feed lands once; its replay returns the same movements and changes nothing.
    items = [feed_item(ward, lot_id, "DISPENSE", 1) for _ in range(6)]
    items.append(feed_item(ward, lot_id, "RETURN", 2))
    good = {"input": {"movements": items, "idempotencyKey": "feed-good"}}
    first = (await gql(client, RECORD_MOVEMENTS, good, token))["data"]["recordMovements"]
    assert first["errors"] == [] and not first["replayed"]
    assert [m["balanceAfter"] for m in first["movements"]] == [9, 8, 7, 6, 5, 4, 6]
    counts = await row_counts(services)
    again = (await gql(client, RECORD_MOVEMENTS, good, token))["data"]["recordMovements"]
    assert again["replayed"] and again["movements"] == first["movements"]
    assert await row_counts(services) == counts
    assert await balance_of(services, ward, lot_id) == 6
    await ledger_is_consistent(services)


async def test_record_movements_refuses_more_than_a_thousand(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    lot_id = await receive(demo, "WARD-A", 1)
    token = await token_for(client, "pharmacist")
    items = [feed_item(demo.locations["WARD-A"], lot_id, "RETURN", 1)] * 1001
    variables = {"input": {"movements": items, "idempotencyKey": "too-many"}}
    payload = (await gql(client, RECORD_MOVEMENTS, variables, token))["data"]["recordMovements"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", "movements")]


async def test_kill_during_concurrent_writes_loses_no_acknowledged_movement(
    demo: Demo, database_url: str
) -> None:
    services = demo.services
    ward = demo.locations["WARD-A"]
    lot_id = await receive(demo, "WARD-A", 1)
    server = start_server(database_url)
    acknowledged: dict[str, list[int]] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            token = await token_for(http, "pharmacist")

            async def client(worker: int) -> None:
                for n in range(1000):
                    key = f"kill-{worker}-{n}"
                    items = [feed_item(ward, lot_id, "RETURN", 1) for _ in range(3)]
                    variables = {"input": {"movements": items, "idempotencyKey": key}}
                    try:
                        body = await gql(http, RECORD_MOVEMENTS, variables, token)
                    except (httpx.HTTPError, AssertionError):
                        return  # the server is gone: this one was never acknowledged
                    payload = body["data"]["recordMovements"]
                    assert payload["errors"] == [], payload
                    acknowledged[key] = [int(m["balanceAfter"]) for m in payload["movements"]]
                    if len(acknowledged) >= 40:
                        enough.set()

            enough = asyncio.Event()
            workers = [asyncio.create_task(client(w)) for w in range(12)]
            await asyncio.wait_for(enough.wait(), timeout=60)
            os.kill(server.process.pid, signal.SIGKILL)
            await asyncio.gather(*workers)
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
    assert len(acknowledged) >= 40
    async with services.db.read() as session:
        stored = {
            key: count
            for key, count in (
                await session.execute(
                    select(Movement.request_key, func.count())
                    .where(Movement.request_key.like("kill-%"))
                    .group_by(Movement.request_key)
                )
            ).all()
        }
    missing = [key for key in acknowledged if stored.get(key) != 3]
    assert missing == [], f"acknowledged but lost: {missing[:5]}"
    # Whatever else committed before the kill did so whole: 3 movements per key, never fewer.
    assert set(stored.values()) == {3}
    await ledger_is_consistent(services)


UPDATE_LOCATION = """
mutation($input: UpdateLocationInput!) {
  updateLocation(input: $input) { location { active } errors { code message } }
}"""


@pytest.mark.postgres_only  # several workers need PostgreSQL; SQLite is one process by design
async def test_a_location_deactivated_on_one_worker_is_refused_on_every_worker(
    demo: Demo, database_url: str
) -> None:
    ward = demo.locations["WARD-B"]
    lot_id = await receive(demo, "WARD-B", 50)
    server = start_server(database_url, workers=2)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            admin = await token_for(http, "admin")
            pharmacist = await token_for(http, "pharmacist")
            # Warm both workers on this location first, so a stale copy would show.
            for n in range(10):
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as fresh:
                    items = [feed_item(ward, lot_id, "DISPENSE", 1)]
                    variables = {"input": {"movements": items, "idempotencyKey": f"warm-{n}"}}
                    body = await gql(fresh, RECORD_MOVEMENTS, variables, pharmacist)
                    assert body["data"]["recordMovements"]["errors"] == []
            changed = await gql(
                http,
                UPDATE_LOCATION,
                {"input": {"id": gid("Location", ward), "active": False}},
                admin,
            )
            assert changed["data"]["updateLocation"]["location"]["active"] is False
            # Each on a new connection, so the kernel spreads them over both workers.
            for n in range(20):
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as fresh:
                    items = [feed_item(ward, lot_id, "DISPENSE", 1)]
                    variables = {"input": {"movements": items, "idempotencyKey": f"after-{n}"}}
                    body = await gql(fresh, RECORD_MOVEMENTS, variables, pharmacist)
                    errors = body["data"]["recordMovements"]["errors"]
                    assert [(e["code"], e["field"]) for e in errors] == [
                        ("NOT_FOUND", "movements.0.location")
                    ], errors
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
    assert await balance_of(demo.services, ward, lot_id) == 40
