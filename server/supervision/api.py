"""GraphQL for recalls and lot traces: `recallLots`, `recalls`, `traceLot`, `traceLotCsv`.

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
from server.core.graphql import (
    Info,
    MutationError,
    attempt,
    decode_id,
    keyset_page,
    load_nodes,
    load_related,
    to_connection,
)
from server.core.security import Permission
from server.network import models as network_models
from server.network.api import Location, Organisation
from server.supervision import models, trace
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
class RecallConnection(relay.Connection[Recall]):
    pass


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
        page = await keyset_page(
            info.context.db,
            stmt,
            keys=[R.id],
            first=first,
            after=after,
            descending=True,
            max_page_size=info.context.services.settings.max_page_size,
            key_of=lambda r: [r.id],
        )
        return to_connection(RecallConnection, page, Recall.from_model)

    @strawberry.field(
        description="Where a lot came from and everywhere it went. Every hop and holder is "
        "shown; patient references only at locations in your scope (all for ADMIN, AUDITOR, "
        "REGULATOR)."
    )
    async def trace_lot(self, info: Info, lot: relay.GlobalID) -> LotTrace:
        principal = info.context.require_principal()
        result = await info.context.services.supervision.trace(
            principal, decode_id(lot, Lot, "lot")
        )
        return LotTrace.from_result(result)

    @strawberry.field(
        description="traceLot as CSV: sections lot, hop, location, organisation, patient; each "
        "starts with a header row whose first cell is 'section'."
    )
    async def trace_lot_csv(self, info: Info, lot: relay.GlobalID) -> str:
        principal = info.context.require_principal()
        return await info.context.services.supervision.trace_csv(
            principal, decode_id(lot, Lot, "lot")
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
