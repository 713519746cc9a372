"""`apotheca` command line: serve | migrate | seed | create-user | create-client | import-catalog |
export-schema | verify-audit | check-expiry | forecast-refresh | epcis-export | epcis-import |
supervision-recompute | finance-backfill."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import Settings

if TYPE_CHECKING:
    from server.services import Services

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "graphql_schema" / "schema.graphql"
RELEASED_PATH = SCHEMA_PATH.with_name("released.graphql")
CHANGES_PATH = SCHEMA_PATH.with_name("CHANGES.md")


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

    from server.core.logs import log_config

    level = os.environ.get("APOTHECA_LOG_LEVEL", "info")
    if args.migrate:
        asyncio.run(_migrate(Settings.from_env()))
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("--ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    if args.announce:
        _announce_when_ready(args)
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=level,
        log_config=log_config(level, args.log_format),
        proxy_headers=False,  # the app believes X-Forwarded-For from trusted_proxies only
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    return 0


def _announce_when_ready(args: argparse.Namespace) -> None:
    """Once /healthz answers, say where to go and whom to sign in as (`make run`'s last lines),
    so a newcomer does not have to read the log to find the address or the demo users."""
    import socket
    import ssl
    import threading
    import time
    import urllib.request

    sign_ins = asyncio.run(_sign_ins(Settings.from_env()))
    scheme = "https" if args.ssl_certfile else "http"
    local = "127.0.0.1" if args.host in {"0.0.0.0", "::"} else args.host
    health = f"{scheme}://{local}:{args.port}/healthz"
    context = ssl._create_unverified_context() if args.ssl_certfile else None

    def wait_and_print() -> None:
        for _ in range(600):
            try:
                with urllib.request.urlopen(health, timeout=1, context=context):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            return
        lines = [f"Apotheca is ready: {scheme}://{local}:{args.port}/  (GraphiQL at /graphql)"]
        if args.host in {"0.0.0.0", "::"}:
            for address in _lan_addresses(socket):
                lines.append(
                    f"  from a phone or tablet on this network: {scheme}://{address}:{args.port}/"
                )
            if scheme == "http":
                lines.append(
                    "  (the camera and offline use need HTTPS there: make run HOST=0.0.0.0 HTTPS=1)"
                )
        lines.extend(sign_ins)
        lines.append("Stop with Ctrl+C.")
        print("\n".join(lines), file=sys.stderr, flush=True)

    threading.Thread(target=wait_and_print, daemon=True).start()


def _lan_addresses(socket: Any) -> list[str]:
    """This machine's IPv4 addresses other than loopback (best effort, no network traffic)."""
    addresses: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addresses.add(info[4][0])
    except OSError:
        pass
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, it only picks a route
        addresses.add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    return sorted(a for a in addresses if not a.startswith("127."))


async def _sign_ins(settings: Settings) -> list[str]:
    """The active users, with the demo password when the demo seed made them."""
    from sqlalchemy import select

    from server.core.db import Database
    from server.core.security import verify_password
    from server.demo import DEMO_PASSWORD
    from server.network.models import User, UserRole

    db = Database(settings.database_url)
    try:
        async with db.read() as session:
            users = (
                await session.execute(
                    select(User.username, User.full_name, User.password_hash)
                    .where(User.active.is_(True))
                    .order_by(User.id)
                    .limit(12)
                )
            ).all()
            roles: dict[str, list[str]] = {}
            for username, role in await session.execute(
                select(User.username, UserRole.role).join(UserRole, UserRole.user_id == User.id)
            ):
                roles.setdefault(username, []).append(str(role.value).lower().replace("_", " "))
    except Exception:  # a database that is not migrated yet: nothing to list
        return []
    finally:
        await db.dispose()
    if not users:
        return ["No users yet: create one with `apotheca create-user`."]
    demo = verify_password(users[0].password_hash, DEMO_PASSWORD)
    heading = f"Sign in as (password {DEMO_PASSWORD}):" if demo else "Users:"
    rows = [
        f"  {u.username:<14} {u.full_name} ({', '.join(roles.get(u.username, [])) or 'no role'})"
        for u in users
    ]
    return [heading, *rows]


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


def cmd_create_client(args: argparse.Namespace) -> int:
    """An OAuth2 client for a third party's system; its secret is printed this once."""
    from sqlalchemy import select

    from server.core.errors import DomainError
    from server.core.security import Role
    from server.network.models import Organisation

    async def create(services: Services) -> int:
        async with services.db.read() as session:
            org_id = (
                await session.execute(
                    select(Organisation.id).where(Organisation.name == args.organisation)
                )
            ).scalar()
        if org_id is None:
            print(f"no organisation named {args.organisation!r}", file=sys.stderr)
            return 1
        scopes = [s for value in args.scope for s in value.replace(",", " ").split()]
        try:
            made = await services.clients.create_client(
                None, name=args.name, organisation_id=org_id, role=Role(args.role), scopes=scopes
            )
        except DomainError as error:
            print(f"refused: {error.message}", file=sys.stderr)
            return 1
        print(f"client_id={made.client.client_id}")
        print(f"client_secret={made.secret}")
        print(f"scope={made.client.scopes}", file=sys.stderr)
        print("the secret is shown only now; store it in the third party's system", file=sys.stderr)
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
        return check_contract(sdl)
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(sdl)
    print(f"wrote {SCHEMA_PATH}")
    check_contract(sdl)  # tell now; --check (CI) is what fails
    return 0


def check_contract(sdl: str, released: Path = RELEASED_PATH, changes: Path = CHANGES_PATH) -> int:
    """Compare `sdl` with the last released SDL: 1 on a breaking change CHANGES.md lacks."""
    from server.core.contract import contract_problems, dangerous_changes

    if not released.exists():
        print(f"no {released.name}: nothing to compare the schema with", file=sys.stderr)
        return 1
    old = released.read_text()
    for warning in dangerous_changes(old, sdl):
        print(f"note: {warning}")
    problems = contract_problems(old, sdl, changes.read_text() if changes.exists() else "")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"no unlisted breaking change since {released.name}")
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


