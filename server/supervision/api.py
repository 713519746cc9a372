"""GraphQL for recalls, lot traces and batch supervision: `recallLots`, `recalls`, `traceLot`,
`traceLotCsv`, `supervision`, `supervisionReport`.

Resolvers only decode IDs and convert results; the service decides who may do what (see
server/supervision/service.py for the recall scope and the patient-reference privacy rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Self

import strawberry
from sqlalchemy import select
from strawberry import relay
from strawberry.dataloader import DataLoader

from server.alerts import models as alert_models
from server.alerts.api import Alert
from server.catalog import models as catalog_models
from server.catalog.api import Lot, LotStatus, Product
from server.core.cost import weigh
from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    paginate,
)
from server.core.security import Permission
from server.network import models as network_models
from server.network.api import Location, Organisation
from server.supervision import gamma, models, trace
from server.supervision.checks import BatchCheck
from server.supervision.service import LotTrace as LotTraceResult
from server.supervision.service import RecallResult

TraceHopKind = strawberry.enum(trace.HopKind, name="TraceHopKind")
TraceHopStatus = strawberry.enum(trace.HopStatus, name="TraceHopStatus")


async def _organisation(info: Info, org_id: int | None) -> Organisation | None:
    return await load_related(info, network_models.Organisation, org_id, Organisation.from_model)


async def _location(info: Info, location_id: int | None) -> Location | None:
    return await load_related(info, network_models.Location, location_id, Location.from_model)


# --- trace -----------------------------------------------------------------------------------


@strawberry.type(
    description="One step of a lot's way: produced, shipped between organisations, "
    "or transferred between locations; both reported sides paired."
)
class TraceHop:
    kind: TraceHopKind  # type: ignore[valid-type]
    status: TraceHopStatus = strawberry.field(  # type: ignore[valid-type]
        description="COMPLETE: both sides reported; NOT_RECEIVED: sent, no matching receipt "
        "(in transit or lost); NOT_SHIPPED: received, the sender reported no matching dispatch."
    )
    quantity: int
    shipped_at: datetime | None
    received_at: datetime | None = strawberry.field(
        description="For PRODUCED hops: when it was produced."
    )
    reference: str | None
    from_organisation_id: strawberry.Private[int | None]
    from_location_id: strawberry.Private[int | None]
    to_organisation_id: strawberry.Private[int | None]
    to_location_id: strawberry.Private[int | None]

    @classmethod
    def from_hop(cls, hop: trace.Hop) -> Self:
        return cls(
            kind=hop.kind,
            status=hop.status,
            quantity=hop.quantity,
            shipped_at=hop.shipped_at,
            received_at=hop.received_at,
            reference=hop.reference,
            from_organisation_id=hop.from_organisation_id,
            from_location_id=hop.from_location_id,
            to_organisation_id=hop.to_organisation_id,
            to_location_id=hop.to_location_id,
        )

    @strawberry.field
    async def from_organisation(self, info: Info) -> Organisation | None:
        return await _organisation(info, self.from_organisation_id)

    @strawberry.field
    async def from_location(self, info: Info) -> Location | None:
        return await _location(info, self.from_location_id)

    @strawberry.field
    async def to_organisation(self, info: Info) -> Organisation | None:
        return await _organisation(info, self.to_organisation_id)

    @strawberry.field
    async def to_location(self, info: Info) -> Location | None:
        return await _location(info, self.to_location_id)


@strawberry.type(
    description="What a location (or, with location null, a whole organisation) did with the "
    "lot. Organisation totals leave out transfers between its own locations."
)
class TraceHolding:
    produced: int
    received: int = strawberry.field(description="RECEIVE and TRANSFER_IN.")
    sent: int = strawberry.field(description="SHIP and TRANSFER_OUT.")
    dispensed: int
    disposed: int
    returned: int
    adjusted: int = strawberry.field(description="ADJUST and COUNT, signed.")
    balance: int = strawberry.field(description="What is held now: the sum of all movements.")
    movements: int
    first_at: datetime | None
    last_at: datetime | None
    organisation_id: strawberry.Private[int]
    location_id: strawberry.Private[int | None]

    @classmethod
    def from_holding(cls, h: trace.Holding) -> Self:
        return cls(
            produced=h.produced,
            received=h.received,
            sent=h.sent,
            dispensed=h.dispensed,
            disposed=h.disposed,
            returned=h.returned,
            adjusted=h.adjusted,
            balance=h.balance,
            movements=h.movements,
            first_at=h.first_at,
            last_at=h.last_at,
            organisation_id=h.organisation_id,
            location_id=h.location_id,
        )

    @strawberry.field
    async def organisation(self, info: Info) -> Organisation:
        return await _organisation(info, self.organisation_id)  # type: ignore[return-value]

    @strawberry.field
    async def location(self, info: Info) -> Location | None:
        return await _location(info, self.location_id)


@strawberry.type(description="A DISPENSE of the lot to a patient.")
class TracePatientDispense:
    patient_reference: str | None = strawberry.field(
        description="Null when none was recorded, or when redacted."
    )
    redacted: bool = strawberry.field(
        description="True when a reference exists but this dispense is outside your scope."
    )
    quantity: int
    dispensed_at: datetime
    organisation_id: strawberry.Private[int]
    location_id: strawberry.Private[int]

    @classmethod
    def from_dispense(cls, p: trace.PatientDispense) -> Self:
        return cls(
            patient_reference=p.patient_reference,
            redacted=p.redacted,
            quantity=p.quantity,
            dispensed_at=p.occurred_at,
            organisation_id=p.organisation_id,
            location_id=p.location_id,
        )

    @strawberry.field
    async def organisation(self, info: Info) -> Organisation:
        return await _organisation(info, self.organisation_id)  # type: ignore[return-value]

    @strawberry.field
    async def location(self, info: Info) -> Location:
        return await _location(info, self.location_id)  # type: ignore[return-value]


@strawberry.type(description="Everywhere the lot went, and everyone it reached.")
class TraceForward:
    locations: list[TraceHolding]
    organisations: list[TraceHolding]
    patients: list[TracePatientDispense]
    redacted_patient_references: int = strawberry.field(
        description="How many patient references are hidden from you (outside your scope)."
    )
    on_hand: int = strawberry.field(description="Held across all locations now.")


@strawberry.type(description="Where a lot came from (backward) and where it went (forward).")
class LotTrace:
    lot: Lot
    product: Product
    backward: list[TraceHop] = strawberry.field(
        description="Every hop, oldest first: produced, shipped, received, transferred."
    )
    forward: TraceForward

    @classmethod
    def from_result(cls, result: LotTraceResult) -> Self:
        t = result.trace
        return cls(
            lot=Lot.from_model(result.lot),
            product=Product.from_model(result.product),
            backward=[TraceHop.from_hop(h) for h in t.hops],
            forward=TraceForward(
                locations=[TraceHolding.from_holding(h) for h in t.locations],
                organisations=[TraceHolding.from_holding(h) for h in t.organisations],
                patients=[TracePatientDispense.from_dispense(p) for p in t.patients],
                redacted_patient_references=t.redacted_patients,
                on_hand=t.on_hand,
            ),
        )


# --- recalls ---------------------------------------------------------------------------------


def _recall_lots_loader(info: Info) -> DataLoader[int, list[models.RecallLot]]:
    service = info.context.services.supervision
    return info.context.loader(
        ("recall_lots",), lambda: DataLoader(load_fn=service.recall_lots_of, cache=True)
    )


def _recall_alerts_loader(info: Info) -> DataLoader[int, list[alert_models.Alert]]:
    service = info.context.services.supervision
    return info.context.loader(
        ("recall_alerts",), lambda: DataLoader(load_fn=service.recall_alerts, cache=True)
    )


async def _visible_alerts(info: Info, recall_id: int) -> list[alert_models.Alert]:
    """A recall's alerts the caller may see: all of them with TRACE_READ (a trace shows every
    holder anyway), otherwise those at locations in the caller's scope (a nurse: her wards)."""
    principal = info.context.require_principal()
    alerts = await _recall_alerts_loader(info).load(recall_id)
    if principal.can(Permission.TRACE_READ):
        return alerts
    return [a for a in alerts if a.location_id is None or principal.sees_location(a.location_id)]


