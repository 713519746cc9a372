"""Scanning use cases: what a pack's barcode means here, and acting on it through the ledger.

A scan is one transaction: resolve the product (by GTIN) and the lot (by batch), then write
the movement with `LedgerService.apply` (which checks role, location, expiry and stock) and,
for a serialised pack, its decommission record. Rules of serials (EU FMD / DSCSA style):

- DISPENSE and DISPOSE decommission a serial; a second decommission of the same (GTIN, serial)
  is refused (SERIAL_ALREADY_DECOMMISSIONED, naming when and where it left) and raises a
  SERIAL_DECOMMISSIONED_TWICE alert in a transaction of its own, so the alert outlives the
  refusal.
- RETURN of a decommissioned serial re-commissions it: the decommission row is deleted so the
  pack can be dispensed again; the audit log keeps its history (`serial.recommission`).
- RECEIVE and COUNT leave serials alone.

COUNT records nothing: it answers what the system holds of that lot at that location, for the
person counting; stock-takes are recorded through the counts API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import AlertKind
from server.alerts.rules import serial_key
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, Product, ProductGtin
from server.catalog.refs import LOT_COLUMNS, lot_from_row
from server.core import audit
from server.core.cache import cached_one
from server.core.db import Database, run
from server.core.errors import DomainError, ErrorCode, InvalidInput, NotFound
from server.core.security import Permission, Principal
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import AnyMovement, Balance, MovementKind
from server.inventory.rules import KIND_PERMISSION
from server.inventory.service import LedgerService, MovementRequest, NewLot
from server.network.models import Location
from server.scanning.gs1 import BarcodeInvalid, ScannedPack, normalize_barcode, parse_barcode
from server.scanning.models import DecommissionedSerial

OPERATION = "recordScan"


class ScanAction(StrEnum):
    DISPENSE = "DISPENSE"
    RECEIVE = "RECEIVE"
    RETURN = "RETURN"
    DISPOSE = "DISPOSE"
    COUNT = "COUNT"


ACTION_KIND: dict[ScanAction, MovementKind] = {
    ScanAction.DISPENSE: MovementKind.DISPENSE,
    ScanAction.RECEIVE: MovementKind.RECEIVE,
    ScanAction.RETURN: MovementKind.RETURN,
    ScanAction.DISPOSE: MovementKind.DISPOSE,
}
DECOMMISSIONING = frozenset({ScanAction.DISPENSE, ScanAction.DISPOSE})


@dataclass(frozen=True)
class ScanCommand:
    """One scan as the client sent it (location already decoded to its id)."""

    barcode: str
    location_id: int
    action: ScanAction
    idempotency_key: str
    quantity: int = 1
    patient_reference: str | None = None
    reason: str | None = None
    witness_id: int | None = None  # verified by server/controlled; not in the fingerprint


@dataclass(frozen=True)
class ScanPreview:
    """What a barcode means: the parsed pack, the product and lot it names, what is wrong."""

    pack: ScannedPack | None
    product: Product | None = None
    lot: Lot | None = None
    quantity_on_hand: int | None = None
    problems: tuple[DomainError, ...] = ()


@dataclass(frozen=True)
class ScanResult:
    scan: ScanPreview
    movements: list[AnyMovement] = field(default_factory=list)
    replayed: bool = False


class UnknownProduct(DomainError):
    code = ErrorCode.UNKNOWN_PRODUCT


class UnknownBatch(DomainError):
    code = ErrorCode.UNKNOWN_BATCH


class ExpiryMismatch(DomainError):
    code = ErrorCode.EXPIRY_MISMATCH


class SerialAlreadyDecommissioned(DomainError):
    """Refused second decommission; carries the alert to raise once the refusal rolled back."""

    code = ErrorCode.SERIAL_ALREADY_DECOMMISSIONED

    def __init__(self, message: str, alert: AlertSpec) -> None:
        super().__init__(message, field="barcode")
        self.alert = alert


def check_expiry(pack: ScannedPack, lot: Lot) -> None:
    """The printed expiry must be the recorded one: a mismatch means a misprint or a fake."""
    if pack.expiry_date is not None and pack.expiry_date != lot.expiry_date:
        raise ExpiryMismatch(
            f"the barcode says batch {lot.batch_number} expires on "
            f"{pack.expiry_date.isoformat()}, but it is recorded as expiring on "
            f"{lot.expiry_date.isoformat()}",
            field="barcode",
        )


def _fingerprint(command: ScanCommand) -> str:
    return request_hash(
        OPERATION,
        {
            "barcode": normalize_barcode(command.barcode),
            "location_id": command.location_id,
            "action": command.action.value,
            "quantity": command.quantity,
            "patient_reference": command.patient_reference,
            "reason": command.reason,
        },
    )


class ScanningService:
    def __init__(self, db: Database, ledger: LedgerService, alerts: AlertService) -> None:
        self.db = db
        self.ledger = ledger
        self.alerts = alerts

    # --- preview ------------------------------------------------------------------------------

    async def preview(
        self, principal: Principal, barcode: str, *, location_id: int | None = None
    ) -> ScanPreview:
        """Read-only: what the barcode names; problems are returned, not raised."""
        principal.require(Permission.CATALOG_READ)
        if location_id is not None:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        try:
            pack = parse_barcode(barcode)
        except BarcodeInvalid as error:
            return ScanPreview(None, problems=(error,))
        async with self.db.read() as session:
            if location_id is not None:
                await self._location(session, location_id)
            return await self._describe(session, pack, location_id)

    async def _describe(
        self, session: AsyncSession, pack: ScannedPack, location_id: int | None
    ) -> ScanPreview:
        try:
            product = await self._product(session, pack)
        except DomainError as error:
            return ScanPreview(pack, problems=(error,))
        lot = await self._lot(session, product.id, pack.batch_number)
        problems: list[DomainError] = []
        if lot is not None:
            try:
                check_expiry(pack, lot)
            except DomainError as error:
                problems.append(error)
        on_hand = None
        if location_id is not None:
            on_hand = await self._on_hand(session, location_id, product.id, lot)
        return ScanPreview(pack, product, lot, on_hand, tuple(problems))

    # --- recording ----------------------------------------------------------------------------

    async def record(self, principal: Principal, command: ScanCommand) -> ScanResult:
        """Act on a scan all-or-nothing; a known idempotency key returns the first result."""
        key = clean_key(command.idempotency_key, required=True)
        if command.action is ScanAction.COUNT:
            principal.require(Permission.STOCK_READ, location_id=command.location_id)
        else:
            kind = ACTION_KIND[command.action]
            principal.require(KIND_PERMISSION[kind], location_id=command.location_id)
        pack = parse_barcode(command.barcode)
        if pack.serial is not None and command.quantity != 1:
            raise InvalidInput(
                f"serial {pack.serial} identifies one pack: quantity must be 1, "
                f"not {command.quantity}",
                field="quantity",
            )
        if command.action is ScanAction.COUNT:
            return await self._count(pack, command)

        async def work(session: AsyncSession) -> ScanResult:
            return await self._apply(session, principal, pack, command, key)

        async def replay(session: AsyncSession, movements: list[AnyMovement]) -> ScanResult:
            scan = await self._describe(session, pack, None)
            lot_ids = {m.lot_id for m in movements}
            if scan.lot is None and len(lot_ids) == 1:
                scan = ScanPreview(pack, scan.product, await session.get(Lot, lot_ids.pop()))
            return ScanResult(scan, movements, replayed=True)

        try:
            return await run_once(
                self.db,
                principal,
                key=key,
                operation=OPERATION,
                fingerprint=_fingerprint(command),
                work=work,
                movements_of=lambda result: result.movements,
                replay=replay,
            )
        except SerialAlreadyDecommissioned as refused:
            # The scan rolled back; the warning that someone tried must not.
            async with self.db.write() as session:
                await self.alerts.raise_alert(session, refused.alert)
            raise

    async def _apply(
        self,
        session: AsyncSession,
        principal: Principal,
        pack: ScannedPack,
        command: ScanCommand,
        key: str,
    ) -> ScanResult:
        product = await self._product(session, pack)
        request, lot = await self._movement_request(session, pack, product, command)
        # A serial that left stock may not leave again, nor be received back into stock as if
        # new (a falsified or diverted pack); only a RETURN re-commissions it.
        if command.action in DECOMMISSIONING | {ScanAction.RECEIVE} and pack.serial is not None:
            first = (
                await session.execute(
                    select(DecommissionedSerial).where(
                        DecommissionedSerial.gtin == pack.gtin,
                        DecommissionedSerial.serial == pack.serial,
                    )
                )
            ).scalar_one_or_none()
            if first is not None:
                raise await self._twice(session, first, pack, product, command)
        preloaded = [(lot, product.approval_number)] if lot is not None else []
        written = await self.ledger.apply(
            session, principal, [request], request_key=key, preloaded=preloaded
        )
        if pack.serial is not None:
            await self._track_serial(session, principal, pack, product, command, written[0])
        lots = {lot.id: lot for _, lot in written}
        lot = next(iter(lots.values())) if len(lots) == 1 else None
        return ScanResult(ScanPreview(pack, product, lot), [m for m, _ in written])

    async def _movement_request(
        self, session: AsyncSession, pack: ScannedPack, product: Product, command: ScanCommand
    ) -> tuple[MovementRequest, Lot | None]:
        """The ledger request a scan stands for (the barcode's lot, a new lot, or FEFO), and
        the lot when it was read (share-locked, so the ledger need not read it again)."""
        kind = ACTION_KIND[command.action]
        lot_id: int | None = None
        lot: Lot | None = None
        new_lot: NewLot | None = None
        if pack.batch_number is None:
            if command.action is not ScanAction.DISPENSE:
                raise InvalidInput(
                    f"this barcode carries no batch number (10); {command.action.value} needs "
                    "one: scan the pack's 2D code",
                    field="barcode",
                )
        else:
            lot = await self._lot(session, product.id, pack.batch_number, locked=True)
            if lot is not None:
                check_expiry(pack, lot)
                lot_id = lot.id
            elif command.action is not ScanAction.RECEIVE:
                raise self._unknown_batch(pack, product)
            elif pack.expiry_date is None:
                raise UnknownBatch(
                    f"batch {pack.batch_number} of {product.name} is new and the barcode has "
                    "no expiry date (17) to create it with; receive it with its expiry date",
                    field="barcode",
                )
            else:
                new_lot = NewLot(product.id, pack.batch_number, pack.expiry_date)
        request = MovementRequest(
            kind=kind,
            location_id=command.location_id,
            quantity=command.quantity,
            lot_id=lot_id,
            product_id=product.id,
            reason=command.reason,
            patient_reference=command.patient_reference,
            new_lot=new_lot,
            witness_id=command.witness_id,
        )
        return request, lot

    async def _track_serial(
        self,
        session: AsyncSession,
        principal: Principal,
        pack: ScannedPack,
        product: Product,
        command: ScanCommand,
        written: tuple[AnyMovement, Lot],
    ) -> None:
        """Decommission on DISPENSE/DISPOSE, re-commission on RETURN; audited either way."""
        movement, lot = written
        assert pack.serial is not None
        if command.action in DECOMMISSIONING:
            row = DecommissionedSerial(
                gtin=pack.gtin,
                serial=pack.serial,
                lot_id=lot.id,
                location_id=movement.location_id,
                movement_id=movement.id,
                kind=movement.kind.value,
                actor_id=principal.user_id,
                decommissioned_at=movement.recorded_at,
            )
            try:
                async with session.begin_nested():
                    session.add(row)
                    await session.flush()
            except IntegrityError:
                # A concurrent scan of the same pack committed first.
                first = (
                    await session.execute(
                        select(DecommissionedSerial).where(
                            DecommissionedSerial.gtin == pack.gtin,
                            DecommissionedSerial.serial == pack.serial,
                        )
                    )
                ).scalar_one()
                raise await self._twice(session, first, pack, product, command) from None
            await audit.record(
                session,
                principal,
                action="serial.decommission",
                entity_type="DecommissionedSerial",
                entity_id=row.id,
                after=_serial_snapshot(row),
            )
        elif command.action is ScanAction.RETURN:
            recorded = (
                await session.execute(
                    select(DecommissionedSerial).where(
                        DecommissionedSerial.gtin == pack.gtin,
                        DecommissionedSerial.serial == pack.serial,
                    )
                )
            ).scalar_one_or_none()
            if recorded is None:
                return
            before = _serial_snapshot(recorded)
            await session.execute(
                delete(DecommissionedSerial).where(DecommissionedSerial.id == recorded.id)
            )
            await audit.record(
                session,
                principal,
                action="serial.recommission",
                entity_type="DecommissionedSerial",
                entity_id=recorded.id,
                before=before,
                after={"returned_by_movement_id": movement.id},
                reason=command.reason,
            )

    async def _twice(
        self,
        session: AsyncSession,
        first: DecommissionedSerial,
        pack: ScannedPack,
        product: Product,
        command: ScanCommand,
    ) -> SerialAlreadyDecommissioned:
        """The refusal naming when and where the pack left, with the alert it must raise."""
        assert pack.serial is not None
        where = await session.get(Location, first.location_id)
        here = await session.get(Location, command.location_id)
        where_code = where.code if where else str(first.location_id)
        here_code = here.code if here else str(command.location_id)
        when = _utc_text(first.decommissioned_at)
        left = "dispensed" if first.kind == MovementKind.DISPENSE.value else "disposed of"
        message = (
            f"serial {pack.serial} of GTIN {pack.gtin} already left stock: {left} at "
            f"{where_code} on {when}"
        )
        alert = AlertSpec(
            AlertKind.SERIAL_DECOMMISSIONED_TWICE,
            serial_key(pack.gtin, pack.serial),
            f"{product.name} {product.strength} serial {pack.serial} scanned for "
            f"{command.action.value} at {here_code} after it was {left} at {where_code} on "
            f"{when}: possible duplicate or falsified pack",
            location_id=command.location_id,
            product_id=product.id,
            lot_id=first.lot_id,
            details={
                "gtin": pack.gtin,
                "serial": pack.serial,
                "first_kind": first.kind,
                "first_location": where_code,
                "first_at": when,
                "first_movement_id": first.movement_id,
                "attempted_action": command.action.value,
                "attempted_location": here_code,
            },
        )
        return SerialAlreadyDecommissioned(message, alert)

    # --- counting and replays -----------------------------------------------------------------

    async def _count(self, pack: ScannedPack, command: ScanCommand) -> ScanResult:
        """COUNT writes nothing: the lot and what the system holds of it at the location."""
        async with self.db.read() as session:
            await self._location(session, command.location_id)
            product = await self._product(session, pack)
            if pack.batch_number is None:
                raise InvalidInput(
                    "this barcode carries no batch number (10); COUNT needs one: scan the "
                    "pack's 2D code",
                    field="barcode",
                )
            lot = await self._lot(session, product.id, pack.batch_number)
            if lot is None:
                raise self._unknown_batch(pack, product)
            check_expiry(pack, lot)
            on_hand = await self._on_hand(session, command.location_id, product.id, lot)
        return ScanResult(ScanPreview(pack, product, lot, on_hand))

    @staticmethod
    async def _product(session: AsyncSession, pack: ScannedPack) -> Product:
        """The GTIN's product, from the process's reference cache when it is current."""
        product = await cached_one(session, "scanning.product_by_gtin", pack.gtin, _load_product)
        if product is None:
            ndc = f" (NDC {pack.ndc})" if pack.ndc else ""
            raise UnknownProduct(
                f"no product in the catalogue has GTIN {pack.gtin}{ndc}", field="barcode"
            )
        return product

    @staticmethod
    async def _lot(
        session: AsyncSession, product_id: int, batch: str | None, *, locked: bool = False
    ) -> Lot | None:
        """The lot of a product's batch; `locked` share-locks it (PostgreSQL) as the ledger's
        own lot read does, so the ledger can take it as read."""
        if batch is None:
            return None
        query = _LOT_OF_BATCH_LOCKED if locked else _LOT_OF_BATCH
        row = (await run(session, query, {"product_id": product_id, "batch": batch})).first()
        return None if row is None else lot_from_row(row)

    @staticmethod
    async def _location(session: AsyncSession, location_id: int) -> Location:
        location = await session.get(Location, location_id)
        if location is None:
            raise NotFound(f"location {location_id} does not exist", field="location")
        return location

    @staticmethod
    async def _on_hand(
        session: AsyncSession, location_id: int, product_id: int, lot: Lot | None
    ) -> int:
        """Of the lot when the barcode names one, else of the product across its lots."""
        stmt = select(func.coalesce(func.sum(Balance.quantity), 0)).where(
            Balance.location_id == location_id
        )
        if lot is not None:
            stmt = stmt.where(Balance.lot_id == lot.id)
        else:
            stmt = stmt.where(
                Balance.lot_id.in_(select(Lot.id).where(Lot.product_id == product_id))
            )
        return int((await session.execute(stmt)).scalar_one())

    @staticmethod
    def _unknown_batch(pack: ScannedPack, product: Product) -> UnknownBatch:
        return UnknownBatch(
            f"batch {pack.batch_number} of {product.name} {product.strength} is not known here; "
            "it must be received first",
            field="barcode",
        )


_LOT_OF_BATCH = select(*LOT_COLUMNS).where(
    Lot.product_id == bindparam("product_id"), Lot.batch_number == bindparam("batch")
)
_LOT_OF_BATCH_LOCKED = _LOT_OF_BATCH.with_for_update(read=True)

_PRODUCT_BY_GTIN = (
    select(Product.__table__)
    .join(ProductGtin.__table__, ProductGtin.product_id == Product.id)
    .where(ProductGtin.gtin == bindparam("gtin"))
)


async def _load_product(session: AsyncSession, gtin: str) -> Product | None:
    """A transient Product (in no session, so it may be shared by requests; never changed)."""
    row = (await session.execute(_PRODUCT_BY_GTIN, {"gtin": gtin})).mappings().first()
    return None if row is None else Product(**row)


def _serial_snapshot(row: DecommissionedSerial) -> dict[str, object]:
    return {
        "gtin": row.gtin,
        "serial": row.serial,
        "lot_id": row.lot_id,
        "location_id": row.location_id,
        "movement_id": row.movement_id,
        "kind": row.kind,
        "decommissioned_at": row.decommissioned_at.isoformat(),
    }


def _utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
