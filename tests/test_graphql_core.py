"""GraphQL core guarantees: no N+1 queries, the committed SDL matches the code, internal
errors are masked with a stable code, and pagination walks every row once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pytest
import strawberry
from sqlalchemy import event, text
from strawberry import relay

from server.cli import SCHEMA_PATH
from server.core.errors import DomainError, ErrorCode
from server.core.graphql import DATETIME_SCALAR, coerced_input, decode_id, parse_datetime, sent_id
from server.schema import schema_sdl
from tests.conftest import (
    ROOT,
    Demo,
    first_product_id,
    gid,
    gql,
    receive,
    sql_statements,
    token_for,
)

NESTED = """query($location: ID!) {
  stockLevels(first: 100, location: $location) {
    edges { node {
      quantity value
      location { code organisation { name locations { code } } }
      lot { batchNumber expiryDate product { name gtins } manufacturer { name } }
      product { atcCode gtins }
    } }
  }
}"""


@contextmanager
def count_statements(demo: Demo) -> Iterator[list[str]]:
    """The SELECTs the block sends (filled when it ends)."""
    selects: list[str] = []
    with sql_statements(demo) as seen:
        yield selects
    selects.extend(s for s in seen if s.lstrip().upper().startswith("SELECT"))


async def test_nested_query_statement_count_does_not_grow_with_rows(demo: Demo, client) -> None:
    token = await token_for(client, "pharmacist")
    variables = {"location": gid("Location", demo.locations["HOSP-CP"])}
    for offset in range(3):
        await receive(demo, "HOSP-CP", 5, product_id=await first_product_id(demo.services, offset))
    await gql(client, NESTED, variables, token)  # warm the principal cache for both counts
    with count_statements(demo) as few:
        body = await gql(client, NESTED, variables, token)
    assert len(body["data"]["stockLevels"]["edges"]) == 3
    for offset in range(3, 30):
        await receive(demo, "HOSP-CP", 5, product_id=await first_product_id(demo.services, offset))
    await gql(client, NESTED, variables, token)
    with count_statements(demo) as many:
        body = await gql(client, NESTED, variables, token)
    assert len(body["data"]["stockLevels"]["edges"]) == 30
    assert len(many) == len(few), "statement count grew with the number of rows (N+1)"
    assert len(many) <= 13, "\n".join(s.split("\n")[0][:90] for s in many)


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_PATH.read_text() == schema_sdl(), "run `apotheca export-schema` and commit"
    check = subprocess.run(
        [sys.executable, "-m", "server.cli", "export-schema", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_decode_id_may_accept_several_types_and_names_the_first_when_refusing() -> None:
    # A supplier is an organisation: procurement takes either kind of ID for it.
    either = ("Supplier", "Organisation")
    assert decode_id(gid("Supplier", 7), either, "supplier") == 7
    assert decode_id(gid("Organisation", 7), either, "supplier") == 7
    for value, message in (
        (gid("Location", 7), "supplier must be the ID of a Supplier"),
        ("not-base64!", "supplier is not a valid ID"),
        (gid("Organisation", 0), "supplier is not a valid ID"),
    ):
        with pytest.raises(DomainError) as refused:
            decode_id(value, either, "supplier")
        assert (refused.value.code, refused.value.field) == (ErrorCode.INVALID_ID, "supplier")
        assert refused.value.message == message


async def test_internal_errors_are_masked_with_a_stable_code(demo: Demo, client) -> None:
    token = await token_for(client, "pharmacist")
    async with demo.services.db.write() as session:
        await session.execute(text("DROP TABLE product_gtins"))
    body = await gql(
        client, "{ products(first: 2) { edges { node { name gtins } } } }", token=token
    )
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["message"] == "Internal server error"
    assert "product_gtins" not in str(body)


async def test_keyset_pagination_visits_each_stock_level_once(demo: Demo, client) -> None:
    token = await token_for(client, "pharmacist")
    for offset in range(11):
        await receive(
            demo,
            "HOSP-CP",
            1 + offset,
            product_id=await first_product_id(demo.services, offset),
            expiry_days=30 + (offset % 4) * 10,
        )
    seen: list[int] = []
    after = None
    query = """query($after: String) { stockLevels(first: 4, after: $after) {
        edges { node { quantity lot { expiryDate } } }
        pageInfo { hasNextPage endCursor } } }"""
    expiries: list[str] = []
    while True:
        page = (await gql(client, query, {"after": after}, token))["data"]["stockLevels"]
        seen += [e["node"]["quantity"] for e in page["edges"]]
        expiries += [e["node"]["lot"]["expiryDate"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == list(range(1, 12))
    assert expiries == sorted(expiries)


async def test_a_nested_query_reads_in_one_transaction(demo: Demo, client) -> None:
    """The principal, the page and every loader of one request share one read session."""
    token = await token_for(client, "pharmacist")
    for offset in range(5):
        await receive(demo, "HOSP-CP", 5, product_id=await first_product_id(demo.services, offset))
    variables = {"location": gid("Location", demo.locations["HOSP-CP"])}
    begins: list[object] = []

    def listener(connection: object) -> None:
        begins.append(connection)

    engines = [e.sync_engine for e in demo.services.db.engines]
    for engine in engines:
        event.listen(engine, "begin", listener)
    try:
        body = await gql(client, NESTED, variables, token)
    finally:
        for engine in engines:
            event.remove(engine, "begin", listener)
    assert len(body["data"]["stockLevels"]["edges"]) == 5
    assert len(begins) == 1


async def test_ten_requests_at_once_read_on_kept_connections(demo: Demo) -> None:
    """A burst of ten concurrent reads opens no connection once the pool has served one:
    on SQLite's default pool of five, every burst opened (and closed) five more."""
    import asyncio

    db = demo.services.db
    opened: list[object] = []

    def on_connect(*_: object) -> None:
        opened.append(_)

    async def read() -> None:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.02)  # all ten hold a connection at once

    event.listen(db.engine.sync_engine, "connect", on_connect)
    try:
        await asyncio.gather(*(read() for _ in range(10)))
        opened.clear()
        await asyncio.gather(*(read() for _ in range(10)))
    finally:
        event.remove(db.engine.sync_engine, "connect", on_connect)
    assert opened == []


