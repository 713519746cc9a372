"""Forecast many demand series at once: classify, backtest candidates, pick, calibrate. No I/O.

Entry points
------------
- `forecast_many(series, granularity, horizon)`: series of `(period_start, quantity)` pairs per
  key, at DAILY / WEEKLY / MONTHLY granularity; the background job calls this.
- `forecast_values(series, horizon, seasonality)`: the same on contiguous arrays with any
  `Seasonality` (quarterly data: season 4); `forecast_many` is a thin wrapper over it.

Both return, per key, a `SeriesForecast` or a `Refused` (typed reason); one bad series never
stops the others. Invalid arguments (horizon < 1, bad backtest settings) raise `ValueError`.

How a series is forecast
------------------------
1. Clean (see `series.clean_quantities`), drop zeros before the first demand, classify
   (`classify.classify`: SMOOTH, ERRATIC, INTERMITTENT, LUMPY, OBSOLETE, INSUFFICIENT,
   NO_DEMAND).
2. Candidates by class and by how much history the shortest backtest training set holds:
   - SMOOTH / ERRATIC: Naive (a baseline, never chosen: AutoETS nests it), SeasonalNaive
     (training longer than a season), AutoETS and
     AutoTheta (given the main season; statsforecast drops it where the history is too short),
     MSTL on every season where training holds two of the longest, when there are two or more
     seasons (daily data: 7 and 365 from two years on) or the one season is longer than ETS
     fits (weekly data: 52; STL takes the season and ETS the adjusted series, the textbook
     remedy for weekly data, which Theta's classical decomposition and seasonal naive alone
     leave to a noisy test and a single draw), and Ensemble, the median of AutoETS, AutoTheta
     and SeasonalNaive (the mean of the first two without a full season);
   - INTERMITTENT / LUMPY: CrostonSBA, ADIDA, IMAPA, TSB and their mean (Ensemble), with Naive
     and SeasonalNaive backtested as baselines but never chosen (see `CHOICE`). These classes
     do not get ETS/Theta: on mostly-zero data they chase the last lump;
   - OBSOLETE: a zero forecast. TSB would decay towards zero but never reach it, and each period
     it still forecasts a fraction the replenishment would order for; a product whose demand
     stopped should not be reordered until it sells again (which reclassifies it). The
     baselines are still backtested so the result reports what they would have scored;
   - too short for the backtest (`Backtest.needs`), INSUFFICIENT: the mean of the history (no
     backtest, so no MASE); NO_DEMAND: zero.
   TSB uses fixed alpha_d = alpha_p = 0.1: the classic Croston constant (CrostonSBA's own), so
   TSB differs from it only by updating the demand probability every period, which is what
   lets it follow a dying product; 0.1 halves that probability after about 7 quiet periods
   without over-reacting to one empty period. AutoETS searches additive-error models only
   ("AZZ", damped trends included): intervals come from the backtest, not from the ETS error
   distribution, and the point forecasts of A and M error models barely differ; it halves the
   fits. statsforecast's ETS fits no season longer than 24 (weekly data), and searching one
   costs ten times more, so there AutoETS is non-seasonal ("AZN") and AutoTheta, MSTL and
   SeasonalNaive carry the yearly season.
3. Rolling-origin backtest: up to `n_windows` (6) origins `step_size` apart, each forecasting
   `horizon` periods, as many as the history allows without losing a seasonal candidate and at
   least `min_windows` (3), in ONE `StatsForecast.cross_validation` call per window count over
   every backtested series with every model (never a loop of per-series fits); each series then
   reads only its candidates' columns. Six windows rather than three: a choice made on three is
   mostly noise, and the intervals get twice the residuals; but extra windows stop where the
   shortest training set would fall below 3/4 of the one three windows leave (`keep_train`),
   so models are not judged on fits much shorter than the final one. A model failing on a
   series (MSTL on a short one) falls back to naive there, and is not among that series'
   candidates anyway.
   Short seasonal history: a smooth series whose history holds a full season, but whose
   training set under `min_windows` windows does not, gets fewer windows (down to
   `SHORT_SEASON_WINDOWS`, 2) so that seasonal naive is backtested. With one or two seasons
   seasonal naive (and the combinations including it) is the only candidate that can carry
   the season: ETS and Theta need two seasons to estimate one (Hyndman & Athanasopoulos), and
   a choice among level models alone forecasts a flat line through a winter peak (demo
   Amoxicillin, 23 months: MASE 4.1 against seasonal naive's 1.2). Two windows cannot rank
   close models, and step 4 does not ask them to: a lead over seasonal naive within noise
   gives the combination weighted by the backtest (WeightedEnsemble), and only a lead beyond
   noise keeps a model without the season.
4. Winner by MASE over all windows and steps, scaled by seasonal naive's in-sample one-step MAE
   on the history (naive's when the history holds no full season, or seasonal naive's is 0).
   Ties go to the simpler model. When the winner's lead over the family's Ensemble is within
   noise (`within_noise`: less than one standard error of the per-window differences) the
   Ensemble is chosen instead, provided it beats seasonal naive in the backtest. When seasonal
   naive itself wins (smooth demand), or the winner's lead over it is within noise, the choice
   is WeightedEnsemble: the Ensemble's members weighted by inverse squared backtest MAE
   (`ensemble_weights`), which follows seasonal naive as far as the backtest supports without
   staking the forecast on one draw. Bias is the
   mean error (forecast - actual) on the same scale: positive means over-forecasting. Seasonal
   naive (naive without a full season) is reported on the same windows as the baseline.
5. Refit each winner on the whole history: one `StatsForecast.forecast` call per chosen model
   (an Ensemble's members), over every series that chose it.
6. Intervals at 80 % and 95 % (`conformal`): backtest errors of the chosen model, normalised by
   the series' own recency-weighted mean absolute error and pooled per class and horizon step,
   with the stored errors of series an incremental refresh did not refit (`prior_errors`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import TypeVar, cast

import numpy as np

from server.forecasting import conformal
from server.forecasting.classify import Classification, DemandClass, classify, trim_leading_zeros
from server.forecasting.series import (
    Granularity,
    InvalidSeries,
    RefusalReason,
    Seasonality,
    clean_quantities,
    to_values,
)

K = TypeVar("K", bound=Hashable)

TSB_ALPHA_D = 0.1
TSB_ALPHA_P = 0.1
AUTO_ETS_MODEL = "AZZ"
AUTO_ETS_NONSEASONAL = "AZN"
MAX_ETS_SEASON = 24  # statsforecast's ETS fits no longer season
SHORT_SEASON_WINDOWS = 2  # windows a series may drop to so that seasonal naive is backtested
PARALLEL_FROM = 200  # fewer series than this: one process (starting workers costs more)
ALL_MODELS = (
    "Naive",
    "SeasonalNaive",
    "AutoETS",
    "AutoTheta",
    "MSTL",
    "CrostonSBA",
    "ADIDA",
    "IMAPA",
    "TSB",
)

SMOOTH_CANDIDATES = ("Naive", "SeasonalNaive", "AutoETS", "AutoTheta", "MSTL")
INTERMITTENT_CANDIDATES = ("Naive", "SeasonalNaive", "CrostonSBA", "ADIDA", "IMAPA", "TSB")
# INTERMITTENT / LUMPY: naive and seasonal naive are backtested as baselines but not chosen;
# the last value (or the one a season ago) of a sporadic series is a single draw, a lump or a
# zero, and MASE rewards a zero on mostly-zero data, so a short backtest picks them by luck.
# SMOOTH / ERRATIC: naive is a baseline only. AutoETS nests it (simple exponential smoothing
# with alpha near 1), so naive wins a backtest only by the noise of a few windows.
CHOICE = {
    "smooth": frozenset(SMOOTH_CANDIDATES) - {"Naive"} | {"Ensemble"},
    "intermittent": frozenset(INTERMITTENT_CANDIDATES) - {"Naive", "SeasonalNaive"} | {"Ensemble"},
}
# ties go to the first of these
SIMPLICITY = (
    "Zero",
    "Naive",
    "SeasonalNaive",
    "CrostonSBA",
    "TSB",
    "ADIDA",
    "IMAPA",
    "AutoETS",
    "AutoTheta",
    "MSTL",
    "Ensemble",
    "WeightedEnsemble",
    "HistoricAverage",
)
# The combination of these models' forecasts is one more candidate of each family: combining
# models that err differently cancels part of their errors and makes the choice less of a
# gamble on a short backtest (the M3/M4 competitions' lesson). Its backtest comes free from the
# same cross-validation; only a series that chooses it refits its members. Smooth demand takes
# the median of AutoETS, AutoTheta and seasonal naive (where the history holds a full season):
# the median drops whichever of the three went astray (a season missed by ETS, a trend Theta
# over-extends), which a mean of two cannot; without seasonal naive it is the mean of the two.
# Intermittent demand takes the mean of its four models, which all forecast a level.
ENSEMBLES = {
    "smooth": ("AutoETS", "AutoTheta", "SeasonalNaive"),
    "intermittent": ("CrostonSBA", "ADIDA", "IMAPA", "TSB"),
}


class ModelName(StrEnum):
    """Every model the engine may choose (`SeriesForecast.model`)."""

    ZERO = "Zero"
    NAIVE = "Naive"
    SEASONAL_NAIVE = "SeasonalNaive"
    CROSTON_SBA = "CrostonSBA"
    TSB = "TSB"
    ADIDA = "ADIDA"
    IMAPA = "IMAPA"
    AUTO_ETS = "AutoETS"
    AUTO_THETA = "AutoTheta"
    MSTL = "MSTL"
    ENSEMBLE = "Ensemble"
    WEIGHTED_ENSEMBLE = "WeightedEnsemble"
    HISTORIC_AVERAGE = "HistoricAverage"


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin settings. `step_size` None: half the horizon (at least 1).

    A series gets as many windows as its history allows, up to `n_windows`, and at least
    `min_windows` (fewer: it is not backtested; a smooth series that keeps a full season in
    training only with fewer windows, down to `SHORT_SEASON_WINDOWS`, takes those). The
    seasonal candidates a series may use are decided on the training set `min_windows` leaves,
    and extra windows are only added while the shortest training set still holds what those
    candidates need, so more windows never cost a series its seasonal models."""

    n_windows: int = 6
    step_size: int | None = None
    min_train: int = 8  # the shortest training set a window may have
    min_windows: int = 3
    # extra windows keep at least this share of the training set the fewest windows leave: a
    # window trained on much less history than the final fit judges models (trends, seasons)
    # by fits the final one will not make
    keep_train: float = 0.75

    def needs(self, horizon: int) -> int:
        """Periods of history (from the first demand) a series needs to be backtested."""
        return horizon + (self.fewest - 1) * self.step(horizon) + self.min_train

    @property
    def fewest(self) -> int:
        return max(1, min(self.min_windows, self.n_windows))

    def step(self, horizon: int) -> int:
        return self.step_size if self.step_size is not None else max(1, math.ceil(horizon / 2))


