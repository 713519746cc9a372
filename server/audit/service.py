"""The audit trail for the API: list it, and verify it from the last checkpoint or
(administrators) all of it.

A verification reads in a session of its own (verify() expunges as it walks) and, when the
chain is intact, records a checkpoint in a short write transaction of its own, so the next
run starts where this one ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from server.core import audit
from server.core.db import Database
from server.core.errors import Forbidden
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal, Role


@dataclass(frozen=True)
class TrailFilter:
    """Which events of the trail to list; None leaves a criterion out."""

    entity_type: str | None = None
    entity_id: str | None = None
    actor_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def trail_page(
    db: Database,
    principal: Principal,
    where: TrailFilter,
    *,
    first: int,
    after: str | None,
    max_page_size: int,
) -> Page[audit.AuditEvent]:
    """Audit events matching `where`, newest first. Administrators and auditors."""
    principal.require(Permission.AUDIT_READ)
    E = audit.AuditEvent
    stmt = select(E)
    if where.entity_type:
        stmt = stmt.where(E.entity_type == where.entity_type)
    if where.entity_id:
        stmt = stmt.where(E.entity_id == where.entity_id)
    if where.actor_id is not None:
        stmt = stmt.where(E.actor_id == where.actor_id)
    if where.action:
        stmt = stmt.where(E.action == where.action)
    if where.since is not None:
        stmt = stmt.where(E.occurred_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(E.occurred_at < where.until)
    return await keyset_page(
        db,
        stmt,
        keys=[E.seq],
        first=first,
        after=after,
        max_page_size=max_page_size,
        descending=True,
        key_of=lambda r: [r.seq],
    )


async def check_integrity(
    db: Database, principal: Principal, *, full: bool = False
) -> audit.AuditVerification:
    """Administrators and auditors verify incrementally; only administrators walk it all."""
    principal.require(Permission.AUDIT_READ)
    if full and Role.ADMIN not in principal.roles:
        raise Forbidden("only administrators may run a full verification of the audit chain")
    async with db.read() as session:
        result = await audit.verify(session, since_checkpoint=not full)
    if result.ok and result.newly_checked:
        async with db.write() as session:
            await audit.save_checkpoint(session, result)
    return result
