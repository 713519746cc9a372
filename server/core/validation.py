"""Input checks every domain's writes share, so each refusal reads the same way."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Duplicate, InvalidInput, NotFound

T = TypeVar("T")


def required_text(value: str | None, field: str, *, max_length: int = 200) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", field=field)
    return value


def optional_text(value: str | None, field: str, *, max_length: int = 200) -> str | None:
    value = (value or "").strip()
    return required_text(value, field, max_length=max_length) if value else None


async def get_or_not_found(session: AsyncSession, model: type[T], entity_id: int, field: str) -> T:
    entity = await session.get(model, entity_id)
    if entity is None:
        raise NotFound(f"{field} {entity_id} does not exist", field=field)
    return entity


async def ensure_unique(
    session: AsyncSession, column: Any, value: object, field: str, *, exclude_id: Any = None
) -> None:
    # Checked before the caller assigns, and without autoflush, so a pending change of this very
    # row is neither written early nor mistaken for someone else's.
    stmt = select(column).where(column == value).execution_options(autoflush=False)
    if exclude_id is not None:
        stmt = stmt.where(column.class_.id != exclude_id)
    if (await session.execute(stmt.limit(1))).first() is not None:
        raise Duplicate(f"{field} {value!r} is already taken", field=field)


# --- input hygiene: the checks every argument passes once, at the GraphQL boundary -------------
# (server.core.graphql.InputHygiene walks each request's variables and literals through these.)

MAX_TEXT = 10_000  # any one string of a request; tighter limits are per field, in the services
MAX_SEARCH = 200  # a search term (LIKE patterns grow costly with length on SQLite)
# Quantities: one movement or line, and the balance of a shelf. 10^9 keeps the sum of a balance
# and one request's change inside the INTEGER columns (2^31 - 1) on both databases.
MAX_QUANTITY = 1_000_000_000
MAX_BALANCE = 1_000_000_000
# Money columns are Numeric(12, 4): at most 8 digits before the point and 4 after it.
DECIMAL_PLACES = 4
DECIMAL_LIMIT = Decimal(10) ** (12 - DECIMAL_PLACES)
# Dates and datetimes: far enough back for any record, far enough ahead for any expiry; outside
# this range date arithmetic (timezone shifts, expiry windows) would overflow.
MIN_YEAR = 1900
MAX_YEAR = 2999


def check_text(value: str, field: str, *, max_length: int = MAX_TEXT) -> str:
    """A string the databases can store as sent: no NUL, no lone surrogate, not overlong."""
    if len(value) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", field=field)
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{field} contains a lone surrogate (not valid Unicode text)", field=field
        ) from None
    return value


def check_decimal(value: Decimal, field: str) -> Decimal:
    """A finite amount that fits a Numeric(12, 4) column exactly."""
    if not value.is_finite():
        raise InvalidInput(f"{field} must be a finite number", field=field)
    if abs(value) >= DECIMAL_LIMIT:
        raise InvalidInput(f"{field} must be below {DECIMAL_LIMIT:,} in magnitude", field=field)
    if value != value.quantize(Decimal(1).scaleb(-DECIMAL_PLACES)):
        raise InvalidInput(f"{field} has more than {DECIMAL_PLACES} decimal places", field=field)
    return value


def check_date(value: date, field: str) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise InvalidInput(
            f"{field} must be between the years {MIN_YEAR} and {MAX_YEAR}", field=field
        )
    return value


def check_datetime(value: datetime, field: str) -> datetime:
    """An aware datetime in the sane range: a naive one would be read in an unknown zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{field} must carry a time zone (e.g. 2030-01-01T00:00:00Z)", field=field
        )
    return check_date(value, field)  # type: ignore[return-value]


def check_quantity(value: int, field: str = "quantity") -> int:
    if abs(value) > MAX_QUANTITY:
        raise InvalidInput(f"{field} must be at most {MAX_QUANTITY:,}", field=field)
    return value


LIKE_ESCAPE = "\\"


def like_pattern(text: str, field: str = "search", *, max_length: int = MAX_SEARCH) -> str:
    """`%text%` for LIKE/ILIKE with `\\`, `%` and `_` taken literally (use escape=LIKE_ESCAPE)."""
    text = check_text(text.strip(), field, max_length=max_length)
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
