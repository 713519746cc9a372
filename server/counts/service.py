"""Stock-count use cases: start, record lines, finalize into COUNT movements, cancel.

A line remembers what the system held for its lot when it was counted (the balance and the id
of the last movement). Finalizing corrects only that difference: the COUNT movement carries
`counted - system at count` and lands on the *current* balance, so stock dispensed or received
between counting a shelf and finalizing is kept, and the result says so line by line.

Each write is one transaction. On PostgreSQL the count row (and, when counting or finalizing,
the balance rows it touches) are locked, so a count cannot be finalized twice, a line cannot be
recorded into a count that is closing, and no movement slips in between a snapshot and its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import (
    DomainError,
    ErrorCode,
    InsufficientStock,
    InvalidInput,
    NotFound,
)
from server.core.events import Event, EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.steps import took_step
from server.core.validation import get_or_not_found, optional_text, required_text
from server.counts.models import CountStatus, StockCount, StockCountLine
from server.inventory.idempotency import clean_key, request_hash, run_once
from server.inventory.models import AnyMovement, Balance, Movement, MovementKind
from server.inventory.service import LedgerService, MovementRequest
from server.network.models import Location

COUNT_TOPIC = "count"
FINALIZE_OPERATION = "finalizeCount"
MAX_COUNTED = 1_000_000_000  # far above any shelf, well inside the INTEGER columns


# --- pure variance maths -----------------------------------------------------------------------


def count_variance(counted: int, system_at_count: int) -> int:
    """What the shelf held beyond (+) or short of (-) the system when it was counted."""
    return counted - system_at_count


def balance_after_count(counted: int, quantity_since: int) -> int:
    """The count fixes what was on the shelf then; what moved after counting stays moved."""
    return counted + quantity_since


def count_reference(count_id: int) -> str:
    """The `reference` of every movement a count writes, so the ledger links back to it."""
    return f"COUNT-{count_id}"


def count_reason(count_id: int, reason: str | None) -> str:
    return reason or f"stock count #{count_id}"


def describe_line(
    *,
    batch: str,
    counted: int,
    system_at_count: int,
    quantity_since: int,
    movements_since: int,
    adjustment: int | None,
    final: int | None,
) -> str:
    """One sentence per line, for people: why the balance ends where it does."""
    parts = [f"lot {batch}: counted {counted}, system held {system_at_count} when counted"]
    if movements_since:
        noun = "movement" if movements_since == 1 else "movements"
        parts.append(f"{quantity_since:+d} moved since ({movements_since} {noun}, kept)")
    if adjustment is not None:
        parts.append(f"adjusted by {adjustment:+d}" if adjustment else "no adjustment needed")
    if final is not None:
        parts.append(f"balance {final}")
    return "; ".join(parts)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineView:
    """A counted line with what happened to its lot since: the live variance, or the outcome."""

    line: StockCountLine
    lot: Lot
    status: CountStatus
    current_quantity: int
    movements_since: list[AnyMovement] = field(default_factory=list)
    adjustment: AnyMovement | None = None

    @property
    def variance(self) -> int:
        return count_variance(self.line.counted_quantity, self.line.system_quantity_at_count)

    @property
    def quantity_since(self) -> int:
        return sum(m.quantity for m in self.movements_since)

    @property
    def balance_after_count(self) -> int | None:
        """OPEN: what finalizing now would leave; FINALIZED: what it left; CANCELLED: None."""
        if self.status is CountStatus.CANCELLED:
            return None
        if self.adjustment is not None:
            return self.adjustment.balance_after
        return balance_after_count(self.line.counted_quantity, self.quantity_since)

    @property
    def explanation(self) -> str:
        finalized = self.status is CountStatus.FINALIZED
        return describe_line(
            batch=self.lot.batch_number,
            counted=self.line.counted_quantity,
            system_at_count=self.line.system_quantity_at_count,
            quantity_since=self.quantity_since,
            movements_since=len(self.movements_since),
            adjustment=(self.adjustment.quantity if self.adjustment else 0) if finalized else None,
            final=self.balance_after_count if finalized else None,
        )


@dataclass(frozen=True)
class FinalizeResult:
    count: StockCount
    lines: list[LineView]
    uncounted: list[Balance]
    movements: list[AnyMovement]
    replayed: bool = False


# --- queries shared by reads and writes ----------------------------------------------------------


async def _lock_count(session: AsyncSession, count_id: int) -> StockCount:
    count = (
        await session.execute(select(StockCount).where(StockCount.id == count_id).with_for_update())
    ).scalar_one_or_none()
    if count is None:
        raise NotFound(f"stock count {count_id} does not exist", field="id")
    return count


def _require_open(count: StockCount, action: str) -> None:
    if count.status is not CountStatus.OPEN:
        raise DomainError(
            f"stock count #{count.id} is {count.status.value}; only an OPEN count can be {action}",
            field="id",
            code=ErrorCode.COUNT_CLOSED,
        )


async def _lines(session: AsyncSession, count_id: int) -> list[tuple[StockCountLine, Lot]]:
    rows = await session.execute(
        select(StockCountLine, Lot)
        .join(Lot, Lot.id == StockCountLine.lot_id)
        .where(StockCountLine.count_id == count_id)
        .order_by(StockCountLine.id)
    )
    return [(line, lot) for line, lot in rows.all()]


async def _balances(
    session: AsyncSession, location_id: int, lot_ids: Sequence[int], *, lock: bool = False
) -> dict[int, int]:
    if not lot_ids:
        return {}
    stmt = (
        select(Balance.lot_id, Balance.quantity)
        .where(Balance.location_id == location_id, Balance.lot_id.in_(sorted(lot_ids)))
        .order_by(Balance.lot_id)
    )
    if lock:
        stmt = stmt.with_for_update()
    return {lot_id: quantity for lot_id, quantity in (await session.execute(stmt)).all()}


async def _movements_since(
    session: AsyncSession, count: StockCount, lines: Sequence[StockCountLine]
) -> tuple[dict[int, list[AnyMovement]], dict[int, Movement]]:
    """Per lot: movements after its line's snapshot, and this count's own COUNT movement.

    For a closed count, movements recorded after it closed are not "since counted".
    """
    if not lines:
        return {}, {}
    M = Movement
    unseen = [x.lot_id for x in lines if x.last_movement_id_at_count is None]
    seen = [x for x in lines if x.last_movement_id_at_count is not None]
    scope: list[ColumnElement[bool]] = []
    if unseen:
        scope.append(M.lot_id.in_(unseen))
    if seen:
        floor = min(x.last_movement_id_at_count or 0 for x in seen)
        scope.append(and_(M.lot_id.in_([x.lot_id for x in seen]), M.id > floor))
    stmt = select(M).where(M.location_id == count.location_id, or_(*scope)).order_by(M.id)
    own = and_(M.kind == MovementKind.COUNT, M.reference == count_reference(count.id))
    if count.closed_at is not None:
        stmt = stmt.where(or_(M.recorded_at <= count.closed_at, own))
    last_seen = {x.lot_id: x.last_movement_id_at_count or 0 for x in lines}
    since: dict[int, list[AnyMovement]] = {x.lot_id: [] for x in lines}
    adjustments: dict[int, Movement] = {}
    reference = count_reference(count.id)
    for movement in (await session.execute(stmt)).scalars():
        if movement.id <= last_seen[movement.lot_id]:
            continue
        if movement.kind is MovementKind.COUNT and movement.reference == reference:
            adjustments[movement.lot_id] = movement
        else:
            since[movement.lot_id].append(movement)
    return since, adjustments


async def _line_views(
    session: AsyncSession, count: StockCount, *, lock: bool = False
) -> list[LineView]:
    pairs = await _lines(session, count.id)
    lines = [line for line, _ in pairs]
    balances = await _balances(session, count.location_id, [x.lot_id for x in lines], lock=lock)
    since, adjustments = await _movements_since(session, count, lines)
    return [
        LineView(
            line=line,
            lot=lot,
            status=count.status,
            current_quantity=balances.get(line.lot_id, 0),
            movements_since=since[line.lot_id],
            adjustment=adjustments.get(line.lot_id),
        )
        for line, lot in pairs
    ]


async def _uncounted(session: AsyncSession, count: StockCount) -> list[Balance]:
    """Lots with stock at the count's location that no line of the count mentions."""
    counted = select(StockCountLine.lot_id).where(StockCountLine.count_id == count.id)
    stmt = (
        select(Balance)
        .where(
            Balance.location_id == count.location_id,
            Balance.quantity != 0,
            Balance.lot_id.not_in(counted),
        )
        .order_by(Balance.id)
    )
    return list((await session.execute(stmt)).scalars().all())


