"""HTTP beside GraphQL: the billing export,
GET /reports/patient-usage.csv?from=YYYY-MM-DD&to=YYYY-MM-DD[&location=<ID>].
The bearer token and the rules are the GraphQL API's (`patientUsage`); refusals answer in its
error shape with a stable code (401, 403, 400)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.core.downloads import attachment, bearer_principal, csv_text, download
from server.core.errors import InvalidInput
from server.core.graphql import decode_id

if TYPE_CHECKING:
    from server.services import Services

COLUMNS = (
    "patient_reference",
    "encounter",
    "product",
    "quantity",
    "unit_cost",
    "total",
    "currency",
    "dispensed_at",
    "location",
)


def _day(request: Request, name: str) -> date:
    raw = request.query_params.get(name)
    if not raw:
        raise InvalidInput(f"'{name}' (YYYY-MM-DD) is required", field=name)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{raw!r} is not a date (YYYY-MM-DD)", field=name) from None


def _location(request: Request) -> int | None:
    raw = request.query_params.get("location")
    return decode_id(raw, "Location", "location") if raw else None


def finance_routes(services: Services) -> list[Route]:
    @download
    async def patient_usage_csv(request: Request) -> Response:
        principal = await bearer_principal(services.network, request)
        since, until = _day(request, "from"), _day(request, "to")
        rows = await services.finance.patient_usage(
            principal, since=since, until=until, location_id=_location(request)
        )
        currency = await services.finance.currency_of(principal) if rows else ""
        csv = csv_text(
            COLUMNS,
            (
                (
                    row.patient_reference,
                    row.encounter,
                    row.product_name,
                    row.quantity,
                    f"{row.unit_cost:.6f}",
                    f"{row.total:.4f}",
                    currency,
                    row.dispensed_at.isoformat(),
                    row.location_code,
                )
                for row in rows
            ),
        )
        filename = f"patient-usage-{since.isoformat()}-{until.isoformat()}.csv"
        return attachment(csv, "text/csv; charset=utf-8", filename)

    return [Route("/reports/patient-usage.csv", patient_usage_csv, methods=["GET"])]
