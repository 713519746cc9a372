"""Recall and trace use cases.

A recall takes lots out of use everywhere in one transaction: each lot becomes RECALLED (the
ledger then refuses to ship, transfer or dispense it, and FEFO skips it, while disposal and
receipts of packs still in transit stay possible), a Recall row remembers each lot's previous
status, every location holding stock of a lot gets one RECALL alert, and the audit log says who
did it and why.

Who may recall: ADMIN and REGULATOR any lot; a PHARMACIST (scoped to an organisation or
locations) only lots that were handled at a location in their scope, since the recall then
stops the lot across the whole network.

Who may trace: anyone with TRACE_READ sees every hop and every holder, because a recall needs
the full chain. Patient references are personal data: roles confined to their organisation see
them only for dispenses at locations in their scope; the others are returned redacted (the
dispense, its place, quantity and date stay visible). ADMIN, AUDITOR and REGULATOR see all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import Alert, AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, LotStatus, Product
from server.catalog.service import clean_batch_number
from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import DomainError, Duplicate, ErrorCode, Forbidden, InvalidInput, NotFound
from server.core.events import Event, EventBus
from server.core.numbering import allocate
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal
from server.core.validation import optional_text, required_text
from server.inventory.models import Balance, Movement
from server.network.models import Location, Organisation
from server.supervision.models import Recall, RecallLot
from server.supervision.trace import LotHeader, Names, Trace, assemble_trace, trace_csv

RECALL_TOPIC = "recall"
MAX_RECALL_LOTS = 100
# Serialises reference numbering between concurrent recalls (PostgreSQL; SQLite has one writer).


def recall_alert_key(recall_id: int, location_id: int, lot_id: int) -> str:
    """One alert per (recall, holder, lot); the prefix finds every alert a recall raised."""
    return f"{recall_alert_prefix(recall_id)}{location_id}:{lot_id}"


def recall_alert_prefix(recall_id: int) -> str:
    return f"recall:{recall_id}:"


def recall_message(
    reference: str, product: Product, batch: str, quantity: int, location: Location, reason: str
) -> str:
    return (
        f"RECALL {reference}: {product.name} {product.strength} lot {batch} - {quantity} held at "
        f"{location.code}; quarantined, do not issue. Reason: {reason}"
    )


@dataclass(frozen=True)
class RecallHolder:
    """A location that held stock of a recalled lot when the recall was made."""

    location_id: int
    lot_id: int
    quantity: int
    alert: Alert


@dataclass(frozen=True)
class RecallResult:
    recall: Recall
    lots: list[RecallLot]
    holders: list[RecallHolder]


@dataclass(frozen=True)
class LotTrace:
    lot: Lot
    product: Product
    trace: Trace


class SupervisionService:
    def __init__(self, db: Database, bus: EventBus, alerts: AlertService) -> None:
        self.db = db
        self.bus = bus
        self.alerts = alerts

    # --- recall ---------------------------------------------------------------------------------

    async def recall_lots(
        self,
        principal: Principal,
        *,
        reason: str,
        lot_ids: Sequence[int] | None = None,
        product_id: int | None = None,
        batch_number: str | None = None,
        reference: str | None = None,
    ) -> RecallResult:
        """Recall the named lots (or product + batch) everywhere at once; one transaction."""
        principal.require(Permission.RECALL_MANAGE)
        reason = required_text(reason, "reason", max_length=500)
        reference = optional_text(reference, "reference", max_length=64)
        wanted = _check_selection(lot_ids, product_id, batch_number)
        if wanted is None:
            batch_number = clean_batch_number(batch_number or "")
        async with self.db.write() as session:
            lots = await self._lock_lots(session, wanted, product_id, batch_number)
            await _require_scope(session, principal, lots)
            await _refuse_recalled(session, lots)
            recall = Recall(
                reference=await _reference(session, reference),
                reason=reason,
                initiated_by=principal.user_id,
                initiated_at=utcnow(),
            )
            session.add(recall)
            await session.flush()
            recall_lots = [
                RecallLot(recall_id=recall.id, lot_id=lot.id, previous_status=lot.status.value)
                for lot in lots
            ]
            session.add_all(recall_lots)
            for lot in lots:
                lot.status = LotStatus.RECALLED
            await session.flush()
            holders = await self._alert_holders(session, recall, lots)
            await self.bus.emit(
                session,
                [
                    Event(
                        RECALL_TOPIC,
                        {
                            "recall_id": recall.id,
                            "reference": recall.reference,
                            "lot_ids": [lot.id for lot in lots],
                        },
                    )
                ],
            )
            await audit.record_many(
                session,
                principal,
                [
                    audit.AuditEntry(
                        action="recall.create",
                        entity_type="Recall",
                        entity_id=recall.id,
                        after={
                            "reference": recall.reference,
                            "reason": reason,
                            "lots": [
                                {"lot_id": x.lot_id, "previous_status": x.previous_status}
                                for x in recall_lots
                            ],
                            "holders": [
                                {
                                    "location_id": h.location_id,
                                    "lot_id": h.lot_id,
                                    "quantity": h.quantity,
                                    "alert_id": h.alert.id,
                                }
                                for h in holders
                            ],
                        },
                        reason=reason,
                    ),
                    *(
                        audit.AuditEntry(
                            action="lot.recall",
                            entity_type="Lot",
                            entity_id=x.lot_id,
                            before={"status": x.previous_status},
                            after={"status": LotStatus.RECALLED.value, "recall": recall.reference},
                            reason=reason,
                        )
                        for x in recall_lots
                    ),
                ],
            )
        return RecallResult(recall, recall_lots, holders)

    async def _lock_lots(
        self,
        session: AsyncSession,
        lot_ids: list[int] | None,
        product_id: int | None,
        batch_number: str | None,
    ) -> list[Lot]:
        if lot_ids is not None:
            stmt = select(Lot).where(Lot.id.in_(lot_ids))
        else:
            stmt = select(Lot).where(Lot.product_id == product_id, Lot.batch_number == batch_number)
        lots = list((await session.execute(stmt.order_by(Lot.id).with_for_update())).scalars())
        if lot_ids is not None:
            missing = sorted(set(lot_ids) - {lot.id for lot in lots})
            if missing:
                raise NotFound(f"lot {missing[0]} does not exist", field="lots")
        elif not lots:
            if await session.get(Product, product_id) is None:
                raise NotFound(f"product {product_id} does not exist", field="product")
            raise NotFound(
                f"no lot with batch number {batch_number} of that product", field="batch_number"
            )
        return lots

    async def _alert_holders(
        self, session: AsyncSession, recall: Recall, lots: Sequence[Lot]
    ) -> list[RecallHolder]:
        """One RECALL alert per location holding stock of each lot, right now."""
        rows = (
            await session.execute(
                select(Balance, Location)
                .join(Location, Location.id == Balance.location_id)
                .where(Balance.lot_id.in_([lot.id for lot in lots]), Balance.quantity > 0)
                .order_by(Balance.lot_id, Location.code)
            )
        ).all()
        by_id = {lot.id: lot for lot in lots}
        products = {
            p.id: p
            for p in (
                await session.execute(
                    select(Product).where(Product.id.in_({lot.product_id for lot in lots}))
                )
            ).scalars()
        }
        holders = []
        for balance, location in rows:
            lot = by_id[balance.lot_id]
            product = products[lot.product_id]
            alert = await self.alerts.raise_alert(
                session,
                AlertSpec(
                    AlertKind.RECALL,
                    recall_alert_key(recall.id, location.id, lot.id),
                    recall_message(
                        recall.reference,
                        product,
                        lot.batch_number,
                        balance.quantity,
                        location,
                        recall.reason,
                    ),
                    location_id=location.id,
                    product_id=product.id,
                    lot_id=lot.id,
                    details={
                        "recall_id": recall.id,
                        "recall_reference": recall.reference,
                        "batch_number": lot.batch_number,
                        "quantity": balance.quantity,
                        "reason": recall.reason,
                    },
                ),
            )
            if alert is None:  # pragma: no cover - the key names this recall, so it is new
                raise RuntimeError("a recall alert already existed for a new recall")
            holders.append(RecallHolder(location.id, lot.id, balance.quantity, alert))
        return holders

    # --- recall reads ---------------------------------------------------------------------------

    async def recalls_page(
        self,
        principal: Principal,
        *,
        lot_id: int | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Recall]:
        """Recalls, newest first; with `lot_id`, only those that recalled that lot."""
        principal.require(Permission.STOCK_READ)
        stmt = select(Recall)
        if lot_id is not None:
            stmt = stmt.where(
                Recall.id.in_(select(RecallLot.recall_id).where(RecallLot.lot_id == lot_id))
            )
        return await keyset_page(
            self.db,
            stmt,
            keys=[Recall.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            descending=True,
            key_of=lambda r: [r.id],
        )

    # (below: access is checked by the caller, like every node)

    async def recall_lots_of(self, recall_ids: Sequence[int]) -> list[list[RecallLot]]:
        """The lots of several recalls (one query), in the order asked."""
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(RecallLot)
                    .where(RecallLot.recall_id.in_(recall_ids))
                    .order_by(RecallLot.lot_id)
                )
            ).scalars()
            grouped: dict[int, list[RecallLot]] = {i: [] for i in recall_ids}
            for row in rows:
                grouped[row.recall_id].append(row)
        return [grouped[i] for i in recall_ids]

    async def recall_alerts(self, recall_ids: Sequence[int]) -> list[list[Alert]]:
        """The RECALL alerts each recall raised (one per holder), found by their condition key."""
        if not recall_ids:
            return []
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(Alert)
                    .where(
                        Alert.kind == AlertKind.RECALL,
                        or_(
                            *[
                                Alert.condition_key.startswith(recall_alert_prefix(i))
                                for i in recall_ids
                            ]
                        ),
                    )
                    .order_by(Alert.id)
                )
            ).scalars()
            grouped: dict[int, list[Alert]] = {i: [] for i in recall_ids}
            for alert in rows:
                recall_id = int(alert.condition_key.split(":")[1])
                if recall_id in grouped:
                    grouped[recall_id].append(alert)
        return [grouped[i] for i in recall_ids]

    async def products_by_approval(self, approvals: Sequence[str]) -> list[Product | None]:
        """The product of each approval number (None where none has it), in the order asked."""
        async with self.db.read() as session:
            rows = (
                await session.execute(select(Product).where(Product.approval_number.in_(approvals)))
            ).scalars()
            found = {p.approval_number: p for p in rows}
        return [found.get(a) for a in approvals]

    # --- trace ----------------------------------------------------------------------------------

    async def trace(self, principal: Principal, lot_id: int) -> LotTrace:
        """Backward hops and forward holders of one lot, from its movements."""
        principal.require(Permission.TRACE_READ)
        async with self.db.read() as session:
            return await _trace(session, principal, lot_id)

    async def trace_csv(self, principal: Principal, lot_id: int) -> str:
        """The same trace as CSV, names spelled out (organisation names, location codes)."""
        principal.require(Permission.TRACE_READ)
        async with self.db.read() as session:
            result = await _trace(session, principal, lot_id)
            trace = result.trace
            org_ids = {h.organisation_id for h in trace.organisations} | {
                x
                for h in trace.hops
                for x in (h.from_organisation_id, h.to_organisation_id)
                if x is not None
            }
            organisations = {
                o.id: o.name
                for o in (
                    await session.execute(select(Organisation).where(Organisation.id.in_(org_ids)))
                ).scalars()
            }
            location_ids = {h.location_id for h in trace.locations if h.location_id is not None}
            locations = {
                x.id: x.code
                for x in (
                    await session.execute(select(Location).where(Location.id.in_(location_ids)))
                ).scalars()
            }
        header = LotHeader(
            product=f"{result.product.name} {result.product.strength}",
            approval_number=result.product.approval_number,
            batch_number=result.lot.batch_number,
            expiry_date=result.lot.expiry_date,
            status=result.lot.status.value,
        )
        return trace_csv(trace, header, Names(organisations, locations))


# --- helpers -------------------------------------------------------------------------------------


def visible_recall_alerts(principal: Principal, alerts: Sequence[Alert]) -> list[Alert]:
    """A recall's alerts the caller may see: all of them with TRACE_READ (a trace shows every
    holder anyway), otherwise those at locations in the caller's scope (a nurse: her wards)."""
    if principal.can(Permission.TRACE_READ):
        return list(alerts)
    return [a for a in alerts if a.location_id is None or principal.sees_location(a.location_id)]


