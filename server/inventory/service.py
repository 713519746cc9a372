"""Ledger use cases. Each public method is one transaction: movements, balances, audit, events.

Other services that move stock inside their own transaction (transfers, receiving) call
`apply_movements` with their session, so the ledger rules are written exactly once.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.catalog.models import Lot, Product
from server.catalog.refs import LOT_COLUMNS, lot_from_row
from server.catalog.service import find_or_create_lot
from server.core import audit
from server.core.cache import cached_many
from server.core.db import Database, Driver, dialect_of, driver_time, run, utcnow
from server.core.errors import DomainError, InsufficientStock, InvalidInput, NotFound
from server.core.events import Event
from server.core.security import Principal
from server.core.validation import MAX_BALANCE, optional_text
from server.inventory.idempotency import clean_key, note_keyed, request_hash, run_once
from server.inventory.models import AnyMovement, Balance, MovementKind, WrittenMovement
from server.inventory.rules import (
    KIND_PERMISSION,
    OUTFLOWS,
    REASON_REQUIRED,
    check_issuable,
    is_issuable,
    signed_quantity,
)
from server.network.models import Location

STOCK_TOPIC = "stock"
MAX_BATCH_MOVEMENTS = 1000
FUTURE_SKEW = timedelta(minutes=5)  # clocks of feeding systems drift; further ahead is an error


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
    # A verified witness (server/controlled): recorded beside the movement, not part of the
    # idempotency fingerprint, so a replay with the key returns the first result.
    witness_id: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        """`dataclasses.asdict(self)`, the idempotency fingerprint's input, built without
        asdict's deep copies (which cost more than the rest of a large feed's checks)."""
        fields = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        if self.new_lot is not None:
            fields["new_lot"] = {name: getattr(self.new_lot, name) for name in _NEW_LOT_FIELDS}
        return fields


@dataclass(frozen=True)
class NewLot:
    """A batch seen for the first time on receipt: found, or created with this expiry."""

    product_id: int
    batch_number: str
    expiry_date: date
    manufacturer_id: int | None = None


_REQUEST_FIELDS = tuple(f.name for f in dataclass_fields(MovementRequest) if f.name != "witness_id")
_NEW_LOT_FIELDS = tuple(f.name for f in dataclass_fields(NewLot))


@dataclass(frozen=True)
class LedgerResult:
    movements: Sequence[AnyMovement]
    replayed: bool = False


# Looked up once: an enum member's `.value` costs more than a dict lookup, a thousand times a feed.
_KIND_VALUE = {kind: kind.value for kind in MovementKind}
_AUDIT_ACTION = {kind: f"stock.{kind.value.lower()}" for kind in MovementKind}


def movement_snapshot(movement: AnyMovement) -> dict[str, object]:
    return {
        "kind": _KIND_VALUE[movement.kind],
        "lot_id": movement.lot_id,
        "location_id": movement.location_id,
        "quantity": movement.quantity,
        "balance_after": movement.balance_after,
        "reason": movement.reason,
        "reference": movement.reference,
        "patient_reference": movement.patient_reference,
    }


def stock_event(movement: AnyMovement, product_id: int) -> Event:
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
    """Built once per dialect: constructing upserts per call costs more than running them.

    Executed with one row per (location, lot) of a request, as one multi-row statement, and
    returns each shelf's new quantity (row-locked on PostgreSQL)."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(Balance.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["location_id", "lot_id"],
        set_={
            "quantity": Balance.quantity + stmt.excluded.quantity,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(Balance.location_id, Balance.lot_id, Balance.quantity)


_MOVEMENT_COLUMNS = (
    "kind",
    "lot_id",
    "location_id",
    "organisation_id",
    "counterparty_id",
    "quantity",
    "balance_after",
    "reference",
    "patient_reference",
    "reason",
    "actor_id",
    "request_key",
)
_INSERT_MOVEMENTS = (
    f"INSERT INTO movements (id, {', '.join(_MOVEMENT_COLUMNS)}, occurred_at, recorded_at) "
    f"VALUES ({', '.join('?' * (len(_MOVEMENT_COLUMNS) + 3))})"
)
# SQLite: the writer holds the database's lock, so the rows take max(id) + 1 onwards (read
# first, then one executemany of rows with their ids).
_NEXT_ID = "SELECT coalesce(max(id), 0) FROM movements"
# PostgreSQL: one statement, one round trip, whatever the number of rows: the rows as arrays,
# their ids from the sequence. Sequence values follow the ORDER BY of an INSERT ... SELECT, so
# the returned ids sorted are the rows' in order (SQLAlchemy's insertmanyvalues relies on it).
_PG_TYPES = {
    "kind": "varchar",
    "lot_id": "integer",
    "location_id": "integer",
    "organisation_id": "integer",
    "counterparty_id": "integer",
    "quantity": "integer",
    "balance_after": "integer",
    "reference": "varchar",
    "patient_reference": "varchar",
    "reason": "varchar",
    "actor_id": "integer",
    "request_key": "varchar",
    "occurred_at": "timestamptz",
    "recorded_at": "timestamptz",
}
_PG_COLUMNS = ", ".join(_PG_TYPES)
_PG_INSERT_MOVEMENTS = (
    f"INSERT INTO movements ({_PG_COLUMNS}) SELECT {_PG_COLUMNS} FROM unnest("
    + ", ".join(f"${n}::{type_}[]" for n, type_ in enumerate(_PG_TYPES.values(), 1))
    + f") WITH ORDINALITY AS u({_PG_COLUMNS}, ord) ORDER BY ord RETURNING id"
)


async def _insert_movements(
    session: AsyncSession, dialect: str, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert movement rows through the driver and return their ids in row order."""
    driver = await Driver.of(session)
    if dialect != "sqlite":
        columns = (
            [_KIND_VALUE[row["kind"]] for row in rows],
            *([row[name] for row in rows] for name in _MOVEMENT_COLUMNS[1:]),
            [row["occurred_at"] for row in rows],
            [row["recorded_at"] for row in rows],
        )
        return sorted(row[0] for row in await driver.fetch_native(_PG_INSERT_MOVEMENTS, columns))
    (last,) = (await driver.fetch(_NEXT_ID))[0]
    ids = list(range(last + 1, last + 1 + len(rows)))
    times: dict[datetime, object] = {}  # most rows share one or two instants

    def stored(moment: datetime) -> object:
        value = times.get(moment)
        if value is None:
            value = times[moment] = driver_time(dialect, moment)
        return value

    await driver.executemany(
        _INSERT_MOVEMENTS,
        [
            (
                id_,
                _KIND_VALUE[row["kind"]],
                *[row[name] for name in _MOVEMENT_COLUMNS[1:]],
                stored(row["occurred_at"]),
                stored(row["recorded_at"]),
            )
            for id_, row in zip(ids, rows, strict=True)
        ],
    )
    return ids


@dataclass(frozen=True, slots=True)
class LocationRef:
    """What the ledger needs of a location: cached per process (server.core.cache)."""

    id: int
    organisation_id: int
    code: str
    active: bool
    allow_negative_stock: bool


_LOCATIONS = select(
    Location.id,
    Location.organisation_id,
    Location.code,
    Location.active,
    Location.allow_negative_stock,
).where(Location.id.in_(bindparam("ids", expanding=True)))


async def _load_locations(session: AsyncSession, ids: set[int]) -> dict[int, LocationRef]:
    rows = await session.execute(_LOCATIONS, {"ids": list(ids)})
    return {row[0]: LocationRef(*row) for row in rows}


async def locations_of(session: AsyncSession, ids: Iterable[int]) -> dict[int, LocationRef]:
    """The named locations as this transaction sees them, from the process's cache when its
    reference version is current (checked once per transaction)."""
    return await cached_many(session, "ledger.locations", ids, _load_locations)


@dataclass
class _Known:
    """Lots (with their product's approval number) and locations a request names, loaded in
    one query each (locations from the cache) and held for its duration."""

    lots: dict[int, Lot]
    locations: dict[int, LocationRef]
    approvals: dict[int, str]


async def _preload(
    session: AsyncSession,
    requests: Sequence[MovementRequest],
    preloaded: Sequence[tuple[Lot, str]] = (),
) -> _Known:
    lots: dict[int, Lot] = {lot.id: lot for lot, _approval in preloaded}
    approvals: dict[int, str] = {lot.product_id: approval for lot, approval in preloaded}
    lot_ids = {r.lot_id for r in requests if r.lot_id is not None} - lots.keys()
    location_ids = {r.location_id for r in requests}
    if lot_ids:
        for row in await run(session, _LOTS_NAMED, {"ids": sorted(lot_ids)}):
            lot = lot_from_row(row)
            lots[lot.id] = lot
            approvals[lot.product_id] = row.approval_number
    return _Known(lots, await locations_of(session, location_ids), approvals)


# Share-locked (PostgreSQL) so a recall or quarantine committing meanwhile is seen.
_LOTS_NAMED = (
    select(*LOT_COLUMNS, Product.approval_number)
    .join(Product, Product.id == Lot.product_id)
    .where(Lot.id.in_(bindparam("ids", expanding=True)))
    .with_for_update(read=True, of=Lot)
)


def _named(error: DomainError, index: int | None) -> DomainError:
    """The same refusal, its field prefixed with the item it came from in a batch."""
    if index is not None:
        error.field = f"movements.{index}.{error.field or 'movement'}"
    return error


def _check(principal: Principal, request: MovementRequest, known: _Known) -> LocationRef:
    """The rules one request must pass before any lot is chosen (no database access)."""
    signed_quantity(request.kind, request.quantity)
    principal.require(KIND_PERMISSION[request.kind], location_id=request.location_id)
    if request.kind in REASON_REQUIRED and not (request.reason or "").strip():
        raise InvalidInput(f"{request.kind.value} needs a reason", field="reason")
    optional_text(request.reason, "reason", max_length=200)
    optional_text(request.reference, "reference", max_length=100)
    optional_text(request.patient_reference, "patient_reference", max_length=100)
    location = known.locations.get(request.location_id)
    if location is None or not location.active:
        raise NotFound(f"location {request.location_id} does not exist", field="location")
    return location


class _Shelves:
    """Balances as this request sees them: what the database held (for the shelves FEFO reads)
    plus the deltas of the items before the current one."""

    def __init__(self, rows: Iterable[tuple[Lot, int, int]]) -> None:
        self.stored: dict[tuple[int, int], int] = {}
        self.candidates: dict[tuple[int, int], dict[int, Lot]] = defaultdict(dict)
        for lot, location_id, quantity in rows:
            self.stored[(location_id, lot.id)] = quantity
            self.candidates[(location_id, lot.product_id)][lot.id] = lot
        self.delta: dict[tuple[int, int], int] = defaultdict(int)

    def add(self, location_id: int, lot: Lot, delta: int) -> None:
        self.delta[(location_id, lot.id)] += delta
        self.candidates[(location_id, lot.product_id)].setdefault(lot.id, lot)

    def available(self, location_id: int, lot_id: int) -> int:
        key = (location_id, lot_id)
        return self.stored.get(key, 0) + self.delta.get(key, 0)

    def fefo(self, request: MovementRequest, on: date) -> list[tuple[Lot, int]]:
        """Split an outflow across issuable lots, earliest expiry first."""
        assert request.product_id is not None  # _resolve picks lots only for a named product
        shelf = self.candidates.get((request.location_id, request.product_id), {})
        lots = sorted(
            (lot for lot in shelf.values() if is_issuable(lot.expiry_date, lot.status, on)),
            key=lambda lot: (lot.expiry_date, lot.id),
        )
        remaining = request.quantity
        allocation: list[tuple[Lot, int]] = []
        for lot in lots:
            available = self.available(request.location_id, lot.id)
            if available <= 0:
                continue
            take = min(available, remaining)
            allocation.append((lot, take))
            remaining -= take
            if remaining == 0:
                return allocation
        raise InsufficientStock(
            f"only {request.quantity - remaining} issuable on hand at this location "
            f"(expired and held lots excluded), {request.quantity} requested",
            field="quantity",
        )


async def _fefo_shelves(session: AsyncSession, requests: Sequence[MovementRequest]) -> _Shelves:
    """Every shelf of the (location, product) pairs that outflows without a lot draw from, in
    one query (balance rows locked on PostgreSQL)."""
    pairs = {
        (r.location_id, r.product_id)
        for r in requests
        if r.lot_id is None and r.kind in OUTFLOWS and r.product_id is not None
    }
    if not pairs:
        return _Shelves(())
    rows = await run(session, _SHELVES_OF, {"pairs": sorted(pairs)})
    return _Shelves((lot_from_row(row), row.location_id, row.quantity) for row in rows)


_SHELVES_OF = (
    select(*LOT_COLUMNS, Balance.location_id, Balance.quantity)
    .join(Balance, Balance.lot_id == Lot.id)
    .where(tuple_(Balance.location_id, Lot.product_id).in_(bindparam("pairs", expanding=True)))
    .with_for_update(of=Balance)
)


async def _resolve(
    session: AsyncSession,
    principal: Principal,
    request: MovementRequest,
    known: _Known,
    shelves: _Shelves,
    now: datetime,
) -> tuple[LocationRef, list[tuple[Lot, int]]]:
    """Check one request and decide which lots it touches (FEFO for outflows without a lot)."""
    location = _check(principal, request, known)
    on = (request.occurred_at or now).date()
    if request.lot_id is None and request.kind in OUTFLOWS:
        if request.product_id is None:
            raise InvalidInput("name a lot or a product to issue from", field="product")
        return location, shelves.fefo(request, on)
    if request.lot_id is not None:
        lot = known.lots.get(request.lot_id)
        if lot is None:
            raise NotFound(f"lot {request.lot_id} does not exist", field="lot")
    elif request.new_lot is not None:
        lot = await find_or_create_lot(session, principal, **asdict(request.new_lot))
        known.lots[lot.id] = lot
    else:
        raise InvalidInput("name the lot this stock belongs to", field="lot")
    if request.product_id is not None and lot.product_id != request.product_id:
        raise InvalidInput(f"lot {lot.batch_number} is not of that product", field="lot")
    check_issuable(
        request.kind, batch=lot.batch_number, expiry=lot.expiry_date, status=lot.status, on=on
    )
    return location, [(lot, request.quantity)]


async def _approvals(session: AsyncSession, known: _Known, lots: Iterable[Lot]) -> dict[int, str]:
    """Approval numbers of the products written; only lots found by FEFO or created need a
    query, and then one."""
    missing = {lot.product_id for lot in lots} - known.approvals.keys()
    if missing:
        rows = await session.execute(
            select(Product.id, Product.approval_number).where(Product.id.in_(missing))
        )
        known.approvals.update(dict(rows.all()))
    return known.approvals


async def apply_movements(
    session: AsyncSession,
    principal: Principal,
    requests: Sequence[MovementRequest],
    *,
    request_key: str | None = None,
    name_items: bool = False,
    preloaded: Sequence[tuple[Lot, str]] = (),
) -> Written:
    """Check and write movements in the caller's transaction; raise before anything is kept.

    `preloaded` are lots (with their product's approval number) the caller has read in this
    transaction, share-locked as `_preload` would (`SELECT ... FOR SHARE` on PostgreSQL).

    Set-based: whatever the number of requests, the lots, locations and FEFO shelves are read
    in one query each, balances change in one multi-row upsert, movements go in one insert and
    their audit events in one append. `name_items` prefixes each refusal's field with the
    index of the request it concerns (`movements.3.quantity`).
    """
    if not requests:
        raise InvalidInput("no movements given", field="movements")
    now = utcnow()
    known = await _preload(session, requests, preloaded)
    shelves = await _fefo_shelves(session, requests)
    planned: list[tuple[int, MovementRequest, LocationRef, Lot, int]] = []
    with session.no_autoflush:
        for index, request in enumerate(requests):
            item = index if name_items else None
            try:
                location, allocation = await _resolve(
                    session, principal, request, known, shelves, now
                )
            except DomainError as error:
                if error.field == "quantity" and len(requests) > 1 and not name_items:
                    error.field = f"movements.{index}.quantity"
                raise _named(error, item) from None
            for lot, quantity in allocation:
                delta = signed_quantity(request.kind, quantity)
                shelves.add(location.id, lot, delta)
                planned.append((index, request, location, lot, delta))
    # One upsert row per shelf: the sum of its deltas, then each movement's balance_after is
    # replayed from the shelf's final quantity.
    per_shelf: dict[tuple[int, int], int] = defaultdict(int)
    for _index, _request, location, lot, delta in planned:
        per_shelf[(location.id, lot.id)] += delta
    for (_loc, _lot), delta in per_shelf.items():
        if abs(delta) > MAX_BALANCE:  # refused before SQL could overflow the column
            raise InvalidInput(
                f"one request may move at most {MAX_BALANCE:,} packs of a lot at a location",
                field="quantity" if len(requests) == 1 or name_items else "movements",
            )
    dialect = dialect_of(session)
    returned = await run(
        session,
        _balance_upsert(dialect),
        [
            {"location_id": loc, "lot_id": lot, "quantity": delta, "updated_at": now}
            for (loc, lot), delta in per_shelf.items()
        ],
    )
    running = {
        (loc, lot): quantity - per_shelf[(loc, lot)] for loc, lot, quantity in returned.all()
    }
    rows: list[dict[str, Any]] = []
    for index, request, location, lot, delta in planned:
        shelf = (location.id, lot.id)
        before = running[shelf]
        running[shelf] = balance = before + delta
        if abs(balance) > MAX_BALANCE:
            field = "quantity" if len(requests) == 1 else f"movements.{index}.quantity"
            refusal: DomainError = InvalidInput(
                f"this would take the balance of lot {lot.batch_number} at {location.code} "
                f"to {balance:,}, past the limit of {MAX_BALANCE:,}",
                field="quantity" if name_items else field,
            )
            raise _named(refusal, index if name_items else None)
        if balance < 0 and not location.allow_negative_stock:
            field = "quantity" if len(requests) == 1 else f"movements.{index}.quantity"
            refusal = InsufficientStock(
                f"only {before} of lot {lot.batch_number} on hand at "
                f"{location.code}, {abs(delta)} requested",
                field="quantity" if name_items else field,
            )
            raise _named(refusal, index if name_items else None)
        rows.append(
            {
                "kind": request.kind,
                "lot_id": lot.id,
                "location_id": location.id,
                "organisation_id": location.organisation_id,
                "counterparty_id": request.counterparty_id,
                "quantity": delta,
                "balance_after": balance,
                "reference": request.reference,
                "patient_reference": request.patient_reference,
                "reason": request.reason,
                "actor_id": principal.user_id,
                "request_key": request_key,
                "occurred_at": request.occurred_at or now,
                "recorded_at": now,
            }
        )
    ids = await _insert_movements(session, dialect, rows)
    note_keyed(session, request_key, ids)
    lots = [lot for _index, _request, _location, lot, _delta in planned]
    written = Written(
        [WrittenMovement(id=id_, **row) for id_, row in zip(ids, rows, strict=True)],
        lots,
        await _approvals(session, known, lots),
        witnesses={
            id_: request.witness_id
            for id_, (_index, request, _location, _lot, _delta) in zip(ids, planned, strict=True)
            if request.witness_id is not None
        },
        items={id_: index for id_, (index, *_rest) in zip(ids, planned, strict=True)}
        if name_items
        else None,
    )
    await audit.record_many(
        session,
        principal,
        [
            audit.AuditEntry(
                action=_AUDIT_ACTION[movement.kind],
                entity_type="Movement",
                entity_id=movement.id,
                after=movement_snapshot(movement)
                | (
                    {"witness_id": written.witnesses[movement.id]}
                    if movement.id in written.witnesses
                    else {}
                ),
                reason=movement.reason,
            )
            for movement in written.movements
        ],
    )
    return written


class Written(list[tuple[WrittenMovement, Lot]]):
    """Movements just written, each with its lot, and the approval number of each product
    (what the supervision hook needs without another query)."""

    def __init__(
        self,
        movements: list[WrittenMovement],
        lots: list[Lot],
        approvals: dict[int, str],
        witnesses: dict[int, int] | None = None,
        items: dict[int, int] | None = None,
    ) -> None:
        super().__init__(zip(movements, lots, strict=True))
        self.movements = movements
        self.approvals = approvals
        self.witnesses = witnesses or {}  # movement id -> the witness user's id
        self.items = items  # movement id -> its request's index in a feed (None: not a feed)

    def field_of(self, movement_id: int, field: str) -> str:
        """The input field a hook's refusal names: in a feed, prefixed with the item the
        movement came from (`movements.3.patient_reference`), as the ledger's own are."""
        if self.items is None or movement_id not in self.items:
            return field
        return f"movements.{self.items[movement_id]}.{field}"


MovementHook = Callable[[AsyncSession, Written], Awaitable[None]]


class LedgerService:
    """The ledger's use cases. What must follow every write (supervision totals, alerts, stock
    events) is not imported here: `services.py` registers it as hooks, run in order in the
    writing transaction with the movements just written."""

    def __init__(self, db: Database, hooks: Sequence[MovementHook] = ()) -> None:
        self.db = db
        self.hooks: list[MovementHook] = list(hooks)

    def on_written(self, hook: MovementHook) -> None:
        self.hooks.append(hook)

    async def apply(
        self,
        session: AsyncSession,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        request_key: str | None = None,
        name_items: bool = False,
        preloaded: Sequence[tuple[Lot, str]] = (),
    ) -> Written:
        """Movements in the caller's transaction, followed by every registered hook."""
        written = await apply_movements(
            session,
            principal,
            requests,
            request_key=request_key,
            name_items=name_items,
            preloaded=preloaded,
        )
        for hook in self.hooks:
            await hook(session, written)
        return written

    async def record(
        self,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        operation: str,
        idempotency_key: str | None = None,
        name_items: bool = False,
    ) -> LedgerResult:
        """Record movements all-or-nothing; a known idempotency key returns the first result."""
        key = clean_key(idempotency_key)
        fingerprint = request_hash(operation, [r.fingerprint() for r in requests])

        async def work(session: AsyncSession) -> LedgerResult:
            written = await self.apply(
                session, principal, requests, request_key=key, name_items=name_items
            )
            return LedgerResult(written.movements)

        async def replay(_session: AsyncSession, movements: list[AnyMovement]) -> LedgerResult:
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

    async def record_feed(
        self,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        idempotency_key: str | None,
    ) -> LedgerResult:
        """A feed's batch: a key is required, at most MAX_BATCH_MOVEMENTS items, refusals
        name the item."""
        if not requests:
            raise InvalidInput("no movements given", field="movements")
        if len(requests) > MAX_BATCH_MOVEMENTS:
            raise InvalidInput(
                f"at most {MAX_BATCH_MOVEMENTS} movements per call, {len(requests)} given",
                field="movements",
            )
        for index, request in enumerate(requests):
            if request.occurred_at is not None and request.occurred_at.tzinfo is None:
                raise InvalidInput(
                    "occurredAt needs a time zone", field=f"movements.{index}.occurredAt"
                )
            if request.occurred_at is not None and request.occurred_at > utcnow() + FUTURE_SKEW:
                raise InvalidInput(
                    "occurredAt is in the future", field=f"movements.{index}.occurredAt"
                )
        return await self.record(
            principal,
            requests,
            operation="recordMovements",
            idempotency_key=clean_key(idempotency_key, required=True),
            name_items=True,
        )
