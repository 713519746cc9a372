"""How much do abusive clients hurt normal users, and how quickly are they turned away?

One run, on a freshly migrated database seeded with the demo network and its year of history
(as `make run` seeds it) plus purchase orders from the hospital to the wholesaler, served by a
real uvicorn server in a subprocess. Normal users and every attacker run in processes of their
own, each on its own loopback source address (normal users 127.0.0.2, attacker k 127.0.0.(10+k)),
so per-IP limits tell them apart as they would tell real clients apart.

  normal users  C clients (pharmacists and nurses, alternating), each sending its simple query
                at R requests per second: the pharmacist `stockLevels(first: 20, location:
                HOSP-CP)`, the nurse `stockLevels(first: 20)` (her ward). Latency per request,
                p50/p99/max, and outcomes. Requests still in flight when a phase ends are waited
                for (up to --timeout), so the slowest ones count; a timed-out one counts as
                --timeout.
  phases        each --seconds long, one at a time, attackers started --ramp seconds before the
                normal users (counted from when every attacker process is up, its imports
                done: starting Python is not the attack, nor in its CPU figure):
    idle        no attacker: the baseline, the ceiling every other phase is compared with.
    nested      A supplier clients in a loop: 20 aliases x purchaseOrders(first: 100) x
                supplier { purchaseOrders(first: 100) } (200,000 nested orders asked for).
    epcis       A regulator clients in a loop: epcisExport(first: 10000).
    audit       A auditor clients in a loop: auditIntegrity x 20 aliases (each walks the chain).
    login       L anonymous clients posting wrong passwords for `pharmacist` to /auth/token;
                meanwhile the real pharmacist signs in (right password, normal users' address)
                once a second, and whether that still works is counted.
    websocket   one nurse token (nurse.b) opening W websockets x S subscriptions
                (graphql-transport-ws), held open through the phase: connections acknowledged
                vs refused, subscriptions sent vs refused by an error message or a close.
                Once open, the same nurse dispenses one pack in her ward every --ws-interval
                seconds (ordinary work), so each event fans out to all her subscriptions.
  settle        after each attack the attackers are stopped; the server may still be working
                on what it accepted. How long until its CPU use stays below 10% of a core for
                a second (at most --settle seconds) is printed. Each phase has a server of its
                own (restarted on the same database, warmed up with a few normal queries), so
                what one attack left behind does not distort the next.

Attacker modes (--modes): every attack phase runs once per mode, each with a fresh server:
    plain       attackers as they are: on this small machine they compete with the server for
                the same cores, so part of what normal users feel is the attackers' own CPU.
    nice        attackers at `nice 19`: the scheduler prefers the server and the normal users,
                as when attackers run on machines of their own.
    pinned      attackers confined to the last CPU (os.sched_setaffinity) at normal priority:
                the server keeps at least one core to itself.
What the server itself spends is printed apart: its CPU per attacker answer and per refusal
(the phase's server CPU minus what the normal users' requests cost in the idle phase, divided
by the attackers' answers; refusals are 429s and QUERY_TOO_COSTLY/THROTTLED answers).

For every phase: normal-query p50/p99/max (ms) and their ratio to idle, the attackers' outcomes
by HTTP status and GraphQL extensions.code (e.g. `200 ok`, `200 QUERY_TOO_COSTLY`, `429
Retry-After`) and how fast their answers came, requests still unanswered when they stopped, the
server's peak RSS during the phase (VmRSS from /proc), the CPU seconds of the server and of the
attackers themselves (on a small machine hammering attackers take CPU from the server too), the
exception types in the server's log, and the load average (the machine may be shared: compare
figures of one run only). The same script measures before and after hardening: attacks that
succeed show as `200 ok` and slow everyone; refused ones show their refusal and should leave the
ratios near 1. The server inherits this process's environment, so limit settings given there
apply; it depends on nothing but the GraphQL and token endpoints (not /metrics). Run:

    .venv/bin/python bench/abuse.py [--seconds N] [--database sqlite|postgresql]
        [--phases idle,nested,...] [--modes plain,nice,pinned] [--clients C] [--rate R]
        [--attackers A]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, select
from strawberry.relay import to_base64

from bench.common import (
    DEMO_PASSWORD,
    ROOT,
    SECRET,
    Backend,
    GraphQLWebSocket,
    free_port,
    load,
    percentile,
    process_cpu,
    serving,
    table_lines,
)

PHASES = ("idle", "nested", "epcis", "audit", "login", "websocket")
MODES = ("plain", "nice", "pinned")
REFUSALS = ("429", "QUERY_TOO_COSTLY", "THROTTLED", "slow_down")
NORMAL_ADDRESS = "127.0.0.2"
ORDERS = 100  # purchase orders seeded for the nested attack: purchaseOrders(first: 100) is full
ORDER_LINES = 3
ALIASES = 20

PHARMACIST_QUERY = """query Pharmacy($location: ID!) {
  stockLevels(first: 20, location: $location) { edges { node { quantity lot { batchNumber } } } }
}"""
NURSE_QUERY = "{ stockLevels(first: 20) { edges { node { quantity lot { batchNumber } } } } }"
NESTED_QUERY = (
    "{ "
    + " ".join(
        f"a{i}: purchaseOrders(first: 100) {{ edges {{ node {{ id number status "
        "supplier { purchaseOrders(first: 100) { edges { node { id } } } } } } }"
        for i in range(ALIASES)
    )
    + " }"
)
EPCIS_QUERY = "{ epcisExport(first: 10000) }"
AUDIT_QUERY = (
    "{ " + " ".join(f"a{i}: auditIntegrity {{ ok eventsChecked }}" for i in range(ALIASES)) + " }"
)
SUBSCRIPTION = "subscription { stockChanged { quantity } }"
DISPENSE = """mutation($input: DispenseStockInput!) {
  dispenseStock(input: $input) { movements { id } errors { code message } }
}"""
WARD_STOCK = 1_000_000  # packs of one lot at WARD-B: the flood's own dispenses never run short


# --- the database --------------------------------------------------------------------------------


async def seed(backend: Backend) -> tuple[str, dict[str, Any]]:
    """A migrated database with the demo network and history, plus ORDERS submitted purchase
    orders from the hospital to the wholesaler: (url, facts the drivers need)."""
    from server.catalog.models import Product
    from server.config import Settings
    from server.core.audit import AuditEvent
    from server.core.migrate import upgrade
    from server.demo import seed_demo
    from server.inventory.models import Movement, MovementKind
    from server.inventory.service import MovementRequest, NewLot
    from server.network.models import Location, Organisation, User
    from server.purchasing.service import OrderLineFields
    from server.services import Services

    url, _ = await backend.create("abuse")
    await upgrade(url)
    services = Services.build(Settings(database_url=url, secret_key=SECRET))
    try:
        await seed_demo(services)
        async with services.db.read() as session:

            async def one(stmt: Any) -> Any:
                return (await session.execute(stmt)).scalar_one()

            admin_id = await one(select(User.id).where(User.username == "admin"))
            pharmacy_id = await one(select(Location.id).where(Location.code == "HOSP-CP"))
            store_id = await one(select(Location.id).where(Location.code == "HOSP-WH"))
            ward_id = await one(select(Location.id).where(Location.code == "WARD-B"))
            supplier_id = await one(
                select(Organisation.id).where(Organisation.name == "MedDistri Wholesale")
            )
            products = list(
                (await session.execute(select(Product.id).order_by(Product.id).limit(30))).scalars()
            )
        admin = await services.network.load_principal(admin_id)
        received = await services.ledger.record(
            admin,
            [
                MovementRequest(
                    MovementKind.RECEIVE,
                    ward_id,
                    WARD_STOCK,
                    new_lot=NewLot(products[0], "ABUSE001", date.today() + timedelta(days=700)),
                )
            ],
            operation="bench.abuse.seed",
        )
        purchasing = services.purchasing
        for n in range(ORDERS):
            order = await purchasing.create_order(
                admin,
                supplier_id=supplier_id,
                deliver_to_id=store_id,
                lines=[
                    OrderLineFields(products[(n + k) % len(products)], 10 + k, Decimal("2.50"))
                    for k in range(ORDER_LINES)
                ],
                expected_delivery_date=date.today() + timedelta(days=7 + n % 20),
            )
            await purchasing.submit_order(admin, order.id)
        async with services.db.read() as session:
            movements = (await session.execute(select(func.count(Movement.id)))).scalar_one()
            events = (await session.execute(select(func.count(AuditEvent.seq)))).scalar_one()
    finally:
        await services.close()
    return url, {
        "pharmacy": to_base64("Location", pharmacy_id),
        "ward": to_base64("Location", ward_id),
        "lot": to_base64("Lot", received.movements[0].lot_id),
        "size": f"{movements:,} movements, {events:,} audit events, {ORDERS} purchase orders",
    }


# --- outcomes and measurement ----------------------------------------------------------------


def outcome(response: httpx.Response) -> str:
    """`<status> <extensions.code of the first error, or ok>`; `<status>` alone when the body
    is not a GraphQL result (an OAuth error keeps its `error` field); a 429 says whether it
    came with Retry-After."""
    if response.status_code == 429:
        return "429 " + ("Retry-After" if "retry-after" in response.headers else "no Retry-After")
    try:
        body = response.json()
    except ValueError:
        return str(response.status_code)
    if isinstance(body, dict):
        if errors := body.get("errors"):
            first = errors[0] if isinstance(errors, list) and errors else {}
            code = (first.get("extensions") or {}).get("code", "error")
            return f"{response.status_code} {code}"
        if "error" in body:  # RFC 6749 error response
            return f"{response.status_code} {body['error']}"
    return f"{response.status_code} ok"


def failure(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return f"conn-error {type(exc).__name__}"


def client_for(base: str, address: str, timeout: float) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=timeout)


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """On uvloop when installed, as uvicorn runs the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def as_attacker(mode: str) -> None:
    """Apply an attacker mode to this (attacker) process: see the module docstring."""
    if mode == "nice":
        os.nice(19)
    elif mode == "pinned":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[-1]})


