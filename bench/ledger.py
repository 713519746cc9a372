"""How fast does the ledger record stock movements, and what does each layer cost?

Four ways of writing the same N movements (RECEIVE and DISPENSE alternating on a few lots at
one location), each on a freshly migrated database that holds the demo network:

  (a) service   LedgerService.record, one movement per call, each with an idempotency key:
                the full rules (permission, lot checks, balance upsert, hash-chained audit
                event, idempotency record) in one transaction per movement.
  (b) graphql   receiveStock / dispenseStock over HTTP against a real uvicorn server (a
                subprocess), one mutation per request, 20 concurrent clients; adds HTTP,
                token decoding, principal loading and GraphQL parsing/validation on top of (a).
  (c) batched   LedgerService.record with 100, then 1,000 movements per call: the same rules,
                set-based (one statement per table whatever the batch size).
  (e) feed      recordMovements over HTTP against the real server, 1,000 movements per call
                (one client): (c) plus HTTP, token, GraphQL parsing of a 1,000-item input.
  (d) raw       the floor: the database driver alone (stdlib sqlite3, or asyncpg for
                PostgreSQL) inserting equivalent movement rows plus a balance upsert per row,
                executemany, one transaction per 1,000 rows. No rules, no audit, no ORM.

The ratio to (d) says how much of the database's raw write capacity each path keeps, so a
slow figure can be told apart from a slow machine. Wall time is time.perf_counter; beside it
the CPU time of the Python process doing the work (this one, or the uvicorn server for (b)),
which shows whether a path is bound by Python or waits on the database. Every path has a short
untimed warm-up and afterwards counts the movements it wrote. Run:

    .venv/bin/python bench/ledger.py [--movements N] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
from strawberry.relay import to_base64

from bench.common import (
    DEMO_PASSWORD,
    LOT_COUNT,
    OPENING_STOCK,
    Backend,
    Stopwatch,
    live_server,
    load,
    percentile,
    prepared,
    process_cpu,
    table_lines,
)
from server.inventory.models import MovementKind

BATCH_SIZE = 100
FEED_SIZE = 1000  # recordMovements' maximum, and the raw floor's transaction size
CLIENTS = 20
WARMUP = 20  # untimed movements per path: compiled SQL caches, connections, GraphQL schema

MUTATIONS = {
    MovementKind.RECEIVE: """
mutation($input: ReceiveStockInput!) {
  receiveStock(input: $input) { replayed movements { id balanceAfter } errors { code message } }
}""",
    MovementKind.DISPENSE: """
