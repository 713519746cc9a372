"""Administration over GraphQL as the admin: organisations, locations, products and users.

Every refusal must come back as a typed error naming the field, and every successful admin
mutation must leave exactly one audit event with its before/after, so the trail can be trusted.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from server.core.gs1 import gtin_check_digit
from server.demo import DEMO_PASSWORD
from server.inventory.models import MovementKind
from server.inventory.service import MovementRequest, NewLot
from tests.conftest import Demo, first_product_id, gid, gql, row_counts, token_for

ORG_FIELDS = "organisation { id name kind gln } errors { code field message }"
LOC_FIELDS = "location { id code name kind parent { code } } errors { code field message }"
PRODUCT_FIELDS = "product { id name approvalNumber gtins } errors { code field message }"
USER_FIELDS = (
    "user { id username active roles locations { code } organisation { name } } "
    "errors { code field message }"
)

CREATE_ORG = f"""
mutation($input: CreateOrganisationInput!) {{
  createOrganisation(input: $input) {{ {ORG_FIELDS} }}
}}
"""
UPDATE_ORG = f"""
mutation($input: UpdateOrganisationInput!) {{
  updateOrganisation(input: $input) {{ {ORG_FIELDS} }}
}}
"""
CREATE_LOC = f"""
mutation($input: CreateLocationInput!) {{ createLocation(input: $input) {{ {LOC_FIELDS} }} }}
"""
UPDATE_LOC = f"""
mutation($input: UpdateLocationInput!) {{ updateLocation(input: $input) {{ {LOC_FIELDS} }} }}
"""
CREATE_PRODUCT = f"""
mutation($input: ProductInput!) {{ createProduct(input: $input) {{ {PRODUCT_FIELDS} }} }}
"""
UPDATE_PRODUCT = f"""
mutation($input: UpdateProductInput!) {{
  updateProduct(input: $input) {{ {PRODUCT_FIELDS} }}
}}
"""
CREATE_USER = f"""
mutation($input: CreateUserInput!) {{ createUser(input: $input) {{ {USER_FIELDS} }} }}
"""
UPDATE_USER = f"""
mutation($input: UpdateUserInput!) {{ updateUser(input: $input) {{ {USER_FIELDS} }} }}
"""
AUDIT_TRAIL = """
query($type: String!) {
  auditTrail(first: 10, entityType: $type) {
    edges { node { seq action entityType entityId actorName before after } }
  }
}
"""


def gln(body12: str) -> str:
    """A valid GLN from a 12-digit body (GLNs use the GTIN check digit)."""
    return body12 + gtin_check_digit(body12)


def gtin13(body12: str) -> str:
    return body12 + gtin_check_digit(body12)


def gtin14(body13: str) -> str:
    return body13 + gtin_check_digit(body13)


def wrong_digit(code: str) -> str:
    """The same code with a wrong last digit."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


async def admin_token(client: httpx.AsyncClient) -> str:
    return await token_for(client, "admin")


async def mutate(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any], name: str
) -> dict[str, Any]:
    """Run a mutation and return its payload; GraphQL-level errors fail the test loudly."""
    result = await gql(client, query, variables, token)
    assert "errors" not in result, result
    return dict(result["data"][name])


def single_error(payload: dict[str, Any]) -> dict[str, Any]:
    assert len(payload["errors"]) == 1, payload
    return dict(payload["errors"][0])


async def latest_audit(
    client: httpx.AsyncClient, token: str, entity_type: str
) -> list[dict[str, Any]]:
    """Newest-first audit events of one entity type."""
    result = await gql(client, AUDIT_TRAIL, {"type": entity_type}, token)
    assert "errors" not in result, result
    return [e["node"] for e in result["data"]["auditTrail"]["edges"]]


def pk(global_id: str) -> str:
    """The primary key inside a Relay global id, as the audit trail stores it."""
    from strawberry.relay import from_base64

    return from_base64(global_id)[1]


async def audit_count(demo: Demo) -> int:
    return (await row_counts(demo.services))["audit_events"]


# --- organisations -------------------------------------------------------------------------