def cmd_finance_backfill(_: argparse.Namespace) -> int:
    """Value the movements a database held before costing existed (once, after migrating)."""

    async def backfill(services: Services) -> int:
        print(f"finance backfill: {await services.finance.backfill()} movements valued")
        return 0

    return with_services(backfill)


def cmd_forecast_refresh(args: argparse.Namespace) -> int:
    """Refit the stored forecasts whose history changed (all of them the first time); the
    server also runs this periodically. Prints one line per granularity."""
    from server.forecasting.series import Granularity

    async def refresh(services: Services) -> int:
        granularities = [Granularity(g) for g in args.granularity] or _granularities(services)
        jobs = args.jobs or services.settings.forecast_jobs
        for r in await services.forecasting.refresh(granularities, today=args.today, jobs=jobs):
            print(
                f"{r.granularity.value.lower()} forecasts to {r.last_period}: {r.series_total} "
                f"series, {r.refitted} refitted, {r.unchanged} unchanged, {r.removed} removed, "
                f"{r.seconds:.1f} s"
            )
        return 0

    return with_services(refresh)


def _granularities(services: Services) -> list[Any]:
    from server.forecasting.series import Granularity

    names = services.settings.forecast_granularities.split(",")
    return [Granularity(n.strip().upper()) for n in names if n.strip()]


