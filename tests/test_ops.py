"""Operations hygiene and the API contract (issue 11): one log line per refusal, tracebacks
only for faults; security headers on every response; /metrics behind a token; the PWA's
refresh cookie; GraphiQL from our own origin; breaking SDL changes only when listed."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
import strawberry

from server.app import create_app
from server.cli import check_contract
from server.core.contract import contract_problems
from server.core.graphql import ApiErrors, Context
from server.core.http import REFRESH_COOKIE, REFRESH_COOKIE_HEADER
from server.core.logs import JsonFormatter, LoggedSchema
from server.schema import schema_sdl
from server.services import Services
from tests.conftest import DEMO_PASSWORD, Demo, gql, start_server

COOKIE_MODE = {REFRESH_COOKIE_HEADER: "1"}

# --- logs ---------------------------------------------------------------------------------------


def test_expected_refusals_are_one_json_line_each_without_traceback(
    database_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        server = start_server(
            database_url, env_extra={"APOTHECA_LOG_LEVEL": "info"}, stderr=log_file
        )
        try:
            before = log_path.stat().st_size
            anonymous = httpx.post(
                f"{server.url}/graphql",
                json={"query": "query Who { me { username } }", "operationName": "Who"},
                headers={"X-Request-ID": "req-anon-1"},
            )
            forged = httpx.post(
                f"{server.url}/graphql",
                json={"query": "{ me { username } }"},
                headers={"Authorization": "Bearer not-a-jwt", "X-Request-ID": "req-forged-2"},
            )
            token = httpx.post(
                f"{server.url}/auth/token",
                data={"grant_type": "password", "username": "nurse", "password": DEMO_PASSWORD},
            ).json()["access_token"]
            bad_id = httpx.post(
                f"{server.url}/graphql",
                json={"query": 'query Look { node(id: "garbage") { id } }'},
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-bad-id-3"},
            )
        finally:
            server.process.terminate()
            server.process.wait(timeout=10)
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert anonymous.headers["x-request-id"] == "req-anon-1"
    assert forged.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert bad_id.json()["errors"][0]["extensions"]["code"] == "INVALID_ID"

    raw = log_path.read_bytes()
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]  # all JSON
    assert all("traceback" not in line for line in lines), [line for line in lines][:3]
    by_request = {line.get("request_id"): line for line in lines if line.get("code")}
    assert by_request["req-anon-1"]["code"] == "UNAUTHENTICATED"
    assert by_request["req-anon-1"]["operation"] == "Who"
    assert by_request["req-anon-1"]["principal"] is None
    assert by_request["req-forged-2"]["code"] == "UNAUTHENTICATED"
    look = next(line for line in lines if line.get("code") == "INVALID_ID")
    assert re.fullmatch(r"user:\d+:nurse", look["principal"]) and look["operation"] == "Look"
    refusals = [line for line in lines if line.get("code")]
    assert len(refusals) == 3, refusals
    # The 39 KB of tracebacks per refused request are gone: the whole run's log stays small.
    assert len(raw) - before < 4000, raw[before:].decode()


def test_a_fault_is_one_json_line_with_its_traceback() -> None:
    """A real fault (not a DomainError) is masked for the caller and logged with a traceback."""

    @strawberry.type
    class Query:
        @strawberry.field
        def broken(self) -> int:
            return 1 // 0

    schema = LoggedSchema(query=Query, extensions=[ApiErrors])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("apotheca.graphql")
    logger.addHandler(handler)
    try:
        context = Context(services=None, principal=None)
        result = schema.execute_sync("query Boom { broken }", context_value=context)
    finally:
        logger.removeHandler(handler)
    assert result.errors[0].message == "Internal server error"
    assert result.errors[0].extensions["code"] == "INTERNAL_SERVER_ERROR"
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["level"] == "ERROR" and line["operation"] == "Boom"
    assert line["code"] == "INTERNAL_SERVER_ERROR" and line["path"] == "broken"
    assert "ZeroDivisionError" in line["traceback"]


# --- headers, /metrics, GraphiQL -----------------------------------------------------------------

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def test_security_headers_on_every_response(demo: Demo, client: httpx.AsyncClient) -> None:
    responses = {
        "GET /": await client.get("/"),
        "GET /healthz": await client.get("/healthz"),
        "POST /graphql": await client.post("/graphql", json={"query": "{ __typename }"}),
        "GraphiQL": await client.get("/graphql", headers={"Accept": "text/html"}),
        "404": await client.get("/no/such/page"),
        "413": await client.post("/graphql", content=b"x" * (300 * 1024)),
        "POST /auth/token": await client.post("/auth/token", data={"grant_type": "nope"}),
    }
    assert responses["404"].status_code == 404 and responses["413"].status_code == 413
    for what, response in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (what, name)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (what, csp)
        assert "script-src 'self' 'wasm-unsafe-eval'" in csp, (what, csp)
        assert "connect-src 'self' ws://apotheca.test wss://apotheca.test" in csp, (what, csp)
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), what


async def test_graphiql_page_references_only_our_origin(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 200 and "GraphiQL" in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 5
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        if url.startswith("/graphiql/"):
            assert (await client.get(url)).status_code == 200, url
    assert "unpkg" not in page.text and "cdn" not in page.text.lower()
    # Not a browser asking for a page: GraphQL over GET as before.
    api = await client.get("/graphql", params={"query": "{ __typename }"})
    assert api.json()["data"] == {"__typename": "Query"} and "errors" not in api.json()


async def test_metrics_need_the_configured_token(services: Services) -> None:
    async def get(app_services: Services, headers: dict[str, str]) -> httpx.Response:
        app = create_app(app_services.settings, app_services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/metrics", headers=headers)

    # No token configured: /metrics does not exist.
    assert (await get(services, {})).status_code == 404
    assert (await get(services, {"Authorization": "Bearer "})).status_code == 404
    configured = Services.build(dataclasses.replace(services.settings, metrics_token="s3cret"))
    try:
        missing = await get(configured, {})
        wrong = await get(configured, {"Authorization": "Bearer s3cre"})
        basic = await get(configured, {"Authorization": "Basic s3cret"})
        right = await get(configured, {"Authorization": "Bearer s3cret"})
    finally:
        await configured.close()
    assert [missing.status_code, wrong.status_code, basic.status_code] == [401, 401, 401]
    assert "apotheca_uptime_seconds" not in missing.text
    assert right.status_code == 200 and "apotheca_uptime_seconds" in right.text


# --- the PWA's refresh cookie -------------------------------------------------------------------


def _cookie(response: httpx.Response) -> tuple[str, str]:
    """The refresh cookie's value and its attributes, from Set-Cookie."""
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(REFRESH_COOKIE)]
    value, _, attributes = header.partition(";")
    return value.split("=", 1)[1].strip('"'), attributes.lower()


