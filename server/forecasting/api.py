"""GraphQL for consumption forecasts and the dashboard figures: thin types over the service."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, decode_id, relation
from server.core.graphql_enums import described_enum
from server.forecasting import forecast, service
from server.network import models as network_models
from server.network.api import Location

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
    return None if location is None else decode_id(location, Location, "location")


@strawberry.type
class Query:
    @strawberry.field(
        description="Weekly net consumption of a product (DISPENSE minus RETURN) at a location, "
        "or every location in your scope, and its forecast for horizonWeeks weeks. "
        "historyWeeks 1-156, horizonWeeks 1-52.",
        metadata=weigh(200),
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
