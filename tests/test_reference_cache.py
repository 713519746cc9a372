"""The per-process reference cache (server.core.cache): copies are used while the reference
version is unchanged, and a change made through another process (here a second `Services` on
the same database, as a second worker is) is seen by the very next transaction or request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from server.config import Settings
from server.core.errors import AccountDisabled, NotFound
from server.core.security import Permission, Role
from server.demo import DEMO_PASSWORD
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, locations_of
from server.services import Services
from tests.conftest import Demo, balance_of, receive


@pytest.fixture
async def other_worker(settings: Settings) -> AsyncIterator[Services]:
    """A second process's services: its own engines, its own cache, the same database."""
    built = Services.build(settings)
    yield built
    await built.close()


def dispense(location_id: int, lot_id: int) -> list[MovementRequest]:
    return [MovementRequest(MovementKind.DISPENSE, location_id, 1, lot_id=lot_id)]


async def test_a_location_deactivated_on_one_worker_is_refused_by_the_other_at_once(
    demo: Demo, other_worker: Services
) -> None:
    ward = demo.locations["WARD-B"]
    lot_id = await receive(demo, "WARD-B", 10)
    pharmacist = demo.principals["pharmacist"]
    ledger = other_worker.ledger
    for n in range(3):  # warm the other worker's copy of WARD-B
        await ledger.record(
            pharmacist, dispense(ward, lot_id), operation="t", idempotency_key=f"w{n}"
        )
    cache = other_worker.db.cache
    hits = cache.hits
    await ledger.record(pharmacist, dispense(ward, lot_id), operation="t", idempotency_key="w3")
    assert cache.hits > hits, "the location came from the cache"
    await demo.services.network.update_location(demo.principals["admin"], ward, active=False)
    for key in ("after-1", "after-2"):  # with a key (version read by the claim) ...
        with pytest.raises(NotFound) as refused:
            await ledger.record(
                pharmacist, dispense(ward, lot_id), operation="t", idempotency_key=key
            )
        assert refused.value.field == "location"
    with pytest.raises(NotFound):  # ... and without one (version read on its own)
        await ledger.record(pharmacist, dispense(ward, lot_id), operation="t")
    await demo.services.network.update_location(demo.principals["admin"], ward, active=True)
    await ledger.record(pharmacist, dispense(ward, lot_id), operation="t", idempotency_key="back")
    assert await balance_of(demo.services, ward, lot_id) == 10 - 5


async def test_a_user_disabled_or_changed_on_one_worker_is_seen_by_the_other_at_once(
    demo: Demo, other_worker: Services
) -> None:
    network = other_worker.network
    nurse_id = demo.users["nurse"]
    token = (await demo.services.network.password_grant("nurse", DEMO_PASSWORD)).access_token
    for _ in range(3):  # warm the other worker's copy of the nurse
        principal = await network.authenticate(token)
    assert principal.user_id == nurse_id and not principal.can(Permission.USERS_MANAGE)
    hits = other_worker.db.cache.hits
    again = await network.authenticate(token)
    assert other_worker.db.cache.hits > hits, "the principal came from the cache"
    assert again.request_id != principal.request_id, "each request has its own id"

    admin = demo.principals["admin"]
    await demo.services.network.update_user(admin, nurse_id, roles=[Role.ADMIN])
    promoted = await network.authenticate(token)
    assert promoted.roles == frozenset({Role.ADMIN}) and promoted.location_ids is None

    await demo.services.network.update_user(admin, nurse_id, active=False)
    with pytest.raises(AccountDisabled):
        await network.authenticate(token)
    with pytest.raises(AccountDisabled):  # the cached refusal is raised afresh
        await network.authenticate(token)


