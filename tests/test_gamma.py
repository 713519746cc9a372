"""Gamma without a database: the coefficient, the status order, the transit window, edge
reconciliation (reference first, then FIFO) and the parts that explain gamma, which always add
up to it. Movements go through the same `totals_from_movements` the ledger uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.inventory.models import MovementKind
from server.supervision.gamma import (
    Constituent,
    Edge,
    Names,
    PartKind,
    Side,
    SupervisionStatus,
    TransferRow,
    analyse,
    edge_of,
    explain,
    in_window,
    newest_units,
    reconcile_edge,
    scoped,
    sides_to_name,
    status_of,
    summary,
)
from server.supervision.totals import COUNTERS, MovementFact, totals_from_movements

K = MovementKind
S = SupervisionStatus
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=72)
MFG, WHS, HOSP, PHARM, EXT = 1, 2, 3, 4, 5
MANUFACTURERS = {MFG}
NAMES = Names(
    {
        MFG: "manufacturer Helvepharm",
        WHS: "wholesaler MedDistri",
        HOSP: "hospital St. Aurelia",
        PHARM: "pharmacy Lindenhof",
    }
)
INFLOW = {K.PRODUCE, K.RECEIVE, K.TRANSFER_IN, K.RETURN}


@dataclass
class Step:
    kind: MovementKind
    org: int
    quantity: int  # as the user enters it: positive, or signed for ADJUST/COUNT
    counterparty: int | None = None
    hours_ago: float = 1
    reference: str | None = None


def analyse_steps(steps: list[Step], *, now: datetime = NOW, window: timedelta = WINDOW):
    facts, rows = [], []
    for i, s in enumerate(steps):
        signed = s.quantity
        if s.kind not in (K.ADJUST, K.COUNT):
            signed = s.quantity if s.kind in INFLOW else -s.quantity
        at = NOW - timedelta(hours=s.hours_ago)
        facts.append(MovementFact("AP-1", "B1", s.org, s.counterparty, s.kind, signed, at))
        if s.kind in (K.SHIP, K.RECEIVE, K.TRANSFER_OUT, K.TRANSFER_IN):
            rows.append(
                TransferRow(i + 1, s.kind, s.org, s.counterparty, abs(signed), at, s.reference)
            )
    totals = totals_from_movements(facts)
    constituents = [
        Constituent(org, org in MANUFACTURERS, **counters)
        for (_, _, org), counters in totals.constituents.items()
    ]
    edges = [
        Edge(s, r, e["shipped"], e["received"], e["last_shipped_at"])
        for (_, _, s, r), e in totals.edges.items()
    ]
    return analyse(constituents, edges, rows, now=now, window=window)


def status_only(steps: list[Step], *, now: datetime = NOW, window: timedelta = WINDOW):
    """As the ledger's hook sees it: only the shipments inside the window are read."""
    full = analyse_steps(steps, now=now, window=window)
    facts_rows = analyse_rows(steps)
    recent = [r for r in facts_rows if r.sending and in_window(r.occurred_at, now, window)]
    edges = [
        Edge(e.sender_id, e.receiver_id, e.shipped, e.received, e.last_shipped_at)
        for e in full.edges
    ]
    return analyse(full.constituents, edges, recent, now=now, window=window)


def analyse_rows(steps: list[Step]) -> list[TransferRow]:
    rows = []
    for i, s in enumerate(steps):
        if s.kind in (K.SHIP, K.RECEIVE, K.TRANSFER_OUT, K.TRANSFER_IN):
            at = NOW - timedelta(hours=s.hours_ago)
            rows.append(
                TransferRow(i + 1, s.kind, s.org, s.counterparty, s.quantity, at, s.reference)
            )
    return rows


def chain(*extra: Step) -> list[Step]:
    """Manufacturer -> wholesaler -> hospital -> patients, all reported on both sides."""
    return [
        Step(K.PRODUCE, MFG, 100, hours_ago=200),
        Step(K.SHIP, MFG, 100, WHS, 190, "DN-1"),
        Step(K.RECEIVE, WHS, 100, MFG, 180, "DN-1"),
        Step(K.SHIP, WHS, 60, HOSP, 170, "DN-2"),
        Step(K.RECEIVE, HOSP, 60, WHS, 160, "DN-2"),
        Step(K.SHIP, WHS, 20, PHARM, 150, "DN-3"),
        Step(K.RECEIVE, PHARM, 20, WHS, 140, "DN-3"),
        Step(K.TRANSFER_OUT, HOSP, 30, None, 130, "TR-1"),
        Step(K.TRANSFER_IN, HOSP, 30, None, 129, "TR-1"),
        Step(K.DISPENSE, HOSP, 25, hours_ago=120),
        Step(K.RETURN, HOSP, 2, hours_ago=110),
        Step(K.DISPOSE, HOSP, 1, hours_ago=100),
        Step(K.DISPENSE, PHARM, 5, hours_ago=90),
        *extra,
    ]


