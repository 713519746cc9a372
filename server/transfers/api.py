"""GraphQL for transfers between locations: request, approve or reject, pick, dispatch,
receive (with discrepancies) or cancel; stock in transit; live `transferUpdated`.

A transfer is visible to whoever sees its source or its destination. Resolvers only translate:
the service owns every check and every transaction.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Self

import strawberry
from sqlalchemy import or_, select
from strawberry import relay
from strawberry.dataloader import DataLoader

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.cost import weigh
from server.core.db import Database
from server.core.errors import Forbidden, NotFound
from server.core.events import SharedLookups
from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_related,
    paginate,
    parse_pks,
)
from server.core.security import Permission
from server.inventory.api import Movement
from server.network import models as network_models
from server.network.api import Location, username_of
from server.procurement import models as procurement_models
from server.transfers import models, rules, service
from server.transfers.service import (
    TRANSFER_TOPIC,
    InTransit,
    LineApproval,
    LineRequest,
    PickRequest,
    ReceiptLine,
    TransferResult,
    TransferStep,
    sees_transfer,
)

TransferStatus = strawberry.enum(models.TransferStatus)
TransferAction = strawberry.enum(rules.TransferAction)


@strawberry.enum(description="How what arrived differs from what was dispatched.")
class TransferDiscrepancyKind(StrEnum):
    SHORT = "SHORT"
    OVER = "OVER"
    DAMAGED = "DAMAGED"
    WRONG_LOT = "WRONG_LOT"


# --- loaders and access --------------------------------------------------------------------------


def _batched(info: Info, name: str, load: Callable[[list[int]], Awaitable[list[Any]]]) -> Any:
    """One DataLoader per request and service read, so a page of transfers batches its reads."""
    return info.context.loader(("transfers", name), lambda: DataLoader(load_fn=load, cache=True))


async def _transfer_rows(info: Info, transfer_ids: Iterable[int]) -> list[models.Transfer | None]:
    """Transfers by id, refused when any lies outside the principal's scope."""
    principal = info.context.require_principal()
    principal.require(Permission.STOCK_READ)
    rows = await info.context.by_id(models.Transfer).load_many(list(transfer_ids))
    for row in rows:
        if row is not None and not sees_transfer(principal, row.source_id, row.destination_id):
            raise Forbidden("that transfer is outside your scope: neither end is yours")
    return rows


# --- types ---------------------------------------------------------------------------------------


@strawberry.type(description="One product asked for, and how much of it was approved and sent.")
class TransferLine(relay.Node):
    id: relay.NodeID[int]
    requested_quantity: int
    approved_quantity: int | None = strawberry.field(
        description="Null until decided; lower than requested for a partial fulfilment."
    )
    transfer_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, line: models.TransferLine) -> Self:
        return cls(
            id=line.id,
            requested_quantity=line.requested_quantity,
            approved_quantity=line.approved_quantity,
            transfer_id=line.transfer_id,
            product_id=line.product_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await info.context.by_id(models.TransferLine).load_many(parse_pks(node_ids))
        await _transfer_rows(info, {r.transfer_id for r in rows if r is not None})
        return [cls.from_model(r) if r is not None else None for r in rows]

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)

    @strawberry.field
    async def transfer(self, info: Info) -> Transfer:
        return await load_related(info, models.Transfer, self.transfer_id, Transfer.from_model)

    @strawberry.field(description="The lots picked for this line (empty before picking).")
    async def picks(self, info: Info) -> list[TransferPick]:
        rows = await _picks_loader(info).load(self.id)
        return [TransferPick.from_model(r) for r in rows]

    @strawberry.field(description="Packs picked for this line, over all its lots.")
    async def picked_quantity(self, info: Info) -> int:
        return sum(p.quantity for p in await _picks_loader(info).load(self.id))

    @strawberry.field(description="Packs taken into stock at the destination (null before).")
    async def received_quantity(self, info: Info) -> int | None:
        picks = await _picks_loader(info).load(self.id)
        received = [p.received_quantity for p in picks if p.received_quantity is not None]
        return sum(received) if received else None


def _picks_loader(info: Info) -> DataLoader[int, list[models.TransferPick]]:
    return info.context.grouped(
        "transfer_picks", models.TransferPick.line_id, models.TransferPick.id
    )


