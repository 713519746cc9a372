"""Supervision checks: gamma per batch from the running totals, the stored status of every batch,
status-change alerts, the periodic sweep, and the full recomputation from the ledger.

Cost: a check reads the batch's totals rows (one per constituent, one per edge), never its
history. Receipts are matched to shipments first-in-first-out, so an edge's unmatched
shipments are the sender's newest `gap` units: deciding the status reads only the shipments
inside the transit window of edges that still have a gap (through the movements' (lot,
occurred_at) index); naming the shipments behind each part (the API's check, the wording of a
new alert) reads each unmatched side's newest SHIP/RECEIVE/TRANSFER rows of that batch until
the gap is covered, and stops there.

Status rows (`batch_statuses`) are kept current by `refresh_status`, which the ledger calls in
its own transaction right after `record_totals`: it locks the batch's status row (so concurrent
writers of one batch take turns and the last one sees every committed report), recomputes, and
raises or resolves alerts when the status changes. Time alone turns IN_TRANSIT into
OUTFLOW_LEAK, so `check_all(in_transit_only=True)` runs periodically; `check_all()` re-checks
every batch (the CLI, and after a repair).

Alerts (kind SUPERVISION_STATUS): on a change to ILLEGAL_INFLOW, OUTFLOW_LEAK or
NEGATIVE_INVENTORY, one alert for the regulator (no organisation, no location: global roles
only) and one per organisation whose reports explain it (organisation_id set: its users). Their
condition key is per batch, status and organisation; a change of status resolves the alerts of
the previous one. NORMAL and IN_TRANSIT raise nothing (a shipment on the road is the ordinary
state of a batch).

Who sees what: ADMIN, AUDITOR and REGULATOR every batch and everything; other roles with
TRACE_READ only batches their organisation handled (it has a totals row; otherwise FORBIDDEN),
and of those only their own inventory, the edges they are an end of, and the parts of the
explanation that name them. Gamma, status and the batch-wide totals stay visible.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import Alert, AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, Product
from server.catalog.service import clean_batch_number
from server.core.db import Database, UTCDateTime, dialect_of, run, utcnow
from server.core.errors import Forbidden, InvalidInput, NotFound
from server.core.events import Event
from server.core.pagination import Page, keyset_page
from server.core.security import GLOBAL_ROLES, Permission, Principal
from server.inventory.models import Movement, MovementKind
from server.network.models import Organisation, OrganisationKind
from server.supervision.gamma import (
    ALERTING,
    ONE_SIDED_NAMES,
    RECEIVING,
    SENDING,
    BatchAnalysis,
    Constituent,
    Edge,
    Names,
    PartKind,
    Side,
    SupervisionStatus,
    TransferRow,
    analyse,
    edges_in_transit,
    explain,
    scoped,
    sides_to_name,
    summary,
)
from server.supervision.models import BatchConstituentTotal, BatchEdgeTotal, BatchStatus
from server.supervision.totals import (
    _CONSTITUENT_KEYS,
    _EDGE_KEYS,
    COUNTERS,
    BatchKey,
    Totals,
    constituent_totals_sql,
    edge_totals_sql,
)

ALERT_PREFIX = "supervision:"
# A batch back from an alerting status (its alerts resolve, so no alert event says so): the
# bus event that tells webhooks and other listeners who had been alerted.
RECOVERY_TOPIC = "supervision_recovery"
SWEEP_CHUNK = 500
NAMED_PAGE = 100  # movements per read when naming a batch's unmatched sides
MAX_EXACT_KEYS = 200  # batches named one by one in a query (SQLite's expression depth is 1000)


def status_alert_prefix(key: BatchKey) -> str:
    return f"{ALERT_PREFIX}{key[0]}:{key[1]}:"


def status_alert_key(key: BatchKey, status: SupervisionStatus, organisation_id: int | None) -> str:
    """One live alert per batch, status and organisation ('network' = the regulator's)."""
    who = "network" if organisation_id is None else str(organisation_id)
    return f"{status_alert_prefix(key)}{status.value}:{who}"


def is_global(principal: Principal) -> bool:
    return bool(principal.roles & GLOBAL_ROLES)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCheck:
    """One batch checked: the analysis (scoped to the caller's organisation unless global)."""

    approval_number: str
    batch_number: str
    product_id: int | None
    lot_id: int | None
    analysis: BatchAnalysis
    summary: str
    explanation: list[str]  # one sentence per analysis.parts entry
    labels: dict[int, str]
    transit_window: timedelta
    checked_at: datetime
    scoped_to: int | None = None


@dataclass(frozen=True)
class StatusChange:
    key: BatchKey
    previous: SupervisionStatus
    current: SupervisionStatus
    gamma: int


@dataclass
class SweepResult:
    checked: int = 0
    changes: list[StatusChange] = field(default_factory=list)
    by_status: dict[SupervisionStatus, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class Difference:
    """One column of one totals row where the running total and the ledger disagree."""

    approval_number: str
    batch_number: str
    organisations: tuple[int, ...]  # (constituent,) or (sender, receiver)
    column: str
    stored: Any
    recomputed: Any

    def describe(self, names: dict[int, str] | None = None) -> str:
        def name(org_id: int) -> str:
            return f"{names[org_id]} ({org_id})" if names and org_id in names else str(org_id)

        row = (
            f"constituent {name(self.organisations[0])}"
            if len(self.organisations) == 1
            else f"edge {name(self.organisations[0])} -> {name(self.organisations[1])}"
        )
        return f"{row} {self.column}: running total {self.stored}, ledger {self.recomputed}"


@dataclass
class RecomputeResult:
    batches: int
    movements: int
    differences: list[Difference]
    repaired: bool = False

    @property
    def differing_batches(self) -> list[BatchKey]:
        return sorted({(d.approval_number, d.batch_number) for d in self.differences})


# --- loading -----------------------------------------------------------------------------------


def _key_filter(a: Any, b: Any, keys: Sequence[BatchKey], contiguous: bool) -> Any:
    """Rows of these batches: a primary-key range for a sweep chunk (callers drop what is
    between), else the exact keys as OR-ed equalities, which both databases answer from the
    primary key (SQLite scans the table for a row-value IN list)."""
    if contiguous:
        return and_(tuple_(a, b) >= tuple_(*keys[0]), tuple_(a, b) <= tuple_(*keys[-1]))
    if len(keys) > MAX_EXACT_KEYS:
        raise ValueError(f"at most {MAX_EXACT_KEYS} batches per query, got {len(keys)}")
    return or_(*(and_(a == x, b == y) for x, y in keys))


def _chunks(keys: Sequence[BatchKey], size: int = MAX_EXACT_KEYS) -> Iterable[list[BatchKey]]:
    for start in range(0, len(keys), size):
        yield list(keys[start : start + size])


_CONSTITUENT_COLUMNS = [getattr(BatchConstituentTotal, n) for n in COUNTERS]


async def _load_totals(
    session: AsyncSession, keys: Sequence[BatchKey], *, contiguous: bool = False
) -> tuple[dict[BatchKey, list[Constituent]], dict[BatchKey, list[Edge]], dict[int, str]]:
    """Constituent and edge totals of the batches (two queries), and the constituents' labels."""
    C, E = BatchConstituentTotal, BatchEdgeTotal
    wanted = set(keys)
    constituents: dict[BatchKey, list[Constituent]] = defaultdict(list)
    labels: dict[int, str] = {}
    rows = await session.execute(
        select(
            C.approval_number,
            C.batch_number,
            C.organisation_id,
            Organisation.kind,
            Organisation.name,
            *_CONSTITUENT_COLUMNS,
        )
        .join(Organisation, Organisation.id == C.organisation_id)
        .where(_key_filter(C.approval_number, C.batch_number, keys, contiguous))
    )
    for a, b, org, kind, org_name, *counters in rows:
        if (a, b) not in wanted:
            continue
        labels[org] = _label(kind, org_name)
        constituents[(a, b)].append(
            Constituent(org, kind == OrganisationKind.MANUFACTURER, *counters)
        )
    edges: dict[BatchKey, list[Edge]] = defaultdict(list)
    rows = await session.execute(
        select(
            E.approval_number,
            E.batch_number,
            E.sender_id,
            E.receiver_id,
            E.shipped,
            E.received,
            E.last_shipped_at,
        ).where(_key_filter(E.approval_number, E.batch_number, keys, contiguous))
    )
    for a, b, *edge in rows:
        if (a, b) in wanted:
            edges[(a, b)].append(Edge(*edge))
    return constituents, edges, labels


@functools.cache
def _one_batch_sql() -> Select[Any]:
    """Everything a check of one batch reads first, as one statement (built once, the key as
    bind parameters `a` and `b`): its constituents' totals with their labels (tag 1), its edges
    (tag 2), its lot (tag 3) and the labels of edge ends that report nothing for it (tag 4),
    so a check costs one round trip like a plain GROUP BY. The NULLs are typed: PostgreSQL
    matches UNION columns branch by branch."""
    C, E = BatchConstituentTotal, BatchEdgeTotal
    a, b = bindparam("a", type_=String()), bindparam("b", type_=String())

    def nulls(*types: Any) -> list[Any]:
        return [cast(null(), t) for t in types]

    ints = [Integer()] * len(COUNTERS)
    kind, name = Organisation.kind, Organisation.name
    constituents = (
        select(
            literal_column("1").label("tag"),
            C.organisation_id.label("org"),
            *nulls(Integer()),
            kind,
            name,
            *_CONSTITUENT_COLUMNS,
            *nulls(Integer(), Integer(), UTCDateTime(), Integer(), Integer()),
        )
        .join(Organisation, Organisation.id == C.organisation_id)
        .where(C.approval_number == a, C.batch_number == b)
    )
    edges = select(
        literal_column("2"),
        E.sender_id,
        E.receiver_id,
        *nulls(kind.type, name.type, *ints),
        E.shipped,
        E.received,
        E.last_shipped_at,
        *nulls(Integer(), Integer()),
    ).where(E.approval_number == a, E.batch_number == b)
    lot = (
        select(
            literal_column("3"),
            *nulls(Integer(), Integer(), kind.type, name.type, *ints),
            *nulls(Integer(), Integer(), UTCDateTime()),
            Lot.id,
            Lot.product_id,
        )
        .join(Product, Product.id == Lot.product_id)
        .where(Product.approval_number == a, Lot.batch_number == b)
    )
    ends = union(
        select(E.sender_id).where(E.approval_number == a, E.batch_number == b),
        select(E.receiver_id).where(E.approval_number == a, E.batch_number == b),
    )
    silent = select(
        literal_column("4"),
        Organisation.id,
        *nulls(Integer()),
        kind,
        name,
        *nulls(*ints, Integer(), Integer(), UTCDateTime(), Integer(), Integer()),
    ).where(
        Organisation.id.in_(ends),
        ~exists().where(
            C.approval_number == a, C.batch_number == b, C.organisation_id == Organisation.id
        ),
    )
    return union_all(constituents, edges, lot, silent)  # type: ignore[return-value]


async def _load_one(
    session: AsyncSession, key: BatchKey
) -> tuple[list[Constituent], list[Edge], dict[int, str], tuple[int, int] | None]:
    """One batch's constituents, edges, labels (of every edge end too) and (lot id, product
    id), in one statement."""
    constituents: list[Constituent] = []
    edges: list[Edge] = []
    labels: dict[int, str] = {}
    lot: tuple[int, int] | None = None
    rows = await session.execute(_one_batch_sql(), {"a": key[0], "b": key[1]})
    for tag, org, receiver, kind, org_name, *rest in rows:
        if tag == 1:
            labels[org] = _label(kind, org_name)
            counters = rest[: len(COUNTERS)]
            constituents.append(Constituent(org, kind == OrganisationKind.MANUFACTURER, *counters))
        elif tag == 2:
            shipped, received, last = rest[len(COUNTERS) : len(COUNTERS) + 3]
            edges.append(Edge(org, receiver, shipped, received, last))
        elif tag == 3:
            lot = (rest[-2], rest[-1])
        else:
            labels[org] = _label(kind, org_name)
    return constituents, edges, labels, lot


def _label(kind: OrganisationKind | str, name: str) -> str:
    return f"{str(getattr(kind, 'value', kind)).lower()} {name}"


@functools.cache
def _labels_sql() -> Select[int, OrganisationKind, str]:
    """Organisations' kinds and names by id (bind `ids`), built once."""
    org = Organisation
    return select(org.id, org.kind, org.name).where(org.id.in_(bindparam("ids", expanding=True)))


async def _labels(session: AsyncSession, ids: Iterable[int | None], known: dict[int, str]) -> None:
    """Fill in labels of organisations not yet known (edge ends that report nothing; None,
    a part without a counterparty, is skipped)."""
    missing = {i for i in ids if i is not None and i not in known}
    if missing:
        rows = await session.execute(_labels_sql(), {"ids": sorted(missing)})
        for org_id, kind, name in rows:
            known[org_id] = _label(kind, name)


async def _lots(session: AsyncSession, keys: Iterable[BatchKey]) -> dict[BatchKey, tuple[int, int]]:
    """(lot id, product id) of each batch key (approval numbers are unique per product)."""
    keys = list(set(keys))
    if not keys:
        return {}
    rows = await session.execute(
        select(Product.approval_number, Lot.batch_number, Lot.id, Lot.product_id)
        .join(Product, Product.id == Lot.product_id)
        .where(
            Product.approval_number.in_({a for a, _ in keys}),
            Lot.batch_number.in_({b for _, b in keys}),
        )
    )
    wanted = set(keys)
    return {(a, b): (lot, product) for a, b, lot, product in rows if (a, b) in wanted}


MISSING_LOT = object()  # `_named_rows`: the caller did not read the lot

_ROW_COLUMNS = (
    Movement.lot_id,
    Movement.id,
    Movement.kind,
    Movement.organisation_id,
    Movement.counterparty_id,
    Movement.quantity,
    Movement.occurred_at,
    Movement.reference,
)


_MovementRow = Row[int, int, MovementKind, int, int | None, int, datetime, str | None]


def _row(row: _MovementRow) -> TransferRow:
    """A row of `_ROW_COLUMNS` (its lot id first) as a TransferRow."""
    _, mid, kind, org, cp, q, at, ref = row
    return TransferRow(mid, kind, org, cp, abs(q), at, ref)


async def _window_shipments(
    session: AsyncSession,
    wanted: dict[BatchKey, list[Edge]],
    *,
    now: datetime,
    window: timedelta,
) -> dict[BatchKey, list[TransferRow]]:
    """For the status: the shipments inside the window of edges still in transit, through the
    movements' (lot, occurred_at) index, so only recent rows are read, never the history."""
    wanted = {k: v for k, v in wanted.items() if v}
    if not wanted:
        return {}
    lots = await _lots(session, wanted)
    by_lot = {lot_id: key for key, (lot_id, _) in lots.items()}
    if not by_lot:
        return {}
    M = Movement
    rows = await session.execute(
        select(*_ROW_COLUMNS).where(
            M.lot_id.in_(list(by_lot)),
            M.occurred_at > now - window,
            M.kind.in_(sorted(SENDING)),
            M.organisation_id.in_({e.sender_id for edges in wanted.values() for e in edges}),
        )
    )
    found: dict[BatchKey, list[TransferRow]] = defaultdict(list)
    for movement in rows:
        found[by_lot[movement[0]]].append(_row(movement))
    return found


@functools.cache
def _named_rows_sql(
    *, after: bool
) -> Select[int, int, MovementKind, int, int | None, int, datetime, str | None]:
    """`_named_rows`' page, built once (a check pays no statement building or cache-key work):
    one lot's rows of some kinds reported by some organisations, newest first; `after`: only
    those older than the previous page's last (binds `at`, `id`)."""
    M = Movement
    query = (
        select(*_ROW_COLUMNS)
        .where(
            M.lot_id == bindparam("lot"),
            M.kind.in_(bindparam("kinds", expanding=True)),
            M.organisation_id.in_(bindparam("orgs", expanding=True)),
        )
        .order_by(M.occurred_at.desc(), M.id.desc())
        .limit(NAMED_PAGE)
    )
    if after:
        at, last = bindparam("at", type_=UTCDateTime()), bindparam("id", type_=Integer())
        query = query.where(or_(M.occurred_at < at, and_(M.occurred_at == at, M.id < last)))
    return query


async def _named_rows(
    session: AsyncSession,
    key: BatchKey,
    sides: list[Side],
    lot: object = MISSING_LOT,
) -> list[TransferRow]:
    """To name every part: each side's newest rows, newest first, until its amount is covered
    (one-sided sides: at most ONE_SIDED_NAMES rows); the reading stops there. `lot`: the
    batch's (lot id, product id) when the caller read it already."""
    if not sides:
        return []
    if lot is MISSING_LOT:
        lot = (await _lots(session, [key])).get(key)
    if not isinstance(lot, tuple):
        return []
    kinds: set[MovementKind] = set()
    if any(side.sending for side in sides):
        kinds |= SENDING
    if any(not side.sending for side in sides):
        kinds |= RECEIVING
    params: dict[str, Any] = {
        "lot": lot[0],
        "kinds": sorted(kinds),
        "orgs": sorted({side.organisation_id for side in sides}),
    }
    left = [side.amount for side in sides]
    named = [0] * len(sides)
    found: list[TransferRow] = []
    after = False
    while True:
        # Pages, not a server-side cursor: a stream costs more round trips than the rows
        # a check usually needs (one page), and a busy batch still stops early.
        rows = (await session.execute(_named_rows_sql(after=after), params)).all()
        for movement in rows:
            row = _row(movement)
            for i, side in enumerate(sides):
                open_side = left[i] > 0 and (side.edge is not None or named[i] < ONE_SIDED_NAMES)
                if open_side and side.matches(row):
                    found.append(row)
                    left[i] -= row.quantity
                    named[i] += 1
                    break
            if all(
                x <= 0 or (side.edge is None and n >= ONE_SIDED_NAMES)
                for x, n, side in zip(left, named, sides, strict=True)
            ):
                return found
        if len(rows) < NAMED_PAGE:
            return found
        after = True
        params["at"], params["id"] = rows[-1].occurred_at, rows[-1].id


async def evaluate(
    session: AsyncSession,
    keys: Sequence[BatchKey],
    *,
    now: datetime,
    window: timedelta,
    contiguous: bool = False,
    named: bool = False,
) -> tuple[dict[BatchKey, BatchAnalysis], dict[int, str]]:
    """Analyse batches from their totals. For the status only the shipments inside the window
    of edges in transit are read; `named` also reads, per batch, each unmatched side's newest
    rows so every part names its shipments (the API's check, alert messages)."""
    if not keys:
        return {}, {}
    constituents, edges, labels = await _load_totals(session, keys, contiguous=contiguous)
    if named:
        rows = {
            key: await _named_rows(
                session, key, sides_to_name(constituents.get(key, ()), edges.get(key, ()))
            )
            for key in keys
        }
    else:
        rows = await _window_shipments(
            session,
            {key: edges_in_transit(edges.get(key, ()), now, window) for key in keys},
            now=now,
            window=window,
        )
    analyses = {
        key: analyse(
            constituents[key], edges.get(key, ()), rows.get(key, []), now=now, window=window
        )
        for key in keys
        if key in constituents or key in edges
    }
    return analyses, labels


# --- status rows and alerts ---------------------------------------------------------------------


_STATUSES = BatchStatus.__table__


def _keys_where(a: Any, b: Any, keys: Sequence[BatchKey]) -> Any:
    """Rows of these batches: the exact keys (OR-ed equalities) up to MAX_EXACT_KEYS, else
    every combination of their approval and batch numbers (a superset: callers drop extras).
    Both are answered from the primary key."""
    if len(keys) <= MAX_EXACT_KEYS:
        return _key_filter(a, b, keys, False)
    return and_(a.in_(sorted({x for x, _ in keys})), b.in_(sorted({y for _, y in keys})))


@functools.cache
def _status_upsert(dialect: str, *, lock: bool) -> Any:
    """Status rows of many batches, executed with a list of rows: one multi-row statement
    (built once). `lock`: create missing rows NORMAL, and 'update' existing ones to themselves,
    which locks them (PostgreSQL, in the order of the rows) and returns what they held. Else:
    write the given status, gamma and checked_at."""
    insert_ = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert_(_STATUSES)
    keys = ["approval_number", "batch_number"]
    if lock:
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={"status": _STATUSES.c.status}
        ).returning(
            _STATUSES.c.approval_number,
            _STATUSES.c.batch_number,
            _STATUSES.c.status,
            _STATUSES.c.gamma,
        )
    return stmt.on_conflict_do_update(
        index_elements=keys,
        set_={
            "status": stmt.excluded.status,
            "gamma": stmt.excluded.gamma,
            "checked_at": stmt.excluded.checked_at,
        },
    )


async def _lock_statuses(
    session: AsyncSession, keys: Sequence[BatchKey], now: datetime
) -> dict[BatchKey, tuple[SupervisionStatus, int]]:
    """The status rows of these batches, created NORMAL if new, locked in key order (PostgreSQL;
    SQLite has one writer): concurrent writers of one batch recompute one after the other.
    One statement."""
    rows = [
        {
            "approval_number": a,
            "batch_number": b,
            "status": SupervisionStatus.NORMAL.value,
            "gamma": 0,
            "checked_at": now,
        }
        for a, b in sorted(set(keys))
    ]
    result = await run(session, _status_upsert(dialect_of(session), lock=True), rows)
    return {(a, b): (SupervisionStatus(status), gamma) for a, b, status, gamma in result}


# --- the status in SQL ------------------------------------------------------------------------

_C = BatchConstituentTotal
_E = BatchEdgeTotal
_INFLOW = _C.produced + _C.received + _C.transferred_in + _C.returned + _C.adjusted_in
_OUTFLOW = _C.shipped + _C.transferred_out + _C.dispensed + _C.disposed + _C.adjusted_out


def statuses_sql(constituents_where: Any, edges_where: Any, *, cut: Any) -> Select[Any]:
    """(approval_number, batch_number, gamma, in_transit, status) of every batch with a
    constituent row matching the filters, from the running totals in one statement: the
    definitions of `gamma.gamma_of`, `gamma.status_of` and, for in_transit, of `analyse` fed
    with the shipments inside the window of `edges_in_transit` (receipts match shipments
    first-in-first-out, so an edge's in-transit part is min(gap, what its sender shipped on it
    inside the window), read through the movements' (lot, occurred_at) index)."""
    M = Movement
    per_batch = (
        select(
            _C.approval_number,
            _C.batch_number,
            func.sum(
                case((Organisation.kind == OrganisationKind.MANUFACTURER, _C.produced), else_=0)
            ).label("total_input"),
            func.sum(_C.dispensed + _C.disposed - _C.returned).label("total_output"),
            func.sum(_INFLOW - _OUTFLOW).label("inventory"),
            func.min(_INFLOW - _OUTFLOW).label("lowest"),
        )
        .join(Organisation, Organisation.id == _C.organisation_id)
        .where(constituents_where)
        .group_by(_C.approval_number, _C.batch_number)
        .subquery("c")
    )
    window_shipped = (
        select(func.coalesce(func.sum(func.abs(M.quantity)), 0))
        .where(
            M.lot_id == Lot.id,
            M.occurred_at > cut,
            M.organisation_id == _E.sender_id,
            M.kind.in_(sorted(SENDING)),
            or_(  # the edge of the row is this one (`gamma.edge_of`)
                M.counterparty_id == _E.receiver_id,
                and_(
                    _E.receiver_id == _E.sender_id,
                    M.kind == MovementKind.TRANSFER_OUT,
                    M.counterparty_id.is_(None),
                ),
            ),
        )
        .scalar_subquery()
    )
    gap = _E.shipped - _E.received
    per_edge = (
        select(
            _E.approval_number,
            _E.batch_number,
            gap.label("gap"),
            window_shipped.label("shipped_in_window"),
        )
        .join(Product, Product.approval_number == _E.approval_number)
        .join(Lot, and_(Lot.product_id == Product.id, Lot.batch_number == _E.batch_number))
        .where(edges_where, gap > 0, _E.last_shipped_at > cut)
        .subquery("e")
    )
    transit = (
        select(
            per_edge.c.approval_number,
            per_edge.c.batch_number,
            func.sum(
                case(
                    (per_edge.c.gap < per_edge.c.shipped_in_window, per_edge.c.gap),
                    else_=per_edge.c.shipped_in_window,
                )
            ).label("in_transit"),
        )
        .group_by(per_edge.c.approval_number, per_edge.c.batch_number)
        .subquery("t")
    )
    c = per_batch.c
    gamma = c.total_input - c.total_output - c.inventory
    in_transit = func.coalesce(transit.c.in_transit, 0)
    S = SupervisionStatus
    status = case(
        (gamma < 0, S.ILLEGAL_INFLOW.value),
        (gamma > 0, case((in_transit >= gamma, S.IN_TRANSIT.value), else_=S.OUTFLOW_LEAK.value)),
        (c.lowest < 0, S.NEGATIVE_INVENTORY.value),
        else_=S.NORMAL.value,
    )
    return select(
        c.approval_number,
        c.batch_number,
        gamma.label("gamma"),
        in_transit.label("in_transit"),
        status.label("status"),
    ).outerjoin(
        transit,
        and_(
            transit.c.approval_number == c.approval_number,
            transit.c.batch_number == c.batch_number,
        ),
    )


@functools.cache
def _statuses_of_keys() -> Select[Any]:
    """`statuses_sql` for a list of exact keys, as bind parameters (built and compiled once)."""
    keys: BindParameter[list[BatchKey]] = bindparam("keys", expanding=True)
    return statuses_sql(
        tuple_(_C.approval_number, _C.batch_number).in_(keys),
        tuple_(_E.approval_number, _E.batch_number).in_(keys),
        cut=bindparam("cut"),
    )


@functools.cache
def _store_statuses_of_keys(dialect: str) -> Any:
    """`statuses_sql` of exact keys written straight into their (locked) status rows where
    they differ, returning the rows it changed: the compute and the store in one statement."""
    computed = _statuses_of_keys().subquery("computed")
    stored = _STATUSES
    insert_ = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert_(stored).from_select(
        ["approval_number", "batch_number", "status", "gamma", "checked_at"],
        select(
            computed.c.approval_number,
            computed.c.batch_number,
            computed.c.status,
            computed.c.gamma,
            bindparam("now", type_=UTCDateTime()),
        )
        .join_from(
            computed,
            stored,
            and_(
                stored.c.approval_number == computed.c.approval_number,
                stored.c.batch_number == computed.c.batch_number,
            ),
        )
        .where(or_(stored.c.status != computed.c.status, stored.c.gamma != computed.c.gamma)),
    )
    return stmt.on_conflict_do_update(
        index_elements=["approval_number", "batch_number"],
        set_={
            "status": stmt.excluded.status,
            "gamma": stmt.excluded.gamma,
            "checked_at": stmt.excluded.checked_at,
        },
    ).returning(stored.c.approval_number, stored.c.batch_number, stored.c.status, stored.c.gamma)


async def compute_statuses(
    session: AsyncSession,
    keys: Sequence[BatchKey] | None = None,
    *,
    now: datetime,
    window: timedelta,
    between: tuple[BatchKey, BatchKey] | None = None,
) -> dict[BatchKey, tuple[SupervisionStatus, int]]:
    """(status, gamma) of these batches (or of every batch in the key range `between`), in
    one statement (`statuses_sql`); batches without totals rows are left out."""
    if between is not None:
        low, high = between

        def where(model: Any) -> Any:
            ab = tuple_(model.approval_number, model.batch_number)
            return and_(ab >= tuple_(*low), ab <= tuple_(*high))

        wanted = None
    else:
        if not keys:
            return {}

        def where(model: Any) -> Any:
            return _keys_where(model.approval_number, model.batch_number, keys)

        wanted = set(keys)
    cut = now - window
    if keys is not None and between is None and len(keys) <= MAX_EXACT_KEYS:
        # The ledger's hook, once per write: a statement built once, the keys bound.
        params = {"keys": [tuple(key) for key in keys], "cut": cut}
        rows = await run(session, _statuses_of_keys(), params)
    else:
        rows = await session.execute(statuses_sql(where(_C), where(_E), cut=cut))
    return {
        (a, b): (SupervisionStatus(status), gamma)
        for a, b, gamma, _in_transit, status in rows
        if wanted is None or (a, b) in wanted
    }


async def _record(
    session: AsyncSession,
    alerts: AlertService,
    computed: dict[BatchKey, tuple[SupervisionStatus, int]],
    old: dict[BatchKey, tuple[SupervisionStatus, int]],
    labels: dict[int, str],
    *,
    now: datetime,
    window: timedelta,
    stored: bool = False,
) -> list[StatusChange]:
    """Store the new statuses (one upsert; `stored`: already written); a change resolves the
    previous status's alerts and, to an alerting status, raises new ones (worded from a second,
    naming read of that batch)."""
    stale = [
        {
            "approval_number": a,
            "batch_number": b,
            "status": status.value,
            "gamma": gamma,
            "checked_at": now,  # since when it holds
        }
        for (a, b), (status, gamma) in sorted(computed.items())
        if old.get((a, b)) != (status, gamma)
    ]
    if not stale:
        return []
    if not stored:
        await run(session, _status_upsert(dialect_of(session), lock=False), stale)
    changes: list[StatusChange] = []
    for key, (status, gamma) in sorted(computed.items()):
        before = old.get(key, (SupervisionStatus.NORMAL, 0))[0]
        if status is not before:
            changes.append(StatusChange(key, before, status, gamma))
    resolved = await _resolve_other(session, alerts, {c.key: c.current for c in changes})
    await _announce_recoveries(session, alerts, changes, resolved)
    alerting = [c for c in changes if c.current in ALERTING]
    if alerting:
        lots = await _lots(session, [c.key for c in alerting])
        products = await _product_names(session, {p for _, p in lots.values()})
        for change in alerting:
            found, more = await evaluate(session, [change.key], now=now, window=window, named=True)
            labels.update(more)
            analysis = found[change.key]
            await _labels(
                session,
                {x for p in analysis.parts for x in (p.organisation_id, p.counterparty_id) if x},
                labels,
            )
            lot_id, product_id = lots.get(change.key, (None, None))
            await _raise(
                session,
                alerts,
                change.key,
                analysis,
                change.previous,
                Names(labels),
                window=window,
                lot_id=lot_id,
                product_id=product_id,
                product=products.get(product_id) if product_id else None,
            )
    return changes


async def _product_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Product.id, Product.name, Product.strength).where(Product.id.in_(ids))
    )
    return {pid: f"{name} {strength}".strip() for pid, name, strength in rows}


