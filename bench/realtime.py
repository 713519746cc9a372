"""How fast are scans recorded, and how quickly does a committed stock change reach 1,000
live subscribers compared with a bare websocket broadcast?

One run, on a freshly migrated database holding the demo network (no history) plus opening
stock of a few lots at WARD-A with known batch numbers and expiry, served by a real uvicorn
server in a subprocess:

  1. scans      recordScan DISPENSE over HTTP as `nurse` (scoped to WARD-A), the barcode a
                GS1 DataMatrix element string (]d2 01<GTIN-14> 17<YYMMDD> 10<batch>), unique
                idempotency keys, N concurrent clients sharing one httpx.AsyncClient whose pool
                holds N connections. Latency per request, throughput, and afterwards a check
                that the lots' balances dropped by exactly the number of successful scans.
  2. fan-out    S websocket subscribers (graphql-transport-ws, token in connection_init), each
                subscribed to `stockChanged { quantity movement { id } }`, all asyncio tasks in
                this process. Then E dispenses, one at a time, each waiting until every
                subscriber has its `next` message. Per subscriber and event:
                  receipt - t0      t0 = just before the mutation is sent
                  receipt - t_resp  t_resp = when its HTTP response was received (the closest
                                    client-side stand-in for the commit; can be negative when
                                    the event overtakes the response)
  3. baseline   a bare `websockets` server (serve + broadcast) in a subprocess, the same number
                of clients, broadcasting a message of the same size as the GraphQL `next`
                message E times; latency = receipt - the moment this process sent the trigger
                over a control websocket. The GraphQL/bare ratio compares it with receipt - t0.

  4. ceilings    in a subprocess, a bare Strawberry schema on uvicorn (parser and validation
                caches on) with a no-op mutation and a one-row raw aiosqlite INSERT mutation,
                driven like the scans (same client count, one httpx pool); printed beside the
                recordScan figures with the ratios of server CPU per request, throughput, p50
                and p99.

The fan-out's server CPU is also given net of the dispenses that cause the events: the same
number of dispenses is run, timed, before anyone subscribes. Every section prints the load
average after it (the machine may be shared).

The subscribers and the baseline clients use the same receive loop (timestamp taken as soon as
recv() returns), and the same event loop. Run:

    .venv/bin/python bench/realtime.py [--scans N] [--clients N] [--ceiling-requests N]
        [--subscribers N] [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import select
from strawberry.relay import to_base64
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import (
    METRICS_AUTH,
    ROOT,
    Backend,
    Fixture,
    GraphQLWebSocket,
    busy_share,
    free_port,
    live_server,
    load,
    machine_cpu,
    percentile,
    prepared,
    process_cpu,
    serving,
    table_lines,
    token_for,
    tree_cpu,
)
from server.catalog.models import ProductGtin
from server.inventory.models import Balance

LOCATION_CODE = "WARD-A"
USER = "nurse"
LOT_COUNT = 4
OPENING_STOCK = 1_000_000  # per lot: dispenses never run short
SCAN_WARMUP = 50  # untimed scans first: compiled SQL caches, connections, GraphQL schema
EVENT_WARMUP = 2  # untimed events per fan-out path
EVENT_TIMEOUT = 60.0  # seconds to wait for every subscriber to receive one event

SCAN = """
mutation($input: RecordScanInput!) {
  recordScan(input: $input) { replayed movements { id } errors { code message } }
}"""
STOCK_CHANGED = "subscription { stockChanged { quantity movement { id } } }"
SUBSCRIBERS_METRIC = re.compile(r'apotheca_subscribers\{topic="stock"\} (\d+)')
T = TypeVar("T")


def datamatrix(gtin14: str, expiry: date, batch: str) -> str:
    """The element string a GS1 DataMatrix scanner sends: ]d2 01 GTIN 17 YYMMDD 10 batch
    (batch last, so no group separator is needed)."""
    return f"]d201{gtin14}17{expiry:%y%m%d}10{batch}"


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the subprocesses started later)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop when installed, as uvicorn runs the server."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:,.1f}"


def cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def cpu_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


# --- the stock the scans act on -------------------------------------------------------------------


@dataclass
class Stock:
    """Lots in stock at WARD-A, with what a scanner reads off each pack."""

    fx: Fixture
    barcodes: list[str]  # barcodes[i] names fx.lot_ids[i]

    @classmethod
    async def of(cls, fx: Fixture) -> Stock:
        assert fx.expiry is not None
        async with fx.services.db.read() as session:
            rows = (
                await session.execute(
                    select(ProductGtin.product_id, ProductGtin.gtin)
                    .where(ProductGtin.product_id.in_(fx.product_ids))
                    .order_by(ProductGtin.id)
                )
            ).all()
        gtins: dict[int, str] = {}
        for product_id, gtin in rows:
            gtins.setdefault(product_id, gtin.zfill(14))
        barcodes = [
            datamatrix(gtins[product_id], fx.expiry, batch)
            for product_id, batch in zip(fx.product_ids, fx.batches, strict=True)
        ]
        return cls(fx, barcodes)

    async def balances(self) -> list[int]:
        """What the database holds of each lot at the location (what the server wrote)."""
        async with self.fx.services.db.read() as session:
            found = dict(
                (
                    await session.execute(
                        select(Balance.lot_id, Balance.quantity).where(
                            Balance.location_id == self.fx.location_id,
                            Balance.lot_id.in_(self.fx.lot_ids),
                        )
                    )
                ).all()
            )
        return [int(found.get(lot_id, 0)) for lot_id in self.fx.lot_ids]


class Scanner:
    """recordScan DISPENSE over one httpx client; each call says which lot it hit, if any."""

    def __init__(self, http: httpx.AsyncClient, token: str, stock: Stock) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stock = stock
        self.location = to_base64("Location", stock.fx.location_id)

    async def dispense(self, lot_index: int, key: str) -> tuple[str | None, str | None]:
        """(movement id, None) when recorded, else (None, what went wrong)."""
        body = {
            "query": SCAN,
            "variables": {
                "input": {
                    "barcode": self.stock.barcodes[lot_index],
                    "location": self.location,
                    "action": "DISPENSE",
                    "quantity": 1,
                    "idempotencyKey": key,
                }
            },
        }
        try:
            response = await self.http.post("/graphql", json=body, headers=self.headers)
        except httpx.HTTPError as error:
            return None, type(error).__name__
        if response.status_code != 200:
            return None, f"HTTP {response.status_code}"
        payload = response.json()
        if payload.get("errors"):
            return None, str(payload["errors"][0].get("extensions", {}).get("code", "GRAPHQL"))
        result = payload["data"]["recordScan"]
        if result["errors"]:
            return None, str(result["errors"][0]["code"])
        if result["replayed"] or len(result["movements"]) != 1:
            return None, "UNEXPECTED_RESULT"
        return str(result["movements"][0]["id"]), None


# --- 1. scans over HTTP ---------------------------------------------------------------------------


@dataclass
class ScanRun:
    scans: int
    clients: int
    seconds: float
    latencies: list[float]  # sorted, seconds, successful and failed requests alike
    ok: int
    failures: Counter[str]
    dropped: list[int]  # per lot: balance before - balance after
    ok_per_lot: list[int]
    server_cpu: float | None
    bench_cpu: float
    load: str = "?"  # load average (1/5/15 min) right after the timed scans
    machine_busy: float = 0.0  # share of all cores busy during the timed scans (any process)


async def run_scans(
    http: httpx.AsyncClient, token: str, stock: Stock, pid: int, scans: int, clients: int
) -> ScanRun:
    scanner = Scanner(http, token, stock)
    lots = len(stock.barcodes)
    tag = uuid.uuid4().hex[:8]

    async def run(prefix: str, count: int) -> tuple[list[float], list[int], Counter[str], float]:
        queue = iter(range(count))  # shared: each client takes the next index
        latencies: list[float] = []
        ok = [0] * lots
        failures: Counter[str] = Counter()

        async def client() -> None:
            for i in queue:
                started = time.perf_counter()
                movement, problem = await scanner.dispense(i % lots, f"{prefix}{i}")
                latencies.append(time.perf_counter() - started)
                if movement is None:
                    failures[problem or "?"] += 1
                else:
                    ok[i % lots] += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(client())
        return latencies, ok, failures, time.perf_counter() - started

    _, _, warm_failures, _ = await run(f"warm-{tag}-", SCAN_WARMUP)
    if sum(warm_failures.values()) == SCAN_WARMUP:
        raise RuntimeError(f"every warm-up scan failed: {dict(warm_failures)}")
    before = await stock.balances()
    server_before, bench_before = tree_cpu(pid), time.process_time()
    machine_before = machine_cpu()
    latencies, ok, failures, seconds = await run(f"scan-{tag}-", scans)
    machine_after = machine_cpu()
    server_after, bench_after = tree_cpu(pid), time.process_time()
    loaded = load()
    after = await stock.balances()
    return ScanRun(
        load=loaded,
        scans=scans,
        clients=clients,
        seconds=seconds,
        latencies=sorted(latencies),
        ok=sum(ok),
        failures=failures,
        dropped=[b - a for b, a in zip(before, after, strict=True)],
        ok_per_lot=ok,
        server_cpu=cpu_delta(server_before, server_after),
        bench_cpu=bench_after - bench_before,
        machine_busy=busy_share(machine_before, machine_after),
    )


# --- receipts of one event by many clients --------------------------------------------------------


@dataclass
class Receipts:
    """Arrival times of each event (keyed by movement id or sequence number) at the clients."""

    expected: int
    times: dict[str, list[float]] = field(default_factory=dict)
    complete: dict[str, asyncio.Event] = field(default_factory=dict)
    sizes: Counter[int] = field(default_factory=Counter)  # message length in bytes
    problems: list[str] = field(default_factory=list)

    def _done(self, key: str) -> asyncio.Event:
        return self.complete.setdefault(key, asyncio.Event())

    def record(self, key: str, at: float, size: int) -> None:
        arrived = self.times.setdefault(key, [])
        arrived.append(at)
        self.sizes[size] += 1
        if len(arrived) >= self.expected:
            self._done(key).set()

    async def wait(self, key: str, within: float) -> list[float]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done(key).wait(), within)
        return self.times.get(key, [])


async def read_graphql(ws: GraphQLWebSocket, receipts: Receipts) -> None:
    """tests.wsclient's receive(), with the arrival time taken before JSON parsing."""
    try:
        while True:
            text = await ws.connection.recv()
            at = time.perf_counter()
            message = json.loads(text)
            kind = message.get("type")
            if kind == "ping":
                await ws.send({"type": "pong"})
                continue
            data = (message.get("payload") or {}).get("data") or {}
            if kind != "next" or "stockChanged" not in data:
                receipts.problems.append(str(message)[:200])
                continue
            size = len(text.encode() if isinstance(text, str) else text)
            receipts.record(str(data["stockChanged"]["movement"]["id"]), at, size)
    except ConnectionClosed as closed:
        receipts.problems.append(f"subscriber connection closed: {closed}")
    except Exception as error:  # reported, and its missing receipts count as lost
        receipts.problems.append(f"subscriber reader failed: {error!r}")


