"""GS1 identifier arithmetic (pure, no I/O): the mod-10 check digit that GTINs, GLNs and SSCCs
share, and the normalisation of a GTIN to the 14-digit form we store.

One module for every domain that reads GS1 keys: the catalogue (product GTINs), scanning (what
is wrong with a scanned GTIN), the network (organisation GLNs) and the integrations (EPCIS).
"""

from __future__ import annotations

from server.core.errors import InvalidInput

GTIN_LENGTHS = (8, 12, 13, 14)  # GTIN-8, GTIN-12 (UPC-A), GTIN-13 (EAN), GTIN-14


def gtin_check_digit(body: str) -> str:
    """GS1 mod-10 check digit for `body` (weights 3,1,3,... from the right)."""
    if not body.isdigit():
        raise ValueError(f"GTIN body must contain digits only: {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def with_check_digit(body: str) -> str:
    """`body` followed by its GS1 check digit (a GTIN or GLN from its digits without it)."""
    return body + gtin_check_digit(body)


def check_digit_problem(digits: str) -> str | None:
    """'bad check digit' with the expected digit, when that is what is wrong with a GTIN;
    None when the digits are not GTIN-shaped at all or their check digit is right."""
    if not (digits.isascii() and digits.isdigit()) or len(digits) not in GTIN_LENGTHS:
        return None
    expected = gtin_check_digit(digits[:-1])
    if expected == digits[-1]:
        return None
    return f"GTIN {digits} has a bad check digit: expected {expected}, got {digits[-1]}"


def normalize_gtin(value: str, *, field: str = "gtin") -> str:
    """Accept GTIN-8/12/13/14, check the digit, return the zero-padded GTIN-14."""
    digits = value.strip().replace(" ", "")
    if not digits.isdigit() or len(digits) not in GTIN_LENGTHS:
        raise InvalidInput(f"{value!r} is not a GTIN (8, 12, 13 or 14 digits)", field=field)
    if gtin_check_digit(digits[:-1]) != digits[-1]:
        expected = gtin_check_digit(digits[:-1])
        raise InvalidInput(
            f"GTIN {digits} has check digit {digits[-1]}, expected {expected}", field=field
        )
    return digits.zfill(14)
