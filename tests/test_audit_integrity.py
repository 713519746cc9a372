"""auditIntegrity: the API's view of `apotheca verify-audit` (the same verify()), for
administrators and auditors; a tampered row is reported by its sequence number.

Runs start from the last checkpoint (where an earlier run found the chain intact): they find
any change after it and to the checkpointed event itself; a full run (administrators) finds a
change anywhere, including behind a checkpoint, and a forged checkpoint."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import Demo, gql, receive, token_for

QUERY = "{ auditIntegrity { ok eventsChecked firstBrokenSeq reason checkedAt } }"
RUN = """query($full: Boolean!) { auditIntegrity(full: $full) {
  ok eventsChecked newlyChecked fromCheckpointSeq firstBrokenSeq reason } }"""


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


async def _run(client: httpx.AsyncClient, *, full: bool = False) -> dict[str, Any]:
    token = await token_for(client, "admin")
    body = await gql(client, RUN, {"full": full}, token=token)
    assert "errors" not in body, body
    return dict(body["data"]["auditIntegrity"])


async def _tamper(demo: Demo, sql: str, **params: Any) -> None:
    async with demo.services.db.write() as session:
        await session.execute(text(sql), params)


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


async def test_a_run_starts_from_the_last_checkpoint(demo: Demo, client: httpx.AsyncClient) -> None:
    await _activity(demo)
    before = await _event_count(demo)
    first = await _run(client)
    assert first["ok"] is True
    assert (first["eventsChecked"], first["newlyChecked"]) == (before, before)
    assert first["fromCheckpointSeq"] is None
    await _activity(demo)
    after = await _event_count(demo)
    second = await _run(client)
    assert second["ok"] is True
    assert second["fromCheckpointSeq"] == before
    assert second["newlyChecked"] == after - before
    assert second["eventsChecked"] == after
    again = await _run(client)
    assert (again["fromCheckpointSeq"], again["newlyChecked"]) == (after, 0)
    full = await _run(client, full=True)
    assert full["ok"] is True
    assert (full["fromCheckpointSeq"], full["newlyChecked"]) == (None, after)


async def test_an_edit_behind_the_checkpoint_is_found_by_a_full_run(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await _activity(demo)
    assert (await _run(client))["ok"] is True
    await _tamper(demo, "UPDATE audit_events SET reason = 'edited' WHERE seq = 2")
    incremental = await _run(client)
    assert incremental["ok"] is True  # what it guarantees: the events after the checkpoint
    assert incremental["newlyChecked"] == 0
    full = await _run(client, full=True)
    assert full["ok"] is False
    assert full["firstBrokenSeq"] == 2
    assert "edited" in full["reason"]


async def test_the_checkpointed_event_and_later_ones_are_checked(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await _activity(demo)
    checkpoint = (await _run(client))["eventsChecked"]
    await _tamper(demo, "UPDATE audit_events SET reason = 'x' WHERE seq = :seq", seq=checkpoint)
    result = await _run(client)
    assert result["ok"] is False
    assert result["firstBrokenSeq"] == checkpoint
    assert "checkpoint" in result["reason"]
    await _tamper(demo, "UPDATE audit_events SET reason = NULL WHERE seq = :seq", seq=checkpoint)
    assert (await _run(client))["ok"] is True  # restored: the hash adds up again
    await _activity(demo)
    await _tamper(demo, "DELETE FROM audit_events WHERE seq = :seq", seq=checkpoint + 1)
    result = await _run(client)
    assert result["ok"] is False
    assert result["firstBrokenSeq"] == checkpoint + 2
    assert "deleted" in result["reason"]


async def test_a_forged_checkpoint_is_found_by_a_full_run(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    await _activity(demo)
    older = (await _run(client))["eventsChecked"]
    await _activity(demo)
    newer = (await _run(client))["eventsChecked"]
    async with demo.services.db.read() as session:
        rows = await session.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq"))
        assert [int(seq) for seq in rows.scalars()] == [older, newer]
    await _tamper(
        demo, "UPDATE audit_checkpoints SET hash = :h WHERE seq = :seq", h="f" * 64, seq=older
    )
    assert (await _run(client))["ok"] is True  # incremental starts after the newest checkpoint
    full = await _run(client, full=True)
    assert full["ok"] is False
    assert full["firstBrokenSeq"] == older
    assert "checkpoint" in full["reason"]


async def test_only_administrators_run_a_full_verification(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    body = await gql(client, RUN, {"full": True}, token=await token_for(client, "auditor"))
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], body
    body = await gql(client, RUN, {"full": False}, token=await token_for(client, "auditor"))
    assert body["data"]["auditIntegrity"]["ok"] is True
