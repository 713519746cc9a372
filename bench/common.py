"""Helpers shared by the benchmarks: fresh seeded databases, a real uvicorn server in a
subprocess, timing, percentiles and plain-text tables.

The scripts run as files (`.venv/bin/python bench/<name>.py`): each puts the repository root on
sys.path before importing this module, so `bench.common` and `tests.wsclient` resolve.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from server.catalog.models import Product
from server.config import Settings
from server.core.migrate import upgrade
from server.core.security import Principal
from server.demo import DEMO_PASSWORD, seed_demo
from server.inventory.models import Movement, MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.network.models import Location, User
from server.services import Services
from tests.wsclient import GraphQLWebSocket  # the tests' graphql-transport-ws client

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-for-hs256-0123456789abcdef"
METRICS_TOKEN = "bench-metrics-token"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}  # /metrics wants it
LOCATION_CODE = "HOSP-CP"
LOT_COUNT = 4
OPENING_STOCK = 1_000_000  # received per lot before timing, so dispenses never run short
EXPIRY_DAYS = 730

__all__ = [
    "DEMO_PASSWORD",
    "ROOT",
    "SECRET",
    "Backend",
    "Fixture",
    "GraphQLWebSocket",
    "Stopwatch",
    "free_port",
    "live_server",
    "load",
    "percentile",
    "prepared",
    "process_cpu",
    "table_lines",
    "token_for",
]


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


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process and every live descendant (uvicorn's worker processes): the
    server's CPU when it runs several workers. Linux /proc only."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    total, todo = process_cpu(pid), [pid]
    if total is None:
        return None
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                total += process_cpu(child) or 0.0
                todo.append(child)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, summed over its cores (Linux
    /proc/stat; idle and iowait count as not busy): what every process together used."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / ticks, total / ticks


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Of all the machine's cores, the share busy between two `machine_cpu()` readings."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    return [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


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

    async def create(self, label: str, template: str | None = None) -> tuple[str, str]:
        """A new empty database, or on PostgreSQL a copy of the database `template`:
        (SQLAlchemy url, driver-level dsn or file path)."""
        if self.name == "sqlite":
            path = self.workdir / f"{label}.db"
            return f"sqlite+aiosqlite:///{path}", str(path)
        database = f"apotheca_bench_{self.run_id}_{label}"
        copy = f' TEMPLATE "{template}"' if template else ""
        await self._pg_admin(f'CREATE DATABASE "{database}"{copy}')
        self.created.append(database)
        url = self.pg.set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False), self._pg_dsn(database)

    async def drop_all(self) -> None:
        for database in self.created:
            await self._pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.created.clear()


@dataclass
class Fixture:
    """A migrated, seeded database with lots in stock at one location."""

    url: str
    services: Services
    principal: Principal
    location_id: int
    lot_ids: list[int]
    product_ids: list[int] = field(default_factory=list)  # lot_ids[i] is of product_ids[i]
    batches: list[str] = field(default_factory=list)  # batch number of lot_ids[i]
    expiry: date | None = None  # of every lot
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


@asynccontextmanager
async def prepared(
    backend: Backend,
    label: str,
    *,
    location_code: str = LOCATION_CODE,
    lot_count: int = LOT_COUNT,
    opening_stock: int = OPENING_STOCK,
    batch_prefix: str = "BENCH",
) -> AsyncIterator[Fixture]:
    """Migrate, seed the demo network (no history) and receive opening stock into a few lots:
    one new lot (batch `{batch_prefix}000`, `001`, ...) of each of the first `lot_count`
    products, all expiring EXPIRY_DAYS from today, received by admin at `location_code`."""
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
                await session.execute(select(Location.id).where(Location.code == location_code))
            ).scalar_one()
            product_ids = list(
                (
                    await session.execute(select(Product.id).order_by(Product.id).limit(lot_count))
                ).scalars()
            )
        principal = await services.network.load_principal(admin_id)
        expiry = date.today() + timedelta(days=EXPIRY_DAYS)
        lot_ids, batches = [], []
        for index, product_id in enumerate(product_ids):
            batch = f"{batch_prefix}{index:03d}"
            result = await services.ledger.record(
                principal,
                [
                    MovementRequest(
                        MovementKind.RECEIVE,
                        location_id,
                        opening_stock,
                        new_lot=NewLot(product_id, batch, expiry),
                    )
                ],
                operation="bench.open",
            )
            lot_ids.append(result.movements[0].lot_id)
            batches.append(batch)
        yield Fixture(url, services, principal, location_id, lot_ids, product_ids, batches, expiry)
    finally:
        await services.close()


# --- a real server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    command: list[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    label: str = "server",
    timeout: float = 120,
) -> Iterator[tuple[str, int]]:
    """A server process started with `command`, once its /healthz answers: (base url, pid).
    `timeout`: how long it may take to start (a loaded machine needs longer)."""
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not become healthy in {timeout:g} s")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def live_server(database_url: str, workers: int = 1) -> Iterator[tuple[str, int]]:
    """`apotheca serve` (uvicorn, `workers` worker processes) in a subprocess: yields (base
    url, pid); with several workers, measure its CPU with `tree_cpu`."""
    port = free_port()
    env = {
        # A benchmark measures the server, not its per-principal query budget.
        "APOTHECA_COST_BUDGET_CAPACITY": "1000000000",
        # The fan-out bench subscribes 1,000 websockets as one nurse, past the per-user caps.
        "APOTHECA_MAX_CONNECTIONS_PER_PRINCIPAL": "100000",
        "APOTHECA_MAX_SUBSCRIPTIONS_PER_PRINCIPAL": "100000",
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": SECRET,
        "APOTHECA_LOG_LEVEL": "warning",
        # Benchmarks drive one principal from one address far past any sane request rate.
        "APOTHECA_RATE_LIMIT_PRINCIPAL": "off",
        "APOTHECA_RATE_LIMIT_IP": "off",
        "APOTHECA_METRICS_TOKEN": METRICS_TOKEN,
    }
    command = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with serving(command, port, env=env) as running:
        yield running


async def token_for(http: httpx.AsyncClient, username: str, password: str = DEMO_PASSWORD) -> str:
    """An access token by the password grant."""
    response = await http.post(
        "/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
