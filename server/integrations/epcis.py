"""EPCIS 2.0 (JSON-LD) mapping, both ways, as pure functions: no database, no I/O.

Export: one ledger movement becomes one ObjectEvent.
- `quantityList` holds one lot-level class: the GS1 Digital Link `https://id.gs1.org/01/{gtin14}
  /10/{batch}` (an `urn:epc:idpat:sgtin` pattern cannot carry the lot; EPCIS 2.0 accepts Digital
  Link URIs). A product without a GTIN gets `https://apotheca.example/product/{approval}/lot/
  {batch}`. Quantities are packs (no `uom`).
- `bizStep`, `disposition` and `action` per kind (CBV 2.0 short names), see `KIND_VOCABULARY`.
- `readPoint` and `bizLocation` are the location: `https://id.gs1.org/414/{gln}/254/{code}`
  when the reporting organisation has a GLN (and the code fits AI 254), else
  `https://apotheca.example/location/{code}`.
- `sourceList`/`destinationList` name the parties (`owning_party` and `possessing_party`: in
  Apotheca the reporter owns and holds its stock) as `https://id.gs1.org/417/{gln}` or
  `https://apotheca.example/org/{name}`: the reporter on its side of the movement, the
  counterparty (if any) on the other.
- Apotheca extensions (prefix `apotheca:` = https://apotheca.example/epcis/) keep what EPCIS
  has no field for, so a round trip is exact: the original kind and signed quantity (ADJUST and
  COUNT carry a sign; TRANSFER_* and RETURN share CBV steps with SHIP/RECEIVE), reporter,
  counterparty, manufacturer, expiry, reference, reason and the source movement's id. Patient
  references are personal data and never exported.
- Event IDs are hash-based (`ni:///sha-256;{hex}?ver=CBV2.0`): the SHA-256 of the event's
  canonical JSON (sorted keys, no whitespace) without its `eventID`. The source movement's id is
  part of the content, so two identical-looking movements still get distinct IDs, and exporting
  the same movements twice gives identical events.

Import: `parse_event` turns one ObjectEvent into a `ParsedEvent` (what Apotheca needs to write
movements) or raises `Unmappable` with the reason. It accepts lot-level classes as Digital Link
or `urn:epc:class:lgtin:` (LGTIN), instance-level `urn:epc:id:sgtin:` / Digital Link `/21/`
EPCs (quantity = number of EPCs; the lot then comes from the EPC, `ilmd` lotNumber or the
Apotheca extension), and parties as Digital Link GLNs, `pgln`/`sgln` URNs or Apotheca URIs.
Looking things up (GTINs, lots, organisations, locations) is the service's job.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from jsonschema import Draft7Validator, FormatChecker

from server.core.errors import InvalidInput
from server.core.gs1 import gtin_check_digit, normalize_gtin
from server.inventory.models import MovementKind

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
PREFIX = "apotheca"
NAMESPACE = "https://apotheca.example/epcis/"
CONTEXT: list[Any] = [EPCIS_CONTEXT, {PREFIX: NAMESPACE}]
APOTHECA_BASE = "https://apotheca.example"
DIGITAL_LINK_BASE = "https://id.gs1.org"
SCHEMA_VERSION = "2.0"
EVENT_ID_PREFIX = "ni:///sha-256;"
EVENT_ID_SUFFIX = "?ver=CBV2.0"
MAX_EVENT_ID_LENGTH = 200  # EpcisEvent.event_id

K = MovementKind


@dataclass(frozen=True)
class Vocabulary:
    biz_step: str
    disposition: str
    action: str


KIND_VOCABULARY: dict[MovementKind, Vocabulary] = {
    K.PRODUCE: Vocabulary("commissioning", "active", "ADD"),
    K.SHIP: Vocabulary("shipping", "in_transit", "OBSERVE"),
    K.RECEIVE: Vocabulary("receiving", "in_progress", "OBSERVE"),
    K.TRANSFER_OUT: Vocabulary("shipping", "in_transit", "OBSERVE"),
    K.TRANSFER_IN: Vocabulary("receiving", "in_progress", "OBSERVE"),
    K.DISPENSE: Vocabulary("dispensing", "dispensed", "OBSERVE"),
    K.RETURN: Vocabulary("receiving", "returned", "OBSERVE"),
    K.DISPOSE: Vocabulary("destroying", "destroyed", "DELETE"),
    K.ADJUST: Vocabulary("inspecting", "active", "OBSERVE"),
    K.COUNT: Vocabulary("stock_taking", "active", "OBSERVE"),
}
# Events from systems that do not use Apotheca (no `apotheca:kind`): the kind by CBV bizStep.
FOREIGN_BIZ_STEPS: dict[str, MovementKind] = {
    "commissioning": K.PRODUCE,
    "shipping": K.SHIP,
    "receiving": K.RECEIVE,
    "accepting": K.RECEIVE,
    "dispensing": K.DISPENSE,
    "retail_selling": K.DISPENSE,
    "destroying": K.DISPOSE,
}
SIGNED_KINDS = frozenset({K.ADJUST, K.COUNT})
# Which side the counterparty is on: outflows hand stock to it, the rest take stock from it.
OUTFLOW_KINDS = frozenset({K.SHIP, K.TRANSFER_OUT, K.DISPENSE, K.DISPOSE})
PARTY_TYPES = ("owning_party", "possessing_party")
# Units of measure that count packs (UN/ECE rec. 20: each, piece, one).
COUNTABLE_UOMS = frozenset({"EA", "H87", "C62"})
UNSUPPORTED_TYPES = {
    "AggregationEvent": "packing into or out of containers moves no stock between holders",
    "TransformationEvent": "inputs turned into new outputs have no movement kind in the ledger",
    "TransactionEvent": "linking objects to business transactions moves no stock",
    "AssociationEvent": "associating assets moves no stock",
}
_CBV_PREFIXES = (
    "urn:epcglobal:cbv:bizstep:",
    "urn:epcglobal:cbv:disp:",
    "urn:epcglobal:cbv:sdt:",
    "https://ref.gs1.org/cbv/BizStep-",
    "https://ref.gs1.org/cbv/Disp-",
    "https://ref.gs1.org/cbv/SDT-",
    "https://gs1.org/voc/BizStep-",
    "https://gs1.org/voc/Disp-",
    "https://gs1.org/voc/SDT-",
)
_CSET82 = re.compile(r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$")  # GS1 AI 254 values


class Unmappable(Exception):
    """An event Apotheca cannot turn into movements; `reason` says why, for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnEpcisDocument(ValueError):
    """The whole input is not an EPCIS document: nothing to report event by event."""


