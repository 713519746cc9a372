"""Reorder suggestions for a location, and turning the accepted ones into draft purchase orders
(grouped by supplier) or ward transfers. No GraphQL here.

What a location gets depends on where it sits: a ward (a WARD with a parent location) is topped
up from its parent, the central pharmacy, to a par level; any other location buys from suppliers
under a contract of its organisation valid today. The numbers come from the ledger and the
purchasing and transfer rooms, the decisions from the pure rules in `rules`.

Demand of a buying location is the consumption of the location and of the wards it supplies
(its child locations): what the wards use is what the pharmacy must buy. The forecast comes from
ONE place, `_forecast`: a stored forecast when the forecasting room has one (`ForecastSource`),
else the average daily consumption of the last FALLBACK_WEEKS weeks from the ledger, with a
spread from the weekly totals (never below Poisson).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.service import AlertService
from server.catalog.models import Lot, LotStatus, Product
from server.core.db import Database, midnight_utc, utcnow
from server.core.errors import Duplicate, InvalidInput, NotFound
from server.core.security import Permission, Principal
from server.forecasting.engine import StoredForecast
from server.forecasting.series import Granularity
from server.inventory.models import Balance, Movement, MovementKind
from server.network.models import Location, LocationKind, Organisation
from server.purchasing.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus
from server.purchasing.service import NewOrder, OrderLineFields, PurchasingService
from server.replenishment import rules
from server.replenishment.plan import OrderPlan, plan_orders
from server.replenishment.rules import (
    ContractTerms,
    DemandForecast,
    OpenPurchaseLine,
    ProductClass,
    PurchaseItem,
    Suggestion,
    SuggestionKind,
    TransferLine,
    WardNeed,
)
from server.shipments.models import Shipment, ShipmentStatus
from server.suppliers.models import Contract, ContractLine
from server.transfers.models import Transfer, TransferPick, TransferStatus
from server.transfers.models import TransferLine as TransferLineRow
from server.transfers.service import LineRequest, TransferService

FALLBACK_WEEKS = 8  # the ledger average looks back this far when no forecast is stored
FORECAST_GRANULARITY = Granularity.WEEKLY  # what is asked of the forecasting room
FORECAST_HORIZON_DAYS = 180  # the ledger average is extended this far
PERIOD_DAYS = {"DAILY": 1.0, "WEEKLY": 7.0, "MONTHLY": 365.25 / 12}
SHELF_LIFE_LOOKBACK_DAYS = 365
MAX_LINES = 200
OPEN_ORDER = (
    PurchaseOrderStatus.DRAFT,  # a draft made from a suggestion must not be suggested again
    PurchaseOrderStatus.SUBMITTED,
    PurchaseOrderStatus.ACKNOWLEDGED,
    PurchaseOrderStatus.PARTIALLY_RECEIVED,
)
ASKED_FOR = (TransferStatus.REQUESTED, TransferStatus.APPROVED, TransferStatus.PICKED)
NOTE = "From reorder suggestions"


# --- the forecast source (the forecasting room's stored forecasts, when wired) --------------------


class ForecastSource(Protocol):
    """Where stored forecasts come from: `ForecastingService` (a seam, so the pure maths and
    its tests need no forecasting run)."""

    async def stored_forecast(
        self, session: AsyncSession, product_id: int, location_id: int, granularity: Granularity
    ) -> StoredForecast | None: ...


def from_stored(stored: StoredForecast) -> DemandForecast:
    """A stored forecast as means and spreads per period (from the interval's upper bound)."""
    granularity = str(getattr(stored.granularity, "value", stored.granularity)).upper()
    period = PERIOD_DAYS.get(granularity)
    if period is None:
        raise InvalidInput(f"unknown forecast granularity {granularity!r}", field="granularity")
    upper = [max(float(u), float(p)) for p, u in zip(stored.points, stored.upper, strict=True)]
    return DemandForecast.from_intervals(
        [max(float(p), 0.0) for p in stored.points],
        {stored.level / 100: upper},
        period_days=period,
    )


def from_weekly_totals(weeks: Sequence[float]) -> DemandForecast:
    """A flat daily forecast from recent weekly consumption: mean rate, spread from the weeks
    (at least Poisson: a handful of packs a week is never known more exactly than that)."""
    mean_week = max(sum(weeks) / len(weeks), 0.0)
    sd_week = statistics.stdev(weeks) if len(weeks) > 1 else 0.0
    sd_week = max(sd_week, math.sqrt(mean_week))
    days = FORECAST_HORIZON_DAYS
    return DemandForecast((mean_week / 7,) * days, (sd_week / math.sqrt(7),) * days)


def combine(forecasts: Sequence[DemandForecast]) -> DemandForecast:
    """The sum of independent location forecasts (same granularity): means add, variances add."""
    if len(forecasts) == 1:
        return forecasts[0]
    period = forecasts[0].period_days
    if any(f.period_days != period for f in forecasts):
        raise InvalidInput("forecasts of different granularities cannot be added")
    n = max(len(f.mean) for f in forecasts)

    def at(values: Sequence[float], k: int) -> float:
        return values[min(k, len(values) - 1)]

    mean = tuple(sum(at(f.mean, k) for f in forecasts) for k in range(n))
    sd = tuple(math.sqrt(sum(at(f.sd, k) ** 2 for f in forecasts)) for k in range(n))
    return DemandForecast(mean, sd, period)


def product_class(product: Product) -> ProductClass:
    """A product marked critical is CRITICAL (the highest service-level floor, even when it is
    also scheduled); a scheduled drug is CONTROLLED; anything else STANDARD."""
    if product.critical:
        return ProductClass.CRITICAL
    return ProductClass.CONTROLLED if product.controlled_schedule else ProductClass.STANDARD


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestions:
    location_id: int
    kind: SuggestionKind
    source_location_id: int | None  # wards: the location that tops them up
    today: date
    suggestions: list[Suggestion]


@dataclass(frozen=True)
class LocationPlan:
    location_id: int
    today: date
    plan: OrderPlan


@dataclass(frozen=True)
class PurchaseChoice:
    product_id: int
    supplier_id: int
    quantity: int


@dataclass(frozen=True)
class TransferChoice:
    location_id: int  # the ward
    product_id: int
    quantity: int


class ReplenishmentService:
    def __init__(
        self,
        db: Database,
        purchasing: PurchasingService,
        transfers: TransferService,
        alerts: AlertService,
        forecasts: ForecastSource,
    ) -> None:
        self.db = db
        self.alerts = alerts
        self.purchasing = purchasing
        self.transfers = transfers
        self.forecasts = forecasts

    # --- reads ----------------------------------------------------------------------------------

    async def suggestions(
        self,
        principal: Principal,
        location_id: int,
        *,
        include_not_needed: bool = False,
        today: date | None = None,
    ) -> Suggestions:
        """What to order (or ask the pharmacy for) at one location today, and why."""
        principal.require(Permission.STOCK_READ, location_id=location_id)
        today = today or utcnow().date()
        async with self.db.read() as session:
            location = await session.get(Location, location_id)
            if location is None or not location.active:
                raise NotFound(f"location {location_id} does not exist", field="location")
            parent = await self._supplying_parent(session, location)
            if parent is None:
                principal.require(Permission.PROCUREMENT_READ)  # prices and suppliers
            kind, source, found = await self._suggest(session, location, parent, today)
        if not include_not_needed:
            found = [s for s in found if s.quantity > 0]
        found.sort(key=lambda s: (s.quantity == 0, s.product_id))
        return Suggestions(location_id, kind, source, today, found)

    async def _suggest(
        self, session: AsyncSession, location: Location, parent: Location | None, today: date
    ) -> tuple[SuggestionKind, int | None, list[Suggestion]]:
        if parent is not None:
            return (
                SuggestionKind.TRANSFER,
                parent.id,
                await self._ward(session, location, parent, today),
            )
        return SuggestionKind.PURCHASE, None, await self._purchases(session, location, today)

    async def plan(
        self,
        principal: Principal,
        location_id: int,
        *,
        budget: float | None = None,
        storage_capacity: float | None = None,
        pack_space: Mapping[int, float] | None = None,
        today: date | None = None,
    ) -> LocationPlan:
        """Today's purchase suggestions of a (non-ward) location cut to a budget and to free
        storage space; see `plan.plan_orders`. Space is counted per pack in the caller's units
        (`pack_space`, 1 when absent: `storage_capacity` is then a number of packs)."""
        principal.require(Permission.STOCK_READ, location_id=location_id)
        principal.require(Permission.PROCUREMENT_READ)
        if budget is None and storage_capacity is None:
            raise InvalidInput("give a budget, a storage capacity or both", field="budget")
        today = today or utcnow().date()
        async with self.db.read() as session:
            location = await session.get(Location, location_id)
            if location is None or not location.active:
                raise NotFound(f"location {location_id} does not exist", field="location")
            if await self._supplying_parent(session, location) is not None:
                raise InvalidInput(
                    f"{location.name} is a ward topped up by its pharmacy: plan the pharmacy's "
                    "purchases instead",
                    field="location",
                )
            items = await self._purchase_items(session, location, today)
        result = plan_orders(
            items, today, budget=budget, capacity=storage_capacity, pack_space=pack_space
        )
        result.lines.sort(key=lambda p: (p.quantity == 0, p.suggestion.product_id))
        return LocationPlan(location_id, today, result)

    async def refresh_reorder_points(self, today: date | None = None) -> int:
        """A system job (the server's periodic checks): every active location's reorder points
        (par levels for wards) become its computed LOW_STOCK thresholds; a manual minimum level
        still wins. Returns how many levels were written."""
        today = today or utcnow().date()
        written = 0
        async with self.db.read() as session:
            locations = list(
                (
                    await session.execute(
                        select(Location).where(Location.active).order_by(Location.id)
                    )
                ).scalars()
            )
            found = []
            for location in locations:
                parent = await self._supplying_parent(session, location)
                _, _, suggestions = await self._suggest(session, location, parent, today)
                found.append((location.id, suggestions))
        for location_id, suggestions in found:
            levels = {
                s.product_id: math.ceil(point - 1e-9)
                for s in suggestions
                if (point := s.why.get("reorder_point", s.why.get("par_level"))) is not None
                and point > 0
            }
            await self.alerts.set_computed_levels(location_id, levels)
            written += len(levels)
        return written

    async def _supplying_parent(self, session: AsyncSession, location: Location) -> Location | None:
        if location.kind is not LocationKind.WARD or location.parent_id is None:
            return None
        parent = await session.get(Location, location.parent_id)
        return parent if parent is not None and parent.active else None

    async def _purchases(
        self, session: AsyncSession, location: Location, today: date
    ) -> list[Suggestion]:
        return [s for _, s in await self._purchase_items(session, location, today)]

    async def _purchase_items(
        self, session: AsyncSession, location: Location, today: date
    ) -> list[tuple[PurchaseItem, Suggestion]]:
        children = list(
            (
                await session.execute(
                    select(Location.id).where(Location.parent_id == location.id, Location.active)
                )
            ).scalars()
        )
        served = [location.id, *children]
        contracts = await _contracts(session, location.organisation_id)
        product_ids = sorted(
            set(contracts) | await _products_seen(session, served, today, FALLBACK_WEEKS)
        )
        if not product_ids:
            return []
        products = await _products(session, product_ids)
        on_hand = await _on_hand(session, location.id, product_ids, today)
        open_lines = await _open_order_lines(session, location.id, product_ids)
        inbound, outbound = await _transfers(session, location.id, product_ids)
        deliveries = await _deliveries(session, location.organisation_id)
        shelf = await _shelf_life(session, location.id, product_ids, today)
        forecasts = await self._forecasts(session, product_ids, served, today)
        out = []
        for pid in product_ids:
            forecast, forecast_why = forecasts[pid]
            position = rules.inventory_position(
                on_hand.get(pid, 0),
                open_lines.get(pid, ()),
                inbound.get(pid, ()),
                outbound.get(pid, ()),
            )
            terms = contracts.get(pid, [])
            chosen = rules.choose_contract(terms, today).contract
            item = PurchaseItem(
                pid,
                location.id,
                product_class(products[pid]),
                forecast,
                position,
                terms,
                deliveries.get(chosen.supplier_id, []) if chosen else [],
                shelf_life_days=shelf.get(pid),
            )
            suggestion = rules.suggest_purchase(item, today)
            out.append((item, _with(suggestion, forecast_why | {"served_locations": served})))
        return out

    async def _ward(
        self, session: AsyncSession, ward: Location, central: Location, today: date
    ) -> list[Suggestion]:
        product_ids = sorted(await _products_seen(session, [ward.id], today, FALLBACK_WEEKS))
        if not product_ids:
            return []
        products = await _products(session, product_ids)
        on_hand = await _on_hand(session, ward.id, product_ids, today)
        inbound, _ = await _transfers(session, ward.id, product_ids)
        asked = await _asked_for(session, ward.id, product_ids)
        central_hand = await _on_hand(session, central.id, product_ids, today)
        _, central_out = await _transfers(session, central.id, product_ids)
        forecasts = await self._forecasts(session, product_ids, [ward.id], today)
        needs = []
        for pid in product_ids:
            position = rules.inventory_position(
                on_hand.get(pid, 0), asked.get(pid, ()), inbound.get(pid, ())
            )
            needs.append(
                WardNeed(ward.id, pid, product_class(products[pid]), forecasts[pid][0], position)
            )
        available = {
            pid: central_hand.get(pid, 0)
            - rules.inventory_position(0, (), (), central_out.get(pid, ())).allocated
            for pid in product_ids
        }
        found = rules.ward_transfer_suggestions(needs, available, central_location_id=central.id)
        return [_with(s, forecasts[s.product_id][1]) for s in found]

    async def _forecasts(
        self, session: AsyncSession, product_ids: Sequence[int], served: Sequence[int], today: date
    ) -> dict[int, tuple[DemandForecast, dict[str, Any]]]:
        weekly = await _weekly_consumption(session, product_ids, served, today, FALLBACK_WEEKS)
        out = {}
        for pid in product_ids:
            out[pid] = await self._forecast(session, pid, served, weekly.get(pid))
        return out

    async def _forecast(
        self,
        session: AsyncSession,
        product_id: int,
        served: Sequence[int],
        weeks: Sequence[float] | None,
    ) -> tuple[DemandForecast, dict[str, Any]]:
        """THE forecast call site: stored forecasts per served location when every one has
        one, else the ledger average over all of them."""
        stored = [
            await self.forecasts.stored_forecast(
                session, product_id, location_id, FORECAST_GRANULARITY
            )
            for location_id in served
        ]
        if stored and all(s is not None for s in stored):
            kept = [s for s in stored if s is not None]
            return combine([from_stored(s) for s in kept]), {
                "forecast_source": "STORED",
                "forecast_models": [s.model for s in kept],
                "forecast_level": kept[0].level,
            }
        weeks = list(weeks or [0.0] * FALLBACK_WEEKS)
        return from_weekly_totals(weeks), {
            "forecast_source": "LEDGER_AVERAGE",
            "history_weeks": len(weeks),
            "weekly_consumption": [round(w, 3) for w in weeks],
            "daily_rate": round(sum(weeks) / len(weeks) / 7, 3),
        }

    # --- writes ---------------------------------------------------------------------------------

    async def create_purchase_orders(
        self, principal: Principal, location_id: int, choices: Sequence[PurchaseChoice]
    ) -> list[PurchaseOrder]:
        """Accepted purchase suggestions as DRAFT orders, one per supplier, in one transaction.
        Each product must be under a contract of that supplier valid today."""
        principal.require(Permission.ORDER_MANAGE, location_id=location_id)
        _check_count(choices)
        seen: set[int] = set()
        for i, choice in enumerate(choices):
            if choice.product_id in seen:
                raise Duplicate("a product appears twice", field=f"lines.{i}.product")
            seen.add(choice.product_id)
            if not 0 < choice.quantity <= rules.MAX_QUANTITY:
                raise InvalidInput("quantity must be positive", field=f"lines.{i}.quantity")
        today = utcnow().date()
        async with self.db.read() as session:
            location = await session.get(Location, location_id)
            if location is None or not location.active:
                raise NotFound(f"location {location_id} does not exist", field="location")
            contracts = await _contracts(session, location.organisation_id)
        by_supplier: dict[int, list[OrderLineFields]] = defaultdict(list)
        for i, choice in enumerate(choices):
            valid = [
                c
                for c in contracts.get(choice.product_id, [])
                if c.supplier_id == choice.supplier_id and c.valid_on(today)
            ]
            if not valid:
                raise InvalidInput(
                    f"no contract of this supplier for product {choice.product_id} is valid today",
                    field=f"lines.{i}.supplier",
                )
            by_supplier[choice.supplier_id].append(
                OrderLineFields(choice.product_id, choice.quantity)
            )
        return await self.purchasing.create_orders(
            principal,
            [
                NewOrder(supplier, location_id, tuple(lines), note=NOTE)
                for supplier, lines in sorted(by_supplier.items())
            ],
        )

    async def create_transfers(
        self, principal: Principal, choices: Sequence[TransferChoice]
    ) -> list[Transfer]:
        """Accepted ward suggestions as transfer requests from each ward's pharmacy, one per
        ward. Every ward is checked before the first request is made; each request is then its
        own transaction (a transfer is the transfers room's unit of work)."""
        _check_count(choices)
        by_ward: dict[int, list[LineRequest]] = defaultdict(list)
        for i, choice in enumerate(choices):
            principal.require(Permission.TRANSFER_REQUEST, location_id=choice.location_id)
            if any(x.product_id == choice.product_id for x in by_ward[choice.location_id]):
                raise Duplicate("a product appears twice for one ward", field=f"lines.{i}.product")
            by_ward[choice.location_id].append(LineRequest(choice.product_id, choice.quantity))
        sources: dict[int, int] = {}
        async with self.db.read() as session:
            for ward_id in by_ward:
                ward = await session.get(Location, ward_id)
                if ward is None or not ward.active:
                    raise NotFound(f"location {ward_id} does not exist", field="location")
                parent = await self._supplying_parent(session, ward)
                if parent is None:
                    raise InvalidInput(
                        f"{ward.name} is not a ward supplied by a pharmacy; order from a "
                        "supplier instead",
                        field="location",
                    )
                sources[ward_id] = parent.id
        out = []
        for ward_id, lines in by_ward.items():
            out.append(
                await self.transfers.request(
                    principal,
                    source_id=sources[ward_id],
                    destination_id=ward_id,
                    lines=lines,
                    note=NOTE,
                )
            )
        return out


def _check_count(choices: Sequence[object]) -> None:
    if not choices:
        raise InvalidInput("accept at least one suggestion", field="lines")
    if len(choices) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines at once", field="lines")


def _with(suggestion: Suggestion, extra: dict[str, Any]) -> Suggestion:
    from dataclasses import replace

    return replace(suggestion, why=suggestion.why | extra)


# --- queries (set-based: one statement per figure for all products) ------------------------------


async def _contracts(session: AsyncSession, buyer_id: int) -> dict[int, list[ContractTerms]]:
    """Every contract line of the buyer, by product (valid or not: `choose_contract` says why
    one does not apply). Quantities are packs, so a contract's pack size is 1."""
    rows = (
        await session.execute(
            select(Contract, ContractLine, Organisation.name)
            .join(ContractLine, ContractLine.contract_id == Contract.id)
            .join(Organisation, Organisation.id == Contract.supplier_id)
            .where(Contract.buyer_id == buyer_id)
        )
    ).all()
    out: dict[int, list[ContractTerms]] = defaultdict(list)
    for contract, line, supplier in rows:
        out[line.product_id].append(
            ContractTerms(
                supplier_id=contract.supplier_id,
                supplier=supplier,
                reference=contract.reference,
                valid_from=contract.valid_from,
                valid_until=contract.valid_until,
                unit_price=line.unit_price,
                lead_time_days=line.lead_time_days,
                pack_size=1,
                minimum_order=line.minimum_order_quantity,
            )
        )
    return out


async def _products(session: AsyncSession, product_ids: Sequence[int]) -> dict[int, Product]:
    rows = (await session.execute(select(Product).where(Product.id.in_(product_ids)))).scalars()
    return {p.id: p for p in rows}


async def _products_seen(
    session: AsyncSession, location_ids: Sequence[int], today: date, weeks: int
) -> set[int]:
    """Products with stock at the locations now, or consumed there recently."""
    stocked = (
        select(Lot.product_id)
        .join(Balance, Balance.lot_id == Lot.id)
        .where(Balance.location_id.in_(location_ids), Balance.quantity > 0)
    )
    used = (
        select(Lot.product_id)
        .join(Movement, Movement.lot_id == Lot.id)
        .where(
            Movement.location_id.in_(location_ids),
            Movement.kind.in_((MovementKind.DISPENSE, MovementKind.RETURN)),
            Movement.occurred_at >= midnight_utc(today - timedelta(days=7 * weeks)),
        )
    )
    found = set((await session.execute(stocked)).scalars())
    return found | set((await session.execute(used.distinct())).scalars())


async def _on_hand(
    session: AsyncSession, location_id: int, product_ids: Sequence[int], today: date
) -> dict[int, int]:
    """Usable packs: released lots not yet expired (expired or quarantined stock cannot be
    issued, so it protects nothing)."""
    rows = await session.execute(
        select(Lot.product_id, func.sum(Balance.quantity))
        .join(Balance, Balance.lot_id == Lot.id)
        .where(
            Balance.location_id == location_id,
            Lot.product_id.in_(product_ids),
            Lot.status == LotStatus.RELEASED,
            Lot.expiry_date > today,
        )
        .group_by(Lot.product_id)
    )
    return {int(p): int(q or 0) for p, q in rows.all()}


async def _open_order_lines(
    session: AsyncSession, location_id: int, product_ids: Sequence[int]
) -> dict[int, list[OpenPurchaseLine]]:
    rows = await session.execute(
        select(
            PurchaseOrderLine.product_id,
            PurchaseOrderLine.quantity,
            PurchaseOrderLine.received_quantity,
        )
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.order_id)
        .where(
            PurchaseOrder.deliver_to_id == location_id,
            PurchaseOrder.status.in_(OPEN_ORDER),
            PurchaseOrderLine.product_id.in_(product_ids),
        )
    )
    out: dict[int, list[OpenPurchaseLine]] = defaultdict(list)
    for pid, ordered, received in rows.all():
        out[pid].append(OpenPurchaseLine(ordered, received))
    return out


