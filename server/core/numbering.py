"""Document numbers people read over the phone: PREFIX-YYYY-NNNNN, a sequence per year.

One allocator for purchase orders, shipments, transfers and recalls. On PostgreSQL a
transaction-level advisory lock per prefix serialises allocation (SQLite has one writer); the
unique constraint on each number column stays as the backstop.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import dialect_of

# Given (non-numeric) references such as RC-2026-URGENT may share the prefix; look far enough
# past them to find the highest numbered one.
_SCAN = 100


def document_number(prefix: str, year: int, sequence: int) -> str:
    """PO-2026-00001: zero-padded so numbers of one width sort as text."""
    return f"{prefix}-{year:04d}-{sequence:05d}"


def next_sequence(prefix: str, year: int, existing: Iterable[str]) -> int:
    """One past the year's highest number; other years and non-numeric references ignored."""
    pattern = re.compile(rf"^{re.escape(prefix)}-{year:04d}-(\d+)$")
    used = [int(m.group(1)) for n in existing if (m := pattern.match(n))]
    return max(used, default=0) + 1


async def allocate(session: AsyncSession, column: Any, prefix: str, year: int) -> str:
    """The year's next number for `column`, inside the caller's transaction."""
    if dialect_of(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(prefix.encode()))))
    candidates = (
        await session.execute(
            select(column)
            .where(column.like(f"{prefix}-{year:04d}-%"))
            .order_by(func.length(column).desc(), column.desc())
            .limit(_SCAN)
        )
    ).scalars()
    return document_number(prefix, year, next_sequence(prefix, year, candidates))
