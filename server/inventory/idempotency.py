"""One request key, one outcome: the replay mechanism every stock-moving use case shares.

The key is claimed first in the use case's own transaction, so a concurrent twin blocks on the
claim, then fails on the unique key and replays; a replay returns the first outcome, rebuilt from
the movements it recorded, and changes nothing. A key reused for a different request is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import Database
from server.core.errors import DomainError, ErrorCode, InvalidInput
from server.core.security import Principal
from server.inventory.models import IdempotencyRecord, Movement

T = TypeVar("T")
MAX_KEY_LENGTH = 100


def clean_key(key: str | None, *, required: bool = False) -> str | None:
    """A stripped key, None when absent (or INVALID_INPUT when the use case needs one)."""
    cleaned = (key or "").strip()
    if not cleaned:
        if required:
            raise InvalidInput("this request needs an idempotency key", field="idempotencyKey")
        return None
    if len(cleaned) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"idempotency key is longer than {MAX_KEY_LENGTH} characters", field="idempotencyKey"
        )
    return cleaned


def request_hash(operation: str, payload: Any) -> str:
    """What the key promises: the same operation with the same input."""
    body = json.dumps({"operation": operation, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


async def recorded_movements(
    session: AsyncSession, principal: Principal, key: str, fingerprint: str
) -> list[Movement] | None:
    """The movements the key's first request recorded, or None if the key is new."""
    record = await session.get(IdempotencyRecord, key)
    if record is None:
        return None
    if record.actor_id != principal.user_id or record.request_hash != fingerprint:
        raise DomainError(
            "this idempotency key was already used for a different request",
            field="idempotencyKey",
            code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    return list(
        (
            await session.execute(
                select(Movement).where(Movement.id.in_(record.movement_ids)).order_by(Movement.id)
            )
        ).scalars()
    )


async def run_once(
    db: Database,
    principal: Principal,
    *,
    key: str | None,
    operation: str,
    fingerprint: str,
    work: Callable[[AsyncSession], Awaitable[T]],
    movements_of: Callable[[T], Iterable[Movement]],
    replay: Callable[[AsyncSession, list[Movement]], Awaitable[T]],
) -> T:
    """Run `work` in one write transaction, at most once per key; later calls get `replay`."""

    async def replayed() -> T | None:
        if key is None:
            return None
        async with db.read() as session:
            movements = await recorded_movements(session, principal, key, fingerprint)
            return None if movements is None else await replay(session, movements)

    if (first := await replayed()) is not None:
        return first
    try:
        async with db.write() as session:
            claim = None
            if key is not None:
                claim = IdempotencyRecord(
                    key=key,
                    actor_id=principal.user_id,
                    operation=operation,
                    request_hash=fingerprint,
                    movement_ids=[],
                )
                session.add(claim)
                await session.flush()
            result = await work(session)
            if claim is not None:
                claim.movement_ids = [m.id for m in movements_of(result)]
    except IntegrityError:
        if (first := await replayed()) is not None:
            return first
        raise
    return result