async def test_a_mutation_payload_reads_what_the_mutation_wrote(demo: Demo, client) -> None:
    """The lot a receipt creates is visible to the payload's own fields (SQLite's read snapshot
    of the request must not predate the write)."""
    token = await token_for(client, "pharmacist")
    mutation = """mutation($input: ReceiveStockInput!) {
      receiveStock(input: $input) {
        movements { balanceAfter lot { batchNumber product { name } } }
        errors { code message }
      }
    }"""
    variables = {
        "input": {
            "location": gid("Location", demo.locations["HOSP-CP"]),
            "product": gid("Product", await first_product_id(demo.services)),
            "batchNumber": "NEWLOT77",
            "expiryDate": "2030-01-31",
            "quantity": 4,
            "idempotencyKey": "payload-reads-write",
        }
    }
    payload = (await gql(client, mutation, variables, token))["data"]["receiveStock"]
    assert payload["errors"] == []
    assert payload["movements"][0]["lot"]["batchNumber"] == "NEWLOT77"
    assert payload["movements"][0]["balanceAfter"] == 4


async def test_stock_total_count_is_the_same_with_nested_relations(demo: Demo, client) -> None:
    """The page's statement joins the lots, products and locations its fields select; the
    count over that statement must still count balances, as the plain page's does."""
    token = await token_for(client, "pharmacist")
    for offset in range(3):
        await receive(demo, "HOSP-CP", 5, product_id=await first_product_id(demo.services, offset))
    plain = "{ stockLevels(first: 2) { totalCount edges { node { quantity } } } }"
    nested = """{ stockLevels(first: 2) { totalCount edges { node {
      quantity lot { batchNumber product { name } } location { code } product { name } value
    } } } }"""
    bare = (await gql(client, plain, {}, token))["data"]["stockLevels"]
    full = (await gql(client, nested, {}, token))["data"]["stockLevels"]
    assert full["totalCount"] == bare["totalCount"] >= 3
    assert [e["node"]["quantity"] for e in full["edges"]] == [
        e["node"]["quantity"] for e in bare["edges"]
    ]
    for edge in full["edges"]:
        node = edge["node"]
        assert node["lot"]["product"]["name"] == node["product"]["name"]
        assert node["location"]["code"]


