"""How fast is a nested read, and how close does it come to Strawberry's own speed?

One query, the page a stock screen asks for: `stockLevels(first: 100)` with each level's lot and
its product, and its location. Measured on a freshly migrated database holding the demo network
and 100+ stock levels over several locations and products:

  (a) http      the query over HTTP against a real uvicorn server (a subprocess), with 1 and
                with 10 concurrent clients: p50/p99 latency and the server's CPU per request
                (from /proc), SQL statements and BEGINs per request (the server counts them
                when APOTHECA_SQL_COUNTERS=1 and reports them at /metrics).
  (b) execute   schema.execute of the real schema in this process against the same database,
                with a request context built as the server builds it (principal included):
                CPU per execution without HTTP, JSON and uvicorn.
  (c) ceiling   the same query and shape (same type and field names, Relay ids, cursors)
                executed by a Strawberry schema whose resolvers return in-memory objects: no
                database, no loaders, no access checks. What Strawberry itself costs. It has
                the parser and validation caches our schema has (any Strawberry app can turn
                them on; without them the ceiling would pay for parsing that we do not).
  (c) http      the same in-memory schema served over HTTP by Strawberry's own ASGI app
                under uvicorn (uvloop, httptools: as `apotheca serve` runs), in a subprocess,
                with 1 and with 10 clients: the ceiling of (a), HTTP, JSON and uvicorn
                included.

The ratio to (c) says how much of each figure is ours rather than Strawberry's: (b) against
the in-process ceiling, each (a) against the HTTP ceiling with the same number of clients. Each
path and its ceiling run in alternating blocks (`--rounds`), both servers up at once, so that
both see the same machine: on a shared machine a figure alone moves by ±20 % between runs. The
ratio of the sums and the median of the per-block ratios are printed.
CPU is process time (all threads); the machine may be shared, so the load average is printed
with every figure. Run:

    .venv/bin/python bench/read.py [--requests N] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import strawberry
from sqlalchemy import event, select
from strawberry import relay

from bench.common import (
    METRICS_AUTH,
    Backend,
    Stopwatch,
    free_port,
    live_server,
    load,
    percentile,
    prepared,
    process_cpu,
    serving,
    table_lines,
    token_for,
)
from server.catalog.models import LotStatus
from server.catalog.models import Product as ProductRow
from server.config import Settings
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from server.network.models import Location as LocationRow
from server.network.models import LocationKind

PAGE = 100
QUERY = """query Stock($first: Int!) {
  stockLevels(first: $first) {
    edges { cursor node {
      id quantity updatedAt
      lot { id batchNumber expiryDate status expired
            product { id name strength dosageForm unit approvalNumber } }
      location { id code name kind }
    } }
    pageInfo { hasNextPage endCursor }
  }
}"""
VARIABLES = {"first": PAGE}
LOCATIONS = ("HOSP-CP", "WH-MAIN")  # stock is spread over these (those that exist)


# --- (c) the ceiling: the same shape from memory ------------------------------------------------

LotStatusEnum = strawberry.enum(LotStatus)
LocationKindEnum = strawberry.enum(LocationKind)


@strawberry.type(name="Product")
class MemProduct(relay.Node):
    id: relay.NodeID[int]
    name: str
    strength: str
    dosage_form: str
    unit: str
    approval_number: str
    unit_cost: Decimal


@strawberry.type(name="Lot")
class MemLot(relay.Node):
    id: relay.NodeID[int]
    batch_number: str
    expiry_date: date
    status: LotStatusEnum  # type: ignore[valid-type]
    product: MemProduct

    @strawberry.field
    def expired(self) -> bool:
        return self.expiry_date < datetime.now(UTC).date()


@strawberry.type(name="Location")
class MemLocation(relay.Node):
    id: relay.NodeID[int]
    code: str
    name: str
    kind: LocationKindEnum  # type: ignore[valid-type]


@strawberry.type(name="StockLevel")
class MemStockLevel(relay.Node):
    id: relay.NodeID[int]
    quantity: int
    updated_at: datetime
    lot: MemLot
    location: MemLocation


@strawberry.type(name="StockLevelConnection")
class MemConnection(relay.Connection[MemStockLevel]):
    pass


def memory_schema(levels: list[MemStockLevel], cursors: list[str]) -> strawberry.Schema:
    """The ceiling's schema, with the caches a tuned Strawberry app (and ours) has."""
    from strawberry.extensions import ParserCache, ValidationCache

    @strawberry.type
    class Query:
        @strawberry.field
        def stock_levels(self, first: int) -> MemConnection:
            edges = [
                relay.Edge(cursor=c, node=n)
                for n, c in zip(levels[:first], cursors[:first], strict=True)
            ]
            return MemConnection(
                edges=edges,
                page_info=relay.PageInfo(
                    has_next_page=len(levels) > first,
                    has_previous_page=False,
                    start_cursor=cursors[0],
                    end_cursor=cursors[min(first, len(cursors)) - 1],
                ),
            )

    return strawberry.Schema(
        query=Query,
        extensions=[lambda: ParserCache(maxsize=100), lambda: ValidationCache(maxsize=100)],
    )


