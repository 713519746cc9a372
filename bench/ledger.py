"""How fast does the ledger record stock movements, and what does each layer cost?

Four ways of writing the same N movements (RECEIVE and DISPENSE alternating on a few lots at
one location), each on a freshly migrated database that holds the demo network:

  (a) service   LedgerService.record, one movement per call, each with an idempotency key:
                the full rules (permission, lot checks, balance upsert, hash-chained audit
                event, idempotency record) in one transaction per movement.
  (b) graphql   receiveStock / dispenseStock over HTTP against a real uvicorn server (a
                subprocess), one mutation per request, 20 concurrent clients; adds HTTP,
                token decoding, principal loading and GraphQL parsing/validation on top of (a).
  (c) batched   LedgerService.record with 100 movements per call: the same rules, with the
                transaction, the audit-head lock and the commit shared by 100 movements.
  (d) raw       the floor: the database driver alone (stdlib sqlite3, or asyncpg for
                PostgreSQL) inserting equivalent movement rows plus a balance upsert per row,
                executemany, one transaction per 100 rows. No rules, no audit, no ORM.

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
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from strawberry.relay import to_base64

from server.catalog.models import Product
from server.config import Settings
from server.core.migrate import upgrade
from server.core.security import Principal
from server.demo import DEMO_PASSWORD, seed_demo
from server.inventory.models import Movement, MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.network.models import Location, User
from server.services import Services

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-for-hs256-0123456789abcdef"
LOCATION_CODE = "HOSP-CP"
LOT_COUNT = 4
OPENING_STOCK = 1_000_000  # received per lot before timing, so dispenses never run short
BATCH_SIZE = 100
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


class Stopwatch:
    """Wall time by time.perf_counter and this process's CPU time (all its threads)."""

    def __enter__(self) -> Stopwatch:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) another process has used so far; Linux /proc only."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fixture:
    """A migrated, seeded database with lots in stock at one location."""

    url: str
    services: Services
    principal: Principal
    location_id: int
    lot_ids: list[int]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def kind(self, i: int) -> MovementKind:
        return MovementKind.RECEIVE if i % 2 == 0 else MovementKind.DISPENSE

    def lot(self, i: int) -> int:
        return self.lot_ids[(i // 2) % len(self.lot_ids)]

    def request(self, i: int) -> MovementRequest:
        return MovementRequest(self.kind(i), self.location_id, 1, lot_id=self.lot(i))

    async def count(self, key_prefix: str) -> int:
        """Movements written under idempotency keys starting with `key_prefix`."""
        async with self.services.db.read() as session:
            stmt = select(func.count()).where(Movement.request_key.like(f"{key_prefix}%"))
            return int((await session.execute(stmt)).scalar_one())


# --- databases ----------------------------------------------------------------------------------


class Backend:
    """Hands out fresh, empty databases and removes them afterwards."""

    def __init__(self, name: str, pg_url: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.pg = make_url(pg_url)
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def _pg_dsn(self, database: str) -> str:
        return self.pg.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )

    async def _pg_admin(self, sql: str) -> None:
        connection = await asyncpg.connect(self._pg_dsn(self.pg.database or "postgres"))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def describe(self) -> str:
        if self.name == "sqlite":
            return f"sqlite {sqlite3.sqlite_version}"
        connection = await asyncpg.connect(self._pg_dsn(self.pg.database or "postgres"))
        try:
            return f"postgresql {await connection.fetchval('SHOW server_version')}"
        finally:
            await connection.close()

    async def create(self, label: str) -> tuple[str, str]:
        """A new empty database: (SQLAlchemy url, driver-level dsn or file path)."""
        if self.name == "sqlite":
            path = self.workdir / f"{label}.db"
            return f"sqlite+aiosqlite:///{path}", str(path)
        database = f"apotheca_bench_{self.run_id}_{label}"
        await self._pg_admin(f'CREATE DATABASE "{database}"')
        self.created.append(database)
        url = self.pg.set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False), self._pg_dsn(database)

    async def drop_all(self) -> None:
        for database in self.created:
            await self._pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.created.clear()


@asynccontextmanager
async def prepared(backend: Backend, label: str) -> AsyncIterator[Fixture]:
    """Migrate, seed the demo network (no history) and receive opening stock into a few lots."""
    url, _ = await backend.create(label)
    await upgrade(url)
    services = Services.build(Settings(database_url=url, secret_key=SECRET))
    try:
        await seed_demo(services, history_days=-1)
        async with services.db.read() as session:
            admin_id = (
                await session.execute(select(User.id).where(User.username == "admin"))
            ).scalar_one()
            location_id = (
                await session.execute(select(Location.id).where(Location.code == LOCATION_CODE))
            ).scalar_one()
            product_ids = list(
                (
                    await session.execute(select(Product.id).order_by(Product.id).limit(LOT_COUNT))
                ).scalars()
            )
        principal = await services.network.load_principal(admin_id)
        expiry = date.today() + timedelta(days=730)
        lot_ids = []
        for index, product_id in enumerate(product_ids):
            result = await services.ledger.record(
                principal,
                [
                    MovementRequest(
                        MovementKind.RECEIVE,
                        location_id,
                        OPENING_STOCK,
                        new_lot=NewLot(product_id, f"BENCH{index:03d}", expiry),
                    )
                ],
                operation="bench.open",
            )
            lot_ids.append(result.movements[0].lot_id)
        yield Fixture(url, services, principal, location_id, lot_ids)
    finally:
        await services.close()


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


async def bench_batched(backend: Backend, n: int) -> Result:
    async with prepared(backend, "batched") as fx:
        ledger = fx.services.ledger

        async def run(prefix: str, count: int) -> None:
            for start in range(0, count, BATCH_SIZE):
                requests = [fx.request(i) for i in range(start, min(start + BATCH_SIZE, count))]
                await ledger.record(
                    fx.principal,
                    requests,
                    operation="bench.batch",
                    idempotency_key=f"{prefix}{start}",
                )

        await run(f"warm-{fx.tag}-", BATCH_SIZE)
        prefix = f"batch-{fx.tag}-"
        with Stopwatch() as watch:
            await run(prefix, n)
        check_count(await fx.count(prefix), n, "batched")
    return Result(f"(c) service, {BATCH_SIZE} per call", n, watch.wall, watch.cpu)


# --- (b) GraphQL over HTTP ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(database_url: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": SECRET,
        "APOTHECA_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)], cwd=ROOT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 30 s")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


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
            for start in range(0, n, BATCH_SIZE):
                chunk = rows[start : start + BATCH_SIZE]
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
            for start in range(0, n, BATCH_SIZE):
                chunk = rows[start : start + BATCH_SIZE]
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
    raw = next(r for r in results if r.path.startswith("(d)"))
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
            f"{r.rate / raw.rate:.5f}",
            f"{raw.rate / r.rate:,.1f}",
            "?" if r.cpu is None else f"{r.cpu:.2f}",
            "?" if r.cpu is None else f"{1000 * r.cpu / r.movements:.3f}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    print(f"\nApotheca ledger benchmark: {database}, {raw.movements} movements per path")
    print(context)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for r in results:
        if r.note:
            print(f"{r.path}: {r.note}")
    print(
        "CPU s: CPU time of the Python process doing the work (this one; for (b) the uvicorn"
        " server), all threads; the database server's own CPU is not in it."
    )


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


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
                ("raw", lambda: bench_raw(backend, args.movements)),
            ):
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
    args = parser.parse_args()
    if args.movements < 1:
        parser.error("--movements must be positive")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