async def _announce_recoveries(
    session: AsyncSession,
    alerts: AlertService,
    changes: list[StatusChange],
    resolved: list[tuple[str, int | None]],
) -> None:
    """One RECOVERY_TOPIC event per batch that left an alerting status for a quiet one, naming
    the organisations whose alerts it resolved (None: the regulator's)."""
    events = []
    for change in changes:
        if change.previous not in ALERTING or change.current in ALERTING:
            continue
        prefix = status_alert_prefix(change.key)
        organisations = sorted({org for key, org in resolved if key.startswith(prefix) and org})
        approval, batch = change.key
        events.append(
            Event(
                RECOVERY_TOPIC,
                {
                    "approval_number": approval,
                    "batch_number": batch,
                    "status": change.current.value,
                    "previous_status": change.previous.value,
                    "gamma": change.gamma,
                    "organisation_ids": organisations,
                    "message": f"Batch {batch} ({approval}): back to {change.current.value} "
                    f"from {change.previous.value}",
                },
            )
        )
    if events:
        await alerts.bus.emit(session, events)


async def _resolve_other(
    session: AsyncSession, alerts: AlertService, current: dict[BatchKey, SupervisionStatus]
) -> list[tuple[str, int | None]]:
    """A new status ends the alerts of the previous one (all of them on NORMAL/IN_TRANSIT):
    one query per MAX_EXACT_KEYS changed batches. Returns the (condition key, organisation)
    of each alert it resolved."""
    stale: list[tuple[str, int | None]] = []
    keys = sorted(current)
    for chunk in _chunks(keys):
        live = (
            await session.execute(
                select(Alert.condition_key, Alert.organisation_id).where(
                    Alert.kind == AlertKind.SUPERVISION_STATUS,
                    Alert.active.is_(True),
                    or_(
                        *(
                            Alert.condition_key.startswith(status_alert_prefix(k), autoescape=True)
                            for k in chunk
                        )
                    ),
                )
            )
        ).all()
        keep = tuple(f"{status_alert_prefix(k)}{current[k].value}:" for k in chunk)
        prefixes = tuple(status_alert_prefix(k) for k in chunk)
        stale += [(k, org) for k, org in live if not k.startswith(keep) and k.startswith(prefixes)]
    if stale:
        await alerts.resolve(session, [k for k, _ in stale])
    return stale


