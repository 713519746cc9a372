"""Production use cases: a manufacturer commissions a lot (PRODUCE) and its serial numbers.

`ProductionService.record` is recordProduction: one write transaction, idempotent by the
caller's key (`run_once`, as every stock mutation), the PRODUCE movement through the ledger (so
supervision's running totals count it as the batch's total input), the serials in
`commissioned_serials`, and an audit event `production.record` beside the ledger's own.

`commission` is the same rules in the caller's transaction: the EPCIS import routes
`commissioning` ObjectEvents through it (`supervised=True`: a supervising authority enters what
a constituent reported at its own location, so the manufacturer checks are not applied: a
non-manufacturer's commissioning must reach gamma as an illegal inflow, not vanish).

Rules (every refusal typed):
- STOCK_PRODUCE at the location (stock staff; OAuth2 clients need `production:write`);
- the location is the caller's own organisation's (global roles: any) and that organisation
  is a MANUFACTURER (FORBIDDEN otherwise);
- quantity 1..1,000,000,000 (INVALID_INPUT);
- the expiry date lies after the production date (EXPIRED_LOT);
- a known batch keeps its expiry (EXPIRY_MISMATCH) and its manufacturer (FORBIDDEN);
- serials, when given (a list or a range), one per pack (INVALID_INPUT), each (GTIN, serial)
  commissioned once and never one that already left stock (DUPLICATE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product, ProductGtin
from server.catalog.service import clean_batch_number, find_or_create_lot
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import (
    DomainError,
    Duplicate,
    ErrorCode,
    ExpiredLot,
    Forbidden,
    InvalidInput,
    NotFound,
)
from server.core.gs1 import normalize_gtin
from server.core.security import GLOBAL_ROLES, Permission, Principal
from server.core.validation import check_quantity, optional_text
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import AnyMovement, MovementKind
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location, Organisation, OrganisationKind
from server.production.models import CommissionedSerial
from server.production.rules import SerialRange, production_serials
from server.scanning.models import DecommissionedSerial

OPERATION = "recordProduction"
_CHUNK = 500  # IN-lists of serials per query


@dataclass(frozen=True)
class Commission:
    """One lot commissioned at one location. `expiry_date` None is allowed only for a batch
    already known (EPCIS events may name a lot without repeating its expiry)."""

    location_id: int
    product_id: int
    batch_number: str
    expiry_date: date | None
    quantity: int
    serials: tuple[str, ...] = ()
    serial_range: SerialRange | None = None
    gtin: str | None = None
    reference: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Commissioned:
    movement: AnyMovement
    lot: Lot
    gtin: str | None
    serials: int
    replayed: bool = False


class ProductionService:
    def __init__(self, db: Database, ledger: LedgerService) -> None:
        self.db = db
        self.ledger = ledger

    async def record(
        self, principal: Principal, command: Commission, idempotency_key: str
    ) -> Commissioned:
        """recordProduction: all or nothing; a known key returns the first result."""
        key = clean_key(idempotency_key, required=True)
        principal.require(Permission.STOCK_PRODUCE, location_id=command.location_id)
        fingerprint = request_hash(
            OPERATION,
            {
                "location_id": command.location_id,
                "product_id": command.product_id,
                "batch_number": command.batch_number,
                "expiry_date": command.expiry_date,
                "quantity": command.quantity,
                "serials": list(command.serials),
                "serial_range": command.serial_range,
                "gtin": command.gtin,
                "reference": command.reference,
            },
        )

        async def work(session: AsyncSession) -> Commissioned:
            return await self.commission(session, principal, command, request_key=key)

        async def replay(session: AsyncSession, movements: list[AnyMovement]) -> Commissioned:
            (movement,) = movements
            lot = await session.get(Lot, movement.lot_id)
            assert lot is not None
            count, gtin = (
                await session.execute(
                    select(func.count(), func.min(CommissionedSerial.gtin)).where(
                        CommissionedSerial.movement_id == movement.id
                    )
                )
            ).one()
            return Commissioned(movement, lot, gtin, int(count), replayed=True)

        return await run_once(
            self.db,
            principal,
            key=key,
            operation=OPERATION,
            fingerprint=fingerprint,
            work=work,
            movements_of=lambda result: [result.movement],
            replay=replay,
        )

    async def commission(
        self,
        session: AsyncSession,
        principal: Principal,
        command: Commission,
        *,
        request_key: str | None = None,
        supervised: bool = False,
    ) -> Commissioned:
        """Check and write one commissioning in the caller's transaction; raise before
        anything is kept."""
        principal.require(Permission.STOCK_PRODUCE, location_id=command.location_id)
        location = await session.get(Location, command.location_id)
        if location is None or not location.active:
            raise NotFound(f"location {command.location_id} does not exist", field="location")
        maker = await session.get(Organisation, location.organisation_id)
        assert maker is not None  # a location's foreign key
        if not supervised:
            if not principal.roles & GLOBAL_ROLES and (
                principal.organisation_id != location.organisation_id
            ):
                raise Forbidden(
                    f"location {location.code} belongs to {maker.name}, not to your "
                    "organisation: record production at one of your own sites",
                    field="location",
                )
            if maker.kind is not OrganisationKind.MANUFACTURER:
                raise Forbidden(
                    f"{maker.name} is a {maker.kind.value.lower()}, not a manufacturer: only "
                    "manufacturers record production",
                    field="location",
                )
        quantity = command.quantity
        if quantity <= 0:
            raise InvalidInput(f"quantity must be positive, got {quantity}", field="quantity")
        check_quantity(quantity)
        reference = optional_text(command.reference, "reference", max_length=100)
        produced_on = (command.occurred_at or utcnow()).date()
        if command.expiry_date is not None and command.expiry_date <= produced_on:
            raise ExpiredLot(
                f"expiry {command.expiry_date.isoformat()} is not after the production date "
                f"{produced_on.isoformat()}: an expired lot cannot be commissioned",
                field="expiry_date",
            )
        serials = production_serials(quantity, command.serials, command.serial_range)
        product = await session.get(Product, command.product_id)
        if product is None:
            raise NotFound(f"product {command.product_id} does not exist", field="product")
        gtin = await self._gtin(session, product, command.gtin) if serials or command.gtin else None
        lot = await self._lot(session, principal, product, command, maker, supervised)
        written = await self.ledger.apply(
            session,
            principal,
            [
                MovementRequest(
                    MovementKind.PRODUCE,
                    location.id,
                    quantity,
                    lot_id=lot.id,
                    product_id=product.id,
                    reference=reference,
                    occurred_at=command.occurred_at,
                )
            ],
            request_key=request_key,
        )
        ((movement, _),) = written
        if serials:
            assert gtin is not None
            await self._register(session, principal, gtin, serials, movement)
        await audit.record(
            session,
            principal,
            action="production.record",
            entity_type="Lot",
            entity_id=lot.id,
            after={
                "movement_id": movement.id,
                "location_id": location.id,
                "batch_number": lot.batch_number,
                "expiry_date": lot.expiry_date.isoformat(),
                "quantity": quantity,
                "gtin": gtin,
                "serials": len(serials),
                "first_serial": serials[0] if serials else None,
                "last_serial": serials[-1] if serials else None,
            },
        )
        return Commissioned(movement, lot, gtin, len(serials))

    @staticmethod
    async def _gtin(session: AsyncSession, product: Product, given: str | None) -> str:
        """The GTIN the serials are of: the one named (it must be the product's), else the
        product's first."""
        gtins = sorted(
            (
                await session.execute(
                    select(ProductGtin.gtin).where(ProductGtin.product_id == product.id)
                )
            ).scalars()
        )
        if given is not None:
            gtin = normalize_gtin(given.strip())
            if gtin not in gtins:
                raise InvalidInput(f"GTIN {gtin} is not {product.name}'s", field="gtin")
            return gtin
        if not gtins:
            raise InvalidInput(
                f"{product.name} has no GTIN: serial numbers need one (GS1 SGTIN)",
                field="serials",
            )
        return gtins[0]

    @staticmethod
    async def _lot(
        session: AsyncSession,
        principal: Principal,
        product: Product,
        command: Commission,
        maker: Organisation,
        supervised: bool,
    ) -> Lot:
        batch = clean_batch_number(command.batch_number)
        lot = (
            await session.execute(
                select(Lot).where(Lot.product_id == product.id, Lot.batch_number == batch)
            )
        ).scalar_one_or_none()
        if lot is None:
            if command.expiry_date is None:
                raise InvalidInput(
                    f"batch {batch} of {product.name} is new: give its expiry date",
                    field="expiry_date",
                )
            return await find_or_create_lot(
                session,
                principal,
                product_id=product.id,
                batch_number=batch,
                expiry_date=command.expiry_date,
                manufacturer_id=maker.id,
            )
        if command.expiry_date is not None and lot.expiry_date != command.expiry_date:
            raise DomainError(
                f"batch {batch} of {product.name} is recorded as expiring on "
                f"{lot.expiry_date.isoformat()}, not {command.expiry_date.isoformat()}",
                field="expiry_date",
                code=ErrorCode.EXPIRY_MISMATCH,
            )
        if not supervised and lot.manufacturer_id not in (None, maker.id):
            raise Forbidden(
                f"batch {batch} of {product.name} was commissioned by another manufacturer",
                field="batch_number",
            )
        return lot

    @staticmethod
    async def _register(
        session: AsyncSession,
        principal: Principal,
        gtin: str,
        serials: Sequence[str],
        movement: AnyMovement,
    ) -> None:
        """Insert the serials, refusing any this GTIN already has, in the market or gone."""
        for start in range(0, len(serials), _CHUNK):
            chunk = list(serials[start : start + _CHUNK])
            for table in (CommissionedSerial, DecommissionedSerial):
                taken = (
                    (
                        await session.execute(
                            select(table.serial)
                            .where(table.gtin == gtin, table.serial.in_(chunk))
                            .order_by(table.serial)
                            .limit(3)
                        )
                    )
                    .scalars()
                    .all()
                )
                if taken:
                    state = (
                        "was already commissioned"
                        if table is CommissionedSerial
                        else ("already left stock")
                    )
                    raise Duplicate(
                        f"serial {', '.join(taken)} of GTIN {gtin} {state}", field="serials"
                    )
        rows = [
            {
                "gtin": gtin,
                "serial": serial,
                "lot_id": movement.lot_id,
                "location_id": movement.location_id,
                "movement_id": movement.id,
                "actor_id": principal.user_id,
                "commissioned_at": movement.recorded_at,
            }
            for serial in serials
        ]
        try:
            async with session.begin_nested():
                await session.execute(insert(CommissionedSerial), rows)
        except IntegrityError:  # a concurrent commissioning of the same serial committed first
            raise Duplicate(
                f"a serial of GTIN {gtin} was commissioned meanwhile", field="serials"
            ) from None
