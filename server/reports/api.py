"""GraphQL for reports: thin types over `server.reports.service`."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import Info, optional_id, relation
from server.core.graphql_enums import described_enum
from server.network import models as network_models
from server.network.api import Location
from server.reports import service

WasteGrouping = described_enum(
    service.WasteGrouping,
    "A dimension the waste report can be broken down by.",
    {
        "MONTH": "Calendar month (UTC) of the disposal or expiry.",
        "LOCATION": "Where the packs were.",
        "REASON": "Disposal reason code, or EXPIRED_ON_SHELF.",
        "PRODUCT": "Which product.",
    },
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

    location: Location | None = relation(
        network_models.Location, "location_id", description="Null unless grouped by LOCATION."
    )
    product: Product | None = relation(
        catalog_models.Product, "product_id", description="Null unless grouped by PRODUCT."
    )

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


@strawberry.type(description="The whole report's packs and value.")
class WasteTotals:
    quantity: int = strawberry.field(description="Packs, always positive.")
    value: Decimal = strawberry.field(description="Their value at today's unit cost.")


@strawberry.type(
    description="Expiry and waste: DISPOSE movements by reason, plus stock that expired on "
    "the shelf in the period (its current balance, reason EXPIRED_ON_SHELF, month of expiry). "
    "Value uses today's unit cost."
)
class WasteReport:
    since: date = strawberry.field(description="First day (inclusive).")
    until: date = strawberry.field(description="Day after the last (exclusive).")
    group_by: list[WasteGrouping] = strawberry.field(description="The dimensions of the rows.")  # type: ignore[valid-type]
    rows: list[WasteRow] = strawberry.field(description="One per combination with waste.")
    totals: WasteTotals = strawberry.field(description="All rows together.")


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
        since: Annotated[date, strawberry.argument(description="First day (inclusive).")],
        until: Annotated[date, strawberry.argument(description="Day after the last (exclusive).")],
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="One location; null: every location in your scope."),
        ] = None,
        group_by: Annotated[
            list[WasteGrouping] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Dimensions; null: [MONTH, LOCATION, REASON]."),
        ] = None,
    ) -> WasteReport:
        principal = info.context.require_principal()
        location_id = optional_id(location, Location, "location")
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
