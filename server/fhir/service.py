"""FHIR MedicationDispense use cases: dispenses in (DISPENSE movements, reversed by RETURN),
and what was dispensed, out.

One request (a single resource or a transaction Bundle of up to 1,000) is one write
transaction, all or nothing, and set-based like `recordMovements`: locations, products and lots
are read in one query each, every identifier is claimed in one statement and every movement is
written by one `LedgerService.apply` (so supervision totals, alerts and stock events follow).

Identifiers (`system|value`) make it idempotent: the claim is the transaction's first write
(`INSERT ... ON CONFLICT DO NOTHING`), so a concurrent twin waits for it (PostgreSQL) or runs
after it (SQLite), then finds the identifier taken and answers with the first result.
- completed, new identifier: DISPENSE of the lot named (a contained Medication's batch) or
  first-expired-first-out; 201.
- completed, known identifier with the same content: the stored result, nothing written; 200.
  Different content under a known identifier is a conflict (409).
- entered-in-error, known identifier: RETURN of every pack its DISPENSE took, same lot and
  location (once: again is a replay); entered-in-error of an unknown identifier is 404.
Scope: DISPENSE needs STOCK_DISPENSE and RETURN STOCK_RETURN at the location (a nurse only at
her wards; OAuth2 clients the `dispense:write` scope). Search needs STOCK_READ and covers the
caller's locations; patient references are shown to whoever may read the location's movements,
as `Movement.patientReference` is in GraphQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product, ProductGtin
from server.core import audit
from server.core.db import Database, dialect_of, utcnow
from server.core.errors import DomainError, ErrorCode
from server.core.security import Permission, Principal
from server.fhir.mapping import COMPLETED, ENTERED_IN_ERROR, DispenseSpec, FhirError
from server.fhir.models import FhirDispense
from server.inventory.models import Movement, MovementKind
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location

PENDING = "pending"  # a claimed identifier, for the length of its transaction
REVERSAL_REASON = "FHIR MedicationDispense entered-in-error"
_HTTP_OF: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.FORBIDDEN: (403, "forbidden"),
    ErrorCode.UNAUTHENTICATED: (401, "login"),
    ErrorCode.NOT_FOUND: (404, "not-found"),
    ErrorCode.INSUFFICIENT_STOCK: (422, "business-rule"),
    ErrorCode.EXPIRED_LOT: (422, "business-rule"),
    ErrorCode.LOT_NOT_ISSUABLE: (422, "business-rule"),
}


@dataclass(frozen=True)
class Stored:
    """One MedicationDispense as held: what the response shows."""

    id: int
    resource: dict[str, Any]
    status: str
    updated_at: Any
    created: bool  # written by this request (201), else the stored result (200)


@dataclass(frozen=True)
class SearchPage:
    rows: list[Stored]
    total: int
    next_after: int | None


def refusal(error: DomainError, expression: str | None) -> FhirError:
    """A service refusal as an OperationOutcome's status, issue type and path."""
    status, code = _HTTP_OF.get(error.code, (422, "processing"))
    return FhirError(status, code, error.message, expression)


def _claim(dialect: str, rows: list[dict[str, Any]]) -> Any:
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return (
        insert(FhirDispense.__table__)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["identifier"])
        .returning(FhirDispense.id, FhirDispense.identifier)
    )


_FINISH = (
    update(FhirDispense.__table__)
    .where(FhirDispense.id == bindparam("pk"))
    .values(
        status=bindparam("new_status"),
        location_id=bindparam("new_location_id"),
        content_hash=bindparam("new_hash"),
        patient_reference=bindparam("new_patient"),
        encounter_reference=bindparam("new_encounter"),
        movement_ids=bindparam("new_movements"),
        resource=bindparam("new_resource"),
        updated_at=bindparam("new_updated"),
    )
)
_REVERSE = (
    update(FhirDispense.__table__)
    .where(FhirDispense.id == bindparam("pk"))
    .values(
        status=ENTERED_IN_ERROR,
        reversal_movement_ids=bindparam("new_reversals"),
        updated_at=bindparam("new_updated"),
    )
)


