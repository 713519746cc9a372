"""What do the ledger's own statements cost the database, and how much of that do we keep?

`bench/ledger.py` compares the ledger with a raw `executemany` of bare movement rows plus a
balance upsert. The ledger writes more than that, and must: the hash-chained audit event, the
idempotency record, cost rows, supervision totals and statuses, each with its indexes and
foreign keys. This bench measures that share directly, in one run:

  (o) ours      LedgerService.record, N movements in calls of `size`, on a migrated database
                holding the demo network; every statement sent to the database is captured
                (`before_cursor_execute`, which the driver path fires too) with its parameters,
                grouped by transaction.
  (r) replay    the captured statements, byte for byte, replayed on a copy of the database as
                it was before (o) (SQLite: the backup API; PostgreSQL: CREATE DATABASE ...
                TEMPLATE) by the bare driver (stdlib sqlite3, or asyncpg), one transaction per
                captured transaction: what the database itself spends on exactly our work,
                with no Python layer above the driver.
  (d) raw       bench/ledger.py's raw floor (bare rows, executemany, 1,000 per transaction).

(r)/(d) is the most any Python layer could reach of (d) while writing these rows; (o)/(r) is
how much of the database's own speed for our work we keep. Run:

    .venv/bin/python bench/ledger_sql.py [--movements N] [--sizes 1 1000]
        [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy import event

from bench.common import Backend, Stopwatch, load, prepared, table_lines
from bench.ledger import Result, bench_raw, check_count


@dataclass
class Transaction:
    statements: list[tuple[str, Any, bool]] = field(default_factory=list)  # sql, params, many
    committed: bool = False


class Capture:
    """Every statement each connection sends, grouped into its transactions."""

    def __init__(self, engines: Any) -> None:
        self.engines = [engine.sync_engine for engine in engines]
        self.open: dict[int, Transaction] = {}
        self.done: list[Transaction] = []

    def _statement(
        self, connection: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        # SQLAlchemy's insertmanyvalues announces its multi-row INSERTs as executemany but
        # runs each as one statement with flat parameters
        many = many and bool(params) and isinstance(params[0], tuple | list)
        # copy: a caller may reuse its parameter list after the call
        kept = [tuple(row) for row in params] if many else tuple(params or ())
        self.open.setdefault(id(connection), Transaction()).statements.append((sql, kept, many))

    def _end(self, committed: bool) -> Any:
        def ended(connection: Any) -> None:
            transaction = self.open.pop(id(connection), None)
            if transaction is not None and transaction.statements:
                transaction.committed = committed
                self.done.append(transaction)

        return ended

    def __enter__(self) -> Capture:
        self._listeners = [
            ("before_cursor_execute", self._statement),
            ("commit", self._end(True)),
            ("rollback", self._end(False)),
        ]
        for engine in self.engines:
            for name, listener in self._listeners:
                event.listen(engine, name, listener)
        return self

    def __exit__(self, *_: object) -> None:
        for engine in self.engines:
            for name, listener in self._listeners:
                event.remove(engine, name, listener)

    @property
    def statements(self) -> int:
        return sum(len(t.statements) for t in self.done)


def replay_sqlite(path: str, transactions: list[Transaction]) -> Stopwatch:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            connection.execute(f"PRAGMA {pragma}")  # as the application's engines
        with Stopwatch() as watch:
            for transaction in transactions:
                statements = transaction.statements
                if not statements[0][0].lstrip().upper().startswith("BEGIN"):
                    connection.execute("BEGIN")
                for sql, params, many in statements:
                    if many:
                        connection.executemany(sql, params)
                    else:
                        connection.execute(sql, params).fetchall()
                connection.execute("COMMIT" if transaction.committed else "ROLLBACK")
        return watch
    finally:
        connection.close()


async def replay_asyncpg(dsn: str, transactions: list[Transaction]) -> Stopwatch:
    connection = await asyncpg.connect(dsn)
    try:
        with Stopwatch() as watch:
            for transaction in transactions:
                run = connection.transaction()
                await run.start()
                for sql, params, many in transaction.statements:
                    if many:
                        await connection.executemany(sql, params)
                    else:
                        await connection.fetch(sql, *params)
                await (run.commit() if transaction.committed else run.rollback())
        return watch
    finally:
        await connection.close()


async def snapshot(backend: Backend, fixture: Any, label: str) -> str:
    """A copy of the fixture's database as it is now: a file path or an asyncpg dsn."""
    if backend.name == "sqlite":
        source = fixture.url.removeprefix("sqlite+aiosqlite:///")
        target = str(Path(source).with_name(f"{label}.db"))
        with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
            live.backup(copy)
        return target
    for engine in fixture.services.db.engines:  # TEMPLATE wants no one else connected
        await engine.dispose()
    source = fixture.url.rsplit("/", 1)[1].split("?")[0]
    _, dsn = await backend.create(label, template=source)
    return dsn


