"""GS1 barcode parsing glue (pure, no I/O): what a scanned pack says, or exactly what is wrong.

biip does the GS1 work (Application Identifiers, element strings, Digital Link URIs, GTIN and
UPC check digits, day-00 expiry = last day of the month). This module routes the text a scanner
or a person produced to the right biip parser, and turns biip's failures into one typed error
(BARCODE_INVALID) whose message says what was wrong, so a nurse can act on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

import biip
from biip import ParseError
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_element_strings import GS1ElementString
from biip.gs1_messages import GS1Message
from biip.gtin import GtinFormat

from server.core.errors import DomainError, ErrorCode
from server.core.gs1 import check_digit_problem

GS = "\x1d"
# What keyboard-wedge scanners and people type for the invisible group separator (FNC1).
SEPARATOR_ALIASES = ("<GS>", "<gs>", "{GS}", "\\x1d", "\\x1D", "\u241d", "|")
MAX_BARCODE_LENGTH = 1000  # a pack's DataMatrix or Digital Link is far shorter
GTIN_LENGTHS = (6, 7, 8, 12, 13, 14)  # with UPC-E's short forms
DATE_AIS = frozenset({"11", "12", "13", "15", "16", "17"})
_SYMBOLOGY_ID = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_HRI_ELEMENT = re.compile(r"\((\d{2,4})\)([^(]*)")
_URI_ORIGIN = re.compile(r"^https?://[^/?#]*", re.IGNORECASE)
_DL_GTIN = re.compile(r"/01/([^/?#]*)")
_FIXED_DIGITS = re.compile(r"^N\d\+N(\d+)$")


class BarcodeSymbology(StrEnum):
    """How the pack's data reached us: the symbology identifier, else the text's own form."""

    GS1_DATAMATRIX = "GS1_DATAMATRIX"  # ]d2
    GS1_128 = "GS1_128"  # ]C1
    GS1_QR = "GS1_QR"  # ]Q3
    GS1_DATABAR = "GS1_DATABAR"  # ]e0
    GS1_ELEMENT_STRING = "GS1_ELEMENT_STRING"  # element strings without a symbology prefix
    GS1_HUMAN_READABLE = "GS1_HUMAN_READABLE"  # (01)...(17)...
    GS1_DIGITAL_LINK = "GS1_DIGITAL_LINK"  # https://.../01/...
    EAN_13 = "EAN_13"
    EAN_8 = "EAN_8"
    UPC_A = "UPC_A"
    UPC_E = "UPC_E"
    GTIN_14 = "GTIN_14"


_PREFIX_SYMBOLOGY = {
    "]d2": BarcodeSymbology.GS1_DATAMATRIX,
    "]C1": BarcodeSymbology.GS1_128,
    "]Q3": BarcodeSymbology.GS1_QR,
    "]e0": BarcodeSymbology.GS1_DATABAR,
}


@dataclass(frozen=True)
class ScannedPack:
    """What one pack's barcode identifies. `gtin` is always the 14-digit form we store."""

    symbology: BarcodeSymbology
    gtin: str
    batch_number: str | None = None
    expiry_date: date | None = None
    serial: str | None = None

    @property
    def ndc(self) -> str | None:
        """US National Drug Code carried in the GTIN (GTIN-14 "003" + NDC-10 + check digit)."""
        return ndc_from_gtin(self.gtin)


class BarcodeInvalid(DomainError):
    """The barcode text cannot be read as a pack identifier; the message says why."""

    code = ErrorCode.BARCODE_INVALID

    def __init__(self, message: str) -> None:
        super().__init__(message, field="barcode")


def ndc_from_gtin(gtin: str) -> str | None:
    """The 10-digit NDC inside a US pharmaceutical GTIN-14, else None (no hyphens: the
    4-4-2 / 5-3-2 / 5-4-1 split is not recoverable from the digits alone)."""
    return gtin[3:13] if len(gtin) == 14 and gtin.startswith("003") else None


def normalize_barcode(text: str) -> str:
    """Spelled-out separators become the real one; surrounding whitespace goes."""
    value = text.strip()
    for alias in SEPARATOR_ALIASES:
        value = value.replace(alias, GS)
    return value.strip()