def parts_of(analysis) -> list[tuple[PartKind, int, int, int | None, tuple[str, ...]]]:
    return [
        (p.kind, p.quantity, p.organisation_id, p.counterparty_id, p.references)
        for p in analysis.parts
    ]


def test_a_fully_reported_chain_is_normal() -> None:
    a = analyse_steps(chain())
    assert (a.total_input, a.total_output, a.system_inventory, a.gamma) == (100, 29, 71, 0)
    assert a.status is S.NORMAL and a.parts == ()
    inventory = {c.organisation_id: c.inventory for c in a.constituents}
    assert inventory == {MFG: 0, WHS: 20, HOSP: 36, PHARM: 15}
    edges = {(e.sender_id, e.receiver_id): (e.shipped, e.received, e.gap) for e in a.edges}
    # The ward transfer is the hospital's edge to itself.
    assert edges == {
        (MFG, WHS): (100, 100, 0),
        (WHS, HOSP): (60, 60, 0),
        (WHS, PHARM): (20, 20, 0),
        (HOSP, HOSP): (30, 30, 0),
    }


def test_negative_inventory_with_gamma_zero() -> None:
    a = analyse_steps(chain(Step(K.DISPENSE, PHARM, 18)))
    assert a.gamma == 0
    assert a.status is S.NEGATIVE_INVENTORY
    assert parts_of(a) == [(PartKind.NEGATIVE_INVENTORY, 0, PHARM, None, ())]
    assert explain(a, NAMES, WINDOW) == [
        "pharmacy Lindenhof reports inventory -3: issued more than it received"
    ]
    assert a.involved() == {PHARM}


def test_receipt_nobody_shipped_is_an_illegal_inflow() -> None:
    a = analyse_steps(chain(Step(K.RECEIVE, PHARM, 7, WHS, 2, "DN-9")))
    assert (a.gamma, a.status) == (-7, S.ILLEGAL_INFLOW)
    assert parts_of(a) == [(PartKind.NOT_SHIPPED, -7, PHARM, WHS, ("DN-9",))]
    assert explain(a, NAMES, WINDOW) == [
        "pharmacy Lindenhof received 7 from wholesaler MedDistri that wholesaler MedDistri "
        "never reported shipping: receipt DN-9"
    ]
    assert a.involved() == {PHARM, WHS}
    edge = next(e for e in a.edges if (e.sender_id, e.receiver_id) == (WHS, PHARM))
    assert (edge.gap, edge.in_transit, edge.unexplained) == (-7, 0, -7)
    assert [(u.reference, u.quantity) for u in edge.receipts] == [("DN-9", 7)]


def test_receipts_from_outside_and_production_by_a_non_manufacturer() -> None:
    a = analyse_steps(
        chain(Step(K.RECEIVE, PHARM, 4, None, 3, "X-1"), Step(K.PRODUCE, WHS, 6, hours_ago=2))
    )
    assert (a.gamma, a.status) == (-10, S.ILLEGAL_INFLOW)
    assert parts_of(a) == [
        (PartKind.NOT_A_MANUFACTURER, -6, WHS, None, ()),
        (PartKind.UNKNOWN_SOURCE, -4, PHARM, None, ("X-1",)),
    ]
    assert explain(a, NAMES, WINDOW)[0] == (
        "wholesaler MedDistri reports producing 6 but is not a manufacturer"
    )


def test_shipment_out_of_the_network_is_a_leak() -> None:
    a = analyse_steps(chain(Step(K.SHIP, WHS, 10, None, 1, "EXP-1")))
    assert (a.gamma, a.status, a.in_transit, a.unexplained) == (10, S.OUTFLOW_LEAK, 0, 10)
    assert parts_of(a) == [(PartKind.LEFT_NETWORK, 10, WHS, None, ("EXP-1",))]
    assert a.involved() == {WHS}
    assert "shipped 10 out of the network" in explain(a, NAMES, WINDOW)[0]


def test_in_transit_inside_the_window_then_overdue() -> None:
    steps = chain(Step(K.SHIP, WHS, 15, HOSP, 5, "DN-4"))
    a = analyse_steps(steps)
    assert (a.gamma, a.in_transit, a.status, a.unexplained) == (15, 15, S.IN_TRANSIT, 0)
    assert parts_of(a) == [(PartKind.IN_TRANSIT, 15, WHS, HOSP, ("DN-4",))]
    assert a.involved() == set()
    later = analyse_steps(steps, now=NOW + timedelta(hours=70))
    assert later.status is S.OUTFLOW_LEAK
    assert parts_of(later) == [(PartKind.NOT_RECEIVED, 15, WHS, HOSP, ("DN-4",))]
    assert explain(later, NAMES, WINDOW) == [
        "wholesaler MedDistri shipped 15 to hospital St. Aurelia that hospital St. Aurelia "
        "never reported receiving: shipment DN-4"
    ]
    assert later.involved() == {WHS, HOSP}
    # A window of zero: nothing is ever in transit.
    assert analyse_steps(steps, window=timedelta(0)).status is S.OUTFLOW_LEAK