def _aware(value: str, name: str) -> datetime:
    """A command-line date-time; without an offset it is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"--{name}: {value!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _organisation_id(services: Services, name: str) -> int | None:
    from sqlalchemy import select

    from server.network.models import Organisation

    async with services.db.read() as session:
        return (
            await session.execute(select(Organisation.id).where(Organisation.name == name))
        ).scalar()


def cmd_epcis_export(args: argparse.Namespace) -> int:
    """Print (or write) the matching movements as one EPCIS 2.0 JSON-LD document."""
    import json

    from server.core.errors import DomainError

    since = _aware(args.since, "since") if args.since else None
    until = _aware(args.until, "until") if args.until else None
    exported: list[dict[str, object]] = []

    async def export(services: Services) -> int:
        org_id = None
        if args.organisation:
            org_id = await _organisation_id(services, args.organisation)
            if org_id is None:
                print(f"no organisation named {args.organisation!r}", file=sys.stderr)
                return 1
        try:
            exported.append(
                await services.epcis.export(
                    None,
                    since=since,
                    until=until,
                    organisation_id=org_id,
                    batch_number=args.lot,
                    first=args.first,
                )
            )
        except DomainError as error:
            print(f"refused: {error.message}", file=sys.stderr)
            return 1
        return 0

    status = with_services(export)
    if status:
        return status
    document = exported[0]
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    body = document["epcisBody"]
    events = len(body["eventList"]) if isinstance(body, dict) else 0
    print(f"exported {events} events", file=sys.stderr)
    return 0


def cmd_epcis_import(args: argparse.Namespace) -> int:
    """Record a constituent's EPCIS document as its movements; list what was not recorded."""
    import json

    from server.core.errors import DomainError

    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"cannot read {args.file}: {error}", file=sys.stderr)
        return 1

    async def import_(services: Services) -> int:
        org_id = await _organisation_id(services, args.organisation)
        if org_id is None:
            print(f"no organisation named {args.organisation!r}", file=sys.stderr)
            return 1
        try:
            result = await services.epcis.import_document(None, org_id, document)
        except DomainError as error:
            print(f"refused: {error.message}", file=sys.stderr)
            return 1
        print(
            f"{len(result.imported)} events imported ({len(result.movements)} movements), "
            f"{len(result.already_imported)} already imported, {len(result.rejected)} rejected"
        )
        for rejection in result.rejected:
            print(
                f"  rejected #{rejection.index} {rejection.event_type or '?'} "
                f"{rejection.event_id}: {rejection.reason}"
            )
        for warning in result.warnings:
            print(f"  warning {warning.event_id}: {warning.message}")
        return 0

    return with_services(import_)


def cmd_supervision_recompute(args: argparse.Namespace) -> int:
    """Every supervision total again from the ledger, compared with the running totals."""

    async def recompute(services: Services) -> int:
        checks = services.supervision_checks
        result = await checks.recompute(repair=args.repair)
        if result.differences:
            names = await _organisation_names(services)
            for approval, batch in result.differing_batches:
                print(f"batch {batch} ({approval}) differs:", file=sys.stderr)
                for d in result.differences:
                    if (d.approval_number, d.batch_number) == (approval, batch):
                        print(f"  {d.describe(names)}", file=sys.stderr)
            count = len(result.differing_batches)
            if not result.repaired:
                print(
                    f"{count} of {result.batches} batches differ from the ledger "
                    f"({result.movements} movements); `--repair` rewrites them",
                    file=sys.stderr,
                )
                return 1
            print(f"repaired {count} of {result.batches} batches from the ledger")
        else:
            print(f"{result.batches} batches agree ({result.movements} movements)")
        sweep = await checks.check_all()
        counts = ", ".join(f"{k.value} {v}" for k, v in sorted(sweep.by_status.items()))
        print(
            f"statuses: {sweep.checked} batches checked, {len(sweep.changes)} changed"
            + (f" ({counts})" if counts else "")
        )
        return 0

    return with_services(recompute)