def parse_barcode(text: str) -> ScannedPack:
    """Read a pack's barcode; raise BarcodeInvalid saying what is wrong. Never anything else."""
    value = normalize_barcode(text or "")
    if not value:
        raise BarcodeInvalid("the barcode is empty")
    if len(value) > MAX_BARCODE_LENGTH:
        raise BarcodeInvalid(
            f"the barcode is {len(value)} characters long; a pack barcode has at most "
            f"{MAX_BARCODE_LENGTH}"
        )
    symbology: BarcodeSymbology | None = None
    if value.startswith("]"):
        if not _SYMBOLOGY_ID.match(value):
            raise BarcodeInvalid(f"{_show(value)} starts with a malformed symbology identifier")
        symbology = _PREFIX_SYMBOLOGY.get(value[:3])
        value = value[3:].lstrip(GS)
        if not value:
            raise BarcodeInvalid("the barcode holds only a symbology identifier, no data")
    if value.startswith("("):
        return _from_human_readable(value)
    if _URI_ORIGIN.match(value):
        # Scheme and host are case-insensitive; biip only recognises them in lower case.
        return _from_digital_link(_URI_ORIGIN.sub(lambda m: m.group(0).lower(), value, 1))
    # A GS1 symbology (]d2, ]C1...) carries element strings; bare short digits are a GTIN,
    # unless they start like a cut-off (01) element string.
    short_digits = value.isascii() and value.isdigit() and len(value) <= 14
    cut_off_element = value.startswith("01") and len(value) not in GTIN_LENGTHS
    if symbology is None and short_digits and not cut_off_element:
        return _from_gtin(value)
    return _from_element_strings(value, symbology or BarcodeSymbology.GS1_ELEMENT_STRING)


# --- the four forms --------------------------------------------------------------------------


def _from_gtin(digits: str) -> ScannedPack:
    """A linear barcode or a typed GTIN: EAN-13, EAN-8, UPC-A, UPC-E or GTIN-14."""
    if len(digits) not in GTIN_LENGTHS:
        raise BarcodeInvalid(
            f"{digits} has {len(digits)} digits: a GTIN has 8, 12, 13 or 14 "
            "(or a GS1 barcode starts with an AI such as (01))"
        )
    result = _biip(digits)
    if result.gtin is None:
        kind = "UPC-E" if len(digits) < 8 else "GTIN"
        raise BarcodeInvalid(check_digit_problem(digits) or f"{digits} is not a valid {kind}")
    symbology = {
        12: BarcodeSymbology.UPC_A,
        13: BarcodeSymbology.EAN_13,
        14: BarcodeSymbology.GTIN_14,
    }.get(len(digits), BarcodeSymbology.UPC_E)
    if len(digits) == 8 and result.gtin.format is GtinFormat.GTIN_8:
        symbology = BarcodeSymbology.EAN_8
    return ScannedPack(symbology=symbology, gtin=result.gtin.as_gtin_14())


def _from_element_strings(value: str, symbology: BarcodeSymbology) -> ScannedPack:
    """GS1 DataMatrix / GS1-128 content: AI-prefixed fields, variable ones ended by GS."""
    result = _biip(value)
    if result.gs1_message is None:
        raise BarcodeInvalid(_element_string_problem(value))
    return _pack(list(result.gs1_message.element_strings), symbology)


def _from_human_readable(value: str) -> ScannedPack:
    """The text printed under a GS1 barcode: (01)...(17)...(10)...(21)..."""
    for number, data in _HRI_ELEMENT.findall("".join(value.split())):
        if not data:  # biip would skip an empty field silently
            raise BarcodeInvalid(f"({number}) is cut off: nothing follows the AI")
    try:
        message = GS1Message.parse_hri(value)
    except Exception:  # biip's failures on hostile text are not all ParseError
        raise BarcodeInvalid(_human_readable_problem(value)) from None
    return _pack(list(message.element_strings), BarcodeSymbology.GS1_HUMAN_READABLE)


def _from_digital_link(value: str) -> ScannedPack:
    """A GS1 Digital Link URI: https://id.gs1.org/01/<gtin>/10/<batch>/21/<serial>?17=<expiry>."""
    result = _biip(value)
    if result.gs1_digital_link_uri is None:
        reason = (result.gs1_digital_link_uri_error or "").rstrip(".") or _show(value, 80)
        raise BarcodeInvalid(
            f"not a GS1 Digital Link URI (expected .../01/<GTIN>[/10/<batch>][/21/<serial>]): "
            f"{_clip(reason, 160)}"
        )
    # biip pads a short or empty GTIN path segment with zeros; a pack's GTIN has 8-14 digits.
    written = _DL_GTIN.search(value)
    digits = written.group(1) if written else ""
    if written and not (digits.isascii() and digits.isdigit() and len(digits) in (8, 12, 13, 14)):
        raise BarcodeInvalid(
            f"the Digital Link's GTIN {_show(digits)} is not 8, 12, 13 or 14 digits (truncated?)"
        )
    return _pack(
        list(result.gs1_digital_link_uri.element_strings), BarcodeSymbology.GS1_DIGITAL_LINK
    )