def _lines_loader(info: Info) -> DataLoader[int, list[models.TransferLine]]:
    return info.context.grouped(
        "transfer_lines", models.TransferLine.transfer_id, models.TransferLine.id
    )


@strawberry.type(description="Which lot, how many: what leaves the source on dispatch.")
class TransferPick(relay.Node):
    id: relay.NodeID[int]
    quantity: int
    received_quantity: int | None = strawberry.field(
        description="Packs of it taken into stock at the destination (null before receipt)."
    )
    line_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, pick: models.TransferPick) -> Self:
        return cls(
            id=pick.id,
            quantity=pick.quantity,
            received_quantity=pick.received_quantity,
            line_id=pick.line_id,
            lot_id=pick.lot_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await info.context.by_id(models.TransferPick).load_many(parse_pks(node_ids))
        lines = await info.context.by_id(models.TransferLine).load_many(
            [r.line_id for r in rows if r is not None]
        )
        await _transfer_rows(info, {x.transfer_id for x in lines if x is not None})
        return [cls.from_model(r) if r is not None else None for r in rows]

    @strawberry.field
    async def lot(self, info: Info) -> Lot:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def line(self, info: Info) -> TransferLine:
        return await load_related(info, models.TransferLine, self.line_id, TransferLine.from_model)


@strawberry.type(description="What first-expired-first-out would pick now (live, not saved).")
class SuggestedPick:
    quantity: int
    available_at_source: int
    line_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    def from_view(cls, s: service.SuggestedPick) -> Self:
        return cls(
            quantity=s.quantity,
            available_at_source=s.available,
            line_id=s.line_id,
            lot_id=s.lot_id,
            product_id=s.product_id,
        )

    @strawberry.field
    async def line(self, info: Info) -> TransferLine:
        return await load_related(info, models.TransferLine, self.line_id, TransferLine.from_model)

    @strawberry.field
    async def lot(self, info: Info) -> Lot:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type(description="Packs of one lot dispatched and not yet received: on the road.")
class StockInTransit:
    quantity: int
    since: datetime = strawberry.field(description="When the transfer was dispatched.")
    transfer_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    product_id: strawberry.Private[int]
    source_id: strawberry.Private[int]
    destination_id: strawberry.Private[int]

    @classmethod
    def from_view(cls, item: InTransit) -> Self:
        return cls(
            quantity=item.quantity,
            since=item.since,
            transfer_id=item.transfer_id,
            lot_id=item.lot_id,
            product_id=item.product_id,
            source_id=item.source_id,
            destination_id=item.destination_id,
        )

    @strawberry.field
    async def transfer(self, info: Info) -> Transfer:
        return await load_related(info, models.Transfer, self.transfer_id, Transfer.from_model)

    @strawberry.field
    async def lot(self, info: Info) -> Lot:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)

    @strawberry.field(name="from", description="The source it left.")
    async def from_(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.source_id, Location.from_model
        )

    @strawberry.field(description="The destination it is heading to.")
    async def to(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.destination_id, Location.from_model
        )


@strawberry.type(description="A difference found on receipt; it stays on record, never hidden.")
class TransferDiscrepancy(relay.Node):
    id: relay.NodeID[int]
    kind: TransferDiscrepancyKind
    quantity: int
    note: str | None
    recorded_at: datetime
    dispatched_quantity: int | None
    received_quantity: int | None
    damaged_quantity: int | None
    transfer_id: strawberry.Private[int]
    lot_id: strawberry.Private[int | None]
    pick_id: strawberry.Private[int | None]
    recorded_by_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, d: procurement_models.Discrepancy) -> Self:
        details = d.details or {}
        return cls(
            id=d.id,
            kind=TransferDiscrepancyKind(d.kind.value),
            quantity=d.quantity,
            note=d.note,
            recorded_at=d.recorded_at,
            dispatched_quantity=details.get("dispatched"),
            received_quantity=details.get("received"),
            damaged_quantity=details.get("damaged"),
            transfer_id=d.transfer_id or 0,
            lot_id=d.lot_id,
            pick_id=details.get("pick_id"),
            recorded_by_id=d.recorded_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await info.context.by_id(procurement_models.Discrepancy).load_many(
            parse_pks(node_ids)
        )
        # Only transfer discrepancies are this type; shipment ones belong to procurement.
        rows = [r if r is not None and r.transfer_id is not None else None for r in rows]
        await _transfer_rows(info, {r.transfer_id for r in rows if r is not None})
        return [cls.from_model(r) if r is not None else None for r in rows]

    @strawberry.field
    async def lot(self, info: Info) -> Lot | None:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)

    @strawberry.field
    async def pick(self, info: Info) -> TransferPick | None:
        return await load_related(info, models.TransferPick, self.pick_id, TransferPick.from_model)

    @strawberry.field(description="Username of who recorded it.")
    async def recorded_by(self, info: Info) -> str | None:
        return await username_of(info, self.recorded_by_id)


