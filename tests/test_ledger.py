"""The ledger's invariants on both databases: balance = sum of movements, never negative
(unless the location allows it), refused movements leave no trace, FEFO, expiry, replays."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from server.catalog.models import Lot, LotStatus
from server.config import Settings
from server.core.db import utcnow
from server.core.errors import DomainError, ErrorCode
from server.inventory.models import Balance, Movement, MovementKind
from server.inventory.service import MovementRequest
from server.services import Services
from tests.conftest import TEST_SECRET, Demo, balance_of, first_product_id, receive, row_counts

OPERATION_KINDS = [
    MovementKind.RECEIVE,
    MovementKind.DISPENSE,
    MovementKind.RETURN,
    MovementKind.ADJUST,
    MovementKind.DISPOSE,
]

operations = st.lists(
    st.tuples(
        st.sampled_from(OPERATION_KINDS),
        st.sampled_from(["HOSP-CP", "WARD-A"]),
        st.integers(0, 2),  # which of three lots
        st.integers(-6, 12),  # quantity (zero and negatives must be refused)
    ),
    min_size=1,
    max_size=25,
)


async def _run_example(url: str, ops: list[tuple[MovementKind, str, int, int]]) -> None:
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    try:
        async with services.db.read() as session:
            from server.network.models import Location, User

            locations = {x.code: x.id for x in (await session.execute(select(Location))).scalars()}
            admin_id = (
                await session.execute(select(User.id).where(User.username == "admin"))
            ).scalar_one()
        admin = await services.network.load_principal(admin_id)
        product_id = await first_product_id(services)
        lots: list[int] = []
        for _ in range(3):
            from tests.conftest import Demo as _Demo

            demo = _Demo(services, {}, locations, {}, {"admin": admin})
            lots.append(await receive(demo, "HOSP-CP", 1, product_id=product_id))
        for kind, code, lot_index, quantity in ops:
            before = await row_counts(services)
            request = MovementRequest(
                kind, locations[code], quantity, lot_id=lots[lot_index], reason="property test"
            )
            try:
                await services.ledger.record(admin, [request], operation="property")
            except DomainError as error:
                assert error.code in (ErrorCode.INSUFFICIENT_STOCK, ErrorCode.INVALID_INPUT)
                assert await row_counts(services) == before, "a refused movement left a trace"
        async with services.db.read() as session:
            sums = dict(
                (
                    await session.execute(
                        select(
                            Movement.location_id.concat(":").concat(Movement.lot_id),
                            func.sum(Movement.quantity),
                        )
                        .where(Movement.lot_id.in_(lots))
                        .group_by(Movement.location_id, Movement.lot_id)
                    )
                ).all()
            )
            balances = (
                (await session.execute(select(Balance).where(Balance.lot_id.in_(lots))))
                .scalars()
                .all()
            )
        for balance in balances:
            assert balance.quantity >= 0
            assert balance.quantity == sums.get(f"{balance.location_id}:{balance.lot_id}", 0)
    finally:
        await services.close()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_balances_equal_movement_sums_and_never_go_negative(database_url: str, ops) -> None:
    asyncio.run(_run_example(database_url, ops))


async def test_movements_cannot_be_updated_or_deleted(demo: Demo) -> None:
    await receive(demo, "HOSP-CP", 5)
    async with demo.services.db.write() as session:
        movement = (await session.execute(select(Movement).limit(1))).scalar_one()
    with pytest.raises(Exception, match="immutable"):
        async with demo.services.db.write() as session:
            await session.execute(
                Movement.__table__.update().where(Movement.id == movement.id).values(quantity=99)
            )
    with pytest.raises(Exception, match="immutable"):
        async with demo.services.db.write() as session:
            await session.execute(Movement.__table__.delete().where(Movement.id == movement.id))


async def test_fefo_picks_earliest_expiry_skips_expired_and_held_lots(demo: Demo) -> None:
    services = demo.services
    product_id = await first_product_id(services)
    late = await receive(demo, "WARD-A", 5, expiry_days=300, product_id=product_id)
    early = await receive(demo, "WARD-A", 3, expiry_days=30, product_id=product_id)
    held = await receive(demo, "WARD-A", 4, expiry_days=10, product_id=product_id)
    expired = await receive(demo, "WARD-A", 4, expiry_days=400, product_id=product_id)
    async with services.db.write() as session:
        (await session.get(Lot, held)).status = LotStatus.QUARANTINED
        (await session.get(Lot, expired)).expiry_date = utcnow().date() - timedelta(days=1)
    ward = demo.locations["WARD-A"]
    result = await services.ledger.record(
        demo.principals["nurse"],
        [MovementRequest(MovementKind.DISPENSE, ward, 4, product_id=product_id)],
        operation="dispense",
    )
    assert [(m.lot_id, m.quantity) for m in result.movements] == [(early, -3), (late, -1)]
    assert await balance_of(services, ward, held) == 4
    assert await balance_of(services, ward, expired) == 4
    with pytest.raises(DomainError) as refused:
        await services.ledger.record(
            demo.principals["nurse"],
            [MovementRequest(MovementKind.DISPENSE, ward, 5, product_id=product_id)],
            operation="dispense",
        )
    assert refused.value.code is ErrorCode.INSUFFICIENT_STOCK


async def test_naming_an_expired_or_quarantined_lot_is_refused(demo: Demo) -> None:
    services = demo.services
    lot_id = await receive(demo, "WARD-A", 5)
    async with services.db.write() as session:
        (await session.get(Lot, lot_id)).expiry_date = utcnow().date() - timedelta(days=3)
    request = MovementRequest(MovementKind.DISPENSE, demo.locations["WARD-A"], 1, lot_id=lot_id)
    with pytest.raises(DomainError) as refused:
        await services.ledger.record(demo.principals["nurse"], [request], operation="d")
    assert refused.value.code is ErrorCode.EXPIRED_LOT
    # Disposing of expired stock is exactly what should happen to it.
    dispose = MovementRequest(
        MovementKind.DISPOSE, demo.locations["WARD-A"], 5, lot_id=lot_id, reason="EXPIRED"
    )
    await services.ledger.record(demo.principals["nurse"], [dispose], operation="dispose")
    assert await balance_of(services, demo.locations["WARD-A"], lot_id) == 0


async def test_batch_is_all_or_nothing(demo: Demo) -> None:
    services = demo.services
    lot_id = await receive(demo, "HOSP-CP", 5)
    before = await row_counts(services)
    cp = demo.locations["HOSP-CP"]
    with pytest.raises(DomainError):
        await services.ledger.record(
            demo.principals["pharmacist"],
            [
                MovementRequest(MovementKind.DISPENSE, cp, 3, lot_id=lot_id),
                MovementRequest(MovementKind.DISPENSE, cp, 3, lot_id=lot_id),
            ],
            operation="batch",
        )
    assert await row_counts(services) == before
    assert await balance_of(services, cp, lot_id) == 5


async def test_negative_stock_only_where_the_location_allows_it(demo: Demo) -> None:
    services = demo.services
    lot_id = await receive(demo, "WARD-B", 1)
    ward = demo.locations["WARD-B"]
    await services.network.update_location(
        demo.principals["admin"], ward, allow_negative_stock=True
    )
    await services.ledger.record(
        demo.principals["pharmacist"],
        [MovementRequest(MovementKind.DISPENSE, ward, 3, lot_id=lot_id)],
        operation="d",
    )
    assert await balance_of(services, ward, lot_id) == -2


async def test_same_idempotency_key_three_times_changes_stock_once(demo: Demo) -> None:
    services = demo.services
    lot_id = await receive(demo, "WARD-A", 10)
    ward = demo.locations["WARD-A"]
    request = [MovementRequest(MovementKind.DISPENSE, ward, 2, lot_id=lot_id)]
    results = [
        await services.ledger.record(
            demo.principals["nurse"], request, operation="dispense", idempotency_key="scan-1"
        )
        for _ in range(3)
    ]
    assert [r.replayed for r in results] == [False, True, True]
    assert {tuple(m.id for m in r.movements) for r in results} == {
        tuple(m.id for m in results[0].movements)
    }
    assert await balance_of(services, ward, lot_id) == 8
    # The same key for a different request is refused, not silently replayed.
    other = [MovementRequest(MovementKind.DISPENSE, ward, 3, lot_id=lot_id)]
    with pytest.raises(DomainError) as refused:
        await services.ledger.record(
            demo.principals["nurse"], other, operation="dispense", idempotency_key="scan-1"
        )
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


async def test_concurrent_replays_of_one_key_land_once(demo: Demo) -> None:
    services = demo.services
    lot_id = await receive(demo, "WARD-A", 10)
    ward = demo.locations["WARD-A"]
    request = [MovementRequest(MovementKind.DISPENSE, ward, 1, lot_id=lot_id)]
    results = await asyncio.gather(
        *[
            services.ledger.record(
                demo.principals["nurse"], request, operation="dispense", idempotency_key="outbox-42"
            )
            for _ in range(5)
        ]
    )
    assert sum(not r.replayed for r in results) == 1
    assert await balance_of(services, ward, lot_id) == 9


async def test_receive_of_known_batch_with_other_expiry_names_both_dates(demo: Demo) -> None:
    lot_id = await receive(demo, "HOSP-CP", 1, batch="KNOWN1", expiry_days=100)
    with pytest.raises(DomainError) as refused:
        await receive(demo, "HOSP-CP", 1, batch="KNOWN1", expiry_days=200)
    async with demo.services.db.read() as session:
        lot = await session.get(Lot, lot_id)
    assert lot.expiry_date.isoformat() in refused.value.message
    assert (lot.expiry_date + timedelta(days=100)).isoformat() in refused.value.message