async def read_bare(connection: ClientConnection, receipts: Receipts) -> None:
    try:
        while True:
            text = await connection.recv()
            at = time.perf_counter()
            message = json.loads(text)
            size = len(text.encode() if isinstance(text, str) else text)
            receipts.record(str(message["payload"]["seq"]), at, size)
    except ConnectionClosed as closed:
        receipts.problems.append(f"client connection closed: {closed}")
    except Exception as error:  # reported, and its missing receipts count as lost
        receipts.problems.append(f"client reader failed: {error!r}")


def extensions(connection: ClientConnection) -> str:
    response = connection.response
    return (response.headers.get("Sec-WebSocket-Extensions") if response else None) or "none"


async def connect_in_batches(
    count: int, batch: int, open_one: Callable[[], Awaitable[T]]
) -> list[T]:
    """Open `count` connections, `batch` at a time (all of a batch concurrently)."""
    opened: list[T] = []
    for start in range(0, count, batch):
        opened += await asyncio.gather(*(open_one() for _ in range(min(batch, count - start))))
    return opened


@dataclass
class Fanout:
    subscribers: int
    events: int
    from_t0: list[float] = field(default_factory=list)  # sorted, every receipt of every event
    from_response: list[float] = field(default_factory=list)  # sorted (GraphQL only)
    round_trip: list[float] = field(default_factory=list)  # mutation t_resp - t0, per event
    first: list[float] = field(default_factory=list)  # first receipt - t0, per event
    last: list[float] = field(default_factory=list)  # last receipt - t0, per event
    lost: int = 0  # deliveries that did not arrive within EVENT_TIMEOUT
    message_bytes: int = 0
    server_cpu: float | None = None  # of the server process during the timed events
    mutation_cpu: float | None = None  # the same dispenses with no subscriber (GraphQL only)
    bench_cpu: float = 0.0
    connect_seconds: float = 0.0
    compression: str = "?"  # the websocket extensions the server accepted
    problems: list[str] = field(default_factory=list)

    def add(self, arrivals: list[float], t0: float, t_resp: float | None) -> None:
        self.lost += self.subscribers - len(arrivals)
        if not arrivals:
            return
        self.from_t0 += [a - t0 for a in arrivals]
        if t_resp is not None:
            self.from_response += [a - t_resp for a in arrivals]
            self.round_trip.append(t_resp - t0)
        self.first.append(min(arrivals) - t0)
        self.last.append(max(arrivals) - t0)

    def finish(self, receipts: Receipts) -> None:
        self.from_t0.sort()
        self.from_response.sort()
        self.round_trip.sort()
        self.first.sort()
        self.last.sort()
        if receipts.sizes:
            self.message_bytes = receipts.sizes.most_common(1)[0][0]
        self.problems = list(receipts.problems)


