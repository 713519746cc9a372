"""GraphQL for consumption forecasts and the dashboard figures: thin types over the service."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, decode_id, load_related
from server.forecasting import forecast, service
from server.network import models as network_models
from server.network.api import Location

ForecastMethod = strawberry.enum(
    forecast.ForecastMethod,
    description="AUTO_ETS: exponential smoothing with an interval, for regular demand. "
    "CROSTON_OPTIMIZED: Croston's method for intermittent demand (many zero weeks); no interval.",
)
NoForecastReason = strawberry.enum(
    forecast.NoForecastReason,
    description="Why there is no forecast: fewer than 8 complete weeks of history, or no "
    "consumption at all in it.",
)
ExpiryBucket = strawberry.enum(
    service.ExpiryBucket,
    description="Days until expiry: already EXPIRED (before today), 0-30, 31-60, 61-90.",
)


@strawberry.type(description="Net consumption (dispensed minus returned) in one ISO week.")
class ConsumptionPoint:
    week_start: date = strawberry.field(description="Monday (UTC) that starts the week.")
    quantity: int


@strawberry.type(description="Forecast packs for one week; low/high bound the interval.")
class ForecastPoint:
    week_start: date
    quantity: float
    low: float | None = strawberry.field(description="Null when the method has no interval.")
    high: float | None


@strawberry.type(
    description="Weekly consumption up to the last complete week and the forecast after it. "
    "Either `method` and `forecast` are set, or `reason` says why not."
)
class ConsumptionForecast:
    method: ForecastMethod | None  # type: ignore[valid-type]
    reason: NoForecastReason | None  # type: ignore[valid-type]
    interval_level: int | None = strawberry.field(
        description="Coverage of low..high in percent; null when there is no interval."
    )
    last_complete_week: date = strawberry.field(
        description="Monday of the last week fitted; the current week is never fitted."
    )
    history: list[ConsumptionPoint]
    forecast: list[ForecastPoint]
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int | None]

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

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)

    @strawberry.field(description="Null: every location in your scope.")
    async def location(self, info: Info) -> Location | None:
        return await load_related(
            info, network_models.Location, self.location_id, Location.from_model
        )


@strawberry.type(description="A product and its net consumption over the asked weeks.")
class ProductConsumption:
    quantity: int
    product_id: strawberry.Private[int]

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type(description="Stock on hand at one location and its value.")
class LocationStockValue:
    packs: int
    value: Decimal
    location_id: strawberry.Private[int]

    @strawberry.field
    async def location(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.location_id, Location.from_model
        )


@strawberry.type(description="Stock in one ATC anatomical main group and its value.")
class AtcGroupStockValue:
    code: str | None = strawberry.field(description="ATC first letter; null: no ATC code.")
    name: str
    packs: int
    value: Decimal


@strawberry.type(
    description="Positive stock on hand valued at today's unit cost (expired packs included)."
)
class StockValue:
    packs: int
    value: Decimal
    by_location: list[LocationStockValue]
    by_atc_group: list[AtcGroupStockValue]


@strawberry.type
class ExpiryExposureBucket:
    bucket: ExpiryBucket  # type: ignore[valid-type]
    packs: int
    value: Decimal


@strawberry.type(description="Packs on the shelf by days until expiry, and their value.")
class ExpiryExposure:
    today: date
    buckets: list[ExpiryExposureBucket] = strawberry.field(
        description="Every bucket, in order EXPIRED, DAYS_0_30, DAYS_31_60, DAYS_61_90."
    )


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
        product: relay.GlobalID,
        location: relay.GlobalID | None = None,
        history_weeks: int = 26,
        horizon_weeks: int = 8,
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
        location: relay.GlobalID | None = None,
        weeks: int = 8,
        first: int = 10,
    ) -> list[ProductConsumption]:
        principal = info.context.require_principal()
        rows = await info.context.services.forecasting.top_consumption(
            principal, location_id=_location_id(location), weeks=weeks, first=first
        )
        return [ProductConsumption(quantity=r.quantity, product_id=r.product_id) for r in rows]

    @strawberry.field(
        description="Value of stock on hand in your locations, or one of them.", metadata=weigh(100)
    )
    async def stock_value(self, info: Info, location: relay.GlobalID | None = None) -> StockValue:
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
    async def expiry_exposure(
        self, info: Info, location: relay.GlobalID | None = None
    ) -> ExpiryExposure:
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
