"""`apotheca` command line: serve | migrate | seed | create-user | import-catalog |
export-schema | verify-audit | check-expiry."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import Settings

if TYPE_CHECKING:
    from server.services import Services

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "graphql_schema" / "schema.graphql"


def with_services(action: Callable[[Services], Awaitable[int]]) -> int:
    """Run one async command against the configured database, closing it afterwards."""
    from server.services import Services

    async def run() -> int:
        services = Services.build(Settings.from_env())
        try:
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(run())


async def _migrate(settings: Settings) -> None:
    from server.core.migrate import upgrade

    if settings.database_url.startswith("sqlite"):
        path = settings.database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    await upgrade(settings.database_url)


def cmd_migrate(_: argparse.Namespace) -> int:
    asyncio.run(_migrate(Settings.from_env()))
    print("database is at the latest schema")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from server.demo import seed_demo

    if not args.demo:
        print("only `apotheca seed --demo` exists for now", file=sys.stderr)
        return 2

    async def seed(services: Services) -> int:
        progress = lambda line: print(line, flush=True)  # noqa: E731
        print(await seed_demo(services, only_if_empty=args.if_empty, progress=progress))
        return 0

    return with_services(seed)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.migrate:
        asyncio.run(_migrate(Settings.from_env()))
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=os.environ.get("APOTHECA_LOG_LEVEL", "info"),
        proxy_headers=True,
    )
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from server.core.errors import DomainError
    from server.core.security import Role
    from server.network.models import Location, Organisation

    password = args.password or os.environ.get("APOTHECA_NEW_PASSWORD") or getpass.getpass()

    async def create(services: Services) -> int:
        async with services.db.read() as session:
            org_id = None
            if args.organisation:
                org_id = (
                    await session.execute(
                        select(Organisation.id).where(Organisation.name == args.organisation)
                    )
                ).scalar()
                if org_id is None:
                    print(f"no organisation named {args.organisation!r}", file=sys.stderr)
                    return 1
            location_ids = []
            for code in args.location or []:
                location_id = (
                    await session.execute(select(Location.id).where(Location.code == code.upper()))
                ).scalar()
                if location_id is None:
                    print(f"no location with code {code!r}", file=sys.stderr)
                    return 1
                location_ids.append(location_id)
        try:
            user = await services.network.create_user(
                None,
                username=args.username,
                full_name=args.full_name or args.username,
                password=password,
                roles=[Role(r) for r in args.role],
                organisation_id=org_id,
                location_ids=location_ids,
            )
        except DomainError as error:
            print(f"refused: {error.message}", file=sys.stderr)
            return 1
        print(f"created user {user.username} (id {user.id})")
        return 0

    return with_services(create)


def cmd_import_catalog(args: argparse.Namespace) -> int:
    from server.catalog.service import CatalogImportError

    text = Path(args.csv).read_text(encoding="utf-8-sig")

    async def import_csv(services: Services) -> int:
        try:
            products = await services.catalog.import_csv(None, text)
        except CatalogImportError as error:
            print(f"refused: {error.message}", file=sys.stderr)
            for row in error.errors:
                where = f"row {row.row}" + (f", {row.field}" if row.field else "")
                print(f"  {where}: {row.message}", file=sys.stderr)
            return 1
        print(f"imported {len(products)} products")
        return 0

    return with_services(import_csv)


def cmd_export_schema(args: argparse.Namespace) -> int:
    from server.schema import schema_sdl

    sdl = schema_sdl()
    if args.check:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != sdl:
            print(
                f"{SCHEMA_PATH} differs from the code; run `apotheca export-schema`",
                file=sys.stderr,
            )
            return 1
        print("schema file matches the code")
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(sdl)
    print(f"wrote {SCHEMA_PATH}")
    return 0


def cmd_verify_audit(_: argparse.Namespace) -> int:
    from server.core.audit import verify

    async def check(services: Services) -> int:
        async with services.db.read() as session:
            result = await verify(session)
        if result.ok:
            print(f"audit chain intact: {result.checked} events verified")
            return 0
        print(
            f"audit chain BROKEN at event seq {result.first_bad_seq} (row id "
            f"{result.first_bad_id}): {result.problem}; {result.checked} events before it "
            "are intact",
            file=sys.stderr,
        )
        return 1

    return with_services(check)


def cmd_check_expiry(_: argparse.Namespace) -> int:
    """One expiry sweep, for cron or an operator; the server also runs it periodically."""

    async def check(services: Services) -> int:
        result = await services.alerts.check_expiry()
        print(
            f"expiry check: {result.raised} raised, {result.resolved} resolved, "
            f"{result.open_total} open"
        )
        return 0

    return with_services(check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apotheca", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/websocket server")
    serve.add_argument("--host", default=os.environ.get("APOTHECA_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("APOTHECA_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--migrate", action="store_true", help="migrate before starting")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="bring the database to the latest schema").set_defaults(
        func=cmd_migrate
    )

    seed = sub.add_parser("seed", help="load the demo network")
    seed.add_argument("--demo", action="store_true")
    seed.add_argument("--if-empty", action="store_true", help="do nothing if data exists")
    seed.set_defaults(func=cmd_seed)

    user = sub.add_parser("create-user", help="add a user (password prompted if not given)")
    user.add_argument("username")
    user.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[
            "ADMIN",
            "PHARMACIST",
            "WAREHOUSE_MANAGER",
            "NURSE",
            "SUPPLIER",
            "AUDITOR",
            "REGULATOR",
        ],
    )
    user.add_argument("--full-name")
    user.add_argument("--organisation", help="organisation name")
    user.add_argument("--location", action="append", help="location code (repeatable)")
    user.add_argument("--password", help="or APOTHECA_NEW_PASSWORD, or prompted")
    user.set_defaults(func=cmd_create_user)

    catalog = sub.add_parser("import-catalog", help="import products from CSV (all or none)")
    catalog.add_argument("csv")
    catalog.set_defaults(func=cmd_import_catalog)

    schema = sub.add_parser("export-schema", help="write graphql_schema/schema.graphql")
    schema.add_argument("--check", action="store_true", help="fail if the file is out of date")
    schema.set_defaults(func=cmd_export_schema)

    sub.add_parser("verify-audit", help="check the audit hash chain").set_defaults(
        func=cmd_verify_audit
    )

    sub.add_parser(
        "check-expiry", help="raise and resolve expiry alerts now (prints the counts)"
    ).set_defaults(func=cmd_check_expiry)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
