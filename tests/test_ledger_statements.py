"""Statements per ledger write, on both databases: a movement costs a fixed number of them
and a batch of many costs the same few (each statement is a round trip on PostgreSQL), and the
merged statements keep what the separate ones gave: ids in request order, the audit chain, the
replay of a keyed request."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.core import audit
from server.core.audit import AuditEvent
from server.inventory.models import IdempotencyRecord, Movement, MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import Demo, receive, sql_statements

# What one keyed movement through LedgerService.record costs with every hook wired (the
# BEGIN IMMEDIATE of SQLite's writer is a statement too; PostgreSQL's BEGIN and COMMIT are not
# seen by the listener): SQLite 16, PostgreSQL 13 (18 each before the merges; the audit head's
# advance is a statement of its own, run last so that the chain's lock is the last taken).
MOST = {"sqlite": 16, "postgresql": 13}


async def test_statements_per_movement_and_per_batch(demo: Demo) -> None:
    services = demo.services
    admin = demo.principals["admin"]
    location = demo.locations["HOSP-CP"]
    lot = await receive(demo, "HOSP-CP", 1000)

    def request(i: int) -> MovementRequest:
        kind = MovementKind.RECEIVE if i % 2 == 0 else MovementKind.DISPENSE
        return MovementRequest(kind, location, 1, lot_id=lot)

    await services.ledger.record(admin, [request(1)], operation="warm", idempotency_key="warm")
    with sql_statements(demo) as single:  # a receipt: no budget is spent
        await services.ledger.record(admin, [request(0)], operation="one", idempotency_key="one")
    assert len(single) <= MOST[services.db.dialect], "\n".join(single)
    with sql_statements(demo) as batch:
        await services.ledger.record(
            admin, [request(i) for i in range(200)], operation="many", idempotency_key="many"
        )
    # Set-based: 200 movements cost what one does, give or take the budget check of a batch
    # that spends.
    assert len(batch) <= len(single) + 1, "\n".join(batch)


async def test_merged_statements_keep_order_chain_and_replay(demo: Demo) -> None:
    services = demo.services
    admin = demo.principals["admin"]
    location = demo.locations["HOSP-CP"]
    lot = await receive(demo, "HOSP-CP", 10)
    requests = [MovementRequest(MovementKind.RECEIVE, location, i, lot_id=lot) for i in (1, 2, 3)]
    first = await services.ledger.record(
        admin, requests, operation="order", idempotency_key="order-key"
    )
    ids = [m.id for m in first.movements]
    assert ids == sorted(ids)
    assert [m.balance_after for m in first.movements] == [11, 13, 16]
    async with services.db.read() as session:
        stored = (
            await session.execute(
                select(Movement.id, Movement.quantity, Movement.balance_after)
                .where(Movement.id.in_(ids))
                .order_by(Movement.id)
            )
        ).all()
        assert [tuple(row) for row in stored] == [(ids[0], 1, 11), (ids[1], 2, 13), (ids[2], 3, 16)]
        # The record keeps no ids: the movements carry the key, and the replay finds them by it.
        record = await session.get(IdempotencyRecord, "order-key")
        assert record is not None and record.movement_ids == []
        assert (await audit.verify(session)).ok
    replay = await services.ledger.record(
        admin, requests, operation="order", idempotency_key="order-key"
    )
    assert replay.replayed
    assert [(m.id, m.balance_after) for m in replay.movements] == [
        (m.id, m.balance_after) for m in first.movements
    ]


async def test_the_audit_append_is_the_last_write_of_a_movement(demo: Demo) -> None:
    """Every writer locks the chain's head: it is taken last, after the balances, costs,
    supervision totals and alerts, so it is held only for the append and the commit."""
    services = demo.services
    admin = demo.principals["admin"]
    lot = await receive(demo, "HOSP-CP", 100)
    request = MovementRequest(MovementKind.DISPENSE, demo.locations["HOSP-CP"], 1, lot_id=lot)
    with sql_statements(demo) as seen:
        await services.ledger.record(admin, [request], operation="last", idempotency_key="last")
    audit_statements = [i for i, sql in enumerate(seen) if "audit_" in sql]
    first_audit = audit_statements[0]
    assert audit_statements == list(range(first_audit, len(seen))), "\n".join(seen)
    assert any("balances" in sql for sql in seen[:first_audit]), "\n".join(seen)


async def _events(demo: Demo) -> list[str]:
    async with demo.services.db.read() as session:
        rows = await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq))
        return list(rows.scalars())


async def test_events_of_a_rolled_back_savepoint_are_dropped_with_it(demo: Demo) -> None:
    """Events wait for the end of the unit of work; those recorded inside a savepoint that
    rolls back (nested ones too) are not appended, the others are, and the chain holds."""
    admin = demo.principals["admin"]
    before = await _events(demo)

    class Refused(Exception):
        pass

    async with demo.services.db.write() as session:
        await audit.record(session, admin, action="t.kept", entity_type="T", entity_id=1)
        with pytest.raises(Refused):
            async with session.begin_nested():
                await audit.record(session, admin, action="t.dropped", entity_type="T", entity_id=2)
                async with session.begin_nested():
                    await audit.record(
                        session, admin, action="t.dropped.inner", entity_type="T", entity_id=3
                    )
                raise Refused
        async with session.begin_nested():
            await audit.record(session, None, action="t.released", entity_type="T", entity_id=4)
        await audit.record(session, admin, action="t.last", entity_type="T", entity_id=5)
        # nothing is appended before the end of the unit of work
        count = await session.execute(select(func.count()).select_from(AuditEvent))
        assert count.scalar_one() == len(before)
    assert (await _events(demo))[len(before) :] == ["t.kept", "t.released", "t.last"]
    async with demo.services.db.read() as session:
        assert (await audit.verify(session)).ok


async def test_a_refused_unit_of_work_appends_none_of_its_events(demo: Demo) -> None:
    before = await _events(demo)
    with pytest.raises(RuntimeError):
        async with demo.services.db.write() as session:
            await audit.record(session, None, action="t.refused", entity_type="T", entity_id=1)
            raise RuntimeError("refused")
    assert await _events(demo) == before
