"""GraphQL for money: budgets, the spend report, per-patient usage. Thin over the service."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Self

import strawberry
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.core.cost import weigh
from server.core.graphql import (
    CountedConnection,
    FromModel,
    Info,
    MutationError,
    PageAfter,
    PageSize,
    attempt,
    connection,
    decode_id,
    load_nodes,
    optional_id,
    relation,
)
from server.core.graphql_enums import described_enum
from server.core.pagination import Page
from server.core.security import Permission
from server.finance import costing, models, service
from server.network import models as network_models
from server.network.api import Location, Organisation, User

SpendGrouping = described_enum(
    service.SpendGrouping,
    "What the spend report's rows are.",
    {
        "LOCATION": "One row per location (department), with its budget where one is set.",
        "ATC": "One row per ATC code of the products consumed.",
        "SUPPLIER": "One row per supplier the consumed lots were received from.",
    },
)
ForecastSource = described_enum(
    costing.ForecastSource,
    "How a row's spend to the period's end was projected.",
    {
        "FORECAST": "Stored demand forecasts times the average cost, for every series.",
        "RUN_RATE": "The period's pace so far, carried to its end (no stored forecast).",
        "MIXED": "Forecasts where stored, the run rate for the other series of the row.",
        "PERIOD_CLOSED": "The period is over: the forecast is the spend.",
    },
)
PeriodKind = described_enum(
    models.PeriodKind,
    "The length of a budget period (calendar, UTC).",
    {"MONTH": "A calendar month.", "QUARTER": "A calendar quarter.", "YEAR": "A calendar year."},
)

PeriodArg = Annotated[
    str,
    strawberry.argument(description='A month "2026-12", a quarter "2026-Q4" or a year "2026".'),
]


@strawberry.type(description="What a location (department) may spend in one period.")
class Budget(FromModel, relay.Node):
    __columns__ = {"updated_by_id": "updated_by"}

    id: relay.NodeID[int]
    period_kind: PeriodKind = strawberry.field(description="Month, quarter or year.")  # type: ignore[valid-type]
    period_start: date = strawberry.field(description="First day of the period.")
    period_end: date = strawberry.field(description="Day after its last day.")
    amount: Decimal = strawberry.field(description="The budget, in the organisation's currency.")
    warning_percent: int = strawberry.field(
        description="A BUDGET_WARNING alert is raised when spend passes this share of it."
    )
    updated_at: datetime = strawberry.field(description="When it was last set.")
    location_id: strawberry.Private[int]
    updated_by_id: strawberry.Private[int | None]

    location: Location = relation(
        network_models.Location, "location_id", description="The department it is for."
    )
    updated_by: User | None = relation(
        network_models.User, "updated_by_id", description="Who last set it."
    )

    @strawberry.field(description='The period as "2026-12", "2026-Q4" or "2026".')
    def period(self) -> str:
        return costing.Period(self.period_kind, self.period_start, self.period_end).label

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.Budget,
            node_ids,
            cls.from_model,
            permission=Permission.FINANCE_READ,
            location_of=lambda row: row.location_id,
        )


@strawberry.type(description="A page of budgets.")
class BudgetConnection(CountedConnection[Budget]):
    pass


@strawberry.type(description="Spend of one group in the period, against its budget.")
class SpendRow:
    atc_code: str | None = strawberry.field(
        description="The ATC code (grouped by ATC; empty for products without one)."
    )
    spend: Decimal = strawberry.field(
        description="Dispensed plus disposed minus returned, at average cost."
    )
    budget: Decimal | None = strawberry.field(
        description="The location's budget for the period (by LOCATION only; null if none)."
    )
    remaining: Decimal | None = strawberry.field(description="budget - spend; null w/o budget.")
    percent: Decimal | None = strawberry.field(description="spend / budget x 100; null w/o one.")
    forecast: Decimal = strawberry.field(
        description="Spend expected by the period's end: so far plus the projection."
    )
    forecast_source: ForecastSource = strawberry.field(  # type: ignore[valid-type]
        description="How the projection was made for this row."
    )
    location_id: strawberry.Private[int | None]
    supplier_id: strawberry.Private[int | None]

    location: Location | None = relation(
        network_models.Location, "location_id", description="Grouped by LOCATION: which one."
    )
    supplier: Organisation | None = relation(
        network_models.Organisation,
        "supplier_id",
        description="Grouped by SUPPLIER: who the lots came from; null when unknown.",
    )

    @classmethod
    def from_row(cls, row: service.SpendRow) -> SpendRow:
        return cls(
            atc_code=row.key,
            spend=row.spend,
            budget=row.budget,
            remaining=row.remaining,
            percent=row.percent,
            forecast=row.forecast,
            forecast_source=row.forecast_source,
            location_id=row.location_id,
            supplier_id=row.supplier_id,
        )


@strawberry.type(description="An organisation's spend in one period, grouped, against budget.")
class SpendReport:
    period: str = strawberry.field(description="The period asked for.")
    period_kind: PeriodKind = strawberry.field(description="Its length.")  # type: ignore[valid-type]
    period_start: date = strawberry.field(description="First day.")
    period_end: date = strawberry.field(description="Day after the last.")
    as_of: date = strawberry.field(description="The day the projection starts after.")
    currency: str = strawberry.field(description="ISO 4217 code of every amount here.")
    group_by: SpendGrouping = strawberry.field(description="What the rows are.")  # type: ignore[valid-type]
    rows: list[SpendRow] = strawberry.field(description="Largest spend first.")
    spend: Decimal = strawberry.field(description="All rows' spend.")
    budget: Decimal | None = strawberry.field(description="All rows' budgets (by LOCATION).")
    forecast: Decimal = strawberry.field(description="All rows' forecast to period end.")
    organisation_id: strawberry.Private[int]

    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="Whose spend."
    )


@strawberry.type(description="One dispense (or return) to a patient, at its cost, for billing.")
class PatientUsage:
    patient_reference: str = strawberry.field(description="The patient as the caller gave it.")
    encounter: str | None = strawberry.field(description="The encounter or other reference.")
    quantity: int = strawberry.field(description="Packs dispensed; a return is negative.")
    unit_cost: Decimal = strawberry.field(description="Average cost of one pack at the time.")
    total: Decimal = strawberry.field(description="quantity x unit cost.")
    dispensed_at: datetime = strawberry.field(description="When it happened.")
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int]

    product: Product = relation(catalog_models.Product, "product_id", description="What.")
    location: Location = relation(network_models.Location, "location_id", description="Where.")

    @classmethod
    def from_row(cls, row: service.UsageRow) -> PatientUsage:
        return cls(
            patient_reference=row.patient_reference,
            encounter=row.encounter,
            quantity=row.quantity,
            unit_cost=row.unit_cost,
            total=row.total,
            dispensed_at=row.dispensed_at,
            product_id=row.product_id,
            location_id=row.location_id,
        )


@strawberry.type(description="A page of per-patient usage rows, in ledger order.")
class PatientUsagePage:
    rows: list[PatientUsage] = strawberry.field(description="This page's rows.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool = strawberry.field(description="Whether more rows follow.")
    page: strawberry.Private[Page[service.UsageRow]]

    @strawberry.field(description="Rows in the whole range (counted only when asked).")
    async def total_count(self) -> int:
        return await self.page.total()


@strawberry.type
class Query:
    @strawberry.field(description="Budgets of your organisation in your scope, oldest first.")
    async def budgets(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        location: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this location.")
        ] = None,
        period: Annotated[
            str | None,
            strawberry.argument(description='Only this period ("2026-12", "2026-Q4", "2026").'),
        ] = None,
    ) -> BudgetConnection:
        page = await info.context.services.finance.budgets_page(
            info.context.require_principal(),
            location_id=optional_id(location, Location, "location"),
            period=period,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(BudgetConnection, page, Budget.from_model)

    @strawberry.field(
        description="Spend in a period (dispensed + disposed - returned, valued at moving "
        "average cost) grouped by location, ATC code or supplier, against budgets, with the "
        "forecast to the period's end.",
        metadata=weigh(50),
    )
    async def spend_report(
        self,
        info: Info,
        period: PeriodArg,
        group_by: Annotated[
            SpendGrouping,  # type: ignore[valid-type]
            strawberry.argument(description="What the rows are."),
        ],
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Whose (global roles only; default: yours)."),
        ] = None,
    ) -> SpendReport:
        report = await info.context.services.finance.spend_report(
            info.context.require_principal(),
            period=period,
            group_by=str(group_by),
            organisation_id=optional_id(organisation, Organisation, "organisation"),
        )
        return SpendReport(
            period=report.period.label,
            period_kind=report.period.kind,
            period_start=report.period.start,
            period_end=report.period.end,
            as_of=report.as_of,
            currency=report.currency,
            group_by=service.SpendGrouping(report.group_by),
            rows=[SpendRow.from_row(r) for r in report.rows],
            spend=report.spend,
            budget=report.budget,
            forecast=report.forecast,
            organisation_id=report.organisation_id,
        )

    @strawberry.field(
        description="Dispenses and returns with a patient reference and their cost, for "
        "billing (also GET /reports/patient-usage.csv?from=&to=). Needs finance and stock "
        "read; only your locations.",
        metadata=weigh(20),
    )
    async def patient_usage(
        self,
        info: Info,
        from_: Annotated[
            date, strawberry.argument(name="from", description="First day (inclusive, UTC).")
        ],
        to: Annotated[date, strawberry.argument(description="Last day (inclusive, UTC).")],
        first: PageSize,
        after: PageAfter = None,
        location: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this location.")
        ] = None,
    ) -> PatientUsagePage:
        page = await info.context.services.finance.patient_usage_page(
            info.context.require_principal(),
            since=from_,
            until=to,
            location_id=optional_id(location, Location, "location"),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return PatientUsagePage(
            rows=[PatientUsage.from_row(r) for r in page.rows],
            end_cursor=page.cursors[-1] if page.cursors else None,
            has_next_page=page.has_next_page,
            page=page,
        )


@strawberry.input(description="A location's budget for one period (replaces an earlier one).")
class SetBudgetInput:
    location: relay.GlobalID = strawberry.field(description="The department.")
    period: str = strawberry.field(description='"2026-12", "2026-Q4" or "2026".')
    amount: Decimal = strawberry.field(
        description="In the organisation's currency; finite, 0 or more, at most 4 decimals."
    )
    warning_percent: int = strawberry.field(
        default=90, description="Warn when spend passes this share of the budget (1-100)."
    )


@strawberry.type(description="The budget set, or why not.")
class BudgetPayload:
    budget: Budget | None = strawberry.field(default=None, description="The budget as stored.")
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Set a location's budget for a month, quarter or year (pharmacists and "
        "admins of its organisation); budget alerts are re-evaluated at once."
    )
    async def set_budget(self, info: Info, input: SetBudgetInput) -> BudgetPayload:
        budget, errors = await attempt(
            info,
            lambda p: info.context.services.finance.set_budget(
                p,
                location_id=decode_id(input.location, Location, "location"),
                period=input.period,
                amount=input.amount,
                warning_percent=input.warning_percent,
            ),
        )
        return BudgetPayload(budget=budget and Budget.from_model(budget), errors=errors)