async def _raise(
    session: AsyncSession,
    alerts: AlertService,
    key: BatchKey,
    analysis: BatchAnalysis,
    before: SupervisionStatus,
    names: Names,
    *,
    window: timedelta,
    lot_id: int | None,
    product_id: int | None,
    product: str | None,
) -> None:
    """One alert for the regulator (whole explanation), one per involved organisation (the
    parts that name it)."""
    approval, batch = key
    head = f"Batch {batch}" + (f" of {product}" if product else "") + f" ({approval}): "
    head += summary(analysis)
    for org in [None, *sorted(analysis.involved())]:
        view = analysis if org is None else scoped(analysis, org)
        # Shipments still inside their window are not news: the alert names the culprits.
        lines = [
            line
            for part, line in zip(view.parts, explain(view, names, window), strict=True)
            if part.kind is not PartKind.IN_TRANSIT
        ]
        await alerts.raise_alert(
            session,
            AlertSpec(
                AlertKind.SUPERVISION_STATUS,
                status_alert_key(key, analysis.status, org),
                ". ".join([head, *lines]),
                product_id=product_id,
                lot_id=lot_id,
                organisation_id=org,
                details={
                    "approval_number": approval,
                    "batch_number": batch,
                    "status": analysis.status.value,
                    "previous_status": before.value,
                    "gamma": analysis.gamma,
                    "in_transit": analysis.in_transit,
                    "unexplained": analysis.unexplained,
                    "explanation": lines,
                },
            ),
        )


