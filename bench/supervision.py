"""What does batch supervision cost against a ledger of a million movements?

Builds a fresh, migrated SQLite database holding N movements (default 1,000,000) over N/100
drug batches (10,000) and 200 constituents (10 manufacturers, 30 wholesalers, 60 hospitals with
a central pharmacy and a ward each, 100 pharmacies): per batch a manufacturer produces, ships to
wholesalers, they ship to hospitals and pharmacies, hospitals move stock to their wards, and
patients are dispensed to (with returns and disposals). A few batches per 200 are left
IN_TRANSIT (recent shipment not yet received), leak (a shipment out of the network, or one
overdue), show an illegal inflow (a receipt nobody shipped) or a negative inventory. One "hot"
batch carries --hot movements (default 2%) to show what a per-batch scan costs on a busy batch.

The rows are generated in Python and loaded with the stdlib sqlite3 driver (executemany, one
transaction), NOT through the ledger service: a million service transactions would take far
too long. The running-total tables are filled from the same rows through
`totals_from_movements` (the function the ledger's `record_totals` uses), so they match what
the ledger would have kept; the recompute below verifies that they do.

Timed, through the real service (`server/supervision/checks.py`, SQLAlchemy + aiosqlite):
  check       one batch check (median of 100 random batches, of the gapped ones among them,
              and the hot batch): reads the batch's totals rows (+ the few SHIP/RECEIVE rows
              of a gapped edge)
  report      supervisionReport's first page (50 rows, keyset), and full status sweeps
              (check_all: every batch; in-transit only: what the periodic task runs)
  recompute   every total from the ledger, in SQL (one GROUP BY per totals table over the
              movements and the running totals together), compared with the running totals
and, on the same connection, a plain SQL GROUP BY over the movements computing the same
per-constituent totals: per batch (through the movements' lot index) and for the whole ledger.
Each check alternates with its GROUP BY; the whole-ledger GROUP BY runs once untimed first (so
the recompute does not pay alone for the cold page cache), then recompute and GROUP BY twice,
alternated, and the better run of each counts.

    .venv/bin/python bench/supervision.py [--movements N] [--hot H] [--keep PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.common import load, table_lines
from server.config import Settings
from server.core.migrate import upgrade
from server.core.pagination import keyset_page
from server.core.security import Principal, Role
from server.inventory.models import MovementKind as K
from server.services import Services
from server.supervision.checks import merge_totals
from server.supervision.gamma import ALERTING
from server.supervision.models import BatchStatus
from server.supervision.totals import (
    COUNTERS,
    MovementFact,
    Totals,
    totals_from_movements,
)

SECRET = "bench-secret-key-that-is-long-enough-for-hs256-0123456789abcdef"
PER_BATCH = 100
PRODUCTS = 100
KINDS = {"MANUFACTURER": 10, "WHOLESALER": 30, "HOSPITAL": 60, "PHARMACY": 100}
NOW = datetime.now(UTC).replace(microsecond=0)


def stamp(value: datetime) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Network:
    def __init__(self) -> None:
        self.orgs: list[tuple[int, str, str]] = []  # id, name, kind
        self.locations: list[tuple[int, int, str, str]] = []  # id, org, code, kind
        self.site: dict[int, int] = {}  # org -> main location
        self.ward: dict[int, int] = {}  # hospital -> ward location
        self.by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
        org_id = loc_id = 0
        for kind, count in KINDS.items():
            for i in range(count):
                org_id += 1
                self.orgs.append((org_id, f"Bench {kind.lower()} {i:03d}", kind))
                self.by_kind[kind].append(org_id)
                loc_id += 1
                site_kind = "PHARMACY" if kind in ("PHARMACY", "HOSPITAL") else "WAREHOUSE"
                self.locations.append((loc_id, org_id, f"B-{org_id:03d}", site_kind))
                self.site[org_id] = loc_id
                if kind == "HOSPITAL":
                    loc_id += 1
                    self.locations.append((loc_id, org_id, f"B-{org_id:03d}-W", "WARD"))
                    self.ward[org_id] = loc_id
        self.regulator = org_id + 1


class Batch:
    """The movements of one batch, with running balances per location."""

    def __init__(self, net: Network, lot_id: int, start: datetime) -> None:
        self.net = net
        self.lot_id = lot_id
        self.t = start
        self.balance: dict[int, int] = {}
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        kind: K,
        location: int,
        org: int,
        quantity: int,
        counterparty: int | None = None,
        reference: str | None = None,
        *,
        hours: float = 1.0,
        at: datetime | None = None,
    ) -> None:
        signed = quantity if kind in (K.PRODUCE, K.RECEIVE, K.TRANSFER_IN, K.RETURN) else -quantity
        if kind in (K.ADJUST, K.COUNT):
            signed = quantity
        self.t += timedelta(hours=hours)
        self.balance[location] = self.balance.get(location, 0) + signed
        when = at or self.t
        self.rows.append(
            (kind, location, org, counterparty, signed, self.balance[location], reference, when)
        )


def make_batch(
    net: Network, index: int, lot_id: int, size: int, rng: random.Random, anomaly: str | None
) -> Batch:
    """About `size` movements: produce, ship through two wholesalers to endpoints, dispense."""
    start = NOW - timedelta(days=rng.uniform(30, 360))
    if anomaly == "IN_TRANSIT":
        start = NOW - timedelta(hours=60 + size * 0.02)
    b = Batch(net, lot_id, start)
    step = 0.02 if anomaly == "IN_TRANSIT" else 1.0
    mfg = net.by_kind["MANUFACTURER"][index % 10]
    wholesalers = rng.sample(net.by_kind["WHOLESALER"], 2)
    ends_per = max(2, min(40, size // 50))
    produced = 40 * size
    b.add(K.PRODUCE, net.site[mfg], mfg, produced, hours=step)
    endpoints: list[int] = []
    for w_i, w in enumerate(wholesalers):
        half = produced // 2
        ref = f"DN-{lot_id}-{w_i}"
        b.add(K.SHIP, net.site[mfg], mfg, half, w, ref, hours=step)
        b.add(K.RECEIVE, net.site[w], w, half, mfg, ref, hours=step)
        ends = rng.sample(net.by_kind["HOSPITAL"] + net.by_kind["PHARMACY"], ends_per)
        for e_i, e in enumerate(ends):
            q = half // (ends_per + 1)
            ref = f"DN-{lot_id}-{w_i}-{e_i}"
            b.add(K.SHIP, net.site[w], w, q, e, ref, hours=step)
            if anomaly == "IN_TRANSIT" and w_i == 1 and e_i == ends_per - 1:
                continue  # shipped hours ago, not yet received
            b.add(K.RECEIVE, net.site[e], e, q, w, ref, hours=step)
            if e in net.ward:
                b.add(
                    K.TRANSFER_OUT, net.site[e], e, q // 2, None, f"TR-{lot_id}-{e_i}", hours=step
                )
                b.add(K.TRANSFER_IN, net.ward[e], e, q // 2, None, f"TR-{lot_id}-{e_i}", hours=step)
            endpoints.append(e)
    if anomaly == "LEAK_EXPORT":
        w = wholesalers[0]
        b.add(K.SHIP, net.site[w], w, 5, None, f"EXP-{lot_id}", hours=step)
    if anomaly == "LEAK_OVERDUE":
        w, e = wholesalers[0], endpoints[0]
        b.add(K.SHIP, net.site[w], w, 7, e, f"DN-{lot_id}-LOST", hours=step)
    if anomaly == "ILLEGAL_INFLOW":
        e = endpoints[-1]
        b.add(K.RECEIVE, net.site[e], e, 4, wholesalers[0], f"DN-{lot_id}-GREY", hours=step)
    while len(b.rows) < size:
        e = rng.choice(endpoints)
        where = net.ward.get(e, net.site[e]) if rng.random() < 0.7 else net.site[e]
        roll = rng.random()
        if roll < 0.03:
            b.add(K.RETURN, where, e, 1, hours=step)
        elif roll < 0.05 and b.balance.get(where, 0) > 0:
            b.add(K.DISPOSE, where, e, 1, hours=step)
        else:
            quantity = 1 + int(rng.random() * 3)
            if anomaly != "NEGATIVE" and b.balance.get(where, 0) < quantity:
                continue
            b.add(K.DISPENSE, where, e, quantity, hours=step)
    if anomaly == "NEGATIVE":
        e = endpoints[0]
        b.rows.pop()
        held = b.balance.get(net.site[e], 0) + b.balance.get(net.ward.get(e, -1), 0)
        b.add(K.DISPENSE, net.site[e], e, held + 3, hours=step)
    return b


def anomaly_of(index: int) -> str | None:
    return {
        0: "IN_TRANSIT",
        1: "IN_TRANSIT",
        2: "IN_TRANSIT",
        3: "IN_TRANSIT",
        4: "LEAK_EXPORT",
        5: "LEAK_OVERDUE",
        6: "ILLEGAL_INFLOW",
        7: "NEGATIVE",
    }.get(index % 200)


def sizes(movements: int, batches: int, hot: int) -> Iterator[int]:
    rest = movements - hot
    others = batches - 1
    for i in range(batches):
        if i == 0:
            yield hot
        else:
            yield rest // others + (1 if i - 1 < rest % others else 0)


def build(path: Path, movements: int, hot: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    net = Network()
    batches = max(2, movements // PER_BATCH)
    rng = random.Random(20261123)
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA foreign_keys=OFF")
    now = stamp(NOW)
    con.executemany(
        "INSERT INTO organisations (id, name, kind, gln, created_at) VALUES (?, ?, ?, NULL, ?)",
        [(i, n, k, now) for i, n, k in net.orgs]
        + [(net.regulator, "Bench regulator", "REGULATOR", now)],
    )
    con.executemany(
        "INSERT INTO locations (id, organisation_id, parent_id, code, name, kind, "
        "allow_negative_stock, active) VALUES (?, ?, NULL, ?, ?, ?, 1, 1)",
        [(i, o, c, c, k) for i, o, c, k in net.locations],
    )
    con.executemany(
        "INSERT INTO products (id, name, strength, dosage_form, unit, approval_number, atc_code, "
        "controlled_schedule, storage, unit_cost, active) VALUES "
        "(?, ?, '10 mg', 'tablet', 'pack', ?, NULL, NULL, 'ROOM', 1.0, 1)",
        [(p, f"Bench drug {p:03d}", f"BM-{p:05d}") for p in range(1, PRODUCTS + 1)],
    )
    expiry = (NOW + timedelta(days=900)).date().isoformat()
    lots = [
        (lot, (lot - 1) % PRODUCTS + 1, f"B{lot:07d}", net.by_kind["MANUFACTURER"][lot % 10])
        for lot in range(1, batches + 1)
    ]
    con.executemany(
        "INSERT INTO lots (id, product_id, batch_number, expiry_date, manufacturer_id, status) "
        "VALUES (?, ?, ?, ?, ?, 'RELEASED')",
        [(lot, p, b, expiry, m) for lot, p, b, m in lots],
    )
    keys = {lot: (f"BM-{p:05d}", b) for lot, p, b, _ in lots}
    generate = insert = totals_time = 0.0
    totals = Totals()
    pending: list[tuple[Any, ...]] = []
    insert_sql = (
        "INSERT INTO movements (kind, lot_id, location_id, organisation_id, counterparty_id, "
        "quantity, balance_after, reference, occurred_at, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    written = 0
    for index, size in enumerate(sizes(movements, batches, hot)):
        lot_id = index + 1
        started = time.perf_counter()
        batch = make_batch(net, index, lot_id, size, rng, None if index == 0 else anomaly_of(index))
        generate += time.perf_counter() - started
        started = time.perf_counter()
        approval, number = keys[lot_id]
        part = totals_from_movements(
            MovementFact(approval, number, org, cp, kind, q, at)
            for kind, _, org, cp, q, _, _, at in batch.rows
        )
        merge_totals(totals, part)
        totals_time += time.perf_counter() - started
        started = time.perf_counter()
        for kind, loc, org, cp, q, bal, ref, at in batch.rows:
            pending.append((kind.value, lot_id, loc, org, cp, q, bal, ref, stamp(at), now))
        written += len(batch.rows)
        if len(pending) >= 100_000:
            con.executemany(insert_sql, pending)
            pending.clear()
        insert += time.perf_counter() - started
    started = time.perf_counter()
    if pending:
        con.executemany(insert_sql, pending)
    con.executemany(
        "INSERT INTO batch_constituent_totals (approval_number, batch_number, organisation_id, "
        "produced, received, transferred_in, returned, adjusted_in, shipped, transferred_out, "
        "dispensed, disposed, adjusted_out) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(a, b, o, *(c[n] for n in COUNTERS)) for (a, b, o), c in totals.constituents.items()],
    )
    con.executemany(
        "INSERT INTO batch_edge_totals (approval_number, batch_number, sender_id, receiver_id, "
        "shipped, received, last_shipped_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                a,
                b,
                s,
                r,
                e["shipped"],
                e["received"],
                e["last_shipped_at"] and stamp(e["last_shipped_at"]),
            )
            for (a, b, s, r), e in totals.edges.items()
        ],
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()
    insert += time.perf_counter() - started
    timings.update(
        generate=generate,
        insert=insert,
        totals=totals_time,
        movements=written,
        batches=batches,
        constituent_rows=len(totals.constituents),
        edge_rows=len(totals.edges),
    )
    return timings


GROUP_COLUMNS = ", ".join(
    f"SUM(CASE WHEN m.kind = '{kind}' THEN {expr} ELSE 0 END) AS {name}"
    for kind, expr, name in [
        ("PRODUCE", "m.quantity", "produced"),
        ("RECEIVE", "m.quantity", "received"),
        ("TRANSFER_IN", "m.quantity", "transferred_in"),
        ("RETURN", "m.quantity", "returned"),
        ("SHIP", "-m.quantity", "shipped"),
        ("TRANSFER_OUT", "-m.quantity", "transferred_out"),
        ("DISPENSE", "-m.quantity", "dispensed"),
        ("DISPOSE", "-m.quantity", "disposed"),
    ]
) + (
    ", SUM(CASE WHEN m.kind IN ('ADJUST', 'COUNT') AND m.quantity > 0 THEN m.quantity "
    "ELSE 0 END) AS adjusted_in, SUM(CASE WHEN m.kind IN ('ADJUST', 'COUNT') AND m.quantity < 0 "
    "THEN -m.quantity ELSE 0 END) AS adjusted_out"
)
GROUP_ONE = (
    f"SELECT m.organisation_id, {GROUP_COLUMNS} FROM movements m WHERE m.lot_id = :lot "
    "GROUP BY m.organisation_id"
)
GROUP_ALL = (
    f"SELECT p.approval_number, l.batch_number, m.organisation_id, {GROUP_COLUMNS} "
    "FROM movements m JOIN lots l ON l.id = m.lot_id JOIN products p ON p.id = l.product_id "
    "GROUP BY p.approval_number, l.batch_number, m.organisation_id"
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


async def measure(url: str, batches: int) -> list[tuple[str, float, str]]:
    services = Services.build(Settings(database_url=url, secret_key=SECRET))
    regulator = Principal(
        user_id=0,
        username="bench.regulator",
        roles=frozenset({Role.REGULATOR}),
        organisation_id=None,
        location_ids=None,
    )
    checks = services.supervision_checks
    rng = random.Random(7)
    sample = rng.sample(range(2, batches + 1), min(100, batches - 1))
    key = {lot: (f"BM-{(lot - 1) % PRODUCTS + 1:05d}", f"B{lot:07d}") for lot in [1, *sample]}
    results: list[tuple[str, float, str]] = []

    async def one_check(lot: int) -> float:
        started = time.perf_counter()
        await checks.check(regulator, *key[lot])
        return time.perf_counter() - started

    async def one_group(lot: int) -> float:
        started = time.perf_counter()
        async with services.db.read() as session:
            (await session.execute(text(GROUP_ONE), {"lot": lot})).all()
        return time.perf_counter() - started

    for lot in sample[:5]:  # warm-up
        await one_check(lot)
        await one_group(lot)
    # alternated, so that neither side has the machine (or the page cache) to itself
    check_times, group_times = [], []
    for lot in sample:
        check_times.append(await one_check(lot))
        group_times.append(await one_group(lot))
    gapped_lots = []
    for lot in sample:
        result = await checks.check(regulator, *key[lot])
        if any(e.gap for e in result.analysis.edges):
            gapped_lots.append(lot)
    gapped = len(gapped_lots)
    # The median hides them: a gapped batch also reads the shipments that name its gap.
    gapped_check, gapped_group = [], []
    for lot in gapped_lots * 5:
        gapped_check.append(await one_check(lot))
        gapped_group.append(await one_group(lot))
    hot_check = statistics.median([await one_check(1) for _ in range(5)])
    hot_group = statistics.median([await one_group(1) for _ in range(5)])
    check_median = statistics.median(check_times)
    group_median = statistics.median(group_times)
    results += [
        (
            "check one batch (median of 100)",
            check_median,
            f"{gapped} of {len(sample)} sampled batches have a gapped edge",
        ),
        ("  plain GROUP BY of that batch's movements", group_median, "median of the same 100"),
        *(
            [
                ("check a gapped batch", statistics.median(gapped_check), "median, 5 each"),
                (
                    "  plain GROUP BY of that batch's movements",
                    statistics.median(gapped_group),
                    "median, 5 each",
                ),
            ]
            if gapped_lots
            else []
        ),
        ("check the hot batch", hot_check, "median of 5"),
        ("  plain GROUP BY of the hot batch's movements", hot_group, "median of 5"),
    ]

    started = time.perf_counter()
    first = await checks.check_all()
    first_sweep = time.perf_counter() - started
    started = time.perf_counter()
    second = await checks.check_all()
    second_sweep = time.perf_counter() - started
    started = time.perf_counter()
    transit = await checks.check_all(in_transit_only=True)
    transit_sweep = time.perf_counter() - started
    counts = ", ".join(f"{k.value} {v}" for k, v in sorted(first.by_status.items()))
    alerted = sum(c.current in ALERTING for c in first.changes)

    S = BatchStatus

    async def report_page() -> float:
        started = time.perf_counter()
        stmt = await checks.report_query(regulator)
        await keyset_page(
            services.db,
            stmt,
            keys=[S.approval_number, S.batch_number],
            first=50,
            after=None,
            max_page_size=100,
            key_of=lambda r: [r.approval_number, r.batch_number],
        )
        return time.perf_counter() - started

    await report_page()
    page = statistics.median([await report_page() for _ in range(20)])
    results += [
        ("supervisionReport first page (50 rows)", page, "median of 20, from batch_statuses"),
        (
            "status sweep, every batch (first run)",
            first_sweep,
            f"{first.checked} batches; creates the status rows; {len(first.changes)} "
            f"changes, {alerted} of them alerted ({counts})",
        ),
        ("status sweep, every batch (again)", second_sweep, f"{len(second.changes)} changes"),
        (
            "status sweep, IN_TRANSIT only (periodic)",
            transit_sweep,
            f"{transit.checked} batches",
        ),
    ]

    async def group_everything() -> tuple[float, int]:
        started = time.perf_counter()
        async with services.db.read() as session:
            grouped = (await session.execute(text(GROUP_ALL))).all()
        return time.perf_counter() - started, len(grouped)

    # Nothing has read the whole movements table yet: one untimed GROUP BY first, so the
    # recompute does not pay alone for bringing it into the page cache; then both twice,
    # alternated, and the better of each (the machine is shared).
    await group_everything()
    recompute_runs, group_runs = [], []
    for _ in range(2):
        started = time.perf_counter()
        recomputed = await checks.recompute()
        recompute_runs.append(time.perf_counter() - started)
        elapsed, grouped_rows = await group_everything()
        group_runs.append(elapsed)
    recompute_time, group_all = min(recompute_runs), min(group_runs)
    verdict = (
        "running totals agree"
        if not recomputed.differences
        else f"{len(recomputed.differing_batches)} batches DIFFER"
    )
    results += [
        (
            "recompute every total from the ledger",
            recompute_time,
            f"{recomputed.movements} movements, {recomputed.batches} batches: {verdict}; "
            f"best of {', '.join(ms(t) for t in recompute_runs)}",
        ),
        (
            "  plain GROUP BY over all movements",
            group_all,
            f"{grouped_rows} (batch, constituent) rows; best of "
            f"{', '.join(ms(t) for t in group_runs)}",
        ),
    ]
    await services.close()
    results.append(("", 0.0, ""))
    results.append(
        (
            "ratios",
            0.0,
            f"check/GROUP BY one batch {check_median / group_median:.2f}x; gapped batch "
            + (
                f"{statistics.median(gapped_check) / statistics.median(gapped_group):.2f}x"
                if gapped_lots
                else "-"
            )
            + f"; hot batch "
            f"{hot_check / hot_group:.2f}x; sweep/GROUP BY all {second_sweep / group_all:.2f}x; "
            f"recompute/GROUP BY all {recompute_time / group_all:.2f}x; full GROUP BY / one "
            f"check {group_all / check_median:,.0f}x",
        )
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movements", type=int, default=1_000_000)
    parser.add_argument("--hot", type=int, default=None, help="movements of the hot batch")
    parser.add_argument("--keep", type=Path, default=None, help="keep the database here")
    args = parser.parse_args()
    hot = args.hot if args.hot is not None else max(PER_BATCH, args.movements // 50)
    workdir = Path(tempfile.mkdtemp(prefix="apotheca-supervision-"))
    path = args.keep or workdir / "supervision.db"
    url = f"sqlite+aiosqlite:///{path}"
    started = time.perf_counter()
    asyncio.run(upgrade(url))
    built = build(path, args.movements, hot)
    load_time = time.perf_counter() - started
    print(f"supervision benchmark: SQLite {sqlite3.sqlite_version}, load {load()}, database {path}")
    print(
        f"loaded {built['movements']:,} movements over {built['batches']:,} batches "
        f"(hot batch: {hot:,}) and {sum(KINDS.values())} constituents in {load_time:.1f} s "
        f"(generate {built['generate']:.1f} s, sqlite3 executemany {built['insert']:.1f} s, "
        f"totals_from_movements {built['totals']:.1f} s) -> {built['constituent_rows']:,} "
        f"constituent and {built['edge_rows']:,} edge total rows."
    )
    print(
        "Rows were written directly with sqlite3 executemany, not through the ledger service "
        "(a million service transactions would take too long); the running totals come from "
        "totals_from_movements over the same rows, and the recompute below checks them."
    )
    print()
    results = asyncio.run(measure(url, int(built["batches"])))
    rows = [(name, ms(t) if name and name != "ratios" else "", note) for name, t, note in results]
    for line in table_lines(["what", "time", "notes"], rows):
        print(line.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
