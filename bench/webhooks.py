"""How long after its change commits does a webhook arrive, beside a bare HTTP POST?

One run per database, on a freshly migrated database seeded with the demo network (no history):
one webhook endpoint of the hospital for `purchase_order.updated`, pointing at a local receiver
(uvicorn + Starlette on a free port, in this process and loop, like the worker). Each event is
a real purchase order created through PurchasingService (its outbox row written in the order's
transaction); its latency is from the moment `create_order` returned (committed) to the moment
the receiver read the signed request.

  sequential  N orders, each after the previous message arrived: latency of an idle system
              (the worker wakes on the commit, claims, signs, POSTs).
  burst       N orders created back to back by C concurrent writers, then wait for all:
              latency including queueing behind each other (one endpoint: sent in order, one
              at a time).
  bare POST   the ceiling: N httpx.AsyncClient POSTs of a body of the same size to the same
              receiver, one at a time, timed from just before the POST to the receiver reading
              it. The ratio webhook p50 / bare p50 is what the outbox, the claim transaction,
              signing and recording cost on top of HTTP itself.

Run:
    .venv/bin/python bench/webhooks.py [--events N] [--writers C]
        [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import SECRET, Backend, free_port, load, percentile, table_lines
from server.catalog.models import Product
from server.config import Settings
from server.core.migrate import upgrade
from server.demo import seed_demo
from server.network.models import Location, Organisation, User
from server.purchasing.service import OrderLineFields
from server.services import Services
from server.webhooks.rules import node_id


class Receiver:
    """Records when each message (by purchase order) or bare POST (by its `n`) arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def handle(self, request: Request) -> Response:
        body = json.loads(await request.body())
        now = time.perf_counter()
        key = body["data"].get("purchaseOrder") or str(body["data"].get("n"))
        self.arrived[key] = now
        waiter = self.waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)
        return Response(status_code=204)

    def wait(self, key: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if key in self.arrived:
            future.set_result(self.arrived[key])
        else:
            self.waiters[key] = future
        return future


def summary(name: str, latencies: list[float]) -> list[str]:
    values = sorted(latencies)
    ms = [v * 1000 for v in values]
    return [
        name,
        str(len(ms)),
        f"{percentile(ms, 50):.1f}",
        f"{percentile(ms, 99):.1f}",
        f"{ms[-1]:.1f}",
    ]


async def run(backend_name: str, events: int, writers: int, pg_url: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        backend = Backend(backend_name, pg_url, Path(workdir))
        try:
            await _run(backend, events, writers)
        finally:
            await backend.drop_all()


async def _run(backend: Backend, events: int, writers: int) -> None:
    url, _ = await backend.create("webhooks")
    await upgrade(url)
    settings = Settings(
        database_url=url,
        secret_key=SECRET,
        webhook_allow_hosts="127.0.0.1",
        webhook_poll_seconds=1.0,
    )
    services = Services.build(settings)
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)
        await seed_demo(services, history_days=-1)
        async with services.db.read() as session:
            admin_id = (
                await session.execute(select(User.id).where(User.username == "admin"))
            ).scalar_one()
            pharmacist_id = (
                await session.execute(select(User.id).where(User.username == "pharmacist"))
            ).scalar_one()
            orgs = dict((await session.execute(select(Organisation.name, Organisation.id))).all())
            deliver_to = (
                await session.execute(select(Location.id).where(Location.code == "HOSP-CP"))
            ).scalar_one()
            product = (
                await session.execute(select(Product.id).order_by(Product.id).limit(1))
            ).scalar_one()
        admin = await services.network.load_principal(admin_id)
        pharmacist = await services.network.load_principal(pharmacist_id)
        await services.webhooks.create_endpoint(
            admin,
            organisation_id=orgs["St. Aurelia General Hospital"],
            url=f"http://127.0.0.1:{receiver.port}/hook",
            description="bench",
            event_types=["purchase_order.updated"],
        )
        await services.webhooks.start()

        async def one_order() -> tuple[str, float]:
            order = await services.purchasing.create_order(
                pharmacist,
                supplier_id=orgs["MedDistri Wholesale"],
                deliver_to_id=deliver_to,
                lines=[OrderLineFields(product, 1, Decimal("1.00"))],
            )
            return str(node_id("PurchaseOrder", order.id)), time.perf_counter()

        # warm-up
        for _ in range(5):
            key, _ = await one_order()
            await receiver.wait(key)

        sequential: list[float] = []
        for _ in range(events):
            key, committed = await one_order()
            sequential.append(max(0.0, await receiver.wait(key) - committed))

        burst: list[float] = []
        queue = list(range(events))
        committed_at: dict[str, float] = {}

        async def writer() -> None:
            while queue:
                queue.pop()
                key, at = await one_order()
                committed_at[key] = at

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        arrived = {key: await receiver.wait(key) for key in committed_at}
        burst_wall = time.perf_counter() - started
        burst = [max(0.0, arrived[k] - committed_at[k]) for k in committed_at]

        bare: list[float] = []
        async with httpx.AsyncClient(timeout=10) as http:
            sample = json.dumps({"type": "bench", "timestamp": "x", "data": {"n": 0, "pad": ""}})
            pad = "x" * max(0, 420 - len(sample))  # about a purchase_order.updated body's size
            for n in range(events):
                body = json.dumps({"type": "bench", "timestamp": "x", "data": {"n": n, "pad": pad}})
                before = time.perf_counter()
                await http.post(
                    f"http://127.0.0.1:{receiver.port}/hook",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                bare.append(max(0.0, await receiver.wait(str(n)) - before))

        print(f"\n== {await backend.describe()}: {events} events, {writers} burst writers ==")
        rows = [
            summary("webhook, sequential", sequential),
            summary(f"webhook, burst x{writers}", burst),
            summary("bare httpx POST", bare),
        ]
        for line in table_lines(["latency after commit (ms)", "n", "p50", "p99", "max"], rows):
            print(line)
        p50 = percentile(sorted(sequential), 50) / percentile(sorted(bare), 50)
        p99 = percentile(sorted(sequential), 99) / percentile(sorted(bare), 99)
        print(f"ratio webhook/bare (sequential): p50 {p50:.1f}x, p99 {p99:.1f}x")
        print(f"burst: {events} orders committed and delivered in {burst_wall:.2f} s")
        print(f"load average {load()}")
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, timeout=5)
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    names = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for name in names:
        asyncio.run(run(name, args.events, args.writers, args.pg_url))


if __name__ == "__main__":
    main()
