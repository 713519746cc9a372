"""Websocket sessions that end (issue 11) against real servers and real websockets: a socket
closes when its token expires, its sign-in is revoked or its user deactivated, on every
worker; every operation over it re-checks the principal; caps per principal."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed

from server.core.db import utcnow
from server.demo import DEMO_PASSWORD
from server.network.models import RefreshToken, User
from tests.conftest import (
    Demo,
    LiveServer,
    balance_of,
    eventually,
    gauge,
    gid,
    gql,
    receive,
    row_counts,
    start_server,
    token_for,
    wait_for_subscribers,
)
from tests.test_oauth_clients import REVOKE, access, basic_token, new_client, whs
from tests.wsclient import GraphQLWebSocket

STOCK_CHANGED = """subscription {
  stockChanged { quantity lot { batchNumber } movement { kind actor } }
}"""

DISPENSE = """mutation($input: DispenseStockInput!) {
  dispenseStock(input: $input) { movements { id } errors { code field message } }
}"""

UPDATE_USER = """mutation($input: UpdateUserInput!) {
  updateUser(input: $input) { errors { code field message } }
}"""


def _stop(*servers: LiveServer) -> None:
    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=10)


@pytest.fixture
def serve(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start single-worker servers on the test database with extra APOTHECA_* settings."""
    started: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        for name, value in env.items():
            monkeypatch.setenv(f"APOTHECA_{name.upper()}", value)
        server = start_server(database_url)
        started.append(server)
        return server

    yield start
    _stop(*started)


async def _sign_in(http: httpx.AsyncClient, username: str) -> dict[str, Any]:
    response = await http.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": DEMO_PASSWORD},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _closed_with(ws: GraphQLWebSocket, within: float = 1.0) -> int:
    """Wait (at most `within` seconds) for the server to close the socket; its close code."""
    await asyncio.wait_for(ws.connection.wait_closed(), within)
    code = ws.connection.close_code
    assert code is not None
    return code


def _dispense_input(demo: Demo, ward: str, lot: int) -> dict[str, Any]:
    return {
        "input": {
            "location": gid("Location", demo.locations[ward]),
            "lot": gid("Lot", lot),
            "quantity": 1,
            "idempotencyKey": uuid.uuid4().hex,
        }
    }