def announce(ready: Any) -> float:
    """Tell the phase this attacker process is up (its imports done) and return its CPU so
    far: starting Python is not the attack, and must not fall inside the measured time."""
    ready.put(os.getpid())
    return time.process_time()


async def until(stop: Any) -> None:
    """Wait for a multiprocessing Event without blocking the event loop."""
    await asyncio.to_thread(stop.wait)


# --- normal users (their own process) --------------------------------------------------------


def normal_users(
    base: str, tokens: dict[str, str], pharmacy: str, args: dict[str, Any], results: Any
) -> None:
    """C clients at R requests/s each for `seconds`; sends (latencies, outcomes, logins)."""

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        logins: Counter[str] = Counter()
        deadline = time.monotonic() + args["seconds"]
        interval = 1.0 / args["rate"]

        async def user(k: int) -> None:
            pharmacist = k % 2 == 0
            token = tokens["pharmacist" if pharmacist else "nurse"]
            body: dict[str, Any] = (
                {"query": PHARMACIST_QUERY, "variables": {"location": pharmacy}}
                if pharmacist
                else {"query": NURSE_QUERY}
            )
            headers = {"Authorization": f"Bearer {token}"}
            await asyncio.sleep(interval * k / args["clients"])  # spread the clients out
            async with client_for(base, NORMAL_ADDRESS, args["timeout"]) as http:
                # at least one request each, even when this process started late
                first = True
                while (scheduled := time.monotonic()) < deadline or first:
                    first = False
                    try:
                        response = await http.post("/graphql", json=body, headers=headers)
                        outcomes[outcome(response)] += 1
                    except httpx.HTTPError as exc:
                        outcomes[failure(exc)] += 1
                        if isinstance(exc, httpx.TimeoutException):
                            latencies.append(args["timeout"])
                            continue
                    latencies.append(time.monotonic() - scheduled)
                    await asyncio.sleep(max(0.0, scheduled + interval - time.monotonic()))

        async def sign_in() -> None:
            """The real pharmacist signing in once a second (only during the login flood)."""
            form = {"grant_type": "password", "username": "pharmacist", "password": DEMO_PASSWORD}
            async with client_for(base, NORMAL_ADDRESS, args["timeout"]) as http:
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    try:
                        logins[outcome(await http.post("/auth/token", data=form))] += 1
                    except httpx.HTTPError as exc:
                        logins[failure(exc)] += 1
                    await asyncio.sleep(max(0.0, started + 1.0 - time.monotonic()))

        jobs = [user(k) for k in range(args["clients"])]
        if args["sign_in"]:
            jobs.append(sign_in())
        await asyncio.gather(*jobs)
        return {"latencies": latencies, "outcomes": dict(outcomes), "logins": dict(logins)}

    results.put(run(main()))