async def _transfers(
    session: AsyncSession, location_id: int, product_ids: Sequence[int]
) -> tuple[dict[int, list[TransferLine]], dict[int, list[TransferLine]]]:
    """Inbound dispatched transfers (picked quantities: in transit) and outbound approved or
    picked ones (approved quantities: allocated), per product."""
    T, L = Transfer, TransferLineRow
    picked = (
        select(func.coalesce(func.sum(TransferPick.quantity), 0))
        .where(TransferPick.line_id == L.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            T.source_id,
            T.destination_id,
            T.status,
            L.product_id,
            func.coalesce(L.approved_quantity, L.requested_quantity),
            picked,
        )
        .join(L, L.transfer_id == T.id)
        .where(
            or_(T.source_id == location_id, T.destination_id == location_id),
            T.status.in_(
                (TransferStatus.APPROVED, TransferStatus.PICKED, TransferStatus.DISPATCHED)
            ),
            L.product_id.in_(product_ids),
        )
    )
    inbound: dict[int, list[TransferLine]] = defaultdict(list)
    outbound: dict[int, list[TransferLine]] = defaultdict(list)
    for source, destination, status, pid, approved, picks in rows.all():
        status = TransferStatus(status).value
        if destination == location_id and status == TransferStatus.DISPATCHED.value:
            inbound[pid].append(TransferLine(int(picks), status))
        elif source == location_id and status != TransferStatus.DISPATCHED.value:
            outbound[pid].append(TransferLine(int(approved), status))
    return inbound, outbound