async def refresh_status(
    session: AsyncSession,
    batch_keys: Iterable[BatchKey],
    alerts: AlertService,
    *,
    transit_window: timedelta,
    now: datetime | None = None,
) -> list[StatusChange]:
    """The ledger's hook, in its transaction after `record_totals`: recompute the touched
    batches, store their status, alert on changes. Returns the changes.

    Set-based, whatever the number of batches: one upsert that locks (or creates) their status
    rows and returns what they held, one statement computing every status from the totals
    (`statuses_sql`), one upsert of the statuses that changed; then, per change of status,
    the alerts."""
    now = now or utcnow()
    keys = sorted(set(batch_keys))  # in key order: locks never cross
    if not keys:
        return []
    old = await _lock_statuses(session, keys, now)
    if len(keys) > MAX_EXACT_KEYS:
        computed = await compute_statuses(session, keys, now=now, window=transit_window)
        return await _record(session, alerts, computed, old, {}, now=now, window=transit_window)
    # Computed and stored in one statement, which returns only the statuses that changed
    # (every batch has its status row, locked above): the rest need nothing more.
    params = {"keys": [tuple(key) for key in keys], "cut": now - transit_window, "now": now}
    changed = {
        (a, b): (SupervisionStatus(status), gamma)
        for a, b, status, gamma in await run(
            session, _store_statuses_of_keys(dialect_of(session)), params
        )
    }
    return await _record(
        session, alerts, changed, old, {}, now=now, window=transit_window, stored=True
    )


