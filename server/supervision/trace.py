"""Trace of one lot, assembled from its movement rows alone (no I/O, tested without a database).

Backward: the hops that brought the lot into each organisation and location. Every organisation
reports only its own side, so a hop is rebuilt by pairing the two sides:

- PRODUCE at the manufacturer is the first hop (from nowhere);
- a SHIP by A naming counterparty B pairs with a RECEIVE by B naming counterparty A under the
  same reference (delivery note, shipment number);
- a TRANSFER_OUT pairs with a TRANSFER_IN under the same reference (transfers without a
  reference cannot be paired safely and are shown one-sided).

Within one (sender, receiver, reference) group, quantities are paired first-in-first-out, so a
shipment received in two parts (central pharmacy and warehouse reserve) becomes two hops, and
what one side reported without the other stays visible as NOT_RECEIVED or NOT_SHIPPED.

Forward: per location and per organisation what came in, went out, and is left; and every
DISPENSE with its patient reference, hidden (redacted, never dropped) where the caller may not
see patients.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from server.core.downloads import spreadsheet_safe
from server.inventory.models import MovementKind


class HopKind(StrEnum):
    PRODUCED = "PRODUCED"
    SHIPMENT = "SHIPMENT"
    TRANSFER = "TRANSFER"


class HopStatus(StrEnum):
    COMPLETE = "COMPLETE"  # both sides reported (or produced)
    NOT_RECEIVED = "NOT_RECEIVED"  # sent, no matching receipt (yet): in transit or lost
    NOT_SHIPPED = "NOT_SHIPPED"  # received, the sender reported no matching dispatch


class MovementLike(Protocol):
    id: int
    kind: MovementKind
    location_id: int
    organisation_id: int
    counterparty_id: int | None
    quantity: int
    reference: str | None
    patient_reference: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class TraceMovement:
    """The fields of a ledger row the trace needs (a Movement satisfies the same shape)."""

    id: int
    kind: MovementKind
    location_id: int
    organisation_id: int
    quantity: int  # signed, as in the ledger
    occurred_at: datetime
    counterparty_id: int | None = None
    reference: str | None = None
    patient_reference: str | None = None


@dataclass(frozen=True)
class Hop:
    kind: HopKind
    status: HopStatus
    quantity: int
    from_organisation_id: int | None
    from_location_id: int | None
    to_organisation_id: int | None
    to_location_id: int | None
    shipped_at: datetime | None
    received_at: datetime | None
    reference: str | None
    out_movement_id: int | None = None
    in_movement_id: int | None = None

    @property
    def sort_key(self) -> tuple[datetime, datetime, int, int]:
        start = self.shipped_at or self.received_at
        end = self.received_at or self.shipped_at
        assert start is not None and end is not None  # every hop has at least one side
        return (start, end, self.out_movement_id or 0, self.in_movement_id or 0)


@dataclass
class Holding:
    """What one location (location_id set) or organisation (None) did with the lot."""

    organisation_id: int
    location_id: int | None
    produced: int = 0
    received: int = 0
    sent: int = 0
    dispensed: int = 0
    disposed: int = 0
    returned: int = 0
    adjusted: int = 0  # ADJUST and COUNT, signed
    balance: int = 0
    movements: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, m: MovementLike) -> None:
        kind, qty = m.kind, m.quantity
        if kind is MovementKind.PRODUCE:
            self.produced += qty
        elif kind in (MovementKind.RECEIVE, MovementKind.TRANSFER_IN):
            self.received += qty
        elif kind in (MovementKind.SHIP, MovementKind.TRANSFER_OUT):
            self.sent -= qty
        elif kind is MovementKind.DISPENSE:
            self.dispensed -= qty
        elif kind is MovementKind.DISPOSE:
            self.disposed -= qty
        elif kind is MovementKind.RETURN:
            self.returned += qty
        else:
            self.adjusted += qty
        self.balance += qty
        self.movements += 1
        self._seen(m.occurred_at, m.occurred_at)

    def _seen(self, first: datetime | None, last: datetime | None) -> None:
        if first is not None and (self.first_at is None or first < self.first_at):
            self.first_at = first
        if last is not None and (self.last_at is None or last > self.last_at):
            self.last_at = last

    def absorb(self, other: Holding) -> None:
        for name in ("produced", "received", "sent", "dispensed", "disposed", "returned"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.adjusted += other.adjusted
        self.balance += other.balance
        self.movements += other.movements
        self._seen(other.first_at, other.last_at)


@dataclass(frozen=True)
class PatientDispense:
    movement_id: int
    organisation_id: int
    location_id: int
    quantity: int  # packs handed out (positive)
    occurred_at: datetime
    patient_reference: str | None
    redacted: bool = False


@dataclass(frozen=True)
class Trace:
    hops: list[Hop]
    locations: list[Holding]
    organisations: list[Holding]
    patients: list[PatientDispense]
    redacted_patients: int = 0

    @property
    def on_hand(self) -> int:
        return sum(h.balance for h in self.locations)

    @property
    def not_received(self) -> int:
        return sum(h.quantity for h in self.hops if h.status is HopStatus.NOT_RECEIVED)


# --- backward --------------------------------------------------------------------------------


def _order(m: MovementLike) -> tuple[datetime, int]:
    return (m.occurred_at, m.id)


def pair_fifo(
    outs: Sequence[MovementLike], ins: Sequence[MovementLike]
) -> list[tuple[MovementLike | None, MovementLike | None, int]]:
    """Split quantities between the sending and receiving rows of one group, oldest first.

    Returns (out, in, quantity) triples; a side is None where the other side has no match.
    """
    outs = sorted(outs, key=_order)
    ins = sorted(ins, key=_order)
    left_out = [-m.quantity for m in outs]
    left_in = [m.quantity for m in ins]
    pairs: list[tuple[MovementLike | None, MovementLike | None, int]] = []
    i = j = 0
    while i < len(outs) and j < len(ins):
        take = min(left_out[i], left_in[j])
        if take > 0:
            pairs.append((outs[i], ins[j], take))
        left_out[i] -= take
        left_in[j] -= take
        if left_out[i] <= 0:
            i += 1
        if left_in[j] <= 0:
            j += 1
    pairs += [(outs[k], None, left_out[k]) for k in range(i, len(outs)) if left_out[k] > 0]
    pairs += [(None, ins[k], left_in[k]) for k in range(j, len(ins)) if left_in[k] > 0]
    return pairs


def _hop(kind: HopKind, out: MovementLike | None, inn: MovementLike | None, quantity: int) -> Hop:
    if out is not None and inn is not None:
        status = HopStatus.COMPLETE
    else:
        status = HopStatus.NOT_RECEIVED if inn is None else HopStatus.NOT_SHIPPED
    side = out if out is not None else inn
    assert side is not None
    # A one-sided row still names the other organisation when it gave a counterparty.
    from_org = out.organisation_id if out else (inn.counterparty_id if inn else None)
    to_org = inn.organisation_id if inn else (out.counterparty_id if out else None)
    return Hop(
        kind=kind,
        status=status,
        quantity=quantity,
        from_organisation_id=from_org,
        from_location_id=out.location_id if out else None,
        to_organisation_id=to_org,
        to_location_id=inn.location_id if inn else None,
        shipped_at=out.occurred_at if out else None,
        received_at=inn.occurred_at if inn else None,
        reference=side.reference,
        out_movement_id=out.id if out else None,
        in_movement_id=inn.id if inn else None,
    )


def backward_hops(movements: Iterable[MovementLike]) -> list[Hop]:
    """Every hop of the lot, oldest first: produced, shipped between organisations, transferred."""
    hops: list[Hop] = []
    shipments: dict[tuple[Any, ...], tuple[list[MovementLike], list[MovementLike]]] = defaultdict(
        lambda: ([], [])
    )
    transfers: dict[tuple[Any, ...], tuple[list[MovementLike], list[MovementLike]]] = defaultdict(
        lambda: ([], [])
    )
    for m in movements:
        if m.kind is MovementKind.PRODUCE:
            hops.append(_produced(m))
        elif m.kind is MovementKind.SHIP:
            shipments[(m.organisation_id, m.counterparty_id, m.reference)][0].append(m)
        elif m.kind is MovementKind.RECEIVE:
            shipments[(m.counterparty_id, m.organisation_id, m.reference)][1].append(m)
        elif m.kind in (MovementKind.TRANSFER_OUT, MovementKind.TRANSFER_IN):
            # Without a reference nothing says which two rows belong together.
            key = ("ref", m.reference) if m.reference else ("row", m.id)
            transfers[key][0 if m.kind is MovementKind.TRANSFER_OUT else 1].append(m)
    for kind, groups in ((HopKind.SHIPMENT, shipments), (HopKind.TRANSFER, transfers)):
        for outs, ins in groups.values():
            hops += [_hop(kind, out, inn, qty) for out, inn, qty in pair_fifo(outs, ins)]
    return sorted(hops, key=lambda h: h.sort_key)


def _produced(m: MovementLike) -> Hop:
    return Hop(
        kind=HopKind.PRODUCED,
        status=HopStatus.COMPLETE,
        quantity=m.quantity,
        from_organisation_id=None,
        from_location_id=None,
        to_organisation_id=m.organisation_id,
        to_location_id=m.location_id,
        shipped_at=None,
        received_at=m.occurred_at,
        reference=m.reference,
        in_movement_id=m.id,
    )


# --- forward ---------------------------------------------------------------------------------


def _first(h: Holding) -> tuple[datetime, int, int]:
    assert h.first_at is not None
    return (h.first_at, h.organisation_id, h.location_id or 0)


def holdings(
    movements: Iterable[MovementLike], hops: Iterable[Hop]
) -> tuple[list[Holding], list[Holding]]:
    """Per location and per organisation, in order of first contact with the lot.

    Organisation totals leave out transfers between two of its own locations: received and
    sent count only what crossed the organisation's boundary.
    """
    by_location: dict[int, Holding] = {}
    for m in movements:
        holding = by_location.setdefault(m.location_id, Holding(m.organisation_id, m.location_id))
        holding.add(m)
    by_org: dict[int, Holding] = {}
    for holding in by_location.values():
        org = holding.organisation_id
        by_org.setdefault(org, Holding(org, None)).absorb(holding)
    for hop in hops:
        internal = (
            hop.kind is HopKind.TRANSFER
            and hop.status is HopStatus.COMPLETE
            and hop.from_organisation_id == hop.to_organisation_id
            and hop.to_organisation_id in by_org
        )
        if internal:
            by_org[hop.to_organisation_id].received -= hop.quantity  # type: ignore[index]
            by_org[hop.to_organisation_id].sent -= hop.quantity  # type: ignore[index]
    return sorted(by_location.values(), key=_first), sorted(by_org.values(), key=_first)


def patient_dispenses(
    movements: Iterable[MovementLike], sees_patients_at: Callable[[int], bool]
) -> list[PatientDispense]:
    """Every DISPENSE, oldest first; the patient reference is hidden outside the caller's view."""
    rows = []
    for m in sorted((m for m in movements if m.kind is MovementKind.DISPENSE), key=_order):
        visible = sees_patients_at(m.location_id)
        rows.append(
            PatientDispense(
                movement_id=m.id,
                organisation_id=m.organisation_id,
                location_id=m.location_id,
                quantity=-m.quantity,
                occurred_at=m.occurred_at,
                patient_reference=m.patient_reference if visible else None,
                redacted=not visible and m.patient_reference is not None,
            )
        )
    return rows