@dataclass(frozen=True)
class Score:
    """A model's backtest on one series: MASE and bias (None when the scale is 0), raw MAE."""

    mase: float | None
    bias: float | None
    mae: float


@dataclass(frozen=True)
class SeriesForecast:
    points: tuple[float, ...]  # one per horizon step, never negative
    low_80: tuple[float, ...]
    high_80: tuple[float, ...]
    low_95: tuple[float, ...]
    high_95: tuple[float, ...]
    model: str  # chosen model: a key of SIMPLICITY
    season_length: int  # the season the chosen model used (1: none)
    mase: float | None  # chosen model's backtest MASE (None: not backtested or scale 0)
    bias: float | None
    baseline_model: str | None  # SeasonalNaive, or Naive without a full season
    baseline_mase: float | None
    baseline_bias: float | None
    demand_class: DemandClass
    adi: float | None
    cv2: float | None
    history_length: int  # periods from the first demand to the end of the history
    backtest_windows: int
    interval_source: conformal.IntervalSource
    candidates: Mapping[str, Score] = field(default_factory=dict)  # every backtested model
    candidate_points: Mapping[str, tuple[float, ...]] | None = None  # keep_candidates=True
    errors: tuple[tuple[float, ...], ...] = ()  # chosen model's backtest errors (window, step)
    periods: tuple[date, ...] = ()  # forecast_many: the period starts of the points


