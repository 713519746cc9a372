"""Running totals per (drug batch, constituent) and per (batch, sender -> receiver), updated in
the ledger's own transaction for every movement, so supervision never rescans history.

`totals_from_movements` is the pure half (also used by the full recomputation, so both paths
share one definition of what each movement kind means); `record_totals` upserts its result.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product
from server.core.db import UTCDateTime, dialect_of, run
from server.core.errors import InvalidInput
from server.inventory.models import AnyMovement, Movement, MovementKind
from server.supervision.gamma import RECEIVING, SENDING, edge_of
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


# --- the same definitions in SQL (set-based: recomputation, repair) ------------------------------

_M = Movement.__table__
# ADJUST, COUNT: by sign. Named (the kinds outside KIND_COUNTER), not NOT IN the other eight:
# two comparisons per row instead of eight, ~15% of a full recompute's CPU on SQLite.
_ADJUSTING = _M.c.kind.in_(sorted(set(MovementKind) - set(KIND_COUNTER)))


def _counter_sql(name: str) -> Any:
    """SQL for one counter of one movement row: `totals_from_movements`, term by term."""
    if name == "adjusted_in":
        return case((and_(_ADJUSTING, _M.c.quantity > 0), _M.c.quantity), else_=0)
    if name == "adjusted_out":
        return case((and_(_ADJUSTING, _M.c.quantity <= 0), -_M.c.quantity), else_=0)
    kinds = sorted(k for k, counter in KIND_COUNTER.items() if counter == name)
    return case((_M.c.kind.in_(kinds), func.abs(_M.c.quantity)), else_=0)


_SENDING_SQL = _M.c.kind.in_(sorted(SENDING))
# `gamma.edge_of`: the named counterparty; a TRANSFER naming nobody is the organisation to
# itself; a SHIP or RECEIVE naming nobody has no edge.
_HAS_EDGE = and_(
    _M.c.kind.in_(sorted(SENDING | RECEIVING)),
    or_(
        _M.c.counterparty_id.is_not(None),
        _M.c.kind.in_([MovementKind.TRANSFER_OUT, MovementKind.TRANSFER_IN]),
    ),
)
_OTHER_SIDE = func.coalesce(_M.c.counterparty_id, _M.c.organisation_id)
_SENDER = case((_SENDING_SQL, _M.c.organisation_id), else_=_OTHER_SIDE)
_RECEIVER = case((_SENDING_SQL, _OTHER_SIDE), else_=_M.c.organisation_id)


def _with_batch_key(grouped: Any, *columns: Any) -> Select[Any]:
    """Rows grouped by lot, with the batch key (approval number, batch number) put in front."""
    return (
        select(Product.approval_number, Lot.batch_number, *columns)
        .join_from(grouped, Lot, Lot.id == grouped.c.lot_id)
        .join(Product, Product.id == Lot.product_id)
    )


def constituent_totals_sql(lot_ids: Sequence[int] | None = None) -> Select[Any]:
    """Every constituent's totals straight from the movements (of these lots, else all):
    (approval_number, batch_number, organisation_id, *COUNTERS, movements). Grouped by the
    integer (lot, organisation) first, the batch key joined on the grouped rows."""
    grouped = select(
        _M.c.lot_id,
        _M.c.organisation_id,
        *(func.sum(_counter_sql(name)).label(name) for name in COUNTERS),
        func.count().label("movements"),
    ).group_by(_M.c.lot_id, _M.c.organisation_id)
    if lot_ids is not None:
        grouped = grouped.where(_M.c.lot_id.in_(list(lot_ids)))
    g = grouped.subquery("g")
    return _with_batch_key(g, g.c.organisation_id, *(g.c[name] for name in COUNTERS), g.c.movements)


def edge_totals_sql(lot_ids: Sequence[int] | None = None) -> Select[Any]:
    """Every edge's totals straight from the movements (of these lots, else all):
    (approval_number, batch_number, sender_id, receiver_id, shipped, received,
    last_shipped_at)."""
    sent = func.abs(_M.c.quantity)
    # Over the whole ledger, `lot_id + 0` keeps SQLite from walking the lot index and fetching
    # every row through it: reading the table in order costs ~40% less CPU. A few lots: by index.
    lot = _M.c.lot_id if lot_ids is not None else (_M.c.lot_id + 0)
    grouped = (
        select(
            lot.label("lot_id"),
            _SENDER.label("sender_id"),
            _RECEIVER.label("receiver_id"),
            func.sum(case((_SENDING_SQL, sent), else_=0)).label("shipped"),
            func.sum(case((_SENDING_SQL, 0), else_=sent)).label("received"),
            func.max(case((_SENDING_SQL, _M.c.occurred_at))).label("last_shipped_at"),
        )
        .where(_HAS_EDGE)
        .group_by(lot, _SENDER, _RECEIVER)
    )
    if lot_ids is not None:
        grouped = grouped.where(_M.c.lot_id.in_(list(lot_ids)))
    g = grouped.subquery("g")
    return _with_batch_key(
        g,
        g.c.sender_id,
        g.c.receiver_id,
        g.c.shipped,
        g.c.received,
        type_coerce(g.c.last_shipped_at, UTCDateTime()).label("last_shipped_at"),
    )


# --- the ledger's hook -----------------------------------------------------------------------

_CONSTITUENT_KEYS = ["approval_number", "batch_number", "organisation_id"]
_EDGE_KEYS = ["approval_number", "batch_number", "sender_id", "receiver_id"]


@functools.cache
def _upsert(dialect: str, model: Any) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE adding to what is there, built once per dialect and
    table; executed with a list of rows it is one multi-row statement (SQLAlchemy's
    insertmanyvalues) or one executemany. The rows' keys are distinct: they were summed first."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    table = model.__table__
    stmt = insert(table)
    if model is BatchConstituentTotal:
        changes = {name: table.c[name] + stmt.excluded[name] for name in COUNTERS}
        keys = _CONSTITUENT_KEYS
        counted = [table.c[name] for name in COUNTERS]
    else:
        latest = func.max if dialect == "sqlite" else func.greatest
        changes = {
            "shipped": table.c.shipped + stmt.excluded.shipped,
            "received": table.c.received + stmt.excluded.received,
            "last_shipped_at": func.coalesce(
                latest(table.c.last_shipped_at, stmt.excluded.last_shipped_at),
                table.c.last_shipped_at,
                stmt.excluded.last_shipped_at,
            ),
        }
        keys = _EDGE_KEYS
        counted = [table.c.shipped, table.c.received]
    return stmt.on_conflict_do_update(index_elements=keys, set_=changes).returning(*counted)


# Totals are GraphQL Ints and PostgreSQL INTEGERs: 32-bit signed.
MAX_TOTAL = 2**31 - 1


async def _upsert_all(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> None:
    """Upsert the rows; a running total past 32 bits refuses the whole write (typed), on
    PostgreSQL (the column overflows) as on SQLite (whose integers would silently grow)."""
    if not rows:
        return
    too_large = InvalidInput(
        f"this would take a batch's running totals past {MAX_TOTAL:,} packs", field="quantity"
    )
    try:
        result = await run(session, _upsert(dialect_of(session), model), rows)
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == "22003":  # numeric_value_out_of_range
            raise too_large from None
        raise
    if any(value > MAX_TOTAL for row in result.all() for value in row):
        raise too_large


async def record_totals(
    session: AsyncSession,
    written: Sequence[tuple[AnyMovement, Lot]],
    approvals: dict[int, str] | None = None,
) -> set[BatchKey]:
    """Add the movements just written to the running totals; returns the batches touched.

    Set-based: the movements are summed per row first (`totals_from_movements`), then one
    multi-row upsert per totals table (chunked only past ~2,400 distinct rows). `approvals`
    (product id -> approval number) saves the one query that would look them up."""
    if not written:
        return set()
    product_ids = {lot.product_id for _, lot in written}
    known = approvals or {}
    if not product_ids <= known.keys():
        known = dict(
            (
                await session.execute(
                    select(Product.id, Product.approval_number).where(Product.id.in_(product_ids))
                )
            ).all()
        )
    totals = totals_from_movements(
        MovementFact(
            known[lot.product_id],
            lot.batch_number,
            m.organisation_id,
            m.counterparty_id,
            m.kind,
            m.quantity,
            m.occurred_at,
        )
        for m, lot in written
    )
    await _upsert_all(
        session,
        BatchConstituentTotal,
        [
            {"approval_number": a, "batch_number": b, "organisation_id": o, **counters}
            for (a, b, o), counters in sorted(totals.constituents.items())
        ],
    )
    await _upsert_all(
        session,
        BatchEdgeTotal,
        [
            {"approval_number": a, "batch_number": b, "sender_id": s, "receiver_id": r, **edge}
            for (a, b, s, r), edge in sorted(totals.edges.items())
        ],
    )
    return {(a, b) for a, b, _ in totals.constituents}
