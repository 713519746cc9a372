"""Statements per ledger write, on both databases: a movement costs a fixed number of them
and a batch of many costs the same few (each statement is a round trip on PostgreSQL), and the
merged statements keep what the separate ones gave: ids in request order, the audit chain, the
replay of a keyed request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select

from server.core import audit
from server.inventory.models import IdempotencyRecord, Movement, MovementKind
from server.inventory.service import MovementRequest
from tests.conftest import Demo, receive

# What one keyed movement through LedgerService.record costs with every hook wired (the
# BEGIN IMMEDIATE of SQLite's writer is a statement too; PostgreSQL's BEGIN and COMMIT are not
# seen by the listener): SQLite 16, PostgreSQL 12 (18 each before the merges).
MOST = {"sqlite": 16, "postgresql": 12}


@contextmanager
def counted(demo: Demo) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(statement)

    engines = [engine.sync_engine for engine in demo.services.db.engines]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


async def test_statements_per_movement_and_per_batch(demo: Demo) -> None:
    services = demo.services
    admin = demo.principals["admin"]
    location = demo.locations["HOSP-CP"]
    lot = await receive(demo, "HOSP-CP", 1000)

    def request(i: int) -> MovementRequest:
        kind = MovementKind.RECEIVE if i % 2 == 0 else MovementKind.DISPENSE
        return MovementRequest(kind, location, 1, lot_id=lot)

    await services.ledger.record(admin, [request(1)], operation="warm", idempotency_key="warm")
    with counted(demo) as single:  # a receipt: no budget is spent
        await services.ledger.record(admin, [request(0)], operation="one", idempotency_key="one")
    assert len(single) <= MOST[services.db.dialect], "\n".join(single)
    with counted(demo) as batch:
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