# --- 2. GraphQL subscription fan-out --------------------------------------------------------------


async def subscribed_count(http: httpx.AsyncClient) -> int:
    match = SUBSCRIBERS_METRIC.search((await http.get("/metrics", headers=METRICS_AUTH)).text)
    return int(match.group(1)) if match else -1


async def run_graphql_fanout(
    url: str,
    http: httpx.AsyncClient,
    token: str,
    stock: Stock,
    pid: int,
    subscribers: int,
    events: int,
    batch: int,
) -> Fanout:
    receipts = Receipts(subscribers)
    readers: list[asyncio.Task[None]] = []

    async def open_one() -> GraphQLWebSocket:
        ws = await GraphQLWebSocket.open(url, token, ping_interval=None, open_timeout=120)
        await ws.subscribe(STOCK_CHANGED)
        readers.append(asyncio.create_task(read_graphql(ws, receipts)))
        return ws

    result = Fanout(subscribers, events)
    scanner = Scanner(http, token, stock)
    tag = uuid.uuid4().hex[:8]
    # Control: the same sequential dispenses before anyone subscribes, so the server CPU of the
    # mutations themselves can be taken out of the fan-out figure.
    control_before = None
    for k in range(EVENT_WARMUP + events):
        if k == EVENT_WARMUP:
            control_before = process_cpu(pid)
        movement, problem = await scanner.dispense(0, f"control-{tag}-{k}")
        if movement is None:
            raise RuntimeError(f"control dispense {k} failed: {problem}")
    result.mutation_cpu = cpu_delta(control_before, process_cpu(pid))
    started = time.perf_counter()
    sockets = await connect_in_batches(subscribers, batch, open_one)
    deadline = time.monotonic() + 120
    while (registered := await subscribed_count(http)) < subscribers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {registered} of {subscribers} subscriptions registered")
        await asyncio.sleep(0.1)
    result.connect_seconds = time.perf_counter() - started
    result.compression = extensions(sockets[0].connection)
    try:
        server_before = bench_before = None
        for k in range(EVENT_WARMUP + events):
            if k == EVENT_WARMUP:
                server_before, bench_before = process_cpu(pid), time.process_time()
            t0 = time.perf_counter()
            movement, problem = await scanner.dispense(0, f"fanout-{tag}-{k}")
            t_resp = time.perf_counter()
            if movement is None:
                raise RuntimeError(f"fan-out dispense {k} failed: {problem}")
            arrivals = await receipts.wait(movement, EVENT_TIMEOUT)
            if k >= EVENT_WARMUP:
                result.add(list(arrivals), t0, t_resp)
        result.server_cpu = cpu_delta(server_before, process_cpu(pid))
        result.bench_cpu = time.process_time() - (bench_before or 0.0)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    result.finish(receipts)
    return result