# --- the service --------------------------------------------------------------------------------


class SupervisionCheckService:
    def __init__(self, db: Database, alerts: AlertService, *, transit_window_hours: int) -> None:
        if transit_window_hours < 0:
            raise ValueError("the transit window cannot be negative")
        self.db = db
        self.alerts = alerts
        self.transit_window = timedelta(hours=transit_window_hours)

    # --- the ledger's hook ------------------------------------------------------------------

    async def refresh_status(
        self, session: AsyncSession, batch_keys: Iterable[BatchKey]
    ) -> list[StatusChange]:
        """`refresh_status` with this service's alerts and transit window."""
        return await refresh_status(
            session, batch_keys, self.alerts, transit_window=self.transit_window
        )

    # --- one batch ------------------------------------------------------------------------------

    async def check(
        self,
        principal: Principal,
        approval_number: str,
        batch_number: str,
        *,
        now: datetime | None = None,
    ) -> BatchCheck:
        """Gamma, status, inventories, edges and explanation of one batch, computed now."""
        principal.require(Permission.TRACE_READ)
        approval = (approval_number or "").strip()
        if not approval or len(approval) > 64:
            raise InvalidInput("give the product's approval number", field="approval_number")
        batch = clean_batch_number(batch_number)
        key = (approval, batch)
        now = now or utcnow()
        async with self.db.read() as session:
            constituents, edges, labels, lot = await _load_one(session, key)
            lot_id, product_id = lot or (None, None)
            analysis = None
            if constituents or edges:
                sides = sides_to_name(constituents, edges)
                rows = await _named_rows(session, key, sides, lot)
                analysis = analyse(constituents, edges, rows, now=now, window=self.transit_window)
            if analysis is None:
                if lot_id is None:
                    raise NotFound(
                        f"no batch {batch} of a product with approval number {approval}",
                        field="batch_number",
                    )
                analysis = analyse((), (), now=now, window=self.transit_window)
            scope = None if is_global(principal) else principal.organisation_id
            if not is_global(principal) and (
                scope is None or scope not in {c.organisation_id for c in analysis.constituents}
            ):
                raise Forbidden(
                    f"your organisation never handled batch {batch} ({approval}); "
                    "a regulator can check it",
                    field="batch_number",
                )
            line = summary(analysis)
            view = analysis if scope is None else scoped(analysis, scope)
            ends = {x for e in view.edges for x in (e.sender_id, e.receiver_id)}
            await _labels(session, ends | {p.counterparty_id for p in view.parts}, labels)
        return BatchCheck(
            approval_number=approval,
            batch_number=batch,
            product_id=product_id,
            lot_id=lot_id,
            analysis=view,
            summary=line,
            explanation=explain(view, Names(labels), self.transit_window),
            labels=labels,
            transit_window=self.transit_window,
            checked_at=now,
            scoped_to=scope,
        )

    # --- the report -----------------------------------------------------------------------------

    async def report_page(
        self,
        principal: Principal,
        *,
        status: SupervisionStatus | None = None,
        organisation_id: int | None = None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[BatchStatus]:
        """One page of `report_query`, in (approval number, batch number) order."""
        stmt = await self.report_query(principal, status=status, organisation_id=organisation_id)
        S = BatchStatus
        return await keyset_page(
            self.db,
            stmt,
            keys=[S.approval_number, S.batch_number],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r.approval_number, r.batch_number],
        )

    async def report_query(
        self,
        principal: Principal,
        *,
        status: SupervisionStatus | None = None,
        organisation_id: int | None = None,
    ) -> Select[Any]:
        """Stored statuses (not NORMAL unless asked for), optionally of batches one
        organisation handled; scoped roles only ever see their own organisation's batches.
        Page it by (approval_number, batch_number)."""
        principal.require(Permission.TRACE_READ)
        if not is_global(principal):
            if principal.organisation_id is None:
                raise Forbidden("you belong to no organisation, so no batch is yours to report")
            if organisation_id is not None and organisation_id != principal.organisation_id:
                raise Forbidden(
                    "you may only report your own organisation's batches", field="organisation"
                )
            organisation_id = principal.organisation_id
        elif organisation_id is not None:
            async with self.db.read() as session:
                if await session.get(Organisation, organisation_id) is None:
                    raise NotFound(
                        f"organisation {organisation_id} does not exist", field="organisation"
                    )
        S, C = BatchStatus, BatchConstituentTotal
        stmt = select(S)
        if status is None:
            stmt = stmt.where(S.status != SupervisionStatus.NORMAL.value)
        else:
            stmt = stmt.where(S.status == status.value)
        if organisation_id is not None:
            stmt = stmt.where(
                exists().where(
                    C.approval_number == S.approval_number,
                    C.batch_number == S.batch_number,
                    C.organisation_id == organisation_id,
                )
            )
        return stmt

    # --- sweeps ---------------------------------------------------------------------------------

    async def check_all(
        self,
        *,
        in_transit_only: bool = False,
        now: datetime | None = None,
        chunk_size: int = SWEEP_CHUNK,
    ) -> SweepResult:
        """Re-check every batch (or only those IN_TRANSIT, the ones time alone can change), one
        transaction per chunk of batches in key order; stores statuses and alerts on changes."""
        now = now or utcnow()
        result = SweepResult()
        after: BatchKey | None = None
        labels: dict[int, str] = {}
        while True:
            async with self.db.write() as session:
                limit = min(chunk_size, MAX_EXACT_KEYS) if in_transit_only else chunk_size
                keys = await self._next_keys(session, after, limit, in_transit_only)
                if not keys:
                    break
                old = await _lock_statuses(session, keys, now)
                if in_transit_only:
                    computed = await compute_statuses(
                        session, keys, now=now, window=self.transit_window
                    )
                else:  # consecutive keys of the totals: the range holds no others
                    computed = await compute_statuses(
                        session, now=now, window=self.transit_window, between=(keys[0], keys[-1])
                    )
                result.changes += await _record(
                    session,
                    self.alerts,
                    computed,
                    old,
                    labels,
                    now=now,
                    window=self.transit_window,
                )
            result.checked += len(computed)
            for status, _gamma in computed.values():
                result.by_status[status] += 1
            after = keys[-1]
        return result

    @staticmethod
    async def _next_keys(
        session: AsyncSession, after: BatchKey | None, limit: int, in_transit_only: bool
    ) -> list[BatchKey]:
        if in_transit_only:
            S = BatchStatus
            stmt = select(S.approval_number, S.batch_number).where(
                S.status == SupervisionStatus.IN_TRANSIT.value
            )
            a, b = S.approval_number, S.batch_number
        else:
            C = BatchConstituentTotal
            stmt = select(C.approval_number, C.batch_number).distinct()
            a, b = C.approval_number, C.batch_number
        if after is not None:
            stmt = stmt.where(tuple_(a, b) > tuple_(*after))
        rows = await session.execute(stmt.order_by(a, b).limit(limit))
        return [(x, y) for x, y in rows]

    # --- recomputation ------------------------------------------------------------------------

    async def recompute(
        self, *, repair: bool = False, chunk_size: int = MAX_EXACT_KEYS
    ) -> RecomputeResult:
        """Every total again from the ledger, in SQL (`_recompute`: one GROUP BY per totals
        table over movements and running totals together), compared with the running totals.

        Reads one consistent snapshot (SQLite: one read transaction; PostgreSQL: REPEATABLE
        READ). With `repair`, differing batches get their totals rewritten (INSERT .. SELECT ..
        GROUP BY from their movements, `chunk_size` batches per statement) and their status
        re-checked, in one transaction that locks both totals tables against the ledger first.
        """
        if repair:
            async with self.db.write() as session:
                if dialect_of(session) == "postgresql":
                    await session.execute(
                        text(
                            "LOCK TABLE batch_constituent_totals, batch_edge_totals "
                            "IN EXCLUSIVE MODE"
                        )
                    )
                result = await _recompute(session)
                if result.differences:
                    await self._rewrite(session, result.differing_batches, chunk_size)
                    result.repaired = True
            return result
        async with self.db.read() as session:
            if dialect_of(session) == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            result = await _recompute(session)
        return result

    async def _rewrite(
        self, session: AsyncSession, batches: list[BatchKey], chunk_size: int
    ) -> None:
        """The batches' totals rows deleted and inserted again straight from their movements."""
        C, E = BatchConstituentTotal, BatchEdgeTotal
        lots = await _lots(session, batches)
        for chunk in _chunks(batches, max(1, min(chunk_size, MAX_EXACT_KEYS))):
            for model in (C, E):
                await session.execute(
                    delete(model)
                    .where(_key_filter(model.approval_number, model.batch_number, chunk, False))
                    .execution_options(synchronize_session=False)
                )
            lot_ids = [lots[key][0] for key in chunk if key in lots]
            if not lot_ids:
                continue
            fresh = constituent_totals_sql(lot_ids).subquery()
            await session.execute(
                insert(C).from_select(
                    [*_CONSTITUENT_KEYS, *COUNTERS],
                    select(*(fresh.c[n] for n in (*_CONSTITUENT_KEYS, *COUNTERS))),
                )
            )
            fresh_edges = edge_totals_sql(lot_ids).subquery()
            await session.execute(
                insert(E).from_select(
                    [*_EDGE_KEYS, *_EDGE_COLUMNS],
                    select(*(fresh_edges.c[n] for n in (*_EDGE_KEYS, *_EDGE_COLUMNS))),
                )
            )
        await refresh_status(session, batches, self.alerts, transit_window=self.transit_window)


