"""The demo seed on a fresh, empty database: a realistic catalogue, one user per role, a ledger
whose invariants hold, an intact audit chain, and a second run that changes nothing.

Demos, benchmarks and `make run` all start from this seed, so it must be trustworthy data.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.catalog.models import Lot, Product, ProductGtin
from server.catalog.service import ATC_PATTERN
from server.config import Settings
from server.core.audit import AuditEvent, verify
from server.core.gs1 import gtin_check_digit
from server.core.migrate import upgrade
from server.core.security import Role
from server.demo import seed_demo
from server.inventory.models import Balance, Movement, MovementKind
from server.network.models import Location, Organisation, User, UserRole
from server.services import Services
from tests.conftest import (
    RUN_ID,
    TEST_SECRET,
    _pg_admin,
    _pg_available,
    _pg_dsn,
    _sa_url,
    check_ledger,
)

TODAY = date(2026, 3, 4)  # a Wednesday; 30 days earlier is a Monday (ward top-up day)


@dataclass
class Seeded:
    url: str
    history_days: int
    summary: str


def _fresh_database(backend: str, tmp_dir: Path) -> tuple[str, str | None]:
    """An empty, migrated database; returns its URL and (PostgreSQL) its name to drop."""
    if backend == "postgresql":
        if not _pg_available():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is required in CI")
            pytest.skip("PostgreSQL not reachable")
        name = f"apotheca_seed_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url, drop = _sa_url(_pg_dsn(name)), name
    else:
        url, drop = f"sqlite+aiosqlite:///{tmp_dir / 'seed.db'}", None
    asyncio.run(upgrade(url))
    return url, drop


async def _seed(url: str, history_days: int) -> str:
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    try:
        return await seed_demo(services, history_days=history_days, today=TODAY)
    finally:
        await services.close()


def _seeded(backend: str, factory: pytest.TempPathFactory, history_days: int) -> Iterator[Seeded]:
    url, drop = _fresh_database(backend, factory.mktemp(f"seed{history_days}"))
    try:
        summary = asyncio.run(_seed(url, history_days))
        yield Seeded(url, history_days, summary)
    finally:
        if drop:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def seeded_28(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """The short seed the brief asks for (four weeks of history)."""
    yield from _seeded(backend, tmp_path_factory, 28)


@pytest.fixture(scope="module")
def seeded_30(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """The shortest seed that has stock at all (the newest lot is received 30 days back)."""
    yield from _seeded(backend, tmp_path_factory, 30)


async def _services(url: str) -> AsyncIterator[Services]:
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    try:
        yield services
    finally:
        await services.close()


@pytest.fixture
async def services_28(seeded_28: Seeded) -> AsyncIterator[Services]:
    async for services in _services(seeded_28.url):
        yield services


@pytest.fixture
async def services_30(seeded_30: Seeded) -> AsyncIterator[Services]:
    async for services in _services(seeded_30.url):
        yield services


async def _count(services: Services, model: type) -> int:
    async with services.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


# --- catalogue, users, audit ----------------------------------------------------------------


async def test_catalogue_is_realistic(services_28: Services) -> None:
    """Valid GS1 codes and WHO ATC codes, so scanning and ATC search work in any demo."""
    async with services_28.db.read() as session:
        products = list((await session.execute(select(Product))).scalars())
        gtins = list((await session.execute(select(ProductGtin.gtin))).scalars())
    assert len(products) >= 40
    assert len(gtins) >= len(products)
    for gtin in gtins:
        assert len(gtin) == 14 and gtin.isdigit(), gtin
        assert gtin_check_digit(gtin[:-1]) == gtin[-1], gtin
    for product in products:
        assert product.atc_code is not None and len(product.atc_code) == 7, product.name
        assert ATC_PATTERN.match(product.atc_code), product.atc_code
    assert sum(p.controlled_schedule is not None for p in products) >= 3


async def test_one_user_per_role(services_28: Services) -> None:
    """Every screen of the app can be shown: someone holds each of the seven roles."""
    async with services_28.db.read() as session:
        rows = (
            await session.execute(
                select(UserRole.role, User.username, User.active).join(
                    User, User.id == UserRole.user_id
                )
            )
        ).all()
    by_role: dict[Role, list[str]] = defaultdict(list)
    for role, username, active in rows:
        assert active, username
        by_role[role].append(username)
    assert set(by_role) == set(Role)
    assert len(Role) == 7
    assert all(len(names) >= 1 for names in by_role.values())


async def test_audit_chain_verifies(services_28: Services, services_30: Services) -> None:
    """Everything the seed wrote went through audited services: the chain must be intact."""
    for services in (services_28, services_30):
        assert await _count(services, AuditEvent) > 0
        async with services.db.read() as session:
            result = await verify(session)
        assert result.ok, result
        assert result.checked == await _count(services, AuditEvent)


async def test_second_seed_with_only_if_empty_does_nothing(
    seeded_28: Seeded, services_28: Services
) -> None:
    """`apotheca seed --demo --if-empty` runs on every container start; it must be a no-op."""
    assert "seeded" in seeded_28.summary
    models = (Organisation, Location, User, Product, Lot, Movement, Balance, AuditEvent)
    before = {m.__name__: await _count(services_28, m) for m in models}
    message = await seed_demo(services_28, only_if_empty=True, today=TODAY, history_days=28)
    assert "skipped" in message
    assert {m.__name__: await _count(services_28, m) for m in models} == before
    with pytest.raises(RuntimeError):
        await seed_demo(services_28, today=TODAY, history_days=28)
    assert {m.__name__: await _count(services_28, m) for m in models} == before


# --- the ledger -----------------------------------------------------------------------------


async def test_ledger_invariants_hold(services_28: Services, services_30: Services) -> None:
    """The seed writes through the ledger, so its invariants must hold on every balance."""
    await check_ledger(services_28)
    assert await check_ledger(services_30) > 0


async def test_thirty_days_of_stock_history(services_30: Services) -> None:
    """A month of history: the full lot plan compressed into it, dispensing on nearly every day."""
    async with services_30.db.read() as session:
        expiries = list((await session.execute(select(Lot.expiry_date))).scalars())
        days = set(
            (
                await session.execute(
                    select(Movement.occurred_at).where(Movement.kind == MovementKind.DISPENSE)
                )
            ).scalars()
        )
    assert expiries and min(expiries) < TODAY < TODAY + timedelta(days=600) <= max(expiries)
    dispense_days = {d.date() for d in days}
    window = [TODAY - timedelta(days=n) for n in range(31)]
    assert len(dispense_days & set(window)) >= 0.8 * len(window)


async def test_short_seed_still_has_expiry_spread_and_daily_dispensing(
    services_28: Services,
) -> None:
    """A short history should shrink the simulation, not drop the stock the demo is about."""
    async with services_28.db.read() as session:
        expiries = list((await session.execute(select(Lot.expiry_date))).scalars())
        stamps = (
            await session.execute(
                select(Movement.occurred_at).where(Movement.kind == MovementKind.DISPENSE)
            )
        ).scalars()
        dispense_days = {s.date() for s in stamps}
    assert expiries, "no lots at all"
    assert min(expiries) < TODAY, "no expired lot"
    assert max(expiries) >= TODAY + timedelta(days=600), "no lot expiring in ~2 years"
    window = [TODAY - timedelta(days=n) for n in range(29)]
    assert len(dispense_days & set(window)) > len(window) / 2


# --- work in flight: every screen has life ----------------------------------------------------


async def test_network_has_work_in_flight(services_28: Services) -> None:
    """Orders at each status (one received with a delivery), a shipment on its way, transfers
    at every step, a recall, a count in progress and wholesaler stock: no "Nothing here."."""
    from server.counts.models import CountStatus, StockCount
    from server.purchasing.models import PurchaseOrder, PurchaseOrderStatus
    from server.shipments.models import Shipment, ShipmentStatus
    from server.supervision.models import Recall
    from server.suppliers.models import Contract
    from server.transfers.models import Transfer, TransferStatus

    async with services_28.db.read() as session:

        async def statuses(model: type, column: object) -> set[object]:
            return set((await session.execute(select(column))).scalars())

        assert {
            PurchaseOrderStatus.DRAFT,
            PurchaseOrderStatus.SUBMITTED,
            PurchaseOrderStatus.ACKNOWLEDGED,
        } <= await statuses(PurchaseOrder, PurchaseOrder.status)
        received = await statuses(PurchaseOrder, PurchaseOrder.status)
        assert received & {PurchaseOrderStatus.RECEIVED, PurchaseOrderStatus.PARTIALLY_RECEIVED}
        assert {ShipmentStatus.IN_TRANSIT, ShipmentStatus.RECEIVED} <= await statuses(
            Shipment, Shipment.status
        )
        assert {
            TransferStatus.REQUESTED,
            TransferStatus.APPROVED,
            TransferStatus.PICKED,
            TransferStatus.DISPATCHED,
            TransferStatus.RECEIVED,
        } <= await statuses(Transfer, Transfer.status)
        assert CountStatus.OPEN in await statuses(StockCount, StockCount.status)
        assert await _count(services_28, Recall) >= 1
        assert await _count(services_28, Contract) >= 1
        wholesaler = (
            await session.execute(
                select(func.coalesce(func.sum(Balance.quantity), 0))
                .join(Location, Location.id == Balance.location_id)
                .where(Location.code == "WHS-DC")
            )
        ).scalar_one()
        assert wholesaler > 0, "the wholesaler holds stock"
    assert await check_ledger(services_28) > 0
