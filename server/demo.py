"""The demo network: organisations, locations, one user per role, the catalogue, and a year of
stock history (supply chain receipts, weekly ward top-ups, daily dispensing with weekly,
seasonal and intermittent patterns), written through the ledger so every invariant holds.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from server.catalog.demo_data import DEMO_PRODUCTS, DemoProduct, make_gtin14
from server.catalog.models import Lot, Product, StorageCondition
from server.catalog.service import ProductFields
from server.core.errors import DomainError
from server.core.security import Principal, Role
from server.finance.costing import SPEND_KINDS
from server.finance.models import MovementCost
from server.inventory.models import Balance, Movement, MovementKind
from server.inventory.service import MovementRequest
from server.network.models import LocationKind, Organisation, OrganisationKind
from server.purchasing.models import PurchaseOrder, PurchaseOrderLine
from server.purchasing.service import OrderLineFields
from server.services import Services
from server.shipments.models import Shipment, ShipmentLine, ShipmentStatus
from server.shipments.service import LineReceiptCommand, ShipmentLineFields
from server.suppliers.service import ContractLineFields
from server.transfers.service import LineRequest

DEMO_PASSWORD = "apotheca-demo"
HISTORY_DAYS = 365
# Lot plan relative to today: (received days ago, expires in days). The first is already
# expired with packs left in the warehouse reserve; the second expires within the month.
LOT_PLAN = ((365, -20), (270, 25), (180, 180), (90, 400), (30, 700))


@dataclass
class DemoNetwork:
    orgs: dict[str, int]
    locations: dict[str, int]
    users: dict[str, int]


def daily_demand(product: DemoProduct, day: date, rng: random.Random) -> int:
    """Packs used on `day`: weekly rhythm, seasons, or rare intermittent use."""
    profile = product.demand
    if profile.pattern == "INTERMITTENT":
        if rng.random() >= min(0.9, profile.mean_daily_packs / 2):
            return 0
        return 1 + _poisson(rng, 1.0)
    mean = profile.mean_daily_packs * (1.15 if day.weekday() < 5 else 0.62)
    doy = day.timetuple().tm_yday
    if profile.pattern == "SEASONAL_WINTER":
        mean *= 1 + 0.7 * math.cos(2 * math.pi * (doy - 20) / 365)
    elif profile.pattern == "SEASONAL_SUMMER":
        mean *= 1 + 0.7 * math.cos(2 * math.pi * (doy - 200) / 365)
    return _poisson(rng, max(mean, 0.0))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


async def _build_network(services: Services) -> tuple[DemoNetwork, Principal]:
    network = services.network
    bootstrap = await network.create_user(
        None, username="admin", full_name="Ada Admin", password=DEMO_PASSWORD, roles=[Role.ADMIN]
    )
    admin = await network.load_principal(bootstrap.id)
    orgs: dict[str, int] = {}
    for key, name, kind, gln in (
        ("mfg", "Helvepharm Manufacturing AG", OrganisationKind.MANUFACTURER, "7612345000008"),
        ("whs", "MedDistri Wholesale", OrganisationKind.WHOLESALER, "7612345000015"),
        ("hosp", "St. Aurelia General Hospital", OrganisationKind.HOSPITAL, "7612345000022"),
        ("pharm", "Lindenhof Pharmacy", OrganisationKind.PHARMACY, "7612345000039"),
        ("reg", "Regional Medicines Agency", OrganisationKind.REGULATOR, None),
    ):
        orgs[key] = (await network.create_organisation(admin, name=name, kind=kind, gln=gln)).id
    locations: dict[str, int] = {}
    for code, name, location_kind, org, parent in (
        ("MFG-01", "Helvepharm production site", LocationKind.WAREHOUSE, "mfg", None),
        ("WHS-DC", "MedDistri distribution centre", LocationKind.WAREHOUSE, "whs", None),
        ("HOSP-WH", "Hospital warehouse", LocationKind.WAREHOUSE, "hosp", None),
        ("HOSP-QA", "Hospital quarantine store", LocationKind.QUARANTINE, "hosp", "HOSP-WH"),
        ("HOSP-CP", "Central pharmacy", LocationKind.PHARMACY, "hosp", None),
        ("WARD-A", "Ward A - Internal medicine", LocationKind.WARD, "hosp", "HOSP-CP"),
        ("WARD-B", "Ward B - Surgery", LocationKind.WARD, "hosp", "HOSP-CP"),
        ("WARD-C", "Ward C - Paediatrics", LocationKind.WARD, "hosp", "HOSP-CP"),
        ("PHARM-01", "Lindenhof Pharmacy dispensary", LocationKind.PHARMACY, "pharm", None),
    ):
        location = await network.create_location(
            admin,
            organisation_id=orgs[org],
            code=code,
            name=name,
            kind=location_kind,
            parent_id=locations.get(parent) if parent else None,
        )
        locations[code] = location.id
    await network.update_user(admin, bootstrap.id, organisation_id=orgs["hosp"])
    users = {"admin": bootstrap.id}
    for username, full_name, role, org, scope in (
        ("pharmacist", "Paula Pharmacist", Role.PHARMACIST, "hosp", []),
        ("warehouse", "Walter Warehouse", Role.WAREHOUSE_MANAGER, "hosp", ["HOSP-WH"]),
        ("nurse", "Nora Nurse", Role.NURSE, "hosp", ["WARD-A"]),
        ("nurse.b", "Nils Nurse", Role.NURSE, "hosp", ["WARD-B"]),
        ("supplier", "Sam Supplier", Role.SUPPLIER, "whs", []),
        ("auditor", "Aude Auditor", Role.AUDITOR, "hosp", []),
        ("regulator", "Rita Regulator", Role.REGULATOR, "reg", []),
    ):
        user = await network.create_user(
            admin,
            username=username,
            full_name=full_name,
            password=DEMO_PASSWORD,
            roles=[role],
            organisation_id=orgs[org],
            location_ids=[locations[c] for c in scope],
        )
        users[username] = user.id
    return DemoNetwork(orgs, locations, users), admin


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour, 0), tzinfo=UTC)


class _Shelf:
    """In-memory stock per (location, lot) so the simulation only asks for what is there."""

    def __init__(self) -> None:
        self.qty: dict[tuple[int, int], int] = defaultdict(int)

    def fefo(self, location: int, lots: list[Lot], wanted: int, on: date) -> list[tuple[Lot, int]]:
        picked: list[tuple[Lot, int]] = []
        for lot in sorted(lots, key=lambda x: (x.expiry_date, x.id)):
            if wanted == 0:
                break
            available = self.qty[(location, lot.id)]
            if lot.expiry_date >= on and available > 0:
                take = min(available, wanted)
                picked.append((lot, take))
                wanted -= take
        return picked


async def seed_demo(
    services: Services,
    *,
    only_if_empty: bool = False,
    today: date | None = None,
    history_days: int = HISTORY_DAYS,
    progress: Callable[[str], None] | None = None,
) -> str:
    async with services.db.read() as session:
        existing = (await session.execute(select(func.count(Organisation.id)))).scalar_one()
    if existing:
        if only_if_empty:
            return "database already has data; demo seed skipped"
        raise RuntimeError("the demo seed needs an empty database")
    today = today or datetime.now(UTC).date()
    rng = random.Random(20261123)
    net, admin = await _build_network(services)
    loc = net.locations
    products = []
    for item in DEMO_PRODUCTS:
        products.append(
            await services.catalog.create_product(
                admin,
                ProductFields(
                    name=item.name,
                    strength=item.strength,
                    dosage_form=item.dosage_form,
                    unit=item.unit,
                    approval_number=item.approval_number,
                    gtins=[make_gtin14(b) for b in item.gtin_bodies],
                    atc_code=item.atc_code,
                    controlled_schedule=item.controlled_schedule,
                    storage=StorageCondition(item.storage),
                    unit_cost=Decimal(item.unit_cost),
                    critical=item.critical,
                ),
            )
        )
    if history_days >= 0:
        await _demo_contracts(services, admin, net, products, today, history_days)
    shelf = _Shelf()
    lots_by_product: dict[int, list[Lot]] = defaultdict(list)
    receipts: dict[date, list[tuple[int, DemoProduct, Lot, int]]] = defaultdict(list)
    wards = ["WARD-A", "WARD-B", "WARD-C"]
    async with services.db.write() as session:
        for index, (item, product) in enumerate(zip(DEMO_PRODUCTS, products, strict=True)):
            quantity = math.ceil(item.demand.mean_daily_packs * 95 * 1.3) + 6
            for lot_index, (planned_ago, expires_in) in enumerate(LOT_PLAN):
                if history_days < 0:
                    continue
                # A shorter history compresses the receipts into it; expiries stay as planned.
                received_ago = planned_ago * history_days // HISTORY_DAYS
                lot = Lot(
                    product_id=product.id,
                    batch_number=f"B{index:02d}{lot_index}"
                    f"{(today - timedelta(days=received_ago)).strftime('%y%m')}",
                    expiry_date=today + timedelta(days=expires_in),
                    manufacturer_id=net.orgs["mfg"],
                )
                session.add(lot)
                await session.flush()
                lots_by_product[product.id].append(lot)
                receipts[today - timedelta(days=received_ago)].append((index, item, lot, quantity))
    requests: list[MovementRequest] = []
    for offset in range(history_days, -1, -1):
        day = today - timedelta(days=offset)
        for index, item, lot, quantity in receipts.get(day, []):
            requests += _supply_chain(net, item, lot, quantity, index, day)
            reserve = max(2, quantity // 10)
            shelf.qty[(loc["HOSP-CP"], lot.id)] += quantity
            shelf.qty[(loc["HOSP-WH"], lot.id)] += reserve
        for index, (item, product) in enumerate(zip(DEMO_PRODUCTS, products, strict=True)):
            ward = loc[wards[index % 3]]
            lots = lots_by_product[product.id]
            if day.weekday() == 0:
                on_ward = sum(
                    q
                    for (l_id, _), q in ((k[::-1], v) for k, v in shelf.qty.items() if k[0] == ward)
                    if any(x.id == l_id and x.expiry_date >= day for x in lots)
                )
                target = math.ceil(item.demand.mean_daily_packs * 10) + 2
                for lot, qty in shelf.fefo(loc["HOSP-CP"], lots, max(0, target - on_ward), day):
                    shelf.qty[(loc["HOSP-CP"], lot.id)] -= qty
                    shelf.qty[(ward, lot.id)] += qty
                    ref = f"TOPUP-{day.isoformat()}-{index}"
                    requests.append(
                        MovementRequest(
                            MovementKind.TRANSFER_OUT,
                            loc["HOSP-CP"],
                            qty,
                            lot_id=lot.id,
                            reference=ref,
                            occurred_at=_at(day, 7),
                        )
                    )
                    requests.append(
                        MovementRequest(
                            MovementKind.TRANSFER_IN,
                            ward,
                            qty,
                            lot_id=lot.id,
                            reference=ref,
                            occurred_at=_at(day, 8),
                        )
                    )
            demand = daily_demand(item, day, rng)
            for lot, qty in shelf.fefo(ward, lots, demand, day):
                shelf.qty[(ward, lot.id)] -= qty
                requests.append(
                    MovementRequest(
                        MovementKind.DISPENSE,
                        ward,
                        qty,
                        lot_id=lot.id,
                        patient_reference=f"ENC-{rng.randint(100000, 999999)}",
                        occurred_at=_at(day, 9 + rng.randint(0, 10)),
                    )
                )
        if requests and (day.weekday() == 6 or offset == 0):  # one transaction per week
            async with services.db.write() as session:
                await services.ledger.apply(session, admin, requests)
            requests = []
            if progress and day.day <= 7:
                progress(f"  history written up to {day.isoformat()}")
    life = ""
    if history_days >= 0:
        await _witnessed_disposal(services, net, products)
        if progress:
            progress("  network life: orders, shipments, transfers, a recall, a count")
        life = await _network_life(services, net, products, lots_by_product)
    if history_days > 0:
        await _demo_budgets(services, admin, net, today)
    async with services.db.read() as session:
        stored = (await session.execute(select(func.count(Movement.id)))).scalar_one()
    return (
        f"demo network seeded: {len(net.orgs)} organisations, {len(net.locations)} "
        f"locations, {len(net.users)} users, {len(products)} products, {stored} movements"
        f"{life} (password for every demo user: {DEMO_PASSWORD})"
    )


async def _witnessed_disposal(services: Services, net: DemoNetwork, products: list[Any]) -> None:
    """A controlled drug's register with a witness in it: the nurse of WARD-A drops an ampoule
    of morphine (or whichever controlled drug that ward holds), the pharmacist witnesses."""
    nurse = await services.network.load_principal(net.users["nurse"])
    for product in products:
        if not product.controlled_schedule:
            continue
        try:
            await services.ledger.record(
                nurse,
                [
                    MovementRequest(
                        MovementKind.DISPOSE,
                        net.locations["WARD-A"],
                        1,
                        product_id=product.id,
                        reason="DAMAGED: dropped while preparing",
                        witness_id=net.users["pharmacist"],
                    )
                ],
                operation="demo.witnessedDisposal",
            )
            return
        except DomainError:
            continue  # none of it on the ward's shelf: try the next controlled drug


async def _demo_contracts(
    services: Services,
    admin: Principal,
    net: DemoNetwork,
    products: list[Product],
    today: date,
    history_days: int,
) -> None:
    """The hospital's contracts with the wholesaler: last year's prices 6 % lower than this
    quarter's, so receipts are priced and the moving average visibly re-blends."""
    start = today - timedelta(days=history_days + 1)
    switch = today - timedelta(days=min(90, history_days // 2))
    for reference, valid_from, valid_until, factor in (
        ("DEMO-MEDDISTRI-1", start, switch - timedelta(days=1), Decimal("0.94")),
        ("DEMO-MEDDISTRI-2", switch, today + timedelta(days=365), Decimal(1)),
    ):
        if valid_until < valid_from:
            continue
        await services.suppliers.create_contract(
            admin,
            supplier_id=net.orgs["whs"],
            buyer_id=net.orgs["hosp"],
            reference=reference,
            valid_from=valid_from,
            valid_until=valid_until,
            lines=[
                ContractLineFields(
                    product_id=p.id,
                    unit_price=(Decimal(p.unit_cost) * factor).quantize(Decimal("0.01")),
                    lead_time_days=3,
                )
                for p in products
            ],
        )


async def _demo_budgets(
    services: Services, admin: Principal, net: DemoNetwork, today: date
) -> None:
    """Monthly budgets for the wards, this month and last, around what they spend: Ward A
    with room, Ward B close to it, Ward C short of it (so the Spend screen has something to
    say and a BUDGET_EXCEEDED alert shows)."""
    since = datetime.combine(today - timedelta(days=30), time.min, tzinfo=UTC)
    async with services.db.read() as session:
        spend = dict(
            (
                await session.execute(
                    select(MovementCost.location_id, -func.sum(MovementCost.value))
                    .where(
                        MovementCost.kind.in_(SPEND_KINDS),
                        MovementCost.occurred_at >= since,
                    )
                    .group_by(MovementCost.location_id)
                )
            ).all()
        )
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    for code, factor in (("WARD-A", "1.3"), ("WARD-B", "1.02"), ("WARD-C", "0.85")):
        monthly = Decimal(spend.get(net.locations[code]) or 0) * Decimal(factor)
        amount = max(Decimal(100), (monthly / 50).quantize(Decimal(1)) * 50)
        for month in (last_month, this_month):
            await services.finance.set_budget(
                admin,
                location_id=net.locations[code],
                period=month.strftime("%Y-%m"),
                amount=amount,
            )


async def _network_life(
    services: Services,
    net: DemoNetwork,
    products: list[Product],
    lots_by_product: dict[int, list[Lot]],
) -> str:
    """Work in flight, through the services as people would do it, so every screen has life:
    purchase orders at each status (one received with a delivery, one on
    its way), transfers at each step, a recall, and a count in progress. Dates are the real
    today's: the services stamp their own times."""
    loc, org, users = net.locations, net.orgs, net.users
    as_user = {name: await services.network.load_principal(users[name]) for name in users}
    pharmacist, warehouse, supplier = (
        as_user["pharmacist"],
        as_user["warehouse"],
        as_user["supplier"],
    )
    now = datetime.now(UTC).date()

    async def order(first: int, lines: int, quantity: int) -> PurchaseOrder:
        return await services.purchasing.create_order(
            pharmacist,
            supplier_id=org["whs"],
            deliver_to_id=loc["HOSP-WH"],
            lines=[
                OrderLineFields(product_id=products[first + k].id, quantity=quantity + 5 * k)
                for k in range(lines)
            ],
            expected_delivery_date=now + timedelta(days=5),
        )

    freshest = {
        pid: max(lots, key=lambda x: x.expiry_date) for pid, lots in lots_by_product.items()
    }

    async def shipped(po: PurchaseOrder, tag: str) -> Shipment:
        po = await services.purchasing.acknowledge_order(
            supplier, (await services.purchasing.submit_order(pharmacist, po.id)).id
        )
        async with services.db.read() as session:
            lines = (
                (
                    await session.execute(
                        select(PurchaseOrderLine)
                        .where(PurchaseOrderLine.order_id == po.id)
                        .order_by(PurchaseOrderLine.id)
                    )
                )
                .scalars()
                .all()
            )
        shipment = await services.shipments.create_shipment(
            supplier,
            order_id=po.id,
            origin_id=loc["WHS-DC"],
            carrier="SwissPost Pharma",
            tracking_number=f"99.00.{po.id:06d}.{tag}",
            expected_at=datetime.now(UTC) + timedelta(days=2),
            lines=[
                ShipmentLineFields(
                    purchase_order_line_id=line.id,
                    batch_number=freshest[line.product_id].batch_number,
                    expiry_date=freshest[line.product_id].expiry_date,
                    quantity=line.quantity,
                )
                for line in lines
            ],
        )
        for status in (ShipmentStatus.DISPATCHED, ShipmentStatus.IN_TRANSIT):
            shipment = await services.shipments.update_shipment_status(
                supplier, shipment.id, status
            )
        return shipment

    # Received, with a short line, for supplier performance; then one on its way, one waiting
    # for the supplier, one draft.
    received = await shipped(await order(0, 3, 20), "R")
    received = await services.shipments.update_shipment_status(
        supplier, received.id, ShipmentStatus.DELIVERED
    )
    async with services.db.read() as session:
        shipment_lines = (
            (
                await session.execute(
                    select(ShipmentLine)
                    .where(ShipmentLine.shipment_id == received.id)
                    .order_by(ShipmentLine.id)
                )
            )
            .scalars()
            .all()
        )
    for k, line in enumerate(shipment_lines):
        await services.shipments.receive_line(
            warehouse,
            LineReceiptCommand(
                shipment_id=received.id,
                line_id=line.id,
                quantity=line.quantity - (2 if k == 1 else 0),
            ),
        )
    await services.shipments.complete_receipt(warehouse, received.id, note="Two packs short")
    await shipped(await order(3, 2, 30), "T")
    await services.purchasing.submit_order(pharmacist, (await order(5, 2, 12)).id)
    await order(7, 1, 40)

    # Transfers from the central pharmacy to the wards, one at each step.
    nurse = as_user["nurse"]

    async def transfer(k: int, steps: int) -> None:
        product = products[k]
        t = await services.transfers.request(
            nurse,
            source_id=loc["HOSP-CP"],
            destination_id=loc["WARD-A"],
            lines=[LineRequest(product_id=product.id, quantity=4 + k % 5)],
            note="Weekend cover",
        )
        if steps >= 1:
            await services.transfers.approve(pharmacist, t.id)
        if steps >= 2:
            await services.transfers.pick(pharmacist, t.id)
        if steps >= 3:
            await services.transfers.dispatch(pharmacist, t.id, idempotency_key=f"demo-d-{t.id}")
        if steps >= 4:
            await services.transfers.receive(nurse, t.id, idempotency_key=f"demo-r-{t.id}")

    for steps in range(5):
        await transfer(10 + steps, steps)

    # A recall of one batch everywhere, and a count under way on ward B.
    recalled = lots_by_product[products[12].id][-2]
    await services.supervision.recall_lots(
        pharmacist,
        reason="Manufacturer recall: particles found in retained samples",
        lot_ids=[recalled.id],
        reference="RCL-2026-007",
    )
    count = await services.counts.start(
        as_user["nurse.b"], loc["WARD-B"], reason="Monthly stock-take"
    )
    async with services.db.read() as session:
        on_ward = (
            (
                await session.execute(
                    select(Balance)
                    .where(Balance.location_id == loc["WARD-B"], Balance.quantity > 0)
                    .order_by(Balance.lot_id)
                    .limit(3)
                )
            )
            .scalars()
            .all()
        )
    for k, balance in enumerate(on_ward):
        await services.counts.record_line(
            as_user["nurse.b"], count.id, balance.lot_id, balance.quantity - (1 if k == 0 else 0)
        )
    return ", 4 purchase orders, 2 shipments, 5 transfers, 1 recall, 1 open count"


def _supply_chain(
    net: DemoNetwork, item: DemoProduct, lot: Lot, quantity: int, index: int, day: date
) -> list[MovementRequest]:
    """Produced by the manufacturer, through the wholesaler, into the hospital (and pharmacy)."""
    loc, org = net.locations, net.orgs
    reserve = max(2, quantity // 10)
    retail = max(1, quantity // 5) if index % 4 == 0 else 0
    # The wholesaler keeps stock of its freshest lots: what it ships against purchase orders.
    kept = max(60, quantity // 2) if lot.expiry_date > day + timedelta(days=400) else 0
    produced = quantity + reserve + retail + kept
    ref = f"DN-{lot.batch_number}"
    chain = [
        MovementRequest(
            MovementKind.PRODUCE, loc["MFG-01"], produced, lot_id=lot.id, occurred_at=_at(day, 1)
        ),
        MovementRequest(
            MovementKind.SHIP,
            loc["MFG-01"],
            produced,
            lot_id=lot.id,
            counterparty_id=org["whs"],
            reference=ref,
            occurred_at=_at(day, 2),
        ),
        MovementRequest(
            MovementKind.RECEIVE,
            loc["WHS-DC"],
            produced,
            lot_id=lot.id,
            counterparty_id=org["mfg"],
            reference=ref,
            occurred_at=_at(day, 3),
        ),
        MovementRequest(
            MovementKind.SHIP,
            loc["WHS-DC"],
            quantity + reserve,
            lot_id=lot.id,
            counterparty_id=org["hosp"],
            reference=ref,
            occurred_at=_at(day, 4),
        ),
        MovementRequest(
            MovementKind.RECEIVE,
            loc["HOSP-CP"],
            quantity,
            lot_id=lot.id,
            counterparty_id=org["whs"],
            reference=ref,
            occurred_at=_at(day, 5),
        ),
        MovementRequest(
            MovementKind.RECEIVE,
            loc["HOSP-WH"],
            reserve,
            lot_id=lot.id,
            counterparty_id=org["whs"],
            reference=ref,
            occurred_at=_at(day, 5),
        ),
    ]
    if retail:
        chain += [
            MovementRequest(
                MovementKind.SHIP,
                loc["WHS-DC"],
                retail,
                lot_id=lot.id,
                counterparty_id=org["pharm"],
                reference=ref,
                occurred_at=_at(day, 4),
            ),
            MovementRequest(
                MovementKind.RECEIVE,
                loc["PHARM-01"],
                retail,
                lot_id=lot.id,
                counterparty_id=org["whs"],
                reference=ref,
                occurred_at=_at(day, 6),
            ),
        ]
    return chain