def _check_selection(
    lot_ids: Sequence[int] | None, product_id: int | None, batch_number: str | None
) -> list[int] | None:
    """Either lots, or product + batch number: exactly one way of naming what to recall."""
    by_batch = product_id is not None or batch_number is not None
    if lot_ids is not None and by_batch:
        raise InvalidInput("name lots, or a product and batch number, not both", field="lots")
    if lot_ids is None:
        if product_id is None or not (batch_number or "").strip():
            raise InvalidInput(
                "name the lots to recall, or a product and its batch number", field="lots"
            )
        return None
    wanted = sorted(set(lot_ids))
    if not wanted:
        raise InvalidInput("name at least one lot to recall", field="lots")
    if len(wanted) > MAX_RECALL_LOTS:
        raise InvalidInput(f"at most {MAX_RECALL_LOTS} lots per recall", field="lots")
    return wanted


async def _require_scope(session: AsyncSession, principal: Principal, lots: Sequence[Lot]) -> None:
    """Scoped recallers (a hospital's pharmacist) only recall lots their locations handled."""
    if principal.location_ids is None:
        return
    handled = set(
        (
            await session.execute(
                select(Movement.lot_id)
                .where(
                    Movement.lot_id.in_([lot.id for lot in lots]),
                    Movement.location_id.in_(principal.location_ids),
                )
                .distinct()
            )
        ).scalars()
    )
    for lot in lots:
        if lot.id not in handled:
            raise Forbidden(
                "one of these lots never passed through a location in your scope; "
                "a regulator can recall it",
                field="lots",
            )


