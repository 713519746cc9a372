"""The access matrix over GraphQL: which role may move stock, manage the network and catalogue,
and read what; scoped users stay inside their locations; refusals are FORBIDDEN or
UNAUTHENTICATED with nothing written, never a crash and never a silent empty result.

The expected tables below are written out by hand on purpose (not derived from
ROLE_PERMISSIONS), so a change to the rules in the code makes these tests fail.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.app import create_app
from server.catalog.models import Product, ProductGtin
from server.config import Settings
from server.core.security import Role, TokenService
from server.network.models import Location, Organisation, User, UserLocation, UserRole
from server.services import Services
from tests.conftest import (
    RUN_ID,
    TEST_SECRET,
    Demo,
    Template,
    _pg_admin,
    _pg_dsn,
    _sa_url,
    balance_of,
    first_product_id,
    gid,
    gql,
    receive,
    row_counts,
    token_for,
)

Login = Callable[[str], Awaitable[str]]

# One demo user per role.
ROLE_OF = {
    "admin": "ADMIN",
    "pharmacist": "PHARMACIST",
    "warehouse": "WAREHOUSE_MANAGER",
    "nurse": "NURSE",
    "supplier": "SUPPLIER",
    "auditor": "AUDITOR",
    "regulator": "REGULATOR",
}
USERS = tuple(ROLE_OF)

# Where each user acts in the matrix: a location inside their scope, so that a refusal can only
# come from the role, never from the location.
HOME = {
    "admin": "HOSP-CP",
    "pharmacist": "WARD-A",
    "warehouse": "HOSP-WH",
    "nurse": "WARD-A",
    "supplier": "WHS-DC",
    "auditor": "WARD-A",
    "regulator": "WARD-A",
}

OK, NO = "allowed", "FORBIDDEN"

# mutation -> user -> expected outcome. Written out, not computed.
STOCK_MATRIX: dict[str, dict[str, str]] = {
    "receiveStock": {
        "admin": OK,
        "pharmacist": OK,
        "warehouse": OK,
        "nurse": NO,
        "supplier": NO,
        "auditor": NO,
        "regulator": NO,
    },
    "dispenseStock": {
        "admin": OK,
        "pharmacist": OK,
        "warehouse": NO,
        "nurse": OK,
        "supplier": NO,
        "auditor": NO,
        "regulator": NO,
    },
    "returnStock": {
        "admin": OK,
        "pharmacist": OK,
        "warehouse": NO,
        "nurse": OK,
        "supplier": NO,
        "auditor": NO,
        "regulator": NO,
    },
    "adjustStock": {
        "admin": OK,
        "pharmacist": OK,
        "warehouse": OK,
        "nurse": NO,
        "supplier": NO,
        "auditor": NO,
        "regulator": NO,
    },
    "disposeStock": {
        "admin": OK,
        "pharmacist": OK,
        "warehouse": OK,
        "nurse": OK,
        "supplier": NO,
        "auditor": NO,
        "regulator": NO,
    },
}

# Network, user and catalogue administration: who may call each mutation at all.
ADMIN_MATRIX: dict[str, frozenset[str]] = {
    "createOrganisation": frozenset({"admin"}),
    "updateOrganisation": frozenset({"admin"}),
    "createLocation": frozenset({"admin"}),
    "updateLocation": frozenset({"admin"}),
    "createUser": frozenset({"admin"}),
    "updateUser": frozenset({"admin"}),
    "createProduct": frozenset({"admin", "pharmacist"}),
    "updateProduct": frozenset({"admin", "pharmacist"}),
}

# Queries: who may read each one (without a location argument).
READ_MATRIX: dict[str, frozenset[str]] = {
    "stockLevels": frozenset({"admin", "pharmacist", "warehouse", "nurse", "auditor", "regulator"}),
    "movements": frozenset({"admin", "pharmacist", "warehouse", "nurse", "auditor", "regulator"}),
    "auditTrail": frozenset({"admin", "auditor"}),
    "users": frozenset({"admin"}),
}

READ_QUERIES = {
    "stockLevels": "{ stockLevels(first: 10) { edges { node { id quantity } } } }",
    "movements": "{ movements(first: 10) { edges { node { id kind } } } }",
    "auditTrail": "{ auditTrail(first: 10) { edges { node { seq action } } } }",
    "users": "{ users(first: 10) { edges { node { username } } } }",
}


@dataclass
class Env:
    """One app and database shared by a module's matrix cases (see `env`)."""

    http: httpx.AsyncClient
    demo: Demo


