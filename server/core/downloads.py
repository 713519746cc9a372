"""Report downloads over plain HTTP (CSV and PDF files a spreadsheet or a printer opens).

One way for every download route to do the same four things: read the caller from
`Authorization: Bearer <access token>` like /graphql, refuse in the API's error shape
(`{"errors": [{"message", "extensions": {"code", "field"}}]}` with 400/401/403/404), write CSV
that a spreadsheet can never run as a formula (OWASP "CSV injection": a cell starting with
= + - @ or a control character gets a leading apostrophe), and answer an attachment nobody
caches (patient references and controlled-drug registers are not for shared caches).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.core.errors import DomainError, ErrorCode, Unauthenticated

if TYPE_CHECKING:
    from server.core.security import Principal
    from server.network.service import NetworkService

_STATUS = {ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403, ErrorCode.NOT_FOUND: 404}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | None


def spreadsheet_safe(value: str | None) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe; None is empty."""
    value = value or ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _cell(value: Cell) -> str | int | float:
    return spreadsheet_safe(value) if value is None or isinstance(value, str) else value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]], *, crlf: bool = True) -> str:
    """CSV with a header row; every text cell made spreadsheet-safe, numbers written as they
    are (a negative quantity is a number, not a formula). RFC 4180 line ends by default."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(cell) for cell in row])
    return out.getvalue()


async def bearer_principal(network: NetworkService, request: Request) -> Principal:
    """The caller of a download: the same tokens and checks as /graphql."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send 'Authorization: Bearer <access token>'")
    return await network.authenticate(
        token.strip(), request_id=request.headers.get("x-request-id") or uuid.uuid4().hex
    )


def refusal(error: DomainError) -> JSONResponse:
    """A refused download, in the GraphQL error shape every client already reads."""
    extensions = {"code": error.code.value, "field": error.field}
    body = {"errors": [{"message": error.message, "extensions": extensions}]}
    status = _STATUS.get(error.code, 400)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def attachment(content: str | bytes, media_type: str, filename: str) -> Response:
    """A file to save, never kept by a shared cache."""
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def download(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A download route whose domain refusals become `refusal` answers."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except DomainError as error:
            return refusal(error)

    return route
