"""GTIN arithmetic (pure): check digits and normalisation to the 14-digit form we store."""

from __future__ import annotations

from server.core.errors import InvalidInput


def gtin_check_digit(body: str) -> str:
    """GS1 mod-10 check digit for `body` (weights 3,1,3,... from the right)."""
    if not body.isdigit():
        raise ValueError(f"GTIN body must contain digits only: {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def normalize_gtin(value: str, *, field: str = "gtin") -> str:
    """Accept GTIN-8/12/13/14, check the digit, return the zero-padded GTIN-14."""
    digits = value.strip().replace(" ", "")
    if not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        raise InvalidInput(f"{value!r} is not a GTIN (8, 12, 13 or 14 digits)", field=field)
    if gtin_check_digit(digits[:-1]) != digits[-1]:
        expected = gtin_check_digit(digits[:-1])
        raise InvalidInput(
            f"GTIN {digits} has check digit {digits[-1]}, expected {expected}", field=field
        )
    return digits.zfill(14)
