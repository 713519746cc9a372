"""Query cost: the pure price of a document, the per-request maximum refused before execution,
and the per-principal budget that refills (extensions.cost, THROTTLED, 429 + Retry-After).

The pure function first (no database), then the budget's arithmetic, then the server on both
databases: in-process for counting SQL statements, a live uvicorn server for 429 and websockets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from graphql import GraphQLSchema, parse
from sqlalchemy import func, select

from server.core.audit import AuditCheckpoint
from server.core.cost import (
    DEFAULT_LIST_SIZE,
    INTROSPECTION_WEIGHT,
    MUTATION_WEIGHT,
    CostBudget,
    operation_cost,
)
from server.schema import build_schema
from tests.conftest import Demo, LiveServer, gql, sql_statements, start_server, token_for
from tests.wsclient import GraphQLWebSocket


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def cost(schema: GraphQLSchema, query: str, variables: dict[str, Any] | None = None) -> int:
    return operation_cost(schema, parse(query), variables)


NESTED = (
    "purchaseOrders(first: 100) { edges { node { id status supplier { id name "
    "purchaseOrders(first: 100) { edges { node { id status } } } } } } }"
)
NESTED_20 = "{ " + " ".join(f"a{i}: {NESTED}" for i in range(20)) + " }"
AUDIT_20 = "{ " + " ".join(f"a{i}: auditIntegrity {{ ok }}" for i in range(20)) + " }"
EPCIS_10000 = "{ epcisExport(first: 10000) }"


# --- the pure cost function --------------------------------------------------------------------


def test_scalars_are_free_and_objects_cost_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ __typename }") == 0
    assert cost(schema, "{ me { id username fullName } }") == 1
    assert cost(schema, "{ me { id organisation { id name } } }") == 2


def test_a_connection_costs_first_times_its_nodes_plus_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ products(first: 5) { edges { node { id name } } } }") == 1 + 5 * 1
    with_page_info = (
        "{ products(first: 5) { edges { cursor node { id } } pageInfo { endCursor } } }"
    )
    assert cost(schema, with_page_info) == 6  # edges, cursors and pageInfo are plumbing


def test_nested_lists_multiply(schema: GraphQLSchema) -> None:
    inner = 1 + 3 * 1  # purchaseOrders(first: 3) of plain nodes
    node = 1 + (1 + inner)  # the order, its supplier, the supplier's orders
    query = (
        "{ purchaseOrders(first: 10) { edges { node { id supplier { "
        "purchaseOrders(first: 3) { edges { node { id } } } } } } } }"
    )
    assert cost(schema, query) == 1 + 10 * node
    single = 1 + 100 * (1 + 1 + (1 + 100 * 1))
    assert cost(schema, "{ " + NESTED + " }") == single
    assert cost(schema, NESTED_20) == 20 * single == 206_020


def test_first_from_variables_and_their_defaults(schema: GraphQLSchema) -> None:
    query = "query($n: Int!) { products(first: $n) { edges { node { id } } } }"
    assert cost(schema, query, {"n": 7}) == 8
    assert cost(schema, query, {"n": 70}) == 71
    defaulted = "query($n: Int! = 4) { products(first: $n) { edges { node { id } } } }"
    assert cost(schema, defaulted) == 5
    # bad or missing variables (execution refuses them): priced at the default page size
    assert cost(schema, query, {"n": "many"}) == 1 + 100
    assert cost(schema, query) == 1 + 100
    # an optional `first` left out: its schema default (topConsumption's is 10)
    assert cost(schema, "{ topConsumption { quantity product { id } } }") == 100 + 10 * (1 + 1)
    assert cost(schema, "{ topConsumption(first: 3) { quantity } }") == 100 + 3 * 1


def test_fragments_and_inline_fragments_count_where_spread(schema: GraphQLSchema) -> None:
    plain = cost(
        schema,
        "{ suppliers(first: 5) { edges { node { id "
        "purchaseOrders(first: 2) { edges { node { id } } } } } } }",
    )
    named = cost(
        schema,
        "query { suppliers(first: 5) { edges { node { ...S } } } } "
        "fragment S on Supplier { id purchaseOrders(first: 2) { edges { node { id } } } }",
    )
    inline = cost(
        schema,
        "{ suppliers(first: 5) { edges { node { ... on Supplier { id purchaseOrders(first: 2) "
        "{ edges { node { id } } } } } } } }",
    )
    assert plain == named == inline == 1 + 5 * (1 + (1 + 2))
    twice = cost(
        schema,
        "query { a: products(first: 5) { ...C } b: products(first: 5) { ...C } } "
        "fragment C on ProductConnection { edges { node { id } } }",
    )
    assert twice == 2 * 6


def test_skip_and_include_are_honoured(schema: GraphQLSchema) -> None:
    query = (
        "query($s: Boolean!) { me { id } products(first: 50) @skip(if: $s) "
        "{ edges { node { id } } } }"
    )
    assert cost(schema, query, {"s": True}) == 1
    assert cost(schema, query, {"s": False}) == 1 + 51


def test_lists_without_first_assume_the_default_size(schema: GraphQLSchema) -> None:
    query = "query($lot: ID!) { traceLot(lot: $lot) { lot { id } backward { quantity } } }"
    # LotTrace 1 + its lot 1 + backward: DEFAULT_LIST_SIZE hops of 1, plus traceLot's weight 200
    assert cost(schema, query, {"lot": "x"}) == 1 + 1 + DEFAULT_LIST_SIZE * 1 + 200


def test_heavy_fields_carry_their_declared_weight(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ epcisExport(first: 10) }") == 10 + 5 * 10
    assert cost(schema, "{ epcisExport }") == 10 + 5 * 1000  # the cap is the default
    assert cost(schema, EPCIS_10000) == 50_010
    assert cost(schema, "{ auditIntegrity { ok } }") == 1 + 1000
    assert cost(schema, "{ auditIntegrity(full: true) { ok } }") == 1 + 1000 + 8000
    assert cost(schema, AUDIT_20) == 20 * 1001


def test_mutations_cost_too(schema: GraphQLSchema) -> None:
    query = (
        'mutation { createOrganisation(input: {name: "x", kind: HOSPITAL}) '
        "{ organisation { id } errors { code } } }"
    )
    # the root field's weight, the payload and its organisation object (errors: a list)
    assert cost(schema, query) == MUTATION_WEIGHT + 1 + 1 + DEFAULT_LIST_SIZE * 1


def test_introspection_is_priced_flat(schema: GraphQLSchema) -> None:
    query = "{ __schema { types { name fields { name type { name } } } } }"
    assert cost(schema, query) == INTROSPECTION_WEIGHT


# --- the budget's arithmetic -------------------------------------------------------------------


def test_bucket_spends_refuses_and_refills() -> None:
    budget = CostBudget(100, 10.0)
    first = budget._spend_memory("user:1", 60, now=1000.0)
    assert (first.allowed, first.remaining) == (True, 40)
    assert first.reset_at == datetime.fromtimestamp(1006.0, UTC)
    refused = budget._spend_memory("user:1", 60, now=1000.0)
    assert (refused.allowed, refused.remaining) == (False, 40)
    assert refused.retry_after == pytest.approx(2.0)
    other = budget._spend_memory("user:2", 60, now=1000.0)
    assert (other.allowed, other.remaining) == (True, 40)
    later = budget._spend_memory("user:1", 60, now=1002.0)
    assert (later.allowed, later.remaining) == (True, 0)
    full_again = budget._spend_memory("user:1", 0, now=1100.0)
    assert full_again.remaining == 100  # never more than the capacity


def test_bucket_table_forgets_refilled_keys() -> None:
    budget = CostBudget(10, 1.0)
    budget.MAX_MEMORY_KEYS = 3
    for i in range(3):
        budget._spend_memory(f"ip:{i}", 5, now=0.0)
    budget._spend_memory("ip:new", 5, now=100.0)  # the three old ones have refilled by now
    assert set(budget._buckets) == {"ip:new"}


async def test_redis_budget_is_shared_between_workers() -> None:
    """Two budgets on one Redis URL (two workers) spend from the same bucket."""
    one = CostBudget(100, 1.0, "redis://127.0.0.1:6379/0")
    two = CostBudget(100, 1.0, "redis://127.0.0.1:6379/0")
    key = f"test:{uuid.uuid4().hex}"
    try:
        spent = await one.spend(key, 70)
        assert spent.allowed and spent.remaining == 30
        refused = await two.spend(key, 70)
        assert not refused.allowed and refused.remaining == 30
        assert refused.retry_after == pytest.approx(40.0, abs=1.0)
        assert (await two.spend(f"{key}:other", 70)).allowed
    finally:
        await one.close()
        await two.close()


# --- the server: refused before execution ------------------------------------------------------


@pytest.fixture
def statements(demo: Demo) -> Iterator[list[str]]:
    """Every SQL statement any engine of the app runs while the test is on."""
    with sql_statements(demo) as seen:
        yield seen


@pytest.mark.parametrize(
    ("username", "query", "expected"),
    [
        ("supplier", NESTED_20, 206_020),
        ("admin", EPCIS_10000, 50_010),
        ("admin", AUDIT_20, 20_020),
    ],
    ids=["nested-purchase-orders", "epcis-export-10000", "audit-integrity-x20"],
)
async def test_costly_queries_are_refused_before_execution(
    demo: Demo,
    client: httpx.AsyncClient,
    statements: list[str],
    username: str,
    query: str,
    expected: int,
) -> None:
    token = await token_for(client, username)
    await gql(client, "{ __typename }", token=token)  # the principal, now in the cache
    statements.clear()
    await gql(client, "{ __typename }", token=token)  # what a request costs before execution:
    baseline = len(statements)  # reading the principal
    statements.clear()
    body = await gql(client, query, token=token)
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert error["message"] == f"query costs {expected:,}; the limit is 10,000"
    assert error["extensions"]["cost"] == {"requested": expected, "limit": 10_000}
    assert body["extensions"]["cost"]["requested"] == expected  # priced, nothing spent
    assert body["extensions"]["cost"]["remaining"] == 50_000
    assert len(statements) == baseline, statements  # nothing but the principal was read
    async with demo.services.db.read() as session:
        checkpoints = (await session.execute(select(func.count(AuditCheckpoint.id)))).scalar()
    assert checkpoints == 0


async def test_anonymous_costly_query_runs_no_sql(
    client: httpx.AsyncClient, statements: list[str]
) -> None:
    body = await gql(client, AUDIT_20)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TOO_COSTLY"]
    assert statements == []


async def test_invalid_documents_keep_their_validation_error(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ products(first: 100000) { edges { node { nope } } } }")
    assert [e["extensions"]["code"] for e in body["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]
    assert body["extensions"]["cost"]["requested"] == 0


async def test_epcis_export_first_is_capped(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "admin")
    body = await gql(client, "{ epcisExport(first: 1001) }", token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"], body
    assert "between 1 and 1000" in body["errors"][0]["message"]
    body = await gql(client, "{ epcisExport(first: 1000) }", token=token)
    assert "errors" not in body, body
    assert body["extensions"]["cost"]["requested"] == 5010


# --- the server: the budget --------------------------------------------------------------------


def _reset_at(cost_extension: dict[str, Any]) -> datetime:
    text = cost_extension["resetAt"]
    assert text.endswith("Z")
    return datetime.fromisoformat(text)


async def test_normal_query_reports_its_cost(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "pharmacist")
    query = "{ products(first: 5) { edges { node { id name } } } }"
    before = datetime.now(UTC)
    body = await gql(client, query, token=token)
    assert "errors" not in body, body
    first = body["extensions"]["cost"]
    assert first["requested"] == 6
    assert first["remaining"] == 50_000 - 6
    # full again once 6 points have refilled at 250 a second
    assert 0 <= (_reset_at(first) - before).total_seconds() <= 6 / 250 + 1
    second = (await gql(client, query, token=token))["extensions"]["cost"]
    assert 50_000 - 12 <= second["remaining"] <= 50_000 - 6


@pytest.fixture
def tight_server(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A live server whose budget is 40 points refilling 20 a second."""
    monkeypatch.setenv("APOTHECA_COST_BUDGET_CAPACITY", "40")
    monkeypatch.setenv("APOTHECA_COST_REFILL_PER_SECOND", "20")
    monkeypatch.setenv("APOTHECA_RATE_LIMIT_STORAGE", "memory://")
    server = start_server(database_url)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


