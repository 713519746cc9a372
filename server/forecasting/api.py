"""GraphQL for consumption forecasts and the dashboard figures: thin types over the service."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, decode_id, optional_id, relation
from server.core.graphql_enums import described_enum
from server.forecasting import classify, engine, forecast, models, series, service
from server.network import models as network_models
from server.network.api import Location, Organisation

ForecastMethod = described_enum(
    forecast.ForecastMethod,
    "How a forecast was made.",
    {
        "AUTO_ETS": "Exponential smoothing with an interval, for regular demand.",
        "CROSTON_OPTIMIZED": "Croston's method for intermittent demand (many zero weeks); "
        "no interval.",
    },
)
NoForecastReason = described_enum(
    forecast.NoForecastReason,
    "Why there is no forecast.",
    {
        "INSUFFICIENT_HISTORY": "Fewer than 8 complete weeks of history.",
        "NO_CONSUMPTION": "No consumption at all in the history.",
    },
)
ExpiryBucket = described_enum(
    service.ExpiryBucket,
    "Days until expiry.",
    {
        "EXPIRED": "Already expired (before today).",
        "DAYS_0_30": "Expires within 0-30 days.",
        "DAYS_31_60": "Expires in 31-60 days.",
        "DAYS_61_90": "Expires in 61-90 days.",
    },
)


ForecastGranularity = described_enum(
    series.Granularity,
    "The period a demand series adds up, with its season.",
    {
        "DAILY": "Days (UTC); weekly season of 7, and the year (365) from two years on.",
        "WEEKLY": "ISO weeks starting on Monday (UTC); yearly season of 52.",
        "MONTHLY": "Calendar months (UTC); yearly season of 12.",
    },
    name="ForecastGranularity",
)
DemandClass = described_enum(
    classify.DemandClass,
    "Syntetos-Boylan demand class (ADI cut-off 1.32, CV² cut-off 0.49), plus the cases with "
    "nothing to classify.",
    {
        "SMOOTH": "Demand in most periods (ADI < 1.32) with steady sizes (CV² < 0.49).",
        "ERRATIC": "Demand in most periods with varying sizes (CV² >= 0.49).",
        "INTERMITTENT": "Demand in few periods (ADI >= 1.32) with steady sizes.",
        "LUMPY": "Demand in few periods with varying sizes.",
        "OBSOLETE": "Demand has stopped: no demand for three typical intervals and at least a "
        "quarter of a year. Forecast 0 until it sells again.",
        "INSUFFICIENT": "Too little history (under 8 periods, or one demand) to classify.",
        "NO_DEMAND": "No demand at all.",
    },
)
ForecastModel = described_enum(
    engine.ModelName,
    "A forecasting model the engine may choose.",
    {
        "ZERO": "Forecast 0 (obsolete or no demand).",
        "NAIVE": "The last period again.",
        "SEASONAL_NAIVE": "The same period one season ago.",
        "CROSTON_SBA": "Croston's method with the Syntetos-Boylan bias correction.",
        "TSB": "Teunter-Syntetos-Babai: demand probability updated every period, follows a "
        "dying product down.",
        "ADIDA": "Aggregate-disaggregate intermittent demand approach.",
        "IMAPA": "Intermittent multiple aggregation prediction algorithm.",
        "AUTO_ETS": "Exponential smoothing (error, trend, season) chosen by information criterion.",
        "AUTO_THETA": "Theta method (with seasonal decomposition) chosen by fit.",
        "MSTL": "Seasons decomposed by STL (week and year of daily data; the year of weekly "
        "data, longer than ETS fits), the adjusted series by ETS.",
        "ENSEMBLE": "A combination of the class's main models: the median of AutoETS, AutoTheta "
        "and SeasonalNaive (the mean of the first two without a full season); the mean of "
        "CrostonSBA, ADIDA, IMAPA and TSB for intermittent demand.",
        "WEIGHTED_ENSEMBLE": "AutoETS, AutoTheta and SeasonalNaive weighted by inverse squared "
        "backtest error: chosen where seasonal naive wins the backtest or the winner's lead "
        "over it is within noise.",
        "HISTORIC_AVERAGE": "The mean of the history: too short to backtest.",
    },
)


@strawberry.type(
    description="Net consumption in one past period of a stored forecast's history, and the "
    "packs disposed of beside it."
)
class DemandHistoryPoint:
    period_start: date = strawberry.field(description="First day of the period (UTC).")
    quantity: float = strawberry.field(description="Packs dispensed minus returned (at least 0).")
    disposed: float = strawberry.field(
        description="Packs disposed of (expired, damaged, recalled: DISPOSE) in the period: "
        "reported beside consumption, never counted as demand nor forecast."
    )


@strawberry.type(
    description="Forecast demand for one future period, with its conformal intervals "
    "(0 <= low95 <= low80 <= quantity <= high80 <= high95)."
)
class DemandForecastPoint:
    period_start: date = strawberry.field(description="First day of the period (UTC).")
    quantity: float = strawberry.field(description="Forecast packs.")
    low80: float = strawberry.field(description="Lower bound of the 80 % interval.")
    high80: float = strawberry.field(description="Upper bound of the 80 % interval.")
    low95: float = strawberry.field(description="Lower bound of the 95 % interval.")
    high95: float = strawberry.field(description="Upper bound of the 95 % interval.")


@strawberry.type(description="A model's rolling-origin backtest on this series.")
class ModelScore:
    model: ForecastModel = strawberry.field(description="The model.")  # type: ignore[valid-type]
    mase: float | None = strawberry.field(
        description="Mean absolute error scaled by seasonal naive's in-sample error; null "
        "when that scale is 0."
    )
    bias: float | None = strawberry.field(
        description="Mean error (forecast minus actual) on the same scale; positive: "
        "over-forecasting."
    )


@strawberry.type(
    description="A stored demand forecast of a product at a location, or over every location "
    "of an organisation, computed by the background refresh (never inside a request) from its "
    "consumption history."
)
class DemandForecast:
    granularity: ForecastGranularity = strawberry.field(  # type: ignore[valid-type]
        description="The period of the history and the points."
    )
    computed_at: datetime = strawberry.field(description="When the refresh computed it.")
    last_period: date = strawberry.field(
        description="Start of the last complete period fitted; points start with the next."
    )
    model: ForecastModel = strawberry.field(  # type: ignore[valid-type]
        description="The model chosen by backtest among the class's candidates."
    )
    season_length: int = strawberry.field(description="The season that model used (1: none).")
    mase: float | None = strawberry.field(
        description="The chosen model's backtest MASE (scaled by seasonal naive's in-sample "
        "error); null when not backtested."
    )
    bias: float | None = strawberry.field(
        description="The chosen model's backtest bias on the same scale; positive: "
        "over-forecasting."
    )
    baseline_model: ForecastModel | None = strawberry.field(  # type: ignore[valid-type]
        description="The baseline on the same backtest windows: seasonal naive (naive "
        "without a full season)."
    )
    baseline_mase: float | None = strawberry.field(description="The baseline's backtest MASE.")
    baseline_bias: float | None = strawberry.field(description="The baseline's backtest bias.")
    demand_class: DemandClass = strawberry.field(  # type: ignore[valid-type]
        description="The series' demand class."
    )
    adi: float | None = strawberry.field(
        description="Average inter-demand interval, in periods; null with fewer than two demands."
    )
    cv2: float | None = strawberry.field(
        description="Squared coefficient of variation of the non-zero demand sizes."
    )
    history_length: int = strawberry.field(
        description="Periods from the first demand to lastPeriod: the history used."
    )
    backtest_windows: int = strawberry.field(
        description="Rolling-origin windows the choice was made on (0: too short to backtest)."
    )
    history: list[DemandHistoryPoint] = strawberry.field(
        description="The history used, oldest first, from the first period with demand."
    )
    points: list[DemandForecastPoint] = strawberry.field(
        description="The forecast, one point per period after lastPeriod."
    )
    candidates: list[ModelScore] = strawberry.field(
        description="Every backtested model's score, best first."
    )
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int | None]
    organisation_id: strawberry.Private[int | None]

    product: Product = relation(catalog_models.Product, "product_id", description="The product.")
    location: Location | None = relation(
        network_models.Location,
        "location_id",
        description="The location; null for an organisation's series.",
    )
    organisation: Organisation | None = relation(
        network_models.Organisation,
        "organisation_id",
        description="The organisation whose locations' consumption is summed; null for one "
        "location's series.",
    )

    @classmethod
    def from_model(cls, row: models.StoredSeriesForecast) -> DemandForecast:
        g = series.Granularity(row.granularity)
        scores = [
            ModelScore(model=engine.ModelName(n), mase=v[0], bias=v[1])
            for n, v in row.candidates.items()
        ]
        scores.sort(key=lambda s: (s.mase is None, s.mase or 0.0))
        disposals = row.disposals or []
        return cls(
            granularity=g,
            computed_at=row.computed_at,
            last_period=row.last_period,
            model=engine.ModelName(row.model),
            season_length=row.season_length,
            mase=row.mase,
            bias=row.bias,
            baseline_model=engine.ModelName(row.baseline_model) if row.baseline_model else None,
            baseline_mase=row.baseline_mase,
            baseline_bias=row.baseline_bias,
            demand_class=classify.DemandClass(row.demand_class),
            adi=row.adi,
            cv2=row.cv2,
            history_length=row.history_length,
            backtest_windows=row.backtest_windows,
            history=[
                DemandHistoryPoint(
                    period_start=g.shift(row.history_start, i),
                    quantity=q,
                    disposed=disposals[i] if i < len(disposals) else 0.0,
                )
                for i, q in enumerate(row.history)
            ],
            points=[
                DemandForecastPoint(
                    period_start=g.shift(row.first_period, i),
                    quantity=q,
                    low80=row.low_80[i],
                    high80=row.high_80[i],
                    low95=row.low_95[i],
                    high95=row.high_95[i],
                )
                for i, q in enumerate(row.points)
            ],
            candidates=scores,
            product_id=row.product_id,
            location_id=row.location_id,
            organisation_id=row.organisation_id,
        )


@strawberry.type(description="Net consumption (dispensed minus returned) in one ISO week.")
class ConsumptionPoint:
    week_start: date = strawberry.field(description="Monday (UTC) that starts the week.")
    quantity: int = strawberry.field(description="Packs, net (may be negative).")


@strawberry.type(description="Forecast packs for one week; low/high bound the interval.")
class ForecastPoint:
    week_start: date = strawberry.field(description="Monday (UTC) that starts the week.")
    quantity: float = strawberry.field(description="Forecast packs.")
    low: float | None = strawberry.field(
        description="Lower bound of the interval; null when the method has none."
    )
    high: float | None = strawberry.field(
        description="Upper bound of the interval; null when the method has none."
    )


@strawberry.type(
    description="Weekly consumption up to the last complete week and the forecast after it. "
    "Either `method` and `forecast` are set, or `reason` says why not."
)
class ConsumptionForecast:
    method: ForecastMethod | None = strawberry.field(  # type: ignore[valid-type]
        description="How it was forecast; null when there is no forecast."
    )
    reason: NoForecastReason | None = strawberry.field(  # type: ignore[valid-type]
        description="Why there is no forecast; null when there is one."
    )
    interval_level: int | None = strawberry.field(
        description="Coverage of low..high in percent; null when there is no interval."
    )
    last_complete_week: date = strawberry.field(
        description="Monday of the last week fitted; the current week is never fitted."
    )
    history: list[ConsumptionPoint] = strawberry.field(description="Past weeks, oldest first.")
    forecast: list[ForecastPoint] = strawberry.field(
        description="Weeks after lastCompleteWeek; empty when there is no forecast."
    )
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int | None]

    product: Product = relation(catalog_models.Product, "product_id", description="The product.")
    location: Location | None = relation(
        network_models.Location,
        "location_id",
        description="The location; null: every location in your scope.",
    )

    @classmethod
    def from_result(cls, result: service.ConsumptionForecast) -> ConsumptionForecast:
        f = result.forecast
        has_interval = any(p.low is not None for p in f.points)
        return cls(
            method=f.method,
            reason=f.reason,
            interval_level=f.level if has_interval else None,
            last_complete_week=result.last_complete_week,
            history=[
                ConsumptionPoint(week_start=p.week_start, quantity=p.quantity)
                for p in result.history
            ],
            forecast=[
                ForecastPoint(week_start=p.week_start, quantity=p.quantity, low=p.low, high=p.high)
                for p in f.points
            ],
            product_id=result.product_id,
            location_id=result.location_id,
        )


@strawberry.type(description="A product and its net consumption over the asked weeks.")
class ProductConsumption:
    quantity: int = strawberry.field(description="Packs, net.")
    product_id: strawberry.Private[int]

    product: Product = relation(catalog_models.Product, "product_id", description="The product.")


@strawberry.type(description="Stock on hand at one location and its value.")
class LocationStockValue:
    packs: int = strawberry.field(description="Packs on hand.")
    value: Decimal = strawberry.field(description="Packs times today's unit cost.")
    location_id: strawberry.Private[int]

    location: Location = relation(
        network_models.Location, "location_id", description="The location."
    )


@strawberry.type(description="Stock in one ATC anatomical main group and its value.")
class AtcGroupStockValue:
    code: str | None = strawberry.field(description="ATC first letter; null: no ATC code.")
    name: str = strawberry.field(description="The group's name.")
    packs: int = strawberry.field(description="Packs on hand.")
    value: Decimal = strawberry.field(description="Packs times today's unit cost.")


@strawberry.type(
    description="Positive stock on hand valued at today's unit cost (expired packs included)."
)
class StockValue:
    packs: int = strawberry.field(description="Packs on hand in all those locations.")
    value: Decimal = strawberry.field(description="Their value.")
    by_location: list[LocationStockValue] = strawberry.field(description="Per location.")
    by_atc_group: list[AtcGroupStockValue] = strawberry.field(
        description="Per ATC anatomical main group."
    )


@strawberry.type(description="Packs in one expiry bucket, and their value.")
class ExpiryExposureBucket:
    bucket: ExpiryBucket = strawberry.field(description="Days until expiry.")  # type: ignore[valid-type]
    packs: int = strawberry.field(description="Packs on the shelf.")
    value: Decimal = strawberry.field(description="Packs times today's unit cost.")


@strawberry.type(description="Packs on the shelf by days until expiry, and their value.")
class ExpiryExposure:
    today: date = strawberry.field(description="The day (UTC) the buckets count from.")
    buckets: list[ExpiryExposureBucket] = strawberry.field(
        description="Every bucket, in order EXPIRED, DAYS_0_30, DAYS_31_60, DAYS_61_90."
    )


ProductArg = Annotated[relay.GlobalID, strawberry.argument(description="The product.")]
LocationArg = Annotated[
    relay.GlobalID | None,
    strawberry.argument(description="One location; null: every location in your scope."),
]


def _location_id(location: relay.GlobalID | None) -> int | None:
    return optional_id(location, Location, "location")


@strawberry.type
class Query:
    @strawberry.field(
        description="Weekly net consumption of a product (DISPENSE minus RETURN) at a location, "
        "or every location in your scope, and its forecast for horizonWeeks weeks. "
        "historyWeeks 1-156, horizonWeeks 1-52.",
        metadata=weigh(200),
        deprecation_reason="Use `forecast`: stored by the background refresh, seasonal, "
        "chosen by backtest, with calibrated intervals.",
    )
    async def consumption_forecast(
        self,
        info: Info,
        product: ProductArg,
        location: LocationArg = None,
        history_weeks: Annotated[
            int, strawberry.argument(description="Complete weeks of history to fit (1-156).")
        ] = 26,
        horizon_weeks: Annotated[
            int, strawberry.argument(description="Weeks to forecast (1-52).")
        ] = 8,
    ) -> ConsumptionForecast:
        principal = info.context.require_principal()
        result = await info.context.services.forecasting.consumption_forecast(
            principal,
            product_id=decode_id(product, Product, "product"),
            location_id=_location_id(location),
            history_weeks=history_weeks,
            horizon_weeks=horizon_weeks,
        )
        return ConsumptionForecast.from_result(result)

    @strawberry.field(
        description="The stored demand forecast of a product at a location (in your scope: "
        "FORBIDDEN otherwise), or summed over an organisation's locations (every one of them "
        "in your scope), at a granularity; give exactly one of location and organisation. "
        "Points with 80 % and 95 % intervals, the "
        "chosen model, its backtest MASE and bias against seasonal naive, the demand class and "
        "the history used. Null until the background refresh has computed it (no consumption "
        "there yet). horizon: 1 to the stored horizon (28 days, 13 weeks, 6 months; default "
        "all).",
        metadata=weigh(20),
    )
    async def forecast(
        self,
        info: Info,
        product: ProductArg,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="The location (or give organisation)."),
        ] = None,
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(
                description="The organisation: the sum over its locations (or give location)."
            ),
        ] = None,
        granularity: Annotated[
            ForecastGranularity,  # type: ignore[valid-type]
            strawberry.argument(description="Days, weeks or months."),
        ] = series.Granularity.WEEKLY,
        horizon: Annotated[
            int | None,
            strawberry.argument(description="Periods to return; null: every stored one."),
        ] = None,
    ) -> DemandForecast | None:
        principal = info.context.require_principal()
        row = await info.context.services.forecasting.forecast(
            principal,
            product_id=decode_id(product, Product, "product"),
            location_id=optional_id(location, Location, "location"),
            organisation_id=optional_id(organisation, Organisation, "organisation"),
            granularity=granularity,
            horizon=horizon,
        )
        return None if row is None else DemandForecast.from_model(row)

    @strawberry.field(
        description="Products with the most net consumption over the last `weeks` complete "
        "weeks, most first (first: 1-50).",
        metadata=weigh(100),
    )
    async def top_consumption(
        self,
        info: Info,
        location: LocationArg = None,
        weeks: Annotated[
            int, strawberry.argument(description="Complete weeks to add up, up to the last.")
        ] = 8,
        first: Annotated[int, strawberry.argument(description="How many products (1-50).")] = 10,
    ) -> list[ProductConsumption]:
        principal = info.context.require_principal()
        rows = await info.context.services.forecasting.top_consumption(
            principal, location_id=_location_id(location), weeks=weeks, first=first
        )
        return [ProductConsumption(quantity=r.quantity, product_id=r.product_id) for r in rows]

    @strawberry.field(
        description="Value of stock on hand in your locations, or one of them.", metadata=weigh(100)
    )
    async def stock_value(self, info: Info, location: LocationArg = None) -> StockValue:
        principal = info.context.require_principal()
        result = await info.context.services.forecasting.stock_value(
            principal, location_id=_location_id(location)
        )
        return StockValue(
            packs=result.packs,
            value=result.value,
            by_location=[
                LocationStockValue(packs=f.packs, value=f.value, location_id=int(f.key or 0))
                for f in result.by_location
            ],
            by_atc_group=[
                AtcGroupStockValue(
                    code=None if f.key is None else str(f.key),
                    name=service.ATC_GROUPS.get(str(f.key), service.UNCLASSIFIED),
                    packs=f.packs,
                    value=f.value,
                )
                for f in result.by_atc_group
            ],
        )

    @strawberry.field(
        description="Packs and value already expired on the shelf or expiring within 90 days.",
        metadata=weigh(100),
    )
    async def expiry_exposure(self, info: Info, location: LocationArg = None) -> ExpiryExposure:
        principal = info.context.require_principal()
        result = await info.context.services.forecasting.expiry_exposure(
            principal, location_id=_location_id(location)
        )
        return ExpiryExposure(
            today=result.today,
            buckets=[
                ExpiryExposureBucket(bucket=f.key, packs=f.packs, value=f.value)
                for f in result.buckets
            ],
        )