# --- identifiers ---------------------------------------------------------------------------------


def _q(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True)
class PartyRef:
    """An organisation as a document names it: by GLN, or by its Apotheca name."""

    gln: str | None = None
    name: str | None = None

    def uri(self) -> str:
        if self.gln:
            return f"{DIGITAL_LINK_BASE}/417/{self.gln}"
        return f"{APOTHECA_BASE}/org/{_q(self.name or '')}"

    def describe(self) -> str:
        return f"GLN {self.gln}" if self.gln else repr(self.name)


@dataclass(frozen=True)
class LocationRef:
    """A place as a document names it: a GLN (with an extension), or an Apotheca code."""

    gln: str | None = None
    code: str | None = None


def location_uri(organisation_gln: str | None, code: str) -> str:
    if organisation_gln and _CSET82.match(code):
        return f"{DIGITAL_LINK_BASE}/414/{organisation_gln}/254/{_q(code)}"
    return f"{APOTHECA_BASE}/location/{_q(code)}"


def class_uri(gtin: str | None, approval_number: str, batch: str) -> str:
    if gtin:
        return f"{DIGITAL_LINK_BASE}/01/{gtin}/10/{_q(batch)}"
    return f"{APOTHECA_BASE}/product/{_q(approval_number)}/lot/{_q(batch)}"


def reference_uri(reference: str) -> str:
    return f"{APOTHECA_BASE}/reference/{_q(reference)}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_event_id(event: Any) -> str:
    """Hash-based event ID of an event's content (its own `eventID` left out)."""
    content = (
        {k: v for k, v in event.items() if k != "eventID"} if isinstance(event, dict) else event
    )
    digest = hashlib.sha256(canonical_json(content).encode()).hexdigest()
    return f"{EVENT_ID_PREFIX}{digest}{EVENT_ID_SUFFIX}"


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- export --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportMovement:
    """What the export needs of one movement, with its lot, product, location and parties."""

    movement_id: int
    kind: MovementKind
    quantity: int  # signed, as in the ledger
    occurred_at: datetime
    gtin: str | None
    approval_number: str
    batch_number: str
    expiry_date: date
    location_code: str
    reporter: PartyRef
    counterparty: PartyRef | None = None
    manufacturer: PartyRef | None = None
    reference: str | None = None
    reason: str | None = None


