"""One request key, one outcome: the replay mechanism every stock-moving use case shares.

The key is claimed first in the use case's own transaction, so a concurrent twin blocks on the
claim, then finds it taken and replays; a replay returns the first outcome, rebuilt from the
movements it recorded, and changes nothing. A key reused for a different request is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar, overload

from sqlalchemy import bindparam, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.cache import VERSION_SUBQUERY
from server.core.db import Database, run, utcnow
from server.core.errors import DomainError, ErrorCode, InvalidInput
from server.core.security import Principal
from server.inventory.models import AnyMovement, IdempotencyRecord, Movement

T = TypeVar("T")
MAX_KEY_LENGTH = 100


@overload
def clean_key(key: str | None, *, required: Literal[True]) -> str: ...
@overload
def clean_key(key: str | None, *, required: bool = False) -> str | None: ...
def clean_key(key: str | None, *, required: bool = False) -> str | None:
    """A stripped key, None when absent (or INVALID_INPUT when the use case needs one)."""
    cleaned = (key or "").strip()
    if not cleaned:
        if required:
            raise InvalidInput("this request needs an idempotency key", field="idempotency_key")
        return None
    if len(cleaned) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"idempotency key is longer than {MAX_KEY_LENGTH} characters", field="idempotency_key"
        )
    return cleaned


def request_hash(operation: str, payload: Any) -> str:
    """What the key promises: the same operation with the same input."""
    body = json.dumps({"operation": operation, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


async def recorded_movements(
    session: AsyncSession, principal: Principal, key: str, fingerprint: str
) -> list[AnyMovement] | None:
    """The movements the key's first request recorded, or None if the key is new."""
    record = await session.get(IdempotencyRecord, key)
    if record is None:
        return None
    if record.actor_id != principal.user_id or record.request_hash != fingerprint:
        raise DomainError(
            "this idempotency key was already used for a different request",
            field="idempotency_key",
            code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    # Movements written under the key carry it (`request_key`): a record whose result was
    # exactly those stores no ids (`run_once`), and its replay finds them by the key.
    found = (
        Movement.id.in_(record.movement_ids) if record.movement_ids else Movement.request_key == key
    )
    return list(
        (await session.execute(select(Movement).where(found).order_by(Movement.id))).scalars()
    )


_KEYED = "inventory.keyed_movements"  # session.info: request key -> ids written under it


def note_keyed(session: AsyncSession, key: str | None, ids: Iterable[int]) -> None:
    """Remember the movements this transaction wrote under a request key (`request_key`), so
    `run_once` can leave them out of the record: the replay finds them by the key."""
    if key is not None:
        session.info.setdefault(_KEYED, {}).setdefault(key, []).extend(ids)


@functools.cache
def _claim(dialect: str) -> Any:
    """Insert the key, or nothing when it exists (waiting for an uncommitted twin on PostgreSQL)."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return (
        insert(IdempotencyRecord.__table__)
        .values(
            key=bindparam("key"),
            actor_id=bindparam("actor_id"),
            operation=bindparam("operation"),
            request_hash=bindparam("request_hash"),
            movement_ids=bindparam("movement_ids"),
            created_at=bindparam("created_at"),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        # The reference data's version, so the cache is checked without a statement of its own.
        .returning(IdempotencyRecord.key, literal_column(VERSION_SUBQUERY))
    )


_RECORD_RESULT = (
    update(IdempotencyRecord.__table__)
    .where(IdempotencyRecord.key == bindparam("claimed"))
    .values(movement_ids=bindparam("movement_ids"))
)


async def run_once(
    db: Database,
    principal: Principal,
    *,
    key: str | None,
    operation: str,
    fingerprint: str,
    work: Callable[[AsyncSession], Awaitable[T]],
    movements_of: Callable[[T], Iterable[AnyMovement]],
    replay: Callable[[AsyncSession, list[AnyMovement]], Awaitable[T]],
) -> T:
    """Run `work` in one write transaction, at most once per key; later calls get `replay`.

    The claim is the transaction's first statement: a twin running concurrently blocks on it
    (PostgreSQL) or runs after it (SQLite's one writer, or a later savepoint of the same group
    commit), then finds the key taken and replays the first outcome inside its own transaction.
    """
    async with db.write() as session:
        if key is not None:
            params = {
                "key": key,
                "actor_id": principal.user_id,
                "operation": operation,
                "request_hash": fingerprint,
                "movement_ids": [],
                "created_at": utcnow(),
            }
            claimed = (await run(session, _claim(db.dialect), params)).first()
            if claimed is not None:
                db.cache.seen(session, int(claimed[1]))
            else:
                movements = await recorded_movements(session, principal, key, fingerprint)
                return await replay(session, movements or [])
        result = await work(session)
        if key is not None:
            ids = sorted(m.id for m in movements_of(result))
            # One statement fewer per request when the result is exactly what was written
            # under the key (every ledger write, scan and count): the record keeps no ids.
            if ids != sorted(session.info.get(_KEYED, {}).get(key, ())):
                await run(session, _RECORD_RESULT, {"claimed": key, "movement_ids": ids})
    return result
