"""Demand classes (Syntetos-Boylan, plus obsolete, new and no demand). No I/O.

The history of a series starts at its first demand: zeros before it only say the product was
not in use yet, and would make every new product look intermittent.

- ADI, the average inter-demand interval, is the mean number of periods from one demand to the
  next, between the first and the last demand (1.0 when there is demand in every period).
- CV² is the squared coefficient of variation (population) of the non-zero demand sizes.
- Syntetos-Boylan-Croston cut-offs: ADI < 1.32 and CV² < 0.49 → SMOOTH; ADI < 1.32 and
  CV² ≥ 0.49 → ERRATIC; ADI ≥ 1.32 and CV² < 0.49 → INTERMITTENT; otherwise LUMPY.
- OBSOLETE: demand has stopped. The run of zeros since the last demand is at least
  `max(ceil(3 x ADI), ceil(periods_per_year / 4))` periods: three typical intervals (for
  geometric gaps the chance of so long a pause in a living series is about e^-3 ≈ 5 %, less
  once the quarter floor applies) and never less than a quarter of a year (13 weeks, 3 months,
  92 days), so a product used every week is not declared dead after three quiet weeks.
- INSUFFICIENT: fewer than `min_history` periods since the first demand, or fewer than two
  demands (no interval to measure). Checked after OBSOLETE, which needs two demands too.
- NO_DEMAND: no demand at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
OBSOLETE_INTERVALS = 3  # this many typical intervals without demand: obsolete
MIN_HISTORY = 8  # periods since the first demand, below which nothing is classified


class DemandClass(StrEnum):
    SMOOTH = "SMOOTH"
    ERRATIC = "ERRATIC"
    INTERMITTENT = "INTERMITTENT"
    LUMPY = "LUMPY"
    OBSOLETE = "OBSOLETE"
    INSUFFICIENT = "INSUFFICIENT"
    NO_DEMAND = "NO_DEMAND"


@dataclass(frozen=True)
class Classification:
    demand_class: DemandClass
    adi: float | None  # None with fewer than two demands
    cv2: float | None  # None without demand
    history_length: int  # periods from the first demand to the end
    periods_since_demand: int  # trailing zeros (0 when the last period had demand)
    obsolete_after: int | None  # the trailing-zero run that makes this series OBSOLETE


def trim_leading_zeros(values: np.ndarray) -> np.ndarray:
    nonzero = np.flatnonzero(values > 0)
    return values[nonzero[0] :] if nonzero.size else values[:0]


def obsolete_after(adi: float, periods_per_year: int) -> int:
    return max(math.ceil(OBSOLETE_INTERVALS * adi), math.ceil(periods_per_year / 4))


def classify(
    values: np.ndarray, periods_per_year: int, min_history: int = MIN_HISTORY
) -> Classification:
    """Classify a contiguous, cleaned demand array (oldest first)."""
    history = trim_leading_zeros(np.asarray(values, dtype=float))
    demand_at = np.flatnonzero(history > 0)
    if demand_at.size == 0:
        return Classification(DemandClass.NO_DEMAND, None, None, 0, len(values), None)
    sizes = history[demand_at]
    mean = float(sizes.mean())
    cv2 = float(sizes.var() / (mean * mean))
    since = len(history) - 1 - int(demand_at[-1])
    if demand_at.size < 2:
        return Classification(DemandClass.INSUFFICIENT, None, cv2, len(history), since, None)
    adi = float(demand_at[-1] - demand_at[0]) / (demand_at.size - 1)
    after = obsolete_after(adi, periods_per_year)
    if since >= after:
        cls = DemandClass.OBSOLETE
    elif len(history) < min_history:
        cls = DemandClass.INSUFFICIENT
    elif adi < ADI_CUTOFF:
        cls = DemandClass.SMOOTH if cv2 < CV2_CUTOFF else DemandClass.ERRATIC
    else:
        cls = DemandClass.INTERMITTENT if cv2 < CV2_CUTOFF else DemandClass.LUMPY
    return Classification(cls, adi, cv2, len(history), since, after)