def test_leak_beside_a_shipment_in_transit_names_the_unexplained_part() -> None:
    a = analyse_steps(
        chain(Step(K.SHIP, WHS, 8, HOSP, 2, "DN-5"), Step(K.ADJUST, HOSP, -3, hours_ago=1))
    )
    assert (a.gamma, a.in_transit, a.explained_by_transit, a.unexplained) == (11, 8, 8, 3)
    assert a.status is S.OUTFLOW_LEAK
    assert parts_of(a) == [
        (PartKind.IN_TRANSIT, 8, WHS, HOSP, ("DN-5",)),
        (PartKind.ADJUSTED_LOSS, 3, HOSP, None, ()),
    ]
    assert a.involved() == {HOSP}  # the wholesaler's shipment is on time
    assert summary(a).endswith("8 in transit within the window, 3 unexplained")


def test_unmatched_shipments_are_the_newest_units_first_in_first_out() -> None:
    steps = chain(
        Step(K.SHIP, WHS, 5, HOSP, 100, "DN-6"),
        Step(K.SHIP, WHS, 5, HOSP, 4, "DN-7"),
        Step(K.RECEIVE, HOSP, 5, WHS, 3, "DN-7"),
    )
    a = analyse_steps(steps)
    # Receipts pay off the oldest shipments first, whatever their reference says.
    assert parts_of(a) == [(PartKind.IN_TRANSIT, 5, WHS, HOSP, ("DN-7",))]
    assert a.status is S.IN_TRANSIT
    steps.append(Step(K.SHIP, WHS, 4, HOSP, 90, "DN-8"))  # dated before DN-7: overdue
    a = analyse_steps(steps)
    assert parts_of(a) == [
        (PartKind.NOT_RECEIVED, 4, WHS, HOSP, ("DN-8",)),
        (PartKind.IN_TRANSIT, 5, WHS, HOSP, ("DN-7",)),
    ]


def test_the_status_needs_only_the_shipments_inside_the_window() -> None:
    steps = chain(
        Step(K.SHIP, WHS, 5, HOSP, 100, "DN-6"),
        Step(K.SHIP, WHS, 3, HOSP, 4, "DN-7"),
        Step(K.RECEIVE, PHARM, 2, None, 1, "GREY"),
    )
    full, quick = analyse_steps(steps), status_only(steps)
    assert (quick.gamma, quick.in_transit, quick.status) == (
        full.gamma,
        full.in_transit,
        full.status,
    )
    assert sum(p.quantity for p in quick.parts) == quick.gamma
    # Without the older rows the overdue part is there, just not named.
    assert [(p.kind, p.quantity, p.references) for p in quick.parts] == [
        (PartKind.NOT_RECEIVED, 5, ()),
        (PartKind.IN_TRANSIT, 3, ("DN-7",)),
        (PartKind.UNKNOWN_SOURCE, -2, ()),
    ]
    assert (full.parts[0].kind, full.parts[0].references) == (PartKind.NOT_RECEIVED, ("DN-6",))


def test_an_internal_transfer_on_the_road_is_in_transit() -> None:
    steps = chain(Step(K.TRANSFER_OUT, HOSP, 6, None, 2, "TR-2"))
    a = analyse_steps(steps)
    assert (a.gamma, a.status) == (6, S.IN_TRANSIT)
    assert parts_of(a) == [(PartKind.IN_TRANSIT, 6, HOSP, HOSP, ("TR-2",))]
    assert "between its own locations" in explain(a, NAMES, WINDOW)[0]
    late = analyse_steps(steps, now=NOW + timedelta(days=4))
    assert late.status is S.OUTFLOW_LEAK
    assert "never arrived: transfer TR-2" in explain(late, NAMES, WINDOW)[0]


def test_status_order() -> None:
    assert status_of(-1, 50, [-5]) is S.ILLEGAL_INFLOW
    assert status_of(5, 5, [-5]) is S.IN_TRANSIT
    assert status_of(5, 4, []) is S.OUTFLOW_LEAK
    assert status_of(0, 9, [3, -1]) is S.NEGATIVE_INVENTORY
    assert status_of(0, 0, [0, 3]) is S.NORMAL