def _ext(name: str) -> str:
    return f"{PREFIX}:{name}"


def movement_event(m: ExportMovement) -> dict[str, Any]:
    """One ObjectEvent for one movement, with its deterministic hash-based event ID."""
    vocabulary = KIND_VOCABULARY[m.kind]
    location = location_uri(m.reporter.gln, m.location_code)
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": format_time(m.occurred_at),
        "eventTimeZoneOffset": "+00:00",
        "action": vocabulary.action,
        "bizStep": vocabulary.biz_step,
        "disposition": vocabulary.disposition,
        "quantityList": [
            {
                "epcClass": class_uri(m.gtin, m.approval_number, m.batch_number),
                "quantity": abs(m.quantity),
            }
        ],
        "readPoint": {"id": location},
        "bizLocation": {"id": location},
    }
    if m.reference:
        event["bizTransactionList"] = [{"bizTransaction": reference_uri(m.reference)}]
    here = [m.reporter.uri()]
    there = [m.counterparty.uri()] if m.counterparty else []
    outflow = m.quantity < 0
    sources, destinations = (here, there) if outflow else (there, here)
    if sources:
        event["sourceList"] = [{"type": t, "source": s} for s in sources for t in PARTY_TYPES]
    if destinations:
        event["destinationList"] = [
            {"type": t, "destination": d} for d in destinations for t in PARTY_TYPES
        ]
    if vocabulary.action == "ADD":
        event["ilmd"] = {
            "cbvmda:lotNumber": m.batch_number,
            "cbvmda:itemExpirationDate": m.expiry_date.isoformat(),
        }
    event[_ext("movement")] = m.movement_id
    event[_ext("kind")] = m.kind.value
    event[_ext("quantity")] = m.quantity
    event[_ext("reporter")] = m.reporter.uri()
    if m.counterparty:
        event[_ext("counterparty")] = m.counterparty.uri()
    if m.manufacturer:
        event[_ext("manufacturer")] = m.manufacturer.uri()
    event[_ext("expiryDate")] = m.expiry_date.isoformat()
    if m.reference:
        event[_ext("reference")] = m.reference
    if m.reason:
        event[_ext("reason")] = m.reason
    return {"eventID": hash_event_id(event), **event}


def epcis_document(
    events: list[dict[str, Any]], *, creation_date: datetime, complete: bool = True
) -> dict[str, Any]:
    """The EPCISDocument around `events`. `apotheca:complete` is false when a limit cut the
    export short (ask again with `since` set to the last event's time)."""
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": format_time(creation_date),
        "epcisBody": {"eventList": events},
        _ext("complete"): complete,
    }


# --- validation (the export is checked against GS1's JSON schema in the tests) ------------------

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[^\s\"<>\\^`{|}%]|%[0-9A-Fa-f]{2})*$")
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def is_uri(value: object) -> bool:
    """RFC 3986 absolute URI (scheme, then only allowed characters and valid %-escapes)."""
    return not isinstance(value, str) or bool(_URI.match(value))


