"""Bad input over GraphQL: every malformed id, quantity, cursor, page size, oversized or
over-deep request gets a clear error with a stable code, and the database stays as it was.

A 500 or INTERNAL_SERVER_ERROR is always a failure here: it means the server crashed on input
it should have refused by name.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.app import create_app
from server.config import Settings
from server.network.models import Location, Organisation, User
from server.services import Services
from tests.conftest import (
    RUN_ID,
    TEST_SECRET,
    Demo,
    Template,
    _pg_admin,
    _pg_dsn,
    _sa_url,
    gid,
    gql,
    receive,
    row_counts,
    token_for,
)

Variables = Callable[[Demo, int], dict[str, Any]]


@dataclass
class Env:
    """One app and database shared by this module's cases (see `env`)."""

    http: httpx.AsyncClient
    demo: Demo


@pytest.fixture(scope="module")
async def env(template: Template, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """A clone of the template shared by this module's cases, so ~100 cases stay fast.

    Every case here is refused (or makes its own lot) and compares `row_counts` before and
    after within itself, so cases cannot influence each other's verdicts."""
    if template.backend == "postgresql":
        name = f"apotheca_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template.location}"')
        template.clones.append(name)
        url = _sa_url(_pg_dsn(name))
    else:
        path = tmp_path_factory.mktemp("bad_input") / "shared.db"
        shutil.copy(template.location, path)
        url = f"sqlite+aiosqlite:///{path}"
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    async with services.db.read() as session:
        orgs = {o.name: o.id for o in (await session.execute(select(Organisation))).scalars()}
        locations = {x.code: x.id for x in (await session.execute(select(Location))).scalars()}
        users = {u.username: u.id for u in (await session.execute(select(User))).scalars()}
    principals = {n: await services.network.load_principal(i) for n, i in users.items()}
    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apotheca.test") as http:
        yield Env(http, Demo(services, orgs, locations, users, principals))
    await services.close()


_TOKENS: dict[str, str] = {}


@pytest.fixture
async def admin(env: Env, backend: str) -> str:
    """The admin's access token, fetched once per backend: signing in is argon2 (~0.1 s)."""
    if backend not in _TOKENS:
        _TOKENS[backend] = await token_for(env.http, "admin")
    return _TOKENS[backend]


# --- helpers -------------------------------------------------------------------------------------

INPUT_TYPES = {
    "receiveStock": "ReceiveStockInput",
    "dispenseStock": "DispenseStockInput",
    "returnStock": "ReturnStockInput",
    "adjustStock": "AdjustStockInput",
    "disposeStock": "DisposeStockInput",
}
STOCK_MUTATIONS = tuple(INPUT_TYPES)


def stock_document(mutation: str) -> str:
    return (
        f"mutation($input: {INPUT_TYPES[mutation]}!) {{ {mutation}(input: $input) "
        "{ movements { id quantity } errors { code field message } } }"
    )


def valid_input(demo: Demo, mutation: str, lot_id: int, location: str = "WARD-A") -> dict[str, Any]:
    """A valid input for `mutation` on `lot_id`; each case spoils one part of it."""
    fields: dict[str, Any] = {
        "location": gid("Location", demo.locations[location]),
        "lot": gid("Lot", lot_id),
        "quantity": 1,
        "idempotencyKey": uuid.uuid4().hex,
    }
    if mutation == "adjustStock":
        fields["reason"] = "count correction"
    if mutation == "disposeStock":
        fields["reason"] = "DAMAGED"
    return fields


def refused_in_payload(result: dict[str, Any], mutation: str) -> dict[str, Any]:
    """The single typed error of a refused mutation (no top-level errors, no movements)."""
    assert "errors" not in result, result
    payload = result["data"][mutation]
    assert len(payload["errors"]) == 1, payload
    for key in ("movements", "location", "user", "product", "organisation"):
        assert not payload.get(key), payload
    return dict(payload["errors"][0])


def refused_at_top(result: dict[str, Any]) -> dict[str, Any]:
    """The first top-level error of a request that produced no data: `data` is null, or every
    top-level field in it is (a nullable field such as `node` fails to null)."""
    data = result.get("data")
    assert data is None or all(value is None for value in data.values()), result
    assert result["errors"], result
    error = dict(result["errors"][0])
    error.setdefault("extensions", {})  # a missing code then fails as a mismatch, not KeyError
    assert error["message"]
    assert error["extensions"].get("code") != "INTERNAL_SERVER_ERROR", result
    return error


@contextlib.asynccontextmanager
async def unchanged(demo: Demo) -> AsyncIterator[None]:
    """Fail if the block changed the ledger, balances, audit trail or idempotency records."""
    before = await row_counts(demo.services)
    yield
    assert await row_counts(demo.services) == before, "a refused request left a trace"


@pytest.fixture
async def lot(env: Env) -> int:
    """A fresh lot with 10 packs at WARD-A for a case to spoil a request about."""
    return await receive(env.demo, "WARD-A", 10)


# --- malformed global IDs ----------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (mutation, input field, bad value builder, where the refusal appears, code, field)
ID_CASES = [
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: "not base64!",
        "top",
        "INVALID_ID",
        None,
        id="not-base64",
    ),
    pytest.param(
        "dispenseStock", "location", lambda d, lot: "", "top", "INVALID_ID", None, id="empty"
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: _b64("Location"),
        "top",
        "INVALID_ID",
        None,
        id="base64-without-separator",
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: gid("Product", 1),
        "payload",
        "INVALID_ID",
        "location",
        id="product-id-as-location",
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: _b64("Location:abc"),
        "payload",
        "INVALID_ID",
        "location",
        id="non-numeric-node-id",
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: _b64("Location:-1"),
        "payload",
        "INVALID_ID",
        "location",
        id="negative-node-id",
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: _b64("Location:"),
        "payload",
        "INVALID_ID",
        "location",
        id="empty-node-id",
    ),
    pytest.param(
        "dispenseStock",
        "location",
        lambda d, lot: gid("NoSuchType", 1),
        "payload",
        "INVALID_ID",
        "location",
        id="unknown-type-name",
    ),
    pytest.param(
        "returnStock",
        "lot",
        lambda d, lot: gid("Location", d.locations["WARD-A"]),
        "payload",
        "INVALID_ID",
        "lot",
        id="location-id-as-lot",
    ),
    pytest.param(
        "adjustStock",
        "lot",
        lambda d, lot: "%%%",
        "top",
        "INVALID_ID",
        None,
        id="garbage-lot",
    ),
    pytest.param(
        "receiveStock",
        "counterparty",
        lambda d, lot: gid("Location", 1),
        "payload",
        "INVALID_ID",
        "counterparty",
        id="location-id-as-counterparty",
    ),
    pytest.param(
        "disposeStock",
        "lot",
        lambda d, lot: gid("StockLevel", lot),
        "payload",
        "INVALID_ID",
        "lot",
        id="stocklevel-id-as-lot",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "value", "where", "code", "error_field"), ID_CASES)
