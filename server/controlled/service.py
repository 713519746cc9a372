"""Controlled-drug use cases: witnessed writes, the register, and the ledger hook that enforces
the rules on every path that moves stock (mutations, scans, feeds, counts, imports).

The rules, for products with a `controlled_schedule`:
- DISPOSE, ADJUST and COUNT (a count variance) need a witness: a second, different, active user
  of the location's organisation with a role in WITNESS_ROLES, who re-enters their password.
  The password is checked before the write transaction (argon2 in the PasswordPool's threads),
  and failures count against the witness's account like failed sign-ins (LoginThrottle).
- DISPENSE needs a patient reference.
- A COUNT of a controlled drug that changes the balance (the count differs from the register)
  raises a CONTROLLED_DISCREPANCY alert.

The witness's user id is kept in `movement_witnesses` (movements are immutable) and in the
movement's audit event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.models import AlertKind
from server.alerts.service import AlertService, AlertSpec
from server.catalog.models import Lot, Product
from server.catalog.refs import products_of
from server.controlled.models import MovementWitness
from server.core.db import Database, utcnow
from server.core.errors import DomainError, ErrorCode, InvalidInput, NotFound
from server.core.ratelimit import LoginThrottle
from server.core.security import PasswordPool, Permission, Principal, Role, WitnessCredentials
from server.counts.models import StockCount
from server.counts.service import CountService, FinalizeResult
from server.inventory.models import Movement, MovementKind
from server.inventory.service import LedgerResult, LedgerService, MovementRequest, Written
from server.network.models import Location, Organisation, User, UserRole

# Who may witness: the people a hospital CD policy names for it (a pharmacist, or a registered
# nurse on the ward). Admins, warehouse staff, auditors and outside parties may not.
WITNESS_ROLES = frozenset({Role.PHARMACIST, Role.NURSE})
WITNESSED_KINDS = frozenset({MovementKind.DISPOSE, MovementKind.ADJUST, MovementKind.COUNT})
CHECKED_KINDS = WITNESSED_KINDS | {MovementKind.DISPENSE}
MAX_REGISTER_ENTRIES = 10_000  # an inspector's period; more means narrow the period


@dataclass(frozen=True)
class RegisterEntry:
    """One line of the register: a movement, the lot, the product's running balance here."""

    movement: Movement
    batch_number: str
    expiry_date: date
    balance: int
    witness_id: int | None
    patient_reference: str | None
    patient_reference_hidden: bool


@dataclass(frozen=True)
class Register:
    product: Product
    location: Location
    organisation: Organisation
    since: date | None
    until: date | None  # inclusive last day
    opening_balance: int
    closing_balance: int
    entries: list[RegisterEntry]
    generated_at: datetime


# --- pure rules ---------------------------------------------------------------------------------


def running_balances(opening: int, quantities: Sequence[int]) -> list[int]:
    """The product's balance at the location after each movement, in register order."""
    balances = []
    balance = opening
    for quantity in quantities:
        balance += quantity
        balances.append(balance)
    return balances


def period_bounds(
    since: date | None, until: date | None
) -> tuple[datetime | None, datetime | None]:
    """UTC instants of a period of whole days: from the start of `since` to the end of `until`."""
    if since is not None and until is not None and until < since:
        raise InvalidInput("the period ends before it starts", field="to")
    start = datetime.combine(since, time(), UTC) if since is not None else None
    end = datetime.combine(until + timedelta(days=1), time(), UTC) if until is not None else None
    return start, end


def sees_patient_references(principal: Principal, location_id: int) -> bool:
    """The rule the movement history applies today: readers of a location's stock see the
    patient references of its dispenses; OAuth clients only with a stock scope."""
    return principal.can(Permission.STOCK_READ) and principal.sees_location(location_id)


