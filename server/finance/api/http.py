"""HTTP beside GraphQL: the billing export,
GET /reports/patient-usage.csv?from=YYYY-MM-DD&to=YYYY-MM-DD[&location=<ID>].
The bearer token and the rules are the GraphQL API's (`patientUsage`); refusals answer in its
error shape with a stable code (401, 403, 400)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core.errors import DomainError, ErrorCode, InvalidInput, Unauthenticated
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
_STATUS = {ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403, ErrorCode.NOT_FOUND: 404}


def spreadsheet_safe(value: str | None) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe."""
    value = value or ""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


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
    async def patient_usage_csv(request: Request) -> Response:
        try:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("use 'Authorization: Bearer <access token>'")
            principal = await services.network.authenticate(
                token.strip(), request_id=request.headers.get("x-request-id") or uuid.uuid4().hex
            )
            since, until = _day(request, "from"), _day(request, "to")
            rows = await services.finance.patient_usage(
                principal, since=since, until=until, location_id=_location(request)
            )
            currency = await services.finance.currency_of(principal) if rows else ""
        except DomainError as error:
            body: dict[str, Any] = {
                "errors": [
                    {
                        "message": error.message,
                        "extensions": {"code": error.code.value, "field": error.field},
                    }
                ]
            }
            return JSONResponse(body, status_code=_STATUS.get(error.code, 400))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    spreadsheet_safe(row.patient_reference),
                    spreadsheet_safe(row.encounter),
                    spreadsheet_safe(row.product_name),
                    row.quantity,
                    f"{row.unit_cost:.6f}",
                    f"{row.total:.4f}",
                    currency,
                    row.dispensed_at.isoformat(),
                    spreadsheet_safe(row.location_code),
                ]
            )
        filename = f"patient-usage-{since.isoformat()}-{until.isoformat()}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="{filename}"',
                "cache-control": "no-store",
            },
        )

    return [Route("/reports/patient-usage.csv", patient_usage_csv, methods=["GET"])]
