"""The set-based supervision SQL against its pure spec, on both databases.

A seeded random ledger (every movement kind, counterparties named, missing or the reporter
itself, signed adjustments and counts including zero, times inside and outside the transit
window) is written straight into `movements` (the ledger's checks would refuse much of it, and
the recomputation must hold for any history). Then:

- the SQL totals (`constituent_totals_sql`, `edge_totals_sql`) equal `totals_from_movements`;
- with running totals from the pure function the recomputation finds no difference, and after
  tampering reports exactly the tampered cells (as the streaming recomputation did), and the
  repair restores the pure function's rows;
- the statuses computed in SQL (`compute_statuses`) equal `analyse` over the same totals;
- `record_totals` and `refresh_status` cost the same number of statements for 1 and 1,000
  movements.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select, update

from server.catalog.models import Lot, Product
from server.core.db import utcnow
from server.inventory.models import Movement, MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.network.models import Location
from server.supervision.checks import (
    NAMED_PAGE,
    Difference,
    _load_one,
    compute_statuses,
    evaluate,
    refresh_status,
)
from server.supervision.gamma import TransferRow, analyse
from server.supervision.models import BatchConstituentTotal, BatchEdgeTotal, BatchStatus
from server.supervision.totals import (
    COUNTERS,
    MovementFact,
    Totals,
    constituent_totals_sql,
    edge_totals_sql,
    record_totals,
    totals_from_movements,
)
from tests.conftest import Demo, first_product_id

K = MovementKind
WINDOW = timedelta(hours=72)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OUT = {K.SHIP, K.TRANSFER_OUT, K.DISPENSE, K.DISPOSE}


async def _random_ledger(demo: Demo, seed: int, lots: int = 6, movements: int = 400) -> None:
    rng = random.Random(seed)
    services = demo.services
    async with services.db.write() as session:
        products = list((await session.execute(select(Product.id).order_by(Product.id))).scalars())
        locations = list(
            (await session.execute(select(Location.id, Location.organisation_id))).all()
        )
        lot_ids = []
        for i in range(lots):
            lot = Lot(
                product_id=products[i % len(products)],
                batch_number=f"RND{seed:03d}{i:02d}",
                expiry_date=NOW.date() + timedelta(days=400),
                manufacturer_id=None,
            )
            session.add(lot)
            await session.flush()
            lot_ids.append(lot.id)
        orgs = sorted({org for _, org in locations})
        rows = []
        for _ in range(movements):
            kind = rng.choice(list(K))
            location, org = rng.choice(locations)
            party = rng.choice([None, None, org, *orgs])
            if kind in (K.ADJUST, K.COUNT):
                quantity = rng.randint(-6, 6)
            else:
                quantity = rng.randint(1, 20) * (-1 if kind in OUT else 1)
            hours = rng.choice([rng.uniform(0, 70), rng.uniform(74, 400)])
            rows.append(
                {
                    "kind": kind,
                    "lot_id": rng.choice(lot_ids),
                    "location_id": location,
                    "organisation_id": org,
                    "counterparty_id": party,
                    "quantity": quantity,
                    "balance_after": 0,
                    "reference": f"R{rng.randint(0, 9)}",
                    "occurred_at": NOW - timedelta(hours=hours, microseconds=rng.randint(0, 999)),
                    "recorded_at": NOW,
                }
            )
        await session.execute(insert(Movement), rows)


async def _pure_totals(demo: Demo) -> Totals:
    """`totals_from_movements` over every movement of the database."""
    async with demo.services.db.read() as session:
        rows = await session.execute(
            select(
                Product.approval_number,
                Lot.batch_number,
                Movement.organisation_id,
                Movement.counterparty_id,
                Movement.kind,
                Movement.quantity,
                Movement.occurred_at,
            )
            .join(Lot, Lot.id == Movement.lot_id)
            .join(Product, Product.id == Lot.product_id)
        )
        return totals_from_movements(MovementFact(*row) for row in rows)


def _constituent_rows(totals: Totals) -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {
        key: tuple(counters[n] for n in COUNTERS) for key, counters in totals.constituents.items()
    }


def _edge_rows(totals: Totals) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        key: (e["shipped"], e["received"], e["last_shipped_at"]) for key, e in totals.edges.items()
    }


async def _stored(demo: Demo) -> tuple[dict[Any, Any], dict[Any, Any]]:
    C, E = BatchConstituentTotal, BatchEdgeTotal
    async with demo.services.db.read() as session:
        constituents = {
            (a, b, o): tuple(values)
            for a, b, o, *values in await session.execute(
                select(
                    C.approval_number,
                    C.batch_number,
                    C.organisation_id,
                    *(getattr(C, n) for n in COUNTERS),
                )
            )
        }
        edges = {
            (a, b, s, r): tuple(values)
            for a, b, s, r, *values in await session.execute(
                select(
                    E.approval_number,
                    E.batch_number,
                    E.sender_id,
                    E.receiver_id,
                    E.shipped,
                    E.received,
                    E.last_shipped_at,
                )
            )
        }
    return constituents, edges


async def _store(demo: Demo, totals: Totals) -> None:
    """Running totals exactly as the pure function says."""
    C, E = BatchConstituentTotal, BatchEdgeTotal
    async with demo.services.db.write() as session:
        await session.execute(delete(C))
        await session.execute(delete(E))
        await session.execute(
            insert(C),
            [
                {"approval_number": a, "batch_number": b, "organisation_id": o, **counters}
                for (a, b, o), counters in totals.constituents.items()
            ],
        )
        await session.execute(
            insert(E),
            [
                {"approval_number": a, "batch_number": b, "sender_id": s, "receiver_id": r, **e}
                for (a, b, s, r), e in totals.edges.items()
            ],
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_totals_are_the_pure_function(demo: Demo, seed: int) -> None:
    await _random_ledger(demo, seed)
    pure = await _pure_totals(demo)
    assert any(k[2] == k[3] for k in pure.edges)  # transfers inside one organisation
    assert any(e["received"] and not e["shipped"] for e in pure.edges.values())
    async with demo.services.db.read() as session:
        constituents = {
            (a, b, o): tuple(values)
            for a, b, o, *values, _count in await session.execute(constituent_totals_sql())
        }
        edges = {
            (a, b, s, r): tuple(values)
            for a, b, s, r, *values in await session.execute(edge_totals_sql())
        }
    assert constituents == _constituent_rows(pure)
    assert edges == _edge_rows(pure)


@pytest.mark.parametrize("seed", [4, 5])
async def test_sql_recompute_agrees_reports_tampering_and_repairs(demo: Demo, seed: int) -> None:
    await _random_ledger(demo, seed)
    pure = await _pure_totals(demo)
    await _store(demo, pure)
    checks = demo.services.supervision_checks
    agreed = await checks.recompute()
    assert agreed.differences == []
    async with demo.services.db.read() as session:
        assert agreed.movements == len((await session.execute(select(Movement.id))).all())
    assert agreed.batches == len({k[:2] for k in pure.constituents})

    # Tamper: one counter, one constituent row gone, one edge's date, one bogus edge row.
    rng = random.Random(seed)
    C, E = BatchConstituentTotal, BatchEdgeTotal
    changed = rng.choice(sorted(k for k, c in pure.constituents.items() if c["dispensed"]))
    gone = rng.choice(sorted(k for k in pure.constituents if k != changed))
    dated = rng.choice(sorted(k for k, e in pure.edges.items() if e["last_shipped_at"]))
    a, b = changed[:2]
    orgs = sorted({k[2] for k in pure.constituents})
    bogus = next((a, b, x, y) for x in orgs for y in orgs if (a, b, x, y) not in pure.edges)
    async with demo.services.db.write() as session:
        await session.execute(
            update(C)
            .where(C.approval_number == a, C.batch_number == b, C.organisation_id == changed[2])
            .values(dispensed=C.dispensed + 3)
        )
        await session.execute(
            delete(C).where(
                C.approval_number == gone[0],
                C.batch_number == gone[1],
                C.organisation_id == gone[2],
            )
        )
        await session.execute(
            update(E)
            .where(
                E.approval_number == dated[0],
                E.batch_number == dated[1],
                E.sender_id == dated[2],
                E.receiver_id == dated[3],
            )
            .values(last_shipped_at=None)
        )
        await session.execute(
            insert(E).values(
                approval_number=a,
                batch_number=b,
                sender_id=bogus[2],
                receiver_id=bogus[3],
                shipped=0,
                received=2,
                last_shipped_at=None,
            )
        )
    # What the streaming recomputation reported, worked out here from the pure totals.
    stored_c, stored_e = await _stored(demo)
    zero_c, zero_e = (0,) * len(COUNTERS), (0, 0, None)
    fresh_c, fresh_e = _constituent_rows(pure), _edge_rows(pure)
    expected = []
    for key in sorted(set(stored_c) | set(fresh_c)):
        s, f = stored_c.get(key, zero_c), fresh_c.get(key, zero_c)
        expected += [
            Difference(*key[:2], (key[2],), n, x, y)
            for n, x, y in zip(COUNTERS, s, f, strict=True)
            if x != y
        ]
    for key in sorted(set(stored_e) | set(fresh_e)):
        s, f = stored_e.get(key, zero_e), fresh_e.get(key, zero_e)
        expected += [
            Difference(*key[:2], key[2:], n, x, y)
            for n, x, y in zip(("shipped", "received", "last_shipped_at"), s, f, strict=True)
            if x != y
        ]
    result = await checks.recompute()
    assert result.differences == expected
    assert (a, b, bogus[2:], "received") in {
        (d.approval_number, d.batch_number, d.organisations, d.column) for d in expected
    }
    assert (a, b, (changed[2],), "dispensed") in {
        (d.approval_number, d.batch_number, d.organisations, d.column) for d in expected
    }
    assert len(result.differing_batches) >= 2
    assert result.batches == agreed.batches and result.movements == agreed.movements

    repaired = await checks.recompute(repair=True, chunk_size=1)
    assert repaired.repaired and repaired.differences == expected
    assert (await checks.recompute()).differences == []
    stored_c, stored_e = await _stored(demo)
    assert {k: v for k, v in stored_c.items() if any(v)} == {
        k: v for k, v in fresh_c.items() if any(v)
    }
    assert stored_e == fresh_e


@pytest.mark.parametrize("seed", [6, 7, 8])
async def test_sql_statuses_are_those_of_analyse(demo: Demo, seed: int) -> None:
    await _random_ledger(demo, seed, lots=12, movements=300)
    pure = await _pure_totals(demo)
    await _store(demo, pure)
    keys = sorted({k[:2] for k in pure.constituents})
    async with demo.services.db.read() as session:
        for window in (WINDOW, timedelta(0), timedelta(hours=500)):
            python, _ = await evaluate(session, keys, now=NOW, window=window)
            sql = await compute_statuses(session, keys, now=NOW, window=window)
            ranged = await compute_statuses(
                session, now=NOW, window=window, between=(keys[0], keys[-1])
            )
            expected = {k: (x.status, x.gamma) for k, x in python.items()}
            assert sql == expected
            assert {k: v for k, v in ranged.items() if k in expected} == expected
    statuses = {status for status, _ in expected.values()}
    assert len(statuses) >= 2, statuses


async def _statements(demo: Demo, work: Any) -> int:
    engines = [e.sync_engine for e in demo.services.db.engines]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        async with demo.services.db.write() as session:
            await work(session)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    return len(seen)


async def test_the_ledger_hooks_cost_a_constant_number_of_statements(demo: Demo) -> None:
    services = demo.services
    admin = demo.principals["admin"]
    mfg = services.ledger
    lots = []
    for i in range(3):
        product_id = await first_product_id(services, i)
        produced = await mfg.record(
            admin,
            [
                MovementRequest(
                    K.PRODUCE,
                    demo.locations["MFG-01"],
                    100_000,
                    new_lot=NewLot(
                        product_id,
                        f"ST{i}{utcnow():%H%M%S%f}"[:20],
                        utcnow().date() + timedelta(days=400),
                        demo.orgs["Helvepharm Manufacturing AG"],
                    ),
                )
            ],
            operation="test.produce",
        )
        lots.append(produced.movements[0].lot_id)
    async with services.db.read() as session:
        lot_rows = list((await session.execute(select(Lot).where(Lot.id.in_(lots)))).scalars())
        approvals = dict((await session.execute(select(Product.id, Product.approval_number))).all())
    org = demo.orgs["Helvepharm Manufacturing AG"]
    other = demo.orgs["MedDistri Wholesale"]

    def written(n: int) -> list[tuple[Movement, Lot]]:
        # Dispensed and shipped (never received: in transit) by the manufacturer, spread over
        # the batches; nothing changes a status, so only the hooks' own statements count.
        return [
            (
                Movement(
                    kind=K.DISPENSE if i % 2 else K.SHIP,
                    lot_id=lot_rows[i % 3].id,
                    location_id=demo.locations["MFG-01"],
                    organisation_id=org,
                    counterparty_id=None if i % 2 else other,
                    quantity=-1,
                    balance_after=0,
                    occurred_at=utcnow() - timedelta(hours=100 + i % 7),
                ),
                lot_rows[i % 3],
            )
            for i in range(n)
        ]

    counts: dict[str, list[int]] = {"totals": [], "with approvals": [], "status": []}
    keys_of: list[set[Any]] = []
    for n in (1, 1000):
        batch = written(n)

        async def totals(session: Any, batch: Any = batch) -> None:
            keys_of.append(await record_totals(session, batch))

        async def given(session: Any, batch: Any = batch) -> None:
            await record_totals(session, batch, approvals)

        counts["totals"].append(await _statements(demo, totals))
        counts["with approvals"].append(await _statements(demo, given))
    keys = set().union(*keys_of)
    assert len(keys) == 3

    async def status(session: Any) -> None:
        await refresh_status(
            session,
            keys,
            services.alerts,
            transit_window=services.supervision_checks.transit_window,
        )

    first = await _statements(demo, status)  # the batches leak (shipped, overdue): alerts
    for _ in range(2):  # the same statuses again: lock, compute, nothing to store
        counts["status"].append(await _statements(demo, status))
    assert first > counts["status"][0]
    one = sorted(keys)[:1]

    async def status_one(session: Any) -> None:
        await refresh_status(
            session, one, services.alerts, transit_window=services.supervision_checks.transit_window
        )

    counts["status"].append(await _statements(demo, status_one))
    assert counts == {"totals": [3, 3], "with approvals": [2, 2], "status": [2, 2, 2]}, counts
    async with services.db.read() as session:
        stored = (
            (
                await session.execute(
                    select(BatchStatus.status).where(
                        BatchStatus.batch_number.in_([k[1] for k in keys])
                    )
                )
            )
            .scalars()
            .all()
        )
    assert sorted(stored) == ["OUTFLOW_LEAK"] * 3


@pytest.mark.parametrize("seed", [6, 7])
async def test_a_check_reads_its_batch_in_one_statement_and_agrees_with_evaluate(
    demo: Demo, seed: int
) -> None:
    """`check` reads constituents, edges and lot in one UNION statement; what it concludes is
    what the general `evaluate` concludes, and after it come only the shipments that name the
    parts, never the totals, lot or labels again (edge ends that report nothing included)."""
    await _random_ledger(demo, seed)
    await _store(demo, await _pure_totals(demo))
    services = demo.services
    checks = services.supervision_checks
    admin = demo.principals["admin"]
    async with services.db.read() as session:
        keys = sorted(
            set(
                await session.execute(
                    select(
                        BatchConstituentTotal.approval_number, BatchConstituentTotal.batch_number
                    )
                )
            )
        )
    assert len(keys) >= 3
    now = utcnow()
    engines = [e.sync_engine for e in services.db.engines]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    named = 0
    for key in keys:
        async with services.db.read() as session:
            analyses, labels = await evaluate(
                session, [key], now=now, window=checks.transit_window, named=True
            )
        for engine in engines:
            event.listen(engine, "before_cursor_execute", count)
        try:
            seen.clear()
            result = await checks.check(admin, *key, now=now)
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", count)
        assert result.analysis == analyses[key], key
        assert {k: v for k, v in result.labels.items() if k in labels} == labels
        # the one statement (labels of silent edge ends too), then at most the named shipments
        assert "UNION ALL" in seen[0], seen
        for later in seen[1:]:
            assert "batch_constituent_totals" not in later and "batch_edge_totals" not in later
            assert "FROM lots" not in later and "FROM organisations" not in later, later
        assert len(seen) <= 2, seen
        named += len(seen) > 1
    assert named >= 1  # some batches had shipments to name


async def test_a_gap_of_many_shipments_is_named_across_pages_like_reading_every_row(
    demo: Demo,
) -> None:
    """A check names a side's shipments page by page (`NAMED_PAGE` rows at a time, ties of
    time broken by id across a page's end, other receivers' shipments skipped); what it
    concludes is `analyse` over every SHIP/RECEIVE row of the batch. The label of a receiver
    that reports nothing comes with the totals, not from a statement of its own."""
    services = demo.services
    async with services.db.write() as session:
        product_id = await first_product_id(services, 0)
        approval = (
            await session.execute(select(Product.approval_number).where(Product.id == product_id))
        ).scalar_one()
        lot = Lot(
            product_id=product_id,
            batch_number="PAGED01",
            expiry_date=NOW.date() + timedelta(days=400),
            manufacturer_id=None,
        )
        session.add(lot)
        await session.flush()
        lot_id = lot.id
        locations = dict(
            (await session.execute(select(Location.organisation_id, Location.id))).all()
        )
        sender, receiver, other = sorted(locations)[:3]
        shipments = 2 * NAMED_PAGE + NAMED_PAGE // 2
        rows = []
        for i in range(shipments):
            to = other if i % 5 == 0 else receiver  # matched by the SQL, not by the edge
            rows.append((K.SHIP, sender, to, -1 - i % 3, NOW - timedelta(seconds=1000 - i // 7)))
        rows.append((K.RECEIVE, receiver, sender, 12, NOW - timedelta(seconds=10)))
        await session.execute(
            insert(Movement),
            [
                {
                    "kind": kind,
                    "lot_id": lot_id,
                    "location_id": locations[org],
                    "organisation_id": org,
                    "counterparty_id": party,
                    "quantity": quantity,
                    "balance_after": 0,
                    "reference": f"S{n}",
                    "occurred_at": at,
                    "recorded_at": NOW,
                }
                for n, (kind, org, party, quantity, at) in enumerate(rows)
            ],
        )
    await _store(demo, await _pure_totals(demo))
    now = NOW + timedelta(hours=1)
    checks = services.supervision_checks
    engines = [e.sync_engine for e in services.db.engines]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        result = await checks.check(demo.principals["admin"], approval, "PAGED01", now=now)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    # the batch's totals with every label (`other` reports nothing), then three pages
    assert len(seen) == 1 + 3, seen
    assert other in result.labels and sender in result.labels
    async with services.db.read() as session:
        constituents, edges, _labels, _lot = await _load_one(session, (approval, "PAGED01"))
        every_row = [
            TransferRow(mid, kind, org, party, abs(quantity), at, ref)
            for mid, kind, org, party, quantity, at, ref in await session.execute(
                select(
                    Movement.id,
                    Movement.kind,
                    Movement.organisation_id,
                    Movement.counterparty_id,
                    Movement.quantity,
                    Movement.occurred_at,
                    Movement.reference,
                ).where(Movement.lot_id == lot_id, Movement.kind.in_([K.SHIP, K.RECEIVE]))
            )
        ]
    expected = analyse(constituents, edges, every_row, now=now, window=checks.transit_window)
    gapped = [e for e in expected.edges if e.sender_id == sender and e.receiver_id == receiver]
    assert len(gapped[0].shipments) > NAMED_PAGE  # the gap needs more than one page
    assert result.analysis == expected