async def test_malformed_global_ids_in_stock_inputs(
    env: Env,
    admin: str,
    lot: int,
    mutation: str,
    field: str,
    value: Variables,
    where: str,
    code: str,
    error_field: str | None,
) -> None:
    """Undecodable ids fail argument coercion (top-level INVALID_ID); decodable ids of the
    wrong type or shape are refused by the resolver (payload INVALID_ID naming the input)."""
    variables = {"input": {**valid_input(env.demo, mutation, lot), field: value(env.demo, lot)}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document(mutation), variables, admin)
    if where == "top":
        error = refused_at_top(result)
        assert error["extensions"]["code"] == code
        assert error["path"] == [mutation]
    else:
        error = refused_in_payload(result, mutation)
        assert (error["code"], error["field"]) == (code, error_field)


async def test_wrong_type_of_id_for_a_product_in_dispense(env: Env, admin: str, lot: int) -> None:
    """FEFO dispensing by product: a Lot id in the product slot is INVALID_ID, not a guess."""
    variables = {"input": {**valid_input(env.demo, "dispenseStock", lot), "lot": None}}
    variables["input"]["product"] = gid("Lot", lot)
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("dispenseStock"), variables, admin)
    error = refused_in_payload(result, "dispenseStock")
    assert (error["code"], error["field"]) == ("INVALID_ID", "product")


ADMIN_ID_CASES = [
    pytest.param(
        "mutation($input: CreateLocationInput!) { createLocation(input: $input) "
        "{ location { id } errors { code field message } } }",
        lambda d: {
            "input": {
                "organisation": gid("Location", d.locations["HOSP-CP"]),
                "code": "NEW-1",
                "name": "New",
                "kind": "WARD",
            }
        },
        "createLocation",
        "organisation",
        id="location-id-as-organisation",
    ),
    pytest.param(
        "mutation($input: CreateUserInput!) { createUser(input: $input) "
        "{ user { id } errors { code field message } } }",
        lambda d: {
            "input": {
                "username": "someone",
                "fullName": "Some One",
                "password": "long-enough-password",
                "roles": ["NURSE"],
                "locations": [gid("Organisation", 1)],
            }
        },
        "createUser",
        "locations",
        id="organisation-id-in-user-locations",
    ),
    pytest.param(
        "mutation($input: UpdateUserInput!) { updateUser(input: $input) "
        "{ user { id } errors { code field message } } }",
        lambda d: {"input": {"id": gid("Location", 1), "fullName": "X"}},
        "updateUser",
        "id",
        id="location-id-as-user",
    ),
]


@pytest.mark.parametrize(("document", "variables", "mutation", "error_field"), ADMIN_ID_CASES)
async def test_malformed_global_ids_in_admin_inputs(
    env: Env,
    admin: str,
    document: str,
    variables: Callable[[Demo], dict[str, Any]],
    mutation: str,
    error_field: str,
) -> None:
    """Administration inputs decode ids the same way: INVALID_ID naming the input."""
    async with unchanged(env.demo):
        result = await gql(env.http, document, variables(env.demo), admin)
    error = refused_in_payload(result, mutation)
    assert (error["code"], error["field"]) == ("INVALID_ID", error_field)


async def test_undecodable_id_argument_is_invalid_id(env: Env, admin: str) -> None:
    """An ID that is no global ID at all, as an argument or inside an input: top-level
    INVALID_ID (the variable does not coerce)."""
    count = await gql(env.http, '{ stockCount(id: "garbage") { id } }', None, admin)
    assert refused_at_top(count)["extensions"]["code"] == "INVALID_ID"
    document = (
        "mutation($input: UpdateProductInput!) { updateProduct(input: $input) "
        "{ product { id } errors { code field message } } }"
    )
    product = {"name": "X", "strength": "1", "dosageForm": "t", "unit": "u", "approvalNumber": "A"}
    async with unchanged(env.demo):
        result = await gql(env.http, document, {"input": {"id": "garbage", **product}}, admin)
    assert refused_at_top(result)["extensions"]["code"] == "INVALID_ID"
    levels = await gql(
        env.http, '{ stockLevels(first: 5, location: "zzz") { edges { cursor } } }', None, admin
    )
    assert refused_at_top(levels)["extensions"]["code"] == "INVALID_ID"
    wrong_type = await gql(
        env.http,
        "query($l: ID) { stockLevels(first: 5, location: $l) { edges { cursor } } }",
        {"l": gid("Product", 1)},
        admin,
    )
    error = refused_at_top(wrong_type)
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("INVALID_ID", "location")


async def test_unicode_digit_node_id_is_invalid_id(env: Env, admin: str, lot: int) -> None:
    """'Location:²' passes str.isdigit() but is no integer: INVALID_ID, not a crash in int()."""
    variables = {"input": {**valid_input(env.demo, "dispenseStock", lot)}}
    variables["input"]["location"] = _b64("Location:²")
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("dispenseStock"), variables, admin)
    error = refused_in_payload(result, "dispenseStock")
    assert (error["code"], error["field"]) == ("INVALID_ID", "location")


