"""FHIR R4 (validated with fhir.resources' R4B models, identical for these resources) to
Apotheca and back, as pure functions: parsing bodies, reading a MedicationDispense into what
the ledger needs, and the resources we answer with (OperationOutcome, CapabilityStatement,
Bundles).

Code systems (documented in the README):
- medication by GTIN: a Coding with system `https://www.gs1.org/gtin` or `urn:oid:1.3.160`;
- medication by product code: system `https://apotheca.example/fhir/CodeSystem/product`, the
  code is the product's approval number;
- location: `location` is a conditional reference `Location?identifier=[system|]CODE` or a
  Reference with `identifier` (system `https://apotheca.example/fhir/sid/location`, value the
  location code);
- lot: `medicationReference` to a contained Medication whose `batch.lotNumber` names it (and
  `batch.expirationDate`, when given, must agree); without one, first-expired-first-out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydantic import ValidationError

from server.core.errors import DomainError
from server.core.gs1 import normalize_gtin
from server.core.validation import MAX_QUANTITY

GTIN_SYSTEMS = frozenset({"https://www.gs1.org/gtin", "urn:oid:1.3.160"})
PRODUCT_SYSTEM = "https://apotheca.example/fhir/CodeSystem/product"
LOCATION_SYSTEM = "https://apotheca.example/fhir/sid/location"
FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
COMPLETED = "completed"
ENTERED_IN_ERROR = "entered-in-error"
MAX_ENTRIES = 1000  # one transaction Bundle, like recordMovements
MAX_REFERENCE = 100  # Movement.patient_reference / reference
MAX_IDENTIFIER = 300  # FhirDispense.identifier
FUTURE_SKEW = timedelta(minutes=5)


class FhirError(Exception):
    """A refusal answered as an OperationOutcome: HTTP status, issue type, where."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression


def outcome(error: FhirError) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": error.code,
        "diagnostics": error.diagnostics,
    }
    if error.expression:
        issue["expression"] = [error.expression]
    return _validated(OperationOutcome, {"resourceType": "OperationOutcome", "issue": [issue]})


