"""auditIntegrity: the API's view of `apotheca verify-audit` (the same verify()), for
administrators and auditors; a tampered row is reported by its sequence number."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import Demo, gql, receive, token_for

QUERY = "{ auditIntegrity { ok eventsChecked firstBrokenSeq reason checkedAt } }"


async def _activity(demo: Demo) -> None:
    lot_id = await receive(demo, "WARD-A", 10)
    for quantity in (1, 2):
        await demo.services.ledger.record(
            demo.principals["nurse"],
            [
                MovementRequest(
                    MovementKind.DISPENSE, demo.locations["WARD-A"], quantity, lot_id=lot_id
                )
            ],
            operation="dispense",
        )


async def _event_count(demo: Demo) -> int:
    async with demo.services.db.read() as session:
        return int((await session.execute(text("SELECT count(*) FROM audit_events"))).scalar_one())


async def _integrity(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    body = await gql(client, QUERY, token=await token_for(client, username))
    assert "errors" not in body, body
    return dict(body["data"]["auditIntegrity"])


async def test_intact_chain_is_ok_for_admin_and_auditor(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await _activity(demo)
    events = await _event_count(demo)
    assert events > 0
    for username in ("admin", "auditor"):
        result = await _integrity(client, username)
        assert result["ok"] is True
        assert result["eventsChecked"] == events
        assert result["firstBrokenSeq"] is None
        assert result["reason"] is None
        assert result["checkedAt"]


async def test_edited_row_is_named(demo: Demo, client: httpx.AsyncClient) -> None:
    await _activity(demo)
    async with demo.services.db.read() as session:
        last = int((await session.execute(text("SELECT max(seq) FROM audit_events"))).scalar_one())
    target = last - 1
    async with demo.services.db.write() as session:
        await session.execute(
            text("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = :seq"),
            {"seq": target},
        )
    result = await _integrity(client, "auditor")
    assert result["ok"] is False
    assert result["firstBrokenSeq"] == target
    assert result["eventsChecked"] == target - 1
    assert "edited" in result["reason"]


async def test_deleted_row_is_named(demo: Demo, client: httpx.AsyncClient) -> None:
    await _activity(demo)
    async with demo.services.db.read() as session:
        last = int((await session.execute(text("SELECT max(seq) FROM audit_events"))).scalar_one())
    async with demo.services.db.write() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq = :seq"), {"seq": last - 2})
    result = await _integrity(client, "admin")
    assert result["ok"] is False
    assert result["firstBrokenSeq"] == last - 1
    assert "deleted" in result["reason"]


async def test_nurse_is_forbidden(demo: Demo, client: httpx.AsyncClient) -> None:
    body = await gql(client, QUERY, token=await token_for(client, "nurse"))
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], body


async def test_anonymous_is_refused(client: httpx.AsyncClient) -> None:
    body = await gql(client, QUERY)
    assert body.get("data") is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"], body