@pytest.fixture(scope="module")
async def env(template: Template, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """A clone of the template shared by this module's matrix cases, so ~200 cases stay fast.

    Each case makes its own lot or uniquely named entity and compares state before and after
    within itself, so what earlier cases wrote cannot change its verdict. Tests that need an
    empty ledger use the function-scoped `client`/`demo` fixtures instead."""
    if template.backend == "postgresql":
        name = f"apotheca_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template.location}"')
        template.clones.append(name)
        url = _sa_url(_pg_dsn(name))
    else:
        path = tmp_path_factory.mktemp("access") / "shared.db"
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


_TOKENS: dict[tuple[str, str], str] = {}


@pytest.fixture
def login(env: Env, backend: str) -> Login:
    """Access tokens through /auth/token, cached for the run: signing in is argon2 (~0.1 s) and a
    token only names the user id, which is the same in every clone of the backend's template."""

    async def token(username: str) -> str:
        key = (backend, username)
        if key not in _TOKENS:
            _TOKENS[key] = await token_for(env.http, username)
        return _TOKENS[key]

    return token


# --- stock mutations -----------------------------------------------------------------------------

PAYLOAD = (
    "replayed movements { kind quantity balanceAfter location { code } } "
    "errors { code field message }"
)

# mutation -> (input type, change to the balance, extra input fields)
STOCK_MUTATIONS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "receiveStock": ("ReceiveStockInput", +4, {"reference": "PO-1"}),
    "dispenseStock": ("DispenseStockInput", -3, {"patientReference": "ENC-1"}),
    "returnStock": ("ReturnStockInput", +2, {"reason": "patient brought it back"}),
    "adjustStock": ("AdjustStockInput", -1, {"reason": "count correction"}),
    "disposeStock": ("DisposeStockInput", -2, {"reason": "DAMAGED", "note": "dropped"}),
}


def stock_document(mutation: str) -> str:
    input_type = STOCK_MUTATIONS[mutation][0]
    return f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ {PAYLOAD} }} }}"


def stock_variables(demo: Demo, mutation: str, location: str, lot_id: int) -> dict[str, Any]:
    """Inputs for one movement of `lot_id` at `location`; ADJUST carries its sign."""
    _, delta, extra = STOCK_MUTATIONS[mutation]
    quantity = delta if mutation == "adjustStock" else abs(delta)
    return {
        "input": {
            "location": gid("Location", demo.locations[location]),
            "lot": gid("Lot", lot_id),
            "quantity": quantity,
            "idempotencyKey": uuid.uuid4().hex,
            **extra,
        }
    }


async def stock_call(
    client: httpx.AsyncClient,
    demo: Demo,
    mutation: str,
    location: str,
    lot_id: int,
    token: str | None,
) -> dict[str, Any]:
    variables = stock_variables(demo, mutation, location, lot_id)
    return await gql(client, stock_document(mutation), variables, token)


def payload_of(result: dict[str, Any], field: str) -> dict[str, Any]:
    """The mutation's payload; a top-level `errors` would mean a crash or a masked failure."""
    assert "errors" not in result, result
    return dict(result["data"][field])


def field_refused(result: dict[str, Any], field: str) -> dict[str, Any]:
    """The single error of a refused top-level field, which yields no data (the field, or the
    whole `data` when the field is non-null, is null): an error, never an empty result."""
    assert (result.get("data") or {}).get(field) is None, result
    [error] = result["errors"]
    assert error["path"] == [field], error
    assert error["message"]
    return dict(error)


async def test_demo_users_have_the_roles_the_matrices_assume(env: Env, login: Login) -> None:
    """The matrices name users; this pins each user to the role the tables are about."""
    for user, role in ROLE_OF.items():
        result = await gql(env.http, "{ me { username roles } }", None, await login(user))
        assert result["data"]["me"] == {"username": user, "roles": [role]}, result


STOCK_CASES = [
    pytest.param(mutation, user, expected, id=f"{mutation}-{user}")
    for mutation, row in STOCK_MATRIX.items()
    for user, expected in row.items()
]


