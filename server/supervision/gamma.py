"""Gamma, the status of a drug batch, and the edge reconciliation that explains it (pure: no I/O).

Per batch (approval number, batch number), from each constituent's running totals:

    I     = PRODUCE reported by manufacturers
    O     = DISPENSE + DISPOSE - RETURN, over every constituent
    inv_c = a constituent's inflows - its outflows (its own reports only)
    gamma = I - O - sum(inv_c)

Status, in this order: gamma < 0 -> ILLEGAL_INFLOW; gamma > 0 -> IN_TRANSIT when shipments still
inside their transit window explain all of it, else OUTFLOW_LEAK; gamma = 0 with some inv_c < 0
-> NEGATIVE_INVENTORY; otherwise NORMAL.

Why gamma is explainable part by part: every term of I, O and inv_c cancels except what one
side reported without the other, so

    gamma = sum over edges (shipped - received)          a shipment nobody has received yet
          + shipments that named no receiver            left the monitored network
          - receipts that named no sender               came from outside the network
          - PRODUCE by organisations not manufacturers  drugs no manufacturer put in
          - net ADJUST/COUNT per constituent            unexplained gains (-) and losses (+)

`analyse` returns exactly these parts (they always sum to gamma), each naming the constituent,
the counterparty and the shipments (movement references) behind it. An edge's positive gap is
split into its unmatched shipments: receipts are matched to shipments first-in-first-out by
time, so what stays unmatched is the sender's newest `gap` units; each is in transit while
`now < shipped_at + window` and overdue after. Deciding the status therefore needs only the
edge's shipments inside the window; naming every part reads each side's newest rows.
Transfers between one organisation's own locations are edges from the organisation to itself,
so a transfer on the road is in transit like any shipment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from server.inventory.models import MovementKind

SENDING = frozenset({MovementKind.SHIP, MovementKind.TRANSFER_OUT})
RECEIVING = frozenset({MovementKind.RECEIVE, MovementKind.TRANSFER_IN})


class SupervisionStatus(StrEnum):
    NORMAL = "NORMAL"
    NEGATIVE_INVENTORY = "NEGATIVE_INVENTORY"
    ILLEGAL_INFLOW = "ILLEGAL_INFLOW"
    OUTFLOW_LEAK = "OUTFLOW_LEAK"
    IN_TRANSIT = "IN_TRANSIT"


# Statuses that raise alerts. IN_TRANSIT is the ordinary state of every batch between a
# shipment and its receipt, so it is reported but not alerted; it becomes OUTFLOW_LEAK (and
# alerts) once a shipment outlives its transit window.
ALERTING = frozenset(
    {
        SupervisionStatus.NEGATIVE_INVENTORY,
        SupervisionStatus.ILLEGAL_INFLOW,
        SupervisionStatus.OUTFLOW_LEAK,
    }
)


def edge_of(
    kind: MovementKind, organisation_id: int, counterparty_id: int | None
) -> tuple[int, int] | None:
    """The (sender, receiver) edge a SHIP/RECEIVE/TRANSFER row reports one side of.

    None when the row names no other side: a SHIP without a counterparty left the network, a
    RECEIVE without one came from outside. A TRANSFER without a counterparty (and any row naming
    its own organisation) moves stock between one organisation's locations: its edge is the
    organisation to itself.
    """
    if kind in SENDING:
        if counterparty_id is not None:
            return organisation_id, counterparty_id
        return (organisation_id, organisation_id) if kind is MovementKind.TRANSFER_OUT else None
    if kind in RECEIVING:
        if counterparty_id is not None:
            return counterparty_id, organisation_id
        return (organisation_id, organisation_id) if kind is MovementKind.TRANSFER_IN else None
    return None


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constituent:
    """One organisation's running totals for one batch (what it reported, its side only)."""

    organisation_id: int
    manufacturer: bool = False
    produced: int = 0
    received: int = 0
    transferred_in: int = 0
    returned: int = 0
    adjusted_in: int = 0
    shipped: int = 0
    transferred_out: int = 0
    dispensed: int = 0
    disposed: int = 0
    adjusted_out: int = 0

    @property
    def inflow(self) -> int:
        return (
            self.produced + self.received + self.transferred_in + self.returned + self.adjusted_in
        )

    @property
    def outflow(self) -> int:
        return (
            self.shipped + self.transferred_out + self.dispensed + self.disposed + self.adjusted_out
        )

    @property
    def inventory(self) -> int:
        return self.inflow - self.outflow

    @property
    def sent(self) -> int:
        return self.shipped + self.transferred_out

    @property
    def took_in(self) -> int:
        return self.received + self.transferred_in


