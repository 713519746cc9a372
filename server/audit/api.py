"""GraphQL for the audit trail: who did what, when, with before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from server.audit.service import TrailFilter, check_integrity, trail_page
from server.core.cost import weigh
from server.core.db import utcnow
from server.core.graphql import (
    CountedConnection,
    FromModel,
    Info,
    connection,
    optional_id,
)
from server.network.api import User


@strawberry.type(description="One audited change: who did what to which record, when.")
class AuditEvent(FromModel):
    seq: int = strawberry.field(description="Position in the hash chain (1 is the first event).")
    occurred_at: datetime = strawberry.field(description="When it happened.")
    actor_name: str = strawberry.field(
        description="Username (or client id) of who did it, as it was then."
    )
    role: str = strawberry.field(description="The role they acted with; SYSTEM: the command line.")
    action: str = strawberry.field(description="What was done, e.g. transfer.approve.")
    entity_type: str = strawberry.field(description="The kind of record, e.g. Transfer.")
    entity_id: str = strawberry.field(description="The record's database id.")
    before: JSON | None = strawberry.field(description="The record before; null for a creation.")
    after: JSON | None = strawberry.field(description="The record after; null for a deletion.")
    reason: str | None = strawberry.field(description="The reason given, if any.")
    request_id: str | None = strawberry.field(description="The request that made it, if known.")
    hash: str = strawberry.field(description="SHA-256 over this event and the previous hash.")


# Strawberry types a connection's node as a relay.Node, but pages any type: an audit event has
# no global id (its place is `seq`), and the schema has always listed it this way.
@strawberry.type(description="A page of the audit trail.")
class AuditEventConnection(CountedConnection[AuditEvent]):  # type: ignore[type-var]
    pass


@strawberry.type(
    description="The hash chain verified from its last checkpoint (or, with full, from the first "
    "event: what `apotheca verify-audit` says)."
)
class AuditIntegrity:
    ok: bool = strawberry.field(description="True when every event checked adds up.")
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
    checked_at: datetime = strawberry.field(description="When this verification ran.")


@strawberry.type
class Query:
    @strawberry.field(
        description="Verify the audit hash chain now: the events after the last checkpoint, the "
        "checkpointed event itself and the head. Edits before the checkpoint are found by a "
        "full verification (full: true, administrators only, costly), which reads every event "
        "and checks every checkpoint. Administrators and auditors.",
        metadata=weigh(1000, flags={"full": 8000}),
    )
    async def audit_integrity(
        self,
        info: Info,
        full: Annotated[
            bool, strawberry.argument(description="Walk the whole chain (administrators only).")
        ] = False,
    ) -> AuditIntegrity:
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
        first: Annotated[
            int, strawberry.argument(description="Page size (1 to the configured cap).")
        ],
        after: Annotated[
            str | None, strawberry.argument(description="A cursor: the page starts after it.")
        ] = None,
        entity_type: Annotated[
            str | None, strawberry.argument(description="Only this kind of record, e.g. Lot.")
        ] = None,
        entity_id: Annotated[
            str | None, strawberry.argument(description="Only this record's database id.")
        ] = None,
        actor: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only what this User did.")
        ] = None,
        action: Annotated[
            str | None, strawberry.argument(description="Only this action, e.g. lot.recall.")
        ] = None,
        since: Annotated[
            datetime | None, strawberry.argument(description="From this moment (inclusive).")
        ] = None,
        until: Annotated[
            datetime | None, strawberry.argument(description="Before this moment (exclusive).")
        ] = None,
    ) -> AuditEventConnection:
        where = TrailFilter(
            entity_type=entity_type,
            entity_id=entity_id,
            actor_id=optional_id(actor, User, "actor"),
            action=action,
            since=since,
            until=until,
        )
        page = await trail_page(
            info.context.db,
            info.context.require_principal(),
            where,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(AuditEventConnection, page, AuditEvent.from_model)
