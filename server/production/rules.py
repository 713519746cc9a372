"""Pure production rules: which serial numbers a commissioning names, and whether they fit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from server.core.errors import Duplicate, InvalidInput

MAX_SERIALS = 100_000  # one call; a larger run is several lots or several calls
MAX_SERIAL_LENGTH = 20  # GS1 AI 21
# GS1 AI 21 serials are GS1 AI encodable character set 82.
_CSET82 = re.compile(r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$")
_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class SerialRange:
    """`first` to `last` inclusive: the same prefix, then a counter of the same width
    (`SN000001` to `SN000500`)."""

    first: str
    last: str


def check_serial(serial: str, field: str) -> str:
    if not _CSET82.match(serial):
        raise InvalidInput(
            f"serial {serial[:40]!r} is not a GS1 serial (1-{MAX_SERIAL_LENGTH} characters of "
            "GS1 character set 82)",
            field=field,
        )
    return serial


def expand_range(serials: SerialRange) -> list[str]:
    """Every serial of a range, or INVALID_INPUT saying what does not line up."""
    first = check_serial(serials.first.strip(), "serial_range.first")
    last = check_serial(serials.last.strip(), "serial_range.last")
    head, tail = _TRAILING_DIGITS.match(first), _TRAILING_DIGITS.match(last)
    if head is None or tail is None:
        raise InvalidInput("a serial range must end in digits", field="serial_range")
    if head[1] != tail[1] or len(head[2]) != len(tail[2]):
        raise InvalidInput(
            "the first and last serial must share their prefix and counter width",
            field="serial_range",
        )
    start, stop, width = int(head[2]), int(tail[2]), len(head[2])
    if stop < start:
        raise InvalidInput("the last serial comes before the first", field="serial_range")
    if stop - start + 1 > MAX_SERIALS:
        raise InvalidInput(
            f"at most {MAX_SERIALS:,} serials per call, the range holds {stop - start + 1:,}",
            field="serial_range",
        )
    return [f"{head[1]}{n:0{width}d}" for n in range(start, stop + 1)]


def production_serials(
    quantity: int, serials: Sequence[str], serial_range: SerialRange | None
) -> list[str]:
    """The serials of one commissioning: none, a list or a range; one per pack, each once."""
    if serials and serial_range is not None:
        raise InvalidInput("give serials or a serial range, not both", field="serials")
    if serial_range is not None:
        listed = expand_range(serial_range)
        field = "serial_range"
    else:
        if len(serials) > MAX_SERIALS:
            raise InvalidInput(f"at most {MAX_SERIALS:,} serials per call", field="serials")
        listed = [check_serial(s.strip(), f"serials.{i}") for i, s in enumerate(serials)]
        field = "serials"
    if not listed:
        return []
    if len(listed) != quantity:
        raise InvalidInput(
            f"give one serial per pack: {len(listed)} serials for {quantity} packs", field=field
        )
    seen: set[str] = set()
    for index, serial in enumerate(listed):
        if serial in seen:
            raise Duplicate(f"serial {serial} appears twice", field=f"{field}.{index}")
        seen.add(serial)
    return listed
