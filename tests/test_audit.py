"""The audit chain: every mutation is recorded, and any edit, deletion or reordering of a row
makes `apotheca verify-audit` fail and name the first bad event."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import ROOT, TEST_SECRET, Demo, gql, receive, token_for


def verify_cli(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APOTHECA_DATABASE_URL": database_url, "APOTHECA_SECRET_KEY": TEST_SECRET}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "verify-audit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _activity(demo: Demo) -> None:
    lot_id = await receive(demo, "WARD-A", 20)
    for quantity in (1, 2, 3):
        await demo.services.ledger.record(
            demo.principals["nurse"],
            [
                MovementRequest(
                    MovementKind.DISPENSE, demo.locations["WARD-A"], quantity, lot_id=lot_id
                )
            ],
            operation="dispense",
        )


async def _execute(demo: Demo, *statements: str) -> None:
    async with demo.services.db.write() as session:
        for statement in statements:
            await session.execute(text(statement))


async def test_intact_chain_verifies(demo: Demo, database_url: str) -> None:
    await _activity(demo)
    result = verify_cli(database_url)
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout


@pytest.mark.parametrize(
    ("tamper", "named_seq", "problem"),
    [
        pytest.param(
            ["UPDATE audit_events SET reason = 'nothing to see' WHERE seq = {target}"],
            "{target}",
            "edited",
            id="edited",
        ),
        pytest.param(
            ["DELETE FROM audit_events WHERE seq = {target}"], "{next}", "deleted", id="deleted"
        ),
        pytest.param(
            [
                "UPDATE audit_events SET seq = -1 WHERE seq = {target}",
                "UPDATE audit_events SET seq = {target} WHERE seq = {next}",
                "UPDATE audit_events SET seq = {next} WHERE seq = -1",
            ],
            "{next}",
            "reordered",
            id="swapped",
        ),
        pytest.param(
            ["DELETE FROM audit_events WHERE seq = {last}"], "{last}", "trailing", id="last-deleted"
        ),
    ],
)
async def test_tampering_is_detected_and_named(
    demo: Demo, database_url: str, tamper: list[str], named_seq: str, problem: str
) -> None:
    await _activity(demo)
    async with demo.services.db.read() as session:
        last = (await session.execute(text("SELECT max(seq) FROM audit_events"))).scalar_one()
    marks = {"target": last - 3, "next": last - 2, "last": last}
    await _execute(demo, *[s.format(**marks) for s in tamper])
    result = verify_cli(database_url)
    assert result.returncode == 1
    assert f"seq {named_seq.format(**marks)}" in result.stderr
    assert problem in result.stderr


async def test_audit_trail_query_filters_by_entity_and_actor(demo: Demo, client) -> None:
    await _activity(demo)
    token = await token_for(client, "auditor")
    query = """query($actor: ID) {
      auditTrail(first: 10, entityType: "Movement", actor: $actor) {
        edges { node { seq action actorName role entityType after hash } }
      }
    }"""
    from tests.conftest import gid

    body = await gql(client, query, {"actor": gid("User", demo.users["nurse"])}, token)
    events = [e["node"] for e in body["data"]["auditTrail"]["edges"]]
    assert [e["action"] for e in events] == ["stock.dispense"] * 3
    assert {e["actorName"] for e in events} == {"nurse"}
    assert [e["after"]["quantity"] for e in events] == [-3, -2, -1]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True)