@strawberry.type(description="A lot taken out of use by a recall, and its status before.")
class RecalledLot:
    previous_status: LotStatus  # type: ignore[valid-type]
    lot_id: strawberry.Private[int]

    @strawberry.field
    async def lot(self, info: Info) -> Lot:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)


@strawberry.type(description="A location that held a recalled lot when the recall was made.")
class RecallHolder:
    quantity: int = strawberry.field(description="Held when the recall was made.")
    alert: Alert

    @strawberry.field
    async def location(self, info: Info) -> Location | None:
        return await _location(info, self.alert.location_id)

    @strawberry.field
    async def lot(self, info: Info) -> Lot | None:
        return await load_related(info, catalog_models.Lot, self.alert.lot_id, Lot.from_model)


@strawberry.type(description="Lots recalled together, with the holders it alerted.")
class Recall(relay.Node):
    id: relay.NodeID[int]
    reference: str
    reason: str
    initiated_at: datetime
    initiated_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, recall: models.Recall) -> Self:
        return cls(
            id=recall.id,
            reference=recall.reference,
            reason=recall.reason,
            initiated_at=recall.initiated_at,
            initiated_by_id=recall.initiated_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info, models.Recall, node_ids, cls.from_model, permission=Permission.STOCK_READ
        )

    @strawberry.field(description="Username of who recalled.")
    async def initiated_by(self, info: Info) -> str | None:
        user = await info.context.by_id(network_models.User).load(self.initiated_by_id)
        return user.username if user else None

    @strawberry.field
    async def lots(self, info: Info) -> list[RecalledLot]:
        rows = await _recall_lots_loader(info).load(self.id)
        return [
            RecalledLot(
                previous_status=catalog_models.LotStatus(r.previous_status), lot_id=r.lot_id
            )
            for r in rows
        ]

    @strawberry.field(
        description="The RECALL alerts it raised, one per location holding each lot (all of "
        "them with TRACE_READ, otherwise those in your scope)."
    )
    async def alerts(self, info: Info) -> list[Alert]:
        return [Alert.from_model(a) for a in await _visible_alerts(info, self.id)]

    @strawberry.field(
        description="Who held stock when it was recalled (all with TRACE_READ, otherwise those "
        "in your scope)."
    )
    async def holders(self, info: Info) -> list[RecallHolder]:
        return [
            RecallHolder(quantity=int(a.details.get("quantity", 0)), alert=Alert.from_model(a))
            for a in await _visible_alerts(info, self.id)
        ]