PRODUCTS_30 = "{ products(first: 30) { edges { node { id } } } }"  # costs 31


async def test_spent_budget_is_throttled_then_refills(demo: Demo, tight_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=tight_server.url, timeout=30) as http:
        pharmacist = await token_for(http, "pharmacist")
        nurse = await token_for(http, "nurse")
        headers = {"Authorization": f"Bearer {pharmacist}"}
        ok = await http.post("/graphql", json={"query": PRODUCTS_30}, headers=headers)
        assert ok.status_code == 200
        assert ok.json()["extensions"]["cost"]["requested"] == 31
        refused = await http.post("/graphql", json={"query": PRODUCTS_30}, headers=headers)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        body = refused.json()
        assert body.get("data") is None
        [error] = body["errors"]
        assert error["extensions"]["code"] == "THROTTLED"
        assert error["extensions"]["cost"]["requested"] == 31
        assert error["extensions"]["cost"]["remaining"] < 31
        assert body["extensions"]["cost"]["remaining"] < 31
        # another principal, and an anonymous caller, have buckets of their own
        other = await http.post(
            "/graphql", json={"query": PRODUCTS_30}, headers={"Authorization": f"Bearer {nurse}"}
        )
        assert other.status_code == 200 and "errors" not in other.json(), other.text
        anonymous = await http.post("/graphql", json={"query": "{ __typename }"})
        assert anonymous.status_code == 200
        assert anonymous.json()["extensions"]["cost"]["remaining"] == 40
        # the pharmacist's bucket refills: poll until the query goes through again
        deadline = time.monotonic() + 10
        while True:
            again = await http.post("/graphql", json={"query": PRODUCTS_30}, headers=headers)
            if again.status_code == 200:
                break
            assert again.status_code == 429
            assert time.monotonic() < deadline, "the budget never refilled"
            await asyncio.sleep(0.2)
        assert "errors" not in again.json()