def _validated(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Every resource we answer with passes the same models as what we accept."""
    return json.loads(model.model_validate(data).model_dump_json(exclude_none=True))  # type: ignore[no-any-return]


# --- bodies ----------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(raw: bytes) -> Any:
    """UTF-8 JSON without NaN/Infinity (numbers as Decimal, exactly as sent) and without NUL
    characters anywhere (PostgreSQL cannot store them)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FhirError(400, "structure", f"the body is not UTF-8 ({error.reason})") from None
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise FhirError(400, "structure", f"the body is not valid JSON ({error})") from None
    for path, value in _strings(data, ""):
        if "\x00" in value:
            raise FhirError(400, "invalid", "a NUL character is not allowed", path or None)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FhirError(400, "invalid", "a lone surrogate is not text", path or None) from None
    return data


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield path, key
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _expression(base: str, loc: Sequence[Any]) -> str:
    parts = [base]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def resource_type_of(data: Any, base: str) -> str:
    if not isinstance(data, dict):
        raise FhirError(400, "structure", "a resource must be a JSON object", base)
    kind = data.get("resourceType")
    if not isinstance(kind, str):
        raise FhirError(400, "structure", "the resource has no resourceType", base)
    return kind


def validate(model: Any, data: Any, base: str) -> Any:
    """The resource as a fhir.resources model, or 400 naming the first failing element."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        loc = [x for x in first.get("loc", ()) if x != "__root__"]
        message = str(first.get("msg", "invalid"))
        raise FhirError(400, "invalid", message, _expression(base, loc)) from None
    except (ValueError, TypeError) as error:
        raise FhirError(400, "invalid", str(error), base) from None


# --- MedicationDispense in ---------------------------------------------------------------------


@dataclass(frozen=True)
class Medication:
    gtin: str | None = None
    product_code: str | None = None
    lot_number: str | None = None
    lot_expiry: date | None = None


@dataclass(frozen=True)
class DispenseSpec:
    """What one MedicationDispense asks of the ledger; `base` is its path in the request."""

    base: str
    identifier: str
    status: str
    medication: Medication
    location_code: str
    quantity: int
    patient_reference: str | None
    encounter_reference: str | None
    occurred_at: datetime | None
    resource: dict[str, Any] = field(compare=False)

    def content_hash(self) -> str:
        """What a replay must repeat: everything but the status (entered-in-error changes
        only that) and the path it came in under."""
        body = {
            "medication": [
                self.medication.gtin,
                self.medication.product_code,
                self.medication.lot_number,
                str(self.medication.lot_expiry),
            ],
            "location": self.location_code,
            "quantity": self.quantity,
            "patient": self.patient_reference,
            "encounter": self.encounter_reference,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_dispense(data: Any, base: str, now: datetime) -> DispenseSpec:
    """Validate one MedicationDispense and read what the ledger needs; FhirError naming the
    element otherwise."""
    kind = resource_type_of(data, base)
    if kind != "MedicationDispense":
        raise FhirError(
            400, "invalid", f"expected a MedicationDispense, got {kind}", f"{base}.resourceType"
        )
    model = validate(MedicationDispense, data, base)
    return DispenseSpec(
        base=base,
        identifier=_identifier(model, base),
        status=_status(model, base),
        medication=_medication(model, base),
        location_code=_location(model, base),
        quantity=_quantity(model, base),
        patient_reference=_reference(model.subject, f"{base}.subject"),
        encounter_reference=_reference(model.context, f"{base}.context"),
        occurred_at=_handed_over(model, base, now),
        resource=_plain(data),
    )


def _plain(value: Any) -> Any:
    """The resource as sent (already validated), numbers back from Decimal to JSON's own: what
    is stored and answered. Cheaper than re-serialising the model, by three times."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _identifier(model: Any, base: str) -> str:
    for index, identifier in enumerate(model.identifier or []):
        if identifier.value:
            value = f"{identifier.system or ''}|{identifier.value}"
            if len(value) > MAX_IDENTIFIER:
                raise FhirError(
                    422,
                    "value",
                    f"identifier (system|value) is longer than {MAX_IDENTIFIER} characters",
                    f"{base}.identifier[{index}]",
                )
            return value
    raise FhirError(
        422,
        "required",
        "a MedicationDispense needs an identifier (system and value): it makes a replay safe",
        f"{base}.identifier",
    )


def _status(model: Any, base: str) -> str:
    status = str(model.status)
    if status not in (COMPLETED, ENTERED_IN_ERROR):
        raise FhirError(
            422,
            "not-supported",
            f"status {status} moves no stock: send completed (a dispense) or entered-in-error "
            "(its reversal)",
            f"{base}.status",
        )
    return status


def _codings(concept: Any, path: str) -> Medication | None:
    for index, coding in enumerate(getattr(concept, "coding", None) or []):
        system, code = coding.system, (coding.code or "").strip()
        if not code:
            continue
        where = f"{path}.coding[{index}].code"
        if system in GTIN_SYSTEMS:
            try:
                return Medication(gtin=normalize_gtin(code))
            except DomainError as error:
                raise FhirError(422, "value", f"GTIN {code}: {error.message}", where) from None
        if system == PRODUCT_SYSTEM:
            return Medication(product_code=code)
    return None


def _medication(model: Any, base: str) -> Medication:
    if model.medicationCodeableConcept is not None:
        path = f"{base}.medicationCodeableConcept"
        found = _codings(model.medicationCodeableConcept, path)
        if found is None:
            raise FhirError(422, "code-invalid", _NO_CODE, path)
        return found
    reference = model.medicationReference
    path = f"{base}.medicationReference"
    target = (reference.reference or "") if reference is not None else ""
    if not target.startswith("#"):
        raise FhirError(
            422,
            "not-supported",
            "name the medication by a medicationCodeableConcept or a contained Medication "
            "(medicationReference '#id')",
            path,
        )
    for index, contained in enumerate(model.contained or []):
        if contained.get_resource_type() == "Medication" and contained.id == target[1:]:
            where = f"{base}.contained[{index}]"
            found = _codings(contained.code, f"{where}.code")
            if found is None:
                raise FhirError(422, "code-invalid", _NO_CODE, f"{where}.code")
            batch = contained.batch
            if batch is not None and batch.lotNumber:
                expiry = batch.expirationDate
                expires = expiry.date() if isinstance(expiry, datetime) else expiry
                return Medication(found.gtin, found.product_code, batch.lotNumber.strip(), expires)
            return found
    raise FhirError(422, "not-found", f"no contained Medication with id {target[1:]}", path)


_NO_CODE = (
    "no coding names the medication: use a GTIN (system https://www.gs1.org/gtin or "
    f"urn:oid:1.3.160) or a product code (system {PRODUCT_SYSTEM})"
)


def _location(model: Any, base: str) -> str:
    path = f"{base}.location"
    reference = model.location
    if reference is None:
        raise FhirError(
            422,
            "required",
            "say where the packs were dispensed: location Location?identifier=CODE",
            path,
        )
    identifier = reference.identifier
    if identifier is not None and identifier.value:
        if identifier.system not in (None, LOCATION_SYSTEM):
            raise FhirError(
                422, "not-supported", f"location identifiers use {LOCATION_SYSTEM}", path
            )
        return str(identifier.value).strip().upper()
    target = reference.reference or ""
    prefix = "Location?identifier="
    if target.startswith(prefix):
        value = unquote(target[len(prefix) :])
        system, bar, code = value.rpartition("|")
        if bar and system not in ("", LOCATION_SYSTEM):
            raise FhirError(
                422, "not-supported", f"location identifiers use {LOCATION_SYSTEM}", path
            )
        if code.strip():
            return code.strip().upper()
    raise FhirError(
        422,
        "not-supported",
        "name the location by its code: Location?identifier=CODE, or an identifier",
        path,
    )


def _quantity(model: Any, base: str) -> int:
    path = f"{base}.quantity.value"
    value = model.quantity.value if model.quantity is not None else None
    if value is None:
        raise FhirError(422, "required", "how many packs were dispensed: quantity.value", path)
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise FhirError(422, "value", f"quantity {value} is not a number", path) from None
    if not number.is_finite() or (isinstance(value, float) and not math.isfinite(value)):
        raise FhirError(422, "value", "quantity must be a finite number", path)
    if number <= 0:
        raise FhirError(422, "value", f"quantity must be positive, got {number}", path)
    if number > MAX_QUANTITY:
        raise FhirError(422, "value", f"quantity must be at most {MAX_QUANTITY:,}", path)
    if number != number.to_integral_value():
        raise FhirError(422, "value", f"quantity {number} is not a whole number of packs", path)
    return int(number)


def _reference(reference: Any, path: str) -> str | None:
    if reference is None:
        return None
    value = reference.reference
    if not value and reference.identifier is not None and reference.identifier.value:
        value = f"{reference.identifier.system or ''}|{reference.identifier.value}"
    if not value:
        return None
    value = str(value).strip()
    if len(value) > MAX_REFERENCE:
        raise FhirError(422, "value", f"longer than {MAX_REFERENCE} characters", path)
    return value


def _handed_over(model: Any, base: str, now: datetime) -> datetime | None:
    value = model.whenHandedOver
    if value is None:
        return None
    path = f"{base}.whenHandedOver"
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise FhirError(422, "value", "whenHandedOver needs a time with its zone", path)
    if value > now + FUTURE_SKEW:
        raise FhirError(422, "value", "whenHandedOver is in the future", path)
    return value.astimezone(UTC)


# --- Bundles in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One transaction entry: its resource and, for PUT MedicationDispense/{id}, that id."""

    resource: Any
    base: str
    target_id: int | None = None


def transaction_entries(data: Any) -> list[Entry]:
    """A transaction Bundle's MedicationDispense entries (POST, or PUT to one of ours)."""
    base = "Bundle"
    raw_entries = data.get("entry") if isinstance(data, dict) else None
    # The Bundle's own elements here, each entry's resource once, by read_dispense: validating
    # the resources inside the Bundle too would double the cost of a large transaction.
    skeleton = dict(data)
    if isinstance(raw_entries, list):
        skeleton["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in raw_entries
        ]
    bundle = validate(Bundle, skeleton, base)
    if bundle.type != "transaction":
        raise FhirError(
            422, "not-supported", "only transaction Bundles are accepted here", "Bundle.type"
        )
    raw_entries = raw_entries or []
    if not raw_entries:
        raise FhirError(422, "required", "the Bundle has no entries", "Bundle.entry")
    if len(raw_entries) > MAX_ENTRIES:
        raise FhirError(
            422, "too-costly", f"at most {MAX_ENTRIES} entries per Bundle", "Bundle.entry"
        )
    entries: list[Entry] = []
    for index, entry in enumerate(bundle.entry):
        path = f"Bundle.entry[{index}]"
        request = entry.request
        method = str(request.method) if request is not None else "POST"
        url = (request.url or "") if request is not None else "MedicationDispense"
        target: int | None = None
        if method == "PUT":
            target = resource_id(url.removeprefix("MedicationDispense/"), f"{path}.request.url")
        elif method != "POST" or url.split("?")[0] != "MedicationDispense":
            raise FhirError(
                422,
                "not-supported",
                "entries POST to MedicationDispense (or PUT MedicationDispense/{id})",
                f"{path}.request",
            )
        resource = raw_entries[index].get("resource")
        if resource is None:
            raise FhirError(400, "required", "the entry has no resource", f"{path}.resource")
        entries.append(Entry(resource, f"{path}.resource", target))
    return entries


def resource_id(value: str, path: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 2**31:
        raise FhirError(404, "not-found", f"no MedicationDispense {value[:40]}", path)
    return int(value)


# --- resources out ---------------------------------------------------------------------------


def dispense_resource(
    row_id: int, resource: dict[str, Any], status: str, updated: datetime
) -> dict[str, Any]:
    """The stored MedicationDispense as we hold it: our id, its current status."""
    body = dict(resource)
    body["id"] = str(row_id)
    body["status"] = status
    body["meta"] = {"lastUpdated": updated.astimezone(UTC).isoformat()}
    return body


def transaction_response(entries: list[tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    """`(resource, created)` per request entry, in order."""
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {
                "resource": resource,
                "response": {
                    "status": "201 Created" if created else "200 OK",
                    "location": f"MedicationDispense/{resource['id']}",
                    "lastModified": resource["meta"]["lastUpdated"],
                },
            }
            for resource, created in entries
        ],
    }


def searchset(
    resources: list[dict[str, Any]], total: int, self_url: str, next_url: str | None
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"MedicationDispense/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def capability_statement(base_url: str, published: datetime) -> dict[str, Any]:
    """What this endpoint does, validated as a CapabilityStatement."""
    return _validated(
        CapabilityStatement,
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": published.astimezone(UTC).isoformat(),
            "publisher": "Apotheca",
            "kind": "instance",
            "software": {"name": "Apotheca"},
            "implementation": {
                "description": "Apotheca medication dispensing (DISPENSE / RETURN movements)",
                "url": base_url,
            },
            "fhirVersion": FHIR_VERSION,
            "format": [FHIR_JSON, "json"],
            "rest": [
                {
                    "mode": "server",
                    "documentation": (
                        "Medication by GTIN (https://www.gs1.org/gtin, urn:oid:1.3.160) or "
                        f"product code ({PRODUCT_SYSTEM}); location by code "
                        f"(Location?identifier=CODE, {LOCATION_SYSTEM}); lot by a contained "
                        "Medication's batch.lotNumber, else first-expired-first-out."
                    ),
                    "security": {
                        "service": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/"
                                        "restful-security-service",
                                        "code": "OAuth",
                                    }
                                ]
                            }
                        ],
                        "description": "Bearer access tokens from /auth/token (staff, or "
                        "OAuth2 client credentials with the dispense:write scope).",
                    },
                    "resource": [
                        {
                            "type": "MedicationDispense",
                            "interaction": [
                                {"code": "create"},
                                {"code": "update"},
                                {"code": "read"},
                                {"code": "search-type"},
                            ],
                            "conditionalCreate": False,
                            "searchParam": [
                                {
                                    "name": "patient",
                                    "type": "reference",
                                    "documentation": "subject reference, e.g. Patient/123",
                                },
                                {"name": "identifier", "type": "token"},
                                {"name": "_count", "type": "number"},
                            ],
                        }
                    ],
                    "interaction": [{"code": "transaction"}],
                }
            ],
        },
    )
