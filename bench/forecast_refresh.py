"""Time of the background forecast refresh on many series: first, unchanged, a few changed.

    PYTHONPATH=. .venv/bin/python bench/forecast_refresh.py [--series 1000] [--weeks 104]
        [--granularity WEEKLY] [--jobs 1 2] [--db sqlite|postgresql]

A migrated demo database (no history) gets extra ward locations and, per (product, location)
series, `--weeks` of consumption of a known structure (smooth, seasonal, trending, intermittent,
lumpy, obsolescent; one sixth each), one DISPENSE movement per day with demand, inserted in bulk
(the ledger's invariants do not matter to the forecast, its speed here would). Then, per
`--jobs` value on a fresh copy of the forecasts (the table is emptied between):

  first      every series is classified, backtested (one cross_validation call) and refitted
  unchanged  the same refresh again: histories are read and hashed, nothing is refitted
  10 changed ten series get one more dispense in a past week: only they are refitted
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import delete, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Backend, Stopwatch, load, prepared, table_lines
from server.core.db import utcnow
from server.forecasting.models import ForecastRun, StoredSeriesForecast
from server.forecasting.series import Granularity
from server.inventory.models import Movement, MovementKind
from server.network.models import Location, LocationKind

KINDS = ("smooth", "seasonal", "trending", "intermittent", "lumpy", "obsolescent")


def weekly_demand(kind: str, weeks: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(weeks)
    level = rng.uniform(5, 80)
    if kind == "smooth":
        mean = np.full(weeks, level)
    elif kind == "seasonal":
        mean = level * (1 + 0.5 * np.sin(2 * np.pi * t / 52 + rng.uniform(0, 6.3)))
    elif kind == "trending":
        mean = level * (1 + 0.01 * t)
    elif kind == "intermittent":
        return (rng.random(weeks) < 0.3) * (rng.poisson(4, weeks) + 1.0)
    elif kind == "lumpy":
        return (rng.random(weeks) < 0.25) * np.ceil(rng.lognormal(1.5, 1.0, weeks))
    else:
        stop = int(weeks * rng.uniform(0.6, 0.8))
        return (t < stop) * rng.poisson(level / 4, weeks).astype(float)
    return rng.poisson(mean).astype(float)


async def build(fixture, series: int, weeks: int, seed: int) -> list[tuple[int, int, int]]:
    """Locations and movements for `series` (product, location) pairs; their (lot, location,
    product) keys."""
    services = fixture.services
    products = len(fixture.lot_ids)
    wards = math.ceil(series / products)
    async with services.db.write() as session:
        hosp = (
            await session.execute(select(Location).where(Location.id == fixture.location_id))
        ).scalar_one()
        new = [
            Location(
                organisation_id=hosp.organisation_id,
                code=f"BW-{i:03d}",
                name=f"Bench ward {i}",
                kind=LocationKind.WARD,
            )
            for i in range(wards)
        ]
        session.add_all(new)
        await session.flush()
        location_ids = [x.id for x in new]
        org = hosp.organisation_id
    rng = np.random.default_rng(seed)
    today = utcnow().date()
    monday = today - timedelta(days=today.weekday())
    first = monday - timedelta(weeks=weeks)
    keys, rows = [], []
    for s in range(series):
        lot, product = fixture.lot_ids[s % products], fixture.product_ids[s % products]
        location = location_ids[s // products]
        keys.append((lot, location, product))
        demand = weekly_demand(KINDS[s % len(KINDS)], weeks, rng)
        for w, q in enumerate(demand):
            if q <= 0:
                continue
            day = first + timedelta(weeks=w, days=int(rng.integers(0, 7)))
            at = datetime.combine(day, time(10), tzinfo=UTC)
            rows.append(
                {
                    "kind": MovementKind.DISPENSE,
                    "lot_id": lot,
                    "location_id": location,
                    "organisation_id": org,
                    "quantity": -int(q),
                    "balance_after": 0,
                    "occurred_at": at,
                    "recorded_at": at,
                }
            )
    async with services.db.write() as session:
        for i in range(0, len(rows), 5000):
            await session.execute(insert(Movement), rows[i : i + 5000])
    print(f"{series} series over {weeks} weeks: {len(rows)} movements inserted")
    return keys


async def run(args: argparse.Namespace) -> None:
    g = Granularity(args.granularity)
    with tempfile.TemporaryDirectory() as workdir:
        backend = Backend(args.db, args.pg_url, Path(workdir))
        try:
            async with prepared(backend, "forecast", lot_count=51) as fixture:
                keys = await build(fixture, args.series, args.weeks, args.seed)
                service = fixture.services.forecasting
                table = []
                for jobs in args.jobs:
                    async with fixture.services.db.write() as session:
                        await session.execute(delete(StoredSeriesForecast))
                        await session.execute(delete(ForecastRun))
                    with Stopwatch() as first:
                        (r1,) = await service.refresh([g], jobs=jobs)
                    with Stopwatch() as same:
                        (r2,) = await service.refresh([g], jobs=jobs)
                    changed = [
                        {
                            "kind": MovementKind.DISPENSE,
                            "lot_id": lot,
                            "location_id": loc,
                            "organisation_id": 1,
                            "quantity": -1,
                            "balance_after": 0,
                            "occurred_at": utcnow() - timedelta(days=30),
                            "recorded_at": utcnow(),
                        }
                        for lot, loc, _ in keys[: 10 * len(KINDS) : len(KINDS)]
                    ]
                    async with fixture.services.db.write() as session:
                        await session.execute(insert(Movement), changed)
                    with Stopwatch() as few:
                        (r3,) = await service.refresh([g], jobs=jobs)
                    for label, r, sw in (
                        ("first", r1, first),
                        ("unchanged", r2, same),
                        ("10 changed", r3, few),
                    ):
                        table.append(
                            [
                                f"{label}, {jobs} process{'es' if jobs > 1 else ''}",
                                str(r.series_total),
                                str(r.refitted),
                                f"{sw.wall:.2f}",
                                f"{sw.cpu:.2f}",
                            ]
                        )
                print(
                    f"\n{g.value.lower()} refresh on {args.db}, {os.cpu_count()} cores, "
                    f"load {load()}"
                )
                for line in table_lines(
                    ["refresh", "series", "refitted", "wall s", "cpu s (this process)"], table
                ):
                    print(line)
        finally:
            await backend.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--weeks", type=int, default=104)
    parser.add_argument("--granularity", default="WEEKLY", choices=[g.value for g in Granularity])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
