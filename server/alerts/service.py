"""Alert use cases: raise once while a condition holds, resolve when it clears, acknowledge.

Raising and resolving happen inside the transaction of the change that caused them (a
dispense that empties a shelf resolves its expiry alert in the same commit), and each raised
alert is emitted on the `alert` topic after commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import Alert, AlertKind, AlertStatus, ComputedLevel, MinimumLevel
from server.alerts.rules import alert_visible, expiry_condition, expiry_key, low_stock_key
from server.catalog.models import Lot, LotStatus, Product
from server.core import audit
from server.core.db import Database, run, utcnow
from server.core.errors import DomainError, ErrorCode, InvalidInput
from server.core.events import Event, EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.steps import took_step
from server.core.validation import check_quantity, get_or_not_found, optional_text
from server.inventory.models import AnyMovement, Balance
from server.network.models import Location

ALERT_TOPIC = "alert"


def _levels_with_usable_stock(table: Any, threshold: Any) -> Any:
    """Levels of some (location, product) pairs with their usable stock on hand: built once,
    the pairs bound (the ledger's hook runs it on every write)."""
    return select(
        table.c.location_id,
        table.c.product_id,
        threshold.label("minimum_quantity"),
        select(func.coalesce(func.sum(Balance.quantity), 0))
        .join(Lot, Lot.id == Balance.lot_id)
        .where(
            Balance.location_id == table.c.location_id,
            Lot.product_id == table.c.product_id,
            Lot.status == LotStatus.RELEASED,
            Lot.expiry_date >= bindparam("today"),
        )
        .scalar_subquery()
        .label("usable"),
    ).where(tuple_(table.c.location_id, table.c.product_id).in_(bindparam("pairs", expanding=True)))


_LEVELS = MinimumLevel.__table__
_COMPUTED = ComputedLevel.__table__
# Every touched pair's level in one statement: manual minimums, and computed reorder points
# only where no manual minimum is set (manual levels win); `computed` tells them apart.
_LEVELS_WITH_USABLE_STOCK = union_all(
    _levels_with_usable_stock(_LEVELS, _LEVELS.c.minimum_quantity).add_columns(
        literal(False).label("computed")
    ),
    _levels_with_usable_stock(_COMPUTED, _COMPUTED.c.reorder_point)
    .add_columns(literal(True).label("computed"))
    .where(
        ~select(_LEVELS.c.id)
        .where(
            _LEVELS.c.location_id == _COMPUTED.c.location_id,
            _LEVELS.c.product_id == _COMPUTED.c.product_id,
        )
        .exists()
    ),
)


@dataclass(frozen=True)
class AlertSpec:
    kind: AlertKind
    condition_key: str
    message: str
    location_id: int | None = None
    product_id: int | None = None
    lot_id: int | None = None
    organisation_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def alert_event(alert: Alert) -> Event:
    return Event(
        ALERT_TOPIC,
        {
            "alert_id": alert.id,
            "kind": alert.kind.value,
            "location_id": alert.location_id,
            "message": alert.message,
        },
    )


@dataclass(frozen=True)
class ExpiryCheckResult:
    raised: int
    resolved: int
    open_total: int


class AlertService:
    def __init__(self, db: Database, bus: EventBus, *, expiry_window_days: int = 90) -> None:
        self.db = db
        self.bus = bus
        self.expiry_window_days = expiry_window_days

    # --- used inside other services' transactions -------------------------------------------

    async def raise_alert(self, session: AsyncSession, spec: AlertSpec) -> Alert | None:
        """Insert the alert unless one is already live for the condition; None if it was."""
        live = (
            await session.execute(
                select(Alert.id).where(
                    Alert.condition_key == spec.condition_key, Alert.active.is_(True)
                )
            )
        ).first()
        if live is not None:
            return None
        alert = Alert(
            kind=spec.kind,
            condition_key=spec.condition_key,
            message=spec.message[:500],
            location_id=spec.location_id,
            organisation_id=spec.organisation_id,
            product_id=spec.product_id,
            lot_id=spec.lot_id,
            details=spec.details,
            raised_at=utcnow(),
        )
        try:
            async with session.begin_nested():
                session.add(alert)
                await session.flush()
        except IntegrityError:
            return None  # a concurrent writer raised the same condition first
        await self.bus.emit(session, [alert_event(alert)])
        return alert

    async def resolve(self, session: AsyncSession, condition_keys: Iterable[str]) -> int:
        keys = list(condition_keys)
        if not keys:
            return 0
        # An UPDATE's result is a CursorResult (it has rowcount); execute() is typed as Result.
        result = cast(
            CursorResult[Any],
            await session.execute(
                update(Alert)
                .where(Alert.condition_key.in_(keys), Alert.active.is_(True))
                .values(active=False, status=AlertStatus.RESOLVED, resolved_at=utcnow())
            ),
        )
        return int(result.rowcount or 0)

    async def after_movements(
        self, session: AsyncSession, written: Iterable[tuple[AnyMovement, Lot]]
    ) -> None:
        """The ledger's hook: low-stock checks for the touched (location, product) pairs, and
        expiry alerts resolved for shelves the movements left empty (their final balance)."""
        written = list(written)
        await self.evaluate_stock(session, {(m.location_id, lot.product_id) for m, lot in written})
        final = {(m.location_id, m.lot_id): m.balance_after for m, _ in written}
        await self.evaluate_expiry(session, [k for k, q in final.items() if q <= 0])

    async def evaluate_stock(
        self, session: AsyncSession, touched: Iterable[tuple[int, int]]
    ) -> None:
        """After movements: LOW_STOCK for (location, product) pairs under their minimum.

        One query reads every touched pair's minimum with its usable quantity on hand; pairs
        back above their minimum resolve in one statement."""
        pairs = set(touched)
        if not pairs:
            return
        bound = {"pairs": list(pairs), "today": utcnow().date()}
        levels = await run(session, _LEVELS_WITH_USABLE_STOCK, bound)
        cleared: list[str] = []
        for level in levels:
            is_computed = bool(level.computed)
            on_hand = level.usable
            key = low_stock_key(level.location_id, level.product_id)
            if on_hand >= level.minimum_quantity:
                cleared.append(key)
                continue
            product = await session.get(Product, level.product_id)
            location = await session.get(Location, level.location_id)
            assert product is not None and location is not None  # a minimum level's foreign keys
            await self.raise_alert(
                session,
                AlertSpec(
                    AlertKind.LOW_STOCK,
                    key,
                    f"{product.name} {product.strength} at {location.code}: {on_hand} usable, "
                    f"{'reorder point' if is_computed else 'minimum'} {level.minimum_quantity}",
                    location_id=level.location_id,
                    product_id=level.product_id,
                    details={"on_hand": on_hand, "minimum": level.minimum_quantity}
                    | ({"source": "REORDER_POINT"} if is_computed else {}),
                ),
            )
        await self.resolve(session, cleared)

    async def evaluate_expiry(
        self, session: AsyncSession, emptied: Iterable[tuple[int, int]]
    ) -> None:
        """After movements: a shelf (location, lot) left empty resolves its expiry alerts."""
        await self.resolve(
            session,
            [
                expiry_key(kind, location_id, lot_id)
                for location_id, lot_id in set(emptied)
                for kind in (AlertKind.EXPIRING_SOON, AlertKind.EXPIRED_ON_SHELF)
            ],
        )

    # --- periodic -----------------------------------------------------------------------------

    async def check_expiry(self, today: date | None = None) -> ExpiryCheckResult:
        """Raise EXPIRING_SOON / EXPIRED_ON_SHELF for stock on shelves; resolve what cleared."""
        today = today or utcnow().date()
        raised = 0
        async with self.db.write() as session:
            rows = (
                await session.execute(
                    select(
                        Balance.location_id,
                        Balance.lot_id,
                        Balance.quantity,
                        Lot.expiry_date,
                        Lot.batch_number,
                        Lot.product_id,
                        Product.name,
                        Location.code,
                    )
                    .join(Lot, Lot.id == Balance.lot_id)
                    .join(Product, Product.id == Lot.product_id)
                    .join(Location, Location.id == Balance.location_id)
                    .where(Balance.quantity > 0)
                )
            ).all()
            holding: set[str] = set()
            for loc, lot, qty, expiry, batch, product_id, name, code in rows:
                kind = expiry_condition(expiry, qty, today, self.expiry_window_days)
                if kind is None:
                    continue
                key = expiry_key(kind, loc, lot)
                holding.add(key)
                verb = "expired on" if kind is AlertKind.EXPIRED_ON_SHELF else "expires on"
                alert = await self.raise_alert(
                    session,
                    AlertSpec(
                        kind,
                        key,
                        f"{qty} x {name} lot {batch} at {code} {verb} {expiry}",
                        location_id=loc,
                        product_id=product_id,
                        lot_id=lot,
                        details={"quantity": qty, "expiry_date": expiry.isoformat()},
                    ),
                )
                raised += alert is not None
            # Expiry also shrinks usable stock: minimum levels are re-checked on every sweep.
            pairs = await session.execute(
                select(MinimumLevel.location_id, MinimumLevel.product_id).union(
                    select(ComputedLevel.location_id, ComputedLevel.product_id)
                )
            )
            await self.evaluate_stock(session, [(loc, product) for loc, product in pairs.all()])
            stale = (
                await session.execute(
                    select(Alert.condition_key).where(
                        Alert.active.is_(True),
                        Alert.kind.in_([AlertKind.EXPIRING_SOON, AlertKind.EXPIRED_ON_SHELF]),
                    )
                )
            ).scalars()
            resolved = await self.resolve(session, [k for k in stale if k not in holding])
            open_total = (
                await session.execute(select(func.count(Alert.id)).where(Alert.active.is_(True)))
            ).scalar_one()
        return ExpiryCheckResult(raised, resolved, open_total)

    # --- user actions ---------------------------------------------------------------------------

    async def acknowledge(self, principal: Principal, alert_id: int, note: str | None) -> Alert:
        principal.require(Permission.ALERT_ACKNOWLEDGE)
        note = optional_text(note, "note", max_length=500)
        async with self.db.write() as session:
            alert = await get_or_not_found(session, Alert, alert_id, "id")
            if alert.location_id is not None:
                principal.require(Permission.ALERT_ACKNOWLEDGE, location_id=alert.location_id)
            if alert.status is not AlertStatus.OPEN:
                raise DomainError(
                    f"alert is already {alert.status.value.lower()}",
                    field="id",
                    code=ErrorCode.INVALID_INPUT,
                )
            alert.status = AlertStatus.ACKNOWLEDGED
            alert.acknowledged_at = utcnow()
            alert.acknowledged_by = principal.user_id
            alert.acknowledgement_note = note
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    action="alert.acknowledge",
                    entity_type="Alert",
                    entity_id=alert.id,
                    after={"status": alert.status.value, "note": note},
                ),
            )
            return alert

    async def set_computed_levels(self, location_id: int, levels: dict[int, int]) -> None:
        """Replace a location's computed reorder points (a system job: replenishment's
        refresh) and re-check its low-stock alerts against them, in one transaction."""
        async with self.db.write() as session:
            existing = {
                row.product_id: row
                for row in (
                    await session.execute(
                        select(ComputedLevel).where(ComputedLevel.location_id == location_id)
                    )
                ).scalars()
            }
            now = utcnow()
            for product_id, old in existing.items():
                if product_id not in levels:
                    await session.delete(old)
            for product_id, point in levels.items():
                row = existing.get(product_id)
                if row is None:
                    session.add(
                        ComputedLevel(
                            location_id=location_id,
                            product_id=product_id,
                            reorder_point=point,
                            computed_at=now,
                        )
                    )
                else:
                    row.reorder_point, row.computed_at = point, now
            await session.flush()
            # a pair that lost its computed level (and has no manual one) is no longer low
            gone = set(existing) - set(levels)
            manual = set(
                (
                    await session.execute(
                        select(MinimumLevel.product_id).where(
                            MinimumLevel.location_id == location_id,
                            MinimumLevel.product_id.in_(gone),
                        )
                    )
                ).scalars()
            )
            await self.resolve(session, [low_stock_key(location_id, p) for p in gone - manual])
            await self.evaluate_stock(session, {(location_id, p) for p in levels})

    async def set_minimum_level(
        self, principal: Principal, *, location_id: int, product_id: int, minimum_quantity: int
    ) -> MinimumLevel:
        principal.require(Permission.STOCK_ADJUST, location_id=location_id)
        if minimum_quantity < 0:
            raise InvalidInput("a minimum level cannot be negative", field="minimum_quantity")
        check_quantity(minimum_quantity, "minimum_quantity")
        async with self.db.write() as session:
            await get_or_not_found(session, Location, location_id, "location")
            await get_or_not_found(session, Product, product_id, "product")
            level = (
                await session.execute(
                    select(MinimumLevel).where(
                        MinimumLevel.location_id == location_id,
                        MinimumLevel.product_id == product_id,
                    )
                )
            ).scalar_one_or_none()
            before = {"minimum_quantity": level.minimum_quantity} if level else None
            if level is None:
                level = MinimumLevel(
                    location_id=location_id,
                    product_id=product_id,
                    minimum_quantity=minimum_quantity,
                )
                session.add(level)
            level.minimum_quantity = minimum_quantity
            level.updated_at = utcnow()
            await session.flush()
            await self.evaluate_stock(session, [(location_id, product_id)])
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    action="minimum_level.set",
                    entity_type="MinimumLevel",
                    entity_id=level.id,
                    before=before,
                    after=audit.snapshot(level, "location_id", "product_id", "minimum_quantity"),
                ),
            )
            return level

    # --- reads ----------------------------------------------------------------------------------

    async def alerts_page(
        self,
        principal: Principal,
        *,
        location_id: int | None,
        statuses: Sequence[AlertStatus],
        kinds: Sequence[AlertKind],
        active: bool | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Alert]:
        """Alerts the principal may see (at `location_id`, if given and in scope), newest first."""
        stmt = select(Alert)
        if location_id is not None:
            principal.require(Permission.STOCK_READ, location_id=location_id)
            stmt = stmt.where(Alert.location_id == location_id)
        else:
            principal.require(Permission.STOCK_READ)
            if principal.location_ids is not None:
                stmt = stmt.where(
                    or_(
                        Alert.location_id.in_(principal.location_ids),
                        and_(
                            Alert.location_id.is_(None),
                            Alert.organisation_id == principal.organisation_id,
                        ),
                    )
                )
        if statuses:
            stmt = stmt.where(Alert.status.in_(statuses))
        if kinds:
            stmt = stmt.where(Alert.kind.in_(kinds))
        if active is not None:
            stmt = stmt.where(Alert.active.is_(active))
        return await keyset_page(
            self.db,
            stmt,
            keys=[Alert.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            descending=True,
            key_of=lambda r: [r.id],
        )

    async def raised_for(
        self, principal: Principal, payload: dict[str, Any], locations: Set[int]
    ) -> Alert | None:
        """The alert behind one `alert` event, if this subscriber (watching `locations`, or
        everything in scope when empty) may see it; None to skip the event."""
        location_id = payload.get("location_id")
        if locations and location_id not in locations:
            return None
        if location_id is not None and not principal.sees_location(location_id):
            return None
        async with self.db.read() as session:
            alert = await session.get(Alert, payload["alert_id"])
        if alert is None or not alert_visible(principal, alert):
            return None
        return alert
