"""Input checks every domain's writes share, so each refusal reads the same way."""

from __future__ import annotations

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
