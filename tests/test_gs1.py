"""The GS1 parsing glue, without a database: every form real packs carry reads to the same
pack, and anything else is a BARCODE_INVALID error that says what was wrong, never a crash."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.catalog.demo_data import DEMO_PRODUCTS, make_gtin14
from server.core.errors import DomainError, ErrorCode
from server.core.gs1 import check_digit_problem, gtin_check_digit, normalize_gtin, with_check_digit
from server.scanning.gs1 import (
    GS,
    BarcodeSymbology,
    ScannedPack,
    ndc_from_gtin,
    normalize_barcode,
    parse_barcode,
)

GTIN = make_gtin14(DEMO_PRODUCTS[0].gtin_bodies[0])  # 07612345000107
OTHER_GTIN = make_gtin14(DEMO_PRODUCTS[3].gtin_bodies[0])
NDC_GTIN = make_gtin14("0030045044021")  # a US pack: 003 + NDC 0045044021 + check digit
ELEMENTS = f"01{GTIN}1727123110AB-123{GS}21SER0001"
PACK = ScannedPack(
    symbology=BarcodeSymbology.GS1_ELEMENT_STRING,
    gtin=GTIN,
    batch_number="AB-123",
    expiry_date=date(2027, 12, 31),
    serial="SER0001",
)


def _invalid(text: str) -> str:
    with pytest.raises(DomainError) as refused:
        parse_barcode(text)
    assert refused.value.code is ErrorCode.BARCODE_INVALID
    assert refused.value.field == "barcode"
    return refused.value.message


@pytest.mark.parametrize(
    ("text", "symbology"),
    [
        (ELEMENTS, BarcodeSymbology.GS1_ELEMENT_STRING),
        (f"]d2{ELEMENTS}", BarcodeSymbology.GS1_DATAMATRIX),
        (f"]C1{ELEMENTS}", BarcodeSymbology.GS1_128),
        (f"]Q3{ELEMENTS}", BarcodeSymbology.GS1_QR),
        (ELEMENTS.replace(GS, "<GS>"), BarcodeSymbology.GS1_ELEMENT_STRING),
        (ELEMENTS.replace(GS, "\\x1d"), BarcodeSymbology.GS1_ELEMENT_STRING),
        (ELEMENTS.replace(GS, "|"), BarcodeSymbology.GS1_ELEMENT_STRING),
        (f"]d2{ELEMENTS.replace(GS, '<GS>')}\r\n", BarcodeSymbology.GS1_DATAMATRIX),
        # Fields in another order, serial before batch, trailing separator.
        (f"10AB-123{GS}1727123101{GTIN}21SER0001{GS}", BarcodeSymbology.GS1_ELEMENT_STRING),
        (f"(01){GTIN}(17)271231(10)AB-123(21)SER0001", BarcodeSymbology.GS1_HUMAN_READABLE),
        (
            f"(01) {GTIN} (17) 271231 (10) AB-123 (21) SER0001",
            BarcodeSymbology.GS1_HUMAN_READABLE,
        ),
        (
            f"https://id.gs1.org/01/{GTIN}/10/AB-123/21/SER0001?17=271231",
            BarcodeSymbology.GS1_DIGITAL_LINK,
        ),
        (
            f"HTTPS://Example.COM/products/01/{GTIN}/10/AB-123/21/SER0001?17=271231&lang=de",
            BarcodeSymbology.GS1_DIGITAL_LINK,
        ),
    ],
)
def test_every_form_of_one_pack_reads_the_same(text: str, symbology: BarcodeSymbology) -> None:
    pack = parse_barcode(text)
    assert pack == ScannedPack(
        symbology=symbology,
        gtin=PACK.gtin,
        batch_number=PACK.batch_number,
        expiry_date=PACK.expiry_date,
        serial=PACK.serial,
    )
    assert pack.ndc is None


def test_expiry_day_00_means_the_last_day_of_the_month() -> None:
    assert parse_barcode(f"01{GTIN}1728020010B1").expiry_date == date(2028, 2, 29)
    assert parse_barcode(f"01{GTIN}1727020010B1").expiry_date == date(2027, 2, 28)
    assert parse_barcode(f"(01){GTIN}(17)271100").expiry_date == date(2027, 11, 30)


def test_fixed_length_fields_need_no_separator_and_optional_parts_may_be_missing() -> None:
    pack = parse_barcode(f"01{GTIN}10LOT7")
    assert (pack.batch_number, pack.expiry_date, pack.serial) == ("LOT7", None, None)
    assert parse_barcode(f"01{GTIN}").batch_number is None


@pytest.mark.parametrize(
    ("text", "gtin", "symbology"),
    [
        (GTIN, GTIN, BarcodeSymbology.GTIN_14),
        (GTIN[1:], GTIN, BarcodeSymbology.EAN_13),
        (f"]E0{GTIN[1:]}", GTIN, BarcodeSymbology.EAN_13),
        (OTHER_GTIN[1:], OTHER_GTIN, BarcodeSymbology.EAN_13),
        ("036000291452", "00036000291452", BarcodeSymbology.UPC_A),
        ("96385074", "00000096385074", BarcodeSymbology.EAN_8),
        ("425261", "00042100005264", BarcodeSymbology.UPC_E),
        (f" {GTIN[1:]}\n", GTIN, BarcodeSymbology.EAN_13),
    ],
)
def test_linear_barcodes_and_typed_gtins(text: str, gtin: str, symbology: BarcodeSymbology) -> None:
    pack = parse_barcode(text)
    assert (pack.gtin, pack.symbology, pack.batch_number, pack.serial) == (
        gtin,
        symbology,
        None,
        None,
    )


def test_a_us_ndc_inside_the_gtin_is_shown() -> None:
    assert NDC_GTIN.startswith("003")
    assert ndc_from_gtin(NDC_GTIN) == "0045044021"
    assert parse_barcode(NDC_GTIN).ndc == "0045044021"
    assert parse_barcode(NDC_GTIN[2:]).ndc == "0045044021"  # the UPC-A on the carton
    assert parse_barcode(f"01{NDC_GTIN}1727063010X1").ndc == "0045044021"
    assert ndc_from_gtin(GTIN) is None


def test_normalize_turns_typed_separators_into_gs() -> None:
    assert normalize_barcode(" 10A<GS>21B|17\\x1d ") == f"10A{GS}21B{GS}17"  # GS ends nothing


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("]", "symbology identifier"),
        ("]d2", "only a symbology identifier"),
        ("hello world", "not a GS1 barcode"),
        (GTIN[:-1] + "0", "bad check digit: expected 7, got 0"),
        (f"01{GTIN[:-1]}010B1", "bad check digit: expected 7, got 0"),
        (f"(01){GTIN[:-1]}1", "bad check digit"),
        (f"https://id.gs1.org/01/{GTIN[:-1]}3/10/B1", "bad check digit"),
        (f"01{GTIN[:9]}", "GTIN (01) has 9 digits, needs 14"),
        (f"01{GTIN}1727", "(17) USE BY or EXPIRY '27' is truncated or not a date"),
        (f"01{GTIN}10", "cut off"),
        (f"01{GTIN}17271399", "271399 is not a date"),
        (f"01{GTIN}17270230", "270230 is not a date"),
        (f"(01){GTIN}(17)271331", "271331 is not a date"),
        (f"(01){GTIN}(17)(10)B1", "(17) is cut off"),
        (f"(01){GTIN}(999)X", "unknown GS1 Application Identifier (999)"),
        (f"01{GTIN}17271231XX", "unknown GS1 Application Identifier at 'XX'"),
        (f"01{GTIN}10{'A' * 25}", "too long, or its GS separator missing"),
        (f"01{GTIN}10A{GS}10B", "appears twice with different values"),
        ("10B1" + GS + "17271231", "no GTIN (01)"),
        ("00" + "0" * 18, "shipping label (SSCC"),
        ("https://id.gs1.org/01/123/10/B1", "not 8, 12, 13 or 14 digits"),
        ("https://example.com/no/gtin/here", "not a GS1 Digital Link URI"),
        ("1234567890", "10 digits: a GTIN has 8, 12, 13 or 14"),
        ("(", "no (AI)data pairs"),
        ("x" * 1001, "1001 characters long"),
    ],
)
def test_bad_barcodes_say_what_is_wrong(text: str, says: str) -> None:
    assert says in _invalid(text)


def _assert_parses_or_refuses(text: str) -> None:
    """The property: a pack, or BARCODE_INVALID. Any other exception fails the test."""
    try:
        pack = parse_barcode(text)
    except DomainError as error:
        assert error.code is ErrorCode.BARCODE_INVALID
        assert error.message
        return
    assert len(pack.gtin) == 14 and pack.gtin.isdigit()
    assert pack.batch_number is None or 1 <= len(pack.batch_number) <= 20
    assert pack.serial is None or 1 <= len(pack.serial) <= 20


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_fuzz_any_text(text: str) -> None:
    _assert_parses_or_refuses(text)


@settings(max_examples=400, deadline=None)
@given(st.binary().map(lambda b: b.decode("latin-1")))
def test_fuzz_any_bytes(text: str) -> None:
    _assert_parses_or_refuses(text)


VALID_FORMS = [
    ELEMENTS,
    f"]d2{ELEMENTS}",
    f"(01){GTIN}(17)271231(10)AB-123(21)SER0001",
    f"https://id.gs1.org/01/{GTIN}/10/AB-123/21/SER0001?17=271231",
    GTIN,
]
GS1_ALPHABET = st.sampled_from(list("0123456789()]|<>/?=&%-GSdx\x1d\\ ABZaz:é"))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid scan, damaged the way real scans are: cut short, characters swapped,
    replaced, inserted or dropped."""
    text = list(draw(st.sampled_from(VALID_FORMS)))
    for _ in range(draw(st.integers(1, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(0, len(text) - 1))
        match draw(st.sampled_from(["truncate", "swap", "replace", "insert", "drop"])):
            case "truncate":
                text = text[:i]
            case "swap":
                text[i], text[j] = text[j], text[i]
            case "replace":
                text[i] = draw(GS1_ALPHABET)
            case "insert":
                text.insert(i, draw(GS1_ALPHABET))
            case "drop":
                del text[i]
    return "".join(text)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_fuzz_damaged_scans(text: str) -> None:
    _assert_parses_or_refuses(text)


@pytest.mark.parametrize("cut", range(len(ELEMENTS)))
def test_every_truncation_of_a_datamatrix_is_a_pack_or_a_clear_error(cut: int) -> None:
    _assert_parses_or_refuses(ELEMENTS[:cut])


# --- server.core.gs1: the check digit every GS1 key shares ------------------------------------


def test_the_core_check_digit_is_the_gs1_mod_10() -> None:
    assert gtin_check_digit("761234500010") == "7"  # GTIN-13 7612345000107
    assert with_check_digit("761234500004") == "7612345000046"  # a GLN
    assert normalize_gtin(" 7612345000107 ") == "07612345000107"
    assert normalize_gtin(GTIN) == GTIN
    with pytest.raises(ValueError):
        gtin_check_digit("12a")


def test_the_core_check_digit_problem_names_the_expected_digit() -> None:
    assert check_digit_problem(GTIN) is None
    assert check_digit_problem(GTIN[:-1] + "0") == (
        f"GTIN {GTIN[:-1]}0 has a bad check digit: expected {GTIN[-1]}, got 0"
    )
    assert check_digit_problem("12345") is None  # not GTIN-shaped: another message says why
    with pytest.raises(DomainError) as refused:
        normalize_gtin(GTIN[:-1] + "0", field="gtins")
    assert refused.value.field == "gtins"
    assert f"expected {GTIN[-1]}" in refused.value.message