async def test_websocket_results_carry_the_cost(demo: Demo, tight_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=tight_server.url, timeout=30) as http:
        token = await token_for(http, "warehouse")
    ws = await GraphQLWebSocket.open(tight_server.url, token)
    try:
        operation = await ws.subscribe(PRODUCTS_30)
        message = await ws.receive()
        assert (message["type"], message["id"]) == ("next", operation), message
        assert message["payload"]["extensions"]["cost"]["requested"] == 31
        assert message["payload"]["extensions"]["cost"]["remaining"] == 40 - 31
        assert (await ws.receive())["type"] == "complete"
        refused_id = await ws.subscribe(PRODUCTS_30)
        message = await ws.receive()
        assert message["id"] == refused_id, message
        payload = message["payload"]
        errors = payload if isinstance(payload, list) else payload["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["THROTTLED"], message
    finally:
        await ws.close()


@pytest.mark.postgres_only
async def test_a_redis_budget_is_shared_by_the_workers(
    demo: Demo, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, one bucket: of six requests on fresh connections (spread over both
    workers by the kernel) only the first fits a 40-point budget; per-worker memory would
    let each worker's first one through."""
    monkeypatch.setenv("APOTHECA_COST_BUDGET_CAPACITY", "40")
    monkeypatch.setenv("APOTHECA_COST_REFILL_PER_SECOND", "2")
    monkeypatch.setenv("APOTHECA_RATE_LIMIT_STORAGE", "redis://127.0.0.1:6379/0")
    server = start_server(database_url, workers=2)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            token = await token_for(http, "regulator")
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:  # an earlier run may have left this user's bucket partly spent
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                body = (
                    await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
                ).json()
            if body["extensions"]["cost"]["remaining"] == 40:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        statuses = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                response = await http.post("/graphql", json={"query": PRODUCTS_30}, headers=headers)
                statuses.append(response.status_code)
        assert statuses == [200, 429, 429, 429, 429, 429]
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
