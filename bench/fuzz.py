"""The large GraphQL fuzz: thousands of operations generated from the committed schema
(hypothesis-graphql, as in tests/test_fuzz.py), sent as every demo role to a real uvicorn
server on a freshly migrated and seeded database (the same operations as each role).

Prints the number of operations, the HTTP statuses, the errors by code, and every operation
that got an HTTP 5xx or an INTERNAL_SERVER_ERROR (with its query), then checks the ledger.
Exits 1 if anything crashed. Run:

    .venv/bin/python bench/fuzz.py [--per-role N] [--seed S] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Backend, live_server, load, prepared
from tests.conftest import check_ledger
from tests.test_fuzz import ROLES, FuzzReport, fuzz_run, generate


def summary(report: FuzzReport, indent: str = "") -> None:
    """The running totals: statuses, codes and crashes (printed after each role, so a run cut
    short still says what it saw)."""
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(report.statuses.items()))
    codes = ", ".join(f"{c}: {n}" for c, n in report.codes.most_common())
    print(f"{indent}HTTP statuses: {statuses}", flush=True)
    print(f"{indent}errors by code: {codes}", flush=True)
    print(f"{indent}crashes so far: {len(report.internal)}", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-role", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    roles = [r for r in args.roles.split(",") if r]
    with tempfile.TemporaryDirectory(prefix="apotheca-fuzz-") as workdir:
        return await run(args, roles, Backend(args.database, args.pg_url, Path(workdir)))


async def run(args: argparse.Namespace, roles: list[str], backend: Backend) -> int:
    try:
        async with prepared(backend, "fuzz", lot_count=4, opening_stock=1000) as fixture:
            report = FuzzReport()
            started = time.monotonic()
            generated = await asyncio.to_thread(generate, args.per_role, args.seed)
            generating = time.monotonic() - started
            print(f"generated {len(generated)} operations in {generating:.0f} s", flush=True)
            with live_server(fixture.url) as (url, _pid):
                for role in roles:
                    await asyncio.to_thread(fuzz_run, url, [role], generated, report)
                    print(f"  {role}: {report.operations} operations so far", flush=True)
                    summary(report, "    ")
            elapsed = time.monotonic() - started - generating
            shelves = await check_ledger(fixture.services)
    finally:
        await backend.drop_all()
    print(f"\nfuzz on {args.database}, seed {args.seed}, load {load()}")
    print(
        f"operations: {report.operations} ({len(generated)} distinct, sent as each of"
        f" {len(roles)} roles) in {elapsed:.0f} s"
    )
    print("HTTP statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(report.statuses.items())))
    print("errors by code:")
    for code, count in report.codes.most_common():
        print(f"  {code:32} {count}")
    print(f"ledger checked: {shelves} shelves, balance = sum of movements, none negative")
    print(f"crashes (5xx or INTERNAL_SERVER_ERROR): {len(report.internal)}")
    for role, query, answer in report.internal:
        print(f"\n--- as {role}:\n{query}\n-> {answer}")
    return 1 if report.internal else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
