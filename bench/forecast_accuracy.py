"""Forecast accuracy of the engine's model choice against every single model, on a hold-out.

    PYTHONPATH=. .venv/bin/python bench/forecast_accuracy.py [--per-type 5] [--seed 11]
        [--sample K] [--kinds demo,real,generated] [--demo-seed S] [--wards W] [--origins 3]

A quick representative subset (every K-th demo product at all three granularities, every real
series, two generated series of each structure): --sample 10 --per-type 2.

Series
  demo       the demo network's products (server/demo.py's own demand generator and seed: weekly
             rhythm, winter and summer seasons, intermittent use), three years of daily demand
             per product and ward (the seeded database holds one), at daily (hold-out 28 days),
             weekly (13 weeks) and monthly (6 months) granularity.
  real       bundled inside installed packages, nothing downloaded: pmdarima (dev extra) wineind
             and airpassengers (monthly, season 12), woolyrnq, ausbeer and austres (quarterly,
             season 4), lynx (yearly, no season), taylor (half-hourly electricity, seasons 48
             and 336, last 6 weeks); statsmodels (installed with statsforecast) co2 (weekly,
             season 52, last 8 years, its few missing weeks interpolated) and elnino (monthly
             sea temperature, last 20 years).
  generated  --per-type seeded series of each known structure: smooth, seasonal, trending
             seasonal (monthly, 7 years), intermittent, lumpy, obsolescent (weekly, 3 years)
             and a daily weekday pattern (800 days, so MSTL's yearly season is allowed).

Protocol
  The last `h` periods of each series are the hold-out (h: a year of months, two years of
  quarters, a quarter of weeks, 4 weeks of days, 10 years, a day of half-hours). The engine sees
  only what comes before: it backtests and selects on its own rolling windows there, refits and
  forecasts the hold-out, which neither the selection nor the interval calibration saw. Every
  single model is refitted on the same history, whatever the class, so "best single model" is
  a model the user could have picked for all series.
  Rolling origins (Tashman 2000; Hyndman & Athanasopoulos's time series cross-validation): one
  hold-out is one draw, so the same is repeated at --origins K origins (default 3) whose
  hold-outs are the last h periods, the h before them, and so on (non-overlapping). At each
  origin the engine and every single model see only the history before it, exactly as above
  (one engine call per origin and batch), and the engine backtests and selects on its own
  windows inside that history. An origin whose history (from the first demand) is shorter than
  the engine needs to backtest (`Backtest.needs`: 20 periods at h = 6) is skipped, and each
  summary says how many were (the demo's 35 months keep 2). A series' rolling score
  for a model is its MASE averaged over its origins, each scaled on its own history; coverage
  counts every origin's points. The single last hold-out's summary is printed as it always
  was, the rolling-origin summary after it, and a side-by-side table closes the output.
  MASE and bias are scaled by seasonal naive's in-sample one-step MAE on the history seen
  (naive's without a full season), as inside the engine. Coverage: the share of hold-out
  actuals inside the chosen model's 80 % (95 %) interval, over all series and steps.

Beating seasonal naive
  The issue's criterion: the chosen model's hold-out MASE below seasonal naive's, printed as
  is. Three further lines say how much of a miss is the method's:
  - "where defined": a series whose seasonal naive hold-out error is 0 (no demand, forecast by
    the zeros a season before) is left out; the relative error MAE / MAE_snaive is x / 0
    there, undefined as MASE is with a zero scale (Hyndman & Koehler 2006), and no forecast
    can beat it.
  - "intermittent/lumpy by RMSSE": on the INTERMITTENT and LUMPY classes (the engine's class of the
    history, known before the hold-out) the engine forecasts the mean demand rate, which
    replenishment sums over lead time. The MAE is minimised by the median, zero on mostly-zero
    data, so it ranks any zero-ish forecast (seasonal naive's dead weeks) first (Kolassa 2016);
    the M5 competition scored such series by RMSSE, minimised by the mean. The comparison is
    repeated there by RMSE (the scale cancels), and "MASE, RMSSE where sporadic" counts by
    MASE on the other classes and by RMSSE on these.
  - "chance ceiling": on steady demand (a fixed pattern plus white noise) seasonal naive errs
    by e_t - e_(t-m), a perfect forecast by e_t. The share of series on which the perfect
    forecast still has the lower hold-out MAE, for white noise of each series' hold-out length
    (simulated, seeded), is 85 % at 6 steps, 94 % at 13 and 99 % at 28: no method is
    expected to beat seasonal naive on a larger share of steady series, whatever the model.
    Under rolling origins a series is scored on K·h points (its origins' hold-outs together),
    so the ceiling is simulated for K·h steps with the origins it actually used: 93 % at 12
    (the demo's 35 months keep 2 monthly origins), 99.6 % at 39 and 100 % at 84 steps: over
    several origins one unlucky hold-out no longer decides a series. By RMSSE over origins,
    each origin's RMSE is divided by its MASE scale before averaging (within one origin the
    scale cancels, as above); the class that picks RMSSE is the last origin's.
Nothing here is tuned to a series: the engine's defaults are used throughout.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.forecasting.classify import trim_leading_zeros
from server.forecasting.engine import (
    Backtest,
    SeriesForecast,
    forecast_values,
    make_model,
    mase_scale,
)
from server.forecasting.series import Seasonality

SINGLE_MODELS = (
    "Naive",
    "SeasonalNaive",
    "AutoETS",
    "AutoTheta",
    "CrostonSBA",
    "ADIDA",
    "IMAPA",
    "TSB",
)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "real" or "generated"
    values: np.ndarray
    seasonality: Seasonality
    horizon: int


MONTHLY = Seasonality(12, 12)
QUARTERLY = Seasonality(4, 4)
WEEKLY = Seasonality(52, 52)
DAILY = Seasonality(7, 365, (365,))
YEARLY = Seasonality(1, 1)
HALF_HOURLY = Seasonality(48, 48 * 365, (336,))


def real_cases() -> list[Case]:
    from pmdarima import datasets as pm
    from statsmodels.datasets import co2, elnino

    def arr(x) -> np.ndarray:
        return np.asarray(x, dtype=float)

    weekly_co2 = co2.load_pandas().data["co2"].interpolate().to_numpy()[-8 * 52 :]
    nino = elnino.load_pandas().data.drop(columns="YEAR").to_numpy(dtype=float).ravel()
    return [
        Case("wineind", "real", arr(pm.load_wineind()), MONTHLY, 12),
        Case("airpassengers", "real", arr(pm.load_airpassengers()), MONTHLY, 12),
        Case("woolyrnq", "real", arr(pm.load_woolyrnq()), QUARTERLY, 8),
        Case("ausbeer", "real", arr(pm.load_ausbeer())[:-1], QUARTERLY, 8),  # last is NaN
        Case("austres", "real", arr(pm.load_austres()), QUARTERLY, 8),
        Case("lynx", "real", arr(pm.load_lynx()), YEARLY, 10),
        Case("taylor", "real", arr(pm.load_taylor())[-6 * 336 :], HALF_HOURLY, 48),
        Case("co2", "real", arr(weekly_co2), WEEKLY, 13),
        Case("elnino", "real", nino[-240:], MONTHLY, 12),
    ]


DEMO_SEED = 20261123


def demo_cases(
    years: int = 3, wards: int = 3, sample: int = 1, seed: int = DEMO_SEED
) -> list[Case]:
    """The demo generator's demand for every demo product at `wards` wards, `years` long;
    `sample` > 1 keeps every sample-th product (the generator still runs for all, so the kept
    series are the same as in the full run). Another `seed` gives fresh draws of the same
    products: data no rule was looked at on."""
    import random
    from datetime import date, timedelta

    from server.catalog.demo_data import DEMO_PRODUCTS
    from server.demo import daily_demand
    from server.forecasting.series import Granularity, fill_periods

    rng = random.Random(seed)
    end = date(2026, 11, 30)
    days = [end - timedelta(days=i) for i in range(365 * years - 1, -1, -1)]
    demand = {
        (p.name, w): [(d, float(daily_demand(p, d, rng))) for d in days]
        for p in DEMO_PRODUCTS
        for w in range(wards)
    }
    kept = {p.name for p in DEMO_PRODUCTS[:: max(1, sample)]}
    cases = []
    for g, h in ((Granularity.DAILY, 28), (Granularity.WEEKLY, 13), (Granularity.MONTHLY, 6)):
        for (name, w), daily in demand.items():
            if name not in kept:
                continue
            whole = [  # periods entirely inside the generated days
                q
                for start, q in fill_periods(daily, g)
                if start >= days[0] and g.shift(start, 1) - timedelta(days=1) <= end
            ]
            label = f"{name[:12]} {w + 1} {g.value[0]}"
            cases.append(Case(label, "demo", np.array(whole), g.seasonality, h))
    return cases


def generated(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Seasonality, int]:
    """One seeded series of a known structure, its seasonality and hold-out length."""
    level = rng.uniform(20, 200)
    if kind in ("smooth", "seasonal", "trending seasonal"):
        n = 84
        t = np.arange(n)
        phase = rng.uniform(0, 2 * np.pi)
        season = (
            0.0 if kind == "smooth" else rng.uniform(0.2, 0.4) * np.sin(2 * np.pi * t / 12 + phase)
        )
        trend = rng.uniform(0.005, 0.015) * t if kind == "trending seasonal" else 0.0
        mean = np.broadcast_to(level * (1 + trend) * (1 + season), (n,))
        return rng.poisson(mean).astype(float), MONTHLY, 12
    if kind == "weekday pattern":
        n = 800
        t = np.arange(n)
        weekday = np.array([1.2, 1.1, 1.1, 1.0, 1.0, 0.4, 0.3])[t % 7]
        year = 1 + 0.2 * np.sin(2 * np.pi * t / 365.25 + rng.uniform(0, 2 * np.pi))
        return rng.poisson(level / 10 * weekday * year).astype(float), DAILY, 28
    n = 156
    if kind == "intermittent":  # rare, steady sizes: ADI ~ 3, CV2 small
        occurs = rng.random(n) < rng.uniform(0.2, 0.4)
        sizes = rng.poisson(rng.uniform(4, 12), n) + 1
    elif kind == "lumpy":  # rare, erratic sizes
        occurs = rng.random(n) < rng.uniform(0.15, 0.35)
        sizes = np.ceil(rng.lognormal(np.log(rng.uniform(3, 10)), 1.0, n))
    elif kind == "obsolescent":  # steady use that stops for good somewhere in the last 40 %
        stop = int(n * rng.uniform(0.6, 0.8))
        occurs = (rng.random(n) < rng.uniform(0.6, 1.0)) & (np.arange(n) < stop)
        sizes = rng.poisson(rng.uniform(3, 20), n) + 1
    else:
        raise ValueError(kind)
    return (occurs * sizes).astype(float), WEEKLY, 13


GENERATED_KINDS = (
    "smooth",
    "seasonal",
    "trending seasonal",
    "intermittent",
    "lumpy",
    "obsolescent",
    "weekday pattern",
)


def generated_cases(per_type: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for kind in GENERATED_KINDS:
        for i in range(per_type):
            values, seasonality, h = generated(kind, rng)
            cases.append(Case(f"{kind} {i + 1}", "generated", values, seasonality, h))
    return cases


def single_model_points(case: Case, history: np.ndarray) -> dict[str, np.ndarray]:
    """Every single model refitted on the history (trimmed as the engine trims it)."""
    import pandas as pd
    from statsforecast import StatsForecast

    y = trim_leading_zeros(history)
    m = case.seasonality.season_length
    names = [n for n in SINGLE_MODELS if n != "SeasonalNaive" or (m > 1 and len(y) > m)]
    models = [make_model(n, case.seasonality) for n in names]
    df = pd.DataFrame({"unique_id": 0, "ds": np.arange(len(y)), "y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fc = StatsForecast(models=models, freq=1, n_jobs=1).forecast(df=df, h=case.horizon)
    return {n: np.maximum(fc[n].to_numpy(dtype=float), 0.0) for n in names}


@dataclass
class Row:
    case: Case
    forecast: SeriesForecast
    mase: dict[str, float]  # single models and "chosen" on the hold-out
    bias: dict[str, float]
    # hold-out RMSE: raw on one hold-out (the RMSSE comparison: the scale cancels), divided by
    # the MASE scale and averaged when a row averages several origins (`over_origins`)
    rmse: dict[str, float]
    covered80: int
    covered95: int
    points: int
    seconds: float
    origins: int = 1  # hold-outs behind the figures (`over_origins`)
    scale: float = 1.0


def history_end(case: Case, origin: int) -> int:
    """Where origin `origin` cuts the series: origin 0 holds out the last h periods, origin 1
    the h before them, and so on (non-overlapping windows)."""
    return len(case.values) - (origin + 1) * case.horizon


def usable_origin(case: Case, origin: int) -> bool:
    """Whether the history before the origin is as long as the engine needs to backtest
    (`Backtest.needs`, counted from the first demand); origin 0 is the single hold-out, always
    evaluated as it always was."""
    end = history_end(case, origin)
    if origin == 0:
        return end > 0
    return end > 0 and len(trim_leading_zeros(case.values[:end])) >= Backtest().needs(case.horizon)


def evaluate_all(cases: list[Case], origins: int = 1) -> list[list[Row]]:
    """Per case, one row per usable origin (origin 0 first). One engine call per origin and
    batch of series sharing kind, seasonality and horizon, as the background job calls it with
    a location's series: the interval pools are the batch's."""
    batches: dict[tuple, list[Case]] = {}
    for c in cases:
        batches.setdefault((c.kind, c.seasonality, c.horizon), []).append(c)
    rows: dict[str, list[Row]] = {c.name: [] for c in cases}
    for origin in range(origins):
        for (_, seasonality, horizon), whole_batch in batches.items():
            batch = [c for c in whole_batch if usable_origin(c, origin)]
            if not batch:
                continue
            started = time.perf_counter()
            results = forecast_values(
                {c.name: c.values[: history_end(c, origin)] for c in batch},
                horizon,
                seasonality,
            )
            seconds = (time.perf_counter() - started) / len(batch)
            for c in batch:
                rows[c.name].append(evaluate(c, results[c.name], seconds, origin))
    return [rows[c.name] for c in cases]


def evaluate(case: Case, result: SeriesForecast, seconds: float, origin: int = 0) -> Row:
    end = history_end(case, origin)
    history, actual = case.values[:end], case.values[end : end + case.horizon]
    if not isinstance(result, SeriesForecast):
        raise SystemExit(f"{case.name} (origin {origin}): refused {result}")
    scale = mase_scale(trim_leading_zeros(history), case.seasonality.season_length)
    scale = scale if scale > 0 else 1.0
    points = single_model_points(case, history)
    points["chosen"] = np.asarray(result.points)
    mase = {n: float(np.abs(p - actual).mean() / scale) for n, p in points.items()}
    bias = {n: float((p - actual).mean() / scale) for n, p in points.items()}
    rmse = {n: float(np.sqrt(((p - actual) ** 2).mean())) for n, p in points.items()}
    low80, high80 = np.asarray(result.low_80), np.asarray(result.high_80)
    low95, high95 = np.asarray(result.low_95), np.asarray(result.high_95)
    eps = 1e-9
    return Row(
        case,
        result,
        mase,
        bias,
        rmse,
        int(((actual >= low80 - eps) & (actual <= high80 + eps)).sum()),
        int(((actual >= low95 - eps) & (actual <= high95 + eps)).sum()),
        case.horizon,
        seconds,
        scale=scale,
    )


def over_origins(rows: list[Row]) -> Row:
    """One series' rows at several origins as one: each model's MASE and bias averaged over
    the origins (each on its own origin's scale), RMSE divided by that scale and averaged (the
    RMSSE comparison), interval hits and points summed; the class and model shown are the
    latest origin's. Models missing at some origin (seasonal naive on a short history) are left
    out."""
    names = [n for n in rows[0].mase if all(n in r.mase for r in rows)]
    return Row(
        rows[0].case,
        rows[0].forecast,
        {n: float(np.mean([r.mase[n] for r in rows])) for n in names},
        {n: float(np.mean([r.bias[n] for r in rows])) for n in names},
        {n: float(np.mean([r.rmse[n] / r.scale for r in rows])) for n in names},
        sum(r.covered80 for r in rows),
        sum(r.covered95 for r in rows),
        sum(r.points for r in rows),
        sum(r.seconds for r in rows),
        origins=len(rows),
    )


def fmt(v: float | None) -> str:
    return "   -" if v is None else f"{v:5.2f}"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'series':<22}{'class':<13}{'chosen':<14}"
        + "".join(f"{n[:8]:>9}" for n in SINGLE_MODELS)
        + f"{'chosen':>9}{'bias':>7}{'cov80':>7}{'cov95':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        f = r.forecast
        label = f.model if f.season_length == 1 else f"{f.model}/{f.season_length}"
        cells = "".join(f"{fmt(r.mase.get(n)):>9}" for n in SINGLE_MODELS)
        print(
            f"{r.case.name:<22}{f.demand_class:<13}{label:<14}{cells}"
            f"{fmt(r.mase['chosen']):>9}{r.bias['chosen']:>7.2f}"
            f"{r.covered80 / r.points:>7.0%}{r.covered95 / r.points:>7.0%}"
        )


INTERMITTENT_CLASSES = ("INTERMITTENT", "LUMPY")


@functools.cache
def white_noise_ceiling(horizon: int, draws: int = 20_000) -> float:
    """The share of white-noise hold-outs of `horizon` steps on which the perfect forecast (the
    true mean, error e_t) has a lower MAE than seasonal naive (error e_t - e_(t-m)): the share
    of steady series no method is expected to exceed."""
    rng = np.random.default_rng(horizon)
    now, season_ago = rng.standard_normal((2, draws, horizon))
    return float(np.mean(np.abs(now).mean(axis=1) < np.abs(now - season_ago).mean(axis=1)))


def beats_snaive(r: Row, measure: str = "mase") -> bool:
    """The chosen model's hold-out error below seasonal naive's, by MASE or by RMSE."""
    errors = r.mase if measure == "mase" else r.rmse
    return errors["chosen"] < errors["SeasonalNaive"]


def share(k: int, n: int) -> str:
    return f"{k}/{n} ({k / max(n, 1):.0%})"


def summary(rows: list[Row], title: str) -> None:
    if not rows:
        return
    chosen = np.array([r.mase["chosen"] for r in rows])
    means = {
        n: float(np.mean([r.mase[n] for r in rows]))
        for n in SINGLE_MODELS
        if all(n in r.mase for r in rows)
    }
    best = min(means, key=means.get)
    with_snaive = [r for r in rows if "SeasonalNaive" in r.mase]
    beats = sum(beats_snaive(r) for r in with_snaive)
    defined = [r for r in with_snaive if r.mase["SeasonalNaive"] > 0]
    sporadic = [r for r in with_snaive if r.forecast.demand_class in INTERMITTENT_CLASSES]
    mixed = sum(
        beats_snaive(r, "rmse" if r.forecast.demand_class in INTERMITTENT_CLASSES else "mase")
        for r in with_snaive
    )
    ceiling = float(
        np.mean([white_noise_ceiling(r.case.horizon * r.origins) for r in with_snaive or rows])
    )
    ties_or_beats = sum(r.mase["chosen"] <= r.mase["SeasonalNaive"] + 1e-9 for r in with_snaive)
    c80 = sum(r.covered80 for r in rows) / sum(r.points for r in rows)
    c95 = sum(r.covered95 for r in rows) / sum(r.points for r in rows)
    print(f"\n{title} ({len(rows)} series)")
    print(
        f"  chosen model mean MASE          {chosen.mean():.3f}   (median {np.median(chosen):.3f})"
    )
    print(f"  best single model mean MASE     {means[best]:.3f}   ({best})")
    print(
        "  single models' mean MASE        "
        + ", ".join(f"{n} {v:.3f}" for n, v in sorted(means.items(), key=lambda kv: kv[1]))
    )
    print(
        f"  chosen beats seasonal naive     {beats}/{len(with_snaive)} "
        f"({beats / max(len(with_snaive), 1):.0%}); beats or ties {ties_or_beats}/"
        f"{len(with_snaive)} ({ties_or_beats / max(len(with_snaive), 1):.0%})"
    )
    defined_beats = sum(beats_snaive(r) for r in defined)
    print(
        f"    where defined                 {share(defined_beats, len(defined))}"
        f"   ({len(with_snaive) - len(defined)} with seasonal naive's hold-out error 0)"
    )
    if sporadic:
        print(
            f"    intermittent/lumpy by RMSSE   "
            f"{share(sum(beats_snaive(r, 'rmse') for r in sporadic), len(sporadic))}"
            f"   (by MASE {share(sum(beats_snaive(r) for r in sporadic), len(sporadic))})"
        )
        print(f"    MASE, RMSSE where sporadic    {share(mixed, len(with_snaive))}")
    print(f"    chance ceiling (white noise)  {ceiling:.0%}")
    print(f"  chosen mean bias (scaled)       {np.mean([r.bias['chosen'] for r in rows]):+.3f}")
    print(f"  80 % interval coverage          {c80:.1%}      95 %: {c95:.1%}")
    # every series weighs the same here (above, a long hold-out such as taylor's 48 half-hours
    # weighs as much as six monthly series)
    s80 = float(np.mean([r.covered80 / r.points for r in rows]))
    s95 = float(np.mean([r.covered95 / r.points for r in rows]))
    print(f"  per-series mean coverage        {s80:.1%}      95 %: {s95:.1%}")


def headline(rows: list[Row]) -> tuple[str, str, str]:
    """Beats seasonal naive, chosen vs best single mean MASE, 80/95 % coverage."""
    with_snaive = [r for r in rows if "SeasonalNaive" in r.mase]
    beats = sum(beats_snaive(r) for r in with_snaive)
    means = {
        n: float(np.mean([r.mase[n] for r in rows]))
        for n in SINGLE_MODELS
        if all(n in r.mase for r in rows)
    }
    best = min(means, key=means.get)
    chosen = float(np.mean([r.mase["chosen"] for r in rows]))
    points = sum(r.points for r in rows)
    c80 = sum(r.covered80 for r in rows) / points
    c95 = sum(r.covered95 for r in rows) / points
    return (
        share(beats, len(with_snaive)),
        f"{chosen:.3f} vs {means[best]:.3f} {best}",
        f"{c80:.1%} / {c95:.1%}",
    )


def side_by_side(side: list[tuple[str, list[Row], list[Row]]], origins: int) -> None:
    """The single last hold-out and the rolling origins, a line per group."""
    print(f"\nSingle last hold-out | rolling origins (up to {origins} per series)")
    head = (
        f"{'':<32}{'beats SN':>14}{'chosen vs best single':>32}{'cov 80/95':>16}"
        f"  |{'beats SN':>14}{'chosen vs best single':>32}{'cov 80/95':>16}"
    )
    print(head)
    print("-" * len(head))
    for title, single, rolling in side:
        a, b = headline(single), headline(rolling)
        print(f"{title:<32}{a[0]:>14}{a[1]:>32}{a[2]:>16}  |{b[0]:>14}{b[1]:>32}{b[2]:>16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-type", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--wards", type=int, default=1, help="demo series per product")
    parser.add_argument("--demo-seed", type=int, default=DEMO_SEED, help="demo generator seed")
    parser.add_argument("--sample", type=int, default=1, help="every K-th demo product")
    parser.add_argument(
        "--origins", type=int, default=3, help="rolling origins per series (1: single hold-out)"
    )
    parser.add_argument(
        "--kinds", default="demo,real,generated", help="comma-separated series kinds to run"
    )
    args = parser.parse_args()
    kinds = set(args.kinds.split(","))
    started = time.perf_counter()
    cases = (
        (
            demo_cases(wards=args.wards, sample=args.sample, seed=args.demo_seed)
            if "demo" in kinds
            else []
        )
        + (real_cases() if "real" in kinds else [])
        + (generated_cases(args.per_type, args.seed) if "generated" in kinds else [])
    )
    per_origin = evaluate_all(cases, args.origins)
    rows = [r[0] for r in per_origin]  # origin 0: the single last hold-out
    rolled = [over_origins(r) for r in per_origin]
    print_table(rows)
    if args.origins > 1:
        print(
            f"\nRolling origins: per-series MASE, bias and coverage over up to {args.origins} "
            "hold-outs (model and class: the last one's)\n"
        )
        print_table(rolled)
    groups = [
        (f"Demo series, {label}", lambda c, L=letter: c.kind == "demo" and c.name.endswith(L))
        for letter, label in ((" D", "daily"), (" W", "weekly"), (" M", "monthly"))
    ]
    groups += [
        ("Demo series, all granularities", lambda c: c.kind == "demo"),
        ("Real series", lambda c: c.kind == "real"),
        ("Generated series", lambda c: c.kind == "generated"),
        ("All series", lambda c: True),
    ]
    side: list[tuple[str, list[Row], list[Row]]] = []
    for title, member in groups:
        single = [r for r in rows if member(r.case)]
        summary(single, title)
        if args.origins > 1 and single:
            rolling = [r for r in rolled if member(r.case)]
            used = sum(r.origins for r in rolling)
            skipped = args.origins * len(rolling) - used
            summary(
                rolling,
                f"{title}, rolling origins: {used} hold-outs, {skipped} of "
                f"{args.origins * len(rolling)} skipped (history under the engine's minimum)",
            )
            side.append((title, single, rolling))
    if side:
        side_by_side(side, args.origins)
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{time.perf_counter() - started:.1f} s in all, {os.cpu_count()} cores, load {load}")


if __name__ == "__main__":
    main()