async def test_create_organisation_is_audited_and_refuses_duplicates_and_bad_gln(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """A new organisation is stored and audited once; a taken name or a bad GLN is refused."""
    token = await admin_token(client)
    before = await audit_count(demo)
    new_gln = gln("761234500010")
    payload = await mutate(
        client,
        token,
        CREATE_ORG,
        {"input": {"name": "Bergklinik", "kind": "HOSPITAL", "gln": new_gln}},
        "createOrganisation",
    )
    assert payload["errors"] == []
    org = payload["organisation"]
    assert (org["name"], org["kind"], org["gln"]) == ("Bergklinik", "HOSPITAL", new_gln)
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Organisation"))[0]
    assert event["action"] == "organisation.create"
    assert event["entityId"] == pk(org["id"])
    assert event["actorName"] == "admin"
    assert event["before"] is None
    assert event["after"] == {"name": "Bergklinik", "kind": "HOSPITAL", "gln": new_gln}

    duplicate = await mutate(
        client,
        token,
        CREATE_ORG,
        {"input": {"name": "MedDistri Wholesale", "kind": "WHOLESALER"}},
        "createOrganisation",
    )
    assert duplicate["organisation"] is None
    error = single_error(duplicate)
    assert (error["code"], error["field"]) == ("DUPLICATE", "name")

    bad = await mutate(
        client,
        token,
        CREATE_ORG,
        {"input": {"name": "Talklinik", "kind": "HOSPITAL", "gln": wrong_digit(new_gln)}},
        "createOrganisation",
    )
    assert bad["organisation"] is None
    error = single_error(bad)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "gln")
    assert await audit_count(demo) == before + 1, "a refused mutation wrote an audit event"