async def test_browser_sign_in_keeps_the_refresh_token_in_an_httponly_cookie(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    form = {"grant_type": "password", "username": "nurse", "password": DEMO_PASSWORD}
    signed_in = await client.post("/auth/token", data=form, headers=COOKIE_MODE)
    assert signed_in.status_code == 200
    assert "refresh_token" not in signed_in.json()  # scripts never see it
    refresh, attributes = _cookie(signed_in)
    for attribute in ("httponly", "secure", "samesite=strict", "path=/auth", "max-age=2592000"):
        assert attribute in attributes, attributes
    me = await gql(client, "{ me { username } }", token=signed_in.json()["access_token"])
    assert me["data"]["me"]["username"] == "nurse"

    # The refresh grant reads the cookie when no refresh_token is sent; the token rotates.
    cookie = {"Cookie": f"{REFRESH_COOKIE}={refresh}"}
    client.cookies.clear()
    refreshed = await client.post(
        "/auth/token", data={"grant_type": "refresh_token"}, headers={**COOKIE_MODE, **cookie}
    )
    assert refreshed.status_code == 200, refreshed.text
    rotated, _ = _cookie(refreshed)
    assert rotated != refresh and "refresh_token" not in refreshed.json()

    # Without the header the cookie is not used (a cross-site form cannot set the header).
    no_header = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token"},
        headers={"Cookie": f"{REFRESH_COOKIE}={rotated}"},
    )
    assert no_header.status_code == 400

    # Sign-out revokes the cookie's token and clears the cookie.
    cookie = {"Cookie": f"{REFRESH_COOKIE}={rotated}"}
    signed_out = await client.post("/auth/revoke", headers={**COOKIE_MODE, **cookie})
    assert signed_out.status_code == 200
    cleared, attributes = _cookie(signed_out)
    assert cleared == "" and "max-age=0" in attributes and "path=/auth" in attributes
    again = await client.post(
        "/auth/token", data={"grant_type": "refresh_token"}, headers={**COOKIE_MODE, **cookie}
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_third_party_clients_still_get_the_refresh_token_in_json(
    demo: Demo, client: httpx.AsyncClient
) -> None:
    form = {"grant_type": "password", "username": "nurse", "password": DEMO_PASSWORD}
    tokens = await client.post("/auth/token", data=form)
    assert tokens.status_code == 200 and tokens.json()["refresh_token"]
    assert not tokens.headers.get_list("set-cookie")
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"]


# --- the API contract ---------------------------------------------------------------------------

CHANGES_HEAD = "# GraphQL API changes\n\n## Unreleased\n\n"
RELEASED_TAIL = "\n## 0.1.0 (2026-11-01)\n\n- breaking `Query.me`: an old entry, not this release\n"


def _without_field(sdl: str, type_name: str, field: str) -> str:
    """`sdl` with `field` removed from `type Type_name` (the line declaring it, and the one-line
    description above it)."""
    block = re.search(rf"^type {type_name}\b.*?^}}", sdl, re.S | re.M)
    assert block, type_name
    body = re.sub(
        rf'^(  """[^\n]*"""\n)?  {field}\b[^\n]*\n', "", block.group(0), count=1, flags=re.M
    )
    assert body != block.group(0), field
    return sdl.replace(block.group(0), body)


def test_a_removed_field_fails_the_contract_until_listed() -> None:
    released = schema_sdl()
    current = _without_field(released, "Query", "me")
    problems = contract_problems(released, current, CHANGES_HEAD + RELEASED_TAIL)
    assert len(problems) == 1 and "Query.me" in problems[0] and "CHANGES.md" in problems[0]

    listed = CHANGES_HEAD + "- breaking `Query.me`: removed; use `viewer`\n" + RELEASED_TAIL
    problems = contract_problems(released, current, listed)
    # Listed, but never deprecated: still refused unless said so.
    assert len(problems) == 1 and "not deprecated" in problems[0]
    emergency = CHANGES_HEAD + "- breaking `Query.me`: removed without deprecation (security)\n"
    assert contract_problems(released, current, emergency) == []
    # Deprecated in the released SDL first: listing it is enough.
    deprecated = released.replace("  me: User!", '  me: User! @deprecated(reason: "use viewer")')
    assert deprecated != released
    assert contract_problems(deprecated, current, listed) == []
    # A non-breaking change (a new field) needs no entry.
    added = released.replace("type Query {", "type Query {\n  ping: Boolean", 1)
    assert contract_problems(released, added, CHANGES_HEAD) == []


def test_export_schema_check_runs_the_contract(tmp_path: Path) -> None:
    released, changes = tmp_path / "released.graphql", tmp_path / "CHANGES.md"
    sdl = schema_sdl()
    released.write_text(sdl)
    changes.write_text(CHANGES_HEAD)
    assert check_contract(sdl, released, changes) == 0
    smaller = _without_field(sdl, "Query", "me")
    assert check_contract(smaller, released, changes) == 1
    changes.write_text(CHANGES_HEAD + "- breaking `Query.me`: gone, without deprecation\n")
    assert check_contract(smaller, released, changes) == 0
    # The committed files agree with today's code.
    assert check_contract(sdl) == 0


@pytest.mark.parametrize(
    ("description", "coordinate"),
    [
        ("Field Query.me was removed.", "Query.me"),
        ("Argument Query.stock(first:) was removed.", "Query.stock(first:)"),
        ("Enum value Role.NURSE was removed.", "Role.NURSE"),
        ("Lot was removed.", "Lot"),
        ("Lot was removed from union type SearchResult.", "SearchResult"),
        ("Directive @cost was removed.", "@cost"),
    ],
)
def test_coordinates_of_breaking_changes(description: str, coordinate: str) -> None:
    from server.core.contract import coordinate as coordinate_of

    assert coordinate_of(description) == coordinate
