"""Audit integrity for the API: verify from the last checkpoint, or (administrators) all of it.

A verification reads in a session of its own (verify() expunges as it walks) and, when the
chain is intact, records a checkpoint in a short write transaction of its own, so the next
run starts where this one ended.
"""

from __future__ import annotations

from server.core import audit
from server.core.db import Database
from server.core.errors import Forbidden
from server.core.security import Permission, Principal, Role


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
