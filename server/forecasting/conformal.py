"""Conformal prediction intervals from backtest residuals. No I/O.

For every series the backtest leaves the chosen model's errors, one per window and horizon step.
A handful of windows cannot give a series its own 80 % and 95 % quantile per step (a
finite-sample conformal 95 % quantile needs 19 scores), so scores are made comparable across
series and pooled:

- a series' **reference** is the chosen model's mean absolute backtest error per window,
  averaged with recency weights (each window weighs `RECENCY` of the next): it says how hard
  that series is now;
- a **score** is |error| / the same weighted mean over the windows before it (the first window:
  the mean of the others): how much worse than its past predicted that error was, so a series
  whose errors grow window after window widens, as the hold-out continues that run;
- scores are pooled per demand class and horizon step; the quantile at level L is the
  ceil((n + 1) · L)-th smallest of the n pooled scores (split-conformal rank);
- the half-width at step j is reference x quantile(class, j). A pool with fewer than
  `MIN_POOL` scores falls back to all classes at that step, then to the class over all steps,
  then to all scores, and finally to the normal approximation |e|/MAE quantile = z · √(π/2);
- lower bounds are clipped at 0 and the 95 % interval always contains the 80 % one.

A series whose reference is 0 (a constant series the backtest got exactly right, a dead one
forecast exactly 0) gets zero-width intervals.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

LEVELS = (80, 95)
MIN_POOL = 30
# a window weighs this much of the next (later) one in the reference: a half-life of 2
RECENCY = 0.5**0.5
_Z = {80: 1.2815515655446004, 95: 1.959963984540054}


class IntervalSource(StrEnum):
    CLASS_STEP = "CLASS_STEP"  # the series' class, at each horizon step
    ALL_STEP = "ALL_STEP"  # every class, at each horizon step
    CLASS = "CLASS"  # the series' class, every step together
    ALL = "ALL"  # every score of the run
    NORMAL = "NORMAL"  # too few scores: normal approximation
    NONE = "NONE"  # reference 0: the backtest was exact


def conformal_quantile(scores: np.ndarray, level: int) -> float:
    """The ceil((n+1)·level/100)-th smallest score; inf when n is too small for the level."""
    n = scores.size
    rank = math.ceil((n + 1) * level / 100)
    if n == 0 or rank > n:
        return math.inf
    return float(np.partition(scores, rank - 1)[rank - 1])


def normal_multiplier(level: int) -> float:
    return _Z[level] * math.sqrt(math.pi / 2)


def recency_weights(windows: int) -> np.ndarray:
    """Weights of `windows` backtest windows (oldest first) summing to 1, each window weighing
    `RECENCY` times the next one: a series' error level drifts (a season turning, a level
    shift), and the last windows say more about the hold-out than the first."""
    w = RECENCY ** np.arange(windows - 1, -1, -1, dtype=float)
    return w / w.sum()


def reference(errors: np.ndarray) -> float:
    """A series' error level: the recency-weighted mean of its windows' mean absolute errors."""
    absolute = np.abs(np.asarray(errors, dtype=float))
    if absolute.size == 0:
        return 0.0
    if absolute.ndim < 2:
        return float(absolute.mean())
    per_window = absolute.mean(axis=1)
    return float(recency_weights(per_window.size) @ per_window)


def reference_and_scores(errors: np.ndarray) -> tuple[float, np.ndarray]:
    """(reference, scores) for a (windows, steps) error matrix, oldest window first.

    Each window's errors are divided by the level the same estimator gave BEFORE that window:
    the recency-weighted mean absolute error of the earlier windows. A score then says how much
    worse a window went than its past predicted, exactly the part the hold-out plays against
    the reference of all windows, so a series whose errors grow over its windows gets wider
    intervals (and one whose errors shrink, narrower ones). The first window has no past: it
    is divided by the mean of the other windows (the cross-conformal way; a mean that included
    it would shrink its large scores). With one window, or a past that was exact, the mean over
    all windows is used."""
    absolute = np.abs(np.asarray(errors, dtype=float))
    level = reference(absolute)
    if level <= 0:
        return 0.0, np.zeros_like(absolute)
    windows = absolute.shape[0] if absolute.ndim == 2 else 1
    if windows < 2:
        return level, absolute / float(absolute.mean())
    per_window = absolute.mean(axis=1)
    past = np.empty(windows)
    past[0] = per_window[1:].mean()
    for k in range(1, windows):
        past[k] = float(recency_weights(k) @ per_window[:k])
    past = np.where(past > 0, past, float(absolute.mean()))
    return level, absolute / past[:, None]


@dataclass(frozen=True)
class Calibration:
    """Score quantiles by (class, step, level), built once per run from every series."""

    horizon: int
    by_class_step: Mapping[tuple[Hashable, int], np.ndarray]
    by_step: Mapping[int, np.ndarray]
    by_class: Mapping[Hashable, np.ndarray]
    everything: np.ndarray

    def multipliers(self, group: Hashable, level: int) -> tuple[np.ndarray, IntervalSource]:
        """Per-step score quantiles for `group` at `level`, and where they came from."""
        out = np.empty(self.horizon)
        sources = []
        for step in range(self.horizon):
            for pool, source in (
                (self.by_class_step.get((group, step)), IntervalSource.CLASS_STEP),
                (self.by_step.get(step), IntervalSource.ALL_STEP),
            ):
                if pool is not None and pool.size >= MIN_POOL:
                    q = conformal_quantile(pool, level)
                    if math.isfinite(q):
                        out[step] = q
                        sources.append(source)
                        break
            else:
                q, source = self._across_steps(group, step, level)
                out[step] = q
                sources.append(source)
        # the weakest source used at any step names the whole interval
        order = list(IntervalSource)
        return out, max(sources, key=order.index)

    def _across_steps(self, group: Hashable, step: int, level: int) -> tuple[float, IntervalSource]:
        """Too few scores at this step: pool every step, each divided by its step's mean score
        (a profile made non-decreasing along the horizon), and multiply the quantile back by
        this step's profile, so errors still grow with the horizon."""
        for key, source in ((group, IntervalSource.CLASS), (None, IntervalSource.ALL)):
            per_step = [
                self.by_class_step.get((key, j)) if key is not None else self.by_step.get(j)
                for j in range(self.horizon)
            ]
            if any(p is None or p.size == 0 for p in per_step[: step + 1]):
                continue
            present = [p for p in per_step if p is not None and p.size]
            means = np.maximum.accumulate(np.array([float(p.mean()) for p in present]))
            if means[step] <= 0 or sum(p.size for p in present) < MIN_POOL:
                continue
            pooled = np.concatenate([p / m for p, m in zip(present, means, strict=True) if m > 0])
            q = conformal_quantile(pooled, level)
            if math.isfinite(q):
                return q * float(means[step]), source
        return normal_multiplier(level), IntervalSource.NORMAL


