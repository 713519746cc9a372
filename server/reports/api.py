"""GraphQL for reports: thin types over `server.reports.service`."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, decode_id, load_related
from server.network import models as network_models
from server.network.api import Location
from server.reports import service

WasteGrouping = strawberry.enum(
    service.WasteGrouping, description="A dimension the waste report can be broken down by."
)


@strawberry.type(description="Packs expired or disposed of for one combination of dimensions.")
class WasteRow:
    month: str | None = strawberry.field(description="YYYY-MM (UTC); null unless grouped.")
    reason: str | None = strawberry.field(
        description="Disposal reason code (EXPIRED, DAMAGED, ...) or EXPIRED_ON_SHELF; "
        "null unless grouped."
    )
    quantity: int = strawberry.field(description="Packs, always positive.")
    value: Decimal = strawberry.field(description="Quantity times the product's unit cost.")
    location_id: strawberry.Private[int | None]
    product_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: service.WasteRow) -> WasteRow:
        return cls(
            month=row.month,
            reason=row.reason,
            quantity=row.quantity,
            value=row.value,
            location_id=row.location_id,
            product_id=row.product_id,
        )

    @strawberry.field(description="Null unless grouped by LOCATION.")
    async def location(self, info: Info) -> Location | None:
        return await load_related(
            info, network_models.Location, self.location_id, Location.from_model
        )

    @strawberry.field(description="Null unless grouped by PRODUCT.")
    async def product(self, info: Info) -> Product | None:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type
class WasteTotals:
    quantity: int
    value: Decimal


@strawberry.type(
    description="Expiry and waste: DISPOSE movements by reason, plus stock that expired on "
    "the shelf in the period (its current balance, reason EXPIRED_ON_SHELF, month of expiry). "
    "Value uses today's unit cost."
)
class WasteReport:
    since: date
    until: date
    group_by: list[WasteGrouping]  # type: ignore[valid-type]
    rows: list[WasteRow]
    totals: WasteTotals


@strawberry.type
class Query:
    @strawberry.field(
        description="Waste between since (inclusive) and until (exclusive), at most 3 years, "
        "in your locations. groupBy defaults to [MONTH, LOCATION, REASON].",
        metadata=weigh(200),
    )
    async def waste_report(
        self,
        info: Info,
        since: date,
        until: date,
        location: relay.GlobalID | None = None,
        group_by: list[WasteGrouping] | None = None,  # type: ignore[valid-type]
    ) -> WasteReport:
        principal = info.context.require_principal()
        location_id = None if location is None else decode_id(location, Location, "location")
        report = await info.context.services.reports.waste_report(
            principal,
            since=since,
            until=until,
            location_id=location_id,
            group_by=group_by,
        )
        return WasteReport(
            since=report.since,
            until=report.until,
            group_by=list(report.group_by),
            rows=[WasteRow.from_row(r) for r in report.rows],
            totals=WasteTotals(quantity=report.totals.quantity, value=report.totals.value),
        )