async def test_out_of_range_node_id_is_a_clear_error(env: Env, admin: str, lot: int) -> None:
    """A numeric id beyond the key range names nothing that can exist; it must be refused
    before it reaches the driver (which overflows: INTERNAL_SERVER_ERROR)."""
    variables = {"input": {**valid_input(env.demo, "dispenseStock", lot)}}
    variables["input"]["location"] = gid("Location", 10**20)
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("dispenseStock"), variables, admin)
    error = refused_in_payload(result, "dispenseStock")
    assert error["code"] in ("NOT_FOUND", "INVALID_ID")
    assert error["field"] == "location"


NODE = "query($id: ID!) { node(id: $id) { id } }"


async def test_node_with_undecodable_or_unknown_type_is_invalid_id(env: Env, admin: str) -> None:
    """node(id:) refuses ids it cannot route to a Node type with INVALID_ID."""
    for bad in ("garbage", gid("NoSuchType", 1), gid("Query", 1), gid("MutationError", 1)):
        result = await gql(env.http, NODE, {"id": bad}, admin)
        assert refused_at_top(result)["extensions"]["code"] == "INVALID_ID", bad


@pytest.mark.parametrize("type_name", ["StockLevel", "Location"])
async def test_node_with_non_numeric_id_is_invalid_id(env: Env, admin: str, type_name: str) -> None:
    """A right type with a non-numeric id is a bad id, not a ValueError from int()."""
    result = await gql(env.http, NODE, {"id": _b64(f"{type_name}:abc")}, admin)
    assert refused_at_top(result)["extensions"]["code"] == "INVALID_ID"


@pytest.mark.parametrize("type_name", ["StockLevel", "Location"])
async def test_node_of_a_missing_row_is_null_or_not_found(
    env: Env, admin: str, type_name: str
) -> None:
    """A well-formed id of a row that does not exist: Relay's null (or NOT_FOUND), never the
    INTERNAL_SERVER_ERROR of returning null from a non-null field."""
    result = await gql(env.http, NODE, {"id": gid(type_name, 999999)}, admin)
    assert (result.get("data") or {}).get("node") is None, result
    codes = [e["extensions"]["code"] for e in result.get("errors", [])]
    assert codes in ([], ["NOT_FOUND"]), result


# --- quantities, reasons, idempotency keys --------------------------------------------------------

QUANTITY_CASES = [
    pytest.param(mutation, quantity, id=f"{mutation}-{quantity}")
    for mutation in ("receiveStock", "dispenseStock", "returnStock", "disposeStock")
    for quantity in (0, -3)
] + [pytest.param("adjustStock", 0, id="adjustStock-0")]


@pytest.mark.parametrize(("mutation", "quantity"), QUANTITY_CASES)
async def test_zero_and_negative_quantities_are_invalid_input(
    env: Env, admin: str, lot: int, mutation: str, quantity: int
) -> None:
    """Direction comes from the mutation, so quantities are positive; an adjustment of zero
    changes nothing. Both are INVALID_INPUT naming `quantity`."""
    variables = {"input": {**valid_input(env.demo, mutation, lot), "quantity": quantity}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document(mutation), variables, admin)
    error = refused_in_payload(result, mutation)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "quantity")


@pytest.mark.parametrize(
    "quantity",
    [pytest.param("1", id="string"), pytest.param(1.5, id="float"), 2**31, None],
)
async def test_quantity_that_is_not_a_32_bit_int_fails_validation(
    env: Env, admin: str, lot: int, quantity: Any
) -> None:
    """GraphQL's Int coercion refuses these before any resolver runs."""
    variables = {"input": {**valid_input(env.demo, "dispenseStock", lot), "quantity": quantity}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("dispenseStock"), variables, admin)
    assert refused_at_top(result)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize("reason", [pytest.param(None, id="missing"), "BOGUS", "damaged"])
async def test_dispose_needs_a_reason_from_the_enum(
    env: Env, admin: str, lot: int, reason: str | None
) -> None:
    """DisposalReason is a required enum, so GraphQL validation refuses anything else."""
    fields = valid_input(env.demo, "disposeStock", lot)
    if reason is None:
        del fields["reason"]
    else:
        fields["reason"] = reason
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("disposeStock"), {"input": fields}, admin)
    error = refused_at_top(result)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "reason" in error["message"]


async def test_dispose_without_reason_in_a_literal_fails_validation(
    env: Env, admin: str, lot: int
) -> None:
    """The same refusal when the input is written inline rather than as a variable."""
    location = json.dumps(gid("Location", env.demo.locations["WARD-A"]))
    document = (
        f"mutation {{ disposeStock(input: {{location: {location}, lot: "
        f'{json.dumps(gid("Lot", lot))}, quantity: 1, idempotencyKey: "k-literal"}}) '
        "{ errors { code } } }"
    )
    async with unchanged(env.demo):
        result = await gql(env.http, document, None, admin)
    assert refused_at_top(result)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize("reason", ["", "   "])
async def test_adjust_with_a_blank_reason_is_invalid_input(
    env: Env, admin: str, lot: int, reason: str
) -> None:
    """A correction must say why; whitespace is not a reason."""
    variables = {"input": {**valid_input(env.demo, "adjustStock", lot), "reason": reason}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("adjustStock"), variables, admin)
    error = refused_in_payload(result, "adjustStock")
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "reason")


@pytest.mark.parametrize("mutation", STOCK_MUTATIONS)
async def test_idempotency_key_longer_than_100_characters_is_invalid_input(
    env: Env, admin: str, lot: int, mutation: str
) -> None:
    """Keys are stored in a 100-character column; longer ones are refused by name first."""
    variables = {"input": {**valid_input(env.demo, mutation, lot), "idempotencyKey": "k" * 101}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document(mutation), variables, admin)
    error = refused_in_payload(result, mutation)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "idempotencyKey")


async def test_idempotency_key_of_exactly_100_characters_is_accepted(
    env: Env, admin: str, lot: int
) -> None:
    """The limit is inclusive: 100 characters still works (the boundary of the case above)."""
    key = uuid.uuid4().hex + "k" * 68
    assert len(key) == 100
    variables = {"input": {**valid_input(env.demo, "dispenseStock", lot), "idempotencyKey": key}}
    result = await gql(env.http, stock_document("dispenseStock"), variables, admin)
    assert "errors" not in result, result
    assert result["data"]["dispenseStock"]["errors"] == []


