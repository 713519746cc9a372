"""Ledger use cases. Each public method is one transaction: movements, balances, audit, events.

Other services that move stock inside their own transaction (transfers, receiving) call
`apply_movements` with their session, so the ledger rules are written exactly once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.service import AlertService
from server.catalog.models import Lot, LotStatus
from server.catalog.service import find_or_create_lot
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import (
    InsufficientStock,
    InvalidInput,
    NotFound,
)
from server.core.events import Event, EventBus
from server.core.security import Principal
from server.core.validation import optional_text
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import Balance, Movement, MovementKind
from server.inventory.rules import (
    KIND_PERMISSION,
    OUTFLOWS,
    REASON_REQUIRED,
    check_issuable,
    signed_quantity,
)
from server.network.models import Location
from server.supervision.checks import refresh_status
from server.supervision.totals import record_totals

STOCK_TOPIC = "stock"


@dataclass(frozen=True)
class MovementRequest:
    """What a caller asks for. Without `lot_id`, outflows pick lots first-expired-first-out."""

    kind: MovementKind
    location_id: int
    quantity: int
    lot_id: int | None = None
    product_id: int | None = None
    reason: str | None = None
    patient_reference: str | None = None
    reference: str | None = None
    counterparty_id: int | None = None
    occurred_at: datetime | None = None
    new_lot: NewLot | None = None


@dataclass(frozen=True)
class NewLot:
    """A batch seen for the first time on receipt: found, or created with this expiry."""

    product_id: int
    batch_number: str
    expiry_date: date
    manufacturer_id: int | None = None


@dataclass(frozen=True)
class LedgerResult:
    movements: list[Movement]
    replayed: bool = False


def movement_snapshot(movement: Movement) -> dict[str, object]:
    return {
        "kind": movement.kind.value,
        "lot_id": movement.lot_id,
        "location_id": movement.location_id,
        "quantity": movement.quantity,
        "balance_after": movement.balance_after,
        "reason": movement.reason,
        "reference": movement.reference,
        "patient_reference": movement.patient_reference,
    }


def stock_event(movement: Movement, product_id: int) -> Event:
    return Event(
        STOCK_TOPIC,
        {
            "movement_id": movement.id,
            "location_id": movement.location_id,
            "lot_id": movement.lot_id,
            "product_id": product_id,
            "quantity": movement.balance_after,
            "actor_id": movement.actor_id,
        },
    )


@functools.cache
def _balance_upsert(dialect: str) -> Any:
    """Built once per dialect: constructing upserts per call costs more than running them."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(Balance).values(
        location_id=bindparam("location_id"),
        lot_id=bindparam("lot_id"),
        quantity=bindparam("delta"),
        updated_at=bindparam("now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=["location_id", "lot_id"],
        set_={
            "quantity": Balance.quantity + stmt.excluded.quantity,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(Balance.quantity)


async def _upsert_balance(
    session: AsyncSession, location_id: int, lot_id: int, delta: int, now: datetime
) -> int:
    """Atomically add `delta` and return the new quantity (row-locked on PostgreSQL)."""
    stmt = _balance_upsert(session.bind.dialect.name)
    params = {"location_id": location_id, "lot_id": lot_id, "delta": delta, "now": now}
    return (await session.execute(stmt, params)).scalar_one()


async def _fefo_allocation(
    session: AsyncSession, request: MovementRequest, on_date: datetime
) -> list[tuple[Lot, int]]:
    """Split an outflow across issuable lots, earliest expiry first (locks rows on PostgreSQL)."""
    if request.product_id is None:
        raise InvalidInput("name a lot or a product to issue from", field="product")
    rows = (
        await session.execute(
            select(Lot, Balance.quantity)
            .join(Balance, Balance.lot_id == Lot.id)
            .where(
                Balance.location_id == request.location_id,
                Lot.product_id == request.product_id,
                Balance.quantity > 0,
                Lot.status == LotStatus.RELEASED,
                Lot.expiry_date >= on_date.date(),
            )
            .order_by(Lot.expiry_date, Lot.id)
            .with_for_update(of=Balance)
        )
    ).all()
    remaining = request.quantity
    allocation: list[tuple[Lot, int]] = []
    for lot, available in rows:
        take = min(available, remaining)
        allocation.append((lot, take))
        remaining -= take
        if remaining == 0:
            return allocation
    available_total = request.quantity - remaining
    raise InsufficientStock(
        f"only {available_total} issuable on hand at this location "
        f"(expired and held lots excluded), {request.quantity} requested",
        field="quantity",
    )


async def _resolve(
    session: AsyncSession,
    principal: Principal,
    request: MovementRequest,
    field: str,
    known: _Known,
) -> list[tuple[Lot, Location, int]]:
    """Check one request and decide which lots it touches (FEFO for outflows without a lot)."""
    try:
        signed_quantity(request.kind, request.quantity)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=field) from None
    principal.require(KIND_PERMISSION[request.kind], location_id=request.location_id)
    if request.kind in REASON_REQUIRED and not (request.reason or "").strip():
        raise InvalidInput(f"{request.kind.value} needs a reason", field="reason")
    optional_text(request.reason, "reason", max_length=200)
    optional_text(request.reference, "reference", max_length=100)
    optional_text(request.patient_reference, "patientReference", max_length=100)
    location = known.locations.get(request.location_id)
    if location is None or not location.active:
        raise NotFound(f"location {request.location_id} does not exist", field="location")
    occurred_at = request.occurred_at or utcnow()
    if request.lot_id is None and request.kind in OUTFLOWS:
        allocation = await _fefo_allocation(session, request, occurred_at)
        return [(lot, location, quantity) for lot, quantity in allocation]
    if request.lot_id is not None:
        lot = known.lots.get(request.lot_id)
        if lot is None:
            raise NotFound(f"lot {request.lot_id} does not exist", field="lot")
    elif request.new_lot is not None:
        lot = await find_or_create_lot(session, principal, **asdict(request.new_lot))
    else:
        raise InvalidInput("name the lot this stock belongs to", field="lot")
    if request.product_id is not None and lot.product_id != request.product_id:
        raise InvalidInput(f"lot {lot.batch_number} is not of that product", field="lot")
    check_issuable(
        request.kind,
        batch=lot.batch_number,
        expiry=lot.expiry_date,
        status=lot.status,
        on=occurred_at.date(),
    )
    return [(lot, location, request.quantity)]


@dataclass
class _Known:
    """Lots and locations a batch names, loaded in two queries and held for its duration."""

    lots: dict[int, Lot]
    locations: dict[int, Location]


async def _preload(session: AsyncSession, requests: Sequence[MovementRequest]) -> _Known:
    lot_ids = {r.lot_id for r in requests if r.lot_id is not None}
    location_ids = {r.location_id for r in requests}
    # Share-locked (PostgreSQL) so a recall or quarantine committing meanwhile is seen, not raced.
    lot_query = select(Lot).where(Lot.id.in_(lot_ids)).with_for_update(read=True)
    lots = (await session.execute(lot_query)).scalars() if lot_ids else []
    locations = (
        await session.execute(select(Location).where(Location.id.in_(location_ids)))
    ).scalars()
    return _Known({x.id: x for x in lots}, {x.id: x for x in locations})


async def apply_movements(
    session: AsyncSession,
    principal: Principal,
    requests: Sequence[MovementRequest],
    *,
    request_key: str | None = None,
) -> list[tuple[Movement, Lot]]:
    """Check and write movements in the caller's transaction; raise before anything is kept."""
    if not requests:
        raise InvalidInput("no movements given", field="movements")
    now = utcnow()
    pending: list[tuple[dict[str, Any], Lot]] = []
    known = await _preload(session, requests)
    with session.no_autoflush:
        for index, request in enumerate(requests):
            field = "quantity" if len(requests) == 1 else f"movements.{index}.quantity"
            for lot, location, quantity in await _resolve(
                session, principal, request, field, known
            ):
                delta = signed_quantity(request.kind, quantity)
                balance = await _upsert_balance(session, location.id, lot.id, delta, now)
                if balance < 0 and not location.allow_negative_stock:
                    raise InsufficientStock(
                        f"only {balance - delta} of lot {lot.batch_number} on hand at "
                        f"{location.code}, {abs(delta)} requested",
                        field=field,
                    )
                row = dict(
                    kind=request.kind,
                    lot_id=lot.id,
                    location_id=location.id,
                    organisation_id=location.organisation_id,
                    counterparty_id=request.counterparty_id,
                    quantity=delta,
                    balance_after=balance,
                    reference=request.reference,
                    patient_reference=request.patient_reference,
                    reason=request.reason,
                    actor_id=principal.user_id,
                    request_key=request_key,
                    occurred_at=request.occurred_at or now,
                    recorded_at=now,
                )
                pending.append((row, lot))
    stored = (
        await session.scalars(
            insert(Movement).returning(Movement, sort_by_parameter_order=True),
            [row for row, _ in pending],
        )
    ).all()
    written = list(zip(stored, [lot for _, lot in pending], strict=True))
    await audit.record_many(
        session,
        principal,
        [
            audit.AuditEntry(
                action=f"stock.{movement.kind.value.lower()}",
                entity_type="Movement",
                entity_id=movement.id,
                after=movement_snapshot(movement),
                reason=movement.reason,
            )
            for movement, _lot in written
        ],
    )
    return written


class LedgerService:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        alerts: AlertService,
        *,
        transit_window: timedelta = timedelta(hours=72),
    ) -> None:
        self.db = db
        self.bus = bus
        self.alerts = alerts
        self.transit_window = transit_window

    async def apply(
        self,
        session: AsyncSession,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        request_key: str | None = None,
    ) -> list[tuple[Movement, Lot]]:
        """Movements in the caller's transaction, with their stock events and alert checks."""
        written = await apply_movements(session, principal, requests, request_key=request_key)
        batches = await record_totals(session, written)
        # Supervision status of each touched batch, in this transaction; changes raise alerts.
        await refresh_status(session, batches, self.alerts, transit_window=self.transit_window)
        await self.bus.emit(session, [stock_event(m, lot.product_id) for m, lot in written])
        await self.alerts.evaluate_stock(
            session, {(m.location_id, lot.product_id) for m, lot in written}
        )
        # The final balance of each shelf decides: emptied ones resolve their expiry alerts.
        final = {(m.location_id, m.lot_id): m.balance_after for m, _ in written}
        await self.alerts.evaluate_expiry(session, [k for k, q in final.items() if q <= 0])
        return written

    async def record(
        self,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        operation: str,
        idempotency_key: str | None = None,
    ) -> LedgerResult:
        """Record movements all-or-nothing; a known idempotency key returns the first result."""
        key = clean_key(idempotency_key)
        fingerprint = request_hash(operation, [asdict(r) for r in requests])

        async def work(session: AsyncSession) -> LedgerResult:
            written = await self.apply(session, principal, requests, request_key=key)
            return LedgerResult([m for m, _ in written])

        async def replay(_session: AsyncSession, movements: list[Movement]) -> LedgerResult:
            return LedgerResult(movements, replayed=True)

        return await run_once(
            self.db,
            principal,
            key=key,
            operation=operation,
            fingerprint=fingerprint,
            work=work,
            movements_of=lambda result: result.movements,
            replay=replay,
        )
