"""GraphQL types of transfers: the transfer, its lines and picks, what is in transit, the
discrepancies found on receipt, its history and the live update.

A transfer is visible to whoever sees its source or its destination (`check_visible`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime
from typing import Any, Self

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader

from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.graphql import CountedConnection, FromModel, Info, parse_pks, related, relation
from server.core.graphql_enums import described_enum
from server.inventory.api import Movement
from server.network import models as network_models
from server.network.api import Location, User
from server.shipments import models as shipment_models
from server.shipments.api import Discrepancy
from server.transfers import models, rules
from server.transfers.service import TransferStep, check_visible

TransferStatus = described_enum(
    models.TransferStatus,
    "Where a transfer is in its life: REQUESTED → APPROVED → PICKED → DISPATCHED → RECEIVED, "
    "or REJECTED / CANCELLED.",
    {
        "REQUESTED": "Asked for by the destination; waiting for the source's decision.",
        "APPROVED": "The source agreed to send (perhaps less than asked); lots not chosen yet.",
        "REJECTED": "The source refused, with a reason (final).",
        "PICKED": "Lots chosen; nothing has left the source yet.",
        "DISPATCHED": "Stock left the source (TRANSFER_OUT) and is in transit.",
        "RECEIVED": "Taken into stock at the destination (TRANSFER_IN), differences recorded "
        "(final).",
        "CANCELLED": "Withdrawn before dispatch, with a reason (final).",
    },
)
TransferAction = described_enum(
    rules.TransferAction,
    "A step of a transfer's state machine, and who may take it.",
    {
        "REQUEST": "Ask for products (someone who looks after the destination).",
        "APPROVE": "Agree to send, in full or in part (manager of the source).",
        "REJECT": "Refuse, saying why (manager of the source).",
        "PICK": "Choose the lots to send (manager of the source).",
        "DISPATCH": "Send the picked stock (manager of the source).",
        "RECEIVE": "Take what arrived into stock (someone who looks after the destination).",
        "CANCEL": "Withdraw before dispatch (the destination's side or the source's manager).",
    },
)


# --- loaders -------------------------------------------------------------------------------------


def batched(info: Info, name: str, load: Callable[[list[int]], Awaitable[list[Any]]]) -> Any:
    """One DataLoader per request and service read, so a page of transfers batches its reads."""
    return info.context.loader(("transfers", name), lambda: DataLoader(load_fn=load, cache=True))


async def transfer_rows(info: Info, transfer_ids: Iterable[int]) -> list[models.Transfer | None]:
    """Transfers by id, refused when any lies outside the principal's scope."""
    principal = info.context.require_principal()
    rows = await info.context.by_id(models.Transfer).load_many(list(transfer_ids))
    check_visible(principal, rows)
    return rows


def _picks_loader(info: Info) -> DataLoader[int, list[models.TransferPick]]:
    return info.context.grouped(
        "transfer_picks", models.TransferPick.line_id, models.TransferPick.id
    )


def _lines_loader(info: Info) -> DataLoader[int, list[models.TransferLine]]:
    return info.context.grouped(
        "transfer_lines", models.TransferLine.transfer_id, models.TransferLine.id
    )


# --- types ---------------------------------------------------------------------------------------


@strawberry.type(description="One product asked for, and how much of it was approved and sent.")
class TransferLine(FromModel, relay.Node):
    id: relay.NodeID[int]
    requested_quantity: int = strawberry.field(description="Packs asked for.")
    approved_quantity: int | None = strawberry.field(
        description="Packs agreed to send; null until decided, lower than requested for a "
        "partial fulfilment, 0 when the line was dropped."
    )
    transfer_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await info.context.by_id(models.TransferLine).load_many(parse_pks(node_ids))
        await transfer_rows(info, {r.transfer_id for r in rows if r is not None})
        return [cls.from_model(r) if r is not None else None for r in rows]

    product: Product = relation(
        catalog_models.Product, "product_id", description="The product asked for."
    )
    transfer: Transfer = relation(
        models.Transfer, "transfer_id", description="The transfer this line belongs to."
    )

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