OVERLONG_CASES = [
    pytest.param("dispenseStock", "patientReference", 101, id="dispense-patientReference"),
    pytest.param("receiveStock", "reference", 101, id="receive-reference"),
    pytest.param("returnStock", "reason", 201, id="return-reason"),
    pytest.param("adjustStock", "reason", 201, id="adjust-reason"),
]


@pytest.mark.parametrize(("mutation", "field", "length"), OVERLONG_CASES)
async def test_overlong_free_text_is_invalid_input(
    env: Env, admin: str, lot: int, mutation: str, field: str, length: int
) -> None:
    """Free text longer than its column is INVALID_INPUT naming the field on both databases
    (not a PostgreSQL truncation error, nor silently stored by SQLite)."""
    variables = {"input": {**valid_input(env.demo, mutation, lot), field: "x" * length}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document(mutation), variables, admin)
    error = refused_in_payload(result, mutation)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", field)


# --- things that do not exist --------------------------------------------------------------------


@pytest.mark.parametrize("mutation", STOCK_MUTATIONS)
@pytest.mark.parametrize("missing", ["location", "lot"])
async def test_unknown_location_or_lot_is_not_found_for_admin(
    env: Env, admin: str, lot: int, mutation: str, missing: str
) -> None:
    """A well-formed id of a row that does not exist: NOT_FOUND naming it (the admin's scope is
    everything, so this is not disguised as FORBIDDEN)."""
    type_name = "Location" if missing == "location" else "Lot"
    variables = {"input": {**valid_input(env.demo, mutation, lot), missing: gid(type_name, 999999)}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document(mutation), variables, admin)
    error = refused_in_payload(result, mutation)
    assert (error["code"], error["field"]) == ("NOT_FOUND", missing)


async def test_receiving_a_new_batch_of_an_unknown_product_is_not_found(
    env: Env, admin: str
) -> None:
    """Receipt by product + batch: the product must exist; nothing (not even a lot) is made."""
    variables = {
        "input": {
            "location": gid("Location", env.demo.locations["WARD-A"]),
            "product": gid("Product", 999999),
            "batchNumber": "NOPE1",
            "expiryDate": "2031-01-01",
            "quantity": 1,
            "idempotencyKey": uuid.uuid4().hex,
        }
    }
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("receiveStock"), variables, admin)
    error = refused_in_payload(result, "receiveStock")
    assert (error["code"], error["field"]) == ("NOT_FOUND", "product")


@pytest.mark.parametrize(
    ("document", "variables", "mutation", "error_field"),
    [
        pytest.param(
            "mutation($input: CreateLocationInput!) { createLocation(input: $input) "
            "{ location { id } errors { code field message } } }",
            {
                "input": {
                    "organisation": gid("Organisation", 999999),
                    "code": "NEW-2",
                    "name": "New",
                    "kind": "WARD",
                }
            },
            "createLocation",
            "organisation",
            id="createLocation-organisation",
        ),
        pytest.param(
            "mutation($input: UpdateUserInput!) { updateUser(input: $input) "
            "{ user { id } errors { code field message } } }",
            {"input": {"id": gid("User", 999999), "fullName": "Nobody"}},
            "updateUser",
            "user",
            id="updateUser-id",
        ),
    ],
)
async def test_unknown_entities_in_admin_mutations_are_not_found(
    env: Env,
    admin: str,
    document: str,
    variables: dict[str, Any],
    mutation: str,
    error_field: str,
) -> None:
    """Administration says NOT_FOUND too, rather than failing on a foreign key."""
    async with unchanged(env.demo):
        error = refused_in_payload(await gql(env.http, document, variables, admin), mutation)
    assert (error["code"], error["field"]) == ("NOT_FOUND", error_field)


# --- pagination ---------------------------------------------------------------------------------

CONNECTIONS = {
    "stockLevels": "edges { cursor }",
    "movements": "edges { cursor }",
    "products": "edges { cursor }",
    "lots": "edges { cursor }",
    "organisations": "edges { cursor }",
    "locations": "edges { cursor }",
    "users": "edges { cursor }",
    "auditTrail": "edges { cursor }",
}


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_first_outside_1_to_100_is_invalid_input(env: Env, admin: str, first: int) -> None:
    """Every connection requires a capped page size: 1..100, else INVALID_INPUT on `first`."""
    for connection, selection in CONNECTIONS.items():
        document = f"query($first: Int!) {{ {connection}(first: $first) {{ {selection} }} }}"
        result = await gql(env.http, document, {"first": first}, admin)
        error = refused_at_top(result)
        assert error["extensions"]["code"] == "INVALID_INPUT", connection
        assert error["extensions"]["field"] == "first", connection
        assert error["path"] == [connection]


async def test_first_is_required(env: Env, admin: str) -> None:
    """No unbounded lists: leaving `first` out fails validation."""
    result = await gql(env.http, "{ stockLevels { edges { cursor } } }", None, admin)
    assert refused_at_top(result)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


MALFORMED_CURSORS = [
    pytest.param("stockLevels", "@@@", id="not-base64"),
    pytest.param("stockLevels", _b64("not json"), id="not-json"),
    pytest.param("stockLevels", _cursor({"expiry": "2030-01-01"}), id="not-a-list"),
    pytest.param("stockLevels", _cursor([1]), id="too-short"),
    pytest.param("stockLevels", _cursor(["2030-01-01", 1, 2]), id="too-long"),
    pytest.param("stockLevels", _cursor(["not-a-date", 1]), id="bad-date"),
    pytest.param("movements", "", id="empty"),
    pytest.param("movements", _cursor([1, 2]), id="movements-too-long"),
    pytest.param("auditTrail", _b64("\xff\xfe"), id="audit-not-json"),
    pytest.param("lots", _cursor(["2030-13-45", 1]), id="lots-bad-date"),
]