@dataclass(frozen=True)
class StoredForecast:
    """A stored forecast as other domains read it (replenishment): the contract between them.

    `points[i]` is the demand forecast for the i-th period after the last complete one (so
    points[0] is the current period); `lower`/`upper` bound it at `level` % (conformal,
    calibrated on backtest errors, never negative, lower <= point <= upper)."""

    points: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    level: int
    model: str
    demand_class: str
    mase: float | None
    computed_at: datetime
    granularity: Granularity


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason
    detail: str


@dataclass
class _Plan:
    key: Hashable
    y: np.ndarray  # history from the first demand
    classification: Classification
    family: str  # "smooth", "intermittent", "obsolete", "none"
    windows: int = 0
    main_season: int = 1  # the seasonality's main season (SeasonalNaive's)
    season: int = 1  # season of AutoETS/AutoTheta: the main one once training holds two
    snaive: bool = False
    mstl: tuple[int, ...] = ()
    scale: float = 0.0
    errors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (windows, h)
    weights: tuple[float, ...] = ()  # WeightedEnsemble's, one per member (`_members`)
    chosen: str = "Zero"


def forecast_many(
    series: Mapping[K, Sequence[tuple[date, float]]],
    granularity: Granularity,
    horizon: int,
    *,
    last_period: date | None = None,
    backtest: Backtest | None = None,
    keep_candidates: bool = False,
    prior_errors: Mapping[Hashable, tuple[Hashable, np.ndarray]] | None = None,
    jobs: int = 1,
) -> dict[K, SeriesForecast | Refused]:
    """Forecast `horizon` periods after `last_period` for every series.

    `series[key]` holds `(period_start, quantity)` pairs (any order, gaps allowed, each date the
    start of its period); every series is zero-filled up to `last_period` (default: the latest
    period in any series), so a product that stopped moving shows its silence. Returns, per
    key, a `SeriesForecast` with `periods` set, or a `Refused`.
    """
    granularity = Granularity(granularity)
    if last_period is None:
        starts = [d for points in series.values() for d, _ in points]
        if not starts:
            return {key: Refused(RefusalReason.EMPTY, "no periods") for key in series}
        last_period = granularity.period_start(max(starts))
    values: dict[K, np.ndarray] = {}
    refused: dict[K, Refused] = {}
    for key, points in series.items():
        try:
            values[key] = to_values(points, granularity, last_period)
        except InvalidSeries as e:
            refused[key] = Refused(e.reason, e.detail)
    result = forecast_values(
        values,
        horizon,
        granularity.seasonality,
        backtest=backtest,
        keep_candidates=keep_candidates,
        prior_errors=prior_errors,
        jobs=jobs,
    )
    periods = tuple(granularity.shift(last_period, i + 1) for i in range(horizon))
    out: dict[K, SeriesForecast | Refused] = {}
    for key in series:
        r = refused.get(key) or result[key]
        out[key] = replace(r, periods=periods) if isinstance(r, SeriesForecast) else r
    return out