def _count_snapshot(count: StockCount) -> dict[str, object]:
    return audit.snapshot(count, "location_id", "status", "reason")


def _line_snapshot(line: StockCountLine) -> dict[str, object]:
    return audit.snapshot(
        line,
        "count_id",
        "lot_id",
        "counted_quantity",
        "system_quantity_at_count",
        "last_movement_id_at_count",
    )


def _count_event(count: StockCount, lot_id: int | None = None) -> Event:
    return Event(
        COUNT_TOPIC,
        {
            "count_id": count.id,
            "location_id": count.location_id,
            "status": count.status.value,
            "lot_id": lot_id,
        },
    )


class CountService:
    def __init__(self, db: Database, bus: EventBus, ledger: LedgerService) -> None:
        self.db = db
        self.bus = bus
        self.ledger = ledger

    async def _took_step(
        self,
        session: AsyncSession,
        principal: Principal,
        count: StockCount,
        action: str,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        """A count opened or closed: flush, emit its event, and audit it as `count.<action>`.

        The audited `after` is the count's snapshot now plus `after`. Call it last: the audit
        holds the chain's lock.
        """
        await session.flush()  # the snapshot and the event need the count's id
        entry = audit.AuditEntry(
            action=f"count.{action}",
            entity_type="StockCount",
            entity_id=count.id,
            before=before,
            after={**_count_snapshot(count), **(after or {})},
            reason=reason,
        )
        await took_step(session, self.bus, principal, entry, events=[_count_event(count)])

    # --- writes ---------------------------------------------------------------------------------

    async def start(
        self, principal: Principal, location_id: int, reason: str | None = None
    ) -> StockCount:
        """Open a count; one OPEN count per location, so two teams never count into two."""
        principal.require(Permission.COUNT_MANAGE, location_id=location_id)
        reason = optional_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            # The location row is the lock that serialises concurrent starts (PostgreSQL).
            location = (
                await session.execute(
                    select(Location).where(Location.id == location_id).with_for_update()
                )
            ).scalar_one_or_none()
            if location is None or not location.active:
                raise NotFound(f"location {location_id} does not exist", field="location")
            existing = (
                await session.execute(
                    select(StockCount).where(
                        StockCount.location_id == location_id,
                        StockCount.status == CountStatus.OPEN,
                    )
                )
            ).scalar_one_or_none()
            if existing is not None:
                raise DomainError(
                    f"stock count #{existing.id} is already open at {location.code} (started "
                    f"{existing.started_at:%Y-%m-%d %H:%M} UTC); finalize or cancel it first",
                    field="location",
                    code=ErrorCode.COUNT_ALREADY_OPEN,
                )
            count = StockCount(
                location_id=location_id,
                status=CountStatus.OPEN,
                reason=reason,
                started_by=principal.user_id,
                started_at=utcnow(),
            )
            session.add(count)
            await self._took_step(session, principal, count, "start", reason=reason)
        return count

    async def record_line(
        self, principal: Principal, count_id: int, lot_id: int, counted_quantity: int
    ) -> LineView:
        """Record (or replace) what was counted of one lot, snapshotting the system's view."""
        if not 0 <= counted_quantity <= MAX_COUNTED:
            raise InvalidInput(
                f"counted quantity must be between 0 and {MAX_COUNTED}, got {counted_quantity}",
                field="counted_quantity",
            )
        async with self.db.write() as session:
            count = await _lock_count(session, count_id)
            principal.require(Permission.COUNT_MANAGE, location_id=count.location_id)
            _require_open(count, "counted into")
            lot = await session.get(Lot, lot_id)
            if lot is None:
                raise NotFound(f"lot {lot_id} does not exist", field="lot")
            # Locking the balance first means no movement commits between the two reads.
            system = (await _balances(session, count.location_id, [lot_id], lock=True)).get(
                lot_id, 0
            )
            last_movement_id = (
                await session.execute(
                    select(func.max(Movement.id)).where(
                        Movement.location_id == count.location_id, Movement.lot_id == lot_id
                    )
                )
            ).scalar_one()
            line = (
                await session.execute(
                    select(StockCountLine).where(
                        StockCountLine.count_id == count_id, StockCountLine.lot_id == lot_id
                    )
                )
            ).scalar_one_or_none()
            before = _line_snapshot(line) if line is not None else None
            if line is None:
                line = StockCountLine(count_id=count_id, lot_id=lot_id)
                session.add(line)
            line.counted_quantity = counted_quantity
            line.system_quantity_at_count = system
            line.last_movement_id_at_count = last_movement_id
            line.counted_by = principal.user_id
            line.counted_at = utcnow()
            await session.flush()  # the line's id, for its audit entry
            await took_step(
                session,
                self.bus,
                principal,
                audit.AuditEntry(
                    action="count.record_line",
                    entity_type="StockCountLine",
                    entity_id=line.id,
                    before=before,
                    after=_line_snapshot(line),
                ),
                events=[_count_event(count, lot_id)],
            )
        return LineView(line=line, lot=lot, status=count.status, current_quantity=system)

    async def finalize(
        self,
        principal: Principal,
        count_id: int,
        idempotency_key: str | None = None,
        *,
        witness_id: int | None = None,
    ) -> FinalizeResult:
        """Turn each non-zero variance into a COUNT movement on the current balance, at once.

        `witness_id`: a witness already verified (server/controlled), recorded against every
        variance; controlled drugs' variances are refused without one."""
        key = clean_key(idempotency_key)

        async def work(session: AsyncSession) -> FinalizeResult:
            return await self._finalize(session, principal, count_id, key, witness_id)

        async def replay(session: AsyncSession, _movements: list[AnyMovement]) -> FinalizeResult:
            """The first finalization's outcome, rebuilt from the ledger (the hash pins the
            count)."""
            count = await get_or_not_found(session, StockCount, count_id, "id")
            views = await _line_views(session, count)
            movements: list[AnyMovement] = [v.adjustment for v in views if v.adjustment is not None]
            return FinalizeResult(
                count, views, await _uncounted(session, count), movements, replayed=True
            )

        return await run_once(
            self.db,
            principal,
            key=key,
            operation=FINALIZE_OPERATION,
            fingerprint=request_hash(FINALIZE_OPERATION, {"count_id": count_id}),
            work=work,
            movements_of=lambda result: result.movements,
            replay=replay,
        )

    async def _finalize(
        self,
        session: AsyncSession,
        principal: Principal,
        count_id: int,
        key: str | None,
        witness_id: int | None = None,
    ) -> FinalizeResult:
        count = await _lock_count(session, count_id)
        principal.require(Permission.COUNT_MANAGE, location_id=count.location_id)
        _require_open(count, "finalized")
        location = await session.get(Location, count.location_id)
        assert location is not None  # a count's foreign key
        views = await _line_views(session, count, lock=True)
        if not views:
            raise InvalidInput(
                f"stock count #{count.id} has no counted lines; record some, or cancel it",
                field="id",
            )
        for view in views:
            final = balance_after_count(view.line.counted_quantity, view.quantity_since)
            if final < 0 and not location.allow_negative_stock:
                raise InsufficientStock(
                    f"lot {view.lot.batch_number}: counted {view.line.counted_quantity}, but "
                    f"{-view.quantity_since} left after it was counted, so the balance would be "
                    f"{final}; record this lot again, then finalize",
                    field="id",
                )
        reason = count_reason(count.id, count.reason)
        requests = [
            MovementRequest(
                kind=MovementKind.COUNT,
                location_id=count.location_id,
                lot_id=view.line.lot_id,
                quantity=view.variance,
                reason=reason,
                reference=count_reference(count.id),
                witness_id=witness_id,
            )
            for view in views
            if view.variance != 0
        ]
        written = (
            await self.ledger.apply(session, principal, requests, request_key=key)
            if requests
            else []
        )
        adjustments = {m.lot_id: m for m, _ in written}
        count.status = CountStatus.FINALIZED
        count.closed_by = principal.user_id
        count.closed_at = utcnow()
        lines = [
            LineView(
                line=view.line,
                lot=view.lot,
                status=count.status,
                current_quantity=(
                    adjustments[view.line.lot_id].balance_after
                    if view.line.lot_id in adjustments
                    else view.current_quantity
                ),
                movements_since=view.movements_since,
                adjustment=adjustments.get(view.line.lot_id),
            )
            for view in views
        ]
        uncounted = await _uncounted(session, count)
        await self._took_step(
            session,
            principal,
            count,
            "finalize",
            before={"status": CountStatus.OPEN.value},
            after={
                "lines": [
                    {
                        "lot_id": x.line.lot_id,
                        "counted": x.line.counted_quantity,
                        "system_at_count": x.line.system_quantity_at_count,
                        "quantity_since": x.quantity_since,
                        "adjustment": x.adjustment.quantity if x.adjustment else 0,
                        "movement_id": x.adjustment.id if x.adjustment else None,
                        "final": x.balance_after_count,
                    }
                    for x in lines
                ],
                "uncounted_lot_ids": [b.lot_id for b in uncounted],
            },
            reason=reason,
        )
        return FinalizeResult(count, lines, uncounted, [m for m, _ in written])

    async def cancel(self, principal: Principal, count_id: int, reason: str) -> StockCount:
        """Close a count without touching stock; the reason says why it was abandoned."""
        reason = required_text(reason, "reason", max_length=200)
        async with self.db.write() as session:
            count = await _lock_count(session, count_id)
            principal.require(Permission.COUNT_MANAGE, location_id=count.location_id)
            _require_open(count, "cancelled")
            before = _count_snapshot(count)
            count.status = CountStatus.CANCELLED
            count.closed_by = principal.user_id
            count.closed_at = utcnow()
            await self._took_step(session, principal, count, "cancel", before=before, reason=reason)
        return count

    # --- reads ----------------------------------------------------------------------------------

    async def counts_page(
        self,
        principal: Principal,
        *,
        location_id: int | None,
        status: CountStatus | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[StockCount]:
        """Counts in the principal's scope (or at `location_id`, if in scope), newest first."""
        stmt = select(StockCount)
        locations = principal.readable_locations(Permission.STOCK_READ, location_id)
        if locations is not None:
            stmt = stmt.where(StockCount.location_id.in_(locations))
        if status is not None:
            stmt = stmt.where(StockCount.status == status)
        return await keyset_page(
            self.db,
            stmt,
            keys=[StockCount.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            descending=True,
            key_of=lambda r: [r.id],
        )

    # (below: access is checked by the caller, like every node)

    async def line_views(self, count_ids: Sequence[int]) -> list[list[LineView]]:
        """Live lines of several counts (one read session), in the order asked."""
        async with self.db.read() as session:
            counts = {
                c.id: c
                for c in (
                    await session.execute(select(StockCount).where(StockCount.id.in_(count_ids)))
                ).scalars()
            }
            return [await _line_views(session, counts[i]) if i in counts else [] for i in count_ids]

    async def uncounted(self, count_ids: Sequence[int]) -> list[list[Balance]]:
        """Lots with stock but no line, per count, live."""
        async with self.db.read() as session:
            counts = {
                c.id: c
                for c in (
                    await session.execute(select(StockCount).where(StockCount.id.in_(count_ids)))
                ).scalars()
            }
            return [await _uncounted(session, counts[i]) if i in counts else [] for i in count_ids]