async def memory_levels(services: Any) -> tuple[list[MemStockLevel], list[str]]:
    """The first page's rows as plain objects (read once, untimed), with the real cursors."""
    from server.catalog.models import Lot as LotRow
    from server.core.pagination import encode_cursor
    from server.inventory.models import Balance

    async with services.db.read() as session:
        rows = (
            await session.execute(
                select(Balance, LotRow, ProductRow, LocationRow)
                .join(LotRow, LotRow.id == Balance.lot_id)
                .join(ProductRow, ProductRow.id == LotRow.product_id)
                .join(LocationRow, LocationRow.id == Balance.location_id)
                .where(Balance.quantity != 0)
                .order_by(LotRow.expiry_date, Balance.id)
                .limit(PAGE + 1)
            )
        ).all()
    products: dict[int, MemProduct] = {}
    lots: dict[int, MemLot] = {}
    locations: dict[int, MemLocation] = {}
    levels, cursors = [], []
    for balance, lot, product, location in rows:
        p = products.setdefault(
            product.id,
            MemProduct(
                id=product.id,
                name=product.name,
                strength=product.strength,
                dosage_form=product.dosage_form,
                unit=product.unit,
                approval_number=product.approval_number,
                unit_cost=product.unit_cost,
            ),
        )
        lt = lots.setdefault(
            lot.id,
            MemLot(
                id=lot.id,
                batch_number=lot.batch_number,
                expiry_date=lot.expiry_date,
                status=lot.status,
                product=p,
            ),
        )
        loc = locations.setdefault(
            location.id,
            MemLocation(id=location.id, code=location.code, name=location.name, kind=location.kind),
        )
        levels.append(
            MemStockLevel(
                id=balance.id,
                quantity=balance.quantity,
                updated_at=balance.updated_at,
                lot=lt,
                location=loc,
            )
        )
        cursors.append(encode_cursor([lot.expiry_date, balance.id]))
    return levels, cursors


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Figure:
    path: str
    cpu_ms: float  # CPU per request or execution
    p50_ms: float | None = None
    p99_ms: float | None = None
    statements: float | None = None
    begins: float | None = None
    load: str = ""


class SqlCounter:
    """SELECT/INSERT... statements and transactions (BEGIN) on the engines of a Database."""

    def __init__(self, db: Any) -> None:
        self.engines = [e.sync_engine for e in db.engines]
        self.statements = 0
        self.begins = 0

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _begin(self, *_: Any) -> None:
        self.begins += 1

    def __enter__(self) -> SqlCounter:
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "begin", self._begin)
        return self

    def __exit__(self, *_: object) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._statement)
            event.remove(engine, "begin", self._begin)


def check(result: Any) -> None:
    errors = result.errors if hasattr(result, "errors") else result.get("errors")
    data = result.data if hasattr(result, "data") else result.get("data")
    if errors:
        raise RuntimeError(f"query failed: {errors}")
    edges = data["stockLevels"]["edges"]
    if len(edges) != PAGE or edges[0]["node"]["lot"]["product"]["name"] is None:
        raise RuntimeError(f"expected {PAGE} nested rows, got {len(edges)}")


async def seed_levels(fixture: Any) -> None:
    """Enough stock levels for a full page: new lots of every product at a few locations."""
    services = fixture.services
    async with services.db.read() as session:
        product_ids = list(
            (await session.execute(select(ProductRow.id).order_by(ProductRow.id))).scalars()
        )
        location_ids = list(
            (
                await session.execute(select(LocationRow.id).where(LocationRow.code.in_(LOCATIONS)))
            ).scalars()
        )
    requests = []
    for n in range(PAGE + 20):
        requests.append(
            MovementRequest(
                MovementKind.RECEIVE,
                location_ids[n % len(location_ids)],
                10 + n,
                new_lot=NewLot(
                    product_ids[n % len(product_ids)],
                    f"READ{n:04d}",
                    date.today() + timedelta(days=200 + n),
                ),
            )
        )
    await services.ledger.record(fixture.principal, requests, operation="bench.read.seed")


def ceiling(levels: list[MemStockLevel], cursors: list[str], runs: int) -> Figure:
    schema = memory_schema(levels, cursors)
    for _ in range(5):
        check(schema.execute_sync(QUERY, variable_values=VARIABLES))
    with Stopwatch() as clock:
        for _ in range(runs):
            schema.execute_sync(QUERY, variable_values=VARIABLES)
    return Figure("(c) ceiling: memory, sync", clock.cpu / runs * 1000, load=load())