def forecast_values(
    series: Mapping[K, Sequence[float] | np.ndarray],
    horizon: int,
    seasonality: Seasonality,
    *,
    backtest: Backtest | None = None,
    keep_candidates: bool = False,
    prior_errors: Mapping[Hashable, tuple[Hashable, np.ndarray]] | None = None,
    jobs: int = 1,
) -> dict[K, SeriesForecast | Refused]:
    """Forecast the `horizon` periods after each contiguous array (oldest first).

    `keep_candidates=True` also refits every candidate on the whole history and returns their
    points in `candidate_points` (for benchmarks; it costs one fit per candidate).
    `jobs`: processes statsforecast may use (only for large batches).
    `prior_errors` (key -> (demand class, chosen model's backtest errors)) adds the stored
    errors of series not refitted now to the interval calibration, so an incremental refresh
    of a few series calibrates on the whole population.
    """
    backtest = backtest or Backtest()
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError("horizon must be a positive integer")
    if (
        backtest.n_windows < 1
        or backtest.min_windows < 1
        or backtest.step(horizon) < 1
        or backtest.min_train < 2
    ):
        raise ValueError("backtest needs at least one window, a step of 1 and 2 training points")
    step = backtest.step(horizon)

    plans: list[_Plan] = []
    out: dict[K, SeriesForecast | Refused] = {}
    for key, raw in series.items():
        try:
            y = clean_quantities(raw)
        except InvalidSeries as e:
            out[key] = Refused(e.reason, e.detail)
            continue
        c = classify(y, seasonality.periods_per_year)
        plans.append(_plan(key, trim_leading_zeros(y), c, horizon, step, backtest, seasonality))

    by_windows: dict[int, list[_Plan]] = {}
    for p in plans:
        if p.windows:
            by_windows.setdefault(p.windows, []).append(p)
    for windows, group in sorted(by_windows.items()):
        _run_backtests(group, horizon, step, windows, seasonality, jobs)
    for p in plans:
        p.chosen = _choose(p)

    pooled: dict[Hashable, tuple[Hashable, np.ndarray]] = {
        ("prior", k): (g, np.asarray(e, dtype=float))
        for k, (g, e) in (prior_errors or {}).items()
        if k not in series
    }
    pooled.update(
        {
            i: (p.classification.demand_class, p.errors[p.chosen])
            for i, p in enumerate(plans)
            if p.windows and p.chosen in p.errors
        }
    )
    calibration = conformal.calibrate(pooled, horizon)
    points = _final_points(plans, horizon, seasonality, keep_candidates, jobs)
    for i, p in enumerate(plans):
        out[cast(K, p.key)] = _result(p, points[i], calibration, keep_candidates)
    return {key: out[key] for key in series}