@strawberry.type
class RecallConnection(CountedConnection[Recall]):
    pass


# --- supervision (gamma) -----------------------------------------------------------------------

SupervisionStatus = strawberry.enum(gamma.SupervisionStatus, name="SupervisionStatus")
GammaPartKind = strawberry.enum(gamma.PartKind, name="GammaPartKind")


@strawberry.type(
    description="One constituent's reports of the batch (its own side only) and the inventory "
    "they leave it with: inflows (produced, received, transferredIn, returned, adjustedIn) "
    "minus outflows (shipped, transferredOut, dispensed, disposed, adjustedOut)."
)
class ConstituentInventory:
    inventory: int
    produced: int
    received: int
    transferred_in: int
    returned: int
    adjusted_in: int
    shipped: int
    transferred_out: int
    dispensed: int
    disposed: int
    adjusted_out: int
    organisation_id: strawberry.Private[int]

    @classmethod
    def from_constituent(cls, c: gamma.Constituent) -> Self:
        return cls(
            inventory=c.inventory,
            produced=c.produced,
            received=c.received,
            transferred_in=c.transferred_in,
            returned=c.returned,
            adjusted_in=c.adjusted_in,
            shipped=c.shipped,
            transferred_out=c.transferred_out,
            dispensed=c.dispensed,
            disposed=c.disposed,
            adjusted_out=c.adjusted_out,
            organisation_id=c.organisation_id,
        )

    @strawberry.field
    async def organisation(self, info: Info) -> Organisation:
        return await _organisation(info, self.organisation_id)  # type: ignore[return-value]


