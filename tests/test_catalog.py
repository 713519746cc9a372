"""The catalogue as users meet it: product search (name, GTIN, ATC), lots by expiry, cursor
pagination, and the all-or-nothing CSV import run through the real command line."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from server.catalog.demo_data import CSV_FIELDS, DEMO_PRODUCTS, demo_products_csv_rows
from server.catalog.models import Product
from server.catalog.service import parse_catalog_csv
from server.core.db import utcnow
from server.core.gs1 import gtin_check_digit
from server.services import Services
from tests.conftest import ROOT, Demo, gql, receive, token_for

PRODUCTS = """
query($first: Int!, $after: String, $search: String, $gtin: String, $atc: String) {
  products(first: $first, after: $after, search: $search, gtin: $gtin, atcCode: $atc) {
    edges { cursor node { id name strength approvalNumber atcCode gtins controlled
                          controlledSchedule } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def products(
    client: httpx.AsyncClient, token: str, **variables: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of `products`: the nodes and the pageInfo."""
    result = await gql(client, PRODUCTS, {"first": 100, **variables}, token)
    assert "errors" not in result, result
    connection = result["data"]["products"]
    return [e["node"] for e in connection["edges"]], connection["pageInfo"]


async def product_count(services: Services) -> int:
    async with services.db.read() as session:
        return int((await session.execute(select(func.count(Product.id)))).scalar_one())


def gtin(body: str) -> str:
    return body + gtin_check_digit(body)


# --- queries -------------------------------------------------------------------------------


async def test_search_by_name_is_a_case_insensitive_substring(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """Staff type part of a name in any case; every matching product comes back."""
    token = await token_for(client, "nurse")
    expected = sorted(p.approval_number for p in DEMO_PRODUCTS if "cetam" in p.name.lower())
    assert len(expected) == 2
    for text in ("PARACETAMOL", "cetam", " pArAcEtAmOl "):
        nodes, _ = await products(client, token, search=text)
        assert sorted(n["approvalNumber"] for n in nodes) == expected, text
    nodes, _ = await products(client, token, search="no such medicine")
    assert nodes == []


async def test_search_by_gtin_accepts_the_gtin13_form(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """A scanner may yield a GTIN-13; the stored GTIN-14 (leading 0) must still be found."""
    token = await token_for(client, "pharmacist")
    morphine = next(p for p in DEMO_PRODUCTS if p.name == "Morphine sulfate")
    stored = [gtin(b) for b in morphine.gtin_bodies]
    assert len(stored) == 2 and all(len(g) == 14 and g.startswith("0") for g in stored)
    for query in (stored[0], stored[0][1:], stored[1][1:]):
        nodes, _ = await products(client, token, gtin=query)
        assert [n["approvalNumber"] for n in nodes] == [morphine.approval_number], query
        assert nodes[0]["gtins"] == stored


async def test_search_by_atc_prefix_finds_analgesics_and_opioids(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """ATC is hierarchical: a prefix like N02 (analgesics) selects the whole group."""
    token = await token_for(client, "pharmacist")
    expected = sorted(p.approval_number for p in DEMO_PRODUCTS if p.atc_code.startswith("N02"))
    assert len(expected) >= 5
    for prefix in ("N02", "n02"):
        nodes, _ = await products(client, token, atc=prefix)
        assert sorted(n["approvalNumber"] for n in nodes) == expected
        assert all(n["atcCode"].startswith("N02") for n in nodes)
    opioids, _ = await products(client, token, atc="N02A")
    assert {n["name"] for n in opioids} >= {"Morphine sulfate", "Fentanyl"}
    assert all(n["controlled"] for n in opioids)


async def test_controlled_is_true_exactly_for_scheduled_products(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """`controlled` drives the extra checks for narcotics; it must follow the schedule."""
    token = await token_for(client, "admin")
    nodes, _ = await products(client, token)
    assert len(nodes) == len(DEMO_PRODUCTS)
    schedule = {p.approval_number: p.controlled_schedule for p in DEMO_PRODUCTS}
    for node in nodes:
        assert node["controlledSchedule"] == schedule[node["approvalNumber"]]
        assert node["controlled"] is (schedule[node["approvalNumber"]] is not None)
    assert sum(n["controlled"] for n in nodes) >= 3


async def test_pagination_walks_every_product_exactly_once(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """Following endCursor page by page must neither skip nor repeat a product."""
    token = await token_for(client, "auditor")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        nodes, info = await products(client, token, first=7, after=after)
        pages += 1
        assert len(nodes) <= 7
        seen += [n["id"] for n in nodes]
        if not info["hasNextPage"]:
            break
        assert len(nodes) == 7
        after = info["endCursor"]
        assert pages < 20, "pagination does not terminate"
    total = await product_count(demo.services)
    assert total == 51
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 7)


LOTS = """
query($before: Date, $after: String) {
  lots(first: 2, expiringBefore: $before, after: $after) {
    edges { node { batchNumber expiryDate expired product { name } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_lots_expiring_before_a_date_in_expiry_order(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """The expiry view lists only lots expiring before the date, soonest first, across pages."""
    token = await token_for(client, "pharmacist")
    for batch, days in (("LATE", 400), ("SOON", 10), ("PAST", -3), ("MID", 45)):
        await receive(demo, "HOSP-CP", 5, batch=batch, expiry_days=days)
    cutoff = (utcnow().date() + timedelta(days=60)).isoformat()
    batches: list[str] = []
    after: str | None = None
    while True:
        result = await gql(client, LOTS, {"before": cutoff, "after": after}, token)
        assert "errors" not in result, result
        connection = result["data"]["lots"]
        batches += [e["node"]["batchNumber"] for e in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert batches == ["PAST", "SOON", "MID"]

    result = await gql(client, LOTS, {"before": None}, token)
    nodes = [e["node"] for e in result["data"]["lots"]["edges"]]
    assert [(n["batchNumber"], n["expired"]) for n in nodes] == [("PAST", True), ("SOON", False)]


# --- CSV import: the pure parser -----------------------------------------------------------


def to_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_parse_catalog_csv_accepts_the_whole_demo_catalogue() -> None:
    """The demo data is the reference file: it must parse cleanly, row for row."""
    rows, errors = parse_catalog_csv(to_csv(demo_products_csv_rows()))
    assert errors == []
    assert len(rows) == 51
    assert [r.approval_number for _, r in rows] == [p.approval_number for p in DEMO_PRODUCTS]
    assert sum(r.controlled_schedule is not None for _, r in rows) == sum(
        p.controlled_schedule is not None for p in DEMO_PRODUCTS
    )


# --- CSV import through the command line ---------------------------------------------------


def new_row(name: str, approval: str, *gtins: str, atc: str = "A04AA01") -> dict[str, str]:
    return {
        "name": name,
        "strength": "4 mg",
        "dosage_form": "tablet",
        "unit": "pack of 10",
        "atc_code": atc,
        "approval_number": approval,
        "gtins": ";".join(gtins),
        "controlled_schedule": "",
        "storage": "ROOM",
        "unit_cost": "2.50",
    }


async def run_import(database_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`apotheca import-catalog` as an operator would run it, in its own process."""
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": "anything-long-enough-0123456789abcdef",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "import-catalog", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_import_of_a_valid_file(
    client: httpx.AsyncClient, demo: Demo, database_url: str, tmp_path: Path
) -> None:
    """Three new products go in at once and are immediately searchable."""
    rows = [
        new_row("Ondansetron", "MA-2024-10001", gtin("400638133393")),
        new_row("Granisetron", "MA-2024-10002", gtin("1400638133400"), gtin("400638133410")),
        new_row("Aprepitant", "MA-2024-10003", atc="A04AD12"),
    ]
    path = tmp_path / "catalog.csv"
    path.write_text(to_csv(rows), encoding="utf-8")
    before = await product_count(demo.services)
    result = await run_import(database_url, path)
    assert result.returncode == 0, result.stderr
    assert "imported 3 products" in result.stdout
    assert await product_count(demo.services) == before + 3

    token = await token_for(client, "pharmacist")
    nodes, _ = await products(client, token, search="setron")
    assert {n["approvalNumber"] for n in nodes} >= {"MA-2024-10001", "MA-2024-10002"}
    nodes, _ = await products(client, token, atc="A04AD")
    assert [(n["name"], n["approvalNumber"]) for n in nodes] == [("Aprepitant", "MA-2024-10003")]
    nodes, _ = await products(client, token, gtin=gtin("400638133410"))
    assert [n["name"] for n in nodes] == ["Granisetron"]
    assert nodes[0]["gtins"] == [gtin("1400638133400"), "0" + gtin("400638133410")]


def demo_gtin() -> str:
    return gtin(DEMO_PRODUCTS[0].gtin_bodies[0])


def bad_file_rows() -> list[dict[str, str]]:
    """Row 2 valid; rows 3-7 each wrong in exactly one way."""
    wrong = gtin("400638133500")
    wrong = wrong[:-1] + str((int(wrong[-1]) + 1) % 10)
    return [
        new_row("Ondansetron", "MA-2024-20001", gtin("400638133600")),  # row 2: valid
        new_row("Granisetron", "MA-2024-20002", wrong),  # row 3: check digit
        new_row("", "MA-2024-20003"),  # row 4: no name
        new_row("Aprepitant", "MA-2024-20004", atc="A4AD12"),  # row 5: ATC
        new_row("Palonosetron", "MA-2024-20001"),  # row 6: approval number of row 2
        new_row("Tropisetron", "MA-2024-20007", demo_gtin()),  # row 7: GTIN in the database
    ]


async def test_cli_import_with_bad_rows_imports_nothing(
    demo: Demo, database_url: str, tmp_path: Path
) -> None:
    """One bad row refuses the whole file; stderr says which row and field to fix."""
    path = tmp_path / "bad.csv"
    path.write_text(to_csv(bad_file_rows()), encoding="utf-8")
    before = await product_count(demo.services)
    result = await run_import(database_url, path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "nothing was imported" in result.stderr
    stderr = result.stderr.lower()
    assert "row 3, gtins" in stderr and "expected" in stderr
    assert "row 4, name" in stderr
    assert "row 5, atc" in stderr  # the field is reported as atcCode
    assert "row 6, approval_number" in stderr and "row 2" in stderr
    assert "row 2," not in stderr, "the valid row was reported as bad"
    assert await product_count(demo.services) == before, "part of a refused file was imported"
    async with demo.services.db.read() as session:
        approvals = set((await session.execute(select(Product.approval_number))).scalars())
    assert "MA-2024-20001" not in approvals


async def test_cli_import_names_database_clashes_with_the_other_bad_rows(
    demo: Demo, database_url: str, tmp_path: Path
) -> None:
    """'Fix the file in one pass' means every bad row, including clashes with stored data."""
    path = tmp_path / "bad.csv"
    path.write_text(to_csv(bad_file_rows()), encoding="utf-8")
    result = await run_import(database_url, path)
    assert result.returncode == 1
    assert "row 7, gtins" in result.stderr.lower()


async def test_cli_import_refuses_a_gtin_already_in_the_database(
    demo: Demo, database_url: str, tmp_path: Path
) -> None:
    """A file that parses cleanly but clashes with stored data still imports nothing."""
    rows = [
        new_row("Ondansetron", "MA-2024-30001", gtin("400638133700")),
        new_row("Tropisetron", "MA-2024-30002", demo_gtin()),
    ]
    path = tmp_path / "clash.csv"
    path.write_text(to_csv(rows), encoding="utf-8")
    before = await product_count(demo.services)
    result = await run_import(database_url, path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "row 3, gtins" in result.stderr.lower()
    assert demo_gtin() in result.stderr
    assert "row 2," not in result.stderr.lower()
    assert await product_count(demo.services) == before