@dataclass(frozen=True)
class Edge:
    """What `sender` reported sending to `receiver` and what `receiver` reported receiving."""

    sender_id: int
    receiver_id: int
    shipped: int = 0
    received: int = 0
    last_shipped_at: datetime | None = None

    @property
    def gap(self) -> int:
        return self.shipped - self.received


@dataclass(frozen=True)
class TransferRow:
    """A SHIP / TRANSFER_OUT / RECEIVE / TRANSFER_IN row of the batch, read only to name the
    shipments behind a gap (quantity positive)."""

    id: int
    kind: MovementKind
    organisation_id: int
    counterparty_id: int | None
    quantity: int
    occurred_at: datetime
    reference: str | None = None

    @property
    def sending(self) -> bool:
        return self.kind in SENDING

    @property
    def edge(self) -> tuple[int, int] | None:
        return edge_of(self.kind, self.organisation_id, self.counterparty_id)


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unmatched:
    """A shipment (or receipt) row, or the part of it, the other side never matched."""

    quantity: int
    at: datetime | None
    reference: str | None = None
    movement_id: int | None = None
    in_window: bool = False  # shipments only: still inside the transit window


@dataclass(frozen=True)
class EdgeReport:
    sender_id: int
    receiver_id: int
    shipped: int
    received: int
    in_transit: int  # unmatched shipments still inside their transit window
    last_shipped_at: datetime | None
    shipments: tuple[Unmatched, ...] = ()  # unmatched shipments, oldest first
    receipts: tuple[Unmatched, ...] = ()  # unmatched receipts, oldest first

    @property
    def gap(self) -> int:
        return self.shipped - self.received

    @property
    def unexplained(self) -> int:
        """The gap the transit window does not explain: > 0 lost on the way, < 0 received
        more than was shipped."""
        return self.gap - self.in_transit

    @property
    def overdue(self) -> int:
        return sum(u.quantity for u in self.shipments if not u.in_window)

    @property
    def internal(self) -> bool:
        return self.sender_id == self.receiver_id


class PartKind(StrEnum):
    IN_TRANSIT = "IN_TRANSIT"  # + shipped, not yet received, inside the window
    NOT_RECEIVED = "NOT_RECEIVED"  # + shipped, never received, window passed
    NOT_SHIPPED = "NOT_SHIPPED"  # - received, the sender never reported shipping
    LEFT_NETWORK = "LEFT_NETWORK"  # + shipped without naming a receiving organisation
    UNKNOWN_SOURCE = "UNKNOWN_SOURCE"  # - received without naming a sending organisation
    NOT_A_MANUFACTURER = "NOT_A_MANUFACTURER"  # - produced by an organisation that is not one
    ADJUSTED_LOSS = "ADJUSTED_LOSS"  # + net loss in adjustments and counts
    ADJUSTED_GAIN = "ADJUSTED_GAIN"  # - net gain in adjustments and counts
    NEGATIVE_INVENTORY = "NEGATIVE_INVENTORY"  # 0 inventory below zero (no share of gamma)


@dataclass(frozen=True)
class Part:
    """One share of gamma (`quantity`, signed) and the constituent that explains it."""

    kind: PartKind
    quantity: int
    organisation_id: int
    counterparty_id: int | None = None
    references: tuple[str, ...] = ()
    at: datetime | None = None  # oldest shipment or receipt behind it