@strawberry.type(description="A shipment row (or the part of it) its receiver never matched.")
class UnmatchedShipment:
    reference: str | None
    quantity: int
    shipped_at: datetime | None
    in_transit_window: bool = strawberry.field(
        description="True while the shipment is younger than the transit window (in transit); "
        "false once it is overdue."
    )


@strawberry.type(description="A receipt row (or the part of it) no reported shipment matches.")
class UnmatchedReceipt:
    reference: str | None
    quantity: int
    received_at: datetime | None


@strawberry.type(
    description="What a sender reported shipping to a receiver and what the receiver reported "
    "receiving from it (SHIP/TRANSFER_OUT vs RECEIVE/TRANSFER_IN). Receipts are matched to "
    "shipments first-in-first-out by time, so the unmatched rows listed are the newest."
)
class SupervisionEdge:
    shipped: int
    received: int
    in_transit: int = strawberry.field(
        description="Unmatched shipments still inside the transit window."
    )
    unexplained: int = strawberry.field(
        description="shipped - received - inTransit: > 0 shipped and never received (overdue), "
        "< 0 received more than the sender reported shipping."
    )
    internal: bool = strawberry.field(
        description="Transfers between one organisation's own locations."
    )
    last_shipped_at: datetime | None
    unmatched_shipments: list[UnmatchedShipment]
    unmatched_receipts: list[UnmatchedReceipt]
    sender_id: strawberry.Private[int]
    receiver_id: strawberry.Private[int]

    @classmethod
    def from_report(cls, e: gamma.EdgeReport) -> Self:
        return cls(
            shipped=e.shipped,
            received=e.received,
            in_transit=e.in_transit,
            unexplained=e.unexplained,
            internal=e.internal,
            last_shipped_at=e.last_shipped_at,
            unmatched_shipments=[
                UnmatchedShipment(
                    reference=u.reference,
                    quantity=u.quantity,
                    shipped_at=u.at,
                    in_transit_window=u.in_window,
                )
                for u in e.shipments
            ],
            unmatched_receipts=[
                UnmatchedReceipt(reference=u.reference, quantity=u.quantity, received_at=u.at)
                for u in e.receipts
            ],
            sender_id=e.sender_id,
            receiver_id=e.receiver_id,
        )

    @strawberry.field
    async def sender(self, info: Info) -> Organisation:
        return await _organisation(info, self.sender_id)  # type: ignore[return-value]

    @strawberry.field
    async def receiver(self, info: Info) -> Organisation:
        return await _organisation(info, self.receiver_id)  # type: ignore[return-value]


@strawberry.type(
    description="One share of gamma and the constituent whose reports explain it. The "
    "quantities of all parts add up to gamma (NEGATIVE_INVENTORY parts carry 0)."
)
class GammaPart:
    kind: GammaPartKind  # type: ignore[valid-type]
    quantity: int = strawberry.field(description="This part's signed share of gamma.")
    message: str
    references: list[str] = strawberry.field(
        description="Movement references (delivery notes, transfers) of the rows behind it."
    )
    at: datetime | None = strawberry.field(description="The oldest of those rows.")
    organisation_id: strawberry.Private[int]
    counterparty_id: strawberry.Private[int | None]

    @strawberry.field
    async def organisation(self, info: Info) -> Organisation:
        return await _organisation(info, self.organisation_id)  # type: ignore[return-value]

    @strawberry.field(description="The other end of the edge, when the part is about one.")
    async def counterparty(self, info: Info) -> Organisation | None:
        return await _organisation(info, self.counterparty_id)


