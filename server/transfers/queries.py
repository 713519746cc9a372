"""Reads of transfers for lists: the statement, the scope filter and the page, GraphQL-neutral.

A transfer is listed to whoever sees its source or its destination; the API turns the page into
a connection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from server.core.pagination import Page, Reader, keyset_page
from server.core.security import Permission, Principal
from server.transfers.models import Transfer, TransferStatus


async def transfers_page(
    db: Reader,
    principal: Principal,
    *,
    first: int,
    after: str | None = None,
    status: TransferStatus | None = None,
    location_id: int | None = None,
    max_page_size: int,
) -> Page[Any]:
    """Transfers from or to `location_id` (checked), else any location `principal` sees,
    newest first, optionally of one status."""
    locations = principal.readable_locations(Permission.STOCK_READ, location_id)
    stmt = select(Transfer)
    if locations is not None:
        stmt = stmt.where(
            or_(Transfer.source_id.in_(locations), Transfer.destination_id.in_(locations))
        )
    if status is not None:
        stmt = stmt.where(Transfer.status == status)
    return await keyset_page(
        db,
        stmt,
        keys=[Transfer.id],
        first=first,
        after=after,
        max_page_size=max_page_size,
        descending=True,
        key_of=lambda row: [row.id],
    )