# --- attackers (each in its own process) -----------------------------------------------------


def http_attacker(
    mode: str,
    base: str,
    address: str,
    request: dict[str, Any],
    timeout: float,
    ready: Any,
    stop: Any,
    results: Any,
) -> None:
    """Sends `request` in a loop until `stop`, as fast as answers come; a refusal (429 with
    Retry-After included) does not slow it down: it is counted and the next request follows."""
    as_attacker(mode)
    started_cpu = announce(ready)

    async def main() -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        answered: list[float] = []  # seconds to each answer
        unanswered: list[float] = []  # how long the request in flight at the stop had waited
        async with client_for(base, address, timeout) as http:

            async def hammer() -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = await http.request(**request)
                    except asyncio.CancelledError:
                        unanswered.append(time.monotonic() - sent)
                        raise
                    except httpx.HTTPError as exc:
                        outcomes[failure(exc)] += 1
                        await asyncio.sleep(0.05)  # a refused connection is not a busy loop
                    else:
                        answered.append(time.monotonic() - sent)
                        outcomes[outcome(response)] += 1

            # stop promptly: an answer may take far longer than the phase
            task = asyncio.ensure_future(hammer())
            await until(stop)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return {"outcomes": dict(outcomes), "answered": answered, "unanswered": unanswered}

    results.put(run(main()) | {"cpu": time.process_time() - started_cpu})


