"""GraphQL for the audit trail: who did what, when, with before and after."""

from __future__ import annotations

from datetime import datetime

import strawberry
from sqlalchemy import select
from strawberry import relay
from strawberry.scalars import JSON

from server.audit.service import check_integrity
from server.core import audit
from server.core.cost import weigh
from server.core.db import utcnow
from server.core.graphql import CountedConnection, FromModel, Info, connection, decode_id, paginate
from server.core.security import Permission
from server.network.api import User


@strawberry.type
class AuditEvent(FromModel):
    seq: int
    occurred_at: datetime
    actor_name: str
    role: str
    action: str
    entity_type: str
    entity_id: str
    before: JSON | None
    after: JSON | None
    reason: str | None
    request_id: str | None
    hash: str


@strawberry.type
class AuditEventConnection(CountedConnection[AuditEvent]):
    pass


@strawberry.type(
    description="The hash chain verified from its last checkpoint (or, with full, from the first "
    "event: what `apotheca verify-audit` says)."
)
class AuditIntegrity:
    ok: bool
    events_checked: int = strawberry.field(
        description="Events known intact before the first broken one (all of them when ok): "
        "those up to the checkpoint this run started from and those it checked."
    )
    newly_checked: int = strawberry.field(
        description="Events this run read and re-hashed: those after its checkpoint."
    )
    from_checkpoint_seq: int | None = strawberry.field(
        description="The checkpoint (an event verified intact earlier) this run started after; "
        "null when it walked the whole chain."
    )
    first_broken_seq: int | None = strawberry.field(
        description="The first event that does not add up; null when ok."
    )
    reason: str | None = strawberry.field(description="Why it does not add up; null when ok.")
    checked_at: datetime


@strawberry.type
class Query:
    @strawberry.field(
        description="Verify the audit hash chain now: the events after the last checkpoint, the "
        "checkpointed event itself and the head. Edits before the checkpoint are found by a "
        "full verification (full: true, administrators only, costly), which reads every event "
        "and checks every checkpoint. Administrators and auditors.",
        metadata=weigh(1000, flags={"full": 8000}),
    )
    async def audit_integrity(self, info: Info, full: bool = False) -> AuditIntegrity:
        result = await check_integrity(info.context.db, info.context.require_principal(), full=full)
        return AuditIntegrity(
            ok=result.ok,
            events_checked=result.checked,
            newly_checked=result.newly_checked,
            from_checkpoint_seq=result.from_seq or None,
            first_broken_seq=result.first_bad_seq,
            reason=result.problem,
            checked_at=utcnow(),
        )

    @strawberry.field(description="Audit events, newest first. Administrators and auditors.")
    async def audit_trail(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: relay.GlobalID | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AuditEventConnection:
        info.context.require_principal().require(Permission.AUDIT_READ)
        E = audit.AuditEvent
        stmt = select(E)
        if entity_type:
            stmt = stmt.where(E.entity_type == entity_type)
        if entity_id:
            stmt = stmt.where(E.entity_id == entity_id)
        if actor is not None:
            stmt = stmt.where(E.actor_id == decode_id(actor, User, "actor"))
        if action:
            stmt = stmt.where(E.action == action)
        if since is not None:
            stmt = stmt.where(E.occurred_at >= since)
        if until is not None:
            stmt = stmt.where(E.occurred_at < until)
        page = await paginate(
            info,
            stmt,
            keys=[E.seq],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.seq],
        )
        return connection(AuditEventConnection, page, AuditEvent.from_model)