def assemble_trace(
    movements: Sequence[MovementLike],
    sees_patients_at: Callable[[int], bool] = lambda _location_id: True,
) -> Trace:
    """The whole trace of one lot from all of its movement rows."""
    hops = backward_hops(movements)
    locations, organisations = holdings(movements, hops)
    patients = patient_dispenses(movements, sees_patients_at)
    return Trace(
        hops=hops,
        locations=locations,
        organisations=organisations,
        patients=patients,
        redacted_patients=sum(p.redacted for p in patients),
    )


# --- CSV -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotHeader:
    """What the CSV says about the lot itself."""

    product: str
    approval_number: str
    batch_number: str
    expiry_date: date
    status: str


@dataclass(frozen=True)
class Names:
    organisations: Mapping[int, str] = field(default_factory=dict)
    locations: Mapping[int, str] = field(default_factory=dict)

    def org(self, org_id: int | None) -> str:
        return "" if org_id is None else self.organisations.get(org_id, f"#{org_id}")

    def loc(self, location_id: int | None) -> str:
        return "" if location_id is None else self.locations.get(location_id, f"#{location_id}")


LOT_COLUMNS = ["product", "approval_number", "batch_number", "expiry_date", "status"]
HOP_COLUMNS = [
    "kind",
    "status",
    "from_organisation",
    "from_location",
    "to_organisation",
    "to_location",
    "quantity",
    "shipped_at",
    "received_at",
    "reference",
]
_COUNTERS = ["produced", "received", "sent", "dispensed", "disposed", "returned", "adjusted"]
LOCATION_COLUMNS = ["organisation", "location", *_COUNTERS, "balance", "first_at", "last_at"]
ORGANISATION_COLUMNS = ["organisation", *_COUNTERS, "balance", "first_at", "last_at"]
PATIENT_COLUMNS = [
    "patient_reference",
    "redacted",
    "organisation",
    "location",
    "quantity",
    "dispensed_at",
]


