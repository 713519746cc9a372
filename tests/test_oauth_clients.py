"""OAuth2 machine clients on both databases: a supplier's ERP gets tokens with
client_secret_basic and client_secret_post from a real server, updates its own shipment (role
∩ scopes, its organisation's locations), is refused another supplier's, and loses access the
moment it is revoked; secret rotation with its overlap window; RFC 7662 introspection and
RFC 7009 revocation; the token endpoint's errors as authlib words them; the audit naming the
client; access tokens without `exp` refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import func, select, text

from server.core import audit
from server.core.audit import AuditEvent
from server.core.errors import DomainError, Unauthenticated
from server.core.security import ISSUER, Role, TokenService
from server.inventory.models import Movement, MovementKind
from server.network.models import OAuthClient, OAuthToken, User
from server.services import Services
from tests import test_procurement
from tests.conftest import (
    ROOT,
    TEST_SECRET,
    Demo,
    LiveServer,
    gid,
    gql,
    start_server,
    token_for,
    wait_for_subscribers,
)
from tests.test_procurement import (
    ACK_PO,
    SHIPMENT_UPDATED,
    World,
    acknowledged_order,
    planned_shipment,
    second_supplier,
    wholesaler_stock,
)
from tests.wsclient import GraphQLWebSocket

world = test_procurement.world  # the procurement tests' fixture: demo users, products, orders

OVERLAP_HOURS = 0.0015  # 5.4 s: long enough to use both secrets, short enough to outwait
ERRORS = "errors { code field message }"
CREATE = f"""
mutation($input: CreateOAuthClientInput!) {{
  createOAuthClient(input: $input) {{
    client {{ id clientId name role scopes organisation {{ name }} revokedAt }}
    clientSecret {ERRORS}
  }}
}}"""
ROTATE = f"""
mutation($id: ID!) {{
  rotateOAuthClientSecret(input: {{ id: $id }}) {{
    client {{ clientId secretRotatedAt previousSecretValidUntil }} clientSecret {ERRORS}
  }}
}}"""
REVOKE = f"""
mutation($id: ID!) {{
  revokeOAuthClient(input: {{ id: $id }}) {{ client {{ clientId revokedAt }} {ERRORS} }}
}}"""
STATUS = """
mutation($shipment: ID!, $status: ShipmentStatus!) {
  updateShipmentStatus(input: { id: $shipment, status: $status }) {
    shipment { id status events { status actor { username } } } errors { code message }
  }
}"""


@pytest.fixture
def oauth_server(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A real server whose rotated secrets overlap for a few seconds only."""
    monkeypatch.setenv("APOTHECA_CLIENT_SECRET_OVERLAP_HOURS", str(OVERLAP_HOURS))
    server = start_server(database_url)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