# --- 3. bare websockets broadcast baseline --------------------------------------------------------


def broadcast_server(port: int) -> None:
    """Runs in a subprocess: `/` registers a listener; each text message on `/control` is sent
    to every listener with websockets' broadcast(), except `count`, which is answered with the
    number of listeners. Same event loop as uvicorn uses (uvloop when installed)."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    async def main() -> None:
        listeners: set[ServerConnection] = set()

        async def handler(connection: ServerConnection) -> None:
            if connection.request is not None and connection.request.path == "/control":
                async for message in connection:
                    if message == "count":
                        await connection.send(str(len(listeners)))
                    else:
                        broadcast(listeners, message)
                return
            listeners.add(connection)
            try:
                await connection.wait_closed()
            finally:
                listeners.discard(connection)

        async with serve(handler, "127.0.0.1", port) as server:
            await server.serve_forever()

    run_loop(main())


@contextlib.contextmanager
def broadcast_process() -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bench.realtime import broadcast_server; broadcast_server({port})",
        ],
        cwd=ROOT,
    )
    try:
        yield f"ws://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def padded_message(seq: int, size: int) -> str:
    """A `next`-shaped message of exactly `size` bytes (when that is not too small)."""
    base = {"type": "next", "id": "1", "payload": {"seq": seq, "pad": ""}}
    pad = max(0, size - len(json.dumps(base)))
    base["payload"]["pad"] = "x" * pad  # type: ignore[index]
    return json.dumps(base)


async def run_bare_fanout(subscribers: int, events: int, batch: int, size: int) -> Fanout:
    receipts = Receipts(subscribers)
    readers: list[asyncio.Task[None]] = []
    with broadcast_process() as (url, pid):
        deadline = time.monotonic() + 30
        while True:
            try:
                control = await connect(f"{url}/control", ping_interval=None)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

        async def open_one() -> ClientConnection:
            connection = await connect(url, ping_interval=None, open_timeout=120)
            readers.append(asyncio.create_task(read_bare(connection, receipts)))
            return connection

        result = Fanout(subscribers, events)
        started = time.perf_counter()
        sockets = await connect_in_batches(subscribers, batch, open_one)
        while True:
            await control.send("count")
            if int(await control.recv()) >= subscribers:
                break
            await asyncio.sleep(0.1)
        result.connect_seconds = time.perf_counter() - started
        result.compression = extensions(sockets[0])
        try:
            server_before = bench_before = None
            for k in range(EVENT_WARMUP + events):
                if k == EVENT_WARMUP:
                    server_before, bench_before = process_cpu(pid), time.process_time()
                message = padded_message(k, size)
                t0 = time.perf_counter()
                await control.send(message)
                arrivals = await receipts.wait(str(k), EVENT_TIMEOUT)
                if k >= EVENT_WARMUP:
                    result.add(list(arrivals), t0, None)
            result.server_cpu = cpu_delta(server_before, process_cpu(pid))
            result.bench_cpu = time.process_time() - (bench_before or 0.0)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in [*sockets, control]), return_exceptions=True)
    result.finish(receipts)
    return result


# --- 4. ceilings: the cheapest mutations Strawberry can serve over HTTP -------------------------


def ceiling_server(port: int, db_path: str) -> None:
    """Runs in a subprocess: uvicorn (as `apotheca serve` runs it) serving a bare Strawberry
    schema with the parser and validation caches on and two mutations: `noop` (returns true)
    and `insertRow(key)` (one raw aiosqlite INSERT and COMMIT on a WAL database, one connection,
    like a single writer)."""
    import aiosqlite
    import strawberry
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route
    from strawberry.asgi import GraphQL
    from strawberry.extensions import ParserCache, ValidationCache

    state: dict[str, Any] = {}

    @strawberry.type
    class Query:
        ok: bool = True

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        def noop(self) -> bool:
            return True

        @strawberry.mutation
        async def insert_row(self, key: str) -> int:
            db = state["db"]
            cursor = await db.execute("INSERT INTO row (key) VALUES (?)", (key,))
            await db.commit()
            return int(cursor.lastrowid or 0)

    schema = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        extensions=[lambda: ParserCache(maxsize=256), lambda: ValidationCache(maxsize=256)],
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        db = state["db"] = await aiosqlite.connect(db_path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE IF NOT EXISTS row (id INTEGER PRIMARY KEY, key TEXT)")
        await db.commit()
        yield
        await db.close()

    async def healthz(_: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/graphql", GraphQL(schema), methods=["POST"])],
        lifespan=lifespan,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def ceiling_process(db_path: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        f"from bench.realtime import ceiling_server; ceiling_server({port}, {db_path!r})",
    ]
    with serving(command, port, label="ceiling server") as running:
        yield running


NOOP = "mutation { noop }"
INSERT_ROW = "mutation($key: String!) { insertRow(key: $key) }"


@dataclass
class Ceiling:
    name: str
    requests: int
    clients: int
    seconds: float
    latencies: list[float]  # sorted, seconds
    failed: int
    server_cpu: float | None
    load: str  # load average (1/5/15 min) right after the timed run

    @property
    def per_second(self) -> float:
        return (self.requests - self.failed) / self.seconds

    @property
    def cpu_per_request(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.requests


async def run_ceiling(
    http: httpx.AsyncClient, pid: int, name: str, query: str, count: int, clients: int
) -> Ceiling:
    """`count` requests of `query` from `clients` concurrent clients (the scans' driver)."""

    async def run(prefix: str, n: int) -> tuple[list[float], int, float]:
        queue = iter(range(n))
        latencies: list[float] = []
        failed = 0

        async def client() -> None:
            nonlocal failed
            for i in queue:
                body = {
                    "query": query,
                    "variables": {"key": f"{prefix}{i}"} if "$key" in query else {},
                }
                started = time.perf_counter()
                try:
                    response = await http.post("/graphql", json=body)
                    ok = response.status_code == 200 and not response.json().get("errors")
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failed += not ok

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(client())
        return latencies, failed, time.perf_counter() - started

    await run(f"warm-{name}-", SCAN_WARMUP)
    before = process_cpu(pid)
    latencies, failed, seconds = await run(f"{name}-", count)
    return Ceiling(
        name, count, clients, seconds, sorted(latencies), failed,
        cpu_delta(before, process_cpu(pid)), load(),
    )  # fmt: skip


async def run_ceilings(count: int, clients: int, workdir: Path) -> list[Ceiling]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with ceiling_process(str(workdir / "ceiling.sqlite3")) as (url, pid):
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            return [
                await run_ceiling(http, pid, "noop", NOOP, count, clients),
                await run_ceiling(http, pid, "insert", INSERT_ROW, count, clients),
            ]


# --- report ---------------------------------------------------------------------------------------


def print_report(
    context: str,
    scan: ScanRun,
    graphql: Fanout,
    bare: Fanout,
    ceilings: list[Ceiling],
    loads: dict[str, str],
    args: argparse.Namespace,
) -> None:
    print(f"\nApotheca realtime benchmark ({args.database})")
    print(context)

    print(
        f"\n1. recordScan DISPENSE over HTTP: {scan.scans} scans (GS1 DataMatrix), as {USER} at"
        f" {LOCATION_CODE}, {scan.clients} concurrent clients on one httpx pool of"
        f" {scan.clients} connections"
    )
    lat = scan.latencies
    stock_ok = scan.dropped == scan.ok_per_lot
    headers = ("scans ok", "failed", "seconds", "scans/s", "p50 ms", "p95 ms", "p99 ms")
    headers += ("mean ms", "max ms", "server CPU s", "bench CPU s", "stock check")
    row = (
        f"{scan.ok}",
        f"{sum(scan.failures.values())}",
        f"{scan.seconds:.2f}",
        f"{scan.ok / scan.seconds:,.1f}",
        *(ms(percentile(lat, p)) for p in (50, 95, 99)),
        ms(statistics.fmean(lat)),
        ms(lat[-1]),
        cpu_text(scan.server_cpu),
        f"{scan.bench_cpu:.2f}",
        "OK" if stock_ok else "MISMATCH",
    )
    for text in table_lines(headers, [row]):
        print("   " + text)
    print(
        f"   stock dropped by {sum(scan.dropped)} ({scan.dropped} per lot) for"
        f" {scan.ok} successful scans ({scan.ok_per_lot} per lot)"
        + ("" if stock_ok else "  <-- MISMATCH")
    )
    if scan.failures:
        print(f"   failures by code: {dict(scan.failures)}")
    if scan.server_cpu is not None:
        print(
            f"   server CPU per scan {ms(scan.server_cpu / scan.scans)} ms;"
            f" server busy {100 * scan.server_cpu / scan.seconds:.0f}% of one CPU"
        )
    print(busy_text(scan))
    print(f"   load average (1/5/15 min) after the scans: {loads['scans']}")

    print(
        f"\n2./3. Fan-out: {graphql.subscribers} websocket subscribers, {graphql.events}"
        f" sequential events (+{EVENT_WARMUP} untimed), message of {graphql.message_bytes} bytes"
        f" (GraphQL) / {bare.message_bytes} bytes (bare)"
    )
    headers = ("latency per subscriber and event", "samples", "lost", "p50 ms", "p99 ms")
    headers += ("max ms", "min ms")

    def row_of(label: str, values: list[float], lost: int | str) -> tuple[str, ...]:
        if not values:
            return (label, "0", str(lost), "-", "-", "-", "-")
        return (
            label,
            str(len(values)),
            str(lost),
            ms(percentile(values, 50)),
            ms(percentile(values, 99)),
            ms(values[-1]),
            ms(values[0]),
        )

    rows = [
        row_of("A GraphQL: receipt - t_resp (mutation response received)",
               graphql.from_response, graphql.lost),
        row_of("B GraphQL: receipt - t0 (just before mutation sent)",
               graphql.from_t0, graphql.lost),
        row_of("C bare websockets: receipt - trigger sent", bare.from_t0, bare.lost),
        row_of("  GraphQL mutation round trip t_resp - t0 (per event)", graphql.round_trip, "-"),
        row_of("  GraphQL first subscriber - t0 (per event)", graphql.first, "-"),
        row_of("  GraphQL last subscriber - t0 (per event)", graphql.last, "-"),
        row_of("  bare first client - trigger (per event)", bare.first, "-"),
        row_of("  bare last client - trigger (per event)", bare.last, "-"),
    ]  # fmt: skip
    for text in table_lines(headers, rows):
        print("   " + text)
    if graphql.from_t0 and bare.from_t0:
        for p in (50, 99):
            b, a = percentile(graphql.from_t0, p), percentile(graphql.from_response, p)
            c = percentile(bare.from_t0, p)
            print(
                f"   ratio GraphQL/bare p{p}: B/C = {b / c:,.1f}x"
                f"   (A/C = {a / c:,.1f}x; A is measured from a later instant than C)"
            )
    for name, fan in (("GraphQL (uvicorn)", graphql), ("bare (websockets)", bare)):
        if fan.server_cpu is None:
            server = "?"
        else:
            per_event = ms(fan.server_cpu / fan.events)
            per_delivery = 1e6 * fan.server_cpu / max(1, len(fan.from_t0))
            server = (
                f"{fan.server_cpu:.2f} s ({per_event} ms/event, {per_delivery:,.0f} us/delivery)"
            )
        print(f"   CPU in the timed events, {name}: server {server}, bench {fan.bench_cpu:.2f} s")
    print("   (the GraphQL server's CPU includes the recordScan mutation that caused each event)")
    if graphql.server_cpu is not None and graphql.mutation_cpu is not None and graphql.from_t0:
        net = graphql.server_cpu - graphql.mutation_cpu
        print(
            f"   GraphQL fan-out alone: the same {graphql.events} dispenses with no subscriber took"
            f" {graphql.mutation_cpu:.2f} s of server CPU, so the fan-out cost {net:.2f} s ="
            f" {1e6 * net / len(graphql.from_t0):,.0f} us/delivery"
        )
    print(
        f"   load average (1/5/15 min) after the GraphQL fan-out: {loads['graphql']};"
        f" after the bare fan-out: {loads['bare']}"
    )
    print(
        f"   connecting + subscribing all clients took {graphql.connect_seconds:.1f} s (GraphQL,"
        f" batches of {args.connect_batch}) and {bare.connect_seconds:.1f} s (bare)"
    )
    print(
        f"   websocket extensions accepted: GraphQL (uvicorn) {graphql.compression!r},"
        f" bare (websockets) {bare.compression!r}"
    )
    for name, fan in (("GraphQL", graphql), ("bare", bare)):
        if fan.problems:
            print(f"   {name}: {len(fan.problems)} unexpected messages, first: {fan.problems[:5]}")
    print_ceilings(scan, ceilings)
    print(
        "\n   t0, t_resp, trigger and receipts are time.perf_counter() in this process; all"
        " subscribers are asyncio tasks on this process's event loop, so receipt times include"
        " the time this process needs to read the other subscribers' messages first."
    )


def busy_text(scan: ScanRun) -> str:
    """How much of the machine the scans used: with every core busy, more workers cannot add
    throughput (on PostgreSQL its backends run on the same cores)."""
    cores = os.cpu_count() or 1
    server = (scan.server_cpu or 0.0) / scan.seconds
    driver = scan.bench_cpu / scan.seconds
    busy = scan.machine_busy * cores
    return (
        f"   machine during the scans: {busy:.2f} of {cores} cores busy (server {server:.2f},"
        f" load driver {driver:.2f}, everything else {max(busy - server - driver, 0):.2f},"
        " database server included)"
    )


def print_ceilings(scan: ScanRun, ceilings: list[Ceiling]) -> None:
    if not ceilings:
        return
    first = ceilings[0]
    print(
        f"\n4. Ceilings, measured in this run: a bare Strawberry schema on uvicorn (parser and"
        f" validation caches on), {first.requests} requests each, {first.clients} concurrent"
        f" clients on one httpx pool of {first.clients} connections"
    )
    headers = ("mutation", "ok", "req/s", "p50 ms", "p99 ms", "server CPU/req ms", "load after")
    rows = [
        (
            name,
            str(requests - failed),
            f"{per_second:,.1f}",
            ms(percentile(latencies, 50)),
            ms(percentile(latencies, 99)),
            "?" if cpu is None else ms(cpu),
            loaded,
        )
        for name, requests, failed, per_second, latencies, cpu, loaded in [
            *(
                (
                    {"noop": "no-op mutation", "insert": "one-row aiosqlite INSERT"}[c.name],
                    c.requests,
                    c.failed,
                    c.per_second,
                    c.latencies,
                    c.cpu_per_request,
                    c.load,
                )
                for c in ceilings
            ),
            (
                "recordScan DISPENSE (section 1)",
                scan.scans,
                sum(scan.failures.values()),
                scan.ok / scan.seconds,
                scan.latencies,
                None if scan.server_cpu is None else scan.server_cpu / scan.scans,
                scan.load,
            ),
        ]
    ]
    for text in table_lines(headers, rows):
        print("   " + text)
    insert = next((c for c in ceilings if c.name == "insert"), None)
    if insert is None or insert.cpu_per_request is None or scan.server_cpu is None:
        return
    cpu_ratio = (scan.server_cpu / scan.scans) / insert.cpu_per_request
    print(
        f"   recordScan vs the one-row insert: server CPU/scan {cpu_ratio:,.1f}x,"
        f" throughput {(scan.ok / scan.seconds) / insert.per_second:,.2f}x,"
        f" p50 {percentile(scan.latencies, 50) / percentile(insert.latencies, 50):,.1f}x,"
        f" p99 {percentile(scan.latencies, 99) / percentile(insert.latencies, 99):,.1f}x"
        f" (at {scan.clients} connections)"
    )


async def scans_only(
    args: argparse.Namespace, database: str, before: str, scan: ScanRun, workdir: Path
) -> None:
    """Sections 1 and 4 alone: recordScan against its ceilings (and with --workers N, the
    server's CPU summed over its worker processes)."""
    print("4. ceilings ...", file=sys.stderr, flush=True)
    ceilings = await run_ceilings(args.ceiling_requests, args.clients, workdir)
    p50, p99 = percentile(scan.latencies, 50), percentile(scan.latencies, 99)
    cpu = "?" if scan.server_cpu is None else ms(scan.server_cpu / scan.scans)
    print(
        f"{database}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average"
        f" (1/5/15 min) {before} before, {load()} after"
    )
    print(
        f"1. recordScan DISPENSE: {scan.scans} scans, {scan.clients} clients, {args.workers}"
        f" worker(s): {scan.ok / scan.seconds:,.1f} scans/s, p50 {ms(p50)} ms, p99 {ms(p99)} ms"
        f" (p99/p50 {p99 / p50:,.2f}), server CPU/scan {cpu} ms (all workers), load {scan.load},"
        f" failures {dict(scan.failures)}"
    )
    print(busy_text(scan))
    print_ceilings(scan, ceilings)
    if scan.dropped != scan.ok_per_lot:
        raise SystemExit("stock check failed: balances did not drop by the successful scans")


async def main_async(args: argparse.Namespace, fd_limit: tuple[int, int]) -> None:
    before = load()
    loads: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            print("preparing database ...", file=sys.stderr, flush=True)
            async with prepared(
                backend,
                "realtime",
                location_code=LOCATION_CODE,
                lot_count=LOT_COUNT,
                opening_stock=OPENING_STOCK,
                batch_prefix="RT",
            ) as fx:
                stock = await Stock.of(fx)
                with live_server(fx.url, args.workers) as (url, pid):
                    limits = httpx.Limits(
                        max_connections=args.clients, max_keepalive_connections=args.clients
                    )
                    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
                        token = await token_for(http, USER)
                        print("1. scans ...", file=sys.stderr, flush=True)
                        scan = await run_scans(http, token, stock, pid, args.scans, args.clients)
                        loads["scans"] = scan.load
                        if args.scans_only:
                            return await scans_only(args, database, before, scan, Path(workdir))
                        print("2. GraphQL fan-out ...", file=sys.stderr, flush=True)
                        graphql = await run_graphql_fanout(
                            url,
                            http,
                            token,
                            stock,
                            pid,
                            args.subscribers,
                            args.events,
                            args.connect_batch,
                        )
                        loads["graphql"] = load()
        finally:
            await backend.drop_all()
        print("4. ceilings ...", file=sys.stderr, flush=True)
        ceilings = await run_ceilings(args.ceiling_requests, args.clients, Path(workdir))
    print("3. bare websockets fan-out ...", file=sys.stderr, flush=True)
    bare = await run_bare_fanout(
        args.subscribers, args.events, args.connect_batch, graphql.message_bytes
    )
    loads["bare"] = load()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    context = (
        f"{database}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, bench event loop"
        f" {loop}, open files limit"
        f" {fd_limit[0]}, load average (1/5/15 min) {before} before, {load()} after"
    )
    print_report(context, scan, graphql, bare, ceilings, loads, args)
    if scan.dropped != scan.ok_per_lot:
        raise SystemExit("stock check failed: balances did not drop by the successful scans")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scans", type=int, default=2000, help="timed recordScan requests")
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients")
    parser.add_argument(
        "--ceiling-requests", type=int, default=2000, help="timed requests per ceiling mutation"
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="websocket subscribers")
    parser.add_argument("--events", type=int, default=30, help="timed fan-out events")
    parser.add_argument(
        "--connect-batch", type=int, default=100, help="websockets opened concurrently"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark database on",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--scans-only", action="store_true", help="sections 1 and 4 only (scans vs ceilings)"
    )
    args = parser.parse_args()
    for name in ("scans", "clients", "ceiling_requests", "subscribers", "events", "connect_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    fd_limit = raise_fd_limit()
    needed = args.subscribers + args.clients + 100
    if fd_limit[0] < needed:
        parser.error(f"open files limit {fd_limit[0]} is below the {needed} this run needs")
    run_loop(main_async(args, fd_limit))


if __name__ == "__main__":
    main()