@pytest.mark.parametrize(("mutation", "user", "expected"), STOCK_CASES)
async def test_stock_mutation_access_matrix(
    env: Env, login: Login, mutation: str, user: str, expected: str
) -> None:
    """Each role may move stock only as its permissions say, inside its own scope."""
    client, demo = env.http, env.demo
    location = HOME[user]
    lot_id = await receive(demo, location, 10)
    before = await row_counts(demo.services)

    result = await stock_call(client, demo, mutation, location, lot_id, await login(user))
    payload = payload_of(result, mutation)
    balance = await balance_of(demo.services, demo.locations[location], lot_id)

    if expected == OK:
        delta = STOCK_MUTATIONS[mutation][1]
        assert payload["errors"] == []
        [movement] = payload["movements"]
        assert movement["quantity"] == delta
        assert movement["balanceAfter"] == 10 + delta
        assert movement["location"]["code"] == location
        assert balance == 10 + delta
        after = await row_counts(demo.services)
        for table in ("movements", "audit_events", "idempotency_records"):
            assert after[table] == before[table] + 1, table
    else:
        assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"], payload
        assert payload["errors"][0]["message"]
        assert payload["movements"] == []
        assert balance == 10
        assert await row_counts(demo.services) == before


@pytest.mark.parametrize(
    ("user", "mutation", "location"),
    [
        pytest.param("nurse", "dispenseStock", "WARD-B", id="nurse-other-ward"),
        pytest.param("nurse", "disposeStock", "HOSP-CP", id="nurse-parent-of-her-ward"),
        pytest.param("nurse.b", "returnStock", "WARD-A", id="nurse.b-ward-a"),
        pytest.param("warehouse", "receiveStock", "WARD-A", id="warehouse-ward"),
        pytest.param("warehouse", "adjustStock", "HOSP-CP", id="warehouse-pharmacy"),
        pytest.param("pharmacist", "dispenseStock", "PHARM-01", id="pharmacist-other-org"),
    ],
)
async def test_a_permitted_role_outside_its_scope_is_forbidden(
    env: Env, login: Login, user: str, mutation: str, location: str
) -> None:
    """The role allows the movement, the location does not: FORBIDDEN naming `location`."""
    client, demo = env.http, env.demo
    lot_id = await receive(demo, location, 10)
    before = await row_counts(demo.services)
    result = await stock_call(client, demo, mutation, location, lot_id, await login(user))
    payload = payload_of(result, mutation)
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("FORBIDDEN", "location")]
    assert await balance_of(demo.services, demo.locations[location], lot_id) == 10
    assert await row_counts(demo.services) == before


async def test_nurse_dispensing_in_another_ward_is_forbidden(env: Env, login: Login) -> None:
    """The brief's own case: nurse (WARD-A) at WARD-B, by product (FEFO) as a ward tablet does."""
    client, demo = env.http, env.demo
    lot_id = await receive(demo, "WARD-B", 10)
    before = await row_counts(demo.services)
    variables = {
        "input": {
            "location": gid("Location", demo.locations["WARD-B"]),
            "product": gid("Product", await first_product_id(demo.services)),
            "quantity": 1,
            "idempotencyKey": uuid.uuid4().hex,
        }
    }
    result = await gql(client, stock_document("dispenseStock"), variables, await login("nurse"))
    payload = payload_of(result, "dispenseStock")
    assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"]
    assert await balance_of(demo.services, demo.locations["WARD-B"], lot_id) == 10
    assert await row_counts(demo.services) == before


STOCK_LEVELS = """
query($location: ID) {
  stockLevels(first: 100, location: $location) {
    edges { node { id quantity location { code } lot { id } } }
  }
}"""

MOVEMENTS = """
query($location: ID) {
  movements(first: 100, location: $location) { edges { node { id location { code } } } }
}"""