mutation($input: DispenseStockInput!) {
  dispenseStock(input: $input) { replayed movements { id balanceAfter } errors { code message } }
}""",
}


@dataclass
class Result:
    path: str
    movements: int
    seconds: float
    cpu: float | None  # CPU seconds of the Python process doing the work (None: unknown)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.movements / self.seconds


def check_count(fixture_count: int, expected: int, path: str) -> None:
    if fixture_count != expected:
        raise RuntimeError(f"{path}: expected {expected} movements written, found {fixture_count}")


# --- (a) service, one movement per call -----------------------------------------------------------


async def bench_service(backend: Backend, n: int) -> Result:
    async with prepared(backend, "service") as fx:
        ledger = fx.services.ledger

        async def run(prefix: str, count: int) -> None:
            for i in range(count):
                await ledger.record(
                    fx.principal,
                    [fx.request(i)],
                    operation="bench.single",
                    idempotency_key=f"{prefix}{i}",
                )

        await run(f"warm-{fx.tag}-", WARMUP)
        prefix = f"single-{fx.tag}-"
        with Stopwatch() as watch:
            await run(prefix, n)
        check_count(await fx.count(prefix), n, "service")
    return Result("(a) service, 1 per call", n, watch.wall, watch.cpu)


# --- (c) service, batches of 100 ---------------------------------------------------------------


async def bench_batched(backend: Backend, n: int, size: int = BATCH_SIZE) -> Result:
    async with prepared(backend, f"batched{size}") as fx:
        ledger = fx.services.ledger

        async def run(prefix: str, count: int) -> None:
            for start in range(0, count, size):
                requests = [fx.request(i) for i in range(start, min(start + size, count))]
                await ledger.record(
                    fx.principal,
                    requests,
                    operation="bench.batch",
                    idempotency_key=f"{prefix}{start}",
                )

        await run(f"warm-{fx.tag}-", size)
        prefix = f"batch-{fx.tag}-"
        with Stopwatch() as watch:
            await run(prefix, n)
        check_count(await fx.count(prefix), n, "batched")
    return Result(f"(c) service, {size} per call", n, watch.wall, watch.cpu)


# --- (e) recordMovements over HTTP ------------------------------------------------------------

FEED_MUTATION = """
mutation($input: RecordMovementsInput!) {
  recordMovements(input: $input) { replayed movements { id } errors { code field message } }
}"""


async def bench_feed(backend: Backend, n: int) -> Result:
    async with prepared(backend, "feed") as fx:
        location = to_base64("Location", fx.location_id)
        lots = {lot_id: to_base64("Lot", lot_id) for lot_id in fx.lot_ids}

        def body(start: int, count: int, key: str) -> dict[str, Any]:
            items = [
                {"kind": fx.kind(i).value, "location": location, "lot": lots[fx.lot(i)],
                 "quantity": 1}
                for i in range(start, start + count)
            ]  # fmt: skip
            return {
                "query": FEED_MUTATION,
                "variables": {"input": {"movements": items, "idempotencyKey": key}},
            }

        with live_server(fx.url) as (url, pid):
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                login = await http.post(
                    "/auth/token",
                    data={"grant_type": "password", "username": "admin", "password": DEMO_PASSWORD},
                )
                login.raise_for_status()
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

                async def run(prefix: str, count: int) -> None:
                    for start in range(0, count, FEED_SIZE):
                        size = min(FEED_SIZE, count - start)
                        response = await http.post(
                            "/graphql", json=body(start, size, f"{prefix}{start}"), headers=headers
                        )
                        payload = response.json()["data"]["recordMovements"]
                        if payload["errors"] or len(payload["movements"]) != size:
                            raise RuntimeError(f"feed at {start} failed: {payload['errors']}")

                await run(f"warm-{fx.tag}-", FEED_SIZE)
                prefix = f"feed-{fx.tag}-"
                server_before = process_cpu(pid)
                with Stopwatch() as watch:
                    await run(prefix, n)
                server_after = process_cpu(pid)
        # Movements carry the request key of their call: count them by the calls' prefix.
        check_count(await fx.count(prefix), n, "feed")
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before
    note = f"CPU s: server (uvicorn) as shown, the client {watch.cpu:.2f}"
    label = f"(e) recordMovements HTTP, {FEED_SIZE} per call"
    return Result(label, n, watch.wall, server_cpu, note)


# --- (b) GraphQL over HTTP ---------------------------------------------------------------------


async def bench_graphql(backend: Backend, n: int, clients: int) -> Result:
    async with prepared(backend, "graphql") as fx:
        location = to_base64("Location", fx.location_id)
        lots = {lot_id: to_base64("Lot", lot_id) for lot_id in fx.lot_ids}

        def body(i: int, key: str) -> dict[str, Any]:
            kind = fx.kind(i)
            variables = {
                "location": location,
                "lot": lots[fx.lot(i)],
                "quantity": 1,
                "idempotencyKey": key,
            }
            return {"query": MUTATIONS[kind], "variables": {"input": variables}}

        with live_server(fx.url) as (url, pid):
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            sessions = [
                httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for _ in range(clients)
            ]
            try:
                login = await sessions[0].post(
                    "/auth/token",
                    data={"grant_type": "password", "username": "admin", "password": DEMO_PASSWORD},
                )
                login.raise_for_status()
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                latencies: list[float] = []

                async def client(
                    http: httpx.AsyncClient, queue: Iterator[int], prefix: str
                ) -> None:
                    for i in queue:
                        started = time.perf_counter()
                        response = await http.post(
                            "/graphql", json=body(i, f"{prefix}{i}"), headers=headers
                        )
                        latencies.append(time.perf_counter() - started)
                        payload = response.json()
                        data = (payload.get("data") or {}).values()
                        if (
                            response.status_code != 200
                            or "errors" in payload
                            or any(d["errors"] or d["replayed"] for d in data)
                        ):
                            raise RuntimeError(f"request {i} failed: {response.text}")

                async def run(prefix: str, count: int) -> Stopwatch:
                    queue = iter(range(count))  # shared: each client takes the next index
                    latencies.clear()
                    with Stopwatch() as watch:
                        async with asyncio.TaskGroup() as group:
                            for http in sessions:
                                group.create_task(client(http, queue, prefix))
                    return watch

                await run(f"warm-{fx.tag}-", max(WARMUP, clients))
                prefix = f"http-{fx.tag}-"
                server_before = process_cpu(pid)
                watch = await run(prefix, n)
                server_after = process_cpu(pid)
            finally:
                for http in sessions:
                    await http.aclose()
        check_count(await fx.count(prefix), n, "graphql")
    ordered = sorted(latencies)
    note = "latency ms p50 {:.1f} / p95 {:.1f} / p99 {:.1f} (mean {:.1f}); ".format(
        *(1000 * percentile(ordered, p) for p in (50, 95, 99)), 1000 * statistics.fmean(ordered)
    )
    note += f"CPU s: server (uvicorn) as shown, the {clients} httpx clients {watch.cpu:.2f}"
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before
    return Result(f"(b) GraphQL HTTP, {clients} clients", n, watch.wall, server_cpu, note)


# --- (d) the raw driver baseline ---------------------------------------------------------------

RAW_SCHEMA = (
    """CREATE TABLE movements (
        id {serial} PRIMARY KEY, kind VARCHAR(20) NOT NULL, lot_id INTEGER NOT NULL,
        location_id INTEGER NOT NULL, organisation_id INTEGER NOT NULL,
        quantity INTEGER NOT NULL, balance_after INTEGER NOT NULL, actor_id INTEGER,
        request_key VARCHAR(100), occurred_at {ts} NOT NULL, recorded_at {ts} NOT NULL)""",
    "CREATE INDEX ix_movements_location_lot ON movements (location_id, lot_id)",
    """CREATE TABLE balances (
        id {serial} PRIMARY KEY, location_id INTEGER NOT NULL, lot_id INTEGER NOT NULL,
        quantity INTEGER NOT NULL, updated_at {ts} NOT NULL, UNIQUE (location_id, lot_id))""",
)
RAW_MOVEMENT = (
    "INSERT INTO movements (kind, lot_id, location_id, organisation_id, quantity, balance_after,"
    " actor_id, request_key, occurred_at, recorded_at) VALUES ({})"
)
RAW_BALANCE = (
    "INSERT INTO balances (location_id, lot_id, quantity, updated_at) VALUES ({})"
    " ON CONFLICT (location_id, lot_id) DO UPDATE"
    " SET quantity = balances.quantity + excluded.quantity, updated_at = excluded.updated_at"
)
RAW_LOCATION, RAW_ORGANISATION, RAW_ACTOR = 1, 1, 1


def raw_rows(n: int) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """(movement row, balance row) per movement, same pattern as the other paths."""
    lots = list(range(1, LOT_COUNT + 1))
    balance = dict.fromkeys(lots, OPENING_STOCK)
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        kind = MovementKind.RECEIVE if i % 2 == 0 else MovementKind.DISPENSE
        lot = lots[(i // 2) % len(lots)]
        delta = 1 if kind is MovementKind.RECEIVE else -1
        balance[lot] += delta
        movement = (
            kind.value, lot, RAW_LOCATION, RAW_ORGANISATION, delta, balance[lot], RAW_ACTOR,
            f"raw-{i}", now, now,
        )  # fmt: skip
        rows.append((movement, (RAW_LOCATION, lot, delta, now)))
    return rows


def bench_raw_sqlite(path: str, n: int) -> Stopwatch:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # as the application's engine
        for statement in RAW_SCHEMA:
            connection.execute(statement.format(serial="INTEGER", ts="TIMESTAMP"))
        opening = [(RAW_LOCATION, lot, OPENING_STOCK, datetime.now(UTC).isoformat())
                   for lot in range(1, LOT_COUNT + 1)]  # fmt: skip
        connection.executemany(RAW_BALANCE.format("?, ?, ?, ?"), opening)
        rows = [
            (tuple(v.isoformat() if isinstance(v, datetime) else v for v in m),
             (b[0], b[1], b[2], b[3].isoformat()))
            for m, b in raw_rows(n)
        ]  # fmt: skip
        movement_sql = RAW_MOVEMENT.format(", ".join("?" * 10))
        balance_sql = RAW_BALANCE.format("?, ?, ?, ?")
        with Stopwatch() as watch:
            for start in range(0, n, FEED_SIZE):
                chunk = rows[start : start + FEED_SIZE]
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(movement_sql, [m for m, _ in chunk])
                connection.executemany(balance_sql, [b for _, b in chunk])
                connection.execute("COMMIT")
        written = connection.execute("SELECT count(*) FROM movements").fetchone()[0]
        check_count(written, n, "raw sqlite3")
        return watch
    finally:
        connection.close()


async def bench_raw_asyncpg(dsn: str, n: int) -> Stopwatch:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in RAW_SCHEMA:
            await connection.execute(statement.format(serial="SERIAL", ts="TIMESTAMPTZ"))
        now = datetime.now(UTC)
        balance_sql = RAW_BALANCE.format("$1, $2, $3, $4")
        await connection.executemany(
            balance_sql,
            [(RAW_LOCATION, lot, OPENING_STOCK, now) for lot in range(1, LOT_COUNT + 1)],
        )
        rows = raw_rows(n)
        movement_sql = RAW_MOVEMENT.format(", ".join(f"${k}" for k in range(1, 11)))
        with Stopwatch() as watch:
            for start in range(0, n, FEED_SIZE):
                chunk = rows[start : start + FEED_SIZE]
                async with connection.transaction():
                    await connection.executemany(movement_sql, [m for m, _ in chunk])
                    await connection.executemany(balance_sql, [b for _, b in chunk])
        check_count(await connection.fetchval("SELECT count(*) FROM movements"), n, "raw asyncpg")
        return watch
    finally:
        await connection.close()


async def bench_raw(backend: Backend, n: int) -> Result:
    _, target = await backend.create("raw")
    if backend.name == "sqlite":
        watch = bench_raw_sqlite(target, n)
        return Result("(d) raw sqlite3 executemany", n, watch.wall, watch.cpu)
    watch = await bench_raw_asyncpg(target, n)
    return Result("(d) raw asyncpg executemany", n, watch.wall, watch.cpu)


# --- report ------------------------------------------------------------------------------------


def print_table(database: str, results: list[Result], context: str) -> None:
    raw = next((r for r in results if r.path.startswith("(d)")), None)  # --paths without raw
    headers = (
        "path",
        "movements",
        "seconds",
        "movements/s",
        "ratio to (d)",
        "(d) is x faster",
        "CPU s",
        "CPU ms/movement",
    )
    rows = [
        (
            r.path,
            str(r.movements),
            f"{r.seconds:.3f}",
            f"{r.rate:,.0f}",
            "?" if raw is None else f"{r.rate / raw.rate:.5f}",
            "?" if raw is None else f"{raw.rate / r.rate:,.1f}",
            "?" if r.cpu is None else f"{r.cpu:.2f}",
            "?" if r.cpu is None else f"{1000 * r.cpu / r.movements:.3f}",
        )
        for r in results
    ]
    print(f"\nApotheca ledger benchmark: {database}, {results[0].movements} movements per path")
    print(context)
    for text in table_lines(headers, rows):
        print(text)
    for r in results:
        if r.note:
            print(f"{r.path}: {r.note}")
    print(
        "CPU s: CPU time of the Python process doing the work (this one; for (b) the uvicorn"
        " server), all threads; the database server's own CPU is not in it."
    )


async def main_async(args: argparse.Namespace) -> None:
    before = load()
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            results = []
            for label, bench in (
                ("service", lambda: bench_service(backend, args.movements)),
                ("graphql", lambda: bench_graphql(backend, args.movements, args.clients)),
                ("batched", lambda: bench_batched(backend, args.movements)),
                ("batched 1000", lambda: bench_batched(backend, args.movements, FEED_SIZE)),
                ("feed", lambda: bench_feed(backend, args.movements)),
                ("raw", lambda: bench_raw(backend, args.movements)),
            ):
                if args.paths and label not in args.paths:
                    continue
                print(f"running {label} ...", file=sys.stderr, flush=True)
                results.append(await bench())
        finally:
            await backend.drop_all()
    context = (
        f"{database}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
        f" load average (1/5/15 min) {before} before, {load()} after"
    )
    print_table(args.database, sorted(results, key=lambda r: r.path), context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--movements", type=int, default=2000, help="movements per path")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark databases on",
    )
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent HTTP clients")
    parser.add_argument(
        "--paths",
        nargs="*",
        help="run only these paths (service, graphql, batched, 'batched 1000', feed, raw)",
    )
    args = parser.parse_args()
    if args.movements < 1:
        parser.error("--movements must be positive")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