def ws_attacker(
    mode: str,
    base: str,
    address: str,
    token: str,
    sockets: int,
    subscriptions: int,
    dispense: dict[str, Any],
    ready: Any,
    stop: Any,
    results: Any,
) -> None:
    """Opens `sockets` websockets with one token, `subscriptions` subscriptions on each, and
    holds them until `stop`; counts what the server acknowledged, refused and closed. Once
    they are open it dispenses one pack in its own ward every `dispense["interval"]` seconds,
    a nurse's ordinary work, so that every event fans out to all its subscriptions."""
    as_attacker(mode)
    started_cpu = announce(ready)

    async def main() -> dict[str, Any]:
        connections: Counter[str] = Counter()
        subs: Counter[str] = Counter()
        mutations: Counter[str] = Counter()
        delivered = 0
        opened: list[GraphQLWebSocket] = []
        watchers: list[asyncio.Task[None]] = []

        async def watch(ws: GraphQLWebSocket) -> None:
            """Refusals arrive later: an `error` for a subscription, or a close."""
            nonlocal delivered
            try:
                while True:
                    message = await ws.receive()
                    if message.get("type") == "next":
                        delivered += 1
                    elif message.get("type") == "error":
                        subs["refused (error message)"] += 1
                    elif message.get("type") == "complete":
                        subs["completed by server"] += 1
            except Exception as exc:  # a close of any kind is the outcome
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if not stop.is_set():
                    connections[f"closed by server ({code})"] += 1

        async def open_one() -> None:
            try:
                ws = await asyncio.wait_for(
                    GraphQLWebSocket.open(base, token, local_addr=(address, 0)), 30
                )
            except Exception as exc:  # every refusal is an outcome to count
                status = getattr(getattr(exc, "response", None), "status_code", None)
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                label = status or code or type(exc).__name__
                connections[f"refused ({label})"] += 1
                return
            connections["acknowledged"] += 1
            opened.append(ws)
            for _ in range(subscriptions):
                try:
                    await ws.subscribe(SUBSCRIPTION)
                    subs["sent"] += 1
                except Exception:  # closed under us
                    subs["send failed (closed)"] += 1
                    break
            watchers.append(asyncio.ensure_future(watch(ws)))

        started = time.monotonic()
        # in waves of 20, as fast as the server lets them in
        for first in range(0, sockets, 20):
            if stop.is_set():
                break
            await asyncio.gather(*(open_one() for _ in range(first, min(sockets, first + 20))))
        opening = time.monotonic() - started
        headers = {"Authorization": f"Bearer {token}"}
        async with client_for(base, address, 60) as http:
            n = 0
            while not stop.is_set():
                n += 1
                variables = {
                    "input": {
                        "location": dispense["ward"],
                        "lot": dispense["lot"],
                        "quantity": 1,
                        "idempotencyKey": f"abuse-{os.getpid()}-{time.time_ns()}-{n}",
                    }
                }
                body = {"query": DISPENSE, "variables": variables}
                try:
                    response = await http.post("/graphql", json=body, headers=headers)
                    payload = response.json().get("data") or {}
                    errors = (payload.get("dispenseStock") or {}).get("errors")
                    label = outcome(response)
                    mutations[f"{label} {errors[0]['code']}" if errors else label] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    mutations[failure(exc)] += 1
                await asyncio.sleep(dispense["interval"])
        await asyncio.sleep(0.5)  # the last events still on their way
        still_open = sum(1 for w in watchers if not w.done())
        for w in watchers:
            w.cancel()
        for ws in opened:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        return {
            "outcomes": {f"ws {k}": v for k, v in connections.items()}
            | {f"sub {k}": v for k, v in subs.items()},
            "note": f"{len(opened)} opened in {opening:.1f} s, {still_open} still open at end; "
            f"its dispenses: {fmt_counts(mutations)}; events delivered to it: {delivered:,} "
            f"(x{delivered / max(1, sum(mutations.values())):,.0f} per dispense)",
        }

    results.put(run(main()) | {"cpu": time.process_time() - started_cpu})