async def test_a_change_made_in_plain_sql_advances_the_version(
    demo: Demo, other_worker: Services
) -> None:
    """The triggers, not the services, keep the version: any writer invalidates copies."""
    ward = demo.locations["WARD-A"]
    lot_id = await receive(demo, "WARD-A", 5)
    pharmacist = demo.principals["pharmacist"]
    ledger = other_worker.ledger
    await ledger.record(pharmacist, dispense(ward, lot_id), operation="t", idempotency_key="a")
    async with demo.services.db.write() as session:
        before = (await session.execute(text("SELECT version FROM reference_version"))).scalar()
        await session.execute(
            text("UPDATE locations SET active = :no WHERE id = :id"), {"no": False, "id": ward}
        )
        after = (await session.execute(text("SELECT version FROM reference_version"))).scalar()
    assert after is not None and before is not None and after > before
    with pytest.raises(NotFound):
        await ledger.record(pharmacist, dispense(ward, lot_id), operation="t", idempotency_key="b")


async def test_a_rolled_back_write_leaves_nothing_in_the_cache(demo: Demo) -> None:
    """What a write transaction loaded is cached only after it commits."""
    cache = demo.services.db.cache
    ward = demo.locations["WARD-A"]
    with pytest.raises(RuntimeError):
        async with demo.services.db.write() as session:
            assert ward in await locations_of(session, [ward])
            raise RuntimeError("roll back")
    misses = cache.misses
    async with demo.services.db.write() as session:
        await locations_of(session, [ward])
    assert cache.misses == misses + 1, "the rolled-back transaction's copy was not kept"
    async with demo.services.db.write() as session:
        await locations_of(session, [ward])
    assert cache.misses == misses + 1, "the committed one was"


async def test_a_product_made_controlled_on_one_worker_is_checked_by_the_other_at_once(
    demo: Demo, other_worker: Services
) -> None:
    """The ledger's hooks read products from the cache (controlled rules, catalogue price):
    a product turned controlled in plain SQL elsewhere is enforced on the very next write."""
    from server.catalog.models import Lot, Product
    from server.core.errors import DomainError, ErrorCode

    ward = demo.locations["WARD-B"]
    lot_id = await receive(demo, "WARD-B", 10)
    pharmacist = demo.principals["pharmacist"]
    ledger = other_worker.ledger
    for n in range(2):  # warm the other worker's copy of the product
        await ledger.record(
            pharmacist, dispense(ward, lot_id), operation="t", idempotency_key=f"p{n}"
        )
    async with demo.services.db.write() as session:
        product_id = (await session.get(Lot, lot_id)).product_id
        await session.execute(
            text("UPDATE products SET controlled_schedule = 'CII' WHERE id = :id"),
            {"id": product_id},
        )
    with pytest.raises(DomainError) as refused:
        await ledger.record(pharmacist, dispense(ward, lot_id), operation="t", idempotency_key="p2")
    assert refused.value.code is ErrorCode.PATIENT_REFERENCE_REQUIRED
    assert await balance_of(demo.services, ward, lot_id) == 10 - 2
    async with demo.services.db.read() as session:
        assert (await session.get(Product, product_id)).controlled_schedule == "CII"


async def test_every_watched_table_keeps_its_triggers_after_all_migrations(demo: Demo) -> None:
    """SQLite drops a table's triggers when a batch migration rebuilds it (0015 did, to
    products): after every migration, each watched table still has its version triggers and
    the ledger's immutability guards are still there; a product change advances the version."""
    import importlib

    watched = importlib.import_module("server.migrations.versions.0014_reference_version")
    async with demo.services.db.read() as session:
        if demo.services.db.sqlite:
            rows = await session.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            )
            expected = {"movements_no_update", "movements_no_delete"} | {
                f"reference_version_{table}_{verb}"
                for table in watched.WATCHED
                for verb in ("insert", "update", "delete")
            }
            expected |= {f"reference_version_{t}_update" for t in watched.UPDATE_ONLY}
        else:
            rows = await session.execute(
                text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
            )
            expected = {"movements_immutable"} | {
                f"reference_version_{t}" for t in watched.WATCHED + watched.UPDATE_ONLY
            }
        present = set(rows.scalars())
    assert expected - present == set(), "triggers lost by a migration"

    async def version() -> int:
        async with demo.services.db.read() as session:
            return int(
                (await session.execute(text("SELECT version FROM reference_version"))).scalar_one()
            )

    before = await version()
    async with demo.services.db.write() as session:
        await session.execute(text("UPDATE products SET name = name WHERE id = 1"))
    assert await version() > before