async def test_update_organisation_kind_is_audited_with_before_and_after(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """An update records both sides, so the trail shows what changed."""
    token = await admin_token(client)
    org_id = gid("Organisation", demo.orgs["Lindenhof Pharmacy"])
    before = await audit_count(demo)
    payload = await mutate(
        client,
        token,
        UPDATE_ORG,
        {"input": {"id": org_id, "kind": "SUPPLIER"}},
        "updateOrganisation",
    )
    assert payload["errors"] == []
    assert payload["organisation"]["kind"] == "SUPPLIER"
    assert payload["organisation"]["name"] == "Lindenhof Pharmacy"
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Organisation"))[0]
    assert event["action"] == "organisation.update"
    assert event["entityId"] == str(demo.orgs["Lindenhof Pharmacy"])
    assert event["before"]["kind"] == "PHARMACY"
    assert event["after"]["kind"] == "SUPPLIER"
    assert event["before"]["name"] == event["after"]["name"] == "Lindenhof Pharmacy"


async def test_update_organisation_rename_and_new_gln(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """Renaming an organisation (or giving it a new GLN) to a free value must succeed."""
    token = await admin_token(client)
    org_id = gid("Organisation", demo.orgs["Lindenhof Pharmacy"])
    new_gln = gln("761234500020")
    payload = await mutate(
        client,
        token,
        UPDATE_ORG,
        {"input": {"id": org_id, "name": "Lindenhof Apotheke", "gln": new_gln}},
        "updateOrganisation",
    )
    assert payload["errors"] == []
    assert payload["organisation"]["name"] == "Lindenhof Apotheke"
    assert payload["organisation"]["gln"] == new_gln


async def test_update_organisation_to_taken_name_is_duplicate(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """Clashing with another organisation's name is an expected refusal, not a crash."""
    token = await admin_token(client)
    org_id = gid("Organisation", demo.orgs["Lindenhof Pharmacy"])
    result = await gql(
        client, UPDATE_ORG, {"input": {"id": org_id, "name": "MedDistri Wholesale"}}, token
    )
    assert "errors" not in result, result
    error = single_error(result["data"]["updateOrganisation"])
    assert (error["code"], error["field"]) == ("DUPLICATE", "name")


# --- locations -----------------------------------------------------------------------------


async def test_create_location_under_parent_uppercases_and_refuses_bad_parents(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """Codes are normalised; a parent from another organisation or a taken code is refused."""
    token = await admin_token(client)
    hospital = gid("Organisation", demo.orgs["St. Aurelia General Hospital"])
    before = await audit_count(demo)
    payload = await mutate(
        client,
        token,
        CREATE_LOC,
        {
            "input": {
                "organisation": hospital,
                "code": " ward-d ",
                "name": "Ward D - Oncology",
                "kind": "WARD",
                "parent": gid("Location", demo.locations["HOSP-CP"]),
            }
        },
        "createLocation",
    )
    assert payload["errors"] == []
    location = payload["location"]
    assert location["code"] == "WARD-D"
    assert location["parent"] == {"code": "HOSP-CP"}
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Location"))[0]
    assert event["action"] == "location.create"
    assert event["entityId"] == pk(location["id"])
    assert event["before"] is None
    assert event["after"]["code"] == "WARD-D"
    assert event["after"]["parent_id"] == demo.locations["HOSP-CP"]

    foreign_parent = await mutate(
        client,
        token,
        CREATE_LOC,
        {
            "input": {
                "organisation": hospital,
                "code": "WARD-E",
                "name": "Ward E",
                "kind": "WARD",
                "parent": gid("Location", demo.locations["WHS-DC"]),
            }
        },
        "createLocation",
    )
    assert foreign_parent["location"] is None
    error = single_error(foreign_parent)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "parent")

    duplicate = await mutate(
        client,
        token,
        CREATE_LOC,
        {
            "input": {
                "organisation": hospital,
                "code": "ward-a",
                "name": "Another ward A",
                "kind": "WARD",
            }
        },
        "createLocation",
    )
    assert duplicate["location"] is None
    error = single_error(duplicate)
    assert (error["code"], error["field"]) == ("DUPLICATE", "code")
    assert await audit_count(demo) == before + 1, "a refused mutation wrote an audit event"


async def test_update_location_refuses_cycles_and_audits_moves(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """A location cannot go under its own child; a legal move records old and new parent."""
    token = await admin_token(client)
    before = await audit_count(demo)
    cycle = await mutate(
        client,
        token,
        UPDATE_LOC,
        {
            "input": {
                "id": gid("Location", demo.locations["HOSP-CP"]),
                "parent": gid("Location", demo.locations["WARD-A"]),
            }
        },
        "updateLocation",
    )
    assert cycle["location"] is None
    error = single_error(cycle)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "parent")
    assert await audit_count(demo) == before

    moved = await mutate(
        client,
        token,
        UPDATE_LOC,
        {
            "input": {
                "id": gid("Location", demo.locations["HOSP-QA"]),
                "parent": gid("Location", demo.locations["HOSP-CP"]),
                "name": "Pharmacy quarantine",
            }
        },
        "updateLocation",
    )
    assert moved["errors"] == []
    assert moved["location"]["parent"] == {"code": "HOSP-CP"}
    assert moved["location"]["name"] == "Pharmacy quarantine"
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Location"))[0]
    assert event["action"] == "location.update"
    assert event["entityId"] == str(demo.locations["HOSP-QA"])
    assert event["before"]["parent_id"] == demo.locations["HOSP-WH"]
    assert event["after"]["parent_id"] == demo.locations["HOSP-CP"]
    assert event["before"]["name"] == "Hospital quarantine store"
    assert event["after"]["name"] == "Pharmacy quarantine"


async def test_update_location_code(client: httpx.AsyncClient, demo: Demo) -> None:
    """Changing a location's code to a free one must succeed (and be upper-cased)."""
    token = await admin_token(client)
    payload = await mutate(
        client,
        token,
        UPDATE_LOC,
        {"input": {"id": gid("Location", demo.locations["PHARM-01"]), "code": "pharm-02"}},
        "updateLocation",
    )
    assert payload["errors"] == []
    assert payload["location"]["code"] == "PHARM-02"


# --- products ------------------------------------------------------------------------------


def product_input(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Ondansetron",
        "strength": "4 mg",
        "dosageForm": "orodispersible tablet",
        "unit": "pack of 10",
        "approvalNumber": "MA-2024-09001",
        "atcCode": "a04aa01",
        "storage": "ROOM",
        "unitCost": "3.20",
        "gtins": [],
    }
    return {**base, **overrides}


async def test_create_product_normalises_gtins_and_refuses_bad_or_taken_ones(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """GTIN-13 becomes GTIN-14; a wrong check digit names the right one; reuse is DUPLICATE."""
    token = await admin_token(client)
    before = await audit_count(demo)
    thirteen = gtin13("400638133393")
    fourteen = gtin14("1400638133393")
    payload = await mutate(
        client,
        token,
        CREATE_PRODUCT,
        {"input": product_input(gtins=[thirteen, fourteen])},
        "createProduct",
    )
    assert payload["errors"] == []
    product = payload["product"]
    assert product["gtins"] == ["0" + thirteen, fourteen]
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Product"))[0]
    assert event["action"] == "product.create"
    assert event["entityId"] == pk(product["id"])
    assert event["before"] is None
    assert event["after"]["gtins"] == ["0" + thirteen, fourteen]
    assert event["after"]["atc_code"] == "A04AA01"

    bad = wrong_digit(gtin13("400638133400"))
    refused = await mutate(
        client,
        token,
        CREATE_PRODUCT,
        {"input": product_input(name="Granisetron", approvalNumber="MA-2024-09002", gtins=[bad])},
        "createProduct",
    )
    assert refused["product"] is None
    error = single_error(refused)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "gtins")
    assert f"expected {gtin_check_digit(bad[:-1])}" in error["message"]

    taken = await mutate(
        client,
        token,
        CREATE_PRODUCT,
        {
            "input": product_input(
                name="Granisetron", approvalNumber="MA-2024-09002", gtins=[thirteen]
            )
        },
        "createProduct",
    )
    assert taken["product"] is None
    error = single_error(taken)
    assert (error["code"], error["field"]) == ("DUPLICATE", "gtins")
    assert await audit_count(demo) == before + 1, "a refused mutation wrote an audit event"


async def test_update_product_replaces_gtins(client: httpx.AsyncClient, demo: Demo) -> None:
    """The GTIN list is replaced, not merged; the old code is free again; both sides audited."""
    token = await admin_token(client)
    first, second, third = gtin14("1400638133500"), gtin14("1400638133510"), gtin13("400638133520")
    created = await mutate(
        client,
        token,
        CREATE_PRODUCT,
        {"input": product_input(gtins=[first, second])},
        "createProduct",
    )
    product_id = created["product"]["id"]
    before = await audit_count(demo)
    updated = await mutate(
        client,
        token,
        UPDATE_PRODUCT,
        {"input": {"id": product_id, **product_input(gtins=[second, third], unitCost="3.50")}},
        "updateProduct",
    )
    assert updated["errors"] == []
    assert updated["product"]["gtins"] == [second, "0" + third]
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "Product"))[0]
    assert event["action"] == "product.update"
    assert event["entityId"] == pk(product_id)
    assert event["before"]["gtins"] == [first, second]
    assert event["after"]["gtins"] == [second, "0" + third]
    assert Decimal(event["before"]["unit_cost"]) == Decimal("3.20")
    assert Decimal(event["after"]["unit_cost"]) == Decimal("3.50")

    found = await gql(
        client,
        "query($g: String!) { products(first: 5, gtin: $g) { edges { node { id } } } }",
        {"g": first},
        token,
    )
    assert found["data"]["products"]["edges"] == []

    # Another product's GTIN cannot be taken over by an update.
    demo_gtin = (
        await gql(client, "{ products(first: 1) { edges { node { gtins } } } }", token=token)
    )["data"]["products"]["edges"][0]["node"]["gtins"][0]
    clash = await mutate(
        client,
        token,
        UPDATE_PRODUCT,
        {"input": {"id": product_id, **product_input(gtins=[demo_gtin])}},
        "updateProduct",
    )
    error = single_error(clash)
    assert (error["code"], error["field"]) == ("DUPLICATE", "gtins")


async def test_update_product_audit_shows_no_change_for_untouched_fields(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """An auditor diffing before/after must only see what really changed (here: the name)."""
    token = await admin_token(client)
    created = await mutate(
        client, token, CREATE_PRODUCT, {"input": product_input()}, "createProduct"
    )
    await mutate(
        client,
        token,
        UPDATE_PRODUCT,
        {"input": {"id": created["product"]["id"], **product_input(name="Ondansetron ODT")}},
        "updateProduct",
    )
    event = (await latest_audit(client, token, "Product"))[0]
    changed = {k for k in event["after"] if event["before"][k] != event["after"][k]}
    assert changed == {"name"}


# --- users ---------------------------------------------------------------------------------


ME = "{ me { username roles locations { code } } }"


async def test_create_user_with_roles_and_scope_then_sign_in(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """A created user can sign in at once and sees the roles and scope they were given."""
    token = await admin_token(client)
    before = await audit_count(demo)
    payload = await mutate(
        client,
        token,
        CREATE_USER,
        {
            "input": {
                "username": "Nina.Nurse",
                "fullName": "Nina Nurse",
                "password": "correct horse battery",
                "roles": ["NURSE", "PHARMACIST"],
                "organisation": gid("Organisation", demo.orgs["St. Aurelia General Hospital"]),
                "locations": [
                    gid("Location", demo.locations["WARD-C"]),
                    gid("Location", demo.locations["WARD-A"]),
                ],
            }
        },
        "createUser",
    )
    assert payload["errors"] == []
    user = payload["user"]
    assert user["username"] == "nina.nurse"
    assert user["active"] is True
    assert sorted(user["roles"]) == ["NURSE", "PHARMACIST"]
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "User"))[0]
    assert event["action"] == "user.create"
    assert event["entityId"] == pk(user["id"])
    assert event["before"] is None
    assert event["after"]["roles"] == ["NURSE", "PHARMACIST"]
    assert event["after"]["location_ids"] == sorted(
        [demo.locations["WARD-A"], demo.locations["WARD-C"]]
    )
    assert "password" not in str(event["after"]).lower()

    own = await token_for(client, "Nina.Nurse", "correct horse battery")
    me = await gql(client, ME, token=own)
    assert "errors" not in me, me
    assert me["data"]["me"]["username"] == "nina.nurse"
    assert sorted(me["data"]["me"]["roles"]) == ["NURSE", "PHARMACIST"]
    assert sorted(x["code"] for x in me["data"]["me"]["locations"]) == ["WARD-A", "WARD-C"]


async def test_nurse_without_locations_is_refused(client: httpx.AsyncClient, demo: Demo) -> None:
    """A nurse must be scoped to a ward; otherwise she would see the whole organisation."""
    token = await admin_token(client)
    before = await audit_count(demo)
    payload = await mutate(
        client,
        token,
        CREATE_USER,
        {
            "input": {
                "username": "unscoped",
                "fullName": "Una Scoped",
                "password": "long enough password",
                "roles": ["NURSE"],
                "organisation": gid("Organisation", demo.orgs["St. Aurelia General Hospital"]),
            }
        },
        "createUser",
    )
    assert payload["user"] is None
    error = single_error(payload)
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "locations")
    assert await audit_count(demo) == before
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "unscoped", "password": "long enough password"},
    )
    assert response.status_code == 400


