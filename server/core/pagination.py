"""Keyset pagination, GraphQL-neutral: services page their own queries with `keyset_page`.

A page is ordered by a unique tuple of columns; its cursor is the last row's values of them,
so a page never shifts when rows are added before it. `Page.total` counts the whole filtered
set in one more query, run only when someone asks for it (a `totalCount` field).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Select, func, select, tuple_

from server.core.errors import InvalidInput

T = TypeVar("T")

MAX_PK = 2**31 - 1  # the INTEGER primary keys of both databases


class Reader(Protocol):
    """Anything with `read()`: a Database, or a request's Context (its shared session)."""

    def read(self) -> Any: ...


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _restore(value: Any, column: Any) -> Any:
    """A cursor value back to the column's type; anything else is a malformed cursor."""
    python_type = getattr(column.type, "python_type", None)
    try:
        if python_type is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
        if python_type is date and isinstance(value, str):
            return date.fromisoformat(value)
        if python_type is int and type(value) is int and abs(value) <= MAX_PK:
            return value
        if python_type is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    raise InvalidInput("malformed cursor", field="after")


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_jsonable(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str, columns: Sequence[Any]) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor", field="after") from None
    if not isinstance(values, list) or len(values) != len(columns):
        raise InvalidInput("malformed cursor", field="after")
    return [_restore(v, c) for v, c in zip(values, columns, strict=True)]


def check_first(first: int, max_page_size: int) -> None:
    if first < 1 or first > max_page_size:
        raise InvalidInput(f"first must be between 1 and {max_page_size}", field="first")


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    # Counts every row the page's query matches (all pages); awaited only when asked for.
    total: Callable[[], Awaitable[int]] = field(compare=False, repr=False)


def count_of(db: Reader, stmt: Select[*tuple[Any, ...]]) -> Callable[[], Awaitable[int]]:
    """A callable counting the rows `stmt` matches, in one `SELECT count(*)` when called."""

    async def total() -> int:
        counted = select(func.count()).select_from(stmt.order_by(None).subquery())
        async with db.read() as session:
            return int((await session.execute(counted)).scalar_one())

    return total


async def keyset_page(
    db: Reader,
    stmt: Select[*tuple[Any, ...]],
    *,
    keys: Sequence[Any],
    first: int,
    after: str | None,
    max_page_size: int,
    descending: bool = False,
    key_of: Callable[[Any], Sequence[Any]],
) -> Page[Any]:
    """One page ordered by `keys` (a unique tuple); the cursor is the last row's key values.

    `db` is anything with `read()`: a Database, or a request's Context (its shared session)."""
    check_first(first, max_page_size)
    total = count_of(db, stmt)
    if after is not None:
        values = decode_cursor(after, keys)
        bound = tuple_(*keys) < tuple_(*values) if descending else tuple_(*keys) > tuple_(*values)
        stmt = stmt.where(bound)
    order = [k.desc() for k in keys] if descending else list(keys)
    stmt = stmt.order_by(*order).limit(first + 1)
    async with db.read() as session:
        result = (await session.execute(stmt)).all()
    rows = [r[0] if len(r) == 1 else r for r in result]
    has_next = len(rows) > first
    rows = rows[:first]
    return Page(rows, [encode_cursor(key_of(r)) for r in rows], has_next, after is not None, total)
