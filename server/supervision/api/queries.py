"""Queries of recalls, lot traces and batch supervision: `recalls`, `traceLot`, `traceLotCsv`,
`supervision`, `supervisionReport`."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay

from server.catalog.api import Lot
from server.core.cost import weigh
from server.core.graphql import Info, connection, decode_id, optional_id
from server.network.api import Organisation
from server.supervision.api.types import (
    LotTrace,
    Recall,
    RecallConnection,
    SupervisionCheck,
    SupervisionReportConnection,
    SupervisionReportEdge,
    SupervisionReportItem,
    SupervisionStatus,
)

First = Annotated[int, strawberry.argument(description="Page size (1 to the configured cap).")]
After = Annotated[
    str | None, strawberry.argument(description="A cursor: the page starts after it.")
]
LotId = Annotated[relay.GlobalID, strawberry.argument(description="The lot (a Lot ID).")]


@strawberry.type
class Query:
    @strawberry.field(
        description="Recalls, newest first; optionally only those of one lot. Stock readers."
    )
    async def recalls(
        self,
        info: Info,
        first: First,
        after: After = None,
        lot: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only recalls that took this lot out of use."),
        ] = None,
    ) -> RecallConnection:
        page = await info.context.services.supervision.recalls_page(
            info.context.require_principal(),
            lot_id=optional_id(lot, Lot, "lot"),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(RecallConnection, page, Recall.from_model)  # type: ignore[return-value]

    @strawberry.field(
        description="Where a lot came from and everywhere it went. Every hop and holder is "
        "shown; patient references only at locations in your scope (all for ADMIN, AUDITOR, "
        "REGULATOR).",
        metadata=weigh(200),
    )
    async def trace_lot(self, info: Info, lot: LotId) -> LotTrace:
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
    async def trace_lot_csv(self, info: Info, lot: LotId) -> str:
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
        self,
        info: Info,
        approval_number: Annotated[
            str, strawberry.argument(description="The product's approval number.")
        ],
        batch_number: Annotated[str, strawberry.argument(description="The batch number.")],
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
        first: First,
        after: After = None,
        status: Annotated[
            SupervisionStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only batches in this status; null: all but NORMAL."),
        ] = None,
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only batches this organisation handled."),
        ] = None,
    ) -> SupervisionReportConnection:
        page = await info.context.services.supervision_checks.report_page(
            info.context.require_principal(),
            status=status,
            organisation_id=None
            if organisation is None
            else decode_id(organisation, Organisation, "organisation"),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
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
            _total=page.total,
        )