def merge_totals(into: Totals, part: Totals) -> None:
    """Add one chunk's totals to the running sum (counters add; the last shipment is the max)."""
    for key, counters in part.constituents.items():
        target = into.constituents[key]
        for name in COUNTERS:
            target[name] += counters[name]
    for edge_key, edge in part.edges.items():
        target_edge = into.edges[edge_key]
        target_edge["shipped"] += edge["shipped"]
        target_edge["received"] += edge["received"]
        dates = [d for d in (target_edge["last_shipped_at"], edge["last_shipped_at"]) if d]
        target_edge["last_shipped_at"] = max(dates) if dates else None


def _compared(
    fresh: Select[Any], stored: Select[Any], keys: int, columns: Sequence[str]
) -> Select[Any]:
    """Ledger and running totals side by side, one GROUP BY over both (a missing row counts
    as zeros, as it always did), only the rows where some column differs."""
    f = fresh.subquery("fresh")
    t = stored.subquery("stored")
    key_names = [c.name for c in list(t.c)[:keys]]
    both = union_all(
        select(
            *(f.c[i] for i in key_names),
            *(f.c[n].label(f"f_{n}") for n in columns),
            *(null().label(f"s_{n}") for n in columns),
        ),
        select(
            *(t.c[i] for i in key_names),
            *(null().label(f"f_{n}") for n in columns),
            *(t.c[n].label(f"s_{n}") for n in columns),
        ),
    ).subquery("both")
    pairs: list[tuple[ColumnElement[Any], ColumnElement[Any]]] = []
    for n in columns:
        kind = t.c[n].type
        if n == "last_shipped_at":
            pairs.append(
                (
                    type_coerce(func.max(both.c[f"f_{n}"]), kind),
                    type_coerce(func.max(both.c[f"s_{n}"]), kind),
                )
            )
        else:
            pairs.append(
                (
                    func.coalesce(func.sum(both.c[f"f_{n}"]), 0),
                    func.coalesce(func.sum(both.c[f"s_{n}"]), 0),
                )
            )
    grouped = [both.c[i] for i in key_names]
    return (
        select(*grouped, *(x for pair in pairs for x in pair))
        .group_by(*grouped)
        .having(or_(*(x.is_distinct_from(y) for x, y in pairs)))
    )