@strawberry.type(description="Which lot, how many: what leaves the source on dispatch.")
class TransferPick(FromModel, relay.Node):
    id: relay.NodeID[int]
    quantity: int = strawberry.field(description="Packs of the lot to send (positive).")
    received_quantity: int | None = strawberry.field(
        description="Packs of it taken into stock at the destination (null before receipt)."
    )
    line_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await info.context.by_id(models.TransferPick).load_many(parse_pks(node_ids))
        lines = await info.context.by_id(models.TransferLine).load_many(
            [r.line_id for r in rows if r is not None]
        )
        await transfer_rows(info, {x.transfer_id for x in lines if x is not None})
        return [cls.from_model(r) if r is not None else None for r in rows]

    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot picked.")
    line: TransferLine = relation(
        models.TransferLine, "line_id", description="The line this pick fills."
    )


@strawberry.type(description="What first-expired-first-out would pick now (live, not saved).")
class SuggestedPick(FromModel):
    __columns__ = {"available_at_source": "available"}

    quantity: int = strawberry.field(description="Packs of the lot it would pick.")
    available_at_source: int = strawberry.field(
        description="Packs of the lot on hand at the source now."
    )
    line_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    line: TransferLine = relation(
        models.TransferLine, "line_id", description="The line it would fill."
    )
    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot it would pick.")
    product: Product = relation(
        catalog_models.Product, "product_id", description="The line's product."
    )


@strawberry.type(description="Packs of one lot dispatched and not yet received: on the road.")
class StockInTransit(FromModel):
    quantity: int = strawberry.field(description="Packs on the road.")
    since: datetime = strawberry.field(description="When the transfer was dispatched.")
    transfer_id: strawberry.Private[int]
    lot_id: strawberry.Private[int]
    product_id: strawberry.Private[int]
    source_id: strawberry.Private[int]
    destination_id: strawberry.Private[int]

    transfer: Transfer = relation(
        models.Transfer, "transfer_id", description="The transfer carrying them."
    )
    lot: Lot = relation(catalog_models.Lot, "lot_id", description="The lot on the road.")
    product: Product = relation(
        catalog_models.Product, "product_id", description="The lot's product."
    )

    @strawberry.field(name="from", description="The source it left.")
    def from_(self, info: Info) -> Location:
        return related(info, network_models.Location, self.source_id, Location.from_model)  # type: ignore[return-value]

    to: Location = relation(
        network_models.Location, "destination_id", description="The destination it is heading to."
    )