@strawberry.type(
    description="Supervision of one drug batch (approval number + batch number), computed "
    "now from the running totals: gamma = totalInput - totalOutput - systemInventory."
)
class SupervisionCheck:
    approval_number: str
    batch_number: str
    total_input: int = strawberry.field(description="PRODUCE reported by manufacturers.")
    total_output: int = strawberry.field(description="DISPENSE + DISPOSE - RETURN.")
    system_inventory: int = strawberry.field(description="The sum of every inventory.")
    gamma: int
    status: SupervisionStatus  # type: ignore[valid-type]
    in_transit: int = strawberry.field(
        description="Shipments not yet received that are still inside the transit window."
    )
    unexplained: int = strawberry.field(
        description="Gamma less the part shipments inside their window explain."
    )
    transit_window_hours: float
    summary: str
    checked_at: datetime
    scoped: bool = strawberry.field(
        description="True when you see only your organisation's side: its inventory, the "
        "edges it is an end of, the parts that name it (the batch-wide figures stay)."
    )
    constituents: list[ConstituentInventory]
    edges: list[SupervisionEdge]
    explanation: list[GammaPart]
    product_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]

    @classmethod
    def from_check(cls, check: BatchCheck) -> Self:
        a = check.analysis
        return cls(
            approval_number=check.approval_number,
            batch_number=check.batch_number,
            total_input=a.total_input,
            total_output=a.total_output,
            system_inventory=a.system_inventory,
            gamma=a.gamma,
            status=a.status,
            in_transit=a.in_transit,
            unexplained=a.unexplained,
            transit_window_hours=check.transit_window.total_seconds() / 3600,
            summary=check.summary,
            checked_at=check.checked_at,
            scoped=check.scoped_to is not None,
            constituents=[ConstituentInventory.from_constituent(c) for c in a.constituents],
            edges=[SupervisionEdge.from_report(e) for e in a.edges],
            explanation=[
                GammaPart(
                    kind=p.kind,
                    quantity=p.quantity,
                    message=message,
                    references=list(p.references),
                    at=p.at,
                    organisation_id=p.organisation_id,
                    counterparty_id=p.counterparty_id,
                )
                for p, message in zip(a.parts, check.explanation, strict=True)
            ],
            product_id=check.product_id,
            lot_id=check.lot_id,
        )

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)

    @strawberry.field
    async def lot(self, info: Info) -> Lot | None:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)


def _products_by_approval(info: Info) -> DataLoader[str, catalog_models.Product | None]:
    db = info.context.db

    async def load(approvals: list[str]) -> list[catalog_models.Product | None]:
        async with db.read() as session:
            rows = (
                await session.execute(
                    select(catalog_models.Product).where(
                        catalog_models.Product.approval_number.in_(approvals)
                    )
                )
            ).scalars()
            found = {p.approval_number: p for p in rows}
        return [found.get(a) for a in approvals]

    return info.context.loader(("products_by_approval",), lambda: DataLoader(load_fn=load))


@strawberry.type(description="A batch's stored status, as the ledger and the sweeps left it.")
class SupervisionReportItem:
    approval_number: str
    batch_number: str
    status: SupervisionStatus  # type: ignore[valid-type]
    gamma: int
    since: datetime = strawberry.field(
        description="When the batch reached this status and gamma (the last change of either)."
    )

    @classmethod
    def from_model(cls, row: models.BatchStatus) -> Self:
        return cls(
            approval_number=row.approval_number,
            batch_number=row.batch_number,
            status=gamma.SupervisionStatus(row.status),
            gamma=row.gamma,
            since=row.checked_at,
        )

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        product = await _products_by_approval(info).load(self.approval_number)
        return Product.from_model(product) if product is not None else None

    @strawberry.field(description="The full check of this batch, computed now.")
    async def check(self, info: Info) -> SupervisionCheck:
        result = await info.context.services.supervision_checks.check(
            info.context.require_principal(), self.approval_number, self.batch_number
        )
        return SupervisionCheck.from_check(result)


@strawberry.type
class SupervisionReportEdge:
    cursor: str
    node: SupervisionReportItem


@strawberry.type
class SupervisionReportConnection:
    edges: list[SupervisionReportEdge]
    page_info: relay.PageInfo