async def _ws_operation(
    ws: GraphQLWebSocket, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run an operation over the socket; its first answer (next or error). A query's or
    mutation's `next` is followed by its `complete`, read here too."""
    operation_id = await ws.subscribe(query, variables)
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.get("id") == operation_id, message
    if message["type"] == "next" and not query.lstrip().startswith("subscription"):
        complete = await asyncio.wait_for(ws.receive(), 5)
        assert complete == {"id": operation_id, "type": "complete"}, complete
    return message


async def _groups(http: httpx.AsyncClient) -> int:
    return await gauge(http, "apotheca_subscription_groups")


async def _deactivate(http: httpx.AsyncClient, admin: str, user_id: int) -> None:
    body = await gql(
        http, UPDATE_USER, {"input": {"id": gid("User", user_id), "active": False}}, admin
    )
    assert body["data"]["updateUser"]["errors"] == [], body


async def _refused_at_connect(server: LiveServer, token: str) -> int:
    with pytest.raises(ConnectionClosed) as refused:
        await GraphQLWebSocket.open(server.url, token)
    assert refused.value.rcvd is not None
    return refused.value.rcvd.code


# --- OAuth2 clients ----------------------------------------------------------------------------


async def test_revoking_an_oauth_client_closes_its_websockets(
    demo: Demo, live_server: LiveServer
) -> None:
    """A supplier's ERP listening on a websocket is cut off the moment an admin revokes it."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        admin = await token_for(http, "admin")
        made = await new_client(http, admin, whs(demo))
        token = await access(await basic_token(http, made["clientId"], made["secret"]))
        ws = await GraphQLWebSocket.open(live_server.url, token)
        body = await gql(http, REVOKE, {"id": made["id"]}, admin)
        assert body["data"]["revokeOAuthClient"]["errors"] == [], body
        started = time.monotonic()
        assert await _closed_with(ws) == 4403
        assert time.monotonic() - started < 1.0
        assert await _refused_at_connect(live_server, token) == 4403
        refused = await gql(http, "{ me { username } }", None, token)
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# --- deactivation ------------------------------------------------------------------------------


async def test_deactivating_a_user_closes_her_websockets_at_once(
    demo: Demo, live_server: LiveServer
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        admin = await token_for(http, "admin")
        nurse = await token_for(http, "nurse")
        watching = await GraphQLWebSocket.open(live_server.url, nurse)
        await watching.subscribe(STOCK_CHANGED)
        idle = await GraphQLWebSocket.open(live_server.url, nurse)
        await eventually(lambda: _groups_at_least(http, 1), within=5, what="subscription groups")
        await _deactivate(http, admin, demo.users["nurse"])
        started = time.monotonic()
        assert await _closed_with(watching) == 4403
        assert await _closed_with(idle) == 4403
        assert time.monotonic() - started < 1.0
        # Her group is gone with her, and nothing she held is left running.
        await eventually(lambda: _groups_equal(http, 0), within=5, what="subscription groups")
        # The same token neither reconnects nor works over HTTP.
        assert await _refused_at_connect(live_server, nurse) == 4403
        body = await gql(http, "{ me { username } }", None, nurse)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_changing_a_users_access_closes_her_websockets_and_she_reconnects_rescoped(
    demo: Demo, live_server: LiveServer
) -> None:
    lot = await receive(demo, "WARD-C", 5, batch="RESCOPED")
    ward_c = {"locations": [gid("Location", demo.locations["WARD-C"])]}
    scoped = "subscription($locations: [ID!]) { stockChanged(locations: $locations) { quantity } }"
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        admin = await token_for(http, "admin")
        nurse_b = await token_for(http, "nurse.b")
        ws = await GraphQLWebSocket.open(live_server.url, nurse_b)
        refused = await _ws_operation(ws, scoped, ward_c)
        assert "FORBIDDEN" in str(refused), refused
        wards = [gid("Location", demo.locations[w]) for w in ("WARD-B", "WARD-C")]
        body = await gql(
            http,
            UPDATE_USER,
            {"input": {"id": gid("User", demo.users["nurse.b"]), "locations": wards}},
            admin,
        )
        assert body["data"]["updateUser"]["errors"] == [], body
        assert await _closed_with(ws) == 4403
        assert ws.connection.close_reason == "access changed"
        # The same token reconnects and now holds the new scope.
        again = await GraphQLWebSocket.open(live_server.url, nurse_b)
        await again.subscribe(scoped, ward_c)
        await eventually(lambda: _groups_at_least(http, 1), within=5, what="subscription groups")
        dispensed = await gql(http, DISPENSE, _dispense_input(demo, "WARD-C", lot), admin)
        assert dispensed["data"]["dispenseStock"]["errors"] == [], dispensed
        event = await asyncio.wait_for(again.receive(), 5)
        assert event["type"] == "next", event
        assert event["payload"]["data"]["stockChanged"]["quantity"] == 4
        await again.close()


async def _groups_at_least(http: httpx.AsyncClient, count: int) -> bool:
    return await _groups(http) >= count


async def _groups_equal(http: httpx.AsyncClient, count: int) -> bool:
    return await _groups(http) == count


async def test_a_mutation_over_the_websocket_follows_http_rules_and_stops_with_the_account(
    demo: Demo, live_server: LiveServer
) -> None:
    """The account is disabled behind the server's back (no event): the next operation on
    the open socket re-checks, is refused with a code, writes nothing and the socket closes."""
    ward_a = await receive(demo, "WARD-A", 5, batch="WS-MUT-A")
    ward_b = await receive(demo, "WARD-B", 5, batch="WS-MUT-B")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        ws = await GraphQLWebSocket.open(live_server.url, nurse)
        # Over the socket as over HTTP: her ward is fine, another ward is refused as data.
        done = await _ws_operation(ws, DISPENSE, _dispense_input(demo, "WARD-A", ward_a))
        assert done["type"] == "next", done
        assert done["payload"]["data"]["dispenseStock"]["errors"] == []
        over_ws = await _ws_operation(ws, DISPENSE, _dispense_input(demo, "WARD-B", ward_b))
        over_http = await gql(http, DISPENSE, _dispense_input(demo, "WARD-B", ward_b), nurse)
        refused = over_ws["payload"]["data"]["dispenseStock"]
        assert refused == over_http["data"]["dispenseStock"]
        assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
        assert await balance_of(demo.services, demo.locations["WARD-A"], ward_a) == 4
        # Audited like any other write: hers, with a request id of its own.
        audit = await gql(
            http,
            """query($actor: ID) { auditTrail(first: 10, actor: $actor) {
                 edges { node { action actorName role requestId } } } }""",
            {"actor": gid("User", demo.users["nurse"])},
            await token_for(http, "auditor"),
        )
        nodes = [edge["node"] for edge in audit["data"]["auditTrail"]["edges"]]
        assert [(n["action"], n["actorName"], n["role"]) for n in nodes] == [
            ("stock.dispense", "nurse", "NURSE")
        ], nodes
        assert nodes[0]["requestId"]

        async with demo.services.db.write() as session:
            await session.execute(
                update(User).where(User.id == demo.users["nurse"]).values(active=False)
            )
        before = await row_counts(demo.services)
        answer = await _ws_operation(ws, DISPENSE, _dispense_input(demo, "WARD-A", ward_a))
        assert answer["type"] == "error", answer
        assert answer["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert await _closed_with(ws) == 4403
        assert await row_counts(demo.services) == before
        assert await balance_of(demo.services, demo.locations["WARD-A"], ward_a) == 4


# --- revoked sign-in ---------------------------------------------------------------------------


async def test_revoking_a_sign_in_closes_its_websockets_and_ends_its_access_tokens(
    demo: Demo, live_server: LiveServer
) -> None:
    lot = await receive(demo, "WARD-A", 5, batch="REVOKE")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        phone = await _sign_in(http, "pharmacist")
        desk = await _sign_in(http, "pharmacist")
        on_phone = await GraphQLWebSocket.open(live_server.url, phone["access_token"])
        on_desk = await GraphQLWebSocket.open(live_server.url, desk["access_token"])
        await on_phone.subscribe(STOCK_CHANGED)
        await on_desk.subscribe(STOCK_CHANGED)
        await eventually(lambda: _groups_at_least(http, 1), within=5, what="subscription groups")
        assert await _groups(http) == 1  # the same scope: one shared group

        response = await http.post("/auth/revoke", data={"token": phone["refresh_token"]})
        assert response.status_code == 200
        started = time.monotonic()
        assert await _closed_with(on_phone) == 4401
        assert time.monotonic() - started < 1.0

        # That sign-in is over everywhere: HTTP, a new socket, its refresh token.
        body = await gql(http, "{ me { username } }", None, phone["access_token"])
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert await _refused_at_connect(live_server, phone["access_token"]) == 4403
        refreshed = await http.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": phone["refresh_token"]},
        )
        assert refreshed.status_code == 400

        # The other sign-in of the same user goes on, still in its group.
        dispensed = await gql(
            http, DISPENSE, _dispense_input(demo, "WARD-A", lot), desk["access_token"]
        )
        assert dispensed["data"]["dispenseStock"]["errors"] == [], dispensed
        event = await asyncio.wait_for(on_desk.receive(), 5)
        assert event["type"] == "next", event
        assert event["payload"]["data"]["stockChanged"]["lot"]["batchNumber"] == "REVOKE"
        assert await _groups(http) == 1
        body = await gql(http, "{ me { username } }", None, desk["access_token"])
        assert body["data"]["me"]["username"] == "pharmacist"
        await on_desk.close()


async def test_a_sign_in_revoked_behind_the_servers_back_refuses_the_next_operation(
    demo: Demo, live_server: LiveServer
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        nurse = await _sign_in(http, "nurse")
        ws = await GraphQLWebSocket.open(live_server.url, nurse["access_token"])
        first = await _ws_operation(ws, "{ me { username } }")
        assert first["payload"]["data"]["me"]["username"] == "nurse"
        async with demo.services.db.write() as session:
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == demo.users["nurse"])
                .values(revoked_at=utcnow())
            )
        answer = await _ws_operation(ws, STOCK_CHANGED)
        assert answer["type"] == "error", answer
        assert answer["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert await _closed_with(ws) == 4401


# --- expiry ------------------------------------------------------------------------------------


async def test_a_websocket_closes_when_its_token_expires(demo: Demo, serve: Any) -> None:
    server = serve(access_token_minutes="0.1")  # 6-second access tokens
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        signed_in = await _sign_in(http, "nurse")
        assert signed_in["expires_in"] == 6
        expires_at = _claims(signed_in["access_token"])["exp"]
        ws = await GraphQLWebSocket.open(server.url, signed_in["access_token"])
        await ws.subscribe(STOCK_CHANGED)
        # Working while the token is valid.
        me = await _ws_operation(ws, "{ me { username } }")
        assert me["payload"]["data"]["me"]["username"] == "nurse"
        assert await _closed_with(ws, within=10.0) == 4401
        closed_at = time.time()
        assert expires_at - 0.5 <= closed_at <= expires_at + 1.0, (closed_at, expires_at)
        assert ws.connection.close_reason == "access token expired"
        await eventually(lambda: _groups_equal(http, 0), within=5, what="subscription groups")
        assert await _refused_at_connect(server, signed_in["access_token"]) == 4403


def _claims(token: str) -> dict[str, Any]:
    """The claims of a JWT as the client sees them (no signature check needed here)."""
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


# --- caps --------------------------------------------------------------------------------------


async def test_caps_refuse_the_connection_and_the_subscription_over_them(
    demo: Demo, serve: Any
) -> None:
    lot = await receive(demo, "WARD-A", 5, batch="CAPS")
    server = serve(max_connections_per_principal="2", max_subscriptions_per_principal="3")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        nurse = await token_for(http, "nurse")
        one = await GraphQLWebSocket.open(server.url, nurse)
        two = await GraphQLWebSocket.open(server.url, nurse)
        assert await _refused_at_connect(server, nurse) == 4429
        # Another user has her own quota.
        other = await GraphQLWebSocket.open(server.url, await token_for(http, "nurse.b"))

        # Three subscriptions across the two sockets run; the fourth is refused by code.
        # (One after another: the sockets' operations would otherwise race for the last place.)
        ids = [await one.subscribe(STOCK_CHANGED), await one.subscribe(STOCK_CHANGED)]
        await wait_for_subscribers(http, 2, within=5)
        ids.append(await two.subscribe(STOCK_CHANGED))
        await wait_for_subscribers(http, 3, within=5)
        fourth = await two.subscribe(STOCK_CHANGED)
        refusal = await asyncio.wait_for(two.receive(), 5)
        assert refusal["id"] == fourth and refusal["type"] == "error", refusal
        assert refusal["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        pharmacist = await token_for(http, "pharmacist")
        dispensed = await gql(http, DISPENSE, _dispense_input(demo, "WARD-A", lot), pharmacist)
        assert dispensed["data"]["dispenseStock"]["errors"] == [], dispensed
        got = [await asyncio.wait_for(one.receive(), 5) for _ in range(2)]
        got.append(await asyncio.wait_for(two.receive(), 5))
        assert sorted(m["id"] for m in got) == sorted(ids)
        assert all(m["type"] == "next" for m in got), got

        # Completing one frees its place; closing a socket frees a connection.
        await one.send({"id": ids[0], "type": "complete"})
        again = await one.subscribe(STOCK_CHANGED)
        await wait_for_subscribers(http, 3, within=5)
        dispensed = await gql(http, DISPENSE, _dispense_input(demo, "WARD-A", lot), pharmacist)
        assert dispensed["data"]["dispenseStock"]["errors"] == [], dispensed
        answers = [await asyncio.wait_for(one.receive(), 5) for _ in range(2)]
        assert {m["id"] for m in answers} == {ids[1], again}, answers
        assert all(m["type"] == "next" for m in answers), answers
        await two.close()
        three: GraphQLWebSocket | None = None
        deadline = time.monotonic() + 5
        while three is None:
            try:
                three = await GraphQLWebSocket.open(server.url, nurse)
            except ConnectionClosed as refused:
                assert refused.rcvd is not None and refused.rcvd.code == 4429
                assert time.monotonic() < deadline, "the closed socket's place was not freed"
                await asyncio.sleep(0.05)
        for ws in (one, three, other):
            await ws.close()


# --- two workers -------------------------------------------------------------------------------


@pytest.mark.postgres_only  # two servers on one database need PostgreSQL's LISTEN/NOTIFY
async def test_deactivating_or_revoking_on_one_worker_closes_sockets_on_the_other(
    demo: Demo, serve: Any
) -> None:
    worker_a = serve()
    worker_b = serve()
    async with (
        httpx.AsyncClient(base_url=worker_a.url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=worker_b.url, timeout=30) as on_b,
    ):
        admin = await token_for(on_a, "admin")
        nurse = await token_for(on_b, "nurse")
        pharmacist = await _sign_in(on_b, "pharmacist")
        nurse_ws = await GraphQLWebSocket.open(worker_b.url, nurse)
        await nurse_ws.subscribe(STOCK_CHANGED)
        pharmacist_ws = await GraphQLWebSocket.open(worker_b.url, pharmacist["access_token"])

        response = await on_a.post("/auth/revoke", data={"token": pharmacist["refresh_token"]})
        assert response.status_code == 200
        started = time.monotonic()
        assert await _closed_with(pharmacist_ws) == 4401
        assert time.monotonic() - started < 1.0

        await _deactivate(on_a, admin, demo.users["nurse"])
        started = time.monotonic()
        assert await _closed_with(nurse_ws) == 4403
        assert time.monotonic() - started < 1.0
        await eventually(lambda: _groups_equal(on_b, 0), within=5, what="subscription groups")
        body = await gql(on_b, "{ me { username } }", None, nurse)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