@strawberry.type(description="One step of a transfer's audit trail.")
class TransferHistoryStep:
    action: TransferAction  # type: ignore[valid-type]
    status: TransferStatus | None  # type: ignore[valid-type]
    actor: str
    role: str
    at: datetime
    reason: str | None

    @classmethod
    def from_view(cls, step: TransferStep) -> Self:
        return cls(
            action=rules.TransferAction(step.action),
            status=models.TransferStatus(step.status) if step.status else None,
            actor=step.actor,
            role=step.role,
            at=step.at,
            reason=step.reason,
        )


@strawberry.type(
    description="Products moving from a source to a destination location, possibly across "
    "organisations: REQUESTED → APPROVED → PICKED → DISPATCHED → RECEIVED, or REJECTED / "
    "CANCELLED (before dispatch)."
)
class Transfer(relay.Node):
    id: relay.NodeID[int]
    number: str
    status: TransferStatus  # type: ignore[valid-type]
    needed_by: date | None
    note: str | None
    requested_at: datetime
    decided_at: datetime | None
    rejection_reason: str | None
    dispatched_at: datetime | None
    received_at: datetime | None
    source_id: strawberry.Private[int]
    destination_id: strawberry.Private[int]
    requested_by_id: strawberry.Private[int]
    decided_by_id: strawberry.Private[int | None]
    dispatched_by_id: strawberry.Private[int | None]
    received_by_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, t: models.Transfer) -> Self:
        return cls(
            id=t.id,
            number=t.number,
            status=t.status,
            needed_by=t.needed_by,
            note=t.note,
            requested_at=t.requested_at,
            decided_at=t.decided_at,
            rejection_reason=t.rejection_reason,
            dispatched_at=t.dispatched_at,
            received_at=t.received_at,
            source_id=t.source_id,
            destination_id=t.destination_id,
            requested_by_id=t.requested_by,
            decided_by_id=t.decided_by,
            dispatched_by_id=t.dispatched_by,
            received_by_id=t.received_by,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await _transfer_rows(info, parse_pks(node_ids))
        return [cls.from_model(r) if r is not None else None for r in rows]

    @strawberry.field(description="Where the stock comes from.")
    async def source(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.source_id, Location.from_model
        )

    @strawberry.field(description="Where the stock goes.")
    async def destination(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.destination_id, Location.from_model
        )

    @strawberry.field(description="True when source and destination belong to different orgs.")
    async def cross_organisation(self, info: Info) -> bool:
        source, destination = await info.context.by_id(network_models.Location).load_many(
            [self.source_id, self.destination_id]
        )
        return source.organisation_id != destination.organisation_id

    @strawberry.field(description="Username of who asked for it.")
    async def requested_by(self, info: Info) -> str | None:
        return await username_of(info, self.requested_by_id)

    @strawberry.field(description="Username of who approved or rejected it.")
    async def decided_by(self, info: Info) -> str | None:
        return await username_of(info, self.decided_by_id)

    @strawberry.field(description="Username of who dispatched it.")
    async def dispatched_by(self, info: Info) -> str | None:
        return await username_of(info, self.dispatched_by_id)

    @strawberry.field(description="Username of who received it.")
    async def received_by(self, info: Info) -> str | None:
        return await username_of(info, self.received_by_id)

    @strawberry.field(description="What may happen next according to the state machine.")
    def allowed_actions(self) -> list[TransferAction]:  # type: ignore[valid-type]
        return rules.allowed_actions(self.status)

    @strawberry.field
    async def lines(self, info: Info) -> list[TransferLine]:
        return [TransferLine.from_model(x) for x in await _lines_loader(info).load(self.id)]

    @strawberry.field(description="Every pick of every line, in picking order.")
    async def picks(self, info: Info) -> list[TransferPick]:
        lines = await _lines_loader(info).load(self.id)
        groups = await _picks_loader(info).load_many([x.id for x in lines])
        picks = sorted((p for group in groups for p in group), key=lambda p: p.id)
        return [TransferPick.from_model(p) for p in picks]

    @strawberry.field(
        description="First-expired-first-out picks from issuable lots at the source, computed "
        "live while APPROVED or PICKED (empty otherwise). pickTransfer without picks saves it."
    )
    async def suggested_picks(self, info: Info) -> list[SuggestedPick]:
        service = info.context.services.transfers
        items = await _batched(info, "suggestions", service.suggestions).load(self.id)
        return [SuggestedPick.from_view(s) for s in items]

    @strawberry.field(description="What of it is on the road now (DISPATCHED, not yet received).")
    async def in_transit(self, info: Info) -> list[StockInTransit]:
        service = info.context.services.transfers
        items = await _batched(info, "in_transit", service.in_transit_of).load(self.id)
        return [StockInTransit.from_view(x) for x in items]

    @strawberry.field(description="Differences recorded on receipt.")
    async def discrepancies(self, info: Info) -> list[TransferDiscrepancy]:
        D = procurement_models.Discrepancy
        rows = await info.context.grouped("transfer_discrepancies", D.transfer_id, D.id).load(
            self.id
        )
        return [TransferDiscrepancy.from_model(d) for d in rows]

    @strawberry.field(
        description="The TRANSFER_OUT and TRANSFER_IN movements it wrote, at the locations you "
        "see (each side is reported by its own organisation)."
    )
    async def movements(self, info: Info) -> list[Movement]:
        principal = info.context.require_principal()
        service = info.context.services.transfers
        rows = await _batched(info, "movements", service.movements).load(self.id)
        return [Movement.from_model(m) for m in rows if principal.sees_location(m.location_id)]

    @strawberry.field(description="Who did what and when, from the audit trail.")
    async def history(self, info: Info) -> list[TransferHistoryStep]:
        service = info.context.services.transfers
        steps = await _batched(info, "history", service.history).load(self.id)
        return [TransferHistoryStep.from_view(s) for s in steps]

    @strawberry.field(description="Why it was cancelled (null unless CANCELLED).")
    async def cancellation_reason(self, info: Info) -> str | None:
        if self.status is not models.TransferStatus.CANCELLED:
            return None
        service = info.context.services.transfers
        steps = await _batched(info, "history", service.history).load(self.id)
        return next((s.reason for s in reversed(steps) if s.action == "CANCEL"), None)


@strawberry.type
class TransferConnection(CountedConnection[Transfer]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="One transfer, if its source or destination is yours.")
    async def transfer(self, info: Info, id: relay.GlobalID) -> Transfer | None:
        node_id = str(decode_id(id, Transfer, "id"))
        return (await Transfer.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Transfers from or to locations you see, newest first.")
    async def transfers(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        status: TransferStatus | None = None,  # type: ignore[valid-type]
        location: relay.GlobalID | None = None,
    ) -> TransferConnection:
        principal = info.context.require_principal()
        T = models.Transfer
        location_id = decode_id(location, Location, "location") if location else None
        stmt = select(T)
        locations = principal.readable_locations(Permission.STOCK_READ, location_id)
        if locations is not None:
            stmt = stmt.where(or_(T.source_id.in_(locations), T.destination_id.in_(locations)))
        if status is not None:
            stmt = stmt.where(T.status == status)
        page = await paginate(
            info,
            stmt,
            keys=[T.id],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.id],
        )
        return connection(TransferConnection, page, Transfer.from_model)

    @strawberry.field(
        description="Stock on the road: picks of DISPATCHED transfers not yet received, from or "
        "to `location` (else anywhere you see), oldest dispatch first.",
        metadata=weigh(50),
    )
    async def stock_in_transit(
        self, info: Info, location: relay.GlobalID | None = None
    ) -> list[StockInTransit]:
        principal = info.context.require_principal()
        location_id = decode_id(location, Location, "location") if location else None
        locations = principal.readable_locations(Permission.STOCK_READ, location_id)
        items = await info.context.services.transfers.in_transit(location_ids=locations)
        return [StockInTransit.from_view(x) for x in items]


# --- mutations -------------------------------------------------------------------------------


@strawberry.input(description="A product and how many packs are asked for.")
class TransferLineInput:
    product: relay.GlobalID
    quantity: int


@strawberry.input(description="Approve a line for this many (lower than asked, or 0).")
class TransferApprovalInput:
    line: relay.GlobalID
    approved_quantity: int


@strawberry.input(description="Send this many packs of this lot for this line.")
class TransferPickInput:
    line: relay.GlobalID
    lot: relay.GlobalID
    quantity: int


@strawberry.input(
    description="What arrived of one pick: received packs go into stock; damaged ones do not "
    "and are recorded as a DAMAGED discrepancy. Picks not listed arrived in full."
)
class TransferReceiptInput:
    pick: relay.GlobalID
    received_quantity: int
    damaged_quantity: int = 0
    note: str | None = None


@strawberry.type
class TransferPayload:
    transfer: Transfer | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class TransferMovementsPayload:
    transfer: Transfer | None = None
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The ledger movements this step wrote."
    )
    discrepancies: list[TransferDiscrepancy] = strawberry.field(
        default_factory=list, description="Differences recorded (on receipt)."
    )
    replayed: bool = strawberry.field(
        default=False,
        description="True when the idempotency key had already been used: nothing was done again.",
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _payload(transfer: models.Transfer | None, errors: list[MutationError]) -> TransferPayload:
    return TransferPayload(transfer=transfer and Transfer.from_model(transfer), errors=errors)


def _movements_payload(
    result: TransferResult | None, errors: list[MutationError]
) -> TransferMovementsPayload:
    if result is None:
        return TransferMovementsPayload(errors=errors)
    return TransferMovementsPayload(
        transfer=Transfer.from_model(result.transfer),
        movements=[Movement.from_model(m) for m in result.movements],
        discrepancies=[TransferDiscrepancy.from_model(d) for d in result.discrepancies],
        replayed=result.replayed,
    )


def _transfer_id(transfer: relay.GlobalID) -> int:
    return decode_id(transfer, Transfer, "transfer")


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Ask for products to be sent from `source` to `destination` (a location "
        "you look after). Numbered TR-YYYY-NNNNN."
    )
    async def request_transfer(
        self,
        info: Info,
        source: relay.GlobalID,
        destination: relay.GlobalID,
        lines: list[TransferLineInput],
        needed_by: date | None = None,
        note: str | None = None,
    ) -> TransferPayload:
        transfer, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.request(
                p,
                source_id=decode_id(source, Location, "source"),
                destination_id=decode_id(destination, Location, "destination"),
                lines=[
                    LineRequest(decode_id(x.product, Product, f"lines.{i}.product"), x.quantity)
                    for i, x in enumerate(lines)
                ],
                needed_by=needed_by,
                note=note,
            ),
        )
        return _payload(transfer, errors)

    @strawberry.mutation(
        description="Agree to send (manager of the source). Lines not listed are approved as "
        "requested; a lower quantity is a partial fulfilment, 0 drops the line."
    )
    async def approve_transfer(
        self,
        info: Info,
        transfer: relay.GlobalID,
        lines: list[TransferApprovalInput] | None = None,
    ) -> TransferPayload:
        approved, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.approve(
                p,
                _transfer_id(transfer),
                None
                if lines is None
                else [
                    LineApproval(
                        decode_id(x.line, TransferLine, f"lines.{i}.line"), x.approved_quantity
                    )
                    for i, x in enumerate(lines)
                ],
            ),
        )
        return _payload(approved, errors)

    @strawberry.mutation(description="Refuse a request (manager of the source), saying why.")
    async def reject_transfer(
        self, info: Info, transfer: relay.GlobalID, reason: str
    ) -> TransferPayload:
        rejected, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.reject(p, _transfer_id(transfer), reason),
        )
        return _payload(rejected, errors)

    @strawberry.mutation(
        description="Choose the lots: without `picks`, the first-expired-first-out suggestion "
        "(see suggestedPicks); with them, edited picks (checked). Again before dispatch "
        "replaces the picks."
    )
    async def pick_transfer(
        self,
        info: Info,
        transfer: relay.GlobalID,
        picks: list[TransferPickInput] | None = None,
    ) -> TransferPayload:
        picked, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.pick(
                p,
                _transfer_id(transfer),
                None
                if picks is None
                else [
                    PickRequest(
                        decode_id(x.line, TransferLine, f"picks.{i}.line"),
                        decode_id(x.lot, Lot, f"picks.{i}.lot"),
                        x.quantity,
                    )
                    for i, x in enumerate(picks)
                ],
            ),
        )
        return _payload(picked, errors)

    @strawberry.mutation(
        description="Stock leaves the source: TRANSFER_OUT per pick, all or nothing."
    )
    async def dispatch_transfer(
        self, info: Info, transfer: relay.GlobalID, idempotency_key: str | None = None
    ) -> TransferMovementsPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.dispatch(
                p, _transfer_id(transfer), idempotency_key
            ),
        )
        return _movements_payload(result, errors)

    @strawberry.mutation(
        description="Take what arrived into stock at the destination (TRANSFER_IN); without "
        "`lines`, everything dispatched. Differences become SHORT/OVER/DAMAGED discrepancies."
    )
    async def receive_transfer(
        self,
        info: Info,
        transfer: relay.GlobalID,
        lines: list[TransferReceiptInput] | None = None,
        idempotency_key: str | None = None,
    ) -> TransferMovementsPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.receive(
                p,
                _transfer_id(transfer),
                None
                if lines is None
                else [
                    ReceiptLine(
                        decode_id(x.pick, TransferPick, f"lines.{i}.pick"),
                        x.received_quantity,
                        x.damaged_quantity,
                        x.note,
                    )
                    for i, x in enumerate(lines)
                ],
                idempotency_key,
            ),
        )
        return _movements_payload(result, errors)

    @strawberry.mutation(description="Withdraw a transfer before it is dispatched, saying why.")
    async def cancel_transfer(
        self, info: Info, transfer: relay.GlobalID, reason: str
    ) -> TransferPayload:
        cancelled, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.cancel(p, _transfer_id(transfer), reason),
        )
        return _payload(cancelled, errors)


