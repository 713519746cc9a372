"""Stored forecasts: one row per refresh run, and the latest forecast per series.

The background job (ForecastingService.refresh) writes them; requests only read them, so no
request ever fits a model. A series is (product, location, granularity); its row is replaced
when its history changed (`history_hash`), and left alone otherwise.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class ForecastRun(Base):
    """One refresh of one granularity: what it saw, what it refitted, how long it took."""

    __tablename__ = "forecast_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    granularity: Mapped[str] = mapped_column(String(16), index=True)
    last_period: Mapped[date] = mapped_column(Date)  # the last complete period fitted
    horizon: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    series_total: Mapped[int] = mapped_column(Integer)
    series_refitted: Mapped[int] = mapped_column(Integer)
    series_removed: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float)


class StoredSeriesForecast(Base):
    """The latest forecast of one series, with everything the API and replenishment show.

    A series is a product's at one location (`location_id` set) or summed over one
    organisation's locations (`organisation_id` set, `location_id` null)."""

    __tablename__ = "forecasts"
    __table_args__ = (
        UniqueConstraint("product_id", "location_id", "granularity"),
        UniqueConstraint("organisation_id", "product_id", "granularity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"), index=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    granularity: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int] = mapped_column(ForeignKey("forecast_runs.id"), index=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    history_hash: Mapped[str] = mapped_column(String(64))
    history_start: Mapped[date] = mapped_column(Date)  # first period of `history`
    last_period: Mapped[date] = mapped_column(Date)  # last period of `history`
    history: Mapped[list[float]] = mapped_column(JSON)  # one quantity per period, contiguous
    # packs disposed of in the same periods (DISPOSE): reported beside consumption, not forecast
    disposals: Mapped[list[float] | None] = mapped_column(JSON)
    first_period: Mapped[date] = mapped_column(Date)  # the period of points[0]
    points: Mapped[list[float]] = mapped_column(JSON)
    low_80: Mapped[list[float]] = mapped_column(JSON)
    high_80: Mapped[list[float]] = mapped_column(JSON)
    low_95: Mapped[list[float]] = mapped_column(JSON)
    high_95: Mapped[list[float]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(32))
    season_length: Mapped[int] = mapped_column(Integer)
    mase: Mapped[float | None] = mapped_column(Float)
    bias: Mapped[float | None] = mapped_column(Float)
    baseline_model: Mapped[str | None] = mapped_column(String(32))
    baseline_mase: Mapped[float | None] = mapped_column(Float)
    baseline_bias: Mapped[float | None] = mapped_column(Float)
    demand_class: Mapped[str] = mapped_column(String(16))
    adi: Mapped[float | None] = mapped_column(Float)
    cv2: Mapped[float | None] = mapped_column(Float)
    history_length: Mapped[int] = mapped_column(Integer)
    backtest_windows: Mapped[int] = mapped_column(Integer)
    interval_source: Mapped[str] = mapped_column(String(16))
    # every backtested model: {name: [mase, bias, mae]}; the chosen one's backtest errors, kept
    # so a later incremental refresh can calibrate intervals on the whole population
    candidates: Mapped[dict[str, Any]] = mapped_column(JSON)
    errors: Mapped[list[list[float]]] = mapped_column(JSON)