def _plan(
    key: Hashable,
    y: np.ndarray,
    c: Classification,
    horizon: int,
    step: int,
    backtest: Backtest,
    seasonality: Seasonality,
) -> _Plan:
    family = {
        DemandClass.SMOOTH: "smooth",
        DemandClass.ERRATIC: "smooth",
        DemandClass.INTERMITTENT: "intermittent",
        DemandClass.LUMPY: "intermittent",
        DemandClass.OBSOLETE: "obsolete",
    }.get(c.demand_class, "none")
    m = seasonality.season_length
    p = _Plan(key, y, c, family, main_season=m)
    p.scale = mase_scale(y, m)
    train = len(y) - horizon - (backtest.fewest - 1) * step  # the shortest training set
    if family == "none" or train < backtest.min_train:
        return p
    p.snaive = m > 1 and train > m
    p.season = m if m > 1 and train >= 2 * m else 1
    if family == "smooth" and m > 1 and not p.snaive:
        # The history holds a full season but the fewest windows leave none before the
        # backtest: fewer windows (at least SHORT_SEASON_WINDOWS) keep seasonal naive, the one
        # candidate that carries a season learnt from a single one, so the choice can anchor on
        # it (step 4). Without it, the choice is among level models that miss the season.
        fewer = 1 + (len(y) - horizon - (m + 1)) // step
        if fewer >= SHORT_SEASON_WINDOWS:
            p.snaive = True
            p.windows = min(backtest.n_windows, fewer)
            return p
    seasons = _seasons(seasonality)
    if seasons and train >= 2 * max(seasons) and (len(seasons) >= 2 or m > MAX_ETS_SEASON):
        p.mstl = seasons
    needed = max(
        backtest.min_train,
        m + 1 if p.snaive else 0,
        2 * m if p.season > 1 else 0,
        2 * max(p.mstl) if p.mstl else 0,
        math.ceil(backtest.keep_train * train),
    )
    p.windows = min(backtest.n_windows, 1 + (len(y) - horizon - needed) // step)
    return p


def _seasons(seasonality: Seasonality) -> tuple[int, ...]:
    m = seasonality.season_length
    return (m, *seasonality.extra_seasons) if m > 1 else seasonality.extra_seasons


def mase_scale(y: np.ndarray, m: int) -> float:
    """Seasonal naive's in-sample one-step MAE; naive's without a full season or when 0."""
    if m > 1 and y.size > m:
        s = float(np.abs(y[m:] - y[:-m]).mean())
        if s > 0:
            return s
    return float(np.abs(np.diff(y)).mean()) if y.size > 1 else 0.0


def _candidates(p: _Plan) -> tuple[str, ...]:
    """The models this series' backtest may choose from (its class, its history)."""
    names = {
        "smooth": SMOOTH_CANDIDATES,
        "intermittent": INTERMITTENT_CANDIDATES,
        "obsolete": ("Naive", "SeasonalNaive"),
    }[p.family]
    return tuple(n for n in names if (n != "SeasonalNaive" or p.snaive) and (n != "MSTL" or p.mstl))


def make_model(name: str, seasonality: Seasonality) -> object:
    """The statsforecast model behind a candidate name, as the engine configures it for one
    seasonality. Seasonal models get the main season; statsforecast itself drops it where the
    history is too short (ETS: not longer than a season; Theta: under two seasons)."""
    from statsforecast import models as sm

    m = seasonality.season_length
    if name == "Naive":
        return sm.Naive()
    if name == "SeasonalNaive":
        return sm.SeasonalNaive(season_length=m)
    if name == "AutoETS":
        # statsforecast's ETS fits no season above 24 (weekly data) and searching one anyway
        # costs ten times more: there the yearly season is Theta's, seasonal naive's and MSTL's.
        if 1 < m <= MAX_ETS_SEASON:
            return sm.AutoETS(season_length=m, model=AUTO_ETS_MODEL)
        return sm.AutoETS(season_length=1, model=AUTO_ETS_NONSEASONAL)
    if name == "AutoTheta":
        return sm.AutoTheta(season_length=m)
    if name == "MSTL":
        return sm.MSTL(
            season_length=list(_seasons(seasonality)),
            trend_forecaster=sm.AutoETS(model=AUTO_ETS_NONSEASONAL),
        )
    if name == "CrostonSBA":
        return sm.CrostonSBA()
    if name == "ADIDA":
        return sm.ADIDA()
    if name == "IMAPA":
        return sm.IMAPA()
    if name == "TSB":
        return sm.TSB(alpha_d=TSB_ALPHA_D, alpha_p=TSB_ALPHA_P)
    raise ValueError(f"unknown model {name}")


def _season_of(name: str, p: _Plan) -> int:
    if name == "SeasonalNaive":
        return p.main_season
    if name == "AutoETS":
        return p.season if p.season <= MAX_ETS_SEASON else 1
    if name == "AutoTheta" or (name in ("Ensemble", "WeightedEnsemble") and p.family == "smooth"):
        return p.season
    if name == "MSTL":
        return p.mstl[0]
    return 1


def _frame(ys: Sequence[np.ndarray]):
    import pandas as pd

    lengths = [len(y) for y in ys]
    return pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(len(ys)), lengths),
            "ds": np.concatenate([np.arange(n) for n in lengths]),
            "y": np.concatenate(ys),
        }
    )