@pytest.mark.parametrize("query", ["stockLevels", "movements"])
async def test_nurse_asking_for_another_ward_gets_forbidden_not_an_empty_list(
    env: Env, login: Login, query: str
) -> None:
    """Stock exists at WARD-B; hiding it behind an empty list would be a silent lie."""
    client, demo = env.http, env.demo
    await receive(demo, "WARD-B", 10)
    document = STOCK_LEVELS if query == "stockLevels" else MOVEMENTS
    variables = {"location": gid("Location", demo.locations["WARD-B"])}
    result = await gql(client, document, variables, await login("nurse"))
    assert field_refused(result, query)["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("query", ["stockLevels", "movements"])
async def test_nurse_without_a_location_reads_only_her_ward(
    client: httpx.AsyncClient, demo: Demo, login: Login, query: str
) -> None:
    """Without a location filter a scoped user gets her scope, not everything."""
    mine = await receive(demo, "WARD-A", 5)
    for other in ("WARD-B", "WARD-C", "HOSP-CP", "HOSP-WH", "PHARM-01"):
        await receive(demo, other, 7)
    document = STOCK_LEVELS if query == "stockLevels" else MOVEMENTS
    result = await gql(client, document, None, await login("nurse"))
    assert "errors" not in result, result
    nodes = [e["node"] for e in result["data"][query]["edges"]]
    assert len(nodes) == 1
    assert nodes[0]["location"]["code"] == "WARD-A"
    if query == "stockLevels":
        assert nodes[0]["lot"]["id"] == gid("Lot", mine)
        assert nodes[0]["quantity"] == 5


# --- network, user and catalogue administration ---------------------------------------------------

ADMIN_SELECTIONS = {
    "createOrganisation": ("CreateOrganisationInput", "organisation { id name }"),
    "updateOrganisation": ("UpdateOrganisationInput", "organisation { id kind }"),
    "createLocation": ("CreateLocationInput", "location { id code }"),
    "updateLocation": ("UpdateLocationInput", "location { id name }"),
    "createUser": ("CreateUserInput", "user { id username }"),
    "updateUser": ("UpdateUserInput", "user { id fullName }"),
    "createProduct": ("ProductInput", "product { id name }"),
}


def _product_input(suffix: str) -> dict[str, Any]:
    return {
        "name": f"Testamol {suffix}",
        "strength": "500 mg",
        "dosageForm": "tablet",
        "unit": "pack of 20",
        "approvalNumber": f"AP-{suffix}",
    }


async def admin_call(demo: Demo, mutation: str) -> tuple[str, dict[str, Any], str]:
    """(document, variables, entity field) for a valid call of `mutation` on demo data."""
    suffix = uuid.uuid4().hex[:8].upper()
    hospital = next(i for n, i in demo.orgs.items() if "Hospital" in n)
    wholesaler = next(i for n, i in demo.orgs.items() if "Wholesale" in n)
    if mutation == "updateProduct":
        product = await first_product_id(demo.services)
        document = (
            "mutation($input: UpdateProductInput!) { updateProduct(input: $input) "
            "{ product { id name } errors { code field message } } }"
        )
        variables = {"input": {"id": gid("Product", product), **_product_input(suffix)}}
        return document, variables, "product"
    inputs: dict[str, dict[str, Any]] = {
        "createOrganisation": {"name": f"Org {suffix}", "kind": "SUPPLIER"},
        "updateOrganisation": {"id": gid("Organisation", wholesaler), "kind": "SUPPLIER"},
        "createLocation": {
            "organisation": gid("Organisation", hospital),
            "code": f"WARD-{suffix}",
            "name": "Ward X",
            "kind": "WARD",
            "parent": gid("Location", demo.locations["HOSP-CP"]),
        },
        "updateLocation": {
            "id": gid("Location", demo.locations["WARD-C"]),
            "name": f"Ward C {suffix}",
        },
        "createUser": {
            "username": f"user{suffix.lower()}",
            "fullName": "New Person",
            "password": "long-enough-password",
            "roles": ["NURSE"],
            "organisation": gid("Organisation", hospital),
            "locations": [gid("Location", demo.locations["WARD-C"])],
        },
        "updateUser": {"id": gid("User", demo.users["nurse.b"]), "fullName": f"Nils {suffix}"},
        "createProduct": _product_input(suffix),
    }
    input_type, selection = ADMIN_SELECTIONS[mutation]
    document = (
        f"mutation($input: {input_type}!) {{ {mutation}(input: $input) "
        f"{{ {selection} errors {{ code field message }} }} }}"
    )
    return document, {"input": inputs[mutation]}, selection.split()[0]


async def world(demo: Demo) -> dict[str, Any]:
    """Everything an administrative mutation could write, to prove a refusal wrote nothing."""
    state: dict[str, Any] = dict(await row_counts(demo.services))
    async with demo.services.db.read() as session:
        for model in (ProductGtin, UserRole, UserLocation):
            state[model.__tablename__] = (
                await session.execute(select(func.count()).select_from(model))
            ).scalar_one()
        state["organisations"] = (
            await session.execute(
                select(Organisation.id, Organisation.name, Organisation.kind).order_by("id")
            )
        ).all()
        state["locations"] = (
            await session.execute(select(Location.id, Location.code, Location.name).order_by("id"))
        ).all()
        state["users"] = (
            await session.execute(select(User.id, User.username, User.full_name).order_by("id"))
        ).all()
        state["products"] = (
            await session.execute(
                select(Product.id, Product.name, Product.approval_number).order_by("id")
            )
        ).all()
    return state


ADMIN_CASES = [
    pytest.param(mutation, user, OK if user in allowed else NO, id=f"{mutation}-{user}")
    for mutation, allowed in ADMIN_MATRIX.items()
    for user in USERS
]


@pytest.mark.parametrize(("mutation", "user", "expected"), ADMIN_CASES)
async def test_administration_access_matrix(
    env: Env, login: Login, mutation: str, user: str, expected: str
) -> None:
    """Only ADMIN manages the network and users; ADMIN and PHARMACIST manage the catalogue."""
    client, demo = env.http, env.demo
    document, variables, entity = await admin_call(demo, mutation)
    before = await world(demo)
    payload = payload_of(await gql(client, document, variables, await login(user)), mutation)
    after = await world(demo)
    if expected == OK:
        assert payload["errors"] == []
        assert payload[entity]["id"]
        assert after["audit_events"] == before["audit_events"] + 1
        assert after != {**before, "audit_events": after["audit_events"]}
    else:
        assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"], payload
        assert payload[entity] is None
        assert after == before


RENAME = (
    "mutation($input: {type}!) {{ {name}(input: $input) {{ errors {{ code field message }} }} }}"
)


@pytest.mark.parametrize(
    ("mutation", "change"),
    [
        pytest.param("updateOrganisation", {"name": "Brand New Name"}, id="organisation-name"),
        pytest.param("updateOrganisation", {"gln": "7612345000046"}, id="organisation-gln"),
        pytest.param("updateLocation", {"code": "WARD-Z"}, id="location-code"),
    ],
)
async def test_admin_can_rename_organisations_and_locations(
    client: httpx.AsyncClient, demo: Demo, login: Login, mutation: str, change: dict[str, str]
) -> None:
    """Renaming to a free name/GLN/code succeeds: the uniqueness check must not find the
    row being renamed (it used to, autoflushing the new value first: DUPLICATE every time)."""
    if mutation == "updateOrganisation":
        target = gid("Organisation", next(i for n, i in demo.orgs.items() if "Agency" in n))
        input_type = "UpdateOrganisationInput"
    else:
        target = gid("Location", demo.locations["WARD-C"])
        input_type = "UpdateLocationInput"
    document = RENAME.format(type=input_type, name=mutation)
    variables = {"input": {"id": target, **change}}
    before = await row_counts(demo.services)
    payload = payload_of(await gql(client, document, variables, await login("admin")), mutation)
    assert payload["errors"] == []
    after = await row_counts(demo.services)
    assert after["audit_events"] == before["audit_events"] + 1


# --- reads ---------------------------------------------------------------------------------------

READ_CASES = [
    pytest.param(query, user, OK if user in allowed else NO, id=f"{query}-{user}")
    for query, allowed in READ_MATRIX.items()
    for user in USERS
]


@pytest.mark.parametrize(("query", "user", "expected"), READ_CASES)
async def test_read_access_matrix(
    env: Env, login: Login, query: str, user: str, expected: str
) -> None:
    """A refused read is a FORBIDDEN error on the field, not an empty connection."""
    client, demo = env.http, env.demo
    await receive(demo, HOME[user], 3)
    result = await gql(client, READ_QUERIES[query], None, await login(user))
    if expected == OK:
        assert "errors" not in result, result
        assert isinstance(result["data"][query]["edges"], list)
    else:
        assert field_refused(result, query)["extensions"]["code"] == "FORBIDDEN"


async def test_auditor_reads_stock_everywhere_and_the_audit_trail(
    client: httpx.AsyncClient, demo: Demo, login: Login
) -> None:
    """An auditor is not confined to an organisation: every location, every event."""
    sites = ["MFG-01", "WHS-DC", "HOSP-WH", "HOSP-CP", "WARD-A", "WARD-B", "PHARM-01"]
    for site in sites:
        await receive(demo, site, 3)
    token = await login("auditor")
    result = await gql(client, STOCK_LEVELS, None, token)
    assert "errors" not in result, result
    codes = sorted(e["node"]["location"]["code"] for e in result["data"]["stockLevels"]["edges"])
    assert codes == sorted(sites)
    for site in sites:
        variables = {"location": gid("Location", demo.locations[site])}
        one = await gql(client, STOCK_LEVELS, variables, token)
        assert "errors" not in one, one
        assert [e["node"]["location"]["code"] for e in one["data"]["stockLevels"]["edges"]] == [
            site
        ]
    trail = await gql(
        client,
        '{ auditTrail(first: 50, action: "stock.receive") { edges { node { action } } } }',
        None,
        token,
    )
    assert "errors" not in trail, trail
    assert len(trail["data"]["auditTrail"]["edges"]) == len(sites)


async def test_auditor_every_mutation_is_refused(env: Env, login: Login) -> None:
    """An auditor reads everything and writes nothing: all thirteen mutations, one database."""
    client, demo = env.http, env.demo
    token = await login("auditor")
    lot_id = await receive(demo, "WARD-A", 10)
    before = await world(demo)
    for mutation in STOCK_MUTATIONS:
        payload = payload_of(
            await stock_call(client, demo, mutation, "WARD-A", lot_id, token), mutation
        )
        assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"], (mutation, payload)
    for mutation in ADMIN_MATRIX:
        document, variables, _ = await admin_call(demo, mutation)
        payload = payload_of(await gql(client, document, variables, token), mutation)
        assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"], (mutation, payload)
    assert await world(demo) == before


# --- node(id:) ----------------------------------------------------------------------------------


async def _node_ids(client: httpx.AsyncClient, token: str, location_id: int) -> dict[str, str]:
    """Global ids of a StockLevel and a Movement at a location, as an admin sees them."""
    variables = {"location": gid("Location", location_id)}
    levels = await gql(client, STOCK_LEVELS, variables, token)
    movements = await gql(client, MOVEMENTS, variables, token)
    return {
        "StockLevel": levels["data"]["stockLevels"]["edges"][0]["node"]["id"],
        "Movement": movements["data"]["movements"]["edges"][0]["node"]["id"],
    }


NODE = "query($id: ID!) { node(id: $id) { id __typename } }"


@pytest.mark.parametrize("type_name", ["StockLevel", "Movement"])
async def test_node_outside_a_nurses_scope_is_forbidden(
    env: Env, login: Login, type_name: str
) -> None:
    """Relay's node() is a side door: it must apply the same scope as the connections."""
    client, demo = env.http, env.demo
    await receive(demo, "WARD-A", 4)
    await receive(demo, "WARD-B", 4)
    admin = await login("admin")
    inside = await _node_ids(client, admin, demo.locations["WARD-A"])
    outside = await _node_ids(client, admin, demo.locations["WARD-B"])
    nurse = await login("nurse")

    own = await gql(client, NODE, {"id": inside[type_name]}, nurse)
    assert "errors" not in own, own
    assert own["data"]["node"] == {"id": inside[type_name], "__typename": type_name}

    other = await gql(client, NODE, {"id": outside[type_name]}, nurse)
    assert field_refused(other, "node")["extensions"]["code"] == "FORBIDDEN"


async def test_node_of_stock_is_forbidden_to_a_supplier(env: Env, login: Login) -> None:
    """A supplier has no stock read at all, even in its own warehouse."""
    client, demo = env.http, env.demo
    await receive(demo, "WHS-DC", 4)
    ids = await _node_ids(client, await login("admin"), demo.locations["WHS-DC"])
    supplier = await login("supplier")
    for type_name in ("StockLevel", "Movement"):
        result = await gql(client, NODE, {"id": ids[type_name]}, supplier)
        assert field_refused(result, "node")["extensions"]["code"] == "FORBIDDEN"


async def test_node_of_another_user_is_admin_only(env: Env, login: Login) -> None:
    """Anyone may fetch their own User node; other people's are for administrators."""
    client, demo = env.http, env.demo
    nurse = await login("nurse")
    own = await gql(client, NODE, {"id": gid("User", demo.users["nurse"])}, nurse)
    assert "errors" not in own, own
    other = await gql(client, NODE, {"id": gid("User", demo.users["admin"])}, nurse)
    assert field_refused(other, "node")["extensions"]["code"] == "FORBIDDEN"
    admin = await gql(client, NODE, {"id": gid("User", demo.users["nurse"])}, await login("admin"))
    assert admin["data"]["node"]["__typename"] == "User"


# --- authentication ----------------------------------------------------------------------------


async def _expect_unauthenticated_read(
    client: httpx.AsyncClient, query: str, headers: dict[str, str]
) -> None:
    """`query` selects one top-level field, which must be refused as UNAUTHENTICATED."""
    response = await client.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    field = query.strip("{ ").split("(")[0].split(" ")[0]
    assert field_refused(response.json(), field)["extensions"]["code"] == "UNAUTHENTICATED"


async def test_no_token_is_unauthenticated(env: Env) -> None:
    """Anonymous callers get UNAUTHENTICATED, for queries and for every mutation alike."""
    client, demo = env.http, env.demo
    for query in ("{ me { username } }", READ_QUERIES["stockLevels"], READ_QUERIES["users"]):
        await _expect_unauthenticated_read(client, query, {})
    lot_id = await receive(demo, "WARD-A", 10)
    before = await world(demo)
    for mutation in STOCK_MUTATIONS:
        payload = payload_of(
            await stock_call(client, demo, mutation, "WARD-A", lot_id, None), mutation
        )
        assert [e["code"] for e in payload["errors"]] == ["UNAUTHENTICATED"], (mutation, payload)
    for mutation in ADMIN_MATRIX:
        document, variables, _ = await admin_call(demo, mutation)
        payload = payload_of(await gql(client, document, variables), mutation)
        assert [e["code"] for e in payload["errors"]] == ["UNAUTHENTICATED"], (mutation, payload)
    assert await world(demo) == before


def _forged_tokens(demo: Demo) -> dict[str, str]:
    admin_id = demo.users["admin"]
    roles = frozenset({Role.ADMIN})
    other_key = TokenService(
        "another-secret-key-long-enough-for-hs256-abcdef", timedelta(1), timedelta(1)
    )
    expired = TokenService(TEST_SECRET, timedelta(minutes=-5), timedelta(1))
    return {
        "garbage": "Bearer garbage",
        "empty bearer": "Bearer ",
        "basic scheme": "Basic YWRtaW46YXBvdGhlY2EtZGVtbw==",
        "other signing key": f"Bearer {other_key.issue_access_token(admin_id, roles)}",
        "expired": f"Bearer {expired.issue_access_token(admin_id, roles)}",
        "unknown user": "Bearer "
        + TokenService(TEST_SECRET, timedelta(1), timedelta(1)).issue_access_token(999999, roles),
    }


@pytest.mark.parametrize(
    "kind",
    ["garbage", "empty bearer", "basic scheme", "other signing key", "expired", "unknown user"],
)
async def test_bad_credentials_are_unauthenticated(env: Env, kind: str) -> None:
    """A bad token is refused as UNAUTHENTICATED, never treated as anonymous-but-fine or a crash."""
    client, demo = env.http, env.demo
    headers = {"Authorization": _forged_tokens(demo)[kind]}
    await _expect_unauthenticated_read(client, "{ me { username } }", headers)
    lot_id = await receive(demo, "WARD-A", 10)
    before = await row_counts(demo.services)
    response = await client.post(
        "/graphql",
        json={
            "query": stock_document("dispenseStock"),
            "variables": stock_variables(demo, "dispenseStock", "WARD-A", lot_id),
        },
        headers=headers,
    )
    payload = payload_of(response.json(), "dispenseStock")
    assert [e["code"] for e in payload["errors"]] == ["UNAUTHENTICATED"]
    assert await row_counts(demo.services) == before


async def test_a_disabled_users_token_stops_working_at_once(
    client: httpx.AsyncClient, demo: Demo, login: Login
) -> None:
    """The principal is loaded per request, so disabling an account needs no token expiry."""
    token = await token_for(client, "nurse.b")
    assert "errors" not in await gql(client, "{ me { username } }", None, token)
    disable = (
        "mutation($input: UpdateUserInput!) { updateUser(input: $input) "
        "{ errors { code field message } } }"
    )
    variables = {"input": {"id": gid("User", demo.users["nurse.b"]), "active": False}}
    result = await gql(client, disable, variables, await login("admin"))
    assert payload_of(result, "updateUser")["errors"] == []
    await _expect_unauthenticated_read(
        client, "{ me { username } }", {"Authorization": f"Bearer {token}"}
    )