async def _asked_for(
    session: AsyncSession, ward_id: int, product_ids: Sequence[int]
) -> dict[int, list[OpenPurchaseLine]]:
    """What a ward already asked its pharmacy for and has not been sent: on order for it."""
    T, L = Transfer, TransferLineRow
    rows = await session.execute(
        select(L.product_id, func.coalesce(L.approved_quantity, L.requested_quantity))
        .join(T, T.id == L.transfer_id)
        .where(T.destination_id == ward_id, T.status.in_(ASKED_FOR), L.product_id.in_(product_ids))
    )
    out: dict[int, list[OpenPurchaseLine]] = defaultdict(list)
    for pid, quantity in rows.all():
        out[pid].append(OpenPurchaseLine(int(quantity)))
    return out


async def _deliveries(
    session: AsyncSession, buyer_id: int
) -> dict[int, list[tuple[datetime, datetime]]]:
    """(submitted, received) of every received shipment against the buyer's orders, by
    supplier, oldest first: the measured lead times."""
    rows = await session.execute(
        select(Shipment.sender_id, PurchaseOrder.submitted_at, Shipment.received_at)
        .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
        .where(
            PurchaseOrder.buyer_id == buyer_id,
            Shipment.status == ShipmentStatus.RECEIVED,
            PurchaseOrder.submitted_at.is_not(None),
            Shipment.received_at.is_not(None),
        )
        .order_by(Shipment.received_at)
    )
    out: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for supplier, submitted, received in rows.all():
        if submitted is None or received is None:
            continue
        ordered, arrived = _aware(submitted), _aware(received)
        if arrived >= ordered:
            out[supplier].append((ordered, arrived))
    return out


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _shelf_life(
    session: AsyncSession, location_id: int, product_ids: Sequence[int], today: date
) -> dict[int, float]:
    """The typical (median) remaining shelf life on receipt at the location over the last
    year, in days, per product received there."""
    rows = await session.execute(
        select(Lot.product_id, Lot.expiry_date, Movement.occurred_at)
        .join(Movement, Movement.lot_id == Lot.id)
        .where(
            Movement.location_id == location_id,
            Movement.kind == MovementKind.RECEIVE,
            Lot.product_id.in_(product_ids),
            Movement.occurred_at >= midnight_utc(today - timedelta(days=SHELF_LIFE_LOOKBACK_DAYS)),
        )
    )
    lives: dict[int, list[float]] = defaultdict(list)
    for pid, expiry, occurred in rows.all():
        lives[pid].append(max(0.0, float((expiry - _aware(occurred).date()).days)))
    return {pid: float(statistics.median(days)) for pid, days in lives.items()}


async def _weekly_consumption(
    session: AsyncSession,
    product_ids: Sequence[int],
    location_ids: Sequence[int],
    today: date,
    weeks: int,
) -> dict[int, list[float]]:
    """Net consumption (DISPENSE minus RETURN) per product in each of the last `weeks` weeks
    ending yesterday, oldest first."""
    since = today - timedelta(days=7 * weeks)
    rows = await session.execute(
        select(Lot.product_id, Movement.occurred_at, Movement.quantity)
        .join(Lot, Lot.id == Movement.lot_id)
        .where(
            Movement.location_id.in_(location_ids),
            Movement.kind.in_((MovementKind.DISPENSE, MovementKind.RETURN)),
            Lot.product_id.in_(product_ids),
            Movement.occurred_at >= midnight_utc(since),
            Movement.occurred_at < midnight_utc(today),
        )
    )
    out: dict[int, list[float]] = {}
    for pid, occurred, quantity in rows.all():
        week = (_aware(occurred).date() - since).days // 7
        if 0 <= week < weeks:
            out.setdefault(pid, [0.0] * weeks)[week] -= quantity  # DISPENSE is negative
    return out