def calibrate(errors: Mapping[Hashable, tuple[Hashable, np.ndarray]], horizon: int) -> Calibration:
    """`errors`: per series, (pooling group, its chosen model's (windows, horizon) errors)."""
    class_step: dict[tuple[Hashable, int], list[np.ndarray]] = {}
    for group, matrix in errors.values():
        reference, scores = reference_and_scores(matrix)
        if reference <= 0 or scores.size == 0:
            continue
        for step in range(min(horizon, scores.shape[1])):
            class_step.setdefault((group, step), []).append(scores[:, step])
    by_class_step = {k: np.concatenate(v) for k, v in class_step.items()}
    by_step: dict[int, list[np.ndarray]] = {}
    by_class: dict[Hashable, list[np.ndarray]] = {}
    for (group, step), scores in by_class_step.items():
        by_step.setdefault(step, []).append(scores)
        by_class.setdefault(group, []).append(scores)
    everything = np.concatenate(list(by_class_step.values())) if by_class_step else np.empty(0)
    return Calibration(
        horizon,
        by_class_step,
        {k: np.concatenate(v) for k, v in by_step.items()},
        {k: np.concatenate(v) for k, v in by_class.items()},
        everything,
    )


def bounds(
    points: np.ndarray, reference: float, calibration: Calibration, group: Hashable
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], IntervalSource]:
    """{level: (low, high)} around `points`, clipped at 0 and nested (95 ⊇ 80 ⊇ point)."""
    points = np.maximum(np.asarray(points, dtype=float), 0.0)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if reference <= 0:
        return {level: (points.copy(), points.copy()) for level in LEVELS}, IntervalSource.NONE
    width = np.zeros_like(points)
    source = IntervalSource.CLASS_STEP
    order = list(IntervalSource)
    for level in sorted(LEVELS):
        multipliers, src = calibration.multipliers(group, level)
        width = np.maximum(width, reference * multipliers[: points.size])
        out[level] = (np.maximum(points - width, 0.0), points + width)
        source = max(source, src, key=order.index)
    return out, source