@strawberry.type
class Query:
    @strawberry.field(description="Recalls, newest first; optionally only those of one lot.")
    async def recalls(
        self, info: Info, first: int, after: str | None = None, lot: relay.GlobalID | None = None
    ) -> RecallConnection:
        info.context.require_principal().require(Permission.STOCK_READ)
        R = models.Recall
        stmt = select(R)
        if lot is not None:
            lot_id = decode_id(lot, Lot, "lot")
            stmt = stmt.where(
                R.id.in_(
                    select(models.RecallLot.recall_id).where(models.RecallLot.lot_id == lot_id)
                )
            )
        page = await paginate(
            info,
            stmt,
            keys=[R.id],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.id],
        )
        return connection(RecallConnection, page, Recall.from_model)

    @strawberry.field(
        description="Where a lot came from and everywhere it went. Every hop and holder is "
        "shown; patient references only at locations in your scope (all for ADMIN, AUDITOR, "
        "REGULATOR).",
        metadata=weigh(200),
    )
    async def trace_lot(self, info: Info, lot: relay.GlobalID) -> LotTrace:
        principal = info.context.require_principal()
        result = await info.context.services.supervision.trace(
            principal, decode_id(lot, Lot, "lot")
        )
        return LotTrace.from_result(result)

    @strawberry.field(
        description="traceLot as CSV: sections lot, hop, location, organisation, patient; each "
        "starts with a header row whose first cell is 'section'.",
        metadata=weigh(200),
    )
    async def trace_lot_csv(self, info: Info, lot: relay.GlobalID) -> str:
        principal = info.context.require_principal()
        return await info.context.services.supervision.trace_csv(
            principal, decode_id(lot, Lot, "lot")
        )

    @strawberry.field(
        description="Supervision of one drug batch: gamma, status, every constituent's "
        "inventory, the edge reconciliation and the explanation of a non-zero gamma. ADMIN, "
        "AUDITOR and REGULATOR see everything; other roles only batches their organisation "
        "handled (FORBIDDEN otherwise), and of those only their own side.",
        metadata=weigh(100),
    )
    async def supervision(
        self, info: Info, approval_number: str, batch_number: str
    ) -> SupervisionCheck:
        principal = info.context.require_principal()
        result = await info.context.services.supervision_checks.check(
            principal, approval_number, batch_number
        )
        return SupervisionCheck.from_check(result)

    @strawberry.field(
        description="Batches by stored status (every status but NORMAL unless `status` is "
        "given), in approval/batch number order; optionally only batches an organisation "
        "handled. Scoped roles see only their own organisation's batches.",
        metadata=weigh(50),
    )
    async def supervision_report(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        status: SupervisionStatus | None = None,  # type: ignore[valid-type]
        organisation: relay.GlobalID | None = None,
    ) -> SupervisionReportConnection:
        principal = info.context.require_principal()
        stmt = await info.context.services.supervision_checks.report_query(
            principal,
            status=status,
            organisation_id=None
            if organisation is None
            else decode_id(organisation, Organisation, "organisation"),
        )
        S = models.BatchStatus
        page = await paginate(
            info,
            stmt,
            keys=[S.approval_number, S.batch_number],
            first=first,
            after=after,
            key_of=lambda r: [r.approval_number, r.batch_number],
        )
        return SupervisionReportConnection(
            edges=[
                SupervisionReportEdge(cursor=c, node=SupervisionReportItem.from_model(r))
                for r, c in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
        )


# --- mutations -------------------------------------------------------------------------------


@strawberry.type
class RecallPayload:
    recall: Recall | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _recall_payload(result: RecallResult | None, errors: list[MutationError]) -> RecallPayload:
    return RecallPayload(recall=result and Recall.from_model(result.recall), errors=errors)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Recall lots (or product + batchNumber) everywhere at once: each becomes "
        "RECALLED and can no longer be shipped, transferred or dispensed (disposal stays "
        "possible); every location holding stock gets a RECALL alert. The reference defaults "
        "to RC-YYYY-NNNNN."
    )
    async def recall_lots(
        self,
        info: Info,
        reason: str,
        lots: list[relay.GlobalID] | None = None,
        product: relay.GlobalID | None = None,
        batch_number: str | None = None,
        reference: str | None = None,
    ) -> RecallPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.supervision.recall_lots(
                p,
                reason=reason,
                lot_ids=None if lots is None else [decode_id(x, Lot, "lots") for x in lots],
                product_id=None if product is None else decode_id(product, Product, "product"),
                batch_number=batch_number,
                reference=reference,
            ),
        )
        return _recall_payload(result, errors)
