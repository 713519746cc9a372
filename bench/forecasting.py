"""Forecasting benchmark: what a dashboard's consumption-vs-forecast costs, against its baselines.

    .venv/bin/python bench/forecasting.py [--database postgresql] [--series 200] [--products 5]

(a) Models: `forecast_series` (model choice, statsforecast, clean-up) on N weekly series, half
    steady (Poisson) and half intermittent, against calling statsforecast's AutoETS / Croston
    directly on the same arrays (the library it stands on), and the cached repeat.
(b) Service: `ForecastingService.consumption_forecast` for products with 26 weeks of backdated
    dispensing written through the ledger (first call, other new series, unchanged data), against
    a raw SQL weekly GROUP BY of the same movements. (a) has already paid statsforecast's
    import (~2.5 s, once per process, in a worker thread).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Backend, load, prepared, table_lines
from server.forecasting.forecast import (
    INTERVAL_LEVEL,
    ForecastMethod,
    choose_method,
    forecast_series,
)
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest

WEEKS = 26
HORIZON = 8


def series(count: int, seed: int = 7) -> list[tuple[float, ...]]:
    """Half steady demand around 20 packs a week, half lumpy demand with many empty weeks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        if i % 2 == 0:
            values = rng.poisson(20, WEEKS)
        else:
            values = rng.poisson(6, WEEKS) * (rng.random(WEEKS) < 0.4)
        out.append(tuple(float(v) for v in values))
    return out


def bench_models(count: int) -> list[tuple[str, float, str]]:
    from statsforecast.models import AutoETS, CrostonOptimized

    data = series(count)
    forecast_series(data[0], HORIZON)  # pay the import and first-call costs outside the timing
    started = time.perf_counter()
    for values in data:
        y = np.asarray(values)
        if choose_method(values) is ForecastMethod.CROSTON_OPTIMIZED:
            CrostonOptimized().forecast(y=y, h=HORIZON)
        else:
            AutoETS(season_length=1).forecast(y=y, h=HORIZON, level=[INTERVAL_LEVEL])
    raw = (time.perf_counter() - started) / count
    forecast_series.cache_clear()
    started = time.perf_counter()
    for values in data:
        forecast_series(values, HORIZON)
    ours = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for values in data:
        forecast_series(values, HORIZON)
    cached = (time.perf_counter() - started) / count
    return [
        ("raw statsforecast per series", raw, "baseline"),
        ("forecast_series per series", ours, f"{ours / raw:.2f}x raw"),
        ("forecast_series, unchanged data", cached, f"{cached / raw:.4f}x raw"),
    ]


async def bench_service(backend: Backend, products: int) -> list[tuple[str, float, str]]:
    async with prepared(backend, "forecast", lot_count=products, opening_stock=100_000) as fx:
        rng = random.Random(11)
        now = datetime.now(UTC)
        requests = [
            MovementRequest(
                MovementKind.DISPENSE,
                fx.location_id,
                rng.randint(1, 4),
                lot_id=lot,
                patient_reference="ENC-BENCH",  # controlled drugs are dispensed only with one
                occurred_at=now - timedelta(days=day, hours=rng.randint(0, 20)),
            )
            for lot in fx.lot_ids
            for day in range(1, WEEKS * 7 + 1)
            for _ in range(rng.randint(0, 3))
        ]
        for start in range(0, len(requests), 200):
            await fx.services.ledger.record(
                fx.principal, requests[start : start + 200], operation="bench.history"
            )
        service = fx.services.forecasting
        forecast_series.cache_clear()

        async def once(product: int) -> float:
            started = time.perf_counter()
            await service.consumption_forecast(
                fx.principal, product_id=product, location_id=fx.location_id
            )
            return time.perf_counter() - started

        cold = await once(fx.product_ids[0])
        warm = [await once(p) for p in fx.product_ids[1:]]  # new series: models run
        cached = [await once(p) for p in fx.product_ids]  # unchanged data: cached model
        week = (
            "strftime('%Y-%m-%d', occurred_at, 'weekday 0', '-6 days')"
            if backend.name == "sqlite"
            else "date_trunc('week', occurred_at)"
        )
        raw_sql = text(
            f"SELECT {week} AS week, SUM(quantity) FROM movements "
            "WHERE location_id = :location AND lot_id = :lot AND kind = 'DISPENSE' "
            "AND occurred_at >= :since GROUP BY week ORDER BY week"
        )
        raw = []
        async with fx.services.db.read() as session:
            for lot in fx.lot_ids:
                started = time.perf_counter()
                await session.execute(
                    raw_sql,
                    {"location": fx.location_id, "lot": lot, "since": now - timedelta(weeks=WEEKS)},
                )
                raw.append(time.perf_counter() - started)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return [
        (f"raw SQL weekly GROUP BY ({len(requests)} dispenses)", mean(raw), "baseline"),
        ("consumptionForecast, first call", cold, f"{cold / mean(raw):.0f}x raw SQL"),
        ("consumptionForecast, new series", mean(warm), f"{mean(warm) / mean(raw):.1f}x raw SQL"),
        ("consumptionForecast, unchanged data", mean(cached), f"{mean(cached) / mean(raw):.1f}x"),
    ]


async def main_async(args: argparse.Namespace) -> None:
    before = load()
    rows = bench_models(args.series)
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            rows += await bench_service(backend, args.products)
        finally:
            await backend.drop_all()
    print(f"\nApotheca forecasting benchmark: {database}, {args.series} model series")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
        f" load average {before} before, {load()} after"
    )
    for line in table_lines(
        ["what", "ms", "against baseline"],
        [(what, f"{seconds * 1000:.2f}", note) for what, seconds, note in rows],
    ):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--series", type=int, default=200, help="series for the model timing")
    parser.add_argument("--products", type=int, default=5, help="products with history")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark databases on",
    )
    args = parser.parse_args()
    if args.series < 2 or args.products < 2:
        parser.error("--series and --products must be at least 2")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