@pytest.mark.parametrize(("connection", "cursor"), MALFORMED_CURSORS)
async def test_malformed_after_cursor_is_invalid_input(
    env: Env, admin: str, connection: str, cursor: str
) -> None:
    """A cursor the server did not make is INVALID_INPUT on `after`, not a crash."""
    document = (
        f"query($after: String) {{ {connection}(first: 5, after: $after) "
        f"{{ {CONNECTIONS[connection]} }} }}"
    )
    result = await gql(env.http, document, {"after": cursor}, admin)
    error = refused_at_top(result)
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("INVALID_INPUT", "after")


@pytest.mark.parametrize(
    ("connection", "cursor"),
    [
        pytest.param("stockLevels", _cursor([{"a": 1}, 2]), id="object-in-cursor"),
        pytest.param("movements", _cursor([10**30]), id="huge-id-in-cursor"),
        pytest.param("stockLevels", _cursor(["2030-01-01", "abc"]), id="text-id-in-cursor"),
        pytest.param("movements", _cursor([1.5]), id="float-id-in-cursor"),
        pytest.param("movements", _cursor([True]), id="bool-id-in-cursor"),
        pytest.param("lots", _cursor([20300101, 1]), id="number-as-date-in-cursor"),
    ],
)
async def test_cursor_with_wrongly_typed_values_is_invalid_input(
    env: Env, admin: str, connection: str, cursor: str
) -> None:
    """A well-formed cursor holding values of the wrong type is still a malformed cursor,
    refused before the values reach SQL."""
    document = (
        f"query($after: String) {{ {connection}(first: 5, after: $after) "
        f"{{ {CONNECTIONS[connection]} }} }}"
    )
    result = await gql(env.http, document, {"after": cursor}, admin)
    error = refused_at_top(result)
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("INVALID_INPUT", "after")


# --- request limits -----------------------------------------------------------------------------


def _nested(levels: int) -> str:
    """stockLevels→edges→node→location, then `levels` alternating organisation/locations:
    the operation's depth is 4 + levels."""
    inner = "id"
    for index in reversed(range(levels)):
        inner = f"{'organisation' if index % 2 == 0 else 'locations'} {{ {inner} }}"
    return f"{{ stockLevels(first: 1) {{ edges {{ node {{ location {{ {inner} }} }} }} }} }}"


async def test_query_depth_limit_is_12(env: Env, admin: str) -> None:
    """Depth 12 runs; depth 13 is refused before execution with QUERY_TOO_DEEP."""
    assert "errors" not in await gql(env.http, _nested(8), None, admin)
    for levels in (9, 20):
        error = refused_at_top(await gql(env.http, _nested(levels), None, admin))
        assert error["extensions"]["code"] == "QUERY_TOO_DEEP"


def _aliases(count: int) -> str:
    return "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(count)) + " }"


async def test_more_than_20_aliases_are_refused(env: Env, admin: str) -> None:
    """20 aliases run; 21 are refused before execution with a coded error."""
    ok = await gql(env.http, _aliases(20), None, admin)
    assert "errors" not in ok and len(ok["data"]) == 20
    error = refused_at_top(await gql(env.http, _aliases(21), None, admin))
    assert "alias" in error["message"].lower()


async def test_too_many_aliases_has_its_own_code(env: Env, admin: str) -> None:
    """Clients switch on TOO_MANY_ALIASES, as the schema's limit codes promise."""
    error = refused_at_top(await gql(env.http, _aliases(21), None, admin))
    assert error["extensions"]["code"] == "TOO_MANY_ALIASES"


def _tokens(count: int) -> str:
    """A document of exactly `count` lexical tokens: `{ me { id … } }`."""
    return "{ me { " + "id " * (count - 5) + "} }"


async def test_more_than_3000_tokens_are_refused(env: Env, admin: str) -> None:
    """The parser stops at 3000 tokens, so a huge document costs nothing to refuse."""
    result = await gql(env.http, _tokens(3001), None, admin)
    assert result.get("data") is None
    [error] = result["errors"]
    assert "3000 tokens" in error["message"]


async def test_too_many_tokens_has_its_own_code(env: Env, admin: str) -> None:
    """Clients switch on TOO_MANY_TOKENS."""
    error = refused_at_top(await gql(env.http, _tokens(3001), None, admin))
    assert error["extensions"].get("code") == "TOO_MANY_TOKENS"