def witness_refusal(
    principal: Principal,
    witness: User | None,
    roles: set[Role],
    organisation_id: int,
    password_ok: bool,
) -> DomainError | None:
    """Why this person cannot witness here, or None. The password is judged first, so the
    other reasons are told only to someone who knows it."""
    if witness is None or not password_ok or not witness.active:
        return DomainError(
            "wrong witness username or password", field="witness", code=ErrorCode.WITNESS_INVALID
        )
    if witness.id == principal.user_id:
        return DomainError(
            "the witness must be someone else", field="witness", code=ErrorCode.WITNESS_SAME_USER
        )
    if not roles & WITNESS_ROLES:
        return DomainError(
            f"{witness.username} may not witness controlled drugs (a pharmacist or a nurse may)",
            field="witness",
            code=ErrorCode.WITNESS_INVALID,
        )
    if witness.organisation_id != organisation_id:
        return DomainError(
            f"{witness.username} is not of the organisation holding this stock",
            field="witness",
            code=ErrorCode.WITNESS_INVALID,
        )
    return None


class ControlledService:
    def __init__(
        self,
        db: Database,
        ledger: LedgerService,
        counts: CountService,
        alerts: AlertService,
        passwords: PasswordPool,
        throttle: LoginThrottle,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.counts = counts
        self.alerts = alerts
        self.passwords = passwords
        self.throttle = throttle

    # --- the witness ----------------------------------------------------------------------------

    async def verify_witness(
        self, principal: Principal, location_id: int, witness: WitnessCredentials, ip: str
    ) -> int:
        """The witness's user id, once their password and right to witness here are checked.

        Runs before any write transaction: argon2 takes tens of milliseconds."""
        username = witness.username.strip().lower()
        if not username or not witness.password:
            raise DomainError(
                "the witness enters their username and password",
                field="witness",
                code=ErrorCode.WITNESS_REQUIRED,
            )
        if username == principal.username.lower():
            raise DomainError(
                "the witness must be someone else",
                field="witness",
                code=ErrorCode.WITNESS_SAME_USER,
            )
        await self.throttle.check(username, ip)  # locked: refuse before reading anything
        async with self.db.read() as session:
            location = await session.get(Location, location_id)
            if location is None:
                raise NotFound(f"location {location_id} does not exist", field="location")
            user = (
                await session.execute(select(User).where(User.username == username))
            ).scalar_one_or_none()
            roles: set[Role] = set()
            if user is not None:
                roles = set(
                    (
                        await session.execute(
                            select(UserRole.role).where(UserRole.user_id == user.id)
                        )
                    ).scalars()
                )

        async def attempt() -> None:
            if (
                not await self.passwords.verify(
                    user.password_hash if user else None, witness.password
                )
                or user is None
            ):
                raise DomainError("wrong password", code=ErrorCode.INVALID_CREDENTIALS)

        # Counted before hashing, like a sign-in: concurrent guesses cannot all slip past.
        ok = True
        try:
            await self.throttle.guard(username, ip, attempt)
        except DomainError as error:
            if error.code is not ErrorCode.INVALID_CREDENTIALS:
                raise
            ok = False
        refusal = witness_refusal(principal, user, roles, location.organisation_id, ok)
        if refusal is not None:
            raise refusal
        assert user is not None
        return user.id

    async def record(
        self,
        principal: Principal,
        request: MovementRequest,
        *,
        witness: WitnessCredentials | None,
        ip: str,
        operation: str,
        idempotency_key: str | None,
    ) -> LedgerResult:
        """A stock mutation with an optional witness (checked first); the ledger hook refuses a
        controlled drug's DISPOSE or ADJUST without one."""
        if witness is not None:
            witness_id = await self.verify_witness(principal, request.location_id, witness, ip)
            request = replace(request, witness_id=witness_id)
        return await self.ledger.record(
            principal, [request], operation=operation, idempotency_key=idempotency_key
        )

    async def record_feed(
        self,
        principal: Principal,
        requests: Sequence[MovementRequest],
        *,
        witnesses: Mapping[int, WitnessCredentials],
        ip: str,
        idempotency_key: str | None,
    ) -> LedgerResult:
        """A feed whose items may carry a witness (a controlled disposal or adjustment in a
        cabinet's or pharmacy system's batch): each distinct witness is checked once per
        location before the write, a refusal naming the item it came from."""
        checked: dict[tuple[str, str, int], int] = {}
        witnessed = list(requests)
        for index, credentials in sorted(witnesses.items()):
            request = requests[index]
            key = (credentials.username.strip().lower(), credentials.password, request.location_id)
            if key not in checked:
                try:
                    checked[key] = await self.verify_witness(
                        principal, request.location_id, credentials, ip
                    )
                except DomainError as refusal:
                    refusal.field = f"movements.{index}.{refusal.field or 'witness'}"
                    raise
            witnessed[index] = replace(request, witness_id=checked[key])
        return await self.ledger.record_feed(principal, witnessed, idempotency_key=idempotency_key)

    async def finalize_count(
        self,
        principal: Principal,
        count_id: int,
        idempotency_key: str | None,
        *,
        witness: WitnessCredentials | None,
        ip: str,
    ) -> FinalizeResult:
        """Finalize a count; its controlled drugs' variances need the witness."""
        witness_id = None
        if witness is not None:
            async with self.db.read() as session:
                count = await session.get(StockCount, count_id)
                if count is None:
                    raise NotFound(f"stock count {count_id} does not exist", field="id")
                location_id = count.location_id
            witness_id = await self.verify_witness(principal, location_id, witness, ip)
        return await self.counts.finalize(
            principal, count_id, idempotency_key, witness_id=witness_id
        )

    # --- the ledger hook ------------------------------------------------------------------------

    async def after_movements(self, session: AsyncSession, written: Written) -> None:
        """In the writing transaction: refuse what the rules forbid (the whole write rolls
        back), keep the witnesses, and raise discrepancy alerts for controlled counts."""
        product_ids = {lot.product_id for m, lot in written if m.kind in CHECKED_KINDS}
        controlled = {
            p.id: p
            for p in (await products_of(session, product_ids)).values()
            if p.controlled_schedule is not None
        }
        for movement, lot in written:
            product = controlled.get(lot.product_id)
            if product is None or movement.kind not in CHECKED_KINDS:
                continue
            what = f"{product.name} {product.strength} is a controlled drug (schedule " + (
                f"{product.controlled_schedule})"
            )
            if (
                movement.kind is MovementKind.DISPENSE
                and not (movement.patient_reference or "").strip()
            ):
                raise DomainError(
                    f"{what}: a dispense needs the patient reference",
                    field=written.field_of(movement.id, "patient_reference"),
                    code=ErrorCode.PATIENT_REFERENCE_REQUIRED,
                )
            if movement.kind in WITNESSED_KINDS and movement.id not in written.witnesses:
                action = {
                    MovementKind.DISPOSE: "disposing of it",
                    MovementKind.ADJUST: "adjusting its stock",
                    MovementKind.COUNT: "a count variance",
                }[movement.kind]
                raise DomainError(
                    f"{what}: {action} needs a witness (a pharmacist or nurse re-entering "
                    "their password)",
                    field=written.field_of(movement.id, "witness"),
                    code=ErrorCode.WITNESS_REQUIRED,
                )
        if written.witnesses:
            now = utcnow()
            await session.execute(
                insert(MovementWitness),
                [
                    {"movement_id": movement_id, "witness_id": witness_id, "witnessed_at": now}
                    for movement_id, witness_id in written.witnesses.items()
                ],
            )
        for movement, lot in written:
            product = controlled.get(lot.product_id)
            if product is None or movement.kind is not MovementKind.COUNT or not movement.quantity:
                continue
            location = await session.get(Location, movement.location_id)
            assert location is not None  # a movement's foreign key
            difference = "more" if movement.quantity > 0 else "fewer"
            await self.alerts.raise_alert(
                session,
                AlertSpec(
                    AlertKind.CONTROLLED_DISCREPANCY,
                    f"controlled_discrepancy:{movement.id}",
                    f"{product.name} {product.strength} at {location.code}: count "
                    f"{movement.reference or ''} found {abs(movement.quantity)} {difference} "
                    f"than the register (lot {lot.batch_number}); register corrected to "
                    f"{movement.balance_after}",
                    location_id=movement.location_id,
                    product_id=product.id,
                    lot_id=lot.id,
                    organisation_id=location.organisation_id,
                    details={
                        "movement_id": movement.id,
                        "variance": movement.quantity,
                        "register_before": movement.balance_after - movement.quantity,
                        "counted": movement.balance_after,
                        "reference": movement.reference,
                        "witness_id": written.witnesses.get(movement.id),
                    },
                ),
            )

    # --- the register ---------------------------------------------------------------------------

    async def register(
        self,
        principal: Principal,
        product_id: int,
        location_id: int,
        since: date | None = None,
        until: date | None = None,
    ) -> Register:
        """Every movement of a controlled product at a location in a period, oldest first, with
        the product's running balance there (all its lots together)."""
        principal.require(Permission.STOCK_READ, location_id=location_id)
        start, end = period_bounds(since, until)
        async with self.db.read() as session:
            product = await session.get(Product, product_id)
            if product is None:
                raise NotFound(f"product {product_id} does not exist", field="product")
            if product.controlled_schedule is None:
                raise InvalidInput(
                    f"{product.name} {product.strength} is not a controlled drug",
                    field="product",
                )
            location = await session.get(Location, location_id)
            if location is None:
                raise NotFound(f"location {location_id} does not exist", field="location")
            organisation = await session.get(Organisation, location.organisation_id)
            assert organisation is not None  # a location's foreign key
            here = (Movement.location_id == location_id, Lot.product_id == product_id)
            opening = 0
            if start is not None:
                opening = (
                    await session.execute(
                        select(func.coalesce(func.sum(Movement.quantity), 0))
                        .join(Lot, Lot.id == Movement.lot_id)
                        .where(*here, Movement.occurred_at < start)
                    )
                ).scalar_one()
            stmt = (
                select(Movement, Lot.batch_number, Lot.expiry_date, MovementWitness.witness_id)
                .join(Lot, Lot.id == Movement.lot_id)
                .outerjoin(MovementWitness, MovementWitness.movement_id == Movement.id)
                .where(*here)
                .order_by(Movement.occurred_at, Movement.id)
                .limit(MAX_REGISTER_ENTRIES + 1)
            )
            if start is not None:
                stmt = stmt.where(Movement.occurred_at >= start)
            if end is not None:
                stmt = stmt.where(Movement.occurred_at < end)
            rows = (await session.execute(stmt)).all()
        if len(rows) > MAX_REGISTER_ENTRIES:
            raise InvalidInput(
                f"more than {MAX_REGISTER_ENTRIES:,} movements in this period; narrow it",
                field="from",
            )
        visible = sees_patient_references(principal, location_id)
        balances = running_balances(int(opening), [row[0].quantity for row in rows])
        entries = [
            RegisterEntry(
                movement=movement,
                batch_number=batch,
                expiry_date=expiry,
                balance=balance,
                witness_id=witness_id,
                patient_reference=movement.patient_reference if visible else None,
                patient_reference_hidden=not visible and movement.patient_reference is not None,
            )
            for (movement, batch, expiry, witness_id), balance in zip(rows, balances, strict=True)
        ]
        return Register(
            product=product,
            location=location,
            organisation=organisation,
            since=since,
            until=until,
            opening_balance=int(opening),
            closing_balance=balances[-1] if balances else int(opening),
            entries=entries,
            generated_at=utcnow(),
        )

    async def usernames(self, user_ids: set[int]) -> dict[int, str]:
        """Names for the exports (the GraphQL register resolves Users through loaders)."""
        if not user_ids:
            return {}
        async with self.db.read() as session:
            rows = await session.execute(
                select(User.id, User.username, User.full_name).where(User.id.in_(user_ids))
            )
            return {id_: f"{full} ({name})" for id_, name, full in rows.all()}
