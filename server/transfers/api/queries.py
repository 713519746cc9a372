"""Transfer queries: one transfer, the scoped list, stock in transit."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay

from server.core.cost import weigh
from server.core.graphql import Info, connection, decode_id
from server.network.api import Location
from server.transfers import queries
from server.transfers.api.types import (
    StockInTransit,
    Transfer,
    TransferConnection,
    TransferStatus,
)


@strawberry.type
class Query:
    @strawberry.field(description="One transfer, if its source or destination is yours.")
    async def transfer(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="The transfer's ID.")],
    ) -> Transfer | None:
        node_id = str(decode_id(id, Transfer, "id"))
        return (await Transfer.resolve_nodes(info=info, node_ids=[node_id]))[0]

    @strawberry.field(description="Transfers from or to locations you see, newest first.")
    async def transfers(
        self,
        info: Info,
        first: Annotated[
            int, strawberry.argument(description="Page size (1 to the server's maximum).")
        ],
        after: Annotated[
            str | None, strawberry.argument(description="The previous page's endCursor.")
        ] = None,
        status: Annotated[
            TransferStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only transfers in this status (null: any)."),
        ] = None,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(
                description="Only transfers from or to this location, which must be in your "
                "scope (null: every location you see)."
            ),
        ] = None,
    ) -> TransferConnection:
        page = await queries.transfers_page(
            info.context,
            info.context.require_principal(),
            first=first,
            after=after,
            status=status,
            location_id=decode_id(location, Location, "location") if location is not None else None,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(TransferConnection, page, Transfer.from_model)  # type: ignore[return-value]

    @strawberry.field(
        description="Stock on the road: picks of DISPATCHED transfers not yet received, from or "
        "to `location` (else anywhere you see), oldest dispatch first.",
        metadata=weigh(50),
    )
    async def stock_in_transit(
        self,
        info: Info,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(
                description="Only stock leaving or heading to this location, which must be in "
                "your scope (null: every location you see)."
            ),
        ] = None,
    ) -> list[StockInTransit]:
        items = await info.context.services.transfers.in_transit_seen_by(
            info.context.require_principal(),
            decode_id(location, Location, "location") if location is not None else None,
        )
        return [StockInTransit.from_model(x) for x in items]