async def test_syntax_error_is_refused_without_data(env: Env, admin: str) -> None:
    """A document that does not parse is a GraphQL error response, not a 500."""
    response = await env.http.post(
        "/graphql",
        json={"query": "{ stockLevels(first: 5 { edges { cursor } } }"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body.get("data") is None
    assert body["errors"][0]["message"].startswith("Syntax Error")


@pytest.mark.parametrize(
    "document",
    ["{ stockLevels(first: 5 { edges { cursor } } }", "query { me { id }", "mutation {"],
)
async def test_syntax_error_has_a_stable_code(env: Env, admin: str, document: str) -> None:
    """Every error a client can receive carries extensions.code."""
    error = refused_at_top(await gql(env.http, document, None, admin))
    assert error["extensions"].get("code") == "GRAPHQL_VALIDATION_FAILED"


def _padded_body(size: int) -> bytes:
    """A valid GraphQL request body of exactly `size` bytes (padding in an unused variable)."""
    body: dict[str, Any] = {"query": "{ me { id } }", "variables": {"pad": ""}}
    body["variables"]["pad"] = "a" * (size - len(json.dumps(body).encode()))
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


async def test_request_body_over_256_kib_is_413(env: Env, admin: str) -> None:
    """The body limit is checked before parsing: 256 KiB passes, one byte more is 413."""
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    limit = 256 * 1024
    ok = await env.http.post("/graphql", content=_padded_body(limit), headers=headers)
    assert ok.status_code == 200, ok.text
    assert "errors" not in ok.json()
    async with unchanged(env.demo):
        big = await env.http.post("/graphql", content=_padded_body(limit + 1), headers=headers)
    assert big.status_code == 413
    assert big.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"


async def test_chunked_request_body_over_256_kib_is_413(env: Env, admin: str) -> None:
    """The limit must hold however the body is framed."""
    raw = _padded_body(300 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 16 * 1024):
            yield raw[start : start + 16 * 1024]

    response = await env.http.post(
        "/graphql",
        content=chunks(),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"


# --- one place for input hygiene: strings, decimals, datetimes, quantities, searches -------------


async def raw_gql(
    env: Env, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Post with json.dumps's ASCII escapes, so lone surrogates travel as a client sends them."""
    response = await env.http.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables or {}}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def invalid_input_at_top(result: dict[str, Any], field: str) -> str:
    """The request was refused before execution: INVALID_INPUT naming `field`."""
    error = refused_at_top(result)
    assert error["extensions"]["code"] == "INVALID_INPUT", result
    assert error["extensions"]["field"] == field, result
    return str(error["message"])


BAD_STRINGS = [
    pytest.param("a\x00b", "NUL", id="nul"),
    pytest.param("a\ud800b", "surrogate", id="lone-surrogate"),
    pytest.param("\udfffz", "surrogate", id="lone-low-surrogate"),
    pytest.param("x" * 10_001, "longer than 10000", id="overlong"),
]


@pytest.mark.parametrize(("value", "words"), BAD_STRINGS)
@pytest.mark.parametrize("mutation", ["receiveStock", "adjustStock"])
async def test_bad_strings_in_mutation_inputs_are_refused_by_name(
    env: Env, admin: str, lot: int, mutation: str, value: str, words: str
) -> None:
    """NUL (PostgreSQL cannot store it), lone surrogates (not encodable) and overlong strings
    are INVALID_INPUT naming the argument path, before anything runs."""
    field = "reference" if mutation == "receiveStock" else "reason"
    variables = {"input": {**valid_input(env.demo, mutation, lot), field: value}}
    async with unchanged(env.demo):
        result = await raw_gql(env, admin, stock_document(mutation), variables)
    assert words in invalid_input_at_top(result, f"$input.{field}")


@pytest.mark.parametrize(("value", "words"), BAD_STRINGS)
async def test_bad_strings_anywhere_are_refused_even_in_ids_and_json(
    env: Env, admin: str, value: str, words: str
) -> None:
    """The check covers every string argument: an ID, a list item and a JSON scalar's text."""
    location = "query($l: ID) { stockLevels(first: 1, location: $l) { edges { cursor } } }"
    result = await raw_gql(env, admin, location, {"l": value})
    assert words in invalid_input_at_top(result, "$l")
    epcis = (
        "mutation($o: ID!, $d: JSON!) { importEpcis(input: {organisation: $o, document: $d}) "
        "{ errors { code } } }"
    )
    document = {"eventList": [{"type": "ObjectEvent", "bizStep": value}]}
    async with unchanged(env.demo):
        result = await raw_gql(env, admin, epcis, {"o": gid("Organisation", 1), "d": document})
    assert words in invalid_input_at_top(result, "$d.eventList.0.bizStep")


async def test_nul_in_a_literal_string_is_refused_with_the_argument_path(
    env: Env, admin: str
) -> None:
    """Literals written into the document pass the same check as variables."""
    query = r'{ products(first: 5, search: "a\u0000b") { edges { cursor } } }'
    assert "NUL" in invalid_input_at_top(await raw_gql(env, admin, query), "products.search")
    # The verdict is cached per document; the second answer must be the same refusal.
    assert "NUL" in invalid_input_at_top(await raw_gql(env, admin, query), "products.search")


async def test_lone_surrogate_in_a_literal_is_refused(env: Env, admin: str) -> None:
    """Spelled as an escape in the document: refused by the parser or by the check, coded."""
    query = r'{ products(first: 5, search: "a\ud800b") { edges { cursor } } }'
    error = refused_at_top(await raw_gql(env, admin, query))
    assert error["extensions"]["code"] in ("INVALID_INPUT", "GRAPHQL_VALIDATION_FAILED")


PRODUCT = (
    "mutation($input: ProductInput!) { createProduct(input: $input) "
    "{ product { id } errors { code field message } } }"
)


def product_input(**overrides: Any) -> dict[str, Any]:
    fields = {
        "name": f"Hygiene {uuid.uuid4().hex[:8]}",
        "strength": "10 mg",
        "dosageForm": "tablet",
        "unit": "pack",
        "approvalNumber": f"H{uuid.uuid4().hex[:10]}",
    }
    return {**fields, **overrides}


BAD_DECIMALS = [
    pytest.param("NaN", "finite", id="nan-string"),
    pytest.param("-Infinity", "finite", id="infinity-string"),
    pytest.param("sNaN", "finite", id="signalling-nan"),
    pytest.param("1e999999", "below", id="huge-exponent-string"),
    pytest.param(1e999999, "finite", id="json-number-overflowing-to-infinity"),
    pytest.param("100000000", "below", id="ten-to-the-eighth"),
    pytest.param("-123456789.5", "below", id="past-precision-negative"),
    pytest.param("1.00001", "decimal places", id="past-scale"),
]


@pytest.mark.parametrize(("value", "words"), BAD_DECIMALS)
async def test_bad_decimals_in_unit_cost_are_invalid_input(
    env: Env, admin: str, value: Any, words: str
) -> None:
    """unitCost is Numeric(12, 4): NaN, infinities and values past precision or scale are
    refused by name on both databases (PostgreSQL would fail, SQLite would store nonsense)."""
    async with unchanged(env.demo):
        result = await raw_gql(env, admin, PRODUCT, {"input": product_input(unitCost=value)})
    assert words in invalid_input_at_top(result, "$input.unitCost")


@pytest.mark.parametrize("literal", ['"NaN"', "1e999999", '"Infinity"', "100000000"])
async def test_bad_decimal_literals_in_prices_are_invalid_input(
    env: Env, admin: str, literal: str
) -> None:
    """Prices written inline are checked the same way (the line id is never looked at)."""
    query = (
        f'mutation {{ updatePurchaseOrderLine(input: {{ id: "x", unitPrice: {literal} }}) '
        "{ errors { code } } }"
    )
    async with unchanged(env.demo):
        result = await raw_gql(env, admin, query)
    invalid_input_at_top(result, "updatePurchaseOrderLine.input.unitPrice")


@pytest.mark.parametrize("value", ["99999999.9999", "0.0001", "12.50000", "0"])
async def test_decimals_at_the_column_limits_are_accepted(env: Env, admin: str, value: str) -> None:
    """The boundary of the cases above: the largest, the smallest step, trailing zeros."""
    result = await raw_gql(env, admin, PRODUCT, {"input": product_input(unitCost=value)})
    assert "errors" not in result, result
    assert result["data"]["createProduct"]["errors"] == []


MOVEMENTS_SINCE = "query($s: DateTime) { movements(first: 5, since: $s) { edges { cursor } } }"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param("2030-01-01T00:00:00", "time zone", id="naive"),
        pytest.param("0001-01-01T00:00:00+00:00", "1900", id="year-1"),
        pytest.param("0001-01-01T00:00:00+05:00", "1900", id="year-1-ahead-of-utc"),
        pytest.param("9999-12-31T23:59:59-05:00", "2999", id="year-9999-behind-utc"),
        pytest.param("1899-12-31T23:59:59Z", "1900", id="just-before-1900"),
    ],
)
async def test_bad_datetimes_in_movements_since_are_invalid_input(
    env: Env, admin: str, value: str, words: str
) -> None:
    """DateTimes carry a zone and lie within 1900..2999 (beyond, zone shifts overflow)."""
    result = await raw_gql(env, admin, MOVEMENTS_SINCE, {"s": value})
    assert words in invalid_input_at_top(result, "$s")
    literal = f'{{ movements(first: 5, since: "{value}") {{ edges {{ cursor }} }} }}'
    assert words in invalid_input_at_top(await raw_gql(env, admin, literal), "movements.since")


async def test_datetimes_inside_the_range_are_accepted(env: Env, admin: str) -> None:
    for value in ("1900-01-01T00:00:00Z", "2999-12-31T23:59:59+00:00", "2026-01-01T10:00:00+02:00"):
        result = await raw_gql(env, admin, MOVEMENTS_SINCE, {"s": value})
        assert "errors" not in result, (value, result)


async def test_date_of_year_1_is_invalid_input(env: Env, admin: str) -> None:
    """Date arguments too: the waste report of year 1 would overflow its date arithmetic."""
    query = "query($a: Date!, $b: Date!) { wasteReport(since: $a, until: $b) { since } }"
    result = await raw_gql(env, admin, query, {"a": "0001-01-01", "b": "0001-02-01"})
    assert "1900" in invalid_input_at_top(result, "$a")


@pytest.mark.parametrize("quantity", [2**31 - 1, 1_000_000_001])
async def test_quantity_past_the_bound_is_refused_and_stock_levels_still_work(
    env: Env, admin: str, lot: int, quantity: int
) -> None:
    """A receipt of 2^31 - 1 once committed a balance past 32 bits on SQLite (every later
    stockLevels there failed) and was INTERNAL on PostgreSQL: now INVALID_INPUT on quantity."""
    variables = {"input": {**valid_input(env.demo, "receiveStock", lot), "quantity": quantity}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("receiveStock"), variables, admin)
    error = refused_in_payload(result, "receiveStock")
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "quantity")
    levels = await gql(
        env.http,
        "query($l: ID) { stockLevels(first: 100, location: $l) { edges { node { quantity } } } }",
        {"l": gid("Location", env.demo.locations["WARD-A"])},
        admin,
    )
    assert "errors" not in levels, levels