# --- phases ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    mode: str
    latencies: list[float]
    outcomes: dict[str, int]
    attack: Counter[str] = field(default_factory=Counter)
    attack_seconds: float = 0.0
    logins: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server_errors: Counter[str] = field(default_factory=Counter)
    answered: list[float] = field(default_factory=list)  # attackers' seconds per answer
    unanswered: list[float] = field(default_factory=list)  # in flight at the stop: waited
    rss_start: int = 0
    rss_peak: int = 0
    settle: float = 0.0
    settled: bool = True
    server_cpu: float = 0.0  # while attacked and measured (not while settling)
    attacker_cpu: float = 0.0
    load: str = ""


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """The server's peak VmRSS, sampled every 50 ms in a thread of this process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def settle(pid: int, limit: float) -> tuple[float, bool]:
    """Seconds until the server has used under 10% of a core for one second, and whether it
    got there within `limit`: work it accepted from an attacker may outlast the attacker."""
    started = time.monotonic()
    quiet_since = started
    last = process_cpu(pid) or 0.0
    while (now := time.monotonic()) - started < limit:
        time.sleep(0.25)
        cpu = process_cpu(pid) or 0.0
        if cpu - last > 0.025:  # 10% of 0.25 s
            quiet_since = time.monotonic()
        last = cpu
        if time.monotonic() - quiet_since >= 1.0:
            return max(0.0, quiet_since - started), True
    return now - started, False


def attackers_for(
    name: str,
    mode: str,
    base: str,
    tokens: dict[str, str],
    facts: dict[str, Any],
    args: argparse.Namespace,
) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
    """(target, args before `stop, results`) for each attacker process of phase `name`."""

    def graphql(user: str, query: str) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": "/graphql",
            "json": {"query": query},
            "headers": {"Authorization": f"Bearer {tokens[user]}"},
        }

    address = [f"127.0.0.{10 + k}" for k in range(max(args.attackers, args.login_attackers))]
    timeout = args.attack_timeout
    if name == "nested":
        request = graphql("supplier", NESTED_QUERY)
    elif name == "epcis":
        request = graphql("regulator", EPCIS_QUERY)
    elif name == "audit":
        request = graphql("auditor", AUDIT_QUERY)
    elif name == "login":
        wrong = {"grant_type": "password", "username": "pharmacist", "password": "wrong-guess"}
        request = {"method": "POST", "url": "/auth/token", "data": wrong}
        return [
            (http_attacker, (mode, base, address[k], request, timeout))
            for k in range(args.login_attackers)
        ]
    elif name == "websocket":
        return [
            (
                ws_attacker,
                (
                    mode,
                    base,
                    address[0],
                    tokens["nurse.b"],
                    args.websockets,
                    args.subscriptions,
                    {"ward": facts["ward"], "lot": facts["lot"], "interval": args.ws_interval},
                ),
            )
        ]
    else:
        return []
    return [
        (http_attacker, (mode, base, address[k], request, timeout)) for k in range(args.attackers)
    ]


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Timeout))\b")


def server_errors(log: Path, offset: int) -> Counter[str]:
    """Exception types at the ends of the tracebacks the server logged since `offset`."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return Counter(m.group(1) for line in text.splitlines() if (m := EXCEPTION_LINE.match(line)))


