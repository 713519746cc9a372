"""How many FHIR MedicationDispenses per second does /fhir accept, against recordMovements?

On one freshly seeded database and one real uvicorn server (a subprocess), the same kind of
movement (DISPENSE of 1 pack of a named lot at one location, patient and encounter kept) is
written five ways, in this order:

  (a) FHIR single        POST /fhir/MedicationDispense, one resource per request (1 client)
  (b) FHIR single x10    the same, 10 concurrent clients
  (c) recordMovements 1  one movement per GraphQL call (1 client): (a)'s GraphQL twin
  (d) FHIR Bundle 100    POST /fhir, a transaction Bundle of 100 entries per request
  (e) recordMovements 100 / 1000   100 (the Bundle's twin) and 1,000 (its ceiling) per call

Each FHIR resource has its own identifier (so each is recorded, not replayed) and names its lot
by a contained Medication's batch (so no FEFO query). The ratio column is each path's rate over
recordMovements at 1,000 per call measured in the same run: the ceiling of this server for
these movements. Every path has an untimed warm-up and afterwards counts what it wrote. Run:

    .venv/bin/python bench/fhir_dispense.py [--dispenses N] [--database sqlite|postgresql]
"""

# ruff: noqa: E402  (imports follow the sys.path fix below, as they must)
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a file, this script's folder comes first on sys.path, where `fhir` would be this file
# rather than fhir.resources' package: drop it, and put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import httpx
from sqlalchemy import func, select
from strawberry.relay import to_base64

from bench.common import (
    DEMO_PASSWORD,
    Backend,
    Fixture,
    Stopwatch,
    live_server,
    load,
    prepared,
    process_cpu,
    table_lines,
)
from server.catalog.models import ProductGtin
from server.inventory.models import Movement, MovementKind

FEED = """
mutation($input: RecordMovementsInput!) {
  recordMovements(input: $input) { movements { id } errors { code field message } }
}"""
CLIENTS = 10
WARMUP = 20


@dataclass
class Result:
    path: str
    dispenses: int
    seconds: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.dispenses / self.seconds


class Run:
    """One server, one token, and the resources / feed items of dispense number i."""

    def __init__(self, fx: Fixture, gtins: dict[int, str], http: httpx.AsyncClient, token: str):
        self.fx, self.gtins, self.http = fx, gtins, http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.location = to_base64("Location", fx.location_id)
        self.code = "HOSP-CP"

    def resource(self, tag: str, i: int) -> dict[str, Any]:
        lot = i % len(self.fx.lot_ids)
        return {
            "resourceType": "MedicationDispense",
            "identifier": [{"system": "urn:bench", "value": f"{tag}-{i}"}],
            "status": "completed",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "m",
                    "code": {
                        "coding": [
                            {
                                "system": "https://www.gs1.org/gtin",
                                "code": self.gtins[self.fx.product_ids[lot]],
                            }
                        ]
                    },
                    "batch": {"lotNumber": self.fx.batches[lot]},
                }
            ],
            "medicationReference": {"reference": "#m"},
            "quantity": {"value": 1},
            "location": {"reference": f"Location?identifier={self.code}"},
            "subject": {"reference": f"Patient/{i % 500}"},
            "context": {"reference": f"Encounter/{tag}-{i}"},
        }

    def item(self, tag: str, i: int) -> dict[str, Any]:
        lot = self.fx.lot_ids[i % len(self.fx.lot_ids)]
        return {
            "kind": MovementKind.DISPENSE.value,
            "location": self.location,
            "lot": to_base64("Lot", lot),
            "quantity": 1,
            "patientReference": f"Patient/{i % 500}",
            "reference": f"Encounter/{tag}-{i}",
        }

    async def single(self, tag: str, start: int, count: int) -> None:
        for i in range(start, start + count):
            response = await self.http.post(
                "/fhir/MedicationDispense", json=self.resource(tag, i), headers=self.headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"single {i}: {response.status_code} {response.text[:300]}")

    async def concurrent(self, tag: str, start: int, count: int) -> None:
        share = -(-count // CLIENTS)
        await asyncio.gather(
            *(
                self.single(tag, start + c * share, max(0, min(share, count - c * share)))
                for c in range(CLIENTS)
            )
        )

    async def bundles(self, tag: str, start: int, count: int, size: int = 100) -> None:
        for first in range(start, start + count, size):
            n = min(size, start + count - first)
            body = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": self.resource(tag, i),
                        "request": {"method": "POST", "url": "MedicationDispense"},
                    }
                    for i in range(first, first + n)
                ],
            }
            response = await self.http.post("/fhir", json=body, headers=self.headers)
            if response.status_code != 200:
                raise RuntimeError(f"bundle {first}: {response.status_code} {response.text[:300]}")

    async def feed(self, tag: str, start: int, count: int, size: int) -> None:
        for first in range(start, start + count, size):
            n = min(size, start + count - first)
            items = [self.item(tag, i) for i in range(first, first + n)]
            response = await self.http.post(
                "/graphql",
                json={
                    "query": FEED,
                    "variables": {
                        "input": {"movements": items, "idempotencyKey": f"{tag}-{first}"}
                    },
                },
                headers=self.headers,
            )
            payload = response.json()["data"]["recordMovements"]
            if payload["errors"] or len(payload["movements"]) != n:
                raise RuntimeError(f"feed {first}: {payload['errors']}")