async def test_a_receipt_that_would_push_a_balance_past_the_bound_is_refused(
    env: Env, admin: str, lot: int
) -> None:
    """Each quantity may be within bounds and their sum on the shelf still too much: the
    balance is bounded too (10^9), and the refusal leaves the shelf as it was."""
    fill = {"input": {**valid_input(env.demo, "receiveStock", lot), "quantity": 10**9 - 10}}
    result = await gql(env.http, stock_document("receiveStock"), fill, admin)
    assert result["data"]["receiveStock"]["errors"] == [], result  # exactly at the bound
    one_more = {"input": {**valid_input(env.demo, "receiveStock", lot), "quantity": 1}}
    async with unchanged(env.demo):
        result = await gql(env.http, stock_document("receiveStock"), one_more, admin)
    error = refused_in_payload(result, "receiveStock")
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "quantity")
    assert "past the limit" in error["message"]
    from tests.conftest import balance_of, check_ledger

    assert await balance_of(env.demo.services, env.demo.locations["WARD-A"], lot) == 10**9
    await check_ledger(env.demo.services)
    # Leave the shared database's FEFO picks as they were: take the packs out again.
    drain = {
        "input": {
            **valid_input(env.demo, "disposeStock", lot),
            "quantity": 10**9,
        }
    }
    result = await gql(env.http, stock_document("disposeStock"), drain, admin)
    assert result["data"]["disposeStock"]["errors"] == [], result


SEARCH_PRODUCTS = (
    "query($s: String) { products(first: 100, search: $s) { edges { node { name } } } }"
)
SEARCH_LOCATIONS = (
    "query($s: String) { locations(first: 100, search: $s) { edges { node { code name } } } }"
)


async def test_percent_and_underscore_in_searches_match_literally(env: Env, admin: str) -> None:
    """`%` and `_` are LIKE wildcards; in a search they mean themselves (and `\\` too)."""
    tag = uuid.uuid4().hex[:6]
    names = [f"Pct{tag} 100% pure", f"Und{tag} a_b", f"Bsl{tag} c\\d", f"Pln{tag} axb"]
    for name in names:
        created = await raw_gql(env, admin, PRODUCT, {"input": product_input(name=name)})
        assert created["data"]["createProduct"]["errors"] == [], created

    async def found(term: str) -> set[str]:
        result = await raw_gql(env, admin, SEARCH_PRODUCTS, {"s": term})
        assert "errors" not in result, result
        return {edge["node"]["name"] for edge in result["data"]["products"]["edges"]}

    everything = await found("")
    assert all("%" in name for name in await found("%")), "'%' matched names without one"
    assert await found("%") <= everything and names[0] in await found("%")
    assert names[1] in await found("_") and all("_" in n for n in await found("_"))
    assert await found(f"{tag} a_b") == {names[1]}
    assert await found(f"{tag} a%b") == set()
    assert await found(f"{tag} c\\d") == {names[2]}
    assert await found(f"Pln{tag} a_b") == set()  # `_` must not match the x of "axb"
    result = await raw_gql(env, admin, SEARCH_LOCATIONS, {"s": "%"})
    assert "errors" not in result, result
    assert all(
        "%" in edge["node"]["code"] + edge["node"]["name"]
        for edge in result["data"]["locations"]["edges"]
    )