class FhirService:
    def __init__(self, db: Database, ledger: LedgerService, max_page_size: int = 100) -> None:
        self.db = db
        self.ledger = ledger
        self.max_page_size = max_page_size

    # --- dispenses in ---------------------------------------------------------------------------

    async def submit(
        self,
        principal: Principal,
        specs: Sequence[DispenseSpec],
        targets: Sequence[int | None] = (),
    ) -> list[Stored]:
        """Record dispenses (and reversals) all or nothing; FhirError names what failed.

        `targets[i]`, when given, is the id a PUT addressed: it must hold that identifier."""
        seen: dict[str, int] = {}
        for index, spec in enumerate(specs):
            if spec.identifier in seen:
                raise FhirError(
                    422,
                    "duplicate",
                    f"identifier {spec.identifier} appears twice in this Bundle",
                    f"{spec.base}.identifier",
                )
            seen[spec.identifier] = index
        async with self.db.write() as session:
            return await self._submit(session, principal, specs, list(targets))

    async def _submit(
        self,
        session: AsyncSession,
        principal: Principal,
        specs: Sequence[DispenseSpec],
        targets: list[int | None],
    ) -> list[Stored]:
        now = utcnow()
        dialect = dialect_of(session)
        # 1. Claim every identifier first: a concurrent twin waits here, then finds it taken.
        claimed = dict(
            (
                await session.execute(
                    _claim(
                        dialect,
                        [
                            {
                                "identifier": s.identifier,
                                "actor_id": principal.user_id,
                                "status": PENDING,
                                "content_hash": "",
                                "movement_ids": [],
                                "reversal_movement_ids": [],
                                "resource": {},
                                "created_at": now,
                                "updated_at": now,
                            }
                            for s in specs
                        ],
                    )
                )
            )
            .tuples()
            .all()
        )
        by_identifier = {identifier: pk for pk, identifier in claimed.items()}
        existing = {
            row.identifier: row
            for row in (
                await session.execute(
                    select(FhirDispense).where(
                        FhirDispense.identifier.in_(
                            [s.identifier for s in specs if s.identifier not in by_identifier]
                        )
                    )
                )
            ).scalars()
        }
        locations = await self._locations(session, specs)
        products = await self._products(session, specs)
        lots = await self._lots(session, specs, products)
        # 2. Decide each entry: dispense, reverse, or answer with what is stored.
        requests: list[MovementRequest] = []
        owners: list[tuple[int, str]] = []  # per request: entry index, "dispense" | "reverse"
        originals: dict[int, list[Movement]] = {}
        answers: dict[int, Stored] = {}
        for index, spec in enumerate(specs):
            target = targets[index] if index < len(targets) else None
            row = existing.get(spec.identifier)
            if target is not None and (row is None or row.id != target):
                raise FhirError(
                    404 if row is None else 409,
                    "not-found" if row is None else "conflict",
                    f"MedicationDispense/{target} does not hold identifier {spec.identifier}",
                    f"{spec.base}.identifier",
                )
            location = locations.get(spec.location_code)
            if location is None:
                raise FhirError(
                    422,
                    "not-found",
                    f"no location with code {spec.location_code}",
                    f"{spec.base}.location",
                )
            if row is None:
                if spec.status == ENTERED_IN_ERROR:
                    raise FhirError(
                        404,
                        "not-found",
                        f"no dispense with identifier {spec.identifier} to mark entered-in-error",
                        f"{spec.base}.identifier",
                    )
                self._allow(principal, Permission.STOCK_DISPENSE, location, spec)
                product = self._product_of(spec, products)
                lot_id = self._lot_of(spec, product, lots)
                requests.append(
                    MovementRequest(
                        MovementKind.DISPENSE,
                        location.id,
                        spec.quantity,
                        lot_id=lot_id,
                        product_id=product.id,
                        patient_reference=spec.patient_reference,
                        reference=spec.encounter_reference,
                        occurred_at=spec.occurred_at,
                    )
                )
                owners.append((index, "dispense"))
                continue
            location_id = row.location_id if row.location_id is not None else location.id
            if spec.status == COMPLETED or row.status == ENTERED_IN_ERROR:
                if spec.status == COMPLETED and row.content_hash != spec.content_hash():
                    raise FhirError(
                        409,
                        "conflict",
                        f"identifier {spec.identifier} was already used for a different dispense",
                        f"{spec.base}.identifier",
                    )
                self._allow_read(principal, location_id, spec)
                answers[index] = Stored(row.id, row.resource, row.status, row.updated_at, False)
                continue
            # entered-in-error of a completed dispense: give back what it took.
            self._allow(principal, Permission.STOCK_RETURN, location, spec, location_id)
            taken = list(
                (
                    await session.execute(
                        select(Movement)
                        .where(Movement.id.in_(row.movement_ids))
                        .order_by(Movement.id)
                    )
                ).scalars()
            )
            originals[index] = taken
            for movement in taken:
                requests.append(
                    MovementRequest(
                        MovementKind.RETURN,
                        movement.location_id,
                        -movement.quantity,
                        lot_id=movement.lot_id,
                        patient_reference=movement.patient_reference,
                        reference=movement.reference,
                        reason=REVERSAL_REASON,
                    )
                )
                owners.append((index, "reverse"))
        # 3. One ledger write for every movement of the request.
        written_ids: dict[int, list[int]] = {}
        if requests:
            try:
                written = await self.ledger.apply(session, principal, requests, name_items=True)
            except DomainError as error:
                raise self._entry_error(error, specs, owners) from None
            # Movements come in request order; an outflow picked FEFO may span several lots,
            # so each request owns the run of movements whose packs add up to its quantity.
            position = 0
            for (index, _), request in zip(owners, requests, strict=True):
                left = request.quantity
                while left > 0:
                    made = written.movements[position]
                    written_ids.setdefault(index, []).append(made.id)
                    left -= abs(made.quantity)
                    position += 1
        # 4. Settle the claimed and reversed rows, audit, answer in entry order.
        finished: list[dict[str, Any]] = []
        reversed_: list[dict[str, Any]] = []
        dispensed: dict[str, list[int]] = {}
        reversals: dict[str, list[int]] = {}
        for index, spec in enumerate(specs):
            if index in answers:
                continue
            if spec.identifier in by_identifier:
                pk = by_identifier[spec.identifier]
                location = locations[spec.location_code]
                ids = written_ids.get(index, [])
                finished.append(
                    {
                        "pk": pk,
                        "new_status": COMPLETED,
                        "new_location_id": location.id,
                        "new_hash": spec.content_hash(),
                        "new_patient": spec.patient_reference,
                        "new_encounter": spec.encounter_reference,
                        "new_movements": ids,
                        "new_resource": spec.resource,
                        "new_updated": now,
                    }
                )
                answers[index] = Stored(pk, spec.resource, COMPLETED, now, True)
                dispensed[spec.identifier] = ids
            else:
                row = existing[spec.identifier]
                ids = written_ids.get(index, [])
                reversed_.append({"pk": row.id, "new_reversals": ids, "new_updated": now})
                answers[index] = Stored(row.id, row.resource, ENTERED_IN_ERROR, now, True)
                reversals[spec.identifier] = ids
        if finished:
            await session.execute(_FINISH, finished)
        if reversed_:
            await session.execute(_REVERSE, reversed_)
        if dispensed or reversals:
            # One event per request, as an EPCIS import: each movement has its own already.
            await audit.record(
                session,
                principal,
                action="fhir.medication_dispense",
                entity_type="FhirDispense",
                entity_id=min(a.id for a in answers.values() if a.created),
                after={"dispensed": dispensed, "entered_in_error": reversals},
                reason=REVERSAL_REASON if reversals and not dispensed else None,
            )
        return [answers[i] for i in range(len(specs))]

    @staticmethod
    def _allow(
        principal: Principal,
        permission: Permission,
        location: Location,
        spec: DispenseSpec,
        location_id: int | None = None,
    ) -> None:
        try:
            principal.require(permission, location_id=location_id or location.id)
        except DomainError as error:
            raise refusal(error, f"{spec.base}.location") from None

    @staticmethod
    def _allow_read(principal: Principal, location_id: int, spec: DispenseSpec) -> None:
        """A replay shows a stored dispense only to who may read its location."""
        try:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        except DomainError as error:
            raise refusal(error, f"{spec.base}.location") from None

    @staticmethod
    def _entry_error(
        error: DomainError, specs: Sequence[DispenseSpec], owners: list[tuple[int, str]]
    ) -> FhirError:
        """A ledger refusal (`movements.3.quantity`) as the entry and element it concerns."""
        field = error.field or ""
        parts = field.split(".")
        if len(parts) >= 2 and parts[0] == "movements" and parts[1].isdigit():
            index, _ = owners[int(parts[1])]
            spec = specs[index]
            element = {
                "quantity": ".quantity.value",
                "location": ".location",
                "lot": ".medicationReference",
                "product": ".medicationCodeableConcept",
            }.get(parts[2] if len(parts) > 2 else "", "")
            return refusal(error, f"{spec.base}{element}")
        return refusal(error, specs[0].base if len(specs) == 1 else "Bundle")

    # --- lookups (one query each per request) -------------------------------------------------

    @staticmethod
    async def _locations(
        session: AsyncSession, specs: Sequence[DispenseSpec]
    ) -> dict[str, Location]:
        codes = sorted({s.location_code for s in specs})
        rows = (
            await session.execute(
                select(Location).where(Location.code.in_(codes), Location.active.is_(True))
            )
        ).scalars()
        return {x.code: x for x in rows}

    @staticmethod
    async def _products(
        session: AsyncSession, specs: Sequence[DispenseSpec]
    ) -> dict[tuple[str, str], Product]:
        gtins = sorted({s.medication.gtin for s in specs if s.medication.gtin})
        codes = sorted({s.medication.product_code for s in specs if s.medication.product_code})
        found: dict[tuple[str, str], Product] = {}
        if gtins:
            for gtin, product in (
                await session.execute(
                    select(ProductGtin.gtin, Product)
                    .join(Product, Product.id == ProductGtin.product_id)
                    .where(ProductGtin.gtin.in_(gtins))
                )
            ).all():
                found[("gtin", gtin)] = product
        if codes:
            for product in (
                await session.execute(select(Product).where(Product.approval_number.in_(codes)))
            ).scalars():
                found[("code", product.approval_number)] = product
        return found

    @staticmethod
    async def _lots(
        session: AsyncSession,
        specs: Sequence[DispenseSpec],
        products: dict[tuple[str, str], Product],
    ) -> dict[tuple[int, str], Lot]:
        pairs = set()
        for spec in specs:
            product = products.get(_product_key(spec))
            if product is not None and spec.medication.lot_number:
                pairs.add((product.id, spec.medication.lot_number))
        if not pairs:
            return {}
        rows = (
            await session.execute(
                select(Lot).where(tuple_(Lot.product_id, Lot.batch_number).in_(sorted(pairs)))
            )
        ).scalars()
        return {(lot.product_id, lot.batch_number): lot for lot in rows}

    @staticmethod
    def _product_of(spec: DispenseSpec, products: dict[tuple[str, str], Product]) -> Product:
        product = products.get(_product_key(spec))
        if product is None:
            medication = spec.medication
            what = (
                f"GTIN {medication.gtin}" if medication.gtin else f"code {medication.product_code}"
            )
            raise FhirError(
                422,
                "not-found",
                f"unknown medication: no product in the catalogue has {what}",
                f"{spec.base}.medication"
                + (
                    "CodeableConcept"
                    if "medicationCodeableConcept" in spec.resource
                    else "Reference"
                ),
            )
        return product

    @staticmethod
    def _lot_of(
        spec: DispenseSpec, product: Product, lots: dict[tuple[int, str], Lot]
    ) -> int | None:
        number = spec.medication.lot_number
        if number is None:
            return None
        lot = lots.get((product.id, number))
        path = f"{spec.base}.contained"
        if lot is None:
            raise FhirError(
                422, "not-found", f"{product.name} has no lot with batch {number}", path
            )
        expiry = spec.medication.lot_expiry
        if expiry is not None and expiry != lot.expiry_date:
            raise FhirError(
                422,
                "business-rule",
                f"batch {number} is recorded as expiring on {lot.expiry_date.isoformat()}, "
                f"not {expiry.isoformat()}",
                path,
            )
        return lot.id

    # --- dispenses out ------------------------------------------------------------------------

    async def read(self, principal: Principal, dispense_id: int) -> Stored:
        async with self.db.read() as session:
            row = await session.get(FhirDispense, dispense_id)
            if row is None or row.status == PENDING or row.location_id is None:
                raise FhirError(404, "not-found", f"no MedicationDispense {dispense_id}")
            try:
                principal.require(Permission.STOCK_READ, location_id=row.location_id)
            except DomainError as error:
                raise refusal(error, None) from None
            return Stored(row.id, row.resource, row.status, row.updated_at, False)

    async def search(
        self,
        principal: Principal,
        *,
        patient: str | None,
        identifier: str | None,
        count: int,
        after: int | None,
    ) -> SearchPage:
        """Dispenses in the caller's locations, oldest first, `count` per page."""
        try:
            scope = principal.readable_locations(Permission.STOCK_READ)
        except DomainError as error:
            raise refusal(error, None) from None
        if not 1 <= count <= self.max_page_size:
            raise FhirError(
                400, "value", f"_count must be between 1 and {self.max_page_size}", "_count"
            )
        stmt = select(FhirDispense).where(FhirDispense.status != PENDING)
        if scope is not None:
            stmt = stmt.where(FhirDispense.location_id.in_(scope))
        if patient is not None:
            stmt = stmt.where(FhirDispense.patient_reference == patient)
        if identifier is not None:
            stmt = stmt.where(FhirDispense.identifier == identifier)
        async with self.db.read() as session:
            total = int(
                (
                    await session.execute(select(func.count()).select_from(stmt.subquery()))
                ).scalar_one()
            )
            if after is not None:
                stmt = stmt.where(FhirDispense.id > after)
            rows = list(
                (await session.execute(stmt.order_by(FhirDispense.id).limit(count + 1))).scalars()
            )
        more = len(rows) > count
        rows = rows[:count]
        return SearchPage(
            [Stored(r.id, r.resource, r.status, r.updated_at, False) for r in rows],
            total,
            rows[-1].id if more and rows else None,
        )


def _product_key(spec: DispenseSpec) -> tuple[str, str]:
    medication = spec.medication
    if medication.gtin:
        return ("gtin", medication.gtin)
    return ("code", medication.product_code or "")
