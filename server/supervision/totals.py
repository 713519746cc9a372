"""Running totals per (drug batch, constituent) and per (batch, sender -> receiver), updated in
the ledger's own transaction for every movement, so supervision never rescans history.

`totals_from_movements` is the pure half (also used by the full recomputation, so both paths
share one definition of what each movement kind means); `record_totals` upserts its result.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product
from server.inventory.models import Movement, MovementKind
from server.supervision.gamma import edge_of
from server.supervision.models import BatchConstituentTotal, BatchEdgeTotal

COUNTERS = (
    "produced",
    "received",
    "transferred_in",
    "returned",
    "adjusted_in",
    "shipped",
    "transferred_out",
    "dispensed",
    "disposed",
    "adjusted_out",
)
KIND_COUNTER = {
    MovementKind.PRODUCE: "produced",
    MovementKind.RECEIVE: "received",
    MovementKind.TRANSFER_IN: "transferred_in",
    MovementKind.RETURN: "returned",
    MovementKind.SHIP: "shipped",
    MovementKind.TRANSFER_OUT: "transferred_out",
    MovementKind.DISPENSE: "dispensed",
    MovementKind.DISPOSE: "disposed",
}
SENDING = frozenset({MovementKind.SHIP, MovementKind.TRANSFER_OUT})
RECEIVING = frozenset({MovementKind.RECEIVE, MovementKind.TRANSFER_IN})

BatchKey = tuple[str, str]  # (approval number, batch number)


@dataclass(frozen=True)
class MovementFact:
    """What supervision needs of one movement."""

    approval_number: str
    batch_number: str
    organisation_id: int
    counterparty_id: int | None
    kind: MovementKind
    quantity: int  # signed, as in the ledger
    occurred_at: datetime


@dataclass
class Totals:
    constituents: dict[tuple[str, str, int], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    )
    edges: dict[tuple[str, str, int, int], dict[str, Any]] = field(
        default_factory=lambda: defaultdict(
            lambda: {"shipped": 0, "received": 0, "last_shipped_at": None}
        )
    )


def totals_from_movements(facts: Iterable[MovementFact]) -> Totals:
    """Each constituent reports its own side only; edges pair a sender's and a receiver's.

    The edge of a row is `gamma.edge_of`: the named counterparty, or the organisation itself for
    transfers between its own locations (so a transfer on the road is in transit like any
    shipment); a SHIP or RECEIVE naming nobody has no edge (it left, or came from, outside).
    """
    totals = Totals()
    for fact in facts:
        key = (fact.approval_number, fact.batch_number, fact.organisation_id)
        counters = totals.constituents[key]
        if fact.kind in KIND_COUNTER:
            counters[KIND_COUNTER[fact.kind]] += abs(fact.quantity)
        elif fact.quantity > 0:  # ADJUST / COUNT carry their sign
            counters["adjusted_in"] += fact.quantity
        else:
            counters["adjusted_out"] += -fact.quantity
        pair = edge_of(fact.kind, fact.organisation_id, fact.counterparty_id)
        if pair is None:
            continue
        edge = totals.edges[(fact.approval_number, fact.batch_number, *pair)]
        if fact.kind in SENDING:
            edge["shipped"] += abs(fact.quantity)
            last = edge["last_shipped_at"]
            edge["last_shipped_at"] = (
                fact.occurred_at if last is None else max(last, fact.occurred_at)
            )
        else:
            edge["received"] += abs(fact.quantity)
    return totals


@functools.cache
def _constituent_upsert(dialect: str) -> Any:
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(BatchConstituentTotal).values(
        approval_number=bindparam("approval_number"),
        batch_number=bindparam("batch_number"),
        organisation_id=bindparam("organisation_id"),
        **{name: bindparam(name) for name in COUNTERS},
    )
    return stmt.on_conflict_do_update(
        index_elements=["approval_number", "batch_number", "organisation_id"],
        set_={
            name: getattr(BatchConstituentTotal, name) + getattr(stmt.excluded, name)
            for name in COUNTERS
        },
    )


@functools.cache
def _edge_upsert(dialect: str) -> Any:
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(BatchEdgeTotal).values(
        approval_number=bindparam("approval_number"),
        batch_number=bindparam("batch_number"),
        sender_id=bindparam("sender_id"),
        receiver_id=bindparam("receiver_id"),
        shipped=bindparam("shipped"),
        received=bindparam("received"),
        last_shipped_at=bindparam("last_shipped_at"),
    )
    latest = func.max if dialect == "sqlite" else func.greatest
    return stmt.on_conflict_do_update(
        index_elements=["approval_number", "batch_number", "sender_id", "receiver_id"],
        set_={
            "shipped": BatchEdgeTotal.shipped + stmt.excluded.shipped,
            "received": BatchEdgeTotal.received + stmt.excluded.received,
            "last_shipped_at": func.coalesce(
                latest(BatchEdgeTotal.last_shipped_at, stmt.excluded.last_shipped_at),
                BatchEdgeTotal.last_shipped_at,
                stmt.excluded.last_shipped_at,
            ),
        },
    )


async def record_totals(
    session: AsyncSession, written: list[tuple[Movement, Lot]]
) -> set[BatchKey]:
    """Add the movements just written to the running totals; returns the batches touched."""
    if not written:
        return set()
    product_ids = {lot.product_id for _, lot in written}
    approvals = dict(
        (
            await session.execute(
                select(Product.id, Product.approval_number).where(Product.id.in_(product_ids))
            )
        ).all()
    )
    totals = totals_from_movements(
        MovementFact(
            approvals[lot.product_id],
            lot.batch_number,
            m.organisation_id,
            m.counterparty_id,
            m.kind,
            m.quantity,
            m.occurred_at,
        )
        for m, lot in written
    )
    dialect = session.bind.dialect.name
    await session.execute(
        _constituent_upsert(dialect),
        [
            {"approval_number": a, "batch_number": b, "organisation_id": o, **counters}
            for (a, b, o), counters in totals.constituents.items()
        ],
    )
    if totals.edges:
        await session.execute(
            _edge_upsert(dialect),
            [
                {"approval_number": a, "batch_number": b, "sender_id": s, "receiver_id": r, **edge}
                for (a, b, s, r), edge in totals.edges.items()
            ],
        )
    return {(a, b) for a, b, _ in totals.constituents}