def run_phase(
    name: str,
    mode: str,
    base: str,
    pid: int,
    tokens: dict[str, str],
    facts: dict[str, Any],
    args: argparse.Namespace,
) -> Phase:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    ready = ctx.Queue()
    attack_results = ctx.Queue()
    normal_results = ctx.Queue()
    rss_start = rss_kib(pid)
    cpu_start = process_cpu(pid) or 0.0
    with RssSampler(pid) as rss:
        attackers = [
            ctx.Process(target=target, args=(*targs, ready, stop, attack_results), daemon=True)
            for target, targs in attackers_for(name, mode, base, tokens, facts, args)
        ]
        for process in attackers:
            process.start()
        for _ in attackers:  # all started (spawned and imported) before the attack's clock
            ready.get(timeout=120)
        attack_started = time.monotonic()
        if attackers:
            time.sleep(args.ramp)
        normal = ctx.Process(
            target=normal_users,
            args=(
                base,
                tokens,
                facts["pharmacy"],
                {
                    "seconds": args.seconds,
                    "rate": args.rate,
                    "clients": args.clients,
                    "timeout": args.timeout,
                    "sign_in": name == "login",
                },
                normal_results,
            ),
            daemon=True,
        )
        normal.start()
        # before join: a full queue blocks the child's exit
        measured = normal_results.get(timeout=args.seconds + args.timeout + 60)
        normal.join()
        stop.set()
        attack_seconds = time.monotonic() - attack_started
        server_cpu = (process_cpu(pid) or 0.0) - cpu_start
        attack: Counter[str] = Counter()
        notes = []
        attacker_cpu = 0.0
        answered: list[float] = []
        unanswered: list[float] = []
        for _ in attackers:
            try:
                result = attack_results.get(timeout=30)
            except queue.Empty:
                notes.append("an attacker did not report")
                continue
            attack.update(result["outcomes"])
            attacker_cpu += result["cpu"]
            answered += result.get("answered", [])
            unanswered += result.get("unanswered", [])
            if note := result.get("note"):
                notes.append(note)
        for process in attackers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        phase = Phase(
            name,
            mode,
            sorted(measured["latencies"]),
            measured["outcomes"],
            attack,
            attack_seconds,
            measured["logins"],
            notes,
        )
        phase.server_cpu, phase.attacker_cpu = server_cpu, attacker_cpu
        phase.answered, phase.unanswered = sorted(answered), unanswered
        if attackers:
            phase.settle, phase.settled = settle(pid, args.settle)
    phase.rss_start, phase.rss_peak, phase.load = rss_start, rss.peak, load()
    return phase


# --- report ---------------------------------------------------------------------------------


def refused(outcome_label: str) -> bool:
    """Whether an attacker outcome label (`429 Retry-After`, `200 QUERY_TOO_COSTLY`...) is a
    refusal."""
    return any(part in outcome_label.split() for part in REFUSALS)