def test_newest_units_and_fallback_without_rows() -> None:
    def row(i: int, q: int, hours: int, ref: str | None = None) -> TransferRow:
        return TransferRow(i, K.SHIP, WHS, HOSP, q, NOW - timedelta(hours=hours), ref)

    rows = [row(1, 10, 100, "A"), row(2, 10, 50, "B")]
    side = Side(WHS, True, (WHS, HOSP), 8)
    assert [
        (u.reference, u.quantity) for u in newest_units(rows, side, now=NOW, window=WINDOW)
    ] == [("B", 8)]
    wide = Side(WHS, True, (WHS, HOSP), 25)
    units = newest_units(rows, wide, now=NOW, window=WINDOW)
    assert [(u.reference, u.quantity, u.in_window) for u in units] == [
        (None, 5, False),  # older than the rows given: unnamed, overdue
        ("A", 10, False),
        ("B", 10, True),
    ]
    edge = Edge(WHS, HOSP, 20, 12, NOW - timedelta(hours=50))
    report = reconcile_edge(edge, rows, now=NOW, window=WINDOW)
    assert (report.in_transit, report.overdue, report.unexplained) == (8, 0, 0)
    blind = reconcile_edge(edge, None, now=NOW, window=timedelta(hours=10))
    assert [(u.quantity, u.reference, u.in_window) for u in blind.shipments] == [(8, None, False)]
    assert sides_to_name([], [edge]) == [side]


def test_scoped_view_shows_only_the_organisations_own_side() -> None:
    a = analyse_steps(chain(Step(K.RECEIVE, PHARM, 7, WHS, 2, "DN-9"), Step(K.DISPENSE, HOSP, 40)))
    view = scoped(a, HOSP)
    assert [c.organisation_id for c in view.constituents] == [HOSP]
    assert {(e.sender_id, e.receiver_id) for e in view.edges} == {(WHS, HOSP), (HOSP, HOSP)}
    assert [p.kind for p in view.parts] == [PartKind.NEGATIVE_INVENTORY]
    assert (view.gamma, view.status) == (a.gamma, a.status)


def test_edge_of_every_kind() -> None:
    assert edge_of(K.SHIP, WHS, HOSP) == (WHS, HOSP)
    assert edge_of(K.RECEIVE, HOSP, WHS) == (WHS, HOSP)
    assert edge_of(K.SHIP, WHS, None) is None
    assert edge_of(K.RECEIVE, WHS, None) is None
    assert edge_of(K.TRANSFER_OUT, HOSP, None) == (HOSP, HOSP)
    assert edge_of(K.TRANSFER_IN, HOSP, None) == (HOSP, HOSP)
    assert edge_of(K.SHIP, HOSP, HOSP) == (HOSP, HOSP)
    for kind in (K.PRODUCE, K.DISPENSE, K.RETURN, K.DISPOSE, K.ADJUST, K.COUNT):
        assert edge_of(kind, HOSP, WHS) is None


steps_strategy = st.lists(
    st.builds(
        Step,
        kind=st.sampled_from(list(K)),
        org=st.sampled_from([MFG, WHS, HOSP, PHARM]),
        quantity=st.integers(1, 30),
        counterparty=st.sampled_from([None, MFG, WHS, HOSP, PHARM, EXT]),
        hours_ago=st.integers(0, 200),
        reference=st.sampled_from([None, "A", "B", "C"]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps_strategy, signs=st.lists(st.booleans(), min_size=40, max_size=40))
def test_parts_always_add_up_to_gamma(steps: list[Step], signs: list[bool]) -> None:
    for step, negative in zip(steps, signs, strict=False):
        if step.kind in (K.ADJUST, K.COUNT) and negative:
            step.quantity = -step.quantity
    a = analyse_steps(steps)
    assert sum(p.quantity for p in a.parts) == a.gamma
    assert a.gamma == a.total_input - a.total_output - a.system_inventory
    for e in a.edges:
        assert e.gap == sum(u.quantity for u in e.shipments) - sum(u.quantity for u in e.receipts)
        assert not (e.shipments and e.receipts)
        assert all(u.movement_id is not None for u in e.shipments)  # every row was given
        assert 0 <= e.in_transit <= max(e.gap, 0)
    assert a.status is status_of(a.gamma, a.in_transit, [c.inventory for c in a.constituents])
    quick = status_only(steps)
    assert (quick.gamma, quick.in_transit, quick.status) == (a.gamma, a.in_transit, a.status)
    assert sum(p.quantity for p in quick.parts) == a.gamma
    if a.status is S.NORMAL:
        assert all(p.kind is PartKind.IN_TRANSIT for p in a.parts if p.quantity) or a.gamma == 0
    assert len(explain(a, NAMES, WINDOW)) == len(a.parts)
    if a.status in (S.ILLEGAL_INFLOW, S.OUTFLOW_LEAK, S.NEGATIVE_INVENTORY):
        assert a.involved()
    for c in a.constituents:
        assert c.inventory == sum(
            getattr(c, n) * (1 if i < 5 else -1) for i, n in enumerate(COUNTERS)
        )