def is_date_time(value: object) -> bool:
    """RFC 3339 date-time with an offset."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


def schema_validator(schema: dict[str, Any]) -> Draft7Validator:
    """A draft-07 validator for GS1's EPCIS schema that also checks `uri` and `date-time`
    formats, offline (every `$ref` of the schema points inside the schema itself)."""
    checker = FormatChecker(formats=())
    checker.checks("uri")(is_uri)
    checker.checks("date-time")(is_date_time)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=checker)


# --- import: reading a document ------------------------------------------------------------------


def document_events(document: Any) -> list[Any]:
    """The event list of an EPCISDocument (or an EPCISQueryDocument's results)."""
    if not isinstance(document, dict):
        raise NotAnEpcisDocument("an EPCIS document is a JSON object")
    kind = document.get("type")
    body = document.get("epcisBody")
    if kind == "EPCISDocument" and isinstance(body, dict):
        events = body.get("eventList")
    elif kind == "EPCISQueryDocument" and isinstance(body, dict):
        results = body.get("queryResults")
        results_body = results.get("resultsBody") if isinstance(results, dict) else None
        events = results_body.get("eventList") if isinstance(results_body, dict) else None
    else:
        raise NotAnEpcisDocument(
            "not an EPCIS 2.0 document: expected type EPCISDocument or EPCISQueryDocument "
            "with an epcisBody"
        )
    if not isinstance(events, list):
        raise NotAnEpcisDocument("the document's epcisBody has no eventList")
    return events


def event_identity(raw: Any) -> tuple[str, str | None]:
    """(event ID, type) for reporting: a missing eventID gets the hash of the event's content,
    so re-importing the same document stays idempotent."""
    event_type = raw.get("type") if isinstance(raw, dict) else None
    event_id = raw.get("eventID") if isinstance(raw, dict) else None
    if not isinstance(event_id, str) or not event_id.strip():
        event_id = hash_event_id(raw)
    return event_id.strip(), event_type if isinstance(event_type, str) else None


# --- import: identifiers -------------------------------------------------------------------------


def _gtin_from_epc(company_prefix: str, indicator_item_ref: str) -> str:
    """GTIN-14 of an SGTIN/LGTIN: indicator + company prefix + item reference + check digit
    (the prefix length only matters for splitting, which the URN already did)."""
    cp, iir = company_prefix, indicator_item_ref
    if not (cp.isdigit() and iir.isdigit()) or len(cp) + len(iir) != 13 or not iir:
        raise Unmappable(f"{cp}.{iir} is not a GS1 company prefix and item reference")
    body = iir[0] + cp + iir[1:]
    return body + gtin_check_digit(body)


def _gln_from_epc(company_prefix: str, reference: str) -> str | None:
    body = company_prefix + reference
    if not body.isdigit() or len(body) != 12:
        return None
    return body + gtin_check_digit(body)


def _digital_link(uri: str) -> dict[str, str] | None:
    """Application identifiers of a GS1 Digital Link URI (any domain), path and query."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    segments = [unquote(s) for s in parts.path.split("/") if s]
    for start, segment in enumerate(segments):
        if segment in ("01", "414", "417", "00", "8003", "8004", "8006", "8010", "8017"):
            tail = segments[start:]
            if len(tail) % 2:
                return None
            ais = dict(zip(tail[::2], tail[1::2], strict=True))
            for key, value in parse_qsl(parts.query):
                if key.isdigit():
                    ais.setdefault(key, value)
            return ais
    return None


def _gtin(value: str) -> str:
    try:
        return normalize_gtin(value)
    except InvalidInput as error:
        raise Unmappable(error.message) from None


def _yymmdd(value: str) -> date | None:
    """GS1 AI (17) date: DD 00 means the last day of the month."""
    if len(value) != 6 or not value.isdigit():
        return None
    year, month, day = 2000 + int(value[:2]), int(value[2:4]), int(value[4:])
    try:
        if day == 0:
            following = date(year + month // 12, month % 12 + 1, 1)
            return following - timedelta(days=1)
        return date(year, month, day)
    except ValueError:
        return None


@dataclass(frozen=True)
class ItemRef:
    """A product as a document names it: by GTIN, or by Apotheca approval number."""

    gtin: str | None = None
    approval_number: str | None = None

    def describe(self) -> str:
        return f"GTIN {self.gtin}" if self.gtin else f"approval number {self.approval_number}"


@dataclass(frozen=True)
class ClassRef:
    item: ItemRef
    batch: str | None = None
    serial: str | None = None
    expiry: date | None = None


def parse_epc_class(uri: str) -> ClassRef:
    """A lot-level class (Digital Link /01/../10/.., LGTIN, Apotheca) or a GTIN-only class."""
    if uri.startswith("urn:epc:class:lgtin:"):
        parts = uri[len("urn:epc:class:lgtin:") :].split(".", 2)
        if len(parts) != 3:
            raise Unmappable(f"{uri} is not an LGTIN (CompanyPrefix.ItemRef.Lot)")
        return ClassRef(ItemRef(gtin=_gtin_from_epc(parts[0], parts[1])), unquote(parts[2]))
    if uri.startswith("urn:epc:idpat:sgtin:"):
        parts = uri[len("urn:epc:idpat:sgtin:") :].split(".")
        if len(parts) != 3 or parts[2] != "*":
            raise Unmappable(f"{uri} is not a GTIN class pattern (CompanyPrefix.ItemRef.*)")
        return ClassRef(ItemRef(gtin=_gtin_from_epc(parts[0], parts[1])))
    apotheca = re.match(rf"^{re.escape(APOTHECA_BASE)}/product/([^/]+)/lot/([^/]+)$", uri)
    if apotheca:
        return ClassRef(ItemRef(approval_number=unquote(apotheca[1])), unquote(apotheca[2]))
    ais = _digital_link(uri)
    if ais is not None and "01" in ais:
        expiry = _yymmdd(ais["17"]) if "17" in ais else None
        return ClassRef(ItemRef(gtin=_gtin(ais["01"])), ais.get("10"), None, expiry)
    raise Unmappable(f"class {uri} names no trade item (expected a GTIN-based class)")


def parse_epc(uri: str) -> ClassRef:
    """An instance-level EPC of a trade item: SGTIN URN or Digital Link with /21/."""
    if uri.startswith("urn:epc:id:sgtin:"):
        parts = uri[len("urn:epc:id:sgtin:") :].split(".", 2)
        if len(parts) != 3:
            raise Unmappable(f"{uri} is not an SGTIN (CompanyPrefix.ItemRef.Serial)")
        gtin = _gtin_from_epc(parts[0], parts[1])
        return ClassRef(ItemRef(gtin=gtin), None, unquote(parts[2]))
    ais = _digital_link(uri)
    if ais is not None and "01" in ais and "21" in ais:
        expiry = _yymmdd(ais["17"]) if "17" in ais else None
        return ClassRef(ItemRef(gtin=_gtin(ais["01"])), ais.get("10"), ais["21"], expiry)
    scheme = uri.split(":")[3] if uri.startswith("urn:epc:id:") and uri.count(":") > 3 else None
    what = f"an {scheme.upper()}" if scheme else uri
    raise Unmappable(f"EPC {uri} is {what}, not a trade item (SGTIN): no stock to record")


def parse_party(uri: str) -> PartyRef | None:
    """An organisation: Digital Link party/location GLN, pgln/sgln URN, or Apotheca name."""
    if uri.startswith(f"{APOTHECA_BASE}/org/"):
        name = unquote(uri[len(f"{APOTHECA_BASE}/org/") :])
        return PartyRef(name=name) if name else None
    for prefix in ("urn:epc:id:pgln:", "urn:epc:id:sgln:"):
        if uri.startswith(prefix):
            parts = uri[len(prefix) :].split(".")
            gln = _gln_from_epc(parts[0], parts[1]) if len(parts) >= 2 else None
            return PartyRef(gln=gln) if gln else None
    ais = _digital_link(uri)
    if ais is not None:
        gln = ais.get("417") or ais.get("414")
        if gln and len(gln) == 13 and gln.isdigit():
            return PartyRef(gln=gln)
    return None


def parse_location(uri: str) -> LocationRef | None:
    """A place: Apotheca location code, Digital Link GLN (+ AI 254), or sgln URN."""
    if uri.startswith(f"{APOTHECA_BASE}/location/"):
        code = unquote(uri[len(f"{APOTHECA_BASE}/location/") :])
        return LocationRef(code=code) if code else None
    if uri.startswith("urn:epc:id:sgln:"):
        parts = uri[len("urn:epc:id:sgln:") :].split(".", 2)
        if len(parts) != 3:
            return None
        extension = unquote(parts[2])
        return LocationRef(
            _gln_from_epc(parts[0], parts[1]), None if extension == "0" else extension
        )
    ais = _digital_link(uri)
    if ais is not None and "414" in ais:
        return LocationRef(ais["414"], ais.get("254"))
    return None


def _cbv(value: Any) -> str | None:
    """A CBV value in short form ('shipping'), whatever form the document used."""
    if not isinstance(value, str):
        return None
    for prefix in _CBV_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


# --- import: one event ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One trade item class and count of an event."""

    item: ItemRef
    batch: str | None
    quantity: int
    uom: str | None = None
    expiry: date | None = None
    serials: tuple[str, ...] = ()  # instance-level EPCs (SGTIN): their serials, sorted


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    occurred_at: datetime
    kind: MovementKind
    lines: tuple[Line, ...]
    signed_quantity: int | None = None  # ADJUST/COUNT: the ledger's signed quantity
    location_uri: str | None = None
    location: LocationRef | None = None
    reporter_uri: str | None = None
    counterparty_uris: tuple[str, ...] = ()
    counterparty_declared: bool = False  # by `apotheca:counterparty`: may be the reporter itself
    manufacturer_uri: str | None = None
    reference: str | None = None
    reason: str | None = None
    expiry: date | None = None
    disposition: str | None = None


def extension(event: dict[str, Any], name: str) -> Any:
    """An Apotheca extension field, compact (`apotheca:kind`) or expanded."""
    if _ext(name) in event:
        return event[_ext(name)]
    return event.get(NAMESPACE + name)


def _ilmd(event: dict[str, Any], name: str) -> Any:
    ilmd = event.get("ilmd")
    if not isinstance(ilmd, dict):
        return None
    for key, value in ilmd.items():
        if isinstance(key, str) and re.split(r"[:/#]", key)[-1] == name:
            return value
    return None


def _parse_time(event: dict[str, Any]) -> datetime:
    raw = event.get("eventTime")
    if not isinstance(raw, str):
        raise Unmappable("the event has no eventTime")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise Unmappable(f"eventTime {raw!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        offset = event.get("eventTimeZoneOffset")
        with_offset: datetime | None
        try:
            with_offset = (
                datetime.fromisoformat(f"{raw}{offset}") if isinstance(offset, str) else None
            )
        except ValueError:
            with_offset = None
        if with_offset is None:
            raise Unmappable(f"eventTime {raw!r} has no time zone offset")
        value = with_offset
    return value.astimezone(UTC)


def _date(value: Any, what: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise Unmappable(f"{what} {value!r} is not a date (YYYY-MM-DD)")


def _count(value: Any, what: str) -> int:
    if value is None:
        raise Unmappable(f"no quantity for {what}: the amount moved is unknown")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise Unmappable(f"quantity {value!r} of {what} is not a whole number of packs")
    if value <= 0:
        raise Unmappable(f"quantity {value!r} of {what} must be positive")
    return int(value)


def _kind(event: dict[str, Any]) -> MovementKind:
    declared = extension(event, "kind")
    if declared is not None:
        try:
            return MovementKind(declared)
        except ValueError:
            raise Unmappable(f"apotheca:kind {declared!r} is not a movement kind") from None
    biz_step = _cbv(event.get("bizStep"))
    if biz_step is None:
        raise Unmappable("the event has no bizStep: which stock movement it is is unknown")
    if biz_step in FOREIGN_BIZ_STEPS:
        return FOREIGN_BIZ_STEPS[biz_step]
    if biz_step in ("inspecting", "stock_taking", "cycle_counting"):
        raise Unmappable(
            f"bizStep {biz_step} carries no signed stock difference (apotheca:quantity) "
            "Apotheca could record"
        )
    raise Unmappable(f"bizStep {biz_step} has no Apotheca movement kind")


def _lines(event: dict[str, Any]) -> list[Line]:
    lines: list[Line] = []
    quantities = event.get("quantityList") or []
    epcs = event.get("epcList") or []
    if not isinstance(quantities, list) or not isinstance(epcs, list):
        raise Unmappable("quantityList and epcList must be lists")
    for element in quantities:
        if not isinstance(element, dict) or not isinstance(element.get("epcClass"), str):
            raise Unmappable("a quantityList element has no epcClass")
        ref = parse_epc_class(element["epcClass"])
        quantity = _count(element.get("quantity"), element["epcClass"])
        uom = element.get("uom")
        lines.append(Line(ref.item, ref.batch, quantity, uom, ref.expiry))
    counted: dict[tuple[ItemRef, str | None, date | None], set[str]] = {}
    for epc in epcs:
        if not isinstance(epc, str):
            raise Unmappable("an epcList entry is not a URI")
        ref = parse_epc(epc)
        counted.setdefault((ref.item, ref.batch, ref.expiry), set()).add(ref.serial or epc)
    for (item, batch, expiry), serials in counted.items():
        lines.append(Line(item, batch, len(serials), None, expiry, tuple(sorted(serials))))
    if not lines:
        raise Unmappable("the event names no trade items (no epcList, no quantityList)")
    return lines


def _party_uris(entries: Any, key: str) -> list[str]:
    uris: list[str] = []
    if not isinstance(entries, list):
        return uris
    for entry in entries:
        if isinstance(entry, dict) and _cbv(entry.get("type")) in PARTY_TYPES:
            uri = entry.get(key)
            if isinstance(uri, str) and uri not in uris:
                uris.append(uri)
    return uris


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:limit] or None


def _reference(event: dict[str, Any]) -> str | None:
    declared = extension(event, "reference")
    if declared is not None:
        return _text(declared, 100)
    transactions = event.get("bizTransactionList")
    if isinstance(transactions, list):
        for entry in transactions:
            uri = entry.get("bizTransaction") if isinstance(entry, dict) else None
            if isinstance(uri, str) and uri.strip():
                prefix = f"{APOTHECA_BASE}/reference/"
                value = unquote(uri[len(prefix) :]) if uri.startswith(prefix) else uri
                return _text(value, 100)
    return None


def parse_event(raw: Any) -> ParsedEvent:
    """What Apotheca would record for one event, or `Unmappable` with the reason."""
    event_id, event_type = event_identity(raw)
    if not isinstance(raw, dict):
        raise Unmappable("not an event object")
    if event_type != "ObjectEvent":
        why = UNSUPPORTED_TYPES.get(event_type or "", "only ObjectEvents become movements")
        raise Unmappable(f"unsupported event type {event_type or '(none)'}: {why}")
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise Unmappable(f"eventID is longer than {MAX_EVENT_ID_LENGTH} characters")
    if raw.get("errorDeclaration") is not None:
        raise Unmappable(
            "the event declares an error (errorDeclaration): corrections are not applied; "
            "import the corrective events instead"
        )
    occurred_at = _parse_time(raw)
    kind = _kind(raw)
    lines = _lines(raw)
    signed: int | None = None
    if kind in SIGNED_KINDS:
        declared = extension(raw, "quantity")
        if isinstance(declared, bool) or not isinstance(declared, int) or declared == 0:
            raise Unmappable(f"{kind.value} needs a non-zero signed apotheca:quantity")
        if len(lines) != 1 or lines[0].quantity != abs(declared):
            raise Unmappable(f"{kind.value} must name one class with quantity {abs(declared)}")
        signed = declared
    outflow = kind in OUTFLOW_KINDS or (signed is not None and signed < 0)
    declared_counterparty = extension(raw, "counterparty")
    if isinstance(declared_counterparty, str):
        counterparties: list[str] = [declared_counterparty]
    elif outflow:
        counterparties = _party_uris(raw.get("destinationList"), "destination")
    else:
        counterparties = _party_uris(raw.get("sourceList"), "source")
    location_uri: str | None = None
    for key in ("bizLocation", "readPoint"):
        place = raw.get(key)
        if isinstance(place, dict) and isinstance(place.get("id"), str):
            location_uri = place["id"]
            break
    reporter = extension(raw, "reporter")
    manufacturer = extension(raw, "manufacturer")
    expiry = _date(extension(raw, "expiryDate"), "apotheca:expiryDate") or _date(
        _ilmd(raw, "itemExpirationDate"), "ilmd itemExpirationDate"
    )
    batch = _ilmd(raw, "lotNumber")
    if isinstance(batch, str) and batch:
        lines = [
            x if x.batch else Line(x.item, batch, x.quantity, x.uom, x.expiry, x.serials)
            for x in lines
        ]
    reason = _text(extension(raw, "reason"), 200)
    disposition = _cbv(raw.get("disposition"))
    if kind in (K.DISPOSE, K.ADJUST) and reason is None:
        reason = f"EPCIS {disposition or _cbv(raw.get('bizStep')) or kind.value.lower()}"
    return ParsedEvent(
        event_id=event_id,
        event_type=event_type,
        occurred_at=occurred_at,
        kind=kind,
        lines=tuple(lines),
        signed_quantity=signed,
        location_uri=location_uri,
        location=parse_location(location_uri) if location_uri else None,
        reporter_uri=reporter if isinstance(reporter, str) else None,
        counterparty_uris=tuple(counterparties),
        counterparty_declared=isinstance(declared_counterparty, str),
        manufacturer_uri=manufacturer if isinstance(manufacturer, str) else None,
        reference=_reference(raw),
        reason=reason,
        expiry=expiry,
        disposition=disposition,
    )