async def _organisation_names(services: Services) -> dict[int, str]:
    from sqlalchemy import select

    from server.network.models import Organisation

    async with services.db.read() as session:
        rows = await session.execute(select(Organisation.id, Organisation.name))
        return dict(rows.all())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apotheca", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/websocket server")
    serve.add_argument("--host", default=os.environ.get("APOTHECA_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("APOTHECA_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--migrate", action="store_true", help="migrate before starting")
    serve.add_argument(
        "--log-format",
        choices=["json", "plain"],
        default=os.environ.get("APOTHECA_LOG_FORMAT", "json"),
        help="one JSON object per line (default) or plain text",
    )
    serve.add_argument(
        "--announce",
        action="store_true",
        help="print the address and the users to sign in as once the server answers",
    )
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
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

    client = sub.add_parser(
        "create-client", help="add an OAuth2 client (client credentials); prints its secret once"
    )
    client.add_argument("name", help="a name people recognise, e.g. 'MedDistri ERP'")
    client.add_argument("--organisation", required=True, help="organisation name")
    client.add_argument(
        "--role",
        required=True,
        choices=["PHARMACIST", "WAREHOUSE_MANAGER", "SUPPLIER", "AUDITOR", "REGULATOR"],
    )
    client.add_argument(
        "--scope", action="append", required=True, help="e.g. shipments:write (repeatable)"
    )
    client.set_defaults(func=cmd_create_client)

    catalog = sub.add_parser("import-catalog", help="import products from CSV (all or none)")
    catalog.add_argument("csv")
    catalog.set_defaults(func=cmd_import_catalog)

    schema = sub.add_parser("export-schema", help="write graphql_schema/schema.graphql")
    schema.add_argument("--check", action="store_true", help="fail if the file is out of date")
    schema.set_defaults(func=cmd_export_schema)

    sub.add_parser("verify-audit", help="check the audit hash chain").set_defaults(
        func=cmd_verify_audit
    )

    forecast = sub.add_parser(
        "forecast-refresh",
        help="recompute stored forecasts whose consumption history changed (prints the counts)",
    )
    forecast.add_argument(
        "--granularity",
        action="append",
        default=[],
        choices=["DAILY", "WEEKLY", "MONTHLY"],
        help="only this granularity (repeatable; default: APOTHECA_FORECAST_GRANULARITIES)",
    )
    forecast.add_argument(
        "--today", type=date.fromisoformat, default=None, help="as if today were this day"
    )
    forecast.add_argument("--jobs", type=int, default=0, help="processes for the model fits")
    forecast.set_defaults(func=cmd_forecast_refresh)

    sub.add_parser(
        "check-expiry", help="raise and resolve expiry alerts now (prints the counts)"
    ).set_defaults(func=cmd_check_expiry)

    sub.add_parser(
        "finance-backfill", help="value movements written before costing existed"
    ).set_defaults(func=cmd_finance_backfill)
    recompute = sub.add_parser(
        "supervision-recompute",
        help="recompute every supervision total from the ledger; exit 1 if any batch differs "
        "from the running totals (then re-check every batch's status)",
    )
    recompute.add_argument(
        "--repair", action="store_true", help="rewrite the differing batches' totals"
    )
    recompute.set_defaults(func=cmd_supervision_recompute)

    epcis_export = sub.add_parser(
        "epcis-export", help="write movements as an EPCIS 2.0 JSON-LD document (stdout)"
    )
    epcis_export.add_argument("--lot", help="batch number (every product's lot of that batch)")
    epcis_export.add_argument("--organisation", help="reporting organisation name")
    epcis_export.add_argument("--since", help="occurred at or after (ISO 8601; UTC if no offset)")
    epcis_export.add_argument("--until", help="occurred before (ISO 8601; UTC if no offset)")
    epcis_export.add_argument("--first", type=int, help="at most this many events")
    epcis_export.add_argument("--output", "-o", help="write to this file instead of stdout")
    epcis_export.set_defaults(func=cmd_epcis_export)

    epcis_import = sub.add_parser(
        "epcis-import", help="record a constituent's EPCIS 2.0 document as its movements"
    )
    epcis_import.add_argument(
        "--organisation", required=True, help="name of the organisation the document is from"
    )
    epcis_import.add_argument("file", help="EPCIS 2.0 JSON-LD document")
    epcis_import.set_defaults(func=cmd_epcis_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