@strawberry.type(description="One step of a transfer's audit trail.")
class TransferHistoryStep:
    action: TransferAction = strawberry.field(description="The step taken.")  # type: ignore[valid-type]
    status: TransferStatus | None = strawberry.field(  # type: ignore[valid-type]
        description="The status it left the transfer in (null: not recorded)."
    )
    actor: str = strawberry.field(description="Username of who took it, as audited then.")
    role: str = strawberry.field(description="The role they acted in.")
    at: datetime = strawberry.field(description="When it happened.")
    reason: str | None = strawberry.field(
        description="Why, for a rejection or cancellation (null otherwise)."
    )

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
    "CANCELLED (before dispatch). Visible to whoever sees its source or its destination."
)
class Transfer(FromModel, relay.Node):
    __columns__ = {
        "requested_by_id": "requested_by",
        "decided_by_id": "decided_by",
        "dispatched_by_id": "dispatched_by",
        "received_by_id": "received_by",
    }

    id: relay.NodeID[int]
    number: str = strawberry.field(description="TR-YYYY-NNNNN, a per-year sequence.")
    status: TransferStatus = strawberry.field(description="Where it is in its life.")  # type: ignore[valid-type]
    needed_by: date | None = strawberry.field(
        description="The day the destination needs it by (null: no date given)."
    )
    note: str | None = strawberry.field(description="The requester's note (null: none).")
    requested_at: datetime = strawberry.field(description="When it was asked for.")
    decided_at: datetime | None = strawberry.field(
        description="When it was approved or rejected (null before)."
    )
    rejection_reason: str | None = strawberry.field(
        description="Why it was refused (null unless REJECTED)."
    )
    dispatched_at: datetime | None = strawberry.field(
        description="When stock left the source (null before dispatch)."
    )
    received_at: datetime | None = strawberry.field(
        description="When it was taken into stock at the destination (null before)."
    )
    source_id: strawberry.Private[int]
    destination_id: strawberry.Private[int]
    requested_by_id: strawberry.Private[int]
    decided_by_id: strawberry.Private[int | None]
    dispatched_by_id: strawberry.Private[int | None]
    received_by_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        rows = await transfer_rows(info, parse_pks(node_ids))
        return [cls.from_model(r) if r is not None else None for r in rows]

    source: Location = relation(
        network_models.Location, "source_id", description="Where the stock comes from."
    )
    destination: Location = relation(
        network_models.Location, "destination_id", description="Where the stock goes."
    )

    @strawberry.field(description="True when source and destination belong to different orgs.")
    async def cross_organisation(self, info: Info) -> bool:
        source, destination = await info.context.by_id(network_models.Location).load_many(
            [self.source_id, self.destination_id]
        )
        assert source is not None and destination is not None  # a transfer's foreign keys
        return source.organisation_id != destination.organisation_id

    requested_by: User | None = relation(
        network_models.User, "requested_by_id", description="Who asked for it."
    )
    decided_by: User | None = relation(
        network_models.User,
        "decided_by_id",
        description="Who approved or rejected it (null before the decision).",
    )
    dispatched_by: User | None = relation(
        network_models.User, "dispatched_by_id", description="Who dispatched it (null before)."
    )
    received_by: User | None = relation(
        network_models.User, "received_by_id", description="Who received it (null before)."
    )

    @strawberry.field(description="What may happen next according to the state machine.")
    def allowed_actions(self) -> list[TransferAction]:  # type: ignore[valid-type]
        return rules.allowed_actions(self.status)

    @strawberry.field(description="The products asked for, in the order they were asked.")
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
        items = await batched(info, "suggestions", service.suggestions).load(self.id)
        return [SuggestedPick.from_model(s) for s in items]

    @strawberry.field(description="What of it is on the road now (DISPATCHED, not yet received).")
    async def in_transit(self, info: Info) -> list[StockInTransit]:
        service = info.context.services.transfers
        items = await batched(info, "in_transit", service.in_transit_of).load(self.id)
        return [StockInTransit.from_model(x) for x in items]

    @strawberry.field(description="Differences recorded on receipt.")
    async def discrepancies(self, info: Info) -> list[Discrepancy]:
        D = shipment_models.Discrepancy
        rows = await info.context.grouped("transfer_discrepancies", D.transfer_id, D.id).load(
            self.id
        )
        return [Discrepancy.from_model(d) for d in rows]

    @strawberry.field(
        description="The TRANSFER_OUT and TRANSFER_IN movements it wrote, at the locations you "
        "see (each side is reported by its own organisation)."
    )
    async def movements(self, info: Info) -> list[Movement]:
        principal = info.context.require_principal()
        service = info.context.services.transfers
        rows = await batched(
            info, "movements", lambda ids: service.movements(ids, seen_by=principal)
        ).load(self.id)
        return [Movement.from_model(m) for m in rows]

    @strawberry.field(description="Who did what and when, from the audit trail.")
    async def history(self, info: Info) -> list[TransferHistoryStep]:
        service = info.context.services.transfers
        steps = await batched(info, "history", service.history).load(self.id)
        return [TransferHistoryStep.from_view(s) for s in steps]

    @strawberry.field(description="Why it was cancelled (null unless CANCELLED).")
    async def cancellation_reason(self, info: Info) -> str | None:
        if self.status is not models.TransferStatus.CANCELLED:
            return None
        service = info.context.services.transfers
        steps = await batched(info, "history", service.history).load(self.id)
        return next((s.reason for s in reversed(steps) if s.action == "CANCEL"), None)


@strawberry.type(description="A page of transfers, with how many there are over all pages.")
class TransferConnection(CountedConnection[Transfer]):
    pass


@strawberry.type(description="A transfer changed: what happened, and the transfer now.")
class TransferUpdate:
    action: TransferAction = strawberry.field(description="The step it took.")  # type: ignore[valid-type]
    status: TransferStatus = strawberry.field(  # type: ignore[valid-type]
        description="The status this step left it in."
    )
    transfer: Transfer = strawberry.field(description="The transfer as it is now.")