def serve_ceiling(url: str, port: int) -> None:
    """The HTTP ceiling's server process: the in-memory schema under uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from strawberry.asgi import GraphQL

    async def rows() -> tuple[list[MemStockLevel], list[str]]:
        from server.services import Services

        services = Services.build(Settings(database_url=url, secret_key=_secret()))
        try:
            return await memory_levels(services)
        finally:
            await services.close()

    levels, cursors = asyncio.run(rows())
    schema = memory_schema(levels, cursors)

    async def healthz(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/graphql", GraphQL(schema, graphql_ide=None))]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop")


@contextlib.contextmanager
def ceiling_server(url: str) -> Any:
    port = free_port()
    command = [sys.executable, __file__, "--serve-ceiling", url, "--port", str(port)]
    with serving(command, port, label="ceiling server", timeout=120) as running:
        yield running


class _Request:
    """What get_context reads from a request: its headers."""

    def __init__(self, token: str) -> None:
        self.headers = {"authorization": f"Bearer {token}"}


async def in_process(
    url: str,
    token: str,
    levels: list[MemStockLevel],
    cursors: list[str],
    runs: int,
    rounds: int,
    profile: str | None,
) -> tuple[Figure, Figure, float]:
    """(b) and (c) async, measured in alternating blocks so that both see the same machine:
    on a shared machine either figure alone moves by ±20 % between runs, their ratio in
    alternating blocks much less. Returns (b), (c) and the median of the per-block ratios."""
    from server.app import ApothecaGraphQL
    from server.core import graphql as core_graphql
    from server.services import Services

    finish_request = getattr(core_graphql, "finish_request", None)

    services = Services.build(Settings(database_url=url, secret_key=_secret()))
    view = ApothecaGraphQL(services)
    schema = view.schema
    memory = memory_schema(levels, cursors)

    async def once() -> Any:
        context = await view.get_context(_Request(token), None)
        try:
            return await schema.execute(QUERY, variable_values=VARIABLES, context_value=context)
        finally:
            if finish_request is not None:
                await finish_request(context)

    async def ceiling_once() -> Any:
        return await memory.execute(QUERY, variable_values=VARIABLES)

    block = max(1, runs // rounds)
    ours_cpu = ceiling_cpu = 0.0
    ratios: list[float] = []
    try:
        for _ in range(5):
            check(await once())
            check(await ceiling_once())
        with SqlCounter(services.db) as counter:
            for _ in range(rounds):
                gc.collect()  # neither block pays for the other's garbage
                with Stopwatch() as ceiling_clock:
                    for _ in range(block):
                        await ceiling_once()
                counter.statements = counter.begins = 0  # only ours is counted
                gc.collect()
                with Stopwatch() as clock:
                    for _ in range(block):
                        await once()
                ours_cpu += clock.cpu
                ceiling_cpu += ceiling_clock.cpu
                ratios.append(clock.cpu / ceiling_clock.cpu)
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(runs):
                await once()
            profiler.disable()
            profiler.dump_stats(profile)
            print(f"profile of {runs} executions written to {profile}")
    finally:
        await services.close()
    done = block * rounds
    ours = Figure(
        "(b) execute: real schema + DB",
        ours_cpu / done * 1000,
        statements=counter.statements / block,
        begins=counter.begins / block,
        load=load(),
    )
    paired = Figure("(c) ceiling: memory, async, paired", ceiling_cpu / done * 1000, load=load())
    return ours, paired, statistics.median(ratios)


def _secret() -> str:
    from bench.common import SECRET

    return SECRET


async def _metrics(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get("/metrics", headers=METRICS_AUTH)).text
    values = {}
    for line in text.splitlines():
        if line.startswith("apotheca_sql_"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


@dataclass
class Block:
    """One block of HTTP requests against one server: what it cost and how long each took."""

    cpu: float
    done: int
    latencies: list[float]
    statements: float | None
    begins: float | None


async def http_block(url: str, pid: int, clients: int, requests: int, *, ceiling: bool) -> Block:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        token = "ceiling" if ceiling else await token_for(http, "admin")
        headers = {"Authorization": f"Bearer {token}"}
        body = {"query": QUERY, "variables": VARIABLES}
        for _ in range(3):
            response = await http.post("/graphql", json=body, headers=headers)
            check(response.json())
        latencies: list[float] = []
        per_client = max(1, requests // clients)

        async def client() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=120) as own:
                for _ in range(per_client):
                    started = time.perf_counter()
                    response = await own.post("/graphql", json=body, headers=headers)
                    latencies.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(response.text)

        before_sql = {} if ceiling else await _metrics(http)
        cpu_before = process_cpu(pid) or 0.0
        await asyncio.gather(*(client() for _ in range(clients)))
        cpu_after = process_cpu(pid) or 0.0
        after_sql = {} if ceiling else await _metrics(http)

    def delta(name: str) -> float | None:
        # the /metrics request itself runs no SQL
        return after_sql[name] - before_sql.get(name, 0.0) if name in after_sql else None

    return Block(
        cpu_after - cpu_before,
        per_client * clients,
        latencies,
        delta("apotheca_sql_statements_total"),
        delta("apotheca_sql_begins_total"),
    )


def http_figure(path: str, blocks: list[Block]) -> Figure:
    done = sum(b.done for b in blocks)
    latencies = sorted(x for b in blocks for x in b.latencies)

    def per_request(values: list[float | None]) -> float | None:
        return None if None in values else sum(v or 0.0 for v in values) / done

    return Figure(
        path,
        sum(b.cpu for b in blocks) / done * 1000,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        statements=per_request([b.statements for b in blocks]),
        begins=per_request([b.begins for b in blocks]),
        load=load(),
    )


async def over_http_paired(
    ours: tuple[str, int], ceiling: tuple[str, int], clients: int, requests: int, rounds: int
) -> tuple[Figure, Figure, float]:
    """(a) and (c) http with as many clients, in alternating blocks (see in_process)."""
    per_round = max(clients, requests // rounds)
    ours_blocks: list[Block] = []
    ceiling_blocks: list[Block] = []
    ratios = []
    for _ in range(rounds):
        ceiling_blocks.append(await http_block(*ceiling, clients, per_round, ceiling=True))
        ours_blocks.append(await http_block(*ours, clients, per_round, ceiling=False))
        ratios.append(
            (ours_blocks[-1].cpu / ours_blocks[-1].done)
            / max(ceiling_blocks[-1].cpu / ceiling_blocks[-1].done, 1e-9)
        )
    label = f"http, {clients} client{'s' if clients > 1 else ''}"
    return (
        http_figure(f"(a) {label}", ours_blocks),
        http_figure(f"(c) {label}", ceiling_blocks),
        statistics.median(ratios),
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def main_async(args: argparse.Namespace) -> None:
    before = load()
    # (path, figure, its ceiling's figure, median of the paired per-block ratios)
    measured: list[tuple[Figure, Figure | None, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            async with prepared(backend, "read") as fixture:
                await seed_levels(fixture)
                levels, cursors = await memory_levels(fixture.services)
                url = fixture.url
            measured.append((ceiling(levels, cursors, args.runs), None, None))
            os.environ["APOTHECA_SQL_COUNTERS"] = "1"
            with ceiling_server(url) as memory_http, live_server(url) as ours_http:
                async with httpx.AsyncClient(base_url=ours_http[0]) as http:
                    token = await token_for(http, "admin")
                ours, paired, ratio = await in_process(
                    url, token, levels, cursors, args.runs, args.rounds, args.profile
                )
                measured += [(paired, None, None), (ours, paired, ratio)]
                for clients in (1, args.clients):
                    ours, paired, ratio = await over_http_paired(
                        ours_http, memory_http, clients, args.requests, args.rounds
                    )
                    measured += [(paired, None, None), (ours, paired, ratio)]
        finally:
            await backend.drop_all()
    print(
        f"stockLevels(first: {PAGE}) nested lot {{ product }} and location; {database}; "
        f"load before {before}"
    )
    rows = [
        [
            f.path,
            f"{f.cpu_ms:.2f}",
            "-" if against is None else f"{f.cpu_ms / against.cpu_ms:.2f}x",
            "-" if ratio is None else f"{ratio:.2f}x",
            _fmt(f.p50_ms),
            _fmt(f.p99_ms),
            _fmt(f.statements),
            _fmt(f.begins),
            f.load,
        ]
        for f, against, ratio in measured
    ]
    headers = ["path", "CPU ms/req", "vs ceiling", "median of blocks", "p50 ms", "p99 ms"]
    for line in table_lines([*headers, "SQL/req", "BEGIN/req", "load 1/5/15"], rows):
        print(line)
    print(
        "each figure against the ceiling measured in alternating blocks with it ("
        f"{args.rounds} rounds): (b) against (c) async in-process, (a) against (c) http with as "
        f"many clients; load before {before}, after {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests per run")
    parser.add_argument("--runs", type=int, default=200, help="in-process executions per path")
    parser.add_argument("--clients", type=int, default=10, help="concurrent HTTP clients")
    parser.add_argument(
        "--rounds", type=int, default=10, help="alternating blocks of each path and its ceiling"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark databases on",
    )
    parser.add_argument("--profile", help="write a cProfile of (b) to this file")
    parser.add_argument("--serve-ceiling", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:  # the HTTP ceiling's own process (see ceiling_server)
        serve_ceiling(args.serve_ceiling, args.port)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