def fmt_counts(counts: dict[str, int] | Counter[str], seconds: float | None = None) -> str:
    """`label: n, ...` most frequent first; with `seconds`, the rate of answered requests."""
    if not counts:
        return "-"
    total = sum(v for k, v in counts.items() if k[:1].isdigit())
    parts = [f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    rate = f" (answered: {total / seconds:.1f}/s)" if seconds and total else ""
    return ", ".join(parts) + rate


def describe(name: str, args: argparse.Namespace) -> str:
    a, login = args.attackers, args.login_attackers
    return {
        "idle": "no attacker",
        "nested": f"{a} supplier clients: {ALIASES} aliases x purchaseOrders(first: 100) x "
        f"supplier {{ purchaseOrders(first: 100) }} ({ORDERS} orders exist)",
        "epcis": f"{a} regulator clients: epcisExport(first: 10000)",
        "audit": f"{a} auditor clients: {ALIASES} aliases x auditIntegrity",
        "login": f"{login} anonymous clients: wrong passwords for pharmacist at /auth/token",
        "websocket": f"1 nurse token: {args.websockets} websockets x {args.subscriptions} "
        f"stockChanged subscriptions, a dispense every {args.ws_interval:g} s",
    }[name]


def report(phases: list[Phase], header: str, args: argparse.Namespace) -> None:
    idle = next((p for p in phases if p.name == "idle"), None)
    base50 = percentile(idle.latencies, 50) if idle and idle.latencies else None
    base99 = percentile(idle.latencies, 99) if idle and idle.latencies else None
    # what the normal users' requests cost the server, from the idle phase (no attacker)
    per_normal = idle.server_cpu / len(idle.latencies) if idle and idle.latencies else 0.0
    print(header)
    rows = []
    for p in phases:
        answers = sum(v for k, v in p.attack.items() if k[:1].isdigit())
        refusals = sum(v for k, v in p.attack.items() if k[:1].isdigit() and refused(k))
        attack_cpu = max(0.0, p.server_cpu - per_normal * len(p.latencies))
        per_answer = f"{1e6 * attack_cpu / answers:.0f}" if answers else "-"
        per_refusal = (
            f"{1e6 * attack_cpu / answers:.0f}" if refusals and refusals >= 0.95 * answers else "-"
        )
        if p.latencies:
            p50, p99, top = (percentile(p.latencies, q) for q in (50, 99, 100))
        else:
            p50 = p99 = top = float("nan")
        errors = sum(v for k, v in p.outcomes.items() if k != "200 ok")
        rows.append(
            [
                p.name if p.name == "idle" else f"{p.name}/{p.mode}",
                f"{1000 * p50:.1f}",
                f"{1000 * p99:.1f}",
                f"{1000 * top:.1f}",
                f"{p50 / base50:.2f}x" if base50 else "-",
                f"{p99 / base99:.2f}x" if base99 else "-",
                f"{len(p.latencies)}",
                f"{errors}",
                f"{p.rss_start / 1024:.0f}/{p.rss_peak / 1024:.0f}",
                f"{p.server_cpu:.1f}/{p.attacker_cpu:.1f}",
                f"{answers / p.attack_seconds:.0f}" if answers and p.attack_seconds else "-",
                per_answer,
                per_refusal,
                f"{p.settle:.1f}" + ("" if p.settled else "+"),
                p.load,
            ]
        )
    headers = ["phase", "p50 ms", "p99 ms", "max ms", "p50/idle", "p99/idle", "requests"]
    headers += ["errors", "RSS MB start/peak", "CPU s srv/att", "att ans/s", "srv us/ans"]
    headers += ["srv us/refusal", "settle s", "load 1/5/15"]
    for line in table_lines(headers, rows):
        print(line)
    print(
        f"normal users: {args.clients} clients x {args.rate:g} req/s for {args.seconds:g} s "
        "per phase; ratios against idle (the ceiling), measured in this run; CPU s: the "
        "server's and the attackers' own while attacked; settle s: the server busy after its "
        "attackers stopped ('+': still busy at --settle); srv us/ans: the server's CPU per "
        "attacker answer, net of the normal users' requests at their idle cost; srv us/refusal: "
        "the same when at least 95% of the answers were refusals; mode: how the attacker "
        "processes ran (plain, nice 19, pinned to one CPU)"
    )
    for p in phases:
        label = p.name if p.name == "idle" else f"{p.name}/{p.mode}"
        print(f"\n[{label}] {describe(p.name, args)}")
        print(f"  normal users: {fmt_counts(p.outcomes)}")
        if p.attack:
            print(f"  attackers: {fmt_counts(p.attack, p.attack_seconds)}")
        if p.answered:
            p50, top = percentile(p.answered, 50), p.answered[-1]
            print(f"  attackers' answers came in p50 {1000 * p50:.1f} ms, max {1000 * top:.1f} ms")
        if p.unanswered:
            print(
                f"  {len(p.unanswered)} attacker requests unanswered at the stop, after waiting "
                f"up to {max(p.unanswered):.1f} s"
            )
        if p.logins:
            print(f"  real pharmacist signing in meanwhile: {fmt_counts(p.logins)}")
        for note in p.notes:
            print(f"  {note}")
        if p.server_errors:
            print(f"  server log: {fmt_counts(p.server_errors)}")


# --- main -----------------------------------------------------------------------------------


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def tokens_for(base: str) -> dict[str, str]:
    """Every token up front, from the normal users' address: a login flood or lockout later
    must not keep a phase from starting."""
    tokens = {}
    async with client_for(base, NORMAL_ADDRESS, 30) as http:
        for user in ("pharmacist", "nurse", "nurse.b", "supplier", "regulator", "auditor"):
            form = {"grant_type": "password", "username": user, "password": DEMO_PASSWORD}
            response = await http.post("/auth/token", data=form)
            response.raise_for_status()
            tokens[user] = response.json()["access_token"]
    return tokens


async def warm_up(base: str, tokens: dict[str, str], facts: dict[str, Any]) -> None:
    """A few untimed normal queries: connections, compiled SQL and parser caches."""
    async with client_for(base, NORMAL_ADDRESS, 30) as http:
        for _ in range(5):
            for user, body in (
                (
                    "pharmacist",
                    {"query": PHARMACIST_QUERY, "variables": {"location": facts["pharmacy"]}},
                ),
                ("nurse", {"query": NURSE_QUERY}),
            ):
                headers = {"Authorization": f"Bearer {tokens[user]}"}
                response = await http.post("/graphql", json=body, headers=headers)
                if outcome(response) != "200 ok":
                    raise RuntimeError(f"{user}'s normal query fails: {response.text[:500]}")


async def prepare(args: argparse.Namespace, workdir: Path) -> tuple[Backend, str, str, dict]:
    backend = Backend(args.database, args.pg_url, workdir)
    database = await backend.describe()
    started = time.monotonic()
    url, facts = await seed(backend)
    print(f"seeded {database} in {time.monotonic() - started:.1f} s: {facts['size']}", flush=True)
    return backend, database, url, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=12, help="normal users' time per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="attacker modes, comma-separated (see above)"
    )
    parser.add_argument("--clients", type=int, default=5, help="normal users")
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s per normal user")
    parser.add_argument("--attackers", type=int, default=3, help="attacker processes (GraphQL)")
    parser.add_argument("--login-attackers", type=int, default=4)
    parser.add_argument("--websockets", type=int, default=200)
    parser.add_argument("--subscriptions", type=int, default=20, help="per websocket")
    parser.add_argument(
        "--ws-interval", type=float, default=0.5, help="seconds between the flood's dispenses"
    )
    parser.add_argument("--ramp", type=float, default=1.0, help="attack head start, seconds")
    parser.add_argument("--timeout", type=float, default=30, help="normal request timeout")
    parser.add_argument("--attack-timeout", type=float, default=120)
    parser.add_argument(
        "--settle", type=float, default=60, help="longest wait for the server to go quiet"
    )
    parser.add_argument("--server-log", help="keep the server's output in this file")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark database on",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.phases.split(",") if n.strip()]
    if unknown := [n for n in names if n not in PHASES]:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(PHASES)}")
    if names and names[0] != "idle" and "idle" in names:
        names.remove("idle")
        names.insert(0, "idle")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes {bad}; choose from {', '.join(MODES)}")
    runs = [(n, m) for n in names for m in (["-"] if n == "idle" else modes)]

    before = load()
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend, database, url, facts = asyncio.run(prepare(args, Path(workdir)))
        try:
            port = free_port()
            env = {
                **os.environ,
                "APOTHECA_DATABASE_URL": url,
                "APOTHECA_SECRET_KEY": SECRET,
                "APOTHECA_LOG_LEVEL": "warning",
                "APOTHECA_ACCESS_TOKEN_MINUTES": "120",  # one set of tokens for the whole run
                # the startup forecast refit is not an attack's cost: off, so that the
                # server's CPU in each phase is the phase's
                "APOTHECA_FORECAST_REFRESH_SECONDS": "0",
            }
            log = Path(args.server_log or Path(workdir) / "server.log")
            log.write_text("")
            # the server's output goes to a file (exec keeps the pid): its tracebacks are
            # counted per phase instead of burying the figures
            serve = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
            command = ["sh", "-c", 'exec "$@" >>"$0" 2>&1', str(log), *serve]
            phases = []
            tokens: dict[str, str] = {}
            for name, mode in runs:
                # a fresh server per phase (same database): what one attack left running,
                # in memory or in limiter state does not spill into the next
                with serving(command, port, env=env, timeout=120) as (base, pid):
                    tokens = tokens or asyncio.run(tokens_for(base))
                    asyncio.run(warm_up(base, tokens, facts))
                    settle(pid, 30)  # its startup checks done before the phase's clock starts
                    print(f"phase {name} ({mode}) ... load {load()}", flush=True)
                    offset = log.stat().st_size
                    phase = run_phase(name, mode, base, pid, tokens, facts, args)
                    phase.server_errors = server_errors(log, offset)
                    if not rss_kib(pid):
                        phase.notes.append("the server process was gone at the end")
                    phases.append(phase)
        finally:
            asyncio.run(backend.drop_all())
    header = (
        f"\nabuse: normal users under attack; {database}; code {commit()}; "
        f"{os.cpu_count()} CPUs; load before {before}\ndemo network and history: {facts['size']}"
    )
    report(phases, header, args)


if __name__ == "__main__":
    main()