def _run_backtests(
    plans: list[_Plan],
    horizon: int,
    step: int,
    windows: int,
    seasonality: Seasonality,
    jobs: int = 1,
) -> None:
    """ONE cross_validation call over every backtested series with every model: candidates
    differ per series (class, history), so each series later chooses among its own columns.
    A model that fails on a series (MSTL on a short one) falls back to naive there; such a
    model is never among that series' candidates."""
    from statsforecast import StatsForecast
    from statsforecast import models as sm

    if not plans:
        return
    names = [
        n
        for n in ALL_MODELS
        if (n != "SeasonalNaive" or seasonality.season_length > 1)
        and (n != "MSTL" or any(p.mstl for p in plans))
    ]
    sf = StatsForecast(
        models=[make_model(n, seasonality) for n in names],
        freq=1,
        n_jobs=jobs if len(plans) >= PARALLEL_FROM else 1,
        fallback_model=sm.Naive(),
    )
    with warnings.catch_warnings():  # statsmodels' ACF divides by 0 on a flat series
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # a season longer than a short history
        cv = sf.cross_validation(
            df=_frame([q.y for q in plans]), h=horizon, n_windows=windows, step_size=step
        )
    cv = cv.sort_values(["unique_id", "cutoff", "ds"], kind="stable")
    shape = (len(plans), windows, horizon)
    actual = cv["y"].to_numpy(dtype=float).reshape(shape)
    predicted = {n: cv[n].to_numpy(dtype=float).reshape(shape) for n in names}
    for i, q in enumerate(plans):
        for n in _candidates(q):
            q.errors[n] = np.maximum(predicted[n][i], 0.0) - actual[i]
        if q.family in ENSEMBLES:
            members = _members(q)
            combined = combine(q.family, [np.maximum(predicted[n][i], 0.0) for n in members])
            q.errors["Ensemble"] = combined - actual[i]
            if q.family == "smooth" and q.snaive:
                weights = ensemble_weights([q.errors[n] for n in members])
                q.weights = tuple(float(w) for w in weights)
                q.errors["WeightedEnsemble"] = np.tensordot(
                    weights, [q.errors[n] for n in members], axes=1
                )
        if q.family == "obsolete":
            q.errors["Zero"] = -actual[i]