async def test_relation_objects_are_built_once_per_loader_and_dropped_with_it() -> None:
    """One object per loaded row within a request; a cleared loader (a subscription's next
    event) takes its objects with it, so a long-lived context does not keep them all."""
    import gc
    from types import SimpleNamespace
    from typing import Any, cast

    from strawberry.dataloader import DataLoader

    from server.core.graphql import Context

    async def load(keys: list[int]) -> list[Any]:
        return keys

    context = Context(services=cast(Any, None), principal=None)
    loader: DataLoader[int, Any] = DataLoader(load_fn=load)
    row = SimpleNamespace(id=1)

    def convert(r: Any) -> dict[str, int]:
        return {"id": r.id}

    first = context.built(loader, row, convert)
    assert context.built(loader, row, convert) is first
    assert context.built(loader, SimpleNamespace(id=1), convert) is not first  # a fresh row
    del loader
    gc.collect()
    assert len(context._built) == 0


def test_node_ids_resolve_directly_as_strawberry_encodes_them() -> None:
    """Every Node type's `id` gets the direct resolver, and it answers the global ID that
    Strawberry's own resolver gives (a GlobalID of the type's name and the NodeID)."""
    from types import SimpleNamespace

    from graphql import GraphQLObjectType

    from server.schema import build_schema

    schema = build_schema()
    nodes = [
        named
        for named in schema._schema.type_map.values()
        if isinstance(named, GraphQLObjectType)
        and isinstance(
            origin := getattr(named.extensions.get("strawberry-definition"), "origin", None), type
        )
        and issubclass(origin, relay.Node)
    ]
    assert len(nodes) > 20
    for named in nodes:
        resolve = named.fields["id"].resolve
        assert resolve is not None and resolve.__module__ == "server.core.graphql", named.name
        origin = named.extensions["strawberry-definition"].origin
        source = SimpleNamespace(**{origin.resolve_id_attr(): 42})
        assert resolve(source, None) == str(relay.GlobalID(named.name, "42"))


@strawberry.type
class PlainNode(relay.Node):
    id: relay.NodeID[int]

    @strawberry.field
    def doubled(self) -> int:
        return self.id * 2

    @strawberry.field
    def typename(self, info: strawberry.Info) -> str:
        return str(info.path.typename)

    @strawberry.field
    def times(self, factor: int) -> int:
        return self.id * factor


@strawberry.type
class CodedNode(relay.Node):
    code: relay.NodeID[str]

    @classmethod
    def resolve_id(cls, root: CodedNode, *, info: strawberry.Info) -> str:
        return root.code.upper()


@strawberry.type
class NodesQuery:
    @strawberry.field
    def plain(self) -> PlainNode:
        return PlainNode(id=7)

    @strawberry.field
    def coded(self) -> CodedNode:
        return CodedNode(code="abc")


def test_a_node_type_with_its_own_resolve_id_keeps_strawberrys_resolver() -> None:
    from server.core.graphql import install_node_ids

    schema = strawberry.Schema(query=NodesQuery)
    assert install_node_ids(schema) == 1
    result = schema.execute_sync("{ plain { id } coded { id } }")
    assert result.errors is None
    assert result.data == {
        "plain": {"id": str(relay.GlobalID("PlainNode", "7"))},
        "coded": {"id": str(relay.GlobalID("CodedNode", "ABC"))},
    }


def test_methods_taking_only_self_resolve_directly_and_others_keep_strawberrys() -> None:
    from server.core.graphql import install_self_methods

    schema = strawberry.Schema(query=NodesQuery)
    assert install_self_methods(schema) == 3  # PlainNode.doubled, NodesQuery.plain and .coded
    fields = schema._schema.type_map["PlainNode"].fields
    assert fields["doubled"].resolve.__module__ == "server.core.graphql"
    assert fields["typename"].resolve.__module__ != "server.core.graphql"
    result = schema.execute_sync("{ plain { doubled typename times(factor: 3) } }")
    assert result.errors is None
    assert result.data == {"plain": {"doubled": 14, "typename": "PlainNode", "times": 21}}


@strawberry.input
class PlainPairInput:
    name: str
    tags: list[str] = strawberry.field(default_factory=list)
    ref: relay.GlobalID | None = None


