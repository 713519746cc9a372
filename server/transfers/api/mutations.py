"""Transfer mutations: request, approve or reject, pick, dispatch, receive, cancel. Each takes
one `input` (the transfer named `id`) and returns a payload with `errors`; the service owns
every check and every transaction."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog.api import Lot, Product
from server.core.graphql import Info, MutationError, attempt, decode_id
from server.inventory.api import Movement
from server.network.api import Location
from server.shipments.api import Discrepancy
from server.transfers.api.types import Transfer, TransferLine, TransferPick
from server.transfers.models import Transfer as TransferRow
from server.transfers.service import (
    LineApproval,
    LineRequest,
    PickRequest,
    ReceiptLine,
    TransferResult,
)

_INPUT = "The step's details; the transfer it acts on is its `id` (requestTransfer creates one)."

# --- inputs --------------------------------------------------------------------------------------


@strawberry.input(description="A product and how many packs are asked for.")
class TransferLineInput:
    product: relay.GlobalID = strawberry.field(description="The product (active) asked for.")
    quantity: int = strawberry.field(description="Packs asked for (positive).")


@strawberry.input(description="Approve a line for this many (lower than asked, or 0).")
class TransferApprovalInput:
    line: relay.GlobalID = strawberry.field(description="A line of the transfer.")
    approved_quantity: int = strawberry.field(
        description="Packs to send: 0 up to the requested quantity; 0 drops the line."
    )


@strawberry.input(description="Send this many packs of this lot for this line.")
class TransferPickInput:
    line: relay.GlobalID = strawberry.field(description="A line of the transfer.")
    lot: relay.GlobalID = strawberry.field(
        description="An issuable lot of the line's product on hand at the source."
    )
    quantity: int = strawberry.field(description="Packs of the lot to send (positive).")


@strawberry.input(
    description="What arrived of one pick: received packs go into stock; damaged ones do not "
    "and are recorded as a DAMAGED discrepancy. Picks not listed arrived in full."
)
class TransferReceiptInput:
    pick: relay.GlobalID = strawberry.field(description="A pick of the transfer.")
    received_quantity: int = strawberry.field(
        description="Packs taken into stock (0 or more; more than dispatched is OVER)."
    )
    damaged_quantity: int = strawberry.field(
        default=0, description="Packs that arrived damaged, not taken into stock (0 or more)."
    )
    note: str | None = strawberry.field(
        default=None, description="What the receiver saw, kept on the discrepancies (≤ 500)."
    )


@strawberry.input(description="Ask for products to be sent from one location to another.")
class RequestTransferInput:
    source: relay.GlobalID = strawberry.field(description="The location to send from.")
    destination: relay.GlobalID = strawberry.field(
        description="The location to send to: one you look after, not the source."
    )
    lines: list[TransferLineInput] = strawberry.field(
        description="1 to 200 lines, each product once."
    )
    needed_by: date | None = strawberry.field(
        default=None, description="The day it is needed by, today or later (null: no date)."
    )
    note: str | None = strawberry.field(
        default=None, description="A note for the source (≤ 500 characters)."
    )


@strawberry.input(description="Agree to send a requested transfer, in full or in part.")
class ApproveTransferInput:
    id: relay.GlobalID = strawberry.field(description="The transfer (REQUESTED).")
    lines: list[TransferApprovalInput] | None = strawberry.field(
        default=None,
        description="Quantities per line; lines not listed (or null: all) are approved as "
        "requested.",
    )


@strawberry.input(description="Refuse a requested transfer.")
class RejectTransferInput:
    id: relay.GlobalID = strawberry.field(description="The transfer (REQUESTED).")
    reason: str = strawberry.field(description="Why, for the requester (1 to 200 characters).")


@strawberry.input(description="Choose the lots to send.")
class PickTransferInput:
    id: relay.GlobalID = strawberry.field(description="The transfer (APPROVED or PICKED).")
    picks: list[TransferPickInput] | None = strawberry.field(
        default=None,
        description="The lots chosen (at least one); null saves the first-expired-first-out "
        "suggestion.",
    )


@strawberry.input(description="Send a picked transfer.")
class DispatchTransferInput:
    id: relay.GlobalID = strawberry.field(description="The transfer (PICKED).")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The client's key for this step: a replay returns the first dispatch "
        "(`replayed: true`) instead of doing it again.",
    )


@strawberry.input(description="Take a dispatched transfer into stock at the destination.")
class ReceiveTransferInput:
    id: relay.GlobalID = strawberry.field(description="The transfer (DISPATCHED).")
    lines: list[TransferReceiptInput] | None = strawberry.field(
        default=None,
        description="What arrived per pick; picks not listed (or null: all) arrived in full.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The client's key for this step: a replay returns the first receipt "
        "(`replayed: true`); the same key with other lines is refused.",
    )


@strawberry.input(description="Withdraw a transfer before it is dispatched.")
class CancelTransferInput:
    id: relay.GlobalID = strawberry.field(
        description="The transfer (REQUESTED, APPROVED or PICKED)."
    )
    reason: str = strawberry.field(description="Why (1 to 200 characters).")


# --- payloads ------------------------------------------------------------------------------------


@strawberry.type(description="A transfer step's outcome: the transfer now, or why not.")
class TransferPayload:
    transfer: Transfer | None = strawberry.field(
        default=None, description="The transfer after the step (null when refused)."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused (empty on success)."
    )


@strawberry.type(
    description="A stock-moving transfer step's outcome: the transfer and ledger rows."
)
class TransferMovementsPayload:
    transfer: Transfer | None = strawberry.field(
        default=None, description="The transfer after the step (null when refused)."
    )
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The ledger movements this step wrote."
    )
    discrepancies: list[Discrepancy] = strawberry.field(
        default_factory=list, description="Differences recorded (on receipt)."
    )
    replayed: bool = strawberry.field(
        default=False,
        description="True when the idempotency key had already been used: nothing was done again.",
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused (empty on success)."
    )


def _payload(transfer: TransferRow | None, errors: list[MutationError]) -> TransferPayload:
    return TransferPayload(
        transfer=Transfer.from_model(transfer) if transfer is not None else None, errors=errors
    )


def _movements_payload(
    result: TransferResult | None, errors: list[MutationError]
) -> TransferMovementsPayload:
    if result is None:
        return TransferMovementsPayload(errors=errors)
    return TransferMovementsPayload(
        transfer=Transfer.from_model(result.transfer),
        movements=[Movement.from_model(m) for m in result.movements],
        discrepancies=[Discrepancy.from_model(d) for d in result.discrepancies],
        replayed=result.replayed,
    )


def _transfer_id(transfer: relay.GlobalID) -> int:
    return decode_id(transfer, Transfer, "id")


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Ask for products to be sent from `source` to `destination` (a location "
        "you look after). Numbered TR-YYYY-NNNNN."
    )
    async def request_transfer(
        self,
        info: Info,
        input: Annotated[RequestTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferPayload:
        transfer, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.request(
                p,
                source_id=decode_id(input.source, Location, "source"),
                destination_id=decode_id(input.destination, Location, "destination"),
                lines=[
                    LineRequest(decode_id(x.product, Product, f"lines.{i}.product"), x.quantity)
                    for i, x in enumerate(input.lines)
                ],
                needed_by=input.needed_by,
                note=input.note,
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
        input: Annotated[ApproveTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferPayload:
        approved, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.approve(
                p,
                _transfer_id(input.id),
                None
                if input.lines is None
                else [
                    LineApproval(
                        decode_id(x.line, TransferLine, f"lines.{i}.line"), x.approved_quantity
                    )
                    for i, x in enumerate(input.lines)
                ],
            ),
        )
        return _payload(approved, errors)

    @strawberry.mutation(description="Refuse a request (manager of the source), saying why.")
    async def reject_transfer(
        self,
        info: Info,
        input: Annotated[RejectTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferPayload:
        rejected, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.reject(
                p, _transfer_id(input.id), input.reason
            ),
        )
        return _payload(rejected, errors)

    @strawberry.mutation(
        description="Choose the lots (manager of the source): without `picks`, the "
        "first-expired-first-out suggestion (see suggestedPicks); with them, edited picks "
        "(checked). Again before dispatch replaces the picks."
    )
    async def pick_transfer(
        self,
        info: Info,
        input: Annotated[PickTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferPayload:
        picked, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.pick(
                p,
                _transfer_id(input.id),
                None
                if input.picks is None
                else [
                    PickRequest(
                        decode_id(x.line, TransferLine, f"picks.{i}.line"),
                        decode_id(x.lot, Lot, f"picks.{i}.lot"),
                        x.quantity,
                    )
                    for i, x in enumerate(input.picks)
                ],
            ),
        )
        return _payload(picked, errors)

    @strawberry.mutation(
        description="Stock leaves the source (manager of the source): TRANSFER_OUT per pick, "
        "all or nothing."
    )
    async def dispatch_transfer(
        self,
        info: Info,
        input: Annotated[DispatchTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferMovementsPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.dispatch(
                p, _transfer_id(input.id), input.idempotency_key
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
        input: Annotated[ReceiveTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferMovementsPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.receive(
                p,
                _transfer_id(input.id),
                None
                if input.lines is None
                else [
                    ReceiptLine(
                        decode_id(x.pick, TransferPick, f"lines.{i}.pick"),
                        x.received_quantity,
                        x.damaged_quantity,
                        x.note,
                    )
                    for i, x in enumerate(input.lines)
                ],
                input.idempotency_key,
            ),
        )
        return _movements_payload(result, errors)

    @strawberry.mutation(
        description="Withdraw a transfer before it is dispatched, saying why (the destination's "
        "side or the source's manager)."
    )
    async def cancel_transfer(
        self,
        info: Info,
        input: Annotated[CancelTransferInput, strawberry.argument(description=_INPUT)],
    ) -> TransferPayload:
        cancelled, errors = await attempt(
            info,
            lambda p: info.context.services.transfers.cancel(
                p, _transfer_id(input.id), input.reason
            ),
        )
        return _payload(cancelled, errors)