@dataclass(frozen=True)
class BatchAnalysis:
    total_input: int
    total_output: int
    system_inventory: int
    gamma: int
    in_transit: int  # every edge's in-window unmatched shipments
    status: SupervisionStatus
    constituents: tuple[Constituent, ...]
    edges: tuple[EdgeReport, ...]
    parts: tuple[Part, ...]

    @property
    def explained_by_transit(self) -> int:
        return min(self.gamma, self.in_transit) if self.gamma > 0 else 0

    @property
    def unexplained(self) -> int:
        """Gamma less what shipments in their transit window explain."""
        return self.gamma - self.explained_by_transit

    def involved(self) -> set[int]:
        """The organisations a status alert goes to: those whose reports explain it."""
        wanted: set[int] = set()
        for part in self.parts:
            if self.status is SupervisionStatus.ILLEGAL_INFLOW:
                hit = part.quantity < 0
            elif self.status is SupervisionStatus.OUTFLOW_LEAK:
                hit = part.quantity > 0 and part.kind is not PartKind.IN_TRANSIT
            elif self.status is SupervisionStatus.NEGATIVE_INVENTORY:
                hit = part.kind is PartKind.NEGATIVE_INVENTORY
            else:
                hit = False
            if hit:
                wanted.add(part.organisation_id)
                if part.counterparty_id is not None:
                    wanted.add(part.counterparty_id)
        return wanted


# --- the maths -------------------------------------------------------------------------------


def gamma_of(constituents: Iterable[Constituent]) -> tuple[int, int, int, int]:
    """(I, O, sum inv_c, gamma)."""
    total_input = total_output = inventory = 0
    for c in constituents:
        if c.manufacturer:
            total_input += c.produced
        total_output += c.dispensed + c.disposed - c.returned
        inventory += c.inventory
    return total_input, total_output, inventory, total_input - total_output - inventory


def status_of(gamma: int, in_transit: int, inventories: Iterable[int]) -> SupervisionStatus:
    if gamma < 0:
        return SupervisionStatus.ILLEGAL_INFLOW
    if gamma > 0:
        return (
            SupervisionStatus.IN_TRANSIT if in_transit >= gamma else SupervisionStatus.OUTFLOW_LEAK
        )
    if any(x < 0 for x in inventories):
        return SupervisionStatus.NEGATIVE_INVENTORY
    return SupervisionStatus.NORMAL


def in_window(at: datetime | None, now: datetime, window: timedelta) -> bool:
    return at is not None and now < at + window


def _order(row: TransferRow) -> tuple[datetime, int]:
    return row.occurred_at, row.id


@dataclass(frozen=True)
class Side:
    """What one reporter said on its own about one edge (or about no edge: one-sided rows):
    `amount` units the other side never matched. Under first-in-first-out matching these are
    the side's NEWEST `amount` units, so naming them needs its newest rows only."""

    organisation_id: int
    sending: bool
    edge: tuple[int, int] | None
    amount: int

    def matches(self, row: TransferRow) -> bool:
        return (
            row.organisation_id == self.organisation_id
            and row.sending is self.sending
            and row.edge == self.edge
        )


def sides_to_name(constituents: Iterable[Constituent], edges: Iterable[Edge]) -> list[Side]:
    """Every side with something unmatched: the sender of an edge shipped more than was
    received (gap > 0), its receiver took in more than was shipped (gap < 0), or a constituent
    sent or took in stock naming no other organisation."""
    edges = list(edges)
    sides = [
        Side(e.sender_id, True, (e.sender_id, e.receiver_id), e.gap)
        if e.gap > 0
        else Side(e.receiver_id, False, (e.sender_id, e.receiver_id), -e.gap)
        for e in edges
        if e.gap
    ]
    sent: dict[int, int] = defaultdict(int)
    took: dict[int, int] = defaultdict(int)
    for e in edges:
        sent[e.sender_id] += e.shipped
        took[e.receiver_id] += e.received
    for c in constituents:
        if (outside := c.sent - sent[c.organisation_id]) > 0:
            sides.append(Side(c.organisation_id, True, None, outside))
        if (unknown := c.took_in - took[c.organisation_id]) > 0:
            sides.append(Side(c.organisation_id, False, None, unknown))
    return sides