def _pair(value: Any) -> tuple[str, ...]:
    """A coerced_input builder: what it was given, as one tuple the resolver echoes."""
    ref = value["ref"]
    return (value["name"], *value["tags"], "ref" if ref is None else str(sent_id(ref)))


@coerced_input(_pair)
@strawberry.input
class BuiltPairInput:
    name: str
    tags: list[str] = strawberry.field(default_factory=list)
    ref: relay.GlobalID | None = None


@strawberry.type
class PairQuery:
    @strawberry.field
    def plain(self, pair: PlainPairInput) -> str:
        return " ".join((pair.name, *pair.tags, "ref" if pair.ref is None else str(pair.ref)))

    @strawberry.field
    def built(
        self, pair: Annotated[tuple[str, ...], strawberry.argument(graphql_type=BuiltPairInput)]
    ) -> str:
        return " ".join(pair)


def test_a_coerced_input_is_built_from_graphql_cores_values_with_the_same_schema() -> None:
    """`coerced_input` hands the builder graphql-core's coerced dict (GraphQL names, published
    defaults filled in, IDs as sent) instead of Strawberry's instances: the same answers and
    the same refusals as Strawberry's conversion, and the same SDL but for the type's name."""
    schema = strawberry.Schema(query=PairQuery)
    sdl = str(schema)
    plain = sdl[sdl.index("input PlainPairInput") : sdl.index("}", sdl.index("input PlainPair"))]
    built = sdl[sdl.index("input BuiltPairInput") : sdl.index("}", sdl.index("input BuiltPair"))]
    assert built.replace("Built", "Plain") == plain
    assert "built(pair: BuiltPairInput!)" in sdl
    ref = str(relay.GlobalID("Lot", "3"))
    for pair, answer in (
        ('{name: "a"}', "a ref"),
        (f'{{name: "a", tags: ["x", "y"], ref: "{ref}"}}', f"a x y {ref}"),
    ):
        for field in ("plain", "built"):
            result = schema.execute_sync(f"{{ {field}(pair: {pair}) }}")
            assert result.errors is None and result.data == {field: answer}, (field, result)
    variables = {"pair": {"name": "v", "tags": ["t"]}}
    result = schema.execute_sync(
        "query($pair: BuiltPairInput!) { built(pair: $pair) }", variable_values=variables
    )
    assert result.data == {"built": "v t ref"}
    # An ID that does not decode is refused with Strawberry's own message, either way.
    messages = []
    for field in ("plain", "built"):
        result = schema.execute_sync(f'{{ {field}(pair: {{name: "a", ref: "!!"}}) }}')
        assert result.errors is not None and result.data is None
        messages.append(result.errors[0].message)
    assert messages[0] == messages[1] == 'Value cannot represent a GlobalID: "!!".'
    with pytest.raises(TypeError):
        coerced_input(_pair)(PairQuery)


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-07T10:11:12Z",
        "2026-12-07T10:11:12.123456+05:30",
        "2026-12-07 10:11:12-08:00",
        "20261207T101112Z",
        "2026-12-07T10:11",
        "2026-W49-1T10:00:00Z",
        "2026-12-07T10:11:12,5Z",
        "2026-12-07T24:00:00Z",
    ],
)
def test_datetime_scalar_reads_what_strawberrys_reads(value: str) -> None:
    """The DateTime scalar parses with the C parser first; whatever Strawberry's own parser
    (dateutil's isoparse) accepted still parses, to the same instant and offset."""
    import dateutil.parser

    theirs = dateutil.parser.isoparse(value)
    ours = DATETIME_SCALAR.parse_value(value)
    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()
    assert parse_datetime(value) == theirs


@pytest.mark.parametrize("value", ["2026-13-01T00:00:00Z", "yesterday", "", "2026-12-07T25:00Z"])
def test_datetime_scalar_refuses_what_strawberrys_refuses(value: str) -> None:
    from strawberry.exceptions import StrawberryInputCoercionError
    from strawberry.schema.types.base_scalars import DateTimeDefinition

    with pytest.raises(StrawberryInputCoercionError):
        DateTimeDefinition.parse_value(value)
    with pytest.raises(StrawberryInputCoercionError):
        DATETIME_SCALAR.parse_value(value)