def _when(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _counters(h: Holding) -> list[Any]:
    return [getattr(h, name) for name in _COUNTERS] + [
        h.balance,
        _when(h.first_at),
        _when(h.last_at),
    ]


def trace_csv(trace: Trace, lot: LotHeader, names: Names) -> str:
    """Sections one after another; each starts with a header row whose first cell is `section`,
    and every data row starts with its section's name (lot, hop, location, organisation,
    patient), so the file reads in a spreadsheet and parses back with csv.reader.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")

    def section(name: str, columns: list[str], rows: Iterable[list[Any]]) -> None:
        writer.writerow(["section", *columns])
        writer.writerows([name, *row] for row in rows)

    section(
        "lot",
        LOT_COLUMNS,
        [
            [
                spreadsheet_safe(lot.product),
                spreadsheet_safe(lot.approval_number),
                spreadsheet_safe(lot.batch_number),
                lot.expiry_date.isoformat(),
                lot.status,
            ]
        ],
    )
    section(
        "hop",
        HOP_COLUMNS,
        (
            [
                h.kind.value,
                h.status.value,
                spreadsheet_safe(names.org(h.from_organisation_id)),
                spreadsheet_safe(names.loc(h.from_location_id)),
                spreadsheet_safe(names.org(h.to_organisation_id)),
                spreadsheet_safe(names.loc(h.to_location_id)),
                h.quantity,
                _when(h.shipped_at),
                _when(h.received_at),
                spreadsheet_safe(h.reference),
            ]
            for h in trace.hops
        ),
    )
    section(
        "location",
        LOCATION_COLUMNS,
        (
            [
                spreadsheet_safe(names.org(h.organisation_id)),
                spreadsheet_safe(names.loc(h.location_id)),
                *_counters(h),
            ]
            for h in trace.locations
        ),
    )
    section(
        "organisation",
        ORGANISATION_COLUMNS,
        (
            [spreadsheet_safe(names.org(h.organisation_id)), *_counters(h)]
            for h in trace.organisations
        ),
    )
    section(
        "patient",
        PATIENT_COLUMNS,
        (
            [
                spreadsheet_safe(p.patient_reference),
                "yes" if p.redacted else "",
                spreadsheet_safe(names.org(p.organisation_id)),
                spreadsheet_safe(names.loc(p.location_id)),
                p.quantity,
                _when(p.occurred_at),
            ]
            for p in trace.patients
        ),
    )
    return out.getvalue()


def read_trace_csv(text: str) -> dict[str, list[dict[str, str]]]:
    """The CSV back as rows per section (for tests and for tools that consume the export)."""
    sections: dict[str, list[dict[str, str]]] = defaultdict(list)
    header: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if row[0] == "section":
            header = row[1:]
            continue
        sections[row[0]].append(dict(zip(header, row[1:], strict=True)))
    return dict(sections)