_STORED_CONSTITUENTS = select(
    BatchConstituentTotal.approval_number,
    BatchConstituentTotal.batch_number,
    BatchConstituentTotal.organisation_id,
    *_CONSTITUENT_COLUMNS,
)
_EDGE_COLUMNS = ("shipped", "received", "last_shipped_at")
_STORED_EDGES = select(
    BatchEdgeTotal.approval_number,
    BatchEdgeTotal.batch_number,
    BatchEdgeTotal.sender_id,
    BatchEdgeTotal.receiver_id,
    *(getattr(BatchEdgeTotal, n) for n in _EDGE_COLUMNS),
)


def _counts() -> Select[Any]:
    """(movements, batches): batches with a movement, a constituent row or an edge row."""
    C, E, M = BatchConstituentTotal, BatchEdgeTotal, Movement
    moved = (
        select(Product.approval_number, Lot.batch_number)
        .join(Product, Product.id == Lot.product_id)
        .where(exists().where(M.lot_id == Lot.id))
    )
    keys = union(
        select(C.approval_number, C.batch_number),
        select(E.approval_number, E.batch_number),
        moved,
    ).subquery("keys")
    return select(
        select(func.count()).select_from(M).scalar_subquery(),
        select(func.count()).select_from(keys).scalar_subquery(),
    )


