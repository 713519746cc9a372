"""Test databases: every test runs on SQLite and on PostgreSQL, each on a fresh clone of a
template that holds the demo network (organisations, locations, one user per role, the
catalogue) without stock history. PostgreSQL databases are created per run and dropped after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy import event, select

from server.config import Settings
from server.core.migrate import upgrade
from server.core.security import Principal
from server.demo import DEMO_PASSWORD, seed_demo
from server.network.models import Location, Organisation, User
from server.services import Services

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("APOTHECA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"
METRICS_TOKEN = "test-metrics-token"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
RUN_ID = uuid.uuid4().hex[:8]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default="both",
        choices=["sqlite", "postgresql", "both"],
        help="which database(s) to run the database tests on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        choice = metafunc.config.getoption("--db")
        backends = ["sqlite", "postgresql"] if choice == "both" else [choice]
        if metafunc.definition.get_closest_marker("postgres_only"):
            backends = [b for b in backends if b == "postgresql"]
        metafunc.parametrize("backend", backends, scope="session")


def _pg_dsn(database: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def _sa_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _pg_available() -> bool:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
        return True
    except (OSError, asyncpg.PostgresError):
        return False


@dataclass
class Template:
    backend: str
    location: str  # SQLite file path, or PostgreSQL database name
    clones: list[str]


@pytest.fixture(scope="session")
def template(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    """Migrate and seed one template database per backend for the whole run."""
    if backend == "postgresql":
        if not _pg_available():
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_ADMIN_DSN}")
            pytest.skip("PostgreSQL not reachable")
        name = f"apotheca_tmpl_{RUN_ID}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = _sa_url(_pg_dsn(name))
        template = Template(backend, name, [])
    else:
        path = tmp_path_factory.mktemp("sqlite") / "template.db"
        url = f"sqlite+aiosqlite:///{path}"
        template = Template(backend, str(path), [])
    asyncio.run(_prepare(url))
    yield template
    if backend == "postgresql":
        for clone in [*template.clones, template.location]:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)'))


async def _prepare(url: str) -> None:
    await upgrade(url)
    services = Services.build(Settings(database_url=url, secret_key=TEST_SECRET))
    try:
        await seed_demo(services, history_days=-1)
    finally:
        await services.close()


@pytest.fixture
def database_url(template: Template, tmp_path: Path) -> str:
    """A fresh copy of the template for one test."""
    if template.backend == "postgresql":
        name = f"apotheca_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template.location}"'))
        template.clones.append(name)
        return _sa_url(_pg_dsn(name))
    path = tmp_path / "apotheca.db"
    shutil.copy(template.location, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, secret_key=TEST_SECRET)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = Services.build(settings)
    yield built
    await built.close()


@dataclass
class Demo:
    """Ids of the template's network and a principal per demo user."""

    services: Services
    orgs: dict[str, int]
    locations: dict[str, int]
    users: dict[str, int]
    principals: dict[str, Principal]


@pytest.fixture
async def demo(services: Services) -> Demo:
    async with services.db.read() as session:
        orgs = {o.name: o.id for o in (await session.execute(select(Organisation))).scalars()}
        locations = {x.code: x.id for x in (await session.execute(select(Location))).scalars()}
        users = {u.username: u.id for u in (await session.execute(select(User))).scalars()}
    principals = {name: await services.network.load_principal(uid) for name, uid in users.items()}
    return Demo(services, orgs, locations, users, principals)


# --- HTTP: the ASGI app in-process, and a real uvicorn server in a subprocess ------------------


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    from server.app import create_app

    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apotheca.test") as http:
        yield http


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]


def start_server(
    database_url: str,
    *,
    workers: int = 1,
    port: int | None = None,
    env_extra: dict[str, str] | None = None,
    stderr: Any = None,
) -> LiveServer:
    """`apotheca serve` in a subprocess; `env_extra` overrides settings, `stderr` takes its log."""
    port = port or free_port()
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": TEST_SECRET,
        "APOTHECA_LOG_LEVEL": "warning",
        "APOTHECA_METRICS_TOKEN": METRICS_TOKEN,
        **(env_extra or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded shared machine starts servers slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url, process)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become healthy in 120 s")


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    server = start_server(database_url)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


# --- GraphQL helpers ---------------------------------------------------------------------------