# --- live updates ------------------------------------------------------------------------------


@strawberry.type(description="A transfer changed: what happened, and the transfer now.")
class TransferUpdate:
    action: TransferAction  # type: ignore[valid-type]
    status: TransferStatus = strawberry.field(  # type: ignore[valid-type]
        description="The status this step left it in."
    )
    transfer: Transfer


_transfer_lookups = SharedLookups()


async def _load_transfer(db: Database, payload: dict[str, Any]) -> models.Transfer | None:
    """The transfer behind one event, read once however many subscribers receive it."""

    async def load() -> models.Transfer | None:
        async with db.read() as session:
            return await session.get(models.Transfer, payload["transfer_id"])

    return await _transfer_lookups.get(payload["event_id"], load)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Transfers touching your scope as they change (after commit); narrow to "
        "one transfer or to transfers from or to some locations."
    )
    async def transfer_updated(
        self,
        info: Info,
        transfer: relay.GlobalID | None = None,
        locations: list[relay.GlobalID] | None = None,
    ) -> AsyncGenerator[TransferUpdate, None]:
        principal = info.context.require_principal()
        principal.require(Permission.STOCK_READ)
        wanted_transfer = _transfer_id(transfer) if transfer is not None else None
        if wanted_transfer is not None:
            (row,) = await _transfer_rows(info, [wanted_transfer])
            if row is None:
                raise NotFound("that transfer does not exist", field="transfer")
        wanted_locations = {decode_id(x, Location, "locations") for x in locations or []}
        for location_id in wanted_locations:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        async with info.context.services.bus.subscribe(TRANSFER_TOPIC) as subscription:
            while True:
                payload = (await subscription.get()).payload
                ends = {payload["source_id"], payload["destination_id"]}
                if wanted_transfer is not None and payload["transfer_id"] != wanted_transfer:
                    continue
                if wanted_locations and not ends & wanted_locations:
                    continue
                if not sees_transfer(principal, payload["source_id"], payload["destination_id"]):
                    continue
                info.context.loaders.clear()  # nested fields read fresh rows per event
                row = await _load_transfer(info.context.db, payload)
                if row is None:  # pragma: no cover - transfers are never deleted
                    continue
                yield TransferUpdate(
                    action=rules.TransferAction(payload["action"]),
                    status=models.TransferStatus(payload["status"]),
                    transfer=Transfer.from_model(row),
                )