async def _recompute(session: AsyncSession) -> RecomputeResult:
    """Every total again from the ledger, in SQL: one GROUP BY per totals table over the
    movements and the running totals together (`constituent_totals_sql` and `edge_totals_sql`,
    the definitions of `totals_from_movements`), returning only the rows that differ."""
    differences: list[Difference] = []
    rows = await session.execute(
        _compared(constituent_totals_sql(), _STORED_CONSTITUENTS, 3, COUNTERS)
    )
    for a, b, org, *values in rows:
        for i, name in enumerate(COUNTERS):
            fresh, stored = values[2 * i], values[2 * i + 1]
            if stored != fresh:
                differences.append(Difference(a, b, (org,), name, stored, fresh))
    rows = await session.execute(_compared(edge_totals_sql(), _STORED_EDGES, 4, _EDGE_COLUMNS))
    for a, b, sender, receiver, *values in rows:
        for i, name in enumerate(_EDGE_COLUMNS):
            fresh, stored = values[2 * i], values[2 * i + 1]
            if stored != fresh:
                differences.append(Difference(a, b, (sender, receiver), name, stored, fresh))
    columns = {1: COUNTERS, 2: _EDGE_COLUMNS}  # by the number of organisations named
    differences.sort(  # constituents, then edges, each in key and column order
        key=lambda d: (
            len(d.organisations),
            d.approval_number,
            d.batch_number,
            d.organisations,
            columns[len(d.organisations)].index(d.column),
        )
    )
    movements, batches = (await session.execute(_counts())).one()
    return RecomputeResult(batches, movements, differences)


async def supervision_check_all(
    checks: SupervisionCheckService, *, in_transit_only: bool = False
) -> SweepResult:
    """Re-check every batch's status (the CLI; after a repair), or with `in_transit_only` just
    the IN_TRANSIT ones, which time alone turns into OUTFLOW_LEAK (the periodic task)."""
    return await checks.check_all(in_transit_only=in_transit_only)