def _pack(elements: list[GS1ElementString], symbology: BarcodeSymbology) -> ScannedPack:
    """Pick GTIN, expiry, batch and serial out of parsed element strings; check what biip
    leaves to the caller (a GTIN present, its check digit, no contradicting repeats)."""
    seen: dict[str, str] = {}
    for element in elements:
        ai = element.ai.ai
        if ai in seen and seen[ai] != element.value:
            raise BarcodeInvalid(
                f"({ai}) {element.ai.data_title} appears twice with different values: "
                f"{_show(seen[ai])} and {_show(element.value)}"
            )
        seen[ai] = element.value
    by_ai = {element.ai.ai: element for element in elements}
    gtin_element = by_ai.get("01")
    if gtin_element is None:
        if "00" in by_ai:
            raise BarcodeInvalid("this is a shipping label (SSCC, AI 00), not a pack: no GTIN (01)")
        found = ", ".join(f"({ai})" for ai in by_ai) or "none"
        raise BarcodeInvalid(f"the barcode has no GTIN (01); AIs found: {found}")
    if gtin_element.gtin is None:
        raise BarcodeInvalid(
            check_digit_problem(gtin_element.value) or f"GTIN {gtin_element.value} is not valid"
        )
    expiry = by_ai.get("17")
    if expiry is not None and expiry.date is None:
        raise BarcodeInvalid(f"expiry (17) {_show(expiry.value)} is not a date (YYMMDD)")
    batch, serial = by_ai.get("10"), by_ai.get("21")
    return ScannedPack(
        symbology=symbology,
        gtin=gtin_element.gtin.as_gtin_14(),
        batch_number=batch.value if batch is not None else None,
        expiry_date=expiry.date if expiry is not None else None,
        serial=serial.value if serial is not None else None,
    )


# --- saying what is wrong --------------------------------------------------------------------


def _biip(value: str) -> Any:
    """biip.parse, with anything it throws on garbage turned into BARCODE_INVALID."""
    try:
        return biip.parse(value)
    except Exception:  # biip raises IndexError/ValueError on some malformed input
        raise BarcodeInvalid(f"{_show(value)} is not a barcode Apotheca can read") from None


def _element_string_problem(value: str) -> str:
    """Walk the element strings as biip does and name the first one that fails."""
    rest = value.lstrip(GS)
    previous: GS1ElementString | None = None
    while rest:
        try:
            ai = GS1ApplicationIdentifier.extract(rest)
        except ParseError:
            if previous is None:
                return (
                    f"{_show(value)} is not a GS1 barcode: it starts with no GS1 Application "
                    "Identifier and is not a GTIN or a Digital Link URI"
                )
            problem = f"unknown GS1 Application Identifier at {_show(rest)}"
            if previous.ai.separator_required:
                problem += (
                    f" after ({previous.ai.ai}) {previous.ai.data_title} "
                    f"{_show(previous.value)}: is that field too long, or its GS separator missing?"
                )
            return problem
        try:
            element = GS1ElementString.extract(rest)
        except Exception:
            return _element_problem(ai, rest[len(ai.ai) :].split(GS, 1)[0])
        if ai.ai == "01" and element.gtin is None:
            return check_digit_problem(element.value) or f"GTIN {element.value} is not valid"
        rest = rest[len(element) :].lstrip(GS)
        previous = element
    return f"{_show(value)} is not a GS1 barcode Apotheca can read"


def _human_readable_problem(value: str) -> str:
    compact = "".join(value.split())
    pieces = _HRI_ELEMENT.findall(compact)
    if not pieces:
        return f"{_show(value)} has no (AI)data pairs such as (01)07612345000107"
    for number, data in pieces:
        try:
            ai = GS1ApplicationIdentifier.extract(number)
        except ParseError:
            return f"unknown GS1 Application Identifier ({number})"
        if ai.ai != number:
            return f"unknown GS1 Application Identifier ({number})"
        try:
            element = GS1ElementString.parse(f"{number}{data}")
        except Exception:
            return _element_problem(ai, data)
        if number == "01" and element.gtin is None:
            return check_digit_problem(data) or f"GTIN {data} is not valid"
    return f"{_show(value)} is not GS1 human-readable text Apotheca can read"


def _element_problem(ai: GS1ApplicationIdentifier, data: str) -> str:
    """Why one AI's data failed: cut off, not a date, or not its format."""
    label = f"({ai.ai}) {ai.data_title}"
    if not data:
        return f"{label} is cut off: nothing follows the AI (truncated barcode?)"
    if ai.ai == "01":
        digits = len(data) - len(data.lstrip("0123456789"))
        if digits < 14:
            return f"GTIN (01) has {digits} digits, needs 14 (truncated barcode?)"
        return check_digit_problem(data[:14]) or f"GTIN (01) {_show(data[:14])} is not valid"
    if ai.ai in DATE_AIS:
        head = data[:6]
        if not (head.isascii() and head.isdigit()) or len(head) < 6:
            return f"{label} {_show(data)} is truncated or not a date: it needs YYMMDD"
        return f"{label} {head} is not a date (YYMMDD; day 00 means end of month)"
    fixed = _FIXED_DIGITS.match(ai.format)
    if fixed and data.isascii() and data.isdigit() and len(data) < int(fixed.group(1)):
        return f"{label} has {len(data)} digits, needs {fixed.group(1)} (truncated barcode?)"
    return f"{label} {_show(data)} does not fit its format {ai.format}"


def _show(text: str, limit: int = 40) -> str:
    """Quote a piece of input safely (control characters visible, long text clipped)."""
    return repr(_clip(text, limit))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