async def measure(backend: Backend, n: int, size: int) -> tuple[Result, Result, int]:
    async with prepared(backend, f"ours{size}") as fx:
        ledger = fx.services.ledger

        async def run(prefix: str, count: int) -> None:
            for start in range(0, count, size):
                requests = [fx.request(i) for i in range(start, min(start + size, count))]
                await ledger.record(
                    fx.principal,
                    requests,
                    operation="bench.sql",
                    idempotency_key=f"{prefix}{start}",
                )

        await run(f"warm-{fx.tag}-", max(size, 20))
        copy = await snapshot(backend, fx, f"replay{size}")
        prefix = f"sql-{fx.tag}-"
        with Capture(fx.services.db.engines) as capture, Stopwatch() as watch:
            await run(prefix, n)
        check_count(await fx.count(prefix), n, "ours")
    if backend.name == "sqlite":
        replayed = replay_sqlite(copy, capture.done)
    else:
        replayed = await replay_asyncpg(copy, capture.done)
    ours = Result(f"(o) ours, {size} per call", n, watch.wall, watch.cpu)
    replay = Result(f"(r) replay, {size} per call", n, replayed.wall, replayed.cpu)
    return ours, replay, capture.statements


async def main_async(args: argparse.Namespace) -> None:
    before = load()
    rows = []
    with tempfile.TemporaryDirectory(prefix="apotheca-bench-") as workdir:
        backend = Backend(args.database, args.pg_url, Path(workdir))
        database = await backend.describe()
        try:
            raw = await bench_raw(backend, args.movements)
            for size in args.sizes:
                print(f"running {size} per call ...", file=sys.stderr, flush=True)
                ours, replay, statements = await measure(backend, args.movements, size)
                for result in (ours, replay):
                    rows.append(
                        [
                            result.path,
                            f"{result.rate:,.0f}",
                            f"{1000 * (result.cpu or 0) / result.movements:.3f}",
                            f"{result.rate / raw.rate:.3f}",
                            f"{ours.rate / replay.rate:.3f}" if result is ours else "-",
                            f"{statements / args.movements:.2f}",
                            load(),
                        ]
                    )
            raw_cpu = f"{1000 * (raw.cpu or 0) / raw.movements:.3f}"
            rows.append([raw.path, f"{raw.rate:,.0f}", raw_cpu, "1.000", "-", "-", load()])
        finally:
            await backend.drop_all()
    print(
        f"the ledger's own statements replayed raw: {database}, {args.movements} movements per "
        f"path, {os.cpu_count()} CPUs, load before {before}"
    )
    headers = ["path", "movements/s", "CPU ms/mvt", "x (d)", "(o)/(r)", "SQL/mvt", "load"]
    for line in table_lines(headers, rows):
        print(line)
    print(
        "CPU: this process (for (r) on SQLite that is the database's own work; on PostgreSQL "
        "the server's CPU is not in it). (r)/(d) bounds what any layer above the driver could "
        "reach of (d) while writing the ledger's rows."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--movements", type=int, default=2000, help="movements per path")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 1000], help="per call")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/",
        help="server to create (and drop) the benchmark databases on",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