async def token_for(http: httpx.AsyncClient, username: str, password: str = DEMO_PASSWORD) -> str:
    response = await http.post(
        "/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def gql(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code in (200, 400), response.text
    return dict(response.json())


class Caller:
    """GraphQL calls as one signed-in user: the one way tests act as someone.

    Tests needing more (a domain's own shortcuts) subclass it and pass the class to `as_user`."""

    def __init__(self, http: httpx.AsyncClient, token: str, username: str = "") -> None:
        self.http, self.token, self.username = http, token, username

    async def raw(self, document: str, **variables: Any) -> dict[str, Any]:
        """The whole response body."""
        return await gql(self.http, document, variables, self.token)

    async def call(self, document: str, **variables: Any) -> dict[str, Any]:
        """The single root field's payload (no GraphQL-level errors allowed)."""
        body = await self.raw(document, **variables)
        assert "errors" not in body, body
        (payload,) = body["data"].values()
        return dict(payload)

    async def ok(self, document: str, **variables: Any) -> dict[str, Any]:
        """A mutation payload that reports no errors."""
        payload = await self.call(document, **variables)
        assert payload["errors"] == [], payload
        return payload

    async def refused(self, document: str, code: str, **variables: Any) -> str:
        """A mutation payload refused with exactly `code`; its message."""
        payload = await self.call(document, **variables)
        assert [e["code"] for e in payload["errors"]] == [code], payload
        return str(payload["errors"][0]["message"])

    async def forbidden_read(self, document: str, **variables: Any) -> str:
        """A query refused as FORBIDDEN at the GraphQL level; its message."""
        body = await self.raw(document, **variables)
        assert body.get("errors"), body
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
        return str(body["errors"][0]["message"])


CallerT = TypeVar("CallerT", bound=Caller)


@pytest.fixture
def as_user(client: httpx.AsyncClient) -> Callable[..., Awaitable[Any]]:
    """`await as_user("nurse")` signs in and returns a Caller (or `as_user("nurse", Kind)`; a
    Kind's own constructor arguments go after it, e.g. `as_user("nurse", Counter, demo=demo)`)."""

    async def sign_in(username: str, kind: type[CallerT] = Caller, **extra: Any) -> CallerT:  # type: ignore[assignment]
        return kind(client, await token_for(client, username), username, **extra)

    return sign_in


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds (instead of sleeping a guessed time); fail after `within` s."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.02)


async def gauge(server: httpx.AsyncClient | str, series: str) -> int:
    """One series of the server's /metrics, e.g. `apotheca_subscribers{topic="stock"}` (0 when
    absent); `server` is a client of it or its URL."""
    if isinstance(server, str):
        async with httpx.AsyncClient(base_url=server, timeout=10) as http:
            return await gauge(http, series)
    response = await server.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return int(float(value))
    return 0


async def wait_for_subscribers(
    server: httpx.AsyncClient | str, count: int, topic: str = "stock", within: float = 10.0
) -> None:
    """Wait until the server holds exactly `count` subscribers of `topic`. Each subscribe
    re-checks its principal first (a database read), so a fixed pause is not enough."""
    series = f'apotheca_subscribers{{topic="{topic}"}}'

    async def reached() -> bool:
        return await gauge(server, series) == count

    await eventually(reached, within=within, what=f"{count} subscribers of {topic}")


def gid(type_name: str, pk: int) -> str:
    from strawberry.relay import to_base64

    return to_base64(type_name, pk)


async def first_product_id(services: Services, offset: int = 0) -> int:
    from server.catalog.models import Product

    async with services.db.read() as session:
        return int(
            (
                await session.execute(
                    select(Product.id).order_by(Product.id).offset(offset).limit(1)
                )
            ).scalar_one()
        )


async def receive(
    demo: Demo,
    location: str,
    quantity: int,
    *,
    batch: str | None = None,
    expiry_days: int = 365,
    product_id: int | None = None,
    as_user: str = "admin",
) -> int:
    """Receive `quantity` of a new (or named) batch at `location`; returns the lot id."""
    from datetime import timedelta

    from server.core.db import utcnow
    from server.inventory.models import MovementKind
    from server.inventory.service import MovementRequest, NewLot

    product_id = product_id or await first_product_id(demo.services)
    result = await demo.services.ledger.record(
        demo.principals[as_user],
        [
            MovementRequest(
                MovementKind.RECEIVE,
                demo.locations[location],
                quantity,
                new_lot=NewLot(
                    product_id,
                    batch or f"T{uuid.uuid4().hex[:10].upper()}",
                    utcnow().date() + timedelta(days=expiry_days),
                ),
            )
        ],
        operation="test.receive",
    )
    return result.movements[0].lot_id


async def balance_of(services: Services, location_id: int, lot_id: int) -> int:
    from server.inventory.models import Balance

    async with services.db.read() as session:
        value = (
            await session.execute(
                select(Balance.quantity).where(
                    Balance.location_id == location_id, Balance.lot_id == lot_id
                )
            )
        ).scalar()
    return int(value or 0)


async def row_counts(services: Services) -> dict[str, int]:
    """How many movements, balances and audit events exist: 'unchanged' means these match."""
    from sqlalchemy import func

    from server.core.audit import AuditEvent
    from server.inventory.models import Balance, IdempotencyRecord, Movement

    counts = {}
    async with services.db.read() as session:
        for model in (Movement, Balance, AuditEvent, IdempotencyRecord):
            counts[model.__tablename__] = int(
                (await session.execute(select(func.count()).select_from(model))).scalar_one()
            )
    return counts


async def check_ledger(services: Services) -> int:
    """Balance = sum of its movements, never negative, and the last balance_after agrees."""
    from sqlalchemy import func

    from server.inventory.models import Balance, Movement

    async with services.db.read() as session:
        sums = {
            (loc, lot): int(total)
            for loc, lot, total in (
                await session.execute(
                    select(
                        Movement.location_id, Movement.lot_id, func.sum(Movement.quantity)
                    ).group_by(Movement.location_id, Movement.lot_id)
                )
            ).all()
        }
        last = {
            (m.location_id, m.lot_id): m.balance_after
            for m in (await session.execute(select(Movement).order_by(Movement.id))).scalars()
        }
        balances = list((await session.execute(select(Balance))).scalars())
    assert {(b.location_id, b.lot_id) for b in balances} == set(sums)
    for balance in balances:
        key = (balance.location_id, balance.lot_id)
        assert balance.quantity == sums[key], key
        assert balance.quantity >= 0, key
        assert last[key] == balance.quantity, key
    return len(balances)


@contextmanager
def sql_statements(demo: Demo) -> Iterator[list[str]]:
    """Every SQL statement any engine of the app sends while the block runs (the driver path
    announces its statements too), in order."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engines = [engine.sync_engine for engine in demo.services.db.engines]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
