"""Alerts on both databases: LOW_STOCK from minimum levels, EXPIRING_SOON / EXPIRED_ON_SHELF from
the expiry sweep (service and `apotheca check-expiry`), one live alert per condition, resolution
by the ledger, acknowledgement, and location scoping of the `alerts` query."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from server.alerts.models import Alert, AlertKind, AlertStatus
from server.alerts.rules import expiry_condition
from server.catalog.models import Lot
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest
from server.services import Services
from tests.conftest import (
    ROOT,
    TEST_SECRET,
    Demo,
    first_product_id,
    gid,
    gql,
    token_for,
)


async def receive(
    demo: Demo,
    location: str,
    quantity: int,
    *,
    batch: str | None = None,
    expiry_days: int = 365,
    product_id: int | None = None,
) -> int:
    """Stock that came through the network (produced, shipped, received), so supervision sees
    a NORMAL batch and the only alerts in these tests are the ones under test."""
    import uuid
    from datetime import timedelta

    from server.core.db import utcnow
    from server.inventory.models import MovementKind as K
    from server.inventory.service import MovementRequest, NewLot

    product_id = product_id or await first_product_id(demo.services)
    admin = demo.principals["admin"]
    new_lot = NewLot(
        product_id,
        batch or f"A{uuid.uuid4().hex[:10].upper()}",
        utcnow().date() + timedelta(days=expiry_days),
    )
    made = await demo.services.ledger.record(
        admin,
        [MovementRequest(K.PRODUCE, demo.locations["MFG-01"], quantity, new_lot=new_lot)],
        operation="t.produce",
    )
    lot_id = made.movements[0].lot_id
    mfg = demo.orgs["Helvepharm Manufacturing AG"]
    async with demo.services.db.read() as session:
        from server.network.models import Location

        receiver = (await session.get(Location, demo.locations[location])).organisation_id
    # An already expired lot was shipped while it was still good.
    when = utcnow() - timedelta(days=1 - expiry_days) if expiry_days < 0 else None
    await demo.services.ledger.record(
        admin,
        [
            MovementRequest(
                K.SHIP,
                demo.locations["MFG-01"],
                quantity,
                lot_id=lot_id,
                counterparty_id=receiver,
                reference=f"DN-{lot_id}",
                occurred_at=when,
            ),
            MovementRequest(
                K.RECEIVE,
                demo.locations[location],
                quantity,
                lot_id=lot_id,
                counterparty_id=mfg,
                reference=f"DN-{lot_id}",
                occurred_at=when,
            ),
        ],
        operation="t.deliver",
    )
    return lot_id


ALERTS_QUERY = """
query($first: Int!, $after: String, $status: [AlertStatus!], $kinds: [AlertKind!],
      $location: ID, $active: Boolean) {
  alerts(first: $first, after: $after, status: $status, kinds: $kinds, location: $location,
         active: $active) {
    edges { node { id kind status active location { code } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

SET_MINIMUM = """
mutation($location: ID!, $product: ID!, $minimum: Int!) {
  setMinimumLevel(
    input: { location: $location, product: $product, minimumQuantity: $minimum }
  ) {
    minimumLevel { minimumQuantity location { code } product { id } }
    errors { code field message }
  }
}
"""

ACKNOWLEDGE = """
mutation($id: ID!, $note: String) {
  acknowledgeAlert(input: { id: $id, note: $note }) {
    alert { id status active acknowledgedAt acknowledgementNote acknowledgedBy { username } }
    errors { code field message }
  }
}
"""


async def alerts_of(services: Services, kind: AlertKind | None = None) -> list[Alert]:
    """Every alert (live or not), oldest first, straight from the database."""
    stmt = select(Alert).order_by(Alert.id)
    if kind is not None:
        stmt = stmt.where(Alert.kind == kind)
    async with services.db.read() as session:
        return list((await session.execute(stmt)).scalars())


async def by_kind(services: Services) -> dict[AlertKind, Alert]:
    """The expiry scenarios raise at most one alert of each kind; the sweep's order is free."""
    found = await alerts_of(services)
    assert len({a.kind for a in found}) == len(found), found
    return {a.kind: a for a in found}


async def move(
    demo: Demo, kind: MovementKind, location: str, quantity: int, lot_id: int | None, **extra: Any
) -> None:
    user = extra.pop("as_user", "admin")
    await demo.services.ledger.record(
        demo.principals[user],
        [MovementRequest(kind, demo.locations[location], quantity, lot_id=lot_id, **extra)],
        operation="test.alerts",
    )


async def expire_lot(services: Services, lot_id: int, days_ago: int = 3) -> None:
    """Backdate a lot's expiry: the only way stock already on a shelf becomes expired."""
    async with services.db.write() as session:
        await session.execute(
            update(Lot)
            .where(Lot.id == lot_id)
            .values(expiry_date=utcnow().date() - timedelta(days=days_ago))
        )


# --- pure rule ---------------------------------------------------------------------------------


def test_expiry_condition_boundaries() -> None:
    today = date(2026, 6, 1)
    assert expiry_condition(date(2026, 5, 31), 1, today, 90) is AlertKind.EXPIRED_ON_SHELF
    assert expiry_condition(today, 1, today, 90) is AlertKind.EXPIRING_SOON  # last usable day
    assert expiry_condition(today + timedelta(days=90), 1, today, 90) is AlertKind.EXPIRING_SOON
    assert expiry_condition(today + timedelta(days=91), 1, today, 90) is None
    assert expiry_condition(date(2020, 1, 1), 0, today, 90) is None  # empty shelf
    assert expiry_condition(date(2020, 1, 1), -2, today, 90) is None


# --- LOW_STOCK ---------------------------------------------------------------------------------


async def test_low_stock_raised_once_and_resolved_by_a_receipt(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    product = await first_product_id(demo.services)
    lot = await receive(demo, "WARD-A", 10, product_id=product)
    token = await token_for(client, "pharmacist")
    variables = {
        "location": gid("Location", demo.locations["WARD-A"]),
        "product": gid("Product", product),
        "minimum": 15,
    }
    body = await gql(client, SET_MINIMUM, variables, token=token)
    payload = body["data"]["setMinimumLevel"]
    assert payload["errors"] == []
    assert payload["minimumLevel"]["minimumQuantity"] == 15
    assert payload["minimumLevel"]["location"]["code"] == "WARD-A"

    (alert,) = await alerts_of(demo.services, AlertKind.LOW_STOCK)
    assert (alert.status, alert.active) == (AlertStatus.OPEN, True)
    assert alert.location_id == demo.locations["WARD-A"] and alert.product_id == product
    assert alert.details == {"on_hand": 10, "minimum": 15}

    # Still below the minimum after more dispenses: the live alert is kept, not repeated.
    for _ in range(3):
        await move(demo, MovementKind.DISPENSE, "WARD-A", 2, lot, as_user="nurse")
    body = await gql(client, SET_MINIMUM, {**variables, "minimum": 12}, token=token)
    assert body["data"]["setMinimumLevel"]["errors"] == []
    (alert,) = await alerts_of(demo.services, AlertKind.LOW_STOCK)
    assert alert.active

    await receive(demo, "WARD-A", 20, product_id=product)  # 24 on hand, minimum 12
    (alert,) = await alerts_of(demo.services, AlertKind.LOW_STOCK)
    assert (alert.status, alert.active) == (AlertStatus.RESOLVED, False)
    assert alert.resolved_at is not None

    # Dropping below again is a new condition, so a new alert.
    await move(demo, MovementKind.DISPENSE, "WARD-A", 13, None, product_id=product, as_user="nurse")
    old, new = await alerts_of(demo.services, AlertKind.LOW_STOCK)
    assert not old.active and new.active and new.details["on_hand"] == 11


async def test_low_stock_counts_only_usable_stock(demo: Demo) -> None:
    """Expired packs are on the shelf but cannot be issued, so they do not meet a minimum."""
    product = await first_product_id(demo.services, offset=2)
    lot = await receive(demo, "WARD-B", 30, product_id=product)
    await expire_lot(demo.services, lot)
    await demo.services.alerts.set_minimum_level(
        demo.principals["pharmacist"],
        location_id=demo.locations["WARD-B"],
        product_id=product,
        minimum_quantity=5,
    )
    (alert,) = await alerts_of(demo.services, AlertKind.LOW_STOCK)
    assert alert.active and alert.details == {"on_hand": 0, "minimum": 5}


async def test_expiry_sweep_raises_low_stock_when_stock_expires(demo: Demo) -> None:
    product = await first_product_id(demo.services, offset=3)
    lot = await receive(demo, "WARD-A", 30, product_id=product)
    await demo.services.alerts.set_minimum_level(
        demo.principals["pharmacist"],
        location_id=demo.locations["WARD-A"],
        product_id=product,
        minimum_quantity=5,
    )
    assert await alerts_of(demo.services, AlertKind.LOW_STOCK) == []
    await expire_lot(demo.services, lot)  # overnight, the whole shelf expires
    await demo.services.alerts.check_expiry()
    assert len(await alerts_of(demo.services, AlertKind.LOW_STOCK)) == 1


async def test_minimum_level_refusals(demo: Demo, client: httpx.AsyncClient) -> None:
    product = await first_product_id(demo.services)
    variables = {
        "location": gid("Location", demo.locations["WARD-A"]),
        "product": gid("Product", product),
        "minimum": 5,
    }
    nurse = await token_for(client, "nurse")
    body = await gql(client, SET_MINIMUM, variables, token=nurse)
    assert body["data"]["setMinimumLevel"]["errors"][0]["code"] == "FORBIDDEN"
    admin = await token_for(client, "admin")
    body = await gql(client, SET_MINIMUM, {**variables, "minimum": -1}, token=admin)
    error = body["data"]["setMinimumLevel"]["errors"][0]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "minimumQuantity")
    assert await alerts_of(demo.services) == []


# --- expiry sweep --------------------------------------------------------------------------------


async def _expiry_world(demo: Demo) -> dict[str, int]:
    """WARD-A: one lot expiring in 30 days; WARD-B: one expired lot with stock; plus lots
    that must raise nothing (far expiry, and an expiring lot whose shelf is empty)."""
    soon = await receive(demo, "WARD-A", 5, expiry_days=30)
    expired = await receive(demo, "WARD-B", 4, expiry_days=365)
    await expire_lot(demo.services, expired)
    await receive(demo, "WARD-A", 2, expiry_days=200)
    empty = await receive(demo, "HOSP-CP", 3, expiry_days=10)
    await move(demo, MovementKind.DISPENSE, "HOSP-CP", 3, empty)
    return {"soon": soon, "expired": expired}


async def test_check_expiry_raises_once_and_disposal_resolves(demo: Demo) -> None:
    lots = await _expiry_world(demo)
    first = await demo.services.alerts.check_expiry()
    assert (first.raised, first.resolved, first.open_total) == (2, 0, 2)
    alerts = await by_kind(demo.services)
    soon, expired = alerts[AlertKind.EXPIRING_SOON], alerts[AlertKind.EXPIRED_ON_SHELF]
    assert (soon.lot_id, soon.location_id) == (lots["soon"], demo.locations["WARD-A"])
    assert (expired.lot_id, expired.location_id) == (lots["expired"], demo.locations["WARD-B"])
    assert expired.details["quantity"] == 4

    again = await demo.services.alerts.check_expiry()
    assert (again.raised, again.resolved, again.open_total) == (0, 0, 2)
    assert len(await alerts_of(demo.services)) == 2

    # Disposing of the expired packs resolves the alert in the same transaction, no sweep needed.
    await move(demo, MovementKind.DISPOSE, "WARD-B", 4, lots["expired"], reason="EXPIRED")
    expired = (await by_kind(demo.services))[AlertKind.EXPIRED_ON_SHELF]
    assert (expired.status, expired.active) == (AlertStatus.RESOLVED, False)
    after = await demo.services.alerts.check_expiry()
    assert (after.raised, after.resolved, after.open_total) == (0, 0, 1)


async def test_concurrent_sweeps_raise_each_alert_once(demo: Demo) -> None:
    """Two workers sweeping at once (PostgreSQL: truly concurrent) still leave one live alert."""
    await _expiry_world(demo)
    results = await asyncio.gather(*(demo.services.alerts.check_expiry() for _ in range(3)))
    assert sum(r.raised for r in results) == 2
    assert len(await alerts_of(demo.services)) == 2


async def test_a_partial_disposal_keeps_the_alert(demo: Demo) -> None:
    lots = await _expiry_world(demo)
    await demo.services.alerts.check_expiry()
    await move(demo, MovementKind.DISPOSE, "WARD-B", 3, lots["expired"], reason="EXPIRED")
    expired = (await alerts_of(demo.services, AlertKind.EXPIRED_ON_SHELF))[0]
    assert expired.active


async def test_expiring_soon_turns_into_expired_on_shelf(demo: Demo) -> None:
    lot = await receive(demo, "WARD-A", 5, expiry_days=30)
    await demo.services.alerts.check_expiry()
    later = await demo.services.alerts.check_expiry(today=utcnow().date() + timedelta(days=31))
    assert (later.raised, later.resolved, later.open_total) == (1, 1, 1)
    alerts = await by_kind(demo.services)
    soon, expired = alerts[AlertKind.EXPIRING_SOON], alerts[AlertKind.EXPIRED_ON_SHELF]
    assert not soon.active and expired.active
    assert expired.lot_id == lot


def run_check_expiry(database_url: str) -> subprocess.CompletedProcess[str]:
    """`apotheca check-expiry` as an operator or cron would run it."""
    script = Path(sys.executable).with_name("apotheca")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": TEST_SECRET,
    }
    return subprocess.run(
        [*command, "check-expiry"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _counts(output: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+) raised, (\d+) resolved, (\d+) open", output)
    assert match, output
    raised, resolved, open_total = (int(x) for x in match.groups())
    return raised, resolved, open_total


async def test_check_expiry_command(demo: Demo, database_url: str) -> None:
    lots = await _expiry_world(demo)
    first = run_check_expiry(database_url)
    assert first.returncode == 0, first.stderr
    assert _counts(first.stdout) == (2, 0, 2)
    second = run_check_expiry(database_url)
    assert second.returncode == 0, second.stderr
    assert _counts(second.stdout) == (0, 0, 2)
    kinds = {k: (a.lot_id, a.active) for k, a in (await by_kind(demo.services)).items()}
    assert kinds == {
        AlertKind.EXPIRING_SOON: (lots["soon"], True),
        AlertKind.EXPIRED_ON_SHELF: (lots["expired"], True),
    }
    # Emptying the shelf resolves its alert at once, so the next sweep only counts what is left.
    await move(demo, MovementKind.DISPENSE, "WARD-A", 5, lots["soon"])
    assert _counts(run_check_expiry(database_url).stdout) == (0, 0, 1)


async def test_sweep_resolves_an_alert_whose_condition_cleared(demo: Demo) -> None:
    """A lot whose expiry was corrected (later date) no longer warns; the sweep resolves it."""
    lot = await receive(demo, "WARD-A", 5, expiry_days=30)
    await demo.services.alerts.check_expiry()
    async with demo.services.db.write() as session:
        await session.execute(
            update(Lot)
            .where(Lot.id == lot)
            .values(expiry_date=utcnow().date() + timedelta(days=400))
        )
    result = await demo.services.alerts.check_expiry()
    assert (result.raised, result.resolved, result.open_total) == (0, 1, 0)


# --- acknowledging -------------------------------------------------------------------------------


async def test_acknowledge_in_scope_with_a_note(demo: Demo, client: httpx.AsyncClient) -> None:
    lots = await _expiry_world(demo)
    await demo.services.alerts.check_expiry()
    alerts = await by_kind(demo.services)
    ward_a, ward_b = alerts[AlertKind.EXPIRING_SOON], alerts[AlertKind.EXPIRED_ON_SHELF]
    nurse = await token_for(client, "nurse")

    body = await gql(
        client,
        ACKNOWLEDGE,
        {"id": gid("Alert", ward_a.id), "note": "  moved to the front of the shelf "},
        token=nurse,
    )
    payload = body["data"]["acknowledgeAlert"]
    assert payload["errors"] == []
    alert = payload["alert"]
    assert alert["status"] == "ACKNOWLEDGED" and alert["active"] is True
    assert alert["acknowledgementNote"] == "moved to the front of the shelf"
    assert alert["acknowledgedAt"] is not None
    assert alert["acknowledgedBy"] == {"username": "nurse"}
    async with demo.services.db.read() as session:
        events = (
            (
                await session.execute(
                    select(AuditEvent).where(
                        AuditEvent.action == "alert.acknowledge",
                        AuditEvent.entity_id == str(ward_a.id),
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(events) == 1 and events[0].actor_id == demo.users["nurse"]

    # Out of her scope: refused, and the WARD-B alert is untouched.
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", ward_b.id)}, token=nurse)
    payload = body["data"]["acknowledgeAlert"]
    assert payload["alert"] is None and payload["errors"][0]["code"] == "FORBIDDEN"
    assert (await by_kind(demo.services))[AlertKind.EXPIRED_ON_SHELF].status is AlertStatus.OPEN

    # Twice: the error names the status it is already in.
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", ward_a.id)}, token=nurse)
    error = body["data"]["acknowledgeAlert"]["errors"][0]
    assert error["code"] == "INVALID_INPUT" and "acknowledged" in error["message"]

    # An acknowledged alert is still live: the sweep does not raise it again.
    assert (await demo.services.alerts.check_expiry()).raised == 0

    # Once resolved, acknowledging names that status instead.
    await move(demo, MovementKind.DISPOSE, "WARD-B", 4, lots["expired"], reason="EXPIRED")
    admin = await token_for(client, "admin")
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", ward_b.id)}, token=admin)
    error = body["data"]["acknowledgeAlert"]["errors"][0]
    assert error["code"] == "INVALID_INPUT" and "resolved" in error["message"]


async def test_acknowledge_refusals(demo: Demo, client: httpx.AsyncClient) -> None:
    await _expiry_world(demo)
    await demo.services.alerts.check_expiry()
    ward_a = (await by_kind(demo.services))[AlertKind.EXPIRING_SOON]
    auditor = await token_for(client, "auditor")
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", ward_a.id)}, token=auditor)
    assert body["data"]["acknowledgeAlert"]["errors"][0]["code"] == "FORBIDDEN"
    admin = await token_for(client, "admin")
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", 999999)}, token=admin)
    assert body["data"]["acknowledgeAlert"]["errors"][0]["code"] == "NOT_FOUND"
    body = await gql(client, ACKNOWLEDGE, {"id": gid("Alert", ward_a.id), "note": "x" * 501})
    assert body["data"]["acknowledgeAlert"]["errors"][0]["code"] == "UNAUTHENTICATED"
    body = await gql(
        client, ACKNOWLEDGE, {"id": gid("Alert", ward_a.id), "note": "x" * 501}, token=admin
    )
    assert body["data"]["acknowledgeAlert"]["errors"][0]["field"] == "note"
    assert (await by_kind(demo.services))[AlertKind.EXPIRING_SOON].status is AlertStatus.OPEN


# --- the alerts query --------------------------------------------------------------------------


def _codes(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    assert "errors" not in body, body
    return [
        (e["node"]["location"]["code"], e["node"]["kind"], e["node"]["status"])
        for e in body["data"]["alerts"]["edges"]
    ]


async def test_alerts_query_is_scoped_and_filtered(demo: Demo, client: httpx.AsyncClient) -> None:
    await _expiry_world(demo)
    await receive(demo, "WARD-A", 1, expiry_days=-5)  # an expired lot received on WARD-A too
    await receive(demo, "WARD-B", 1, expiry_days=20)
    await demo.services.alerts.check_expiry()
    nurse = await token_for(client, "nurse")
    admin = await token_for(client, "admin")

    mine = _codes(await gql(client, ALERTS_QUERY, {"first": 50}, token=nurse))
    assert sorted(mine) == [
        ("WARD-A", "EXPIRED_ON_SHELF", "OPEN"),
        ("WARD-A", "EXPIRING_SOON", "OPEN"),
    ]
    everyone = _codes(await gql(client, ALERTS_QUERY, {"first": 50}, token=admin))
    assert len(everyone) == 4 and {c[0] for c in everyone} == {"WARD-A", "WARD-B"}

    expired_only = await gql(
        client, ALERTS_QUERY, {"first": 50, "kinds": ["EXPIRED_ON_SHELF"]}, token=nurse
    )
    assert _codes(expired_only) == [("WARD-A", "EXPIRED_ON_SHELF", "OPEN")]

    soon_id = (await alerts_of(demo.services, AlertKind.EXPIRING_SOON))[0].id
    await gql(client, ACKNOWLEDGE, {"id": gid("Alert", soon_id)}, token=nurse)
    acknowledged = await gql(
        client, ALERTS_QUERY, {"first": 50, "status": ["ACKNOWLEDGED"]}, token=nurse
    )
    assert _codes(acknowledged) == [("WARD-A", "EXPIRING_SOON", "ACKNOWLEDGED")]
    still_open = await gql(client, ALERTS_QUERY, {"first": 50, "status": ["OPEN"]}, token=nurse)
    assert _codes(still_open) == [("WARD-A", "EXPIRED_ON_SHELF", "OPEN")]

    # Asking for another ward is refused, not answered with an empty list.
    ward_b = gid("Location", demo.locations["WARD-B"])
    body = await gql(client, ALERTS_QUERY, {"first": 50, "location": ward_b}, token=nurse)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    b_alert = next(
        a for a in await alerts_of(demo.services) if a.location_id == demo.locations["WARD-B"]
    )
    node = "query($id: ID!) { node(id: $id) { id } }"
    body = await gql(client, node, {"id": gid("Alert", b_alert.id)}, token=nurse)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_alerts_pages_newest_first(demo: Demo, client: httpx.AsyncClient) -> None:
    await _expiry_world(demo)
    await demo.services.alerts.check_expiry()
    admin = await token_for(client, "admin")
    first = await gql(client, ALERTS_QUERY, {"first": 1}, token=admin)
    page = first["data"]["alerts"]
    assert page["pageInfo"]["hasNextPage"] is True
    newest, oldest = sorted(await alerts_of(demo.services), key=lambda a: -a.id)
    assert page["edges"][0]["node"]["id"] == gid("Alert", newest.id)
    second = await gql(
        client, ALERTS_QUERY, {"first": 1, "after": page["pageInfo"]["endCursor"]}, token=admin
    )
    assert [e["node"]["id"] for e in second["data"]["alerts"]["edges"]] == [gid("Alert", oldest.id)]
    assert second["data"]["alerts"]["pageInfo"]["hasNextPage"] is False
    body = await gql(client, ALERTS_QUERY, {"first": 0}, token=admin)
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