async def _refuse_recalled(session: AsyncSession, lots: Sequence[Lot]) -> None:
    """A lot is recalled once; the error names the recall that already holds it."""
    recalled = [lot for lot in lots if lot.status is LotStatus.RECALLED]
    if not recalled:
        return
    lot = recalled[0]
    earlier = (
        await session.execute(
            select(Recall)
            .join(RecallLot, RecallLot.recall_id == Recall.id)
            .where(RecallLot.lot_id == lot.id)
            .order_by(Recall.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    by = (
        f" by recall {earlier.reference} on {earlier.initiated_at:%Y-%m-%d} ({earlier.reason})"
        if earlier is not None
        else ""
    )
    raise DomainError(
        f"lot {lot.batch_number} is already recalled{by}",
        field="lots",
        code=ErrorCode.LOT_ALREADY_RECALLED,
    )


async def _reference(session: AsyncSession, given: str | None) -> str:
    if given is not None:
        taken = (await session.execute(select(Recall.id).where(Recall.reference == given))).first()
        if taken is not None:
            raise Duplicate(f"recall reference {given!r} is already taken", field="reference")
        return given
    return await allocate(session, Recall.reference, "RC", utcnow().year)


async def _trace(session: AsyncSession, principal: Principal, lot_id: int) -> LotTrace:
    lot = await session.get(Lot, lot_id)
    if lot is None:
        raise NotFound(f"lot {lot_id} does not exist", field="lot")
    product = await session.get(Product, lot.product_id)
    assert product is not None  # a lot's foreign key
    movements = (
        await session.execute(
            select(Movement)
            .where(Movement.lot_id == lot_id)
            .order_by(Movement.occurred_at, Movement.id)
        )
    ).scalars()
    trace = assemble_trace(list(movements), principal.sees_location)
    return LotTrace(lot, product, trace)
