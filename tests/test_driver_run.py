"""`server.core.db.run`: Core statements compiled once and sent to the driver give what
`session.execute` gives (types in and out, IN lists, RETURNING), inside the transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import bindparam, delete, func, select, text, tuple_, update

from server.catalog.models import Lot, LotStatus
from server.core.db import run
from server.inventory.idempotency import _claim
from server.inventory.models import IdempotencyRecord
from tests.conftest import Demo, receive

# Lots by (id, product) pairs and a literal status list: two kinds of IN list, typed columns out.
_LOTS = (
    select(Lot.id, Lot.batch_number, Lot.expiry_date, Lot.status)
    .where(
        tuple_(Lot.id, Lot.product_id).in_(bindparam("pairs", expanding=True)),
        Lot.status.in_([LotStatus.RELEASED, LotStatus.QUARANTINED]),
        Lot.expiry_date >= bindparam("since"),
    )
    .order_by(Lot.id)
)


async def test_rows_and_types_are_those_of_session_execute(demo: Demo) -> None:
    lot_ids = [await receive(demo, "HOSP-CP", 5, batch=f"RUN{i}") for i in range(3)]
    async with demo.services.db.read() as session:
        pairs = [
            (lot.id, lot.product_id)
            for lot in (await session.execute(select(Lot).where(Lot.id.in_(lot_ids)))).scalars()
        ]
        for wanted in (pairs, pairs[:1], pairs[:2], []):  # each length its own expansion
            params = {"pairs": wanted, "since": date(2000, 1, 1)}
            expected = (await session.execute(_LOTS, params)).all()
            got = await run(session, _LOTS, params)
            assert [tuple(row) for row in got] == [tuple(row) for row in expected]
            assert len(got) == len(wanted)
            for row in got:
                assert isinstance(row.expiry_date, date) and isinstance(row.status, LotStatus)


async def test_binds_go_through_their_types_and_the_work_is_the_transactions(
    demo: Demo,
) -> None:
    db = demo.services.db
    created = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
    params = {
        "key": "run-test",
        "actor_id": demo.principals["pharmacist"].user_id,
        "operation": "test",
        "request_hash": "h" * 64,
        "movement_ids": [3, 1, 2],
        "created_at": created,
    }
    # Refused after the statement: the claim is rolled back with its transaction (on
    # PostgreSQL the driver's statement must run inside SQLAlchemy's transaction).
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            claimed = await run(session, _claim(db.dialect), params)
            assert claimed.first() is not None
            raise RuntimeError("refused")
    async with db.read() as session:
        assert await session.get(IdempotencyRecord, "run-test") is None
    async with db.write() as session:
        (row,) = await run(session, _claim(db.dialect), params)
        assert row.key == "run-test"
        again = await run(session, _claim(db.dialect), params)  # ON CONFLICT DO NOTHING
        assert again.first() is None
    async with db.read() as session:
        stored = await session.get(IdempotencyRecord, "run-test")
        assert stored is not None
        assert stored.created_at == created and stored.created_at.tzinfo is not None
        assert stored.movement_ids == [3, 1, 2]
        # The stored text compares as SQLAlchemy's own binds do.
        count = select(func.count()).where(IdempotencyRecord.created_at > bindparam("t"))
        for moment, expected in ((created - timedelta(microseconds=1), 1), (created, 0)):
            assert (await run(session, count, {"t": moment})).scalar() == expected
            assert (await session.execute(count, {"t": moment})).scalar() == expected


async def test_many_rows_run_as_one_call_and_come_back_when_asked(demo: Demo) -> None:
    db = demo.services.db
    user = demo.principals["pharmacist"].user_id
    now = datetime.now(UTC)
    rows = [
        {
            "key": f"many-{i}",
            "actor_id": user,
            "operation": "test",
            "request_hash": "h",
            "movement_ids": [i],
            "created_at": now,
        }
        for i in range(5)
    ]
    async with db.write() as session:
        returned = await run(session, _claim(db.dialect), rows)  # RETURNING: every row back
        assert sorted(row[0] for row in returned) == [f"many-{i}" for i in range(5)]
        await run(session, delete(IdempotencyRecord).where(IdempotencyRecord.key == "many-0"))
    async with db.read() as session:
        keys = select(IdempotencyRecord.key).where(IdempotencyRecord.key.like("many-%"))
        assert sorted((await session.execute(keys)).scalars()) == [f"many-{i}" for i in range(1, 5)]


_TEXT = text("SELECT id, batch_number FROM lots WHERE id = :id")


async def test_textual_sql_rows_are_plain_tuples(demo: Demo) -> None:
    lot_id = await receive(demo, "HOSP-CP", 1, batch="RUNTEXT")
    async with demo.services.db.read() as session:
        (row,) = await run(session, _TEXT, {"id": lot_id})
        assert tuple(row) == (lot_id, "RUNTEXT")


# A statement with a constant of its own (a bind the rows do not name) and no RETURNING.
_RENAME = (
    update(IdempotencyRecord)
    .where(IdempotencyRecord.key == bindparam("k"))
    .values(operation="renamed", request_hash=bindparam("h"))
)


async def test_many_rows_without_returning_take_the_statements_own_constants(demo: Demo) -> None:
    db = demo.services.db
    user = demo.principals["pharmacist"].user_id
    now = datetime.now(UTC)
    async with db.write() as session:
        await run(
            session,
            _claim(db.dialect),
            [
                {"key": f"ren-{i}", "actor_id": user, "operation": "test", "request_hash": "h",
                 "movement_ids": [], "created_at": now}
                for i in range(3)
            ],
        )  # fmt: skip
        none = await run(session, _RENAME, [{"k": f"ren-{i}", "h": f"h{i}"} for i in range(3)])
        assert list(none) == []
    async with db.read() as session:
        rows = select(IdempotencyRecord.operation, IdempotencyRecord.request_hash).where(
            IdempotencyRecord.key.like("ren-%")
        )
        got = sorted(tuple(row) for row in (await session.execute(rows)).all())
        assert got == [("renamed", "h0"), ("renamed", "h1"), ("renamed", "h2")]
