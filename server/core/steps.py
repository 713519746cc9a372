"""A record took a step (a transfer approved, a count closed, a shipment received): the one way
to tell the world, so every domain's steps are flushed, announced and audited alike."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from server.core import audit
from server.core.events import Event, EventBus
from server.core.security import Principal


async def took_step(
    session: AsyncSession,
    bus: EventBus,
    principal: Principal,
    entry: audit.AuditEntry,
    *,
    events: Sequence[Event] = (),
    also: Sequence[audit.AuditEntry] = (),
) -> None:
    """Flush, queue `events` (sent only if the transaction commits) and audit `entry` plus
    `also` in one chained write. Call it last in the transaction: the audit holds the chain's
    lock until commit."""
    await session.flush()
    await bus.emit(session, list(events))
    await audit.record_many(session, principal, [entry, *also])