def edges_in_transit(edges: Iterable[Edge], now: datetime, window: timedelta) -> list[Edge]:
    """Edges whose status depends on the clock: a gap > 0 and a shipment inside the window.
    Only their shipments inside the window need reading to decide the status."""
    return [e for e in edges if e.gap > 0 and in_window(e.last_shipped_at, now, window)]


def newest_units(
    rows: Iterable[TransferRow],
    side: Side,
    *,
    now: datetime,
    window: timedelta,
    limit: int | None = None,
) -> tuple[Unmatched, ...]:
    """The side's newest `amount` units, row by row, oldest first. Units the given rows do not
    cover (rows read only back to the window's start, or capped by `limit`) come first as one
    unnamed, undated part, which for a shipment means older than the window: overdue."""
    mine = sorted((r for r in rows if side.matches(r)), key=_order, reverse=True)
    left = side.amount
    named: list[Unmatched] = []
    for row in mine[:limit]:
        if left <= 0:
            break
        take = min(row.quantity, left)
        inside = side.sending and in_window(row.occurred_at, now, window)
        named.append(Unmatched(take, row.occurred_at, row.reference, row.id, inside))
        left -= take
    unnamed = (Unmatched(left, None),) if left > 0 else ()
    return (*unnamed, *reversed(named))


def reconcile_edge(
    edge: Edge,
    rows: Sequence[TransferRow] | None,
    *,
    now: datetime,
    window: timedelta,
) -> EdgeReport:
    """Shipped vs received on one edge; a gap is the sender's newest unmatched shipments (or
    the receiver's newest unmatched receipts), from `rows`: the edge's rows newest first, at
    least back to the window's start. Without rows the gap is one unnamed part dated by the
    edge's last shipment."""
    base = EdgeReport(
        edge.sender_id, edge.receiver_id, edge.shipped, edge.received, 0, edge.last_shipped_at
    )
    if edge.gap == 0:
        return base
    pair = (edge.sender_id, edge.receiver_id)
    shipments: tuple[Unmatched, ...] = ()
    receipts: tuple[Unmatched, ...] = ()
    if edge.gap < 0:
        side = Side(edge.receiver_id, False, pair, -edge.gap)
        receipts = newest_units(rows or (), side, now=now, window=window)
    elif rows is None:
        inside = in_window(edge.last_shipped_at, now, window)
        shipments = (Unmatched(edge.gap, edge.last_shipped_at, in_window=inside),)
    else:
        side = Side(edge.sender_id, True, pair, edge.gap)
        shipments = newest_units(rows, side, now=now, window=window)
    return replace(
        base,
        in_transit=sum(u.quantity for u in shipments if u.in_window),
        shipments=shipments,
        receipts=receipts,
    )


ONE_SIDED_NAMES = 10  # newest rows named for shipments to (or receipts from) nobody


