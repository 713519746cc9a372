"""The shared shapes in core that every room builds on: field names in errors, FromModel,
relation(), counted connections, audit snapshots, took_step, and the tests' own waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import strawberry
from sqlalchemy import func, select

from server.catalog.models import Lot, Product
from server.core import audit
from server.core.errors import InvalidInput
from server.core.events import Event
from server.core.graphql import (
    TOTAL_COUNT_WEIGHT,
    Context,
    FromModel,
    Info,
    MutationError,
    graphql_field,
    relation,
)
from server.core.pagination import keyset_page
from server.core.steps import took_step
from tests.conftest import (
    Caller,
    Demo,
    LiveServer,
    eventually,
    gauge,
    receive,
    token_for,
    wait_for_subscribers,
)
from tests.wsclient import GraphQLWebSocket

# --- error field names ---


def test_service_field_names_reach_the_api_as_the_schema_spells_them() -> None:
    assert graphql_field("minimum_quantity") == "minimumQuantity"
    assert graphql_field("lines.0.lot_id") == "lines.0.lotId"
    assert graphql_field("idempotencyKey") == "idempotencyKey"  # already camelCase: kept
    assert graphql_field(None) is None
    error = MutationError.from_domain(InvalidInput("too many", field="counted_quantity"))
    assert error.field == "countedQuantity" and error.message == "too many"


# --- FromModel and relation() ---


class Colour(StrEnum):
    RED = "RED"


@strawberry.type
class ProductShape(FromModel):
    id: int
    name: str


@strawberry.type
class LotShape(FromModel):
    __columns__ = {"batch": "batch_number"}

    id: int
    batch: str
    product_id: strawberry.Private[int | None]
    product: ProductShape | None = relation(Product, "product_id", description="Its product.")

    @strawberry.field
    def shouted(self) -> str:
        return self.batch.upper()


def test_from_model_copies_same_named_columns_and_renamed_ones_but_not_resolvers() -> None:
    row = SimpleNamespace(id=7, batch_number="b-1", product_id=3, shouted="never read")
    shape = LotShape.from_model(row)
    assert (shape.id, shape.batch, shape.product_id) == (7, "b-1", 3)
    with pytest.raises(AttributeError):  # a column the type needs and the row lacks
        LotShape.from_model(SimpleNamespace(id=7, product_id=3))


async def test_relation_loads_the_row_through_the_request_loader_and_none_for_no_key(
    demo: Demo,
) -> None:
    lot_id = await receive(demo, "WARD-A", 5, batch="REL-1")
    async with demo.services.db.read() as session:
        lot = await session.get(Lot, lot_id)
        product = await session.get(Product, lot.product_id)

    @strawberry.type
    class Query:
        @strawberry.field
        def lots(self, info: Info) -> list[LotShape]:
            return [
                LotShape(id=lot_id, batch="REL-1", product_id=lot.product_id),
                LotShape(id=0, batch="none", product_id=None),
            ]

    schema = strawberry.Schema(query=Query)
    context = Context(services=demo.services, principal=None)
    result = await schema.execute(
        "{ lots { batch shouted product { id name } } }", context_value=context
    )
    assert result.errors is None, result.errors
    assert result.data == {
        "lots": [
            {
                "batch": "REL-1",
                "shouted": "REL-1",
                "product": {"id": product.id, "name": product.name},
            },
            {"batch": "none", "shouted": "NONE", "product": None},
        ]
    }
    assert "Its product." in str(schema)


# --- counted connections ---

PRODUCTS = """query($first: Int!, $after: String, $search: String) {
  products(first: $first, after: $after, search: $search) {
    totalCount
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_total_count_counts_the_filtered_list_over_all_pages(
    demo: Demo, as_user: Any
) -> None:
    pharmacist: Caller = await as_user("pharmacist")
    async with demo.services.db.read() as session:
        everything = (await session.execute(select(func.count()).select_from(Product))).scalar_one()
        some = (
            await session.execute(
                select(func.count()).select_from(Product).where(Product.name.ilike("%a%"))
            )
        ).scalar_one()
    assert 2 < some < everything, "the demo catalogue must let the filter matter"
    first = await pharmacist.call(PRODUCTS, first=2)
    assert first["totalCount"] == everything and len(first["edges"]) == 2
    second = await pharmacist.call(PRODUCTS, first=2, after=first["pageInfo"]["endCursor"])
    assert second["totalCount"] == everything  # every page counts the whole list
    assert (await pharmacist.call(PRODUCTS, first=2, search="a"))["totalCount"] == some


async def test_total_count_is_priced_and_only_counted_when_asked_for(
    client: httpx.AsyncClient, as_user: Any
) -> None:
    pharmacist: Caller = await as_user("pharmacist")
    without = PRODUCTS.replace("    totalCount\n", "")
    costs = []
    for document in (PRODUCTS, without):
        body = await pharmacist.raw(document, first=2)
        assert "errors" not in body, body
        costs.append(body["extensions"]["cost"]["requested"])
    assert costs[0] - costs[1] == TOTAL_COUNT_WEIGHT


async def test_a_page_counts_lazily_with_its_filters(demo: Demo) -> None:
    await receive(demo, "WARD-A", 5, batch="PAGE-1")
    stmt = select(Lot).where(Lot.batch_number == "PAGE-1")
    page = await keyset_page(
        demo.services.db,
        stmt,
        keys=[Lot.id],
        first=1,
        after=None,
        max_page_size=10,
        key_of=lambda r: [r.id],
    )
    assert [r.batch_number for r in page.rows] == ["PAGE-1"] and not page.has_next_page
    assert await page.total() == 1
    with pytest.raises(InvalidInput):
        await keyset_page(
            demo.services.db, stmt, keys=[Lot.id], first=0, after=None,
            max_page_size=10, key_of=lambda r: [r.id],
        )  # fmt: skip


# --- audit snapshots and steps ---


def test_audit_snapshot_takes_columns_enums_by_value_and_renamed_keys() -> None:
    row = SimpleNamespace(
        number="TR-1", status=Colour.RED, when=datetime(2026, 1, 2, tzinfo=UTC), qty=3
    )
    snap = audit.snapshot(row, "number", "status", "when", requested="qty")
    assert snap == audit.jsonable(
        {
            "number": "TR-1",
            "status": "RED",
            "when": datetime(2026, 1, 2, tzinfo=UTC),
            "requested": 3,
        }
    )
    assert snap["status"] == "RED" and isinstance(snap["when"], str)


class _Boom(Exception):
    pass


async def test_took_step_audits_and_announces_only_what_commits(demo: Demo) -> None:
    services, admin = demo.services, demo.principals["admin"]
    await services.start()  # as a serving process does: on PostgreSQL, LISTEN for events
    entity = "step-under-test"

    async def step(fail: bool) -> None:
        async with services.db.write() as session:
            entry = audit.AuditEntry("test.step", "Thing", entity, after={"fail": fail})
            await took_step(
                session, services.bus, admin, entry, events=[Event("stock", {"entity": entity})]
            )
            if fail:
                raise _Boom

    async def steps() -> list[dict[str, Any]]:
        async with services.db.read() as session:
            rows = await session.execute(
                select(audit.AuditEvent.after).where(audit.AuditEvent.entity_id == entity)
            )
            return [r[0] for r in rows]

    async with services.bus.subscribe("stock") as subscription:
        with pytest.raises(_Boom):
            await step(fail=True)
        assert await steps() == []
        await step(fail=False)
        assert await steps() == [{"fail": False}]
        event = await asyncio.wait_for(subscription.get(), 10)
        assert event.payload == {"entity": entity}  # the rolled-back step announced nothing
    async with services.db.read() as session:
        assert (await audit.verify(session)).ok


# --- the tests' own waiting ---


async def test_eventually_fails_when_the_condition_never_holds() -> None:
    calls = 0

    async def later() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await eventually(later, within=5)
    assert calls == 3

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="nothing happened"):
        await eventually(never, within=0.1, what="nothing happened")


async def test_the_subscriber_gauge_follows_live_subscriptions(live_server: LiveServer) -> None:
    series = 'apotheca_subscribers{topic="stock"}'
    assert await gauge(live_server.url, series) == 0
    assert await gauge(live_server.url, "apotheca_no_such_series") == 0
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        ws = await GraphQLWebSocket.open(live_server.url, await token_for(http, "nurse"))
        await ws.subscribe("subscription { stockChanged { quantity } }")
        await wait_for_subscribers(http, 1)
        with pytest.raises(AssertionError, match="2 subscribers of stock"):
            await wait_for_subscribers(http, 2, within=0.3)
        await ws.close()
        await wait_for_subscribers(live_server.url, 0)
