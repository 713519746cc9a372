"""GraphQL types of recalls, lot traces and batch supervision (gamma)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader

from server.alerts import models as alert_models
from server.alerts.api import Alert
from server.catalog import models as catalog_models
from server.catalog.api import Lot, LotStatus, Product
from server.core.graphql import CountedConnection, FromModel, Info, load_nodes, relation
from server.core.graphql_enums import described_enum
from server.core.security import Permission
from server.network import models as network_models
from server.network.api import Location, Organisation, User
from server.supervision import gamma, models, trace
from server.supervision.checks import BatchCheck
from server.supervision.service import LotTrace as LotTraceResult
from server.supervision.service import visible_recall_alerts

TraceHopKind = described_enum(
    trace.HopKind,
    "What kind of step a hop of a lot's way is.",
    {
        "PRODUCED": "A manufacturer reported producing the lot.",
        "SHIPMENT": "Sent from one organisation to another.",
        "TRANSFER": "Moved between locations of one organisation.",
    },
    name="TraceHopKind",
)
TraceHopStatus = described_enum(
    trace.HopStatus,
    "Whether both sides of a hop reported it.",
    {
        "COMPLETE": "Both sides reported it (or it is a production).",
        "NOT_RECEIVED": "Sent, with no matching receipt: in transit or lost.",
        "NOT_SHIPPED": "Received, and the sender reported no matching dispatch.",
    },
    name="TraceHopStatus",
)
SupervisionStatus = described_enum(
    gamma.SupervisionStatus,
    "A batch's supervision verdict, from gamma = input - output - inventory.",
    {
        "NORMAL": "Gamma is 0 and no constituent's inventory is negative.",
        "NEGATIVE_INVENTORY": "Gamma is 0 but a constituent issued more than it reported "
        "receiving.",
        "ILLEGAL_INFLOW": "Gamma < 0: packs entered that no manufacturer reported producing.",
        "OUTFLOW_LEAK": "Gamma > 0 beyond what shipments in transit explain: packs left the "
        "monitored network unreported.",
        "IN_TRANSIT": "Gamma > 0, all of it explained by shipments still inside the transit "
        "window.",
    },
    name="SupervisionStatus",
)
GammaPartKind = described_enum(
    gamma.PartKind,
    "What explains one share of gamma (its sign in brackets).",
    {
        "IN_TRANSIT": "(+) Shipped, not yet received, inside the transit window.",
        "NOT_RECEIVED": "(+) Shipped and never received; the transit window has passed.",
        "NOT_SHIPPED": "(-) Received, but the sender never reported shipping it.",
        "LEFT_NETWORK": "(+) Shipped without naming a receiving organisation.",
        "UNKNOWN_SOURCE": "(-) Received without naming a sending organisation.",
        "NOT_A_MANUFACTURER": "(-) Produced by an organisation that is not a manufacturer.",
        "ADJUSTED_LOSS": "(+) Net loss in adjustments and counts.",
        "ADJUSTED_GAIN": "(-) Net gain in adjustments and counts.",
        "NEGATIVE_INVENTORY": "(0) A constituent's inventory below zero; no share of gamma.",
    },
    name="GammaPartKind",
)


# --- trace -----------------------------------------------------------------------------------


@strawberry.type(
    description="One step of a lot's way: produced, shipped between organisations, "
    "or transferred between locations; both reported sides paired."
)
class TraceHop:
    kind: TraceHopKind = strawberry.field(description="Production, shipment or transfer.")  # type: ignore[valid-type]
    status: TraceHopStatus = strawberry.field(  # type: ignore[valid-type]
        description="COMPLETE: both sides reported; NOT_RECEIVED: sent, no matching receipt "
        "(in transit or lost); NOT_SHIPPED: received, the sender reported no matching dispatch."
    )
    quantity: int = strawberry.field(description="Packs.")
    shipped_at: datetime | None = strawberry.field(
        description="When the sender reported it; null when it did not (or for PRODUCED)."
    )
    received_at: datetime | None = strawberry.field(
        description="When the receiver reported it; for PRODUCED hops, when it was produced."
    )
    reference: str | None = strawberry.field(
        description="The movements' reference (delivery note, transfer number), if any."
    )
    from_organisation_id: strawberry.Private[int | None]
    from_location_id: strawberry.Private[int | None]
    to_organisation_id: strawberry.Private[int | None]
    to_location_id: strawberry.Private[int | None]

    from_organisation: Organisation | None = relation(
        network_models.Organisation,
        "from_organisation_id",
        description="The sender; null for PRODUCED hops and receipts naming no sender.",
    )
    from_location: Location | None = relation(
        network_models.Location,
        "from_location_id",
        description="The sender's location; null when the sender did not report the hop.",
    )
    to_organisation: Organisation | None = relation(
        network_models.Organisation,
        "to_organisation_id",
        description="The receiver; null when the shipment named none.",
    )
    to_location: Location | None = relation(
        network_models.Location,
        "to_location_id",
        description="The receiver's location; null when the receiver did not report the hop.",
    )

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


@strawberry.type(
    description="What a location (or, with location null, a whole organisation) did with the "
    "lot, in packs. Organisation totals leave out transfers between its own locations."
)
class TraceHolding(FromModel):
    produced: int = strawberry.field(description="PRODUCE.")
    received: int = strawberry.field(description="RECEIVE and TRANSFER_IN.")
    sent: int = strawberry.field(description="SHIP and TRANSFER_OUT.")
    dispensed: int = strawberry.field(description="DISPENSE.")
    disposed: int = strawberry.field(description="DISPOSE.")
    returned: int = strawberry.field(description="RETURN.")
    adjusted: int = strawberry.field(description="ADJUST and COUNT, signed.")
    balance: int = strawberry.field(description="What is held now: the sum of all movements.")
    movements: int = strawberry.field(description="How many movements these figures add up.")
    first_at: datetime | None = strawberry.field(description="The first of those movements.")
    last_at: datetime | None = strawberry.field(description="The last of those movements.")
    organisation_id: strawberry.Private[int]
    location_id: strawberry.Private[int | None]

    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="Whose figures these are."
    )
    location: Location | None = relation(
        network_models.Location,
        "location_id",
        description="The location; null for an organisation's totals.",
    )


@strawberry.type(description="A DISPENSE of the lot to a patient.")
class TracePatientDispense(FromModel):
    __columns__ = {"dispensed_at": "occurred_at"}

    patient_reference: str | None = strawberry.field(
        description="Null when none was recorded, or when redacted."
    )
    redacted: bool = strawberry.field(
        description="True when a reference exists but this dispense is outside your scope."
    )
    quantity: int = strawberry.field(description="Packs dispensed.")
    dispensed_at: datetime = strawberry.field(description="When it was dispensed.")
    organisation_id: strawberry.Private[int]
    location_id: strawberry.Private[int]

    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="Who dispensed it."
    )
    location: Location = relation(
        network_models.Location, "location_id", description="Where it was dispensed."
    )


@strawberry.type(description="Everywhere the lot went, and everyone it reached.")
class TraceForward:
    locations: list[TraceHolding] = strawberry.field(
        description="Every location that handled the lot."
    )
    organisations: list[TraceHolding] = strawberry.field(
        description="Every organisation that handled the lot (location is null)."
    )
    patients: list[TracePatientDispense] = strawberry.field(
        description="Every dispense to a patient."
    )
    redacted_patient_references: int = strawberry.field(
        description="How many patient references are hidden from you (outside your scope)."
    )
    on_hand: int = strawberry.field(description="Packs held across all locations now.")


@strawberry.type(description="Where a lot came from (backward) and where it went (forward).")
class LotTrace:
    lot: Lot = strawberry.field(description="The lot traced.")
    product: Product = strawberry.field(description="The lot's product.")
    backward: list[TraceHop] = strawberry.field(
        description="Every hop, oldest first: produced, shipped, received, transferred."
    )
    forward: TraceForward = strawberry.field(description="Where the lot is and went.")

    @classmethod
    def from_result(cls, result: LotTraceResult) -> Self:
        t = result.trace
        return cls(
            lot=Lot.from_model(result.lot),
            product=Product.from_model(result.product),
            backward=[TraceHop.from_hop(h) for h in t.hops],
            forward=TraceForward(
                locations=[TraceHolding.from_model(h) for h in t.locations],
                organisations=[TraceHolding.from_model(h) for h in t.organisations],
                patients=[TracePatientDispense.from_model(p) for p in t.patients],
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
    alerts = await _recall_alerts_loader(info).load(recall_id)
    return visible_recall_alerts(info.context.require_principal(), alerts)


@strawberry.type(description="A lot taken out of use by a recall, and its status before.")
class RecalledLot:
    previous_status: LotStatus = strawberry.field(  # type: ignore[valid-type]
        description="The lot's status before the recall made it RECALLED."
    )
    lot_id: strawberry.Private[int]

    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The recalled lot.")


@strawberry.type(description="A location that held a recalled lot when the recall was made.")
class RecallHolder:
    quantity: int = strawberry.field(description="Packs held when the recall was made.")
    alert: Alert = strawberry.field(description="The RECALL alert raised at the location.")
    location_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]

    location: Location | None = relation(
        network_models.Location, "location_id", description="The holding location."
    )
    lot: Lot | None = relation(catalog_models.Lot, "lot_id", description="The lot it held.")

    @classmethod
    def from_alert(cls, alert: alert_models.Alert) -> Self:
        return cls(
            quantity=int(alert.details.get("quantity", 0)),
            alert=Alert.from_model(alert),
            location_id=alert.location_id,
            lot_id=alert.lot_id,
        )


@strawberry.type(description="Lots recalled together, with the holders it alerted.")
class Recall(FromModel, relay.Node):
    __columns__ = {"initiated_by_id": "initiated_by"}

    id: relay.NodeID[int]
    reference: str = strawberry.field(description="The recall's number, e.g. RC-2026-00001.")
    reason: str = strawberry.field(description="Why the lots were recalled.")
    initiated_at: datetime = strawberry.field(description="When the recall was made.")
    initiated_by_id: strawberry.Private[int]

    initiated_by: User | None = relation(
        network_models.User, "initiated_by_id", description="Who recalled."
    )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info, models.Recall, node_ids, cls.from_model, permission=Permission.STOCK_READ
        )

    @strawberry.field(description="The lots this recall took out of use, in lot order.")
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
        return [RecallHolder.from_alert(a) for a in await _visible_alerts(info, self.id)]


@strawberry.type(description="A page of recalls.")
class RecallConnection(CountedConnection[Recall]):
    pass


# --- supervision (gamma) -----------------------------------------------------------------------


@strawberry.type(
    description="One constituent's reports of the batch (its own side only), in packs, and "
    "the inventory they leave it with: inflows (produced, received, transferredIn, returned, "
    "adjustedIn) minus outflows (shipped, transferredOut, dispensed, disposed, adjustedOut)."
)
class ConstituentInventory(FromModel):
    inventory: int = strawberry.field(description="Inflows minus outflows; may be negative.")
    produced: int = strawberry.field(description="PRODUCE.")
    received: int = strawberry.field(description="RECEIVE from other organisations.")
    transferred_in: int = strawberry.field(description="TRANSFER_IN.")
    returned: int = strawberry.field(description="RETURN by patients.")
    adjusted_in: int = strawberry.field(description="Positive ADJUST and COUNT.")
    shipped: int = strawberry.field(description="SHIP to other organisations.")
    transferred_out: int = strawberry.field(description="TRANSFER_OUT.")
    dispensed: int = strawberry.field(description="DISPENSE.")
    disposed: int = strawberry.field(description="DISPOSE.")
    adjusted_out: int = strawberry.field(description="Negative ADJUST and COUNT, as packs.")
    organisation_id: strawberry.Private[int]

    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="The constituent."
    )


@strawberry.type(description="A shipment row (or the part of it) its receiver never matched.")
class UnmatchedShipment:
    reference: str | None = strawberry.field(description="The shipment's reference, if any.")
    quantity: int = strawberry.field(description="Packs not matched by a receipt.")
    shipped_at: datetime | None = strawberry.field(description="When it was shipped.")
    in_transit_window: bool = strawberry.field(
        description="True while the shipment is younger than the transit window (in transit); "
        "false once it is overdue."
    )


@strawberry.type(description="A receipt row (or the part of it) no reported shipment matches.")
class UnmatchedReceipt:
    reference: str | None = strawberry.field(description="The receipt's reference, if any.")
    quantity: int = strawberry.field(description="Packs not matched by a shipment.")
    received_at: datetime | None = strawberry.field(description="When it was received.")


@strawberry.type(
    description="What a sender reported shipping to a receiver and what the receiver reported "
    "receiving from it (SHIP/TRANSFER_OUT vs RECEIVE/TRANSFER_IN), in packs. Receipts are "
    "matched to shipments first-in-first-out by time, so the unmatched rows listed are the "
    "newest."
)
class SupervisionEdge:
    shipped: int = strawberry.field(description="What the sender reported sending.")
    received: int = strawberry.field(description="What the receiver reported receiving.")
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
    last_shipped_at: datetime | None = strawberry.field(
        description="The sender's latest shipment on this edge."
    )
    unmatched_shipments: list[UnmatchedShipment] = strawberry.field(
        description="Shipments (or parts) no receipt matches."
    )
    unmatched_receipts: list[UnmatchedReceipt] = strawberry.field(
        description="Receipts (or parts) no shipment matches."
    )
    sender_id: strawberry.Private[int]
    receiver_id: strawberry.Private[int]

    sender: Organisation = relation(
        network_models.Organisation, "sender_id", description="The sending organisation."
    )
    receiver: Organisation = relation(
        network_models.Organisation, "receiver_id", description="The receiving organisation."
    )

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


@strawberry.type(
    description="One share of gamma and the constituent whose reports explain it. The "
    "quantities of all parts add up to gamma (NEGATIVE_INVENTORY parts carry 0)."
)
class GammaPart:
    kind: GammaPartKind = strawberry.field(description="What explains this share.")  # type: ignore[valid-type]
    quantity: int = strawberry.field(description="This part's signed share of gamma, in packs.")
    message: str = strawberry.field(description="The explanation in words.")
    references: list[str] = strawberry.field(
        description="Movement references (delivery notes, transfers) of the rows behind it."
    )
    at: datetime | None = strawberry.field(description="The oldest of those rows.")
    organisation_id: strawberry.Private[int]
    counterparty_id: strawberry.Private[int | None]

    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="The constituent."
    )
    counterparty: Organisation | None = relation(
        network_models.Organisation,
        "counterparty_id",
        description="The other end of the edge, when the part is about one.",
    )


@strawberry.type(
    description="Supervision of one drug batch (approval number + batch number), computed "
    "now from the running totals: gamma = totalInput - totalOutput - systemInventory (packs)."
)
class SupervisionCheck:
    approval_number: str = strawberry.field(description="The product's approval number.")
    batch_number: str = strawberry.field(description="The batch number.")
    total_input: int = strawberry.field(description="PRODUCE reported by manufacturers.")
    total_output: int = strawberry.field(description="DISPENSE + DISPOSE - RETURN.")
    system_inventory: int = strawberry.field(description="The sum of every inventory.")
    gamma: int = strawberry.field(description="totalInput - totalOutput - systemInventory.")
    status: SupervisionStatus = strawberry.field(description="The verdict.")  # type: ignore[valid-type]
    in_transit: int = strawberry.field(
        description="Shipments not yet received that are still inside the transit window."
    )
    unexplained: int = strawberry.field(
        description="Gamma less the part shipments inside their window explain."
    )
    transit_window_hours: float = strawberry.field(
        description="How long a shipment counts as in transit (configured)."
    )
    summary: str = strawberry.field(description="The verdict in one sentence.")
    checked_at: datetime = strawberry.field(description="When this check was computed.")
    scoped: bool = strawberry.field(
        description="True when you see only your organisation's side: its inventory, the "
        "edges it is an end of, the parts that name it (the batch-wide figures stay)."
    )
    constituents: list[ConstituentInventory] = strawberry.field(
        description="Every organisation that reported the batch (yours only when scoped)."
    )
    edges: list[SupervisionEdge] = strawberry.field(
        description="Sender-receiver reconciliation, one per pair."
    )
    explanation: list[GammaPart] = strawberry.field(
        description="The parts gamma is made of; empty when gamma is 0 and nothing is negative."
    )
    product_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]

    product: Product | None = relation(
        catalog_models.Product,
        "product_id",
        description="The product of the approval number; null when none is known.",
    )
    lot: Lot | None = relation(
        catalog_models.Lot, "lot_id", description="The product's lot of the batch, if known."
    )

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
            constituents=[ConstituentInventory.from_model(c) for c in a.constituents],
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


def _products_by_approval(info: Info) -> DataLoader[str, catalog_models.Product | None]:
    service = info.context.services.supervision
    return info.context.loader(
        ("products_by_approval",), lambda: DataLoader(load_fn=service.products_by_approval)
    )


@strawberry.type(description="A batch's stored status, as the ledger and the sweeps left it.")
class SupervisionReportItem:
    approval_number: str = strawberry.field(description="The product's approval number.")
    batch_number: str = strawberry.field(description="The batch number.")
    status: SupervisionStatus = strawberry.field(description="The stored verdict.")  # type: ignore[valid-type]
    gamma: int = strawberry.field(description="The stored gamma, in packs.")
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

    @strawberry.field(description="The product of the approval number; null when none is known.")
    async def product(self, info: Info) -> Product | None:
        product = await _products_by_approval(info).load(self.approval_number)
        return Product.from_model(product) if product is not None else None

    @strawberry.field(description="The full check of this batch, computed now.")
    async def check(self, info: Info) -> SupervisionCheck:
        result = await info.context.services.supervision_checks.check(
            info.context.require_principal(), self.approval_number, self.batch_number
        )
        return SupervisionCheck.from_check(result)


@strawberry.type(description="A batch in the supervision report, and its cursor.")
class SupervisionReportEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this batch.")
    node: SupervisionReportItem = strawberry.field(description="The batch.")


@strawberry.type(description="A page of the supervision report.")
class SupervisionReportConnection:
    edges: list[SupervisionReportEdge] = strawberry.field(description="The batches of the page.")
    page_info: relay.PageInfo = strawberry.field(description="Where the page sits in the list.")
    _total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many batches the report holds over all its pages.")
    async def total_count(self) -> int:
        return await self._total()
