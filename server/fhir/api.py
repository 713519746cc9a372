"""The FHIR R4 endpoint under /fhir: plain Starlette routes (not GraphQL), thin like resolvers.

    GET  /fhir/metadata                    CapabilityStatement
    POST /fhir/MedicationDispense          one dispense (or its entered-in-error reversal)
    PUT  /fhir/MedicationDispense/{id}     the same, addressed to a stored one
    GET  /fhir/MedicationDispense/{id}     one stored dispense
    GET  /fhir/MedicationDispense?patient=Patient/123&identifier=sys|val&_count=20
    POST /fhir                             a transaction Bundle of MedicationDispense entries

Authentication is the API's: `Authorization: Bearer <access token>` from /auth/token (staff,
or OAuth2 client credentials with `dispense:write` / `stock:read`). Every refusal is an
OperationOutcome with the failing element's path in `expression`.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core.db import utcnow
from server.core.errors import DomainError
from server.core.security import Principal
from server.fhir import mapping
from server.fhir.mapping import FhirError
from server.fhir.service import Stored, refusal
from server.services import Services

log = logging.getLogger("apotheca.fhir")
DEFAULT_COUNT = 20


class FhirResponse(JSONResponse):
    media_type = mapping.FHIR_JSON


def _resource(stored: Stored) -> dict[str, Any]:
    return mapping.dispense_resource(stored.id, stored.resource, stored.status, stored.updated_at)


def _error(error: FhirError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return FhirResponse(mapping.outcome(error), status_code=error.status, headers=headers)


@functools.lru_cache(maxsize=256)
def rate_limited_outcome(message: str, retry_after: int) -> tuple[bytes, bytes]:
    """A 429's body on /fhir (server.core.ratelimit answers it): an OperationOutcome, code
    "throttled", cached like the GraphQL one."""
    body = mapping.outcome(FhirError(429, "throttled", f"{message}; retry in {retry_after} s"))
    return json.dumps(body, separators=(",", ":")).encode(), mapping.FHIR_JSON.encode()


def too_large(max_bytes: int) -> Response:
    """A body over the size limit on /fhir (server.app.BodySizeLimit): 413 OperationOutcome,
    code "too-costly", as FHIR clients read refusals."""
    return _error(FhirError(413, "too-costly", f"request body over {max_bytes} bytes"))


def fhir_routes(services: Services) -> list[Route]:
    published = utcnow()

    async def principal_of(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise FhirError(401, "login", "send 'Authorization: Bearer <access token>'")
        try:
            return await services.network.authenticate(
                token.strip(), request_id=request.headers.get("x-request-id") or uuid.uuid4().hex
            )
        except DomainError as error:
            raise FhirError(401, "login", error.message) from None

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except FhirError as error:
                return _error(error)
            except DomainError as error:
                return _error(refusal(error, None))
            except Exception:
                log.exception("FHIR request failed")
                return _error(FhirError(500, "exception", "internal error"))

        return run

    async def metadata(request: Request) -> Response:
        base = str(request.base_url).rstrip("/") + "/fhir"
        return FhirResponse(mapping.capability_statement(base, published))

    async def submit(
        request: Request, entries: list[mapping.Entry], *, bundle: bool
    ) -> list[Stored]:
        principal = await principal_of(request)
        now = utcnow()
        specs = [mapping.read_dispense(e.resource, e.base, now) for e in entries]
        return await services.fhir.submit(principal, specs, [e.target_id for e in entries])

    async def create(request: Request) -> Response:
        data = mapping.parse_body(await request.body())
        (stored,) = await submit(request, [mapping.Entry(data, "MedicationDispense")], bundle=False)
        return _written(stored)

    async def update(request: Request) -> Response:
        target = mapping.resource_id(request.path_params["id"], "MedicationDispense.id")
        data = mapping.parse_body(await request.body())
        entry = mapping.Entry(data, "MedicationDispense", target)
        (stored,) = await submit(request, [entry], bundle=False)
        return _written(stored)

    def _written(stored: Stored) -> Response:
        body = _resource(stored)
        return FhirResponse(
            body,
            status_code=201 if stored.created and stored.status == mapping.COMPLETED else 200,
            headers={"Location": f"MedicationDispense/{stored.id}/_history/1"},
        )

    async def transaction(request: Request) -> Response:
        data = mapping.parse_body(await request.body())
        kind = mapping.resource_type_of(data, "Bundle")
        if kind != "Bundle":
            raise FhirError(
                400, "invalid", f"POST /fhir takes a transaction Bundle, not {kind}", "resourceType"
            )
        entries = mapping.transaction_entries(data)
        stored = await submit(request, entries, bundle=True)
        return FhirResponse(
            mapping.transaction_response(
                [(_resource(s), s.created and s.status == mapping.COMPLETED) for s in stored]
            )
        )

    async def read(request: Request) -> Response:
        principal = await principal_of(request)
        target = mapping.resource_id(request.path_params["id"], "MedicationDispense.id")
        return FhirResponse(_resource(await services.fhir.read(principal, target)))

    async def search(request: Request) -> Response:
        principal = await principal_of(request)
        params = request.query_params
        unknown = sorted(set(params) - {"patient", "identifier", "_count", "_after", "_format"})
        if unknown:
            raise FhirError(400, "not-supported", f"unknown search parameter {unknown[0]}")
        patient = params.get("patient")
        if patient is not None and "/" not in patient and "|" not in patient:
            patient = f"Patient/{patient}"
        count = _number(params.get("_count"), "_count", DEFAULT_COUNT)
        after = _number(params.get("_after"), "_after", None)
        page = await services.fhir.search(
            principal,
            patient=patient,
            identifier=params.get("identifier"),
            count=count,
            after=after,
        )
        base = str(request.base_url).rstrip("/") + "/fhir/MedicationDispense"
        kept = {k: v for k, v in params.items() if k not in ("_after",)}
        next_url = None
        if page.next_after is not None:
            next_url = f"{base}?{urlencode({**kept, '_after': page.next_after})}"
        self_url = f"{base}?{urlencode(params)}" if params else base
        return FhirResponse(
            mapping.searchset([_resource(s) for s in page.rows], page.total, self_url, next_url)
        )

    return [
        Route("/fhir/metadata", guarded(metadata), methods=["GET"]),
        Route("/fhir/MedicationDispense", guarded(create), methods=["POST"]),
        Route("/fhir/MedicationDispense", guarded(search), methods=["GET"]),
        Route("/fhir/MedicationDispense/{id}", guarded(read), methods=["GET"]),
        Route("/fhir/MedicationDispense/{id}", guarded(update), methods=["PUT"]),
        Route("/fhir", guarded(transaction), methods=["POST"]),
        Route("/fhir/", guarded(transaction), methods=["POST"]),
    ]


def _number(value: str | None, name: str, default: int | None) -> Any:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise FhirError(400, "value", f"{name} must be a positive whole number", name)
    return int(value)