async def test_disabling_a_user_ends_their_sessions(client: httpx.AsyncClient, demo: Demo) -> None:
    """A disabled account's refresh token and password both stop working at once."""
    token = await admin_token(client)
    signed_in = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "nurse.b", "password": DEMO_PASSWORD},
    )
    assert signed_in.status_code == 200, signed_in.text
    refresh = signed_in.json()["refresh_token"]
    access = signed_in.json()["access_token"]

    before = await audit_count(demo)
    payload = await mutate(
        client,
        token,
        UPDATE_USER,
        {"input": {"id": gid("User", demo.users["nurse.b"]), "active": False}},
        "updateUser",
    )
    assert payload["errors"] == []
    assert payload["user"]["active"] is False
    assert await audit_count(demo) == before + 1
    event = (await latest_audit(client, token, "User"))[0]
    assert event["action"] == "user.update"
    assert event["entityId"] == str(demo.users["nurse.b"])
    assert event["before"]["active"] is True
    assert event["after"]["active"] is False

    refreshed = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"

    again = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "nurse.b", "password": DEMO_PASSWORD},
    )
    assert again.status_code == 400, again.text
    assert again.json()["error"] == "invalid_grant"

    # The still-unexpired access token no longer opens anything either.
    me = await gql(client, ME, token=access)
    assert me.get("errors"), me


