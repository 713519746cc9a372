"""GraphQL fuzz: operations generated from the committed schema (hypothesis-graphql), sent as
every demo role to a real server. Whatever a caller sends, the answer is never HTTP 5xx nor an
INTERNAL_SERVER_ERROR, and the ledger still adds up afterwards.

The test runs a small, fixed-seed sample per role; `bench/fuzz.py` runs the large one with the
same generator (`fuzz_run`) and prints what it found.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import graphql
import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, queries
from strawberry.relay import to_base64

from server.demo import DEMO_PASSWORD
from server.services import Services
from tests.conftest import LiveServer, check_ledger

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "graphql_schema" / "schema.graphql"
ROLES = ("admin", "pharmacist", "warehouse", "nurse", "supplier", "auditor", "regulator")
TEST_OPERATIONS_PER_ROLE = 50


def _node_types(sdl: str) -> list[str]:
    return sorted(set(re.findall(r"^type (\w+) implements [^{]*\bNode\b", sdl, re.MULTILINE)))


def _text(value: str) -> graphql.StringValueNode:
    return graphql.StringValueNode(value=value)


def custom_scalars(sdl: str) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Scalar values that reach past coercion: well-formed global IDs of every Node type (small
    ids exist in the demo database), dates and datetimes with and without zones and at the
    edges of the calendar, decimals including NaN, infinities and huge exponents, JSON."""
    junk = st.text(string.printable, max_size=12).map(_text)
    ids = st.builds(
        lambda type_name, pk: _text(to_base64(type_name, pk)),
        st.sampled_from(_node_types(sdl)),
        st.integers(min_value=-1, max_value=40) | st.just(2**40),
    )
    dates = st.dates(min_value=date(1, 1, 1)).map(lambda d: _text(d.isoformat()))
    datetimes = st.datetimes(min_value=datetime(1, 1, 2), timezones=st.none() | st.just(UTC)).map(
        lambda d: _text(d.isoformat())
    )
    near_now = st.integers(min_value=-400, max_value=400).map(
        lambda days: _text((datetime.now(UTC) + timedelta(days=days)).isoformat())
    )
    decimals = st.decimals(allow_nan=True, allow_infinity=True).map(lambda d: _text(str(d)))
    prices = st.decimals(min_value=Decimal(0), max_value=Decimal(10**9), places=4).map(
        lambda d: _text(str(d))
    )
    json_values = st.recursive(
        st.one_of(junk, st.integers().map(lambda i: graphql.IntValueNode(value=str(i)))),
        lambda children: (
            st.dictionaries(
                st.sampled_from(
                    ["type", "eventList", "epcList", "bizStep", "eventTime", "quantity"]
                ),
                children,
                max_size=4,
            ).map(
                lambda fields: graphql.ObjectValueNode(
                    fields=tuple(
                        graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v)
                        for k, v in fields.items()
                    )
                )
            )
            | st.lists(children, max_size=3).map(lambda items: graphql.ListValueNode(values=items))
        ),
        max_leaves=6,
    )
    # Page sizes that pass (so resolvers run), and the edges of 32 bits.
    ints = st.one_of(
        st.integers(min_value=1, max_value=10),
        st.sampled_from([0, -1, 101, 10**9, 10**9 + 1, 2**31 - 1, -(2**31)]),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
    ).map(lambda i: graphql.IntValueNode(value=str(i)))
    texts = st.one_of(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
        st.sampled_from(["%", "_", "\\", "a%b_c", "WARD-A", "HOSP-CP", "DAMAGED", "x" * 300]),
        st.text(max_size=3).map(lambda t: t + "\x00"),
    ).map(_text)
    return {
        "Int": ints,
        "String": texts,
        "ID": st.one_of(ids, ids, junk),
        "Date": st.one_of(dates, near_now.map(lambda n: _text(n.value[:10])), junk),
        "DateTime": st.one_of(datetimes, near_now, junk),
        "Decimal": st.one_of(decimals, prices, junk),
        "JSON": json_values,
    }


def operations(sdl: str) -> st.SearchStrategy[str]:
    """Queries and mutations that pass schema validation, with literal arguments."""
    scalars = custom_scalars(sdl)
    return st.one_of(queries(sdl, custom_scalars=scalars), mutations(sdl, custom_scalars=scalars))


@dataclass
class FuzzReport:
    """What a run saw: operations sent, error codes by count, and every crash found."""

    operations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    internal: list[tuple[str, str, Any]] = field(default_factory=list)  # (role, query, answer)

    def record(self, role: str, query: str, response: httpx.Response) -> None:
        self.operations += 1
        self.statuses[response.status_code] += 1
        try:
            body = response.json()
        except ValueError:
            body = response.text
        errors = body.get("errors") or [] if isinstance(body, dict) else []
        for error in errors:
            self.codes[str((error.get("extensions") or {}).get("code"))] += 1
        crashed = response.status_code >= 500 or any(
            (error.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
            for error in errors
        )
        if crashed or not isinstance(body, dict):
            self.internal.append((role, query, body))


def sign_in(http: httpx.Client, username: str) -> str:
    response = http.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": DEMO_PASSWORD},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def generate(count: int, random_seed: int = 11) -> list[str]:
    """`count` operations from the committed schema, the same ones for the same seed (no
    shrinking, no example database). Generation is the slow part, so it is done once and the
    same operations are sent as every role."""
    strategy = operations(SCHEMA_FILE.read_text())
    generated: list[str] = []

    @seed(random_seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(query: str) -> None:
        generated.append(query)

    collect()
    return generated


def fuzz_run(
    url: str, roles: Iterable[str], operations: list[str], report: FuzzReport | None = None
) -> FuzzReport:
    """Send every operation as each role (signed in with the demo password)."""
    report = report or FuzzReport()
    with httpx.Client(base_url=url, timeout=60) as http:
        for role in roles:
            headers = {"Authorization": f"Bearer {sign_in(http, role)}"}
            for query in operations:
                response = http.post("/graphql", json={"query": query}, headers=headers)
                report.record(role, query, response)
    return report


async def test_fuzzed_operations_never_crash_as_any_role(
    live_server: LiveServer, services: Services
) -> None:
    """50 generated operations per role against a real server: no 5xx, no INTERNAL, and the
    ledger (balance = sum of movements, never negative) holds afterwards."""
    generated = await asyncio.to_thread(generate, TEST_OPERATIONS_PER_ROLE)
    report = await asyncio.to_thread(fuzz_run, live_server.url, ROLES, generated)
    assert report.operations >= len(ROLES) * TEST_OPERATIONS_PER_ROLE * 0.9, report
    assert not report.internal, "\n\n".join(
        f"as {role}: {query}\n-> {answer}" for role, query, answer in report.internal[:5]
    )
    # The sample must reach the resolvers, not stop at validation or sign-in.
    assert report.statuses[200] > report.operations // 2, report.statuses
    await check_ledger(services)