def _references(rows: Iterable[Unmatched | TransferRow]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for row in rows:
        if row.reference:
            seen.setdefault(row.reference)
    return tuple(seen)


def _oldest(rows: Iterable[Unmatched | TransferRow]) -> datetime | None:
    dates = [r.at if isinstance(r, Unmatched) else r.occurred_at for r in rows]
    present = [d for d in dates if d is not None]
    return min(present) if present else None


def analyse(
    constituents: Iterable[Constituent],
    edges: Iterable[Edge],
    rows: Sequence[TransferRow] | None = None,
    *,
    now: datetime,
    window: timedelta,
) -> BatchAnalysis:
    """Gamma, status, every edge reconciled, and the parts that explain gamma (sum = gamma).

    `rows` are SHIP/RECEIVE/TRANSFER rows of the batch, each side's newest first as far as
    the caller read them: for the status, the shipments inside the window of
    `edges_in_transit` suffice (the rest of a gap is then overdue, unnamed); to name every
    part, each side of `sides_to_name` back to its `amount`. None: no rows at all (gaps are
    dated by the edges' last shipment).
    """
    constituents = tuple(sorted(constituents, key=lambda c: c.organisation_id))
    edge_list = sorted(edges, key=lambda e: (e.sender_id, e.receiver_id))
    total_input, total_output, inventory, gamma = gamma_of(constituents)
    reports = tuple(reconcile_edge(e, rows, now=now, window=window) for e in edge_list)
    parts: list[Part] = []
    for report in reports:
        for kind, inside in ((PartKind.NOT_RECEIVED, False), (PartKind.IN_TRANSIT, True)):
            chosen = [u for u in report.shipments if u.in_window is inside]
            if chosen:
                parts.append(
                    Part(
                        kind,
                        sum(u.quantity for u in chosen),
                        report.sender_id,
                        report.receiver_id,
                        _references(chosen),
                        _oldest(chosen),
                    )
                )
        if report.receipts:
            parts.append(
                Part(
                    PartKind.NOT_SHIPPED,
                    -sum(u.quantity for u in report.receipts),
                    report.receiver_id,
                    report.sender_id,
                    _references(report.receipts),
                    _oldest(report.receipts),
                )
            )
    sent: dict[int, int] = defaultdict(int)
    took: dict[int, int] = defaultdict(int)
    for e in edge_list:
        sent[e.sender_id] += e.shipped
        took[e.receiver_id] += e.received
    for c in constituents:
        org = c.organisation_id
        for kind, amount, sending in (
            (PartKind.LEFT_NETWORK, c.sent - sent[org], True),
            (PartKind.UNKNOWN_SOURCE, c.took_in - took[org], False),
        ):
            if not amount:
                continue
            named = newest_units(
                rows or (),
                Side(org, sending, None, abs(amount)),
                now=now,
                window=window,
                limit=ONE_SIDED_NAMES,
            )
            share = amount if sending else -amount
            parts.append(Part(kind, share, org, None, _references(named), _oldest(named)))
        if c.produced and not c.manufacturer:
            parts.append(Part(PartKind.NOT_A_MANUFACTURER, -c.produced, org))
        net = c.adjusted_in - c.adjusted_out
        if net:
            kind = PartKind.ADJUSTED_GAIN if net > 0 else PartKind.ADJUSTED_LOSS
            parts.append(Part(kind, -net, org))
        if c.inventory < 0:
            parts.append(Part(PartKind.NEGATIVE_INVENTORY, 0, org))
    in_transit = sum(r.in_transit for r in reports)
    return BatchAnalysis(
        total_input=total_input,
        total_output=total_output,
        system_inventory=inventory,
        gamma=gamma,
        in_transit=in_transit,
        status=status_of(gamma, in_transit, (c.inventory for c in constituents)),
        constituents=constituents,
        edges=reports,
        parts=tuple(parts),
    )


def scoped(analysis: BatchAnalysis, organisation_id: int) -> BatchAnalysis:
    """What one organisation may see: the batch's totals and status, its own inventory, the
    edges it is an end of, and the parts that name it."""
    return replace(
        analysis,
        constituents=tuple(
            c for c in analysis.constituents if c.organisation_id == organisation_id
        ),
        edges=tuple(e for e in analysis.edges if organisation_id in (e.sender_id, e.receiver_id)),
        parts=tuple(
            p for p in analysis.parts if organisation_id in (p.organisation_id, p.counterparty_id)
        ),
    )


# --- words ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """How to call organisations in sentences (e.g. "wholesaler MedDistri Wholesale")."""

    labels: Mapping[int, str] = field(default_factory=dict)

    def __call__(self, organisation_id: int | None) -> str:
        if organisation_id is None:
            return "an unnamed organisation"
        return self.labels.get(organisation_id, f"organisation {organisation_id}")


def _refs(part: Part, noun: str) -> str:
    if not part.references:
        return ""
    plural = "s" if len(part.references) > 1 else ""
    return f": {noun}{plural} {', '.join(part.references)}"


def _day(at: datetime | None) -> str:
    return f" on {at:%Y-%m-%d %H:%M} UTC" if at is not None else ""


def describe(
    part: Part, names: Names, *, inventory: int | None = None, window: timedelta | None = None
) -> str:
    """One sentence naming who explains this part of gamma, and with which shipments."""
    org, other, q = names(part.organisation_id), names(part.counterparty_id), abs(part.quantity)
    internal = part.counterparty_id == part.organisation_id
    match part.kind:
        case PartKind.IN_TRANSIT:
            hours = f" {window.total_seconds() / 3600:g} h" if window is not None else ""
            where = "between its own locations" if internal else f"to {other}"
            return (
                f"{org} sent {q} {where}{_day(part.at)}, not yet reported received; still "
                f"inside the{hours} transit window{_refs(part, 'shipment')}"
            )
        case PartKind.NOT_RECEIVED:
            if internal:
                return (
                    f"{org} sent {q} between its own locations that never arrived"
                    f"{_refs(part, 'transfer')}"
                )
            return (
                f"{org} shipped {q} to {other} that {other} never reported receiving"
                f"{_refs(part, 'shipment')}"
            )
        case PartKind.NOT_SHIPPED:
            if internal:
                return (
                    f"{org} took in {q} from its own locations that none of them sent"
                    f"{_refs(part, 'transfer')}"
                )
            return (
                f"{org} received {q} from {other} that {other} never reported shipping"
                f"{_refs(part, 'receipt')}"
            )
        case PartKind.LEFT_NETWORK:
            return (
                f"{org} shipped {q} out of the network (no receiving organisation named)"
                f"{_refs(part, 'shipment')}"
            )
        case PartKind.UNKNOWN_SOURCE:
            return (
                f"{org} received {q} from outside the network (no sending organisation named)"
                f"{_refs(part, 'receipt')}"
            )
        case PartKind.NOT_A_MANUFACTURER:
            return f"{org} reports producing {q} but is not a manufacturer"
        case PartKind.ADJUSTED_LOSS:
            return f"{org} wrote off {q} in adjustments and counts (net), unexplained"
        case PartKind.ADJUSTED_GAIN:
            return f"{org} gained {q} in adjustments and counts (net), unexplained"
        case PartKind.NEGATIVE_INVENTORY:
            shown = f" {inventory}" if inventory is not None else " below zero"
            return f"{org} reports inventory{shown}: issued more than it received"
    raise AssertionError(part.kind)  # pragma: no cover


def explain(analysis: BatchAnalysis, names: Names, window: timedelta) -> list[str]:
    """The parts as sentences, in the order of `analysis.parts`."""
    inventory = {c.organisation_id: c.inventory for c in analysis.constituents}
    return [
        describe(p, names, inventory=inventory.get(p.organisation_id), window=window)
        for p in analysis.parts
    ]


def summary(analysis: BatchAnalysis) -> str:
    """One line: the status and what gamma is made of."""
    a = analysis
    head = f"{a.status.value}: gamma {a.gamma} (I {a.total_input} - O {a.total_output} - "
    head += f"inventory {a.system_inventory})"
    if a.status is SupervisionStatus.IN_TRANSIT:
        return f"{head}; all of it in transit within the window"
    if a.status is SupervisionStatus.OUTFLOW_LEAK:
        return (
            f"{head}; {a.explained_by_transit} in transit within the window, "
            f"{a.unexplained} unexplained"
        )
    if a.status is SupervisionStatus.NEGATIVE_INVENTORY:
        below = [c for c in a.constituents if c.inventory < 0]
        return f"{head}; {len(below)} constituent(s) below zero"
    return head
