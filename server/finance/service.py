"""Money use cases: valuing movements as they are written, budgets, spend, billing.

Costing runs as a ledger hook (`after_movements`, registered in server/services.py), in the
transaction that wrote the movements and set-based: whatever the batch's size, prices are
looked up in at most four queries (catalogue, purchase orders via shipments, contracts,
dispatched transfers), the averages are locked and read in two, and the valuations and new
averages are written in one statement each. Budget alerts follow in a bounded few.

Where a receipt's price comes from, first that applies: the purchase order line of the
shipment it received (the shipment line's own line, else the order's line for the product),
the buyer's contract with the sender valid on the day, else the catalogue's unit cost. A
production run is valued at the catalogue's (standard) cost; every other movement at the
organisation's moving average of the moment (costing.py says why).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import Alert, AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, Product
from server.catalog.refs import products_of
from server.core import audit
from server.core.db import Database, Driver, dialect_of, midnight_utc, run, utcnow
from server.core.errors import Forbidden, InvalidInput, NotFound
from server.core.events import EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import GLOBAL_ROLES, Permission, Principal
from server.core.validation import check_date, check_decimal
from server.finance import costing
from server.finance.costing import (
    SPEND_KINDS,
    ZERO,
    CostItem,
    ForecastSource,
    Period,
    Position,
)
from server.finance.models import AverageCost, Budget, CostSource, MovementCost, PeriodKind
from server.forecasting.models import StoredSeriesForecast
from server.forecasting.series import Granularity
from server.inventory.models import Movement, MovementKind, WrittenMovement
from server.inventory.service import Written
from server.network.models import Location, Organisation
from server.purchasing.models import PurchaseOrderLine
from server.shipments.models import Shipment, ShipmentLine
from server.suppliers.models import Contract, ContractLine

_ONE_DAY = timedelta(days=1)
MAX_USAGE_ROWS = 100_000  # one CSV export; a longer range is split by the caller
# Finer forecasts project a part of a period better; the first stored one is used.
FORECAST_PREFERENCE = (Granularity.DAILY, Granularity.WEEKLY, Granularity.MONTHLY)


class SpendGrouping(StrEnum):
    LOCATION = "LOCATION"
    ATC = "ATC"
    SUPPLIER = "SUPPLIER"


@dataclass(frozen=True)
class SpendRow:
    key: str | None  # the ATC code, else None
    location_id: int | None
    supplier_id: int | None
    spend: Decimal
    budget: Decimal | None
    remaining: Decimal | None
    percent: Decimal | None
    forecast: Decimal  # spend by period end: so far + projected
    forecast_source: ForecastSource


@dataclass(frozen=True)
class SpendReport:
    organisation_id: int
    currency: str
    period: Period
    group_by: str
    rows: list[SpendRow]
    spend: Decimal
    budget: Decimal | None
    forecast: Decimal
    as_of: date


@dataclass(frozen=True)
class UsageRow:
    movement_id: int
    patient_reference: str
    encounter: str | None
    product_id: int
    product_name: str
    location_id: int
    location_code: str
    quantity: int  # packs dispensed; a return is negative
    unit_cost: Decimal
    total: Decimal
    dispensed_at: datetime


def _upsert(dialect: str) -> Any:
    return sqlite_insert if dialect == "sqlite" else pg_insert


@functools.cache
def _lock_positions_statement(dialect: str) -> Any:
    """Create the missing averages and lock them all, returning each row, in one statement.

    The no-op update of a conflicting row takes its row lock (as FOR UPDATE would); run with
    one parameter set per pair (executemany with RETURNING), so its compiled form is cached."""
    stmt = _upsert(dialect)(AverageCost.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["organisation_id", "product_id"],
        set_={"quantity": AverageCost.__table__.c.quantity},
    ).returning(
        AverageCost.organisation_id,
        AverageCost.product_id,
        AverageCost.quantity,
        AverageCost.value,
        AverageCost.average_cost,
        sort_by_parameter_order=True,
    )


@functools.cache
def _write_positions_statement(dialect: str) -> Any:
    """The re-blended averages written back (built once: `excluded` makes a new alias each
    time it is read)."""
    stmt = _upsert(dialect)(AverageCost.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["organisation_id", "product_id"],
        set_={
            "quantity": stmt.excluded.quantity,
            "value": stmt.excluded.value,
            "average_cost": stmt.excluded.average_cost,
            "updated_at": stmt.excluded.updated_at,
        },
    )


_COST_COLUMNS = (
    "movement_id",
    "organisation_id",
    "location_id",
    "product_id",
    "lot_id",
    "kind",
    "quantity",
    "unit_cost",
    "value",
    "source",
    "supplier_id",
    "reference",
    "occurred_at",
)
_INSERT_COSTS = MovementCost.__table__.insert().values({c: bindparam(c) for c in _COST_COLUMNS})


# PostgreSQL: the movements' costs and the re-blended averages (their rows are locked and
# exist: `_lock_positions`) in one statement, the rows as arrays.
_PG_COST_TYPES = (
    "integer",
    "integer",
    "integer",
    "integer",
    "integer",
    "varchar",
    "integer",
    "numeric",
    "numeric",
    "varchar",
    "integer",
    "varchar",
    "timestamptz",
)
_PG_WRITE_COSTS = (
    f"WITH costs AS (INSERT INTO movement_costs ({', '.join(_COST_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{type_}[]" for n, type_ in enumerate(_PG_COST_TYPES, 1))
    + ") RETURNING 1) UPDATE average_costs AS a SET quantity = p.quantity, value = p.value, "
    "average_cost = p.average_cost, updated_at = $19 FROM unnest($14::integer[], "
    "$15::integer[], $16::integer[], $17::numeric[], $18::numeric[]) AS "
    "p(organisation_id, product_id, quantity, value, average_cost) "
    "WHERE a.organisation_id = p.organisation_id AND a.product_id = p.product_id"
)


async def _pg_write_costs(
    session: AsyncSession,
    costs: list[dict[str, Any]],
    positions: dict[tuple[int, int], Any],
    now: datetime,
) -> None:
    """`_INSERT_COSTS` and `_write_positions_statement` as one round trip (enums by name, as
    SQLAlchemy's non-native Enum stores them)."""
    named = {"kind", "source"}
    columns = [
        [row[name].name for row in costs] if name in named else [row[name] for row in costs]
        for name in _COST_COLUMNS
    ]
    ordered = sorted(positions.items())
    await (await Driver.of(session)).fetch_native(
        _PG_WRITE_COSTS,
        (
            *columns,
            [org for (org, _product), _p in ordered],
            [product for (_org, product), _p in ordered],
            [p.quantity for _key, p in ordered],
            [p.value for _key, p in ordered],
            [p.average for _key, p in ordered],
            now,
        ),
    )


_BUDGETS_SPENT = select(Budget.id).where(
    Budget.location_id.in_(bindparam("locations", expanding=True)),
    Budget.period_start <= bindparam("to"),
    Budget.period_end > bindparam("since"),
)


class FinanceService:
    def __init__(self, db: Database, bus: EventBus, alerts: AlertService) -> None:
        self.db = db
        self.bus = bus
        self.alerts = alerts

    # --- the ledger hook --------------------------------------------------------------------

    async def after_movements(self, session: AsyncSession, written: Written) -> None:
        """Value the movements just written and re-blend the averages, in their transaction."""
        if not written.movements:
            return
        products = {lot.product_id for _m, lot in written}
        catalogue = {p.id: p.unit_cost for p in (await products_of(session, products)).values()}
        prices = await self._receipt_prices(session, written)
        transfers_out = await self._dispatched(session, written)
        positions = await self._lock_positions(
            session, {(m.organisation_id, lot.product_id) for m, lot in written}
        )
        items = []
        for movement, lot in written:
            price, source = prices.get(movement.id, (None, CostSource.CATALOG))
            if movement.kind in costing.PRICED_INFLOWS and price is None:
                price = Decimal(catalogue.get(lot.product_id) or 0)
            items.append(
                CostItem(
                    kind=movement.kind,
                    organisation_id=movement.organisation_id,
                    product_id=lot.product_id,
                    lot_id=lot.id,
                    quantity=movement.quantity,
                    reference=movement.reference,
                    price=price,
                    price_source=source,
                    fallback=Decimal(catalogue.get(lot.product_id) or 0),
                )
            )
        valuations = costing.value_movements(items, positions, transfers_out)
        costs = [
            {
                "movement_id": movement.id,
                "organisation_id": movement.organisation_id,
                "location_id": movement.location_id,
                "product_id": lot.product_id,
                "lot_id": lot.id,
                "kind": movement.kind,
                "quantity": movement.quantity,
                "unit_cost": valuation.unit_cost,
                "value": valuation.value,
                "source": valuation.source,
                "supplier_id": movement.counterparty_id
                if movement.kind is MovementKind.RECEIVE
                else None,
                "reference": movement.reference,
                "occurred_at": movement.occurred_at,
            }
            for (movement, lot), valuation in zip(written, valuations, strict=True)
        ]
        now = utcnow()
        if dialect_of(session) != "sqlite":
            await _pg_write_costs(session, costs, positions, now)
        else:
            await run(session, _INSERT_COSTS, costs)
            await run(
                session,
                _write_positions_statement("sqlite"),
                [
                    {
                        "organisation_id": org,
                        "product_id": product,
                        "quantity": p.quantity,
                        "value": p.value,
                        "average_cost": p.average,
                        "updated_at": now,
                    }
                    for (org, product), p in sorted(positions.items())
                ],
            )
        spent = {
            (m.location_id, m.occurred_at.date()) for m, _lot in written if m.kind in SPEND_KINDS
        }
        if spent:
            await self._check_budgets(session, spent)

    async def _receipt_prices(
        self, session: AsyncSession, written: Written
    ) -> dict[int, tuple[Decimal, CostSource]]:
        """The price paid for each receipt that has one (PO line, else contract)."""
        receipts = [(m, lot) for m, lot in written if m.kind is MovementKind.RECEIVE]
        found: dict[int, tuple[Decimal, CostSource]] = {}
        references = {m.reference for m, _ in receipts if m.reference}
        if references:
            rows = (
                await session.execute(
                    select(
                        Shipment.number,
                        Shipment.receiver_id,
                        PurchaseOrderLine.product_id,
                        ShipmentLine.lot_id,
                        PurchaseOrderLine.unit_price,
                    )
                    .join(
                        PurchaseOrderLine,
                        PurchaseOrderLine.order_id == Shipment.purchase_order_id,
                    )
                    .outerjoin(
                        ShipmentLine,
                        and_(
                            ShipmentLine.shipment_id == Shipment.id,
                            ShipmentLine.purchase_order_line_id == PurchaseOrderLine.id,
                        ),
                    )
                    .where(Shipment.number.in_(references))
                )
            ).all()
            by_lot = {(n, r, lot): p for n, r, _prod, lot, p in rows if lot is not None}
            by_product: dict[tuple[str, int, int], Decimal] = {}
            for number, receiver, product, _lot, price in rows:
                by_product.setdefault((number, receiver, product), price)
            for m, lot in receipts:
                key = (m.reference or "", m.organisation_id)
                paid = by_lot.get((*key, lot.id)) or by_product.get((*key, lot.product_id))
                if paid is not None:
                    found[m.id] = (Decimal(paid), CostSource.PURCHASE_ORDER)
        pending = [(m, lot) for m, lot in receipts if m.id not in found and m.counterparty_id]
        if pending:
            days = [m.occurred_at.date() for m, _ in pending]
            contracts = (
                await session.execute(
                    select(
                        Contract.buyer_id,
                        Contract.supplier_id,
                        ContractLine.product_id,
                        Contract.valid_from,
                        Contract.valid_until,
                        ContractLine.unit_price,
                    )
                    .join(ContractLine, ContractLine.contract_id == Contract.id)
                    .where(
                        tuple_(Contract.buyer_id, Contract.supplier_id).in_(
                            {(m.organisation_id, m.counterparty_id) for m, _ in pending}
                        ),
                        ContractLine.product_id.in_({lot.product_id for _, lot in pending}),
                        Contract.valid_from <= max(days),
                        Contract.valid_until >= min(days),
                    )
                    .order_by(Contract.valid_from.desc(), Contract.id.desc())
                )
            ).all()
            for m, lot in pending:
                day = m.occurred_at.date()
                for buyer, supplier, product, start, until, price in contracts:
                    if (buyer, supplier, product) == (
                        m.organisation_id,
                        m.counterparty_id,
                        lot.product_id,
                    ) and (start <= day <= until):
                        found[m.id] = (Decimal(price), CostSource.CONTRACT)
                        break
        return found

    async def _dispatched(
        self, session: AsyncSession, written: Written
    ) -> dict[tuple[str, int], tuple[int, Decimal]]:
        """Packs and value already sent under the transfers this batch receives."""
        wanted = {
            (m.reference, m.lot_id)
            for m, _ in written
            if m.kind is MovementKind.TRANSFER_IN and m.reference
        }
        if not wanted:
            return {}
        rows = await session.execute(
            select(
                MovementCost.reference,
                MovementCost.lot_id,
                -func.sum(MovementCost.quantity),
                -func.sum(MovementCost.value),
            )
            .where(
                MovementCost.kind == MovementKind.TRANSFER_OUT,
                MovementCost.reference.in_({ref for ref, _ in wanted}),
            )
            .group_by(MovementCost.reference, MovementCost.lot_id)
        )
        return {
            (str(ref), lot): (int(qty), Decimal(value))
            for ref, lot, qty, value in rows.all()
            if (ref, lot) in wanted
        }

    async def _lock_positions(
        self, session: AsyncSession, keys: set[tuple[int, int]]
    ) -> dict[tuple[int, int], Position]:
        """The averages of the touched (organisation, product) pairs, row-locked in key order
        (created first where missing), so concurrent writers re-blend one after the other."""
        now = utcnow()
        rows = await run(
            session,
            _lock_positions_statement(dialect_of(session)),
            [
                {
                    "organisation_id": o,
                    "product_id": p,
                    "quantity": 0,
                    "value": 0,
                    "updated_at": now,
                }
                for o, p in sorted(keys)
            ],
        )
        return {
            (row.organisation_id, row.product_id): Position(
                row.quantity,
                Decimal(row.value),
                Decimal(row.average_cost) if row.average_cost is not None else None,
            )
            for row in rows
        }

    async def backfill(self, batch: int = 1000) -> int:
        """Value the movements written before costing existed (a database migrated to 0013),
        oldest first, a batch per transaction, through the same hook; returns how many.
        Safe to rerun: a valued movement is never valued again."""
        done = 0
        while True:
            async with self.db.write() as session:
                rows = (
                    await session.execute(
                        select(Movement, Lot)
                        .join(Lot, Lot.id == Movement.lot_id)
                        .outerjoin(MovementCost, MovementCost.movement_id == Movement.id)
                        .where(MovementCost.movement_id.is_(None))
                        .order_by(Movement.id)
                        .limit(batch)
                    )
                ).all()
                if not rows:
                    return done
                movements = [
                    WrittenMovement(**{f.name: getattr(m, f.name) for f in fields(WrittenMovement)})
                    for m, _ in rows
                ]
                await self.after_movements(
                    session, Written(movements, [lot for _, lot in rows], {})
                )
                done += len(rows)

    # --- budgets ----------------------------------------------------------------------------

    async def _spend_by_location(
        self, session: AsyncSession, location_ids: Sequence[int], period: Period
    ) -> dict[int, Decimal]:
        rows = await session.execute(
            select(MovementCost.location_id, -func.sum(MovementCost.value))
            .where(
                MovementCost.location_id.in_(location_ids),
                MovementCost.kind.in_(SPEND_KINDS),
                MovementCost.occurred_at >= midnight_utc(period.start),
                MovementCost.occurred_at < midnight_utc(period.end),
            )
            .group_by(MovementCost.location_id)
        )
        return {loc: Decimal(v or 0) for loc, v in rows.all()}

    async def _check_budgets(self, session: AsyncSession, spent: set[tuple[int, date]]) -> None:
        """Alerts for the budgets the spend touched: a warning past its threshold, an alert
        past the amount. Each is raised once, at the crossing (a live one is not repeated)."""
        days = [day for _, day in spent]
        params = {
            "locations": sorted({loc for loc, _ in spent}),
            "to": max(days),
            "since": min(days),
        }
        ids = (await run(session, _BUDGETS_SPENT, params)).scalars()
        if ids:  # most locations have none: the budgets themselves only when there are
            budgets = (await session.execute(select(Budget).where(Budget.id.in_(ids)))).scalars()
            await self._evaluate(session, list(budgets))

    async def _evaluate(self, session: AsyncSession, budgets: Sequence[Budget]) -> None:
        windows: dict[Period, list[Budget]] = defaultdict(list)
        for budget in budgets:
            windows[Period(budget.period_kind, budget.period_start, budget.period_end)].append(
                budget
            )
        spend: dict[int, Decimal] = {}
        for period, group in windows.items():
            by_location = await self._spend_by_location(
                session, sorted({b.location_id for b in group}), period
            )
            for budget in group:
                spend[budget.id] = by_location.get(budget.location_id, ZERO)
        keys = [_alert_key(kind, b.id) for b in budgets for kind in _BUDGET_ALERTS]
        live = set(
            (
                await session.execute(
                    select(Alert.condition_key).where(
                        Alert.condition_key.in_(keys), Alert.active.is_(True)
                    )
                )
            ).scalars()
        )
        clear: list[str] = []
        for budget in budgets:
            amount = Decimal(budget.amount)
            used = spend[budget.id]
            over = used >= amount
            warn = not over and used * 100 >= amount * budget.warning_percent
            label = Period(budget.period_kind, budget.period_start, budget.period_end).label
            for kind, holds in (
                (AlertKind.BUDGET_EXCEEDED, over),
                (AlertKind.BUDGET_WARNING, warn),
            ):
                key = _alert_key(kind, budget.id)
                if holds and key not in live:
                    word = "over" if kind is AlertKind.BUDGET_EXCEEDED else "near"
                    await self.alerts.raise_alert(
                        session,
                        AlertSpec(
                            kind=kind,
                            condition_key=key,
                            message=f"spend {used:.2f} is {word} the {label} budget of "
                            f"{amount:.2f} ({costing.percent(used, amount)} %)",
                            location_id=budget.location_id,
                            organisation_id=budget.organisation_id,
                            details={
                                "budget_id": budget.id,
                                "period": label,
                                "spend": str(costing.amount(used)),
                                "budget": str(amount),
                            },
                        ),
                    )
                elif not holds and key in live:
                    clear.append(key)
        await self.alerts.resolve(session, clear)

    async def set_budget(
        self,
        principal: Principal,
        *,
        location_id: int,
        period: str,
        amount: Decimal,
        warning_percent: int = 90,
    ) -> Budget:
        """Create or replace the budget of a location for a period; alerts follow at once."""
        principal.require(Permission.BUDGET_MANAGE, location_id=location_id)
        span = costing.parse_period(period)
        if isinstance(amount, Decimal):
            check_decimal(amount, "amount")
        else:
            raise InvalidInput("amount must be a decimal number", field="amount")
        if amount < 0:
            raise InvalidInput("a budget cannot be negative", field="amount")
        if not 1 <= warning_percent <= 100:
            raise InvalidInput("warningPercent must be between 1 and 100", field="warning_percent")
        async with self.db.write() as session:
            location = await session.get(Location, location_id)
            if location is None:
                raise NotFound(f"location {location_id} does not exist", field="location")
            _require_organisation(principal, location.organisation_id)
            budget = (
                await session.execute(
                    select(Budget)
                    .where(
                        Budget.location_id == location_id,
                        Budget.period_kind == span.kind,
                        Budget.period_start == span.start,
                    )
                    .with_for_update()
                )
            ).scalar_one_or_none()
            before = _budget_snapshot(budget) if budget is not None else None
            if budget is None:
                budget = Budget(
                    organisation_id=location.organisation_id,
                    location_id=location_id,
                    period_kind=span.kind,
                    period_start=span.start,
                    period_end=span.end,
                )
                session.add(budget)
            budget.amount = amount
            budget.warning_percent = warning_percent
            budget.updated_by = principal.user_id
            budget.updated_at = utcnow()
            await session.flush()
            await self._evaluate(session, [budget])
            await audit.record(
                session,
                principal,
                action="budget.set",
                entity_type="Budget",
                entity_id=budget.id,
                before=before,
                after=_budget_snapshot(budget),
            )
        return budget

    async def budgets_page(
        self,
        principal: Principal,
        *,
        location_id: int | None,
        period: str | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Budget]:
        """Budgets of the caller's organisation (every one for global roles) in scope."""
        locations = principal.readable_locations(Permission.FINANCE_READ, location_id)
        stmt = select(Budget)
        if locations is not None:
            stmt = stmt.where(Budget.location_id.in_(locations))
        if not principal.roles & GLOBAL_ROLES:
            stmt = stmt.where(Budget.organisation_id == principal.organisation_id)
        if period is not None:
            span = costing.parse_period(period)
            stmt = stmt.where(Budget.period_kind == span.kind, Budget.period_start == span.start)
        return await keyset_page(
            self.db,
            stmt,
            keys=[Budget.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r.id],
        )

    # --- reports ----------------------------------------------------------------------------

    async def spend_report(
        self,
        principal: Principal,
        *,
        period: str,
        group_by: str,
        organisation_id: int | None = None,
        today: date | None = None,
    ) -> SpendReport:
        """Spend (dispensed + disposed - returned, at average cost) in the period, grouped,
        against budgets (by location), with the spend projected to the period's end."""
        locations = principal.readable_locations(Permission.FINANCE_READ)
        span = costing.parse_period(period)
        today = today or utcnow().date()
        async with self.db.read() as session:
            org = await self._organisation(session, principal, organisation_id)
            # One row per (location, product, group key): the forecasts are per series.
            key_column: Any
            stmt: Any = select(
                MovementCost.location_id,
                MovementCost.product_id,
                -func.sum(MovementCost.value),
            )
            if group_by == SpendGrouping.ATC:
                key_column = func.coalesce(Product.atc_code, "")
                stmt = stmt.add_columns(key_column).join(
                    Product, Product.id == MovementCost.product_id
                )
            elif group_by == SpendGrouping.SUPPLIER:
                receipts = (
                    select(
                        MovementCost.organisation_id.label("org"),
                        MovementCost.lot_id.label("lot"),
                        func.min(MovementCost.supplier_id).label("supplier"),
                    )
                    .where(
                        MovementCost.kind == MovementKind.RECEIVE,
                        MovementCost.supplier_id.is_not(None),
                    )
                    .group_by(MovementCost.organisation_id, MovementCost.lot_id)
                    .subquery()
                )
                key_column = receipts.c.supplier
                stmt = stmt.add_columns(key_column).outerjoin(
                    receipts,
                    and_(
                        receipts.c.org == MovementCost.organisation_id,
                        receipts.c.lot == MovementCost.lot_id,
                    ),
                )
            elif group_by == SpendGrouping.LOCATION:
                key_column = MovementCost.location_id
                stmt = stmt.add_columns(key_column)
            else:
                raise InvalidInput(f"cannot group spend by {group_by!r}", field="group_by")
            stmt = stmt.where(
                MovementCost.organisation_id == org.id,
                MovementCost.kind.in_(SPEND_KINDS),
                MovementCost.occurred_at >= midnight_utc(span.start),
                MovementCost.occurred_at < midnight_utc(span.end),
            ).group_by(MovementCost.location_id, MovementCost.product_id, key_column)
            if locations is not None:
                stmt = stmt.where(MovementCost.location_id.in_(locations))
            series = [
                (row[0], row[1], Decimal(row[2] or 0), row[3])
                for row in (await session.execute(stmt)).all()
            ]
            projected = await self._projections(session, org.id, series, span, today)
            budgets: dict[int, Decimal] = {}
            if group_by == SpendGrouping.LOCATION:
                budgets = await self._budgets_for(session, org.id, span, locations)
        grouped: dict[Any, list[tuple[Decimal, Decimal | None]]] = defaultdict(list)
        for loc, prod, spend, key in series:
            grouped[key].append((spend, projected.get((loc, prod))))
        for location_id in budgets:
            grouped.setdefault(location_id, [])
        rows = []
        for key, parts in grouped.items():
            spend = sum((s for s, _ in parts), ZERO)
            if today >= span.end:
                forecast, source = spend, ForecastSource.PERIOD_CLOSED
            else:
                ahead = ZERO
                used = set()
                for part_spend, projection in parts:
                    if projection is not None:
                        ahead += projection
                        used.add(ForecastSource.FORECAST)
                    else:
                        ahead += costing.run_rate(part_spend, span, today)
                        used.add(ForecastSource.RUN_RATE)
                forecast = costing.amount(spend + ahead)
                source = (
                    ForecastSource.MIXED
                    if len(used) > 1
                    else used.pop()
                    if used
                    else ForecastSource.RUN_RATE
                )
            budget = budgets.get(key) if group_by == SpendGrouping.LOCATION else None
            rows.append(
                SpendRow(
                    key=key if group_by == SpendGrouping.ATC else None,
                    location_id=key if group_by == SpendGrouping.LOCATION else None,
                    supplier_id=key if group_by == SpendGrouping.SUPPLIER else None,
                    spend=costing.amount(spend),
                    budget=budget,
                    remaining=None if budget is None else costing.amount(budget - spend),
                    percent=costing.percent(spend, budget),
                    forecast=forecast,
                    forecast_source=source,
                )
            )
        rows.sort(key=lambda r: (-r.spend, str(r.key or r.location_id or r.supplier_id or "")))
        total_budget = sum(budgets.values(), ZERO) if budgets else None
        return SpendReport(
            organisation_id=org.id,
            currency=org.currency,
            period=span,
            group_by=group_by,
            rows=rows,
            spend=costing.amount(sum((r.spend for r in rows), ZERO)),
            budget=total_budget,
            forecast=costing.amount(sum((r.forecast for r in rows), ZERO)),
            as_of=today,
        )

    async def _organisation(
        self, session: AsyncSession, principal: Principal, organisation_id: int | None
    ) -> Organisation:
        wanted = organisation_id or principal.organisation_id
        if wanted is None:
            raise InvalidInput("name the organisation", field="organisation")
        _require_organisation(principal, wanted)
        org = await session.get(Organisation, wanted)
        if org is None:
            raise NotFound(f"organisation {wanted} does not exist", field="organisation")
        return org

    async def _projections(
        self,
        session: AsyncSession,
        organisation_id: int,
        series: Sequence[tuple[int, int, Decimal, Any]],
        span: Period,
        today: date,
    ) -> dict[tuple[int, int], Decimal]:
        """Spend still to come per (location, product): stored forecast packs to period end
        times the average cost. Series without a forecast reaching the end are left out."""
        since = max(today + _ONE_DAY, span.start)
        if not series or since >= span.end:
            return {}
        pairs = {(loc, prod) for loc, prod, _s, _k in series}
        forecasts = (
            (
                await session.execute(
                    select(StoredSeriesForecast).where(
                        tuple_(
                            StoredSeriesForecast.location_id, StoredSeriesForecast.product_id
                        ).in_(sorted(pairs))
                    )
                )
            )
            .scalars()
            .all()
        )
        averages = dict(
            (
                await session.execute(
                    select(AverageCost.product_id, AverageCost.average_cost).where(
                        AverageCost.organisation_id == organisation_id,
                        AverageCost.product_id.in_({p for _l, p in pairs}),
                    )
                )
            ).all()
        )
        by_pair: dict[tuple[int, int], dict[Granularity, StoredSeriesForecast]] = defaultdict(dict)
        for f in forecasts:
            if f.location_id is None:  # an organisation's series: spend is per location
                continue
            by_pair[(f.location_id, f.product_id)][Granularity(f.granularity)] = f
        out: dict[tuple[int, int], Decimal] = {}
        for pair, stored in by_pair.items():
            average = averages.get(pair[1])
            if average is None:
                continue
            for granularity in FORECAST_PREFERENCE:
                kept = stored.get(granularity)
                if kept is None:
                    continue
                packs = costing.forecast_quantity(
                    granularity, kept.first_period, kept.points, since, span.end
                )
                if packs is not None:
                    out[pair] = costing.amount(Decimal(str(round(packs, 4))) * Decimal(average))
                    break
        return out

    async def _budgets_for(
        self,
        session: AsyncSession,
        organisation_id: int,
        span: Period,
        locations: Sequence[int] | None,
    ) -> dict[int, Decimal]:
        """Per location, the budget of exactly this period, else the sum of its budgets of
        shorter periods inside it (three monthly budgets make a quarter's)."""
        stmt = select(Budget).where(
            Budget.organisation_id == organisation_id,
            Budget.period_start >= span.start,
            Budget.period_end <= span.end,
        )
        if locations is not None:
            stmt = stmt.where(Budget.location_id.in_(locations))
        exact: dict[int, Decimal] = {}
        inner: dict[int, dict[PeriodKind, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for b in (await session.execute(stmt)).scalars():
            if b.period_kind is span.kind and b.period_start == span.start:
                exact[b.location_id] = Decimal(b.amount)
            else:
                inner[b.location_id][b.period_kind] += Decimal(b.amount)
        for location_id, kinds in inner.items():
            if location_id not in exact:
                # The coarsest kind present (quarters before months), never both added.
                for kind in (PeriodKind.QUARTER, PeriodKind.MONTH):
                    if kind in kinds:
                        exact[location_id] = kinds[kind]
                        break
        return exact

    def _usage_query(
        self,
        principal: Principal,
        *,
        since: date,
        until: date,
        location_id: int | None,
    ) -> Any:
        """Dispenses (and returns, negative) with a patient reference, for billing. Read like
        the movements themselves: stock read in scope, and only at locations the caller sees,
        which is where patient references are visible today; plus the right to see costs."""
        principal.require(Permission.FINANCE_READ)
        locations = principal.readable_locations(Permission.STOCK_READ, location_id)
        check_date(since, "from")
        check_date(until, "to")
        if until < since:
            raise InvalidInput("'to' is before 'from'", field="to")
        stmt = (
            select(
                MovementCost,
                Movement.patient_reference,
                Movement.reference,
                Product.name,
                Location.code,
            )
            .join(Movement, Movement.id == MovementCost.movement_id)
            .join(Product, Product.id == MovementCost.product_id)
            .join(Location, Location.id == MovementCost.location_id)
            .where(
                MovementCost.kind.in_((MovementKind.DISPENSE, MovementKind.RETURN)),
                Movement.patient_reference.is_not(None),
                MovementCost.occurred_at >= midnight_utc(since),
                MovementCost.occurred_at < midnight_utc(until) + _ONE_DAY,  # `to` is inclusive
            )
        )
        if locations is not None:
            stmt = stmt.where(MovementCost.location_id.in_(locations))
        if not principal.roles & GLOBAL_ROLES:
            stmt = stmt.where(MovementCost.organisation_id == principal.organisation_id)
        return stmt

    async def patient_usage(
        self,
        principal: Principal,
        *,
        since: date,
        until: date,
        location_id: int | None = None,
        limit: int = MAX_USAGE_ROWS,
    ) -> list[UsageRow]:
        """Every billing row of the range, oldest first (the CSV export)."""
        stmt = self._usage_query(principal, since=since, until=until, location_id=location_id)
        stmt = stmt.order_by(MovementCost.occurred_at, MovementCost.movement_id).limit(limit + 1)
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).all()
        if len(rows) > limit:
            raise InvalidInput(f"more than {limit:,} rows: ask for a shorter range", field="from")
        return [_usage_row(row) for row in rows]

    async def patient_usage_page(
        self,
        principal: Principal,
        *,
        since: date,
        until: date,
        location_id: int | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[UsageRow]:
        """One page of the same rows, oldest first."""
        stmt = self._usage_query(principal, since=since, until=until, location_id=location_id)
        page = await keyset_page(
            self.db,
            stmt,
            keys=[MovementCost.movement_id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r[0].movement_id],
        )
        return replace(page, rows=[_usage_row(r) for r in page.rows])

    async def currency_of(self, principal: Principal) -> str:
        async with self.db.read() as session:
            org = await self._organisation(session, principal, None)
            return org.currency


_BUDGET_ALERTS = (AlertKind.BUDGET_EXCEEDED, AlertKind.BUDGET_WARNING)


def _alert_key(kind: AlertKind, budget_id: int) -> str:
    return f"{kind}:{budget_id}"


def _require_organisation(principal: Principal, organisation_id: int) -> None:
    if principal.roles & GLOBAL_ROLES or principal.organisation_id == organisation_id:
        return
    raise Forbidden("that organisation's money is not yours to see", field="organisation")


def _usage_row(row: Any) -> UsageRow:
    cost, patient, encounter, name, code = row
    return UsageRow(
        movement_id=cost.movement_id,
        patient_reference=patient,
        encounter=encounter,
        product_id=cost.product_id,
        product_name=name,
        location_id=cost.location_id,
        location_code=code,
        quantity=-cost.quantity,
        unit_cost=Decimal(cost.unit_cost),
        total=-Decimal(cost.value),
        dispensed_at=cost.occurred_at,
    )


def _budget_snapshot(budget: Budget) -> dict[str, object]:
    return {
        "location_id": budget.location_id,
        "period_kind": budget.period_kind.value,
        "period_start": budget.period_start.isoformat(),
        "amount": str(budget.amount),
        "warning_percent": budget.warning_percent,
    }
