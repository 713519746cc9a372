"""EPCIS use cases: export movements as an EPCIS 2.0 document; import a constituent's document.

Export (`EpcisService.export`): the movements matching a filter (occurred since/until, reporting
organisation, lot or batch number), oldest first, as ObjectEvents (see epcis.py for the
mapping). ADMIN, AUDITOR and REGULATOR may export anything; every other role needs STOCK_READ
and gets only its own organisation's movements at locations in its scope (naming another
organisation is refused, not answered with an empty document). The document is deterministic:
`creationDate` is the latest `recorded_at` of the exported movements (or `until`, or the Unix
epoch when there are none), so the same movements always give the same bytes.

Import (`EpcisService.import_document`): a document from a constituent that does not use
Apotheca, entered by the supervising authority (ADMIN or REGULATOR): the caller names the
organisation the document is from, and every event becomes movements *reported by that
organisation*, written through the ledger (balances, running supervision totals, audit, stock
events) in one transaction. Rules:
- Idempotent by event ID: an imported event is remembered in `epcis_events`; importing it again
  changes nothing and lists it under `already_imported`. Events without an `eventID` get the
  hash of their content as ID. A repeated ID inside one document is rejected.
- Events are applied in `eventTime` order (document order among equal times), each in its own
  savepoint: an event that cannot be recorded is rolled back alone and listed under `rejected`
  with the reason (unsupported event type, unknown GTIN, no quantity, a lot without expiry,
  "insufficient stock at CODE: ..." when it would take a balance below zero, ...). Nothing is
  dropped silently. A rejected event leaves no trace, so importing again (say after the missing
  receipt) retries it.
- Location: the event's bizLocation (else readPoint) is matched by code (Apotheca location URI,
  Digital Link AI 254, or sgln extension) among the constituent's locations. Without a match
  the constituent's only location is used; a constituent with no location gets one, created
  on first need with code `EPCIS-{organisation id}`; with several locations and no match the
  event is rejected and asks for a location code.
- Counterparty: the Apotheca extension (as exported, even when it is the reporter itself), else
  the first owning/possessing party on the other side (destination for outflows, source for
  inflows) that is a known organisation other than the constituent; an unknown party is
  recorded as no counterparty and listed under `warnings`.
- Lots: found by product (GTIN, else approval number) and batch; a batch not yet known is
  created when the event gives its expiry (`apotheca:expiryDate`, ilmd itemExpirationDate or
  Digital Link AI 17), else the event is rejected. Quantities must count packs (no `uom`, or
  EA/H87/C62); SGTIN lists count their distinct serials.
- The stock and alert events of recorded events are published after the commit (see
  `EventBus.take_pending`); nothing is announced for a rejected event.
- An Apotheca-exported event whose `apotheca:reporter` is another known organisation is
  rejected: import it as that organisation.
- The ledger checks run with the caller's identity (the audit log names them), lent the ledger
  permissions (`Principal.granted`) at the event's location only, since a regulator has no
  stock permissions of its own.
- `commissioning` events (PRODUCE) go through the production service
  (`ProductionService.commission`, supervised): the same expiry, quantity and serial rules as
  recordProduction, and SGTIN serials are commissioned, so later scans decommission them. The
  manufacturer checks are not applied: a non-manufacturer's reported commissioning must reach
  gamma as an illegal inflow.
- Do not import a document of an organisation that also records the same stock in Apotheca:
  its movements would be counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product, ProductGtin
from server.catalog.service import find_or_create_lot
from server.core import audit
from server.core.db import Database
from server.core.errors import DomainError, Forbidden, InsufficientStock, InvalidInput
from server.core.events import Event, EventBus
from server.core.security import GLOBAL_ROLES, Permission, Principal, Role
from server.core.validation import get_or_not_found
from server.integrations import epcis
from server.integrations.epcis import ExportMovement, ItemRef, ParsedEvent, PartyRef, Unmappable
from server.integrations.models import EpcisEvent
from server.inventory.models import AnyMovement, Movement
from server.inventory.rules import KIND_PERMISSION
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location, LocationKind, Organisation
from server.network.service import location_snapshot
from server.production.service import Commission, ProductionService

IMPORT_ROLES = frozenset({Role.ADMIN, Role.REGULATOR})
LEDGER_PERMISSIONS = frozenset(KIND_PERMISSION.values())
MAX_EXPORT_EVENTS = 10_000
MAX_IMPORT_EVENTS = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rejection:
    index: int  # position in the document's eventList
    event_id: str
    event_type: str | None
    reason: str


@dataclass(frozen=True)
class ImportWarning:
    event_id: str
    message: str


@dataclass
class ImportResult:
    organisation: Organisation
    imported: list[str] = field(default_factory=list)
    already_imported: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[ImportWarning] = field(default_factory=list)
    movements: list[AnyMovement] = field(default_factory=list)


@dataclass
class _Lookups:
    """What one import has looked up so far (only facts that survive a rolled-back event)."""

    constituent: Organisation
    locations: list[Location]
    products: dict[ItemRef, Product | None] = field(default_factory=dict)
    organisations: dict[PartyRef, Organisation | None] = field(default_factory=dict)


class EpcisService:
    def __init__(
        self, db: Database, bus: EventBus, ledger: LedgerService, production: ProductionService
    ) -> None:
        self.db = db
        self.bus = bus
        self.ledger = ledger
        self.production = production

    # --- export ---------------------------------------------------------------------------------

    async def export(
        self,
        principal: Principal | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        organisation_id: int | None = None,
        lot_id: int | None = None,
        batch_number: str | None = None,
        first: int | None = None,
    ) -> dict[str, Any]:
        """The matching movements as one EPCIS 2.0 document (None principal: the console)."""
        limit = MAX_EXPORT_EVENTS if first is None else first
        if not 1 <= limit <= MAX_EXPORT_EVENTS:
            raise InvalidInput(f"first must be between 1 and {MAX_EXPORT_EVENTS}", field="first")
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"{name} needs a time zone", field=name)
        M = Movement
        stmt = (
            select(M, Lot, Product, Location)
            .join(Lot, Lot.id == M.lot_id)
            .join(Product, Product.id == Lot.product_id)
            .join(Location, Location.id == M.location_id)
        )
        if principal is not None and not principal.roles & GLOBAL_ROLES:
            principal.require(Permission.STOCK_READ)
            own = principal.organisation_id
            if own is None:
                raise Forbidden("an export needs an organisation: yours is not set")
            if organisation_id is not None and organisation_id != own:
                raise Forbidden(
                    "you may export only your own organisation's movements", field="organisation"
                )
            stmt = stmt.where(M.organisation_id == own)
            if principal.location_ids is not None:
                stmt = stmt.where(M.location_id.in_(principal.location_ids))
        async with self.db.read() as session:
            if organisation_id is not None:
                await get_or_not_found(session, Organisation, organisation_id, "organisation")
                stmt = stmt.where(M.organisation_id == organisation_id)
            if lot_id is not None:
                await get_or_not_found(session, Lot, lot_id, "lot")
                stmt = stmt.where(M.lot_id == lot_id)
            if batch_number is not None:
                stmt = stmt.where(Lot.batch_number == batch_number.strip())
            if since is not None:
                stmt = stmt.where(M.occurred_at >= since)
            if until is not None:
                stmt = stmt.where(M.occurred_at < until)
            rows = (
                await session.execute(stmt.order_by(M.occurred_at, M.id).limit(limit + 1))
            ).all()
            complete = len(rows) <= limit
            rows = rows[:limit]
            org_ids = {r[0].organisation_id for r in rows}
            org_ids |= {r[0].counterparty_id for r in rows if r[0].counterparty_id}
            org_ids |= {r[1].manufacturer_id for r in rows if r[1].manufacturer_id}
            parties = {
                o.id: PartyRef(gln=o.gln or None, name=o.name)
                for o in (
                    await session.execute(select(Organisation).where(Organisation.id.in_(org_ids)))
                ).scalars()
            }
            product_ids = {r[2].id for r in rows}
            gtins = dict(
                (
                    await session.execute(
                        select(ProductGtin.product_id, func.min(ProductGtin.gtin))
                        .where(ProductGtin.product_id.in_(product_ids))
                        .group_by(ProductGtin.product_id)
                    )
                ).all()
            )
        events = [
            epcis.movement_event(
                ExportMovement(
                    movement_id=m.id,
                    kind=m.kind,
                    quantity=m.quantity,
                    occurred_at=m.occurred_at,
                    gtin=gtins.get(product.id),
                    approval_number=product.approval_number,
                    batch_number=lot.batch_number,
                    expiry_date=lot.expiry_date,
                    location_code=location.code,
                    reporter=parties[m.organisation_id],
                    counterparty=parties.get(m.counterparty_id) if m.counterparty_id else None,
                    manufacturer=parties.get(lot.manufacturer_id) if lot.manufacturer_id else None,
                    reference=m.reference,
                    reason=m.reason,
                )
            )
            for m, lot, product, location in rows
        ]
        created = max((r[0].recorded_at for r in rows), default=until or EPOCH)
        return epcis.epcis_document(events, creation_date=created, complete=complete)

    # --- import ---------------------------------------------------------------------------------

    async def import_document(
        self, principal: Principal | None, organisation_id: int, document: Any
    ) -> ImportResult:
        """Record a constituent's EPCIS events as its movements; see the module docstring."""
        if principal is not None and not principal.roles & IMPORT_ROLES:
            raise Forbidden(
                "only ADMIN or REGULATOR may enter a constituent's EPCIS events", field=None
            )
        try:
            raws = epcis.document_events(document)
        except epcis.NotAnEpcisDocument as error:
            raise InvalidInput(str(error), field="document") from None
        if len(raws) > MAX_IMPORT_EVENTS:
            raise InvalidInput(
                f"a document may hold at most {MAX_IMPORT_EVENTS} events, this one has "
                f"{len(raws)}: split it",
                field="document",
            )
        async with self.db.write() as session:
            constituent = await get_or_not_found(
                session, Organisation, organisation_id, "organisation"
            )
            result = ImportResult(constituent)
            identities = [epcis.event_identity(raw) for raw in raws]
            known = await self._imported_ids(session, [i for i, _ in identities])
            first_index: dict[str, int] = {}
            todo: list[tuple[int, ParsedEvent]] = []
            for index, (raw, (event_id, event_type)) in enumerate(
                zip(raws, identities, strict=True)
            ):
                if event_id in first_index:
                    reason = (
                        f"repeats the eventID of event {first_index[event_id]} in this document"
                    )
                    result.rejected.append(Rejection(index, event_id, event_type, reason))
                    continue
                first_index[event_id] = index
                if event_id in known:
                    result.already_imported.append(event_id)
                    continue
                try:
                    todo.append((index, epcis.parse_event(raw)))
                except Unmappable as error:
                    result.rejected.append(Rejection(index, event_id, event_type, error.reason))
            lookups = _Lookups(constituent, await self._locations(session, constituent.id))
            announce: list[Event] = []
            todo.sort(key=lambda item: (item[1].occurred_at, item[0]))
            for index, event in todo:
                try:
                    written, warnings, queued = await self._import_event(
                        session, principal, lookups, event
                    )
                except Unmappable as error:
                    result.rejected.append(
                        Rejection(index, event.event_id, event.event_type, error.reason)
                    )
                    continue
                except _ImportedMeanwhile:
                    result.already_imported.append(event.event_id)
                    continue
                result.imported.append(event.event_id)
                announce.extend(queued)
                result.movements.extend(written)
                result.warnings.extend(ImportWarning(event.event_id, w) for w in warnings)
            if result.imported:
                await audit.record(
                    session,
                    principal,
                    action="epcis.import",
                    entity_type="Organisation",
                    entity_id=constituent.id,
                    after={
                        "imported": result.imported,
                        "already_imported": len(result.already_imported),
                        "rejected": len(result.rejected),
                        "movement_ids": [m.id for m in result.movements],
                    },
                )
        self.bus.publish(announce)
        result.rejected.sort(key=lambda r: r.index)
        return result

    @staticmethod
    async def _imported_ids(session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = sorted(set(event_ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            found.update(
                (
                    await session.execute(
                        select(EpcisEvent.event_id).where(EpcisEvent.event_id.in_(chunk))
                    )
                ).scalars()
            )
        return found

    @staticmethod
    async def _locations(session: AsyncSession, organisation_id: int) -> list[Location]:
        return list(
            (
                await session.execute(
                    select(Location)
                    .where(Location.organisation_id == organisation_id, Location.active.is_(True))
                    .order_by(Location.id)
                )
            ).scalars()
        )

    async def _import_event(
        self,
        session: AsyncSession,
        principal: Principal | None,
        lookups: _Lookups,
        event: ParsedEvent,
    ) -> tuple[list[AnyMovement], list[str], list[Event]]:
        """One event in its own savepoint: movements and its EpcisEvent row, or nothing; also
        the stock and alert events it queued, to publish after the commit."""
        constituent = lookups.constituent
        warnings: list[str] = []
        if event.reporter_uri:
            reporter = await self._organisation(session, lookups, event.reporter_uri)
            if reporter is not None and reporter.id != constituent.id:
                raise Unmappable(
                    f"reported by {reporter.name}, not by {constituent.name}: import it as "
                    "that organisation"
                )
        lines: list[tuple[Product, str, int, Any, epcis.Line]] = []
        for line in event.lines:
            product = await self._product(session, lookups, line.item)
            if line.uom is not None and line.uom not in epcis.COUNTABLE_UOMS:
                raise Unmappable(
                    f"quantity of {line.item.describe()} is in {line.uom}, not in packs"
                )
            if not line.batch:
                raise Unmappable(
                    f"no lot for {line.item.describe()}: the class is not lot-level and the "
                    "event gives no ilmd lotNumber"
                )
            lines.append((product, line.batch, line.quantity, line.expiry or event.expiry, line))
        counterparty_id: int | None = None
        unknown: list[str] = []
        for uri in event.counterparty_uris:
            party = await self._organisation(session, lookups, uri)
            if party is None:
                unknown.append(uri)
            elif party.id != constituent.id or event.counterparty_declared:
                counterparty_id = party.id
                break
        if counterparty_id is None and unknown:
            warnings.append(
                f"counterparty {unknown[0]} is not a known organisation: recorded without one"
            )
        manufacturer_id: int | None = None
        if event.manufacturer_uri:
            manufacturer = await self._organisation(session, lookups, event.manufacturer_uri)
            manufacturer_id = manufacturer.id if manufacturer else None
        if manufacturer_id is None and event.kind is epcis.K.PRODUCE:
            manufacturer_id = constituent.id
        created_location: Location | None = None
        location: Location | None = None
        try:
            async with session.begin_nested():
                location = self._match_location(lookups, event)
                if location is None:
                    location = created_location = await self._create_location(
                        session, principal, constituent
                    )
                acting = self._acting(principal, location.id)
                requests = []
                movements: list[AnyMovement] = []
                for product, batch, quantity, expiry, line in lines:
                    lot = await self._lot(session, acting, product, batch, expiry, manufacturer_id)
                    if event.kind is epcis.K.PRODUCE:
                        movements.append(
                            await self._commission(
                                session, acting, location, lot, quantity, line, event
                            )
                        )
                        continue
                    requests.append(
                        MovementRequest(
                            event.kind,
                            location.id,
                            event.signed_quantity if event.signed_quantity else quantity,
                            lot_id=lot.id,
                            reason=event.reason,
                            reference=event.reference,
                            counterparty_id=counterparty_id,
                            occurred_at=event.occurred_at,
                        )
                    )
                if requests:
                    written = await self.ledger.apply(session, acting, requests)
                    movements.extend(m for m, _ in written)
                session.add(
                    EpcisEvent(
                        event_id=event.event_id,
                        organisation_id=constituent.id,
                        movement_ids=[m.id for m in movements],
                    )
                )
                await session.flush()
                queued = self.bus.take_pending(session)
        except Unmappable:
            self.bus.take_pending(session)
            raise
        except InsufficientStock as error:
            self.bus.take_pending(session)
            where = location.code if location is not None else constituent.name
            raise Unmappable(f"insufficient stock at {where}: {error.message}") from None
        except DomainError as error:
            self.bus.take_pending(session)
            raise Unmappable(error.message) from None
        except IntegrityError:
            self.bus.take_pending(session)
            if await self._imported_ids(session, [event.event_id]):
                raise _ImportedMeanwhile from None
            raise
        if created_location is not None:
            lookups.locations.append(created_location)
        return movements, warnings, queued

    async def _commission(
        self,
        session: AsyncSession,
        acting: Principal,
        location: Location,
        lot: Lot,
        quantity: int,
        line: epcis.Line,
        event: ParsedEvent,
    ) -> AnyMovement:
        """A commissioning line through the production service: its expiry, quantity and
        serial rules, and its SGTIN serials commissioned."""
        done = await self.production.commission(
            session,
            acting,
            Commission(
                location_id=location.id,
                product_id=lot.product_id,
                batch_number=lot.batch_number,
                expiry_date=lot.expiry_date,
                quantity=quantity,
                serials=line.serials,
                gtin=line.item.gtin if line.serials else None,
                reference=event.reference,
                occurred_at=event.occurred_at,
            ),
            supervised=True,
        )
        return done.movement

    @staticmethod
    def _acting(principal: Principal | None, location_id: int) -> Principal:
        """The caller (or the console) lent the constituent's ledger permissions, at the event's
        location only; the audit log still names the caller and its own roles."""
        caller = principal or Principal(
            user_id=None,  # type: ignore[arg-type]  # the console: no user
            username="system",
            roles=frozenset(),
            organisation_id=None,
            location_ids=None,
        )
        return replace(caller.granted(*LEDGER_PERMISSIONS), location_ids=frozenset({location_id}))

    @staticmethod
    def _match_location(lookups: _Lookups, event: ParsedEvent) -> Location | None:
        """The constituent's location the event names, else its only one; None: create one."""
        locations = lookups.locations
        ref = event.location
        if ref is not None and ref.code:
            for location in locations:
                if location.code == ref.code.strip().upper():
                    return location
        if len(locations) == 1:
            return locations[0]
        if not locations:
            return None
        named = f"location {event.location_uri}" if event.location_uri else "no location"
        codes = ", ".join(x.code for x in locations)
        raise Unmappable(
            f"the event names {named}, which is not one of {lookups.constituent.name}'s "
            f"locations ({codes}); name one as {epcis.APOTHECA_BASE}/location/CODE"
        )

    @staticmethod
    async def _create_location(
        session: AsyncSession, principal: Principal | None, constituent: Organisation
    ) -> Location:
        code = f"EPCIS-{constituent.id}"
        taken = (
            await session.execute(select(Location).where(Location.code == code))
        ).scalar_one_or_none()
        if taken is not None:
            if taken.organisation_id == constituent.id:
                return taken  # inactive: still this constituent's EPCIS location
            raise Unmappable(f"location code {code} is taken by another organisation")
        location = Location(
            organisation_id=constituent.id,
            code=code,
            name=f"{constituent.name} (EPCIS)"[:200],
            kind=LocationKind.WAREHOUSE,
            allow_negative_stock=False,
            active=True,
        )
        session.add(location)
        await session.flush()
        await audit.record(
            session,
            principal,
            action="location.create",
            entity_type="Location",
            entity_id=location.id,
            after=location_snapshot(location),
            reason="EPCIS import: the constituent had no location",
        )
        return location

    @staticmethod
    async def _product(session: AsyncSession, lookups: _Lookups, item: ItemRef) -> Product:
        if item not in lookups.products:
            if item.gtin:
                stmt = (
                    select(Product)
                    .join(ProductGtin, ProductGtin.product_id == Product.id)
                    .where(ProductGtin.gtin == item.gtin)
                )
            else:
                stmt = select(Product).where(Product.approval_number == item.approval_number)
            lookups.products[item] = (await session.execute(stmt)).scalar_one_or_none()
        product = lookups.products[item]
        if product is None:
            if item.gtin:
                raise Unmappable(f"unknown GTIN {item.gtin}: no product in the catalogue has it")
            raise Unmappable(f"unknown product: no approval number {item.approval_number}")
        return product

    @staticmethod
    async def _lot(
        session: AsyncSession,
        principal: Principal,
        product: Product,
        batch: str,
        expiry: Any,
        manufacturer_id: int | None,
    ) -> Lot:
        lot = (
            await session.execute(
                select(Lot).where(Lot.product_id == product.id, Lot.batch_number == batch)
            )
        ).scalar_one_or_none()
        if lot is not None:
            if expiry is not None and lot.expiry_date != expiry:
                raise Unmappable(
                    f"lot {batch} of {product.name} expires on {lot.expiry_date.isoformat()} "
                    f"here, the event says {expiry.isoformat()}"
                )
            return lot
        if expiry is None:
            raise Unmappable(
                f"lot {batch} of {product.name} is not known and the event gives no expiry "
                "date (ilmd itemExpirationDate)"
            )
        return await find_or_create_lot(
            session,
            principal,
            product_id=product.id,
            batch_number=batch,
            expiry_date=expiry,
            manufacturer_id=manufacturer_id,
        )

    @staticmethod
    async def _organisation(
        session: AsyncSession, lookups: _Lookups, uri: str
    ) -> Organisation | None:
        party = epcis.parse_party(uri)
        if party is None:
            return None
        if party not in lookups.organisations:
            column = Organisation.gln if party.gln else Organisation.name
            value = party.gln or party.name
            lookups.organisations[party] = (
                await session.execute(select(Organisation).where(column == value))
            ).scalar_one_or_none()
        return lookups.organisations[party]


class _ImportedMeanwhile(Exception):
    """A concurrent import of the same event committed first."""