async def written(fx: Fixture, tag: str) -> int:
    async with fx.services.db.read() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).where(
                        Movement.kind == MovementKind.DISPENSE,
                        Movement.reference.like(f"Encounter/{tag}-%"),
                    )
                )
            ).scalar_one()
        )


async def measure(
    fx: Fixture,
    pid: int,
    label: str,
    tag: str,
    n: int,
    work: Callable[[str, int, int], Awaitable[None]],
) -> Result:
    print(f"running {label} ...", file=sys.stderr, flush=True)
    await work(f"w{tag}", 0, WARMUP)
    before = process_cpu(pid)
    with Stopwatch() as watch:
        await work(tag, 0, n)
    after = process_cpu(pid)
    count = await written(fx, tag)
    if count != n:
        raise RuntimeError(f"{label}: expected {n} dispenses written, found {count}")
    cpu = after - before if before is not None and after is not None else None
    return Result(label, n, watch.wall, cpu)


async def main_async(args: argparse.Namespace) -> None:
    before = load()
    n, bundled = args.dispenses, args.bundled
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            async with prepared(backend, "fhir") as fx:
                async with fx.services.db.read() as session:
                    gtins = dict(
                        (
                            await session.execute(
                                select(ProductGtin.product_id, func.min(ProductGtin.gtin))
                                .where(ProductGtin.product_id.in_(fx.product_ids))
                                .group_by(ProductGtin.product_id)
                            )
                        ).all()
                    )
                with live_server(fx.url) as (url, pid):
                    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
                        login = await http.post(
                            "/auth/token",
                            data={
                                "grant_type": "password",
                                "username": "admin",
                                "password": DEMO_PASSWORD,
                            },
                        )
                        login.raise_for_status()
                        run = Run(fx, gtins, http, login.json()["access_token"])
                        results = [
                            await measure(fx, pid, "(a) FHIR single, 1 client", "a", n, run.single),
                            await measure(
                                fx,
                                pid,
                                f"(b) FHIR single, {CLIENTS} clients",
                                "b",
                                n,
                                run.concurrent,
                            ),
                            await measure(
                                fx,
                                pid,
                                "(c) recordMovements, 1 per call",
                                "c",
                                n,
                                lambda t, s, c: run.feed(t, s, c, 1),
                            ),
                            await measure(
                                fx, pid, "(d) FHIR Bundle, 100 entries", "d", bundled, run.bundles
                            ),
                            await measure(
                                fx,
                                pid,
                                "(e) recordMovements, 100 per call",
                                "e",
                                bundled,
                                lambda t, s, c: run.feed(t, s, c, 100),
                            ),
                            await measure(
                                fx,
                                pid,
                                "(e) recordMovements, 1000 per call (ceiling)",
                                "f",
                                bundled,
                                lambda t, s, c: run.feed(t, s, c, 1000),
                            ),
                        ]
        finally:
            await backend.drop_all()
    ceiling = results[-1].rate
    rows = [
        [
            r.path,
            f"{r.dispenses:,}",
            f"{r.rate:,.0f}/s",
            f"{r.server_cpu / r.dispenses * 1000:.2f} ms" if r.server_cpu is not None else "?",
            f"{r.rate / ceiling:.2f}",
        ]
        for r in results
    ]
    print(f"FHIR dispenses accepted ({args.database})")
    for line in table_lines(["path", "dispenses", "rate", "server CPU each", "x ceiling"], rows):
        print(line)
    print(
        f"{database}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"(1/5/15 min) {before} before, {load()} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dispenses", type=int, default=500, help="per single-resource path")
    parser.add_argument("--bundled", type=int, default=3000, help="per batched path")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark databases on",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
