"""The wired set of services one process uses (the app, the CLI, tests and benchmarks alike)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server.alerts.service import AlertService
from server.catalog.service import CatalogService
from server.config import Settings
from server.controlled.service import ControlledService
from server.core.db import Database
from server.core.events import EventBus
from server.core.ratelimit import RateLimits
from server.core.security import PasswordPool, TokenService
from server.counts.service import CountService
from server.fhir.service import FhirService
from server.finance.service import FinanceService
from server.forecasting.service import ForecastingService
from server.integrations.service import EpcisService
from server.inventory.service import LedgerService, Written, stock_event
from server.network.clients import OAuthClientService
from server.network.service import NetworkService
from server.production.service import ProductionService
from server.purchasing.service import PurchasingService
from server.replenishment.service import ReplenishmentService
from server.reports.service import ReportService
from server.scanning.service import ScanningService
from server.shipments.service import ShipmentService
from server.supervision.checks import SupervisionCheckService
from server.supervision.service import SupervisionService
from server.supervision.totals import record_totals
from server.suppliers.service import SupplierService
from server.transfers.service import TransferService
from server.webhooks.service import WebhookService


def wire_ledger_hooks(
    ledger: LedgerService,
    bus: EventBus,
    alerts: AlertService,
    supervision_checks: SupervisionCheckService,
    finance: FinanceService,
) -> None:
    """What follows every ledger write, in its transaction and in this order: supervision
    totals and status of the touched batches, the stock events (published after commit), then
    low-stock and emptied-shelf alerts, then the movements' value at moving average cost (and budget
    alerts). Registered here so inventory imports none of them."""

    async def supervision(session: AsyncSession, written: Written) -> None:
        batches = await record_totals(session, written, approvals=written.approvals)
        await supervision_checks.refresh_status(session, batches)

    async def stock_events(session: AsyncSession, written: Written) -> None:
        await bus.emit(session, [stock_event(m, lot.product_id) for m, lot in written])

    ledger.on_written(supervision)
    ledger.on_written(stock_events)
    ledger.on_written(alerts.after_movements)
    ledger.on_written(finance.after_movements)  # the value of each movement, budget alerts


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    tokens: TokenService
    network: NetworkService
    clients: OAuthClientService
    catalog: CatalogService
    ledger: LedgerService
    alerts: AlertService
    counts: CountService
    scanning: ScanningService
    supervision: SupervisionService
    transfers: TransferService
    suppliers: SupplierService
    purchasing: PurchasingService
    shipments: ShipmentService
    epcis: EpcisService
    supervision_checks: SupervisionCheckService
    reports: ReportService
    forecasting: ForecastingService
    replenishment: ReplenishmentService
    ratelimits: RateLimits
    controlled: ControlledService
    finance: FinanceService
    webhooks: WebhookService
    production: ProductionService
    fhir: FhirService

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(
            settings.database_url,
            echo=settings.sql_echo,
            group_commit_max=settings.group_commit_max,
        )
        bus = EventBus()
        tokens = TokenService(
            secret_key=settings.secret_key,
            access_ttl=timedelta(minutes=settings.access_token_minutes),
            refresh_ttl=timedelta(days=settings.refresh_token_days),
        )
        alerts = AlertService(db, bus, expiry_window_days=settings.expiry_window_days)
        supervision_checks = SupervisionCheckService(
            db, alerts, transit_window_hours=settings.transit_window_hours
        )
        ledger = LedgerService(db)
        finance = FinanceService(db, bus, alerts)
        wire_ledger_hooks(ledger, bus, alerts, supervision_checks, finance)
        passwords = PasswordPool(
            settings.password_hash_workers,
            settings.password_hash_queue,
            settings.password_hash_nice,
        )
        ratelimits = RateLimits(settings)
        counts = CountService(db, bus, ledger)
        controlled = ControlledService(db, ledger, counts, alerts, passwords, ratelimits.login)
        ledger.on_written(controlled.after_movements)
        purchasing = PurchasingService(db, bus, alerts, settings.max_page_size)
        transfers = TransferService(db, bus, ledger)
        forecasting = ForecastingService(db)
        production = ProductionService(db, ledger)
        return cls(
            settings=settings,
            db=db,
            bus=bus,
            tokens=tokens,
            network=NetworkService(db, tokens, bus, passwords),
            clients=OAuthClientService(
                db, bus, tokens, timedelta(hours=settings.client_secret_overlap_hours)
            ),
            catalog=CatalogService(db),
            ledger=ledger,
            alerts=alerts,
            counts=counts,
            scanning=ScanningService(db, ledger, alerts),
            supervision=SupervisionService(db, bus, alerts),
            transfers=transfers,
            suppliers=SupplierService(db, bus, settings.max_page_size),
            purchasing=purchasing,
            shipments=ShipmentService(db, bus, ledger, alerts, settings.max_page_size),
            epcis=EpcisService(db, bus, ledger, production),
            supervision_checks=supervision_checks,
            reports=ReportService(db),
            forecasting=forecasting,
            replenishment=ReplenishmentService(db, purchasing, transfers, alerts, forecasting),
            ratelimits=ratelimits,
            controlled=controlled,
            finance=finance,
            webhooks=WebhookService(
                db,
                bus,
                allow_hosts=settings.webhook_allow_hosts,
                retry_schedule=settings.webhook_retry_schedule,
                timeout_seconds=settings.webhook_timeout_seconds,
                poll_seconds=settings.webhook_poll_seconds,
                secret_overlap=timedelta(hours=settings.client_secret_overlap_hours),
                max_page_size=settings.max_page_size,
            ),
            production=production,
            fhir=FhirService(db, ledger, settings.max_page_size),
        )

    async def start(self) -> None:
        """Background parts of a serving process: the PostgreSQL event listener."""
        await self.bus.start(self.settings.database_url)

    async def close(self) -> None:
        await self.webhooks.stop()
        await self.bus.stop()
        await self.db.dispose()