async def test_anyone_sees_who_did_it_but_only_admins_see_another_users_account(
    demo: Demo, as_user: Any
) -> None:
    """A `*By` User shows username and full name to every reader; the account's state, roles,
    scope and organisation only to the user themself and administrators."""
    produced = await demo.services.ledger.record(
        demo.principals["admin"],
        [
            MovementRequest(
                MovementKind.PRODUCE,
                demo.locations["MFG-01"],
                5,
                new_lot=NewLot(await first_product_id(demo.services), "WHO-1", date(2099, 1, 1)),
            )
        ],
        operation="t",
    )
    lot = produced.movements[0].lot_id
    recall = await (await as_user("admin")).ok(
        """mutation($lot: ID!) { recallLots(input: {lots: [$lot], reason: "test"}) {
             recall { id } errors { code field message } } }""",
        lot=gid("Lot", lot),
    )
    recall_id = recall["recall"]["id"]
    who = """query($id: ID!) { node(id: $id) { ... on Recall {
               initiatedBy { username fullName } } } }"""
    details = """query($id: ID!) { node(id: $id) { ... on Recall {
                   initiatedBy { username active roles } } } }"""
    for reader in ("nurse", "auditor", "pharmacist", "admin"):
        body = await (await as_user(reader)).raw(who, id=recall_id)
        assert body == {
            "data": {"node": {"initiatedBy": {"username": "admin", "fullName": "Ada Admin"}}}
        } | ({"extensions": body["extensions"]} if "extensions" in body else {}), reader
    mine = await (await as_user("admin")).raw(details, id=recall_id)
    assert mine["data"]["node"]["initiatedBy"] == {
        "username": "admin",
        "active": True,
        "roles": ["ADMIN"],
    }, mine
    for reader in ("nurse", "pharmacist", "auditor"):
        refused = await (await as_user(reader)).raw(details, id=recall_id)
        assert refused["data"]["node"]["initiatedBy"] is None, refused
        assert {e["extensions"]["code"] for e in refused["errors"]} == {"FORBIDDEN"}, refused
