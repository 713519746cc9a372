"""GraphQL for EPCIS 2.0: `epcisExport` (a JSON-LD document) and `importEpcis`.

Who may do what is decided in server/integrations/service.py: export is open to ADMIN, AUDITOR
and REGULATOR for every movement and to other stock readers for their own organisation's;
import is for ADMIN and REGULATOR, who enter the data of a constituent that does not use
Apotheca on its behalf.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from server.catalog.api import Lot
from server.core.cost import weigh
from server.core.graphql import Info, MutationError, attempt, decode_id
from server.core.pagination import check_first
from server.integrations.service import ImportResult
from server.inventory.api import Movement
from server.network.api import Organisation

# The API's cap on one export (the CLI's `epcis-export` may write up to the service's 10,000):
# each event reads a movement, its lot and both parties, so a document is priced per event.
EXPORT_MAX_EVENTS = 1000


@strawberry.type(description="An event of the document that was not recorded, and why.")
class EpcisRejection:
    index: int = strawberry.field(description="Position of the event in the eventList (0-based).")
    event_id: str = strawberry.field(
        description="The event's eventID, or the hash of its content when it has none."
    )
    event_type: str | None = strawberry.field(description="Its type, e.g. ObjectEvent.")
    reason: str = strawberry.field(description="Why it was not recorded.")


@strawberry.type(description="An event that was recorded with a caveat.")
class EpcisWarning:
    event_id: str = strawberry.field(description="The event's eventID (or content hash).")
    message: str = strawberry.field(description="The caveat.")


@strawberry.type(description="What an EPCIS import recorded, skipped and refused.")
class EpcisImportPayload:
    organisation: Organisation | None = strawberry.field(
        default=None, description="Whose movements were recorded; null when refused."
    )
    imported: list[str] = strawberry.field(
        default_factory=list, description="Event IDs recorded now, in the order applied."
    )
    already_imported: list[str] = strawberry.field(
        default_factory=list, description="Event IDs recorded by an earlier import: unchanged."
    )
    rejected: list[EpcisRejection] = strawberry.field(
        default_factory=list, description="Events not recorded, with the reason (none dropped)."
    )
    warnings: list[EpcisWarning] = strawberry.field(
        default_factory=list, description="Events recorded with a caveat."
    )
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The movements written for the imported events."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why the whole document was refused; empty otherwise."
    )

    @classmethod
    def from_result(cls, result: ImportResult) -> EpcisImportPayload:
        return cls(
            organisation=Organisation.from_model(result.organisation),
            imported=result.imported,
            already_imported=result.already_imported,
            rejected=[
                EpcisRejection(
                    index=r.index, event_id=r.event_id, event_type=r.event_type, reason=r.reason
                )
                for r in result.rejected
            ],
            warnings=[
                EpcisWarning(event_id=w.event_id, message=w.message) for w in result.warnings
            ],
            movements=[Movement.from_model(m) for m in result.movements],
        )


@strawberry.type
class Query:
    @strawberry.field(
        description="Movements as an EPCIS 2.0 JSON-LD document of ObjectEvents, oldest first: "
        "lot-level GS1 Digital Link classes, CBV bizStep and disposition, the location as "
        "readPoint and bizLocation, the parties as source and destination, hash-based event "
        "IDs (the same movements always give the same document). `first` caps the events "
        "(default and maximum 1000; each costs 5 points); `apotheca:complete` is false when "
        "more matched. ADMIN, AUDITOR and REGULATOR export any movements, other stock readers "
        "their own organisation's.",
        metadata=weigh(10, per_item=5, size_arg="first", default_size=EXPORT_MAX_EVENTS),
    )
    async def epcis_export(
        self,
        info: Info,
        since: Annotated[
            datetime | None, strawberry.argument(description="Movements from this moment on.")
        ] = None,
        until: Annotated[
            datetime | None, strawberry.argument(description="Movements before this moment.")
        ] = None,
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only movements this organisation reported."),
        ] = None,
        lot: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only movements of this lot.")
        ] = None,
        first: Annotated[
            int | None, strawberry.argument(description="At most this many events (1-1000).")
        ] = None,
    ) -> JSON:
        principal = info.context.require_principal()
        if first is not None:
            check_first(first, EXPORT_MAX_EVENTS)
        document: dict[str, Any] = await info.context.services.epcis.export(
            principal,
            since=since,
            until=until,
            organisation_id=(
                decode_id(organisation, Organisation, "organisation") if organisation else None
            ),
            lot_id=decode_id(lot, Lot, "lot") if lot else None,
            first=EXPORT_MAX_EVENTS if first is None else first,
        )
        return JSON(document)


@strawberry.input(description="An EPCIS document to record for an organisation.")
class ImportEpcisInput:
    organisation: relay.GlobalID = strawberry.field(
        description="The constituent whose events these are (its movements are recorded)."
    )
    document: JSON = strawberry.field(
        description="An EPCIS 2.0 EPCISDocument (or EPCISQueryDocument) in JSON-LD."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Record an EPCIS 2.0 document of a constituent that does not use Apotheca "
        "as movements reported by that organisation (ADMIN or REGULATOR, entering the data as "
        "the supervising authority). Idempotent by event ID; events are applied in eventTime "
        "order, each all or nothing; events that cannot be mapped (unsupported type, unknown "
        "GTIN, no quantity, insufficient stock, ...) are listed under `rejected` with the "
        "reason."
    )
    async def import_epcis(
        self,
        info: Info,
        input: Annotated[
            ImportEpcisInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> EpcisImportPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.epcis.import_document(
                p, decode_id(input.organisation, Organisation, "organisation"), input.document
            ),
        )
        return (
            EpcisImportPayload.from_result(result) if result else EpcisImportPayload(errors=errors)
        )