async def https(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, as seen through TLS (authlib refuses credentials over plain HTTP)."""
    from server.app import create_app

    transport = httpx.ASGITransport(app=create_app(services.settings, services))
    async with httpx.AsyncClient(transport=transport, base_url="https://apotheca.test") as http:
        yield http


async def new_client(
    http: httpx.AsyncClient,
    admin_token: str,
    organisation_id: int,
    *,
    name: str = "MedDistri ERP",
    role: str = "SUPPLIER",
    scopes: tuple[str, ...] = ("shipments:write",),
) -> dict[str, Any]:
    body = await gql(
        http,
        CREATE,
        {
            "input": {
                "name": name,
                "organisation": gid("Organisation", organisation_id),
                "role": role,
                "scopes": list(scopes),
            }
        },
        admin_token,
    )
    payload = body["data"]["createOAuthClient"]
    assert payload["errors"] == [], payload
    return {**payload["client"], "secret": payload["clientSecret"]}


async def basic_token(
    http: httpx.AsyncClient, client_id: str, secret: str, **form: str
) -> httpx.Response:
    return await http.post(
        "/auth/token", data={"grant_type": "client_credentials", **form}, auth=(client_id, secret)
    )


async def post_token(
    http: httpx.AsyncClient, client_id: str, secret: str, **form: str
) -> httpx.Response:
    return await http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            **form,
        },
    )


async def access(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def whs(demo: Demo) -> int:
    return demo.orgs["MedDistri Wholesale"]


# --- the supplier's ERP against a real server ---------------------------------------------------


async def test_supplier_erp_updates_its_own_shipment_until_revoked(
    world: World, oauth_server: LiveServer
) -> None:
    demo = world.demo
    lot = await wholesaler_stock(world, 0, 20, "ERP-1")
    order = await acknowledged_order(world, [(0, 5, "1.00")])
    shipment = await planned_shipment(world, order, [(0, lot, 5)])
    await second_supplier(world)
    async with httpx.AsyncClient(base_url=oauth_server.url, timeout=30) as http:
        admin = await token_for(http, "admin")
        erp = await new_client(http, admin, whs(demo))
        assert erp["role"] == "SUPPLIER" and erp["scopes"] == ["shipments:write"]
        assert erp["organisation"] == {"name": "MedDistri Wholesale"}
        other = await new_client(
            http, admin, await _org(demo, "Second Supply GmbH"), name="Second Supply ERP"
        )

        # Both client authentication methods give a working token with the client's scope.
        by_basic = await basic_token(http, erp["clientId"], erp["secret"])
        assert by_basic.status_code == 200, by_basic.text
        issued = by_basic.json()
        assert issued["token_type"] == "Bearer" and issued["scope"] == "shipments:write"
        assert issued["expires_in"] == 15 * 60 and "refresh_token" not in issued
        assert by_basic.headers["cache-control"] == "no-store"
        basic = issued["access_token"]
        post = await access(await post_token(http, erp["clientId"], erp["secret"]))

        before = await _last_audit_id(demo)
        dispatched = await gql(
            http, STATUS, {"shipment": shipment["id"], "status": "DISPATCHED"}, basic
        )
        payload = dispatched["data"]["updateShipmentStatus"]
        assert payload["errors"] == [], payload
        assert payload["shipment"]["status"] == "DISPATCHED"
        account = f"client:{erp['clientId']}"
        assert payload["shipment"]["events"][-1] == {
            "status": "DISPATCHED",
            "actor": {"username": account},
        }
        # A client token opens a websocket too, and the client hears its shipment move.
        live = await GraphQLWebSocket.open(oauth_server.url, basic)
        await live.subscribe(SHIPMENT_UPDATED, {"shipment": shipment["id"]})
        await wait_for_subscribers(oauth_server.url, 1, "shipment")
        in_transit = await gql(
            http, STATUS, {"shipment": shipment["id"], "status": "IN_TRANSIT"}, post
        )
        assert in_transit["data"]["updateShipmentStatus"]["errors"] == [], in_transit
        heard = await asyncio.wait_for(live.receive(), 5)
        assert heard["type"] == "next", heard
        assert heard["payload"]["data"]["shipmentUpdated"]["status"] == "IN_TRANSIT"
        await live.close()

        # The audit names the client; the SHIP movement names its service account.
        async with demo.services.db.read() as session:
            client_pk = (
                await session.execute(
                    select(OAuthClient.id).where(OAuthClient.client_id == erp["clientId"])
                )
            ).scalar_one()
            events = (
                (await session.execute(select(AuditEvent).where(AuditEvent.id > before)))
                .scalars()
                .all()
            )
            ship = (
                await session.execute(select(Movement).where(Movement.kind == MovementKind.SHIP))
            ).scalar_one()
            account_id = (
                await session.execute(select(User.id).where(User.username == account))
            ).scalar_one()
        shipment_events = [e for e in events if e.entity_type == "Shipment"]
        assert [e.action for e in shipment_events] == ["shipment.dispatched", "shipment.in_transit"]
        assert {(e.actor_client_id, e.actor_name, e.role) for e in shipment_events} == {
            (client_pk, account, "SUPPLIER")
        }
        assert ship.actor_id == account_id and ship.quantity == -5

        # Role ∩ scopes: a SUPPLIER may acknowledge orders, but shipments:write does not open it.
        refused = await gql(http, ACK_PO, {"order": order["id"]}, basic)
        error = refused["data"]["acknowledgePurchaseOrder"]["errors"][0]
        assert error["code"] == "FORBIDDEN" and "scopes (shipments:write)" in error["message"]
        # Another supplier's ERP may not touch MedDistri's shipment.
        stranger = await access(await basic_token(http, other["clientId"], other["secret"]))
        foreign = await gql(
            http, STATUS, {"shipment": shipment["id"], "status": "DELIVERED"}, stranger
        )
        assert [e["code"] for e in foreign["data"]["updateShipmentStatus"]["errors"]] == [
            "FORBIDDEN"
        ]
        # ...and the ERP may not manage clients, whatever it asks for.
        escalate = await gql(
            http,
            CREATE,
            {
                "input": {
                    "name": "sneaky",
                    "organisation": gid("Organisation", whs(demo)),
                    "role": "SUPPLIER",
                    "scopes": ["shipments:write"],
                }
            },
            basic,
        )
        assert escalate["data"]["createOAuthClient"]["errors"][0]["code"] == "FORBIDDEN"

        # Revoked: the token it holds stops working on the next request, no new one is issued.
        revoked = await gql(http, REVOKE, {"id": erp["id"]}, admin)
        assert revoked["data"]["revokeOAuthClient"]["errors"] == [], revoked
        assert revoked["data"]["revokeOAuthClient"]["client"]["revokedAt"]
        for token in (basic, post):
            after = await gql(
                http, STATUS, {"shipment": shipment["id"], "status": "DELIVERED"}, token
            )
            codes = [e["code"] for e in after["data"]["updateShipmentStatus"]["errors"]]
            assert codes == ["UNAUTHENTICATED"], after
            me = await gql(http, "{ me { username } }", token=token)
            assert me["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", me
        refused_token = await basic_token(http, erp["clientId"], erp["secret"])
        assert refused_token.status_code == 401
        assert refused_token.json()["error"] == "invalid_client"
        again = await gql(http, REVOKE, {"id": erp["id"]}, admin)
        assert again["data"]["revokeOAuthClient"]["errors"][0]["field"] == "client"
        # The other client is untouched.
        assert (await gql(http, "{ me { username } }", token=stranger))["data"]["me"]
    integrity = await _verify(demo)
    assert integrity.ok, integrity


async def test_rotated_secret_overlaps_then_stops(demo: Demo, oauth_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=oauth_server.url, timeout=30) as http:
        admin = await token_for(http, "admin")
        erp = await new_client(http, admin, whs(demo))
        old = erp["secret"]
        body = await gql(http, ROTATE, {"id": erp["id"]}, admin)
        rotated = body["data"]["rotateOAuthClientSecret"]
        assert rotated["errors"] == [], rotated
        new = rotated["clientSecret"]
        assert new and new != old
        until = datetime.fromisoformat(rotated["client"]["previousSecretValidUntil"])
        rotated_at = datetime.fromisoformat(rotated["client"]["secretRotatedAt"])
        assert until - rotated_at == timedelta(hours=OVERLAP_HOURS)
        # Within the window both work, by either method.
        await access(await basic_token(http, erp["clientId"], old))
        await access(await post_token(http, erp["clientId"], new))
        await asyncio.sleep((until - datetime.now(UTC)).total_seconds() + 0.5)
        stale = await basic_token(http, erp["clientId"], old)
        assert stale.status_code == 401 and stale.json()["error"] == "invalid_client"
        assert (await post_token(http, erp["clientId"], old)).status_code == 401
        await access(await basic_token(http, erp["clientId"], new))


# --- introspection and revocation ---------------------------------------------------------------


async def test_introspection_and_revocation(demo: Demo, https: httpx.AsyncClient) -> None:
    admin = await token_for(https, "admin")
    erp = await new_client(https, admin, whs(demo), scopes=("shipments:write", "procurement:read"))
    other = await new_client(https, admin, whs(demo), name="MedDistri WMS")
    credentials = (erp["clientId"], erp["secret"])

    token = await access(
        await basic_token(https, *credentials, scope="procurement:read")
    )  # a narrower scope than the client holds
    response = await https.post("/auth/introspect", data={"token": token}, auth=credentials)
    assert response.status_code == 200
    info = response.json()
    assert info["active"] is True
    assert info["scope"] == "procurement:read" and info["client_id"] == erp["clientId"]
    assert info["token_type"] == "Bearer" and info["sub"] == f"client:{erp['clientId']}"
    assert 0 < info["exp"] - datetime.now(UTC).timestamp() <= 15 * 60
    # With the narrower token the client reads, but may not write.
    read = await gql(https, "{ shipments(first: 5) { edges { node { id } } } }", token=token)
    assert "errors" not in read, read
    write = await gql(https, STATUS, {"shipment": gid("Shipment", 1), "status": "DELIVERED"}, token)
    assert "FORBIDDEN" in str(write)

    async def introspect(value: str, auth: tuple[str, str] = credentials) -> dict[str, Any]:
        result = await https.post("/auth/introspect", data={"token": value}, auth=auth)
        assert result.status_code == 200, result.text
        return dict(result.json())

    # Not active: garbage, a forged or expired token, a person's token, another client's.
    expired = TokenService(TEST_SECRET, timedelta(seconds=-30), timedelta(days=1))
    forged = TokenService(
        "another-secret-entirely-0123456789-abcdefghij", timedelta(1), timedelta(1)
    )
    people = await token_for(https, "supplier")
    theirs = await access(await basic_token(https, other["clientId"], other["secret"]))
    for value in (
        "garbage",
        expired.issue_client_token(erp["clientId"], "shipments:write"),
        forged.issue_client_token(erp["clientId"], "shipments:write"),
        people,
        theirs,
    ):
        assert await introspect(value) == {"active": False}
    assert (await introspect(theirs, (other["clientId"], other["secret"])))["active"] is True
    # Introspection needs client authentication.
    anonymous = await https.post("/auth/introspect", data={"token": token})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"

    # RFC 7009: a client revokes its own token (client_secret_post here); it stops working.
    revoked = await https.post(
        "/auth/revoke",
        data={"token": token, "client_id": erp["clientId"], "client_secret": erp["secret"]},
    )
    assert revoked.status_code == 200
    assert await introspect(token) == {"active": False}
    gone = await gql(https, "{ me { username } }", token=token)
    assert gone["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # Another client's token is not this client's to revoke; unknown tokens are fine (200).
    foreign = await https.post("/auth/revoke", data={"token": theirs}, auth=credentials)
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_grant"
    assert (await introspect(theirs, (other["clientId"], other["secret"])))["active"] is True
    unknown = await https.post("/auth/revoke", data={"token": "nope"}, auth=credentials)
    assert unknown.status_code == 200
    # A fresh token of the same client still works: only the one token was revoked. Issuing it
    # also clears the records of tokens that expired over a day ago.
    async with demo.services.db.write() as session:
        client_pk = (
            await session.execute(
                select(OAuthClient.id).where(OAuthClient.client_id == erp["clientId"])
            )
        ).scalar_one()
        long_ago = datetime.now(UTC) - timedelta(days=2)
        session.add(
            OAuthToken(
                client_id=client_pk,
                jti="stale",
                scope="shipments:write",
                issued_at=long_ago,
                expires_at=long_ago + timedelta(minutes=15),
            )
        )
    fresh = await access(await basic_token(https, *credentials))
    async with demo.services.db.read() as session:
        jtis = set((await session.execute(select(OAuthToken.jti))).scalars())
    assert "stale" not in jtis and len(jtis) == 3  # token, theirs and fresh
    assert (await gql(https, "{ me { username } }", token=fresh))["data"]["me"] == {
        "username": f"client:{erp['clientId']}"
    }


async def test_token_endpoint_errors(demo: Demo, https: httpx.AsyncClient, client) -> None:
    admin = await token_for(https, "admin")
    erp = await new_client(https, admin, whs(demo))
    client_id, secret = erp["clientId"], erp["secret"]

    wrong = await basic_token(https, client_id, secret + "x")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert "www-authenticate" in wrong.headers
    wrong_post = await post_token(https, client_id, "not-the-secret")
    assert wrong_post.status_code == 401 and wrong_post.json()["error"] == "invalid_client"
    unknown = await basic_token(https, "no-such-client", secret)
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    anonymous = await https.post("/auth/token", data={"grant_type": "client_credentials"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"

    beyond = await basic_token(https, client_id, secret, scope="shipments:write audit:read")
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_scope"
    assert "audit:read" in beyond.json()["error_description"]
    made_up = await basic_token(https, client_id, secret, scope="everything")
    assert made_up.status_code == 400 and made_up.json()["error"] == "invalid_scope"

    for grant in ("authorization_code", "urn:ietf:params:oauth:grant-type:device_code", ""):
        response = await https.post(
            "/auth/token", data={"grant_type": grant}, auth=(client_id, secret)
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"
    # Client credentials over plain HTTP to a non-loopback host: refused before anything else.
    plain = await basic_token(client, client_id, secret)
    assert plain.status_code == 400 and plain.json()["error"] == "insecure_transport"
    # Nothing of the refusals was issued.
    async with demo.services.db.read() as session:
        issued = (await session.execute(select(func.count()).select_from(OAuthToken))).scalar()
    assert issued == 0
    # People's grants at the same endpoint are as they were.
    assert (await token_for(client, "nurse")).count(".") == 2


# --- administration, service accounts, the audit -----------------------------------------------


async def test_creating_clients_refuses_what_the_role_cannot_use(demo: Demo) -> None:
    clients, admin = demo.services.clients, demo.principals["admin"]
    before = await _counts(demo)
    attempts: list[tuple[dict[str, Any], str]] = [
        ({"role": Role.SUPPLIER, "scopes": ["audit:read"]}, "scopes"),
        ({"role": Role.SUPPLIER, "scopes": ["shipments:write", "root"]}, "scopes"),
        ({"role": Role.SUPPLIER, "scopes": []}, "scopes"),
        ({"role": Role.ADMIN, "scopes": ["stock:read"]}, "role"),
        ({"role": Role.NURSE, "scopes": ["stock:read"]}, "role"),
        ({"role": Role.SUPPLIER, "scopes": ["shipments:write"], "name": " "}, "name"),
        ({"role": Role.SUPPLIER, "scopes": ["shipments:write"], "organisation_id": 999999}, None),
    ]
    for overrides, field in attempts:
        arguments: dict[str, Any] = {
            "name": "ERP",
            "organisation_id": whs(demo),
            **overrides,
        }
        with pytest.raises(DomainError) as refused:
            await clients.create_client(admin, **arguments)
        if field:
            assert refused.value.field == field, (overrides, refused.value.message)
    with pytest.raises(DomainError) as forbidden:
        await clients.create_client(
            demo.principals["pharmacist"],
            name="ERP",
            organisation_id=whs(demo),
            role=Role.SUPPLIER,
            scopes=["shipments:write"],
        )
    assert forbidden.value.code.value == "FORBIDDEN"
    assert await _counts(demo) == before

    made = await clients.create_client(
        admin,
        name="Agency inspector",
        organisation_id=demo.orgs["Regional Medicines Agency"],
        role=Role.REGULATOR,
        scopes=["supervision:read", "recalls:write"],
    )
    with pytest.raises(DomainError) as duplicate:
        await clients.create_client(
            admin,
            name="Agency inspector",
            organisation_id=whs(demo),
            role=Role.SUPPLIER,
            scopes=["shipments:write"],
        )
    assert duplicate.value.code.value == "DUPLICATE"
    # The secret is kept only as a hash.
    async with demo.services.db.read() as session:
        row = await session.get(OAuthClient, made.client.id)
    assert row is not None and made.secret not in (row.secret_hash, row.previous_secret_hash)
    assert len(row.secret_hash) == 64


async def test_client_principal_is_role_and_scope_and_its_organisation(
    demo: Demo, https: httpx.AsyncClient
) -> None:
    """A regulator's client sees every location (a global role); a supplier's only its own."""
    admin = await token_for(https, "admin")
    agency = await new_client(
        https,
        admin,
        demo.orgs["Regional Medicines Agency"],
        name="Agency",
        role="REGULATOR",
        scopes=("supervision:read",),
    )
    erp = await new_client(https, admin, whs(demo))
    services = demo.services
    principals = {}
    for made in (agency, erp):
        token = await access(await basic_token(https, made["clientId"], made["secret"]))
        principals[made["name"]] = await services.network.authenticate(token)
    regulator, supplier = principals["Agency"], principals["MedDistri ERP"]
    assert regulator.location_ids is None and regulator.scopes == {"supervision:read"}
    assert supplier.location_ids == {demo.locations["WHS-DC"]}
    assert supplier.organisation_id == whs(demo) and supplier.client_id is not None
    from server.core.security import Permission

    assert regulator.can(Permission.TRACE_READ)
    assert not regulator.can(Permission.RECALL_MANAGE)  # the role may, the scope does not
    assert supplier.can(Permission.SHIPMENT_SEND)
    assert not supplier.can(Permission.SHIPMENT_RECEIVE)  # the scope may, the role does not
    assert supplier.granted(Permission.STOCK_ADJUST).can(Permission.STOCK_ADJUST)


async def test_service_accounts_are_not_people(demo: Demo, https: httpx.AsyncClient) -> None:
    admin = await token_for(https, "admin")
    erp = await new_client(https, admin, whs(demo))
    account = f"client:{erp['clientId']}"
    # No password opens it, not even one an admin tries to set.
    refused = await https.post(
        "/auth/token", data={"grant_type": "password", "username": account, "password": "x" * 12}
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    async with demo.services.db.read() as session:
        account_id = (
            await session.execute(select(User.id).where(User.username == account))
        ).scalar_one()
    update = await gql(
        https,
        "mutation($input: UpdateUserInput!) { updateUser(input: $input) { errors { code } } }",
        {"input": {"id": gid("User", account_id), "password": "a-new-password"}},
        admin,
    )
    assert update["data"]["updateUser"]["errors"] == [{"code": "INVALID_INPUT"}]
    taken = await gql(
        https,
        "mutation($input: CreateUserInput!) { createUser(input: $input) { errors { field } } }",
        {
            "input": {
                "username": "client:impostor",
                "fullName": "Impostor",
                "password": "long-enough-pw",
                "roles": ["ADMIN"],
            }
        },
        admin,
    )
    assert taken["data"]["createUser"]["errors"] == [{"field": "username"}]
    users = await gql(https, "{ users(first: 50) { edges { node { username } } } }", token=admin)
    names = [e["node"]["username"] for e in users["data"]["users"]["edges"]]
    assert "admin" in names and account not in names
    listed = await gql(
        https, "{ oauthClients(first: 10) { edges { node { clientId } } } }", token=admin
    )
    assert listed["data"]["oauthClients"]["edges"] == [{"node": {"clientId": erp["clientId"]}}]
    nurse = await gql(
        https,
        "{ oauthClients(first: 10) { edges { node { clientId } } } }",
        token=await token_for(https, "nurse"),
    )
    assert nurse["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_revocation_is_published_for_live_sessions(demo: Demo) -> None:
    clients, admin = demo.services.clients, demo.principals["admin"]
    made = await clients.create_client(
        admin, name="ERP", organisation_id=whs(demo), role=Role.SUPPLIER, scopes=["shipments:write"]
    )
    await demo.services.start()  # on PostgreSQL, LISTEN: events arrive via NOTIFY on commit
    async with demo.services.bus.subscribe("session") as subscription:
        await clients.revoke_client(admin, made.client.id)
        event = await asyncio.wait_for(subscription.get(), 5)
    assert event.payload == {"client_id": made.client.id}


async def test_the_audit_chain_covers_the_acting_client(
    demo: Demo, https: httpx.AsyncClient
) -> None:
    """actor_client_id is hashed when set: clearing it breaks the chain at that event."""
    admin = await token_for(https, "admin")
    erp = await new_client(
        https, admin, whs(demo), role="REGULATOR", scopes=("recalls:write",), name="Agency recalls"
    )
    token = await access(await basic_token(https, erp["clientId"], erp["secret"]))
    principal = await demo.services.network.authenticate(token)
    async with demo.services.db.write() as session:
        await audit.record(
            session, principal, action="test.client", entity_type="Test", entity_id=1
        )
    assert (await _verify(demo)).ok
    async with demo.services.db.write() as session:
        seq = (
            await session.execute(
                select(AuditEvent.seq).where(AuditEvent.actor_client_id == principal.client_id)
            )
        ).scalar_one()
        await session.execute(
            text("UPDATE audit_events SET actor_client_id = NULL WHERE seq = :seq"), {"seq": seq}
        )
    broken = await _verify(demo)
    assert not broken.ok and broken.first_bad_seq == seq


# --- tokens without exp, the command line --------------------------------------------------------


async def test_access_tokens_without_exp_are_refused(demo: Demo, client) -> None:
    key = OctKey.import_key(TEST_SECRET.encode())
    now = int(datetime.now(UTC).timestamp())
    forever = jwt.encode(
        {"alg": "HS256"},
        {"iss": ISSUER, "sub": str(demo.users["admin"]), "iat": now, "jti": "x"},
        key,
    )
    body = await gql(client, "{ me { username } }", token=forever)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" and body["data"] is None
    tokens = demo.services.tokens
    with pytest.raises(Unauthenticated):
        tokens.decode_access_token(forever)
    with pytest.raises(Unauthenticated):
        tokens.decode_claims(forever)
    # The same claims with an exp are accepted: it is the missing exp that is refused.
    bounded = jwt.encode(
        {"alg": "HS256"},
        {"iss": ISSUER, "sub": str(demo.users["admin"]), "iat": now, "exp": now + 60},
        key,
    )
    assert tokens.decode_access_token(bounded) == demo.users["admin"]


async def test_create_client_from_the_command_line(
    demo: Demo, database_url: str, https: httpx.AsyncClient
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "APOTHECA_DATABASE_URL": database_url,
            "APOTHECA_SECRET_KEY": TEST_SECRET,
        }
        return subprocess.run(
            [sys.executable, "-m", "server.cli", "create-client", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = run(
        "MedDistri ERP",
        "--organisation",
        "MedDistri Wholesale",
        "--role",
        "SUPPLIER",
        "--scope",
        "shipments:write",
        "--scope",
        "procurement:read",
    )
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.split())
    response = await basic_token(https, printed["client_id"], printed["client_secret"])
    assert response.json()["scope"] == "procurement:read shipments:write"
    refused = run(
        "Other",
        "--organisation",
        "MedDistri Wholesale",
        "--role",
        "SUPPLIER",
        "--scope",
        "audit:read",
    )
    assert refused.returncode == 1 and "may not hold audit:read" in refused.stderr
    missing = run(
        "Other", "--organisation", "Nowhere Ltd", "--role", "SUPPLIER", "--scope", "stock:read"
    )
    assert missing.returncode == 1 and "no organisation named" in missing.stderr


# --- helpers -------------------------------------------------------------------------------------


async def _org(demo: Demo, name: str) -> int:
    from server.network.models import Organisation

    async with demo.services.db.read() as session:
        return int(
            (
                await session.execute(select(Organisation.id).where(Organisation.name == name))
            ).scalar_one()
        )


async def _last_audit_id(demo: Demo) -> int:
    async with demo.services.db.read() as session:
        return int((await session.execute(select(func.max(AuditEvent.id)))).scalar_one() or 0)


async def _verify(demo: Demo) -> audit.AuditVerification:
    async with demo.services.db.read() as session:
        return await audit.verify(session)


async def _counts(demo: Demo) -> list[int]:
    counts = []
    async with demo.services.db.read() as session:
        for model in (OAuthClient, User, AuditEvent):
            query = select(func.count()).select_from(model)
            counts.append(int((await session.execute(query)).scalar_one()))
    return counts


async def test_wrong_secrets_lock_the_client_at_that_address_only(
    demo: Demo, services: Services
) -> None:
    """Guessing a client's secret is throttled like guessing a password: after the threshold
    (5 in 15 minutes per client and address) 429 slow_down with Retry-After, even for the right
    secret from that address, while the real ERP elsewhere still gets its token."""
    from server.app import create_app

    app = create_app(services.settings, services)
    attacker = httpx.ASGITransport(app=app, client=("10.9.9.9", 4000))
    erp_host = httpx.ASGITransport(app=app, client=("10.1.1.1", 4000))
    async with (
        httpx.AsyncClient(transport=attacker, base_url="https://apotheca.test") as guessing,
        httpx.AsyncClient(transport=erp_host, base_url="https://apotheca.test") as erp,
    ):
        admin = await token_for(erp, "admin")
        made = await new_client(erp, admin, whs(demo))
        client_id, secret = made["clientId"], made["secret"]
        statuses = [
            (await basic_token(guessing, client_id, f"guess-{n}")).status_code for n in range(6)
        ]
        assert statuses[:5] == [401] * 5 and statuses[5] == 429, statuses
        locked = await basic_token(guessing, client_id, secret)
        assert locked.status_code == 429 and locked.json()["error"] == "slow_down"
        assert float(locked.headers["retry-after"]) > 0
        assert (await basic_token(erp, client_id, secret)).status_code == 200
