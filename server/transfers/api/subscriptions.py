"""Live transfer updates: `transferUpdated`, after commit, to subscribers in scope."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

import strawberry
from strawberry import relay

from server.core.graphql import Info, decode_id
from server.network.api import Location
from server.transfers.api.types import Transfer, TransferUpdate


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Transfers touching your scope as they change (after commit); narrow to "
        "one transfer or to transfers from or to some locations."
    )
    async def transfer_updated(
        self,
        info: Info,
        transfer: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only this transfer (null: any you see)."),
        ] = None,
        locations: Annotated[
            list[relay.GlobalID] | None,
            strawberry.argument(
                description="Only transfers from or to one of these locations, each in your "
                "scope (null or empty: every location you see)."
            ),
        ] = None,
    ) -> AsyncGenerator[TransferUpdate, None]:
        changes = info.context.services.transfers.watch(
            info.context.require_principal(),
            transfer_id=decode_id(transfer, Transfer, "transfer") if transfer is not None else None,
            location_ids=[decode_id(x, Location, "locations") for x in locations or []],
        )
        async with aclosing(changes):
            async for change in changes:
                info.context.loaders.clear()  # nested fields read fresh rows per event
                yield TransferUpdate(
                    action=change.action,
                    status=change.status,
                    transfer=Transfer.from_model(change.transfer),
                )
