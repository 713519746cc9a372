"""GraphQL enums over plain Python enums, each value with its own description.

Models and pure modules define their enums without Strawberry; the api layer wraps them here
so the schema says what every value means:

    LotStatus = described_enum(models.LotStatus, "Where a lot stands.", {"RELEASED": "..."})
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import strawberry


def described_enum(
    cls: type[Enum],
    description: str,
    values: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    **named: str,
) -> Any:
    """`strawberry.enum(cls)` with a description for the enum and one for each value, given as
    a mapping or as keywords (`SHORT="..."`); every value must have one, so a new member cannot
    go undescribed."""
    values = {**(values or {}), **named}
    wrapped: Any = strawberry.enum(cls, name=name, description=description)
    definition = wrapped.__strawberry_definition__
    missing = [v.name for v in definition.values if v.name not in values]
    unknown = set(values) - {v.name for v in definition.values}
    if missing or unknown:
        raise ValueError(f"{cls.__name__}: undescribed {missing}, unknown {sorted(unknown)}")
    for value in definition.values:
        value.description = values[value.name]
    return wrapped