@pytest.mark.parametrize("length", [201, 200_000])
async def test_long_searches_are_invalid_input(env: Env, admin: str, length: int) -> None:
    """SQLite gave up on 200,000-character LIKE patterns ('too complex'): a search is capped
    at 200 characters (and any string at 10,000)."""
    for query in (SEARCH_PRODUCTS, SEARCH_LOCATIONS):
        result = await raw_gql(env, admin, query, {"s": "x" * length})
        error = refused_at_top(result)
        assert error["extensions"]["code"] == "INVALID_INPUT", result
        assert error["extensions"]["field"] in ("search", "$s")
    literal = f'{{ products(first: 5, search: "{"y" * length}") {{ edges {{ cursor }} }} }}'
    error = refused_at_top(await raw_gql(env, admin, literal))
    assert error["extensions"]["code"] == "INVALID_INPUT"


async def test_atc_prefix_search_is_literal(env: Env, admin: str) -> None:
    """The ATC prefix filter is a LIKE 'prefix%' too: `%` must not match every code."""
    query = "query($a: String) { products(first: 100, atcCode: $a) { edges { cursor } } }"
    result = await raw_gql(env, admin, query, {"a": "%"})
    assert "errors" not in result, result
    assert result["data"]["products"]["edges"] == []


# --- HTTP-level refusals: 400 in the GraphQL error shape -----------------------------------------

HTTP_REFUSALS = [
    pytest.param(b"{not json", "INVALID_JSON", id="invalid-json"),
    pytest.param(b"", "INVALID_JSON", id="empty-body"),
    pytest.param(b'[{"query": "{ me { id } }"}]', "BAD_REQUEST", id="batch-list"),
    pytest.param(b"42", "BAD_REQUEST", id="number"),
    pytest.param(b'"{ me { id } }"', "BAD_REQUEST", id="string"),
    pytest.param(b"null", "BAD_REQUEST", id="null"),
    pytest.param(b'{"query": 5}', "BAD_REQUEST", id="query-not-a-string"),
    pytest.param(b'{"query": "{ me { id } }", "variables": [1]}', "BAD_REQUEST", id="vars-list"),
    pytest.param(b'{"variables": {}}', "BAD_REQUEST", id="no-query"),
    pytest.param(b'{"query": "{ me { id } }"}\xff', "INVALID_ENCODING", id="not-utf8"),
    pytest.param(b'{"query": "{ me { id \xc3\x28 } }"}', "INVALID_ENCODING", id="bad-utf8-seq"),
    pytest.param(
        '{"query": "{ me { id } }"}'.encode("utf-16"), "INVALID_ENCODING", id="utf-16-body"
    ),
    pytest.param(
        b'{"query": "{ me { id } }", "x": "\xed\xa0\x80"}', "INVALID_ENCODING", id="cesu-surrogate"
    ),
]


@pytest.mark.parametrize(("body", "code"), HTTP_REFUSALS)
async def test_http_level_refusals_are_400_with_a_code(
    env: Env, admin: str, body: bytes, code: str
) -> None:
    """Refused before any GraphQL runs: 400 and {"errors": [{message, extensions.code}]}."""
    async with unchanged(env.demo):
        response = await env.http.post(
            "/graphql",
            content=body,
            headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["message"]
    assert error["extensions"]["code"] == code, response.text


async def test_mutation_over_get_is_400_with_a_code(env: Env, admin: str, lot: int) -> None:
    """GET is for queries: a mutation there is 400 BAD_REQUEST (GraphQL shape), not run."""
    variables = {"input": valid_input(env.demo, "receiveStock", lot)}
    async with unchanged(env.demo):
        response = await env.http.get(
            "/graphql",
            params={"query": stock_document("receiveStock"), "variables": json.dumps(variables)},
            headers={"Authorization": f"Bearer {admin}"},
        )
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "mutation" in error["message"]
    ok = await env.http.get(
        "/graphql", params={"query": "{ me { id } }"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert ok.status_code == 200 and "errors" not in ok.json(), ok.text


async def test_unsupported_content_type_is_400_with_a_code(env: Env, admin: str) -> None:
    response = await env.http.post(
        "/graphql",
        content=b"query=%7B+me+%7B+id+%7D+%7D",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_in_the_error_shape(env: Env, admin: str, method: str) -> None:
    """GraphQL is GET and POST; anything else is 405 METHOD_NOT_ALLOWED, coded like the rest."""
    response = await env.http.request(
        method,
        "/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 405, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_a_batch_whose_running_totals_would_pass_32_bits_is_refused(demo: Demo) -> None:
    """Every shelf within its bound, the batch's running totals (GraphQL Ints, PostgreSQL
    INTEGERs) still may not pass 2^31 - 1: the third 10^9 receipt is refused, typed, whole."""
    from server.core.errors import InvalidInput
    from server.supervision.models import BatchConstituentTotal
    from tests.conftest import check_ledger

    batch = f"BIG{uuid.uuid4().hex[:8].upper()}"
    await receive(demo, "WARD-A", 10**9, batch=batch)
    await receive(demo, "WARD-B", 10**9, batch=batch)
    before = await row_counts(demo.services)
    with pytest.raises(InvalidInput) as refused:
        await receive(demo, "WARD-C", 10**9, batch=batch)
    assert refused.value.field == "quantity"
    assert await row_counts(demo.services) == before
    async with demo.services.db.read() as session:
        received = (
            await session.execute(
                select(BatchConstituentTotal.received).where(
                    BatchConstituentTotal.batch_number == batch
                )
            )
        ).scalar_one()
    assert received == 2 * 10**9
    await check_ledger(demo.services)
