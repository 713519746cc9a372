"""Rate limits and sign-in flood protection against a real server (server.core.ratelimit).

Different client addresses are real peers: Linux routes all of 127/8 to lo, so an httpx
transport bound to 127.0.0.2 is another IP as far as the server can tell."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis.asyncio
from fhir.resources.R4B.operationoutcome import OperationOutcome
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.core.ratelimit import RefusalHold
from server.core.security import verify_password
from server.demo import DEMO_PASSWORD
from tests.conftest import METRICS_AUTH, LiveServer, free_port, start_server
from tests.wsclient import PROTOCOL, GraphQLWebSocket

ATTACKER, OWNER, THIRD = "127.0.0.1", "127.0.0.2", "127.0.0.3"
TYPENAME = {"query": "{ __typename }"}


@contextmanager
def serving(database_url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[str]:
    """A live server with APOTHECA_<name> settings from `env`; yields its base URL."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(f"APOTHECA_{name}", value)
        server: LiveServer = start_server(database_url)
    try:
        yield server.url
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


def client(url: str, ip: str = ATTACKER, **headers: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    return httpx.AsyncClient(base_url=url, transport=transport, headers=headers, timeout=30)


async def sign_in(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post(
        "/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )


def retry_after_of(response: httpx.Response) -> int:
    """A 429's Retry-After: whole seconds, at least one."""
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def assert_slow_down(response: httpx.Response) -> int:
    """A throttled sign-in: 429, Retry-After, an OAuth error body. Returns Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "slow_down"
    assert response.json()["error_description"]
    return int(response.headers["retry-after"])


def assert_rate_limited(response: httpx.Response) -> int:
    """A throttled /graphql request: 429, Retry-After, a GraphQL error RATE_LIMITED."""
    assert response.status_code == 429, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["message"]
    return retry_after_of(response)


async def test_login_flood_locks_the_attacker_with_doubling_delays_not_the_owner(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url,
        monkeypatch,
        LOGIN_LIMIT_ACCOUNT_IP="3/15 minutes",
        # Locks of a few seconds: a sign-in's password check takes a good part of a second on
        # a busy machine, and a 1 s lock could lapse between two of the attacker's requests.
        LOGIN_LOCK_SECONDS="3",
        LOGIN_LOCK_MAX_SECONDS="6",
    ) as url:
        async with client(url, ATTACKER) as attacker, client(url, OWNER) as owner:
            for _ in range(3):
                response = await sign_in(attacker, "nurse", "guess")
                assert response.status_code == 400
                assert response.json()["error"] == "invalid_grant"
            waits = [assert_slow_down(await sign_in(attacker, "nurse", "guess"))]
            # Locked from the attacker's address, even with the right password...
            assert_slow_down(await sign_in(attacker, "nurse", DEMO_PASSWORD))
            # ...but the owner signs in from her own, and other users from the attacker's.
            assert (await sign_in(owner, "nurse", DEMO_PASSWORD)).status_code == 200
            assert (await sign_in(attacker, "pharmacist", DEMO_PASSWORD)).status_code == 200
            # Each further failure after a lock doubles it, up to the cap.
            for _ in range(2):
                await asyncio.sleep(waits[-1] + 0.2)
                assert (await sign_in(attacker, "nurse", "guess")).status_code == 400
                waits.append(assert_slow_down(await sign_in(attacker, "nurse", "guess")))
            assert waits == [3, 6, 6]


async def test_a_successful_sign_in_clears_its_failures(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(database_url, monkeypatch, LOGIN_LIMIT_ACCOUNT_IP="3/15 minutes") as url:
        async with client(url, ATTACKER) as http:
            for _ in range(2):
                assert (await sign_in(http, "nurse", "typo")).status_code == 400
            assert (await sign_in(http, "nurse", DEMO_PASSWORD)).status_code == 200
            for _ in range(2):  # counted afresh: 2 of 3, no lock
                assert (await sign_in(http, "nurse", "typo")).status_code == 400
            assert (await sign_in(http, "nurse", DEMO_PASSWORD)).status_code == 200
            for _ in range(3):
                assert (await sign_in(http, "nurse", "typo")).status_code == 400
            assert_slow_down(await sign_in(http, "nurse", DEMO_PASSWORD))


async def test_concurrent_guesses_count_before_hashing_and_the_owner_still_signs_in(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve guesses at once from one address: each is counted before its password is hashed,
    so only the pair's allowance (3) is hashed at all; the rest are refused, and the owner,
    from her own address, signs in meanwhile."""
    with serving(database_url, monkeypatch, LOGIN_LIMIT_ACCOUNT_IP="3/15 minutes") as url:
        async with client(url, ATTACKER) as attacker, client(url, OWNER) as owner:
            responses = await asyncio.gather(
                *(sign_in(attacker, "nurse", f"guess-{n}") for n in range(12)),
                sign_in(owner, "nurse", DEMO_PASSWORD),
            )
            *guesses, own = responses
            assert own.status_code == 200, own.text
            outcomes = Counter(
                (r.status_code, r.json()["error"]) for r in guesses if r.status_code != 200
            )
            assert outcomes == {(400, "invalid_grant"): 3, (429, "slow_down"): 9}, outcomes
            for response in guesses:
                if response.status_code == 429:
                    assert int(response.headers["retry-after"]) >= 1


async def test_a_locked_sign_in_is_answered_late_but_never_past_its_lock(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that ignores Retry-After gets its refusals slowly (held up to
    LOGIN_REFUSAL_DELAY_SECONDS), never for more than half the lock left."""
    with serving(
        database_url,
        monkeypatch,
        LOGIN_LIMIT_ACCOUNT_IP="2/15 minutes",
        LOGIN_LOCK_SECONDS="30",
        LOGIN_REFUSAL_DELAY_SECONDS="0.6",
    ) as url:
        async with client(url, ATTACKER) as attacker, client(url, OWNER) as owner:
            for _ in range(2):
                assert (await sign_in(attacker, "nurse", "guess")).status_code == 400
            started = time.monotonic()
            assert 25 <= assert_slow_down(await sign_in(attacker, "nurse", "guess")) <= 30
            assert 0.5 <= time.monotonic() - started < 5
            # Not held: another account from the same address, the owner from hers.
            started = time.monotonic()
            assert (await sign_in(attacker, "pharmacist", DEMO_PASSWORD)).status_code == 200
            assert (await sign_in(owner, "nurse", DEMO_PASSWORD)).status_code == 200
            assert time.monotonic() - started < 5
    with serving(
        database_url,
        monkeypatch,
        LOGIN_LIMIT_ACCOUNT_IP="1/15 minutes",
        LOGIN_LOCK_SECONDS="1",
        LOGIN_REFUSAL_DELAY_SECONDS="20",
    ) as url:
        async with client(url, ATTACKER) as attacker:
            assert (await sign_in(attacker, "nurse", "guess")).status_code == 400
            started = time.monotonic()
            assert assert_slow_down(await sign_in(attacker, "nurse", "guess")) == 1
            assert time.monotonic() - started < 1  # half the lock's second, not the 20 s asked


async def test_account_ceiling_and_per_ip_threshold(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url,
        monkeypatch,
        LOGIN_LIMIT_ACCOUNT_IP="2/15 minutes",
        LOGIN_LIMIT_ACCOUNT="4/15 minutes",
        LOGIN_LIMIT_IP="3/15 minutes",
        LOGIN_LOCK_SECONDS="30",
    ) as url:
        async with (
            client(url, ATTACKER) as first,
            client(url, THIRD) as second,
            client(url, OWNER) as owner,
        ):
            for http in (first, second):
                for _ in range(2):
                    assert (await sign_in(http, "nurse", "guess")).status_code == 400
            # Four failures from two addresses reach the account's ceiling: locked everywhere.
            assert 25 <= assert_slow_down(await sign_in(owner, "nurse", DEMO_PASSWORD)) <= 30
            assert (await sign_in(owner, "pharmacist", DEMO_PASSWORD)).status_code == 200
            # A third failure from the first address, on another account, locks that address.
            assert (await sign_in(first, "auditor", "guess")).status_code == 400
            assert_slow_down(await sign_in(first, "regulator", DEMO_PASSWORD))
            assert (await sign_in(owner, "regulator", DEMO_PASSWORD)).status_code == 200


async def test_graphql_per_ip_limit_then_recovery(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url, monkeypatch, RATE_LIMIT_IP="3/2 seconds", RATE_LIMIT_PRINCIPAL="off"
    ) as url:
        async with client(url, ATTACKER) as busy, client(url, OWNER) as other:
            for _ in range(3):
                assert (await busy.post("/graphql", json=TYPENAME)).status_code == 200
            retry_after = assert_rate_limited(await busy.post("/graphql", json=TYPENAME))
            assert retry_after <= 2
            # Websocket handshakes count apart from requests, in a bucket of the same size.
            ws_url = url.replace("http://", "ws://") + "/graphql"
            for _ in range(3):
                socket = await connect(ws_url, subprotocols=[PROTOCOL], local_addr=(ATTACKER, 0))  # type: ignore[list-item]
                await socket.close()
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url, subprotocols=[PROTOCOL], local_addr=(ATTACKER, 0))  # type: ignore[list-item]
            assert refused.value.response.status_code == 429
            assert int(refused.value.response.headers["Retry-After"]) >= 1
            assert b"RATE_LIMITED" in refused.value.response.body
            assert (await other.post("/graphql", json=TYPENAME)).status_code == 200
            await asyncio.sleep(retry_after + 0.2)
            response = await busy.post("/graphql", json=TYPENAME)
            assert response.status_code == 200
            assert response.json()["data"] == {"__typename": "Query"}


async def test_a_refused_request_is_answered_late_and_nobody_else_waits(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that ignores Retry-After gets its 429s late (RATE_LIMIT_REFUSAL_DELAY_SECONDS),
    held side by side without blocking the server: another client is answered at once."""
    with serving(
        database_url,
        monkeypatch,
        RATE_LIMIT_IP="2/minute",
        RATE_LIMIT_PRINCIPAL="off",
        RATE_LIMIT_REFUSAL_DELAY_SECONDS="1.5",
    ) as url:
        async with client(url, ATTACKER) as busy, client(url, OWNER) as other:
            for _ in range(2):
                assert (await busy.post("/graphql", json=TYPENAME)).status_code == 200
            started = time.monotonic()
            refusals = asyncio.gather(*(busy.post("/graphql", json=TYPENAME) for _ in range(5)))
            await asyncio.sleep(0.2)  # the five are being held
            asked = time.monotonic()
            assert (await other.post("/graphql", json=TYPENAME)).status_code == 200
            other_waited = time.monotonic() - asked
            for refused in await refusals:
                assert_rate_limited(refused)
            held = time.monotonic() - started
            assert 1.4 <= held < 5, held  # held, and side by side (one after another is 7.5 s)
            assert other_waited < 1.0, other_waited


async def test_refusals_are_held_at_most_half_their_wait_and_only_so_many_at_once() -> None:
    """The hold's two bounds: never more than half the Retry-After (the wait is never spent
    holding), and past `max_held` refusals at once the rest answer at once (holding cannot
    become the resource a flood exhausts); a finished hold frees its place."""

    async def timed(hold: RefusalHold, wait: float) -> float:
        started = time.monotonic()
        await hold(wait)
        return time.monotonic() - started

    hold = RefusalHold(delay=0.6, max_held=2)
    took = await asyncio.gather(*(timed(hold, 30) for _ in range(3)))
    assert sorted(took)[0] < 0.3 and sorted(took)[1:] >= [0.55, 0.55], took
    assert hold.held == 0
    assert 0.55 <= await timed(hold, 30) < 3  # the places are free again
    assert 0.15 <= await timed(hold, 0.4) < 0.4  # half of a 0.4 s wait, not the 0.6 s delay
    assert await timed(RefusalHold(delay=0), 30) < 0.1


async def test_a_refusal_is_answered_before_the_app_and_counted(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 429 comes from the outermost middleware: it still carries the security headers and
    a request id, it is refused before the body is read (a body over the size limit gets 429,
    not 413), a valid token's principal is counted across addresses, and /metrics counts it."""
    with serving(
        database_url, monkeypatch, RATE_LIMIT_IP="2/minute", RATE_LIMIT_PRINCIPAL="3/minute"
    ) as url:
        async with client(url, ATTACKER) as busy, client(url, THIRD) as other:
            for _ in range(2):
                assert (await busy.post("/graphql", json=TYPENAME)).status_code == 200
            refused = await busy.post(
                "/graphql", content=b"x" * (300 * 1024), headers={"X-Request-ID": "flood-1"}
            )
            assert_rate_limited(refused)
            assert refused.headers["x-request-id"] == "flood-1"
            assert refused.headers["x-content-type-options"] == "nosniff"
            assert refused.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]
            assert re.fullmatch(
                r"[0-9a-f]{32}",
                (await busy.post("/graphql", json=TYPENAME)).headers["x-request-id"],
            )
            token = (await sign_in(other, "nurse", DEMO_PASSWORD)).json()["access_token"]
            as_nurse = {"Authorization": f"Bearer {token}"}
            async with client(url, OWNER) as third:
                for http in (other, other, third):
                    response = await http.post("/graphql", json=TYPENAME, headers=as_nurse)
                    assert response.status_code == 200
                assert_rate_limited(await third.post("/graphql", json=TYPENAME, headers=as_nurse))
            metrics = (await other.get("/metrics", headers=METRICS_AUTH)).text
            assert 'apotheca_rate_limited_total{kind="http/ip"} 2' in metrics, metrics
            assert 'apotheca_rate_limited_total{kind="http/principal"} 1' in metrics, metrics


async def test_graphql_per_principal_limit_across_addresses(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url, monkeypatch, RATE_LIMIT_PRINCIPAL="3/2 seconds", RATE_LIMIT_IP="off"
    ) as url:
        async with client(url, ATTACKER) as one, client(url, OWNER) as two:
            nurse = (await sign_in(one, "nurse", DEMO_PASSWORD)).json()["access_token"]
            other = (await sign_in(one, "pharmacist", DEMO_PASSWORD)).json()["access_token"]
            as_nurse = {"Authorization": f"Bearer {nurse}"}
            for http in (one, one, two):
                response = await http.post("/graphql", json=TYPENAME, headers=as_nurse)
                assert response.status_code == 200
            retry_after = assert_rate_limited(
                await two.post("/graphql", json=TYPENAME, headers=as_nurse)
            )
            # Its websocket connections count apart; the fourth is closed at connection_init.
            for _ in range(3):
                socket = await GraphQLWebSocket.open(url, nurse)
                await socket.close()
            with pytest.raises(ConnectionClosed) as closed:
                await GraphQLWebSocket.open(url, nurse)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
            # Others are not affected: another principal, and anonymous requests.
            headers = {"Authorization": f"Bearer {other}"}
            assert (await one.post("/graphql", json=TYPENAME, headers=headers)).status_code == 200
            assert (await one.post("/graphql", json=TYPENAME)).status_code == 200
            await asyncio.sleep(retry_after + 0.2)
            response = await two.post("/graphql", json=TYPENAME, headers=as_nurse)
            assert response.status_code == 200


def assert_fhir_throttled(response: httpx.Response) -> int:
    """A throttled /fhir request: 429, Retry-After, an OperationOutcome (FHIR JSON)."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = OperationOutcome.model_validate(response.json())
    assert outcome.issue[0].severity == "error" and outcome.issue[0].code == "throttled"
    assert outcome.issue[0].diagnostics
    return retry_after_of(response)


async def test_fhir_shares_the_graphql_limits_per_ip_and_per_principal(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url, monkeypatch, RATE_LIMIT_IP="4/minute", RATE_LIMIT_PRINCIPAL="3/minute"
    ) as url:
        async with (
            client(url, ATTACKER) as one,
            client(url, OWNER) as two,
            client(url, THIRD) as three,
        ):
            token = (await sign_in(three, "nurse", DEMO_PASSWORD)).json()["access_token"]
            as_nurse = {"Authorization": f"Bearer {token}"}
            search = "/fhir/metadata"  # a bearer token counts for its principal anywhere
            # Per principal, across addresses and across /graphql and /fhir.
            assert (await one.get(search, headers=as_nurse)).status_code == 200
            response = await two.post("/graphql", json=TYPENAME, headers=as_nurse)
            assert response.status_code == 200
            assert (await two.get(search, headers=as_nurse)).status_code == 200
            assert_fhir_throttled(await one.get(search, headers=as_nurse))
            # Per IP: `one` has spent 2 of its 4; anonymous requests count too.
            for _ in range(2):
                assert (await one.get("/fhir/metadata")).status_code == 200
            assert_fhir_throttled(await one.get("/fhir/metadata"))
            assert_rate_limited(await one.post("/graphql", json=TYPENAME))  # the same bucket
            refused = await one.post("/fhir", content=b"{}" * (200 * 1024))  # before the body
            assert_fhir_throttled(refused)
            assert refused.headers["x-content-type-options"] == "nosniff"
            # Others are not affected.
            assert (await three.get("/fhir/metadata")).status_code == 200


async def test_forwarded_for_counts_only_from_trusted_proxies(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(
        database_url,
        monkeypatch,
        RATE_LIMIT_IP="2/minute",
        RATE_LIMIT_PRINCIPAL="off",
        TRUSTED_PROXIES=ATTACKER,
    ) as url:
        async with client(url, ATTACKER) as proxy, client(url, OWNER) as direct:
            behind = {"X-Forwarded-For": "10.0.0.1"}
            for _ in range(2):
                assert (
                    await proxy.post("/graphql", json=TYPENAME, headers=behind)
                ).status_code == 200
            assert_rate_limited(await proxy.post("/graphql", json=TYPENAME, headers=behind))
            another = {"X-Forwarded-For": "10.0.0.2"}
            assert (await proxy.post("/graphql", json=TYPENAME, headers=another)).status_code == 200
            # Not a trusted proxy: its X-Forwarded-For is ignored, so it cannot dodge the limit.
            for n in range(2):
                spoofed = {"X-Forwarded-For": f"10.0.1.{n}"}
                response = await direct.post("/graphql", json=TYPENAME, headers=spoofed)
                assert response.status_code == 200
            assert_rate_limited(
                await direct.post(
                    "/graphql", json=TYPENAME, headers={"X-Forwarded-For": "10.9.9.9"}
                )
            )


async def test_two_servers_share_counters_in_redis(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"apotheca-test-{uuid.uuid4().hex}"
    settings = {
        "RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379",
        "RATE_LIMIT_PREFIX": prefix,
        "RATE_LIMIT_IP": "4/minute",
        "RATE_LIMIT_PRINCIPAL": "off",
        "LOGIN_LIMIT_ACCOUNT_IP": "2/15 minutes",
        "LOGIN_LOCK_SECONDS": "30",
    }
    try:
        with (
            serving(database_url, monkeypatch, **settings) as first_url,
            serving(database_url, monkeypatch, **settings) as second_url,
        ):
            async with client(first_url) as first, client(second_url) as second:
                for http in (first, second, first, second):
                    assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
                # Each server saw two requests; together they reached the limit of four.
                assert_rate_limited(await first.post("/graphql", json=TYPENAME))
                assert_rate_limited(await second.post("/graphql", json=TYPENAME))
                # Sign-in failures too: one on each server lock the pair on both.
                assert (await sign_in(first, "nurse", "guess")).status_code == 400
                assert (await sign_in(second, "nurse", "guess")).status_code == 400
                assert_slow_down(await sign_in(first, "nurse", DEMO_PASSWORD))
                assert_slow_down(await sign_in(second, "nurse", DEMO_PASSWORD))
    finally:
        store = redis.asyncio.Redis(host="127.0.0.1", port=6379)
        keys = [key async for key in store.scan_iter(match=f"*{prefix}*")]
        assert keys, "the servers kept no counters in redis"
        await store.delete(*keys)
        await store.aclose()


async def test_sign_in_flood_is_refused_fast_and_leaves_the_event_loop_free(
    client: httpx.AsyncClient,
) -> None:
    """The app runs in this process (ASGI transport), so a ticker here measures its loop."""
    started = time.perf_counter()
    verify_password(None, "one verification, timed on this thread")
    verify_cost = time.perf_counter() - started
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    flooding = True

    async def ticker() -> None:
        while flooding:
            before = loop.time()
            await asyncio.sleep(0.002)
            lags.append(loop.time() - before - 0.002)

    ticks = asyncio.create_task(ticker())
    responses = await asyncio.gather(
        *(
            client.post(
                "/auth/token",
                data={"grant_type": "password", "username": f"flood-{n}", "password": "x"},
            )
            for n in range(40)
        )
    )
    flooding = False
    await ticks
    codes = Counter(response.status_code for response in responses)
    assert codes[400] >= 2 and codes[429] >= 1 and codes[400] + codes[429] == 40, codes
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"] == "temporarily_unavailable"
            assert int(response.headers["retry-after"]) >= 1
    # Were argon2 on the loop, each verification would stall it for about verify_cost.
    assert len(lags) >= 5
    assert statistics.median(lags) < verify_cost / 4, (statistics.median(lags), verify_cost)


async def test_an_unreachable_shared_storage_lets_requests_through() -> None:
    """The limits protect the service; a dead redis must not take it down with them."""
    from server.config import Settings
    from server.core.ratelimit import RateLimits

    dead = RateLimits(
        Settings(
            secret_key="unused",
            rate_limit_storage=f"redis://127.0.0.1:{free_port()}",
            rate_limit_ip="1/minute",
            login_failures_account_ip="1/minute",
        )
    )
    for _ in range(3):
        await dead.check_ip(ATTACKER)
        await dead.login.check("nurse", ATTACKER)
        await dead.login.record_failure("nurse", ATTACKER)