def _members(p: _Plan) -> tuple[str, ...]:
    """The Ensemble's members for this series (seasonal naive only with a full season)."""
    return tuple(n for n in ENSEMBLES[p.family] if n != "SeasonalNaive" or p.snaive)


def combine(family: str, forecasts: Sequence[np.ndarray]) -> np.ndarray:
    """The Ensemble's forecast from its members' (non-negative) forecasts: the median for
    smooth demand (the mean of two when there are two), the mean for intermittent demand."""
    stacked = np.asarray(forecasts, dtype=float)
    return np.median(stacked, axis=0) if family == "smooth" else stacked.mean(axis=0)


def ensemble_weights(member_errors: Sequence[np.ndarray]) -> np.ndarray:
    """Weights of a combination: inverse squared backtest MAE, normalised (Bates-Granger's
    inverse error variance, on the MAE the selection uses). A member the backtest shows far
    better takes nearly all the weight; close members share it."""
    maes = np.array([float(np.abs(e).mean()) for e in member_errors])
    inverse = 1.0 / np.maximum(maes, 1e-12 * max(float(maes.max()), 1.0)) ** 2
    return inverse / inverse.sum()


def _final_points(
    plans: list[_Plan],
    horizon: int,
    seasonality: Seasonality,
    keep_candidates: bool,
    jobs: int = 1,
) -> list[dict[str, np.ndarray]]:
    """Refit on the whole history: each series with its winner (or, for benchmarks, with every
    candidate); one forecast call per chosen model, over all series that chose it."""
    from statsforecast import StatsForecast
    from statsforecast import models as sm

    out: list[dict[str, np.ndarray]] = [{} for _ in plans]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(plans):
        if p.chosen == "Zero":
            out[i]["Zero"] = np.zeros(horizon)
        elif p.chosen == "HistoricAverage":
            out[i]["HistoricAverage"] = np.full(horizon, float(p.y.mean()) if p.y.size else 0.0)
        names = set(_candidates(p)) if keep_candidates and p.windows else set()
        if p.chosen in ("Ensemble", "WeightedEnsemble") or (
            keep_candidates and "Ensemble" in p.errors
        ):
            names.update(_members(p))
        elif p.chosen not in ("Zero", "HistoricAverage"):
            names.add(p.chosen)
        for n in names:
            groups.setdefault(n, []).append(i)
    for name, members in groups.items():
        sf = StatsForecast(
            models=[make_model(name, seasonality)],
            freq=1,
            n_jobs=jobs if len(members) >= PARALLEL_FROM else 1,
            fallback_model=sm.Naive(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)  # a season longer than a history
            fc = sf.forecast(df=_frame([plans[i].y for i in members]), h=horizon)
        fc = fc.sort_values(["unique_id", "ds"], kind="stable")
        values = np.maximum(fc[name].to_numpy(dtype=float).reshape(len(members), horizon), 0)
        for row, i in enumerate(members):
            out[i][name] = values[row]
    for i, p in enumerate(plans):
        if p.chosen == "Ensemble" or ("Ensemble" in p.errors and keep_candidates):
            out[i]["Ensemble"] = combine(p.family, [out[i][n] for n in _members(p)])
        if p.weights and (p.chosen == "WeightedEnsemble" or keep_candidates):
            member_points = np.array([out[i][n] for n in _members(p)])
            out[i]["WeightedEnsemble"] = np.asarray(p.weights) @ member_points
    return out


def _result(
    p: _Plan,
    points: dict[str, np.ndarray],
    calibration: conformal.Calibration,
    keep_candidates: bool,
) -> SeriesForecast:
    chosen = points[p.chosen]
    if p.chosen in p.errors:
        reference = conformal.reference(p.errors[p.chosen])
    elif p.chosen == "HistoricAverage" and p.y.size:
        reference = float(np.abs(p.y - p.y.mean()).mean()) if p.y.size > 1 else float(p.y[0])
    else:
        reference = 0.0
    group = p.classification.demand_class
    intervals, source = conformal.bounds(chosen, reference, calibration, group)
    scores = {n: _score(e, p.scale) for n, e in p.errors.items()}
    baseline = next((n for n in ("SeasonalNaive", "Naive") if n in scores), None)
    mine = scores.get(p.chosen)
    c = p.classification

    def t(a: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in a)

    return SeriesForecast(
        points=t(np.maximum(chosen, 0.0)),
        low_80=t(intervals[80][0]),
        high_80=t(intervals[80][1]),
        low_95=t(intervals[95][0]),
        high_95=t(intervals[95][1]),
        model=p.chosen,
        season_length=_season_of(p.chosen, p),
        mase=mine.mase if mine else None,
        bias=mine.bias if mine else None,
        baseline_model=baseline,
        baseline_mase=scores[baseline].mase if baseline else None,
        baseline_bias=scores[baseline].bias if baseline else None,
        demand_class=c.demand_class,
        adi=c.adi,
        cv2=c.cv2,
        history_length=c.history_length,
        backtest_windows=p.windows,
        interval_source=source,
        candidates=scores,
        candidate_points={n: t(v) for n, v in points.items()} if keep_candidates else None,
        errors=tuple(t(row) for row in p.errors[p.chosen]) if p.chosen in p.errors else (),
    )


def _score(errors: np.ndarray, scale: float) -> Score:
    mae = float(np.abs(errors).mean())
    if scale > 0:
        return Score(mae / scale, float(errors.mean()) / scale, mae)
    return Score(0.0 if mae == 0 else None, 0.0 if mae == 0 else None, mae)


def _window_maes(errors: np.ndarray) -> np.ndarray:
    """Mean absolute error of each backtest window: (windows, h) -> (windows,)."""
    return np.abs(errors).mean(axis=1)


def within_noise(errors: np.ndarray, reference: np.ndarray) -> bool:
    """Whether a model's backtest lead over `reference` is within noise: its per-window MAE
    differences do not average more than one standard error below zero. A handful of windows
    cannot rank close models, and the hold-out then picks whichever the noise favours."""
    d = _window_maes(errors) - _window_maes(reference)
    if d.size < 2:
        return True
    return float(d.mean()) > -float(d.std(ddof=1)) / math.sqrt(d.size)


def _choose(p: _Plan) -> str:
    if p.family == "obsolete":
        return "Zero"
    if p.family == "none":
        return (
            "Zero"
            if p.classification.demand_class is DemandClass.NO_DEMAND
            else ("HistoricAverage")
        )
    if not p.errors:
        return "HistoricAverage"
    allowed = CHOICE.get(p.family)
    maes = {
        n: float(np.abs(e).mean()) for n, e in p.errors.items() if allowed is None or n in allowed
    }
    best = min(maes.values())
    tolerance = 1e-9 * max(best, 1.0)
    winner = min((n for n, v in maes.items() if v <= best + tolerance), key=SIMPLICITY.index)
    # A single model that the backtest cannot tell from the family's mean gives way to the mean
    # (which errs less on average, the M3/M4 lesson), unless seasonal naive beats the mean.
    if (
        "Ensemble" in maes
        and winner != "Ensemble"
        and within_noise(p.errors[winner], p.errors["Ensemble"])
        and maes["Ensemble"] < maes.get("SeasonalNaive", math.inf)
    ):
        return "Ensemble"
    # Seasonal naive, a baseline, wins: the forecast is one draw a season ago, and it would tie
    # the baseline by construction. The members' combination weighted by their backtest errors
    # leans on seasonal naive as far as the backtest supports and no further: a clear winner
    # takes nearly all the weight, a lucky one shares it with the models it barely beat. Its
    # weights come from the same backtest, so it is not scored against the others. The same
    # holds when the winner's lead over seasonal naive is within noise: the backtest cannot
    # tell the two apart, so neither is staked on alone (and the Ensemble, a median, would drop
    # seasonal naive's season whenever AutoETS and AutoTheta agree without one).
    if "WeightedEnsemble" in p.errors and (
        winner == "SeasonalNaive" or within_noise(p.errors[winner], p.errors["SeasonalNaive"])
    ):
        return "WeightedEnsemble"
    return winner
