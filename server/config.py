"""Settings read once from the environment, so every worker of a deployment agrees."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./apotheca.db"


def _secret_key() -> str:
    """Use APOTHECA_SECRET_KEY, else a key kept beside the database so restarts keep sessions."""
    if key := os.environ.get("APOTHECA_SECRET_KEY"):
        return key
    path = Path(os.environ.get("APOTHECA_SECRET_FILE", ".apotheca-secret"))
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = field(default="", repr=False)
    access_token_minutes: float = 15
    refresh_token_days: int = 30
    max_page_size: int = 100
    max_query_depth: int = 12
    max_aliases: int = 20
    max_tokens: int = 3000
    max_body_bytes: int = 256 * 1024
    sql_echo: bool = False
    # SQLite: how many concurrent writes may share one transaction (server.core.db.GroupCommit);
    # 1 turns group commit off.
    group_commit_max: int = 16
    expiry_window_days: int = 90
    expiry_check_seconds: int = 3600
    # The background forecast refresh (server.forecasting.service.refresh): how often (0: never
    # inside the server; `apotheca forecast-refresh` still works), which granularities, and how
    # many processes statsforecast may use for one refresh.
    forecast_refresh_seconds: int = 3600
    forecast_granularities: str = "DAILY,WEEKLY,MONTHLY"
    forecast_jobs: int = 1
    max_subscriptions_per_connection: int = 20
    # Websockets per principal (user, or OAuth client) and its subscriptions across them; both
    # counted per worker process (server.core.sessions).
    max_connections_per_principal: int = 10
    max_subscriptions_per_principal: int = 50
    transit_window_hours: int = 72
    # After an OAuth2 client's secret is rotated, the old one keeps working this long.
    client_secret_overlap_hours: float = 24.0
    # Query cost (server/core/cost.py): the most one request may cost, and each principal's
    # budget, a bucket of `cost_budget_capacity` points refilling `cost_refill_per_second`.
    max_query_cost: int = 10_000
    cost_budget_capacity: int = 50_000
    cost_refill_per_second: float = 250.0
    # /metrics answers only `Authorization: Bearer <metrics_token>`; empty disables it (404).
    metrics_token: str = field(default="", repr=False)
    pwa_dir: Path = Path(__file__).resolve().parent.parent / "pwa" / "dist"
    # Rate limits (server.core.ratelimit). Limits are `limits` strings ("300/minute"); "off"
    # disables one. Storage "memory://" is per process; "redis://host:6379" is shared.
    rate_limit_storage: str = "memory://"
    rate_limit_prefix: str = "apotheca"
    rate_limit_principal: str = "600/minute"
    rate_limit_ip: str = "1200/minute"
    trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For is believed
    login_failures_account_ip: str = "5/15 minutes"
    login_failures_ip: str = "50/15 minutes"
    login_failures_account: str = "100/15 minutes"
    login_lock_seconds: int = 2
    login_lock_max_seconds: int = 900
    login_refusal_delay_seconds: float = 1.0  # a locked sign-in's 429 answered this late
    rate_limit_refusal_delay_seconds: float = 0.5  # a request over its limit answered this late
    password_hash_workers: int = 1
    password_hash_queue: int = 8
    password_hash_nice: int = 10  # how much lower the hashing thread's priority is
    # Webhooks (server.webhooks): hosts/CIDRs an endpoint may target although they look
    # internal (loopback, private, link-local, single-label names); empty refuses them all.
    # Development and tests set "127.0.0.1,localhost". Retry delays in seconds after each
    # failed attempt (jittered +-20%), the request timeout, how often an idle worker looks
    # for due deliveries (others' commits; its own wake it at once), and whether this
    # process runs the delivery worker at all.
    webhook_allow_hosts: str = ""
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 5.0
    webhook_worker: bool = True

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("APOTHECA_DATABASE_URL", DEFAULT_DATABASE_URL),
            "access_token_minutes": float(env.get("APOTHECA_ACCESS_TOKEN_MINUTES", "15")),
            "refresh_token_days": int(env.get("APOTHECA_REFRESH_TOKEN_DAYS", "30")),
            "max_page_size": int(env.get("APOTHECA_MAX_PAGE_SIZE", "100")),
            "sql_echo": env.get("APOTHECA_SQL_ECHO", "") == "1",
            "group_commit_max": int(env.get("APOTHECA_GROUP_COMMIT_MAX", "16")),
            "expiry_window_days": int(env.get("APOTHECA_EXPIRY_WINDOW_DAYS", "90")),
            "expiry_check_seconds": int(env.get("APOTHECA_EXPIRY_CHECK_SECONDS", "3600")),
            "transit_window_hours": int(env.get("APOTHECA_TRANSIT_WINDOW_HOURS", "72")),
            "forecast_refresh_seconds": int(env.get("APOTHECA_FORECAST_REFRESH_SECONDS", "3600")),
            "forecast_granularities": env.get(
                "APOTHECA_FORECAST_GRANULARITIES", "DAILY,WEEKLY,MONTHLY"
            ),
            "forecast_jobs": int(env.get("APOTHECA_FORECAST_JOBS", "1")),
            "client_secret_overlap_hours": float(
                env.get("APOTHECA_CLIENT_SECRET_OVERLAP_HOURS", "24")
            ),
            "max_connections_per_principal": int(
                env.get("APOTHECA_MAX_CONNECTIONS_PER_PRINCIPAL", "10")
            ),
            "max_subscriptions_per_principal": int(
                env.get("APOTHECA_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", "50")
            ),
            "rate_limit_storage": env.get("APOTHECA_RATE_LIMIT_STORAGE", "memory://"),
            "rate_limit_prefix": env.get("APOTHECA_RATE_LIMIT_PREFIX", "apotheca"),
            "rate_limit_principal": env.get("APOTHECA_RATE_LIMIT_PRINCIPAL", "600/minute"),
            "rate_limit_ip": env.get("APOTHECA_RATE_LIMIT_IP", "1200/minute"),
            "trusted_proxies": env.get("APOTHECA_TRUSTED_PROXIES", ""),
            "login_failures_account_ip": env.get("APOTHECA_LOGIN_LIMIT_ACCOUNT_IP", "5/15 minutes"),
            "login_failures_ip": env.get("APOTHECA_LOGIN_LIMIT_IP", "50/15 minutes"),
            "login_failures_account": env.get("APOTHECA_LOGIN_LIMIT_ACCOUNT", "100/15 minutes"),
            "login_lock_seconds": int(env.get("APOTHECA_LOGIN_LOCK_SECONDS", "2")),
            "login_lock_max_seconds": int(env.get("APOTHECA_LOGIN_LOCK_MAX_SECONDS", "900")),
            "login_refusal_delay_seconds": float(
                env.get("APOTHECA_LOGIN_REFUSAL_DELAY_SECONDS", "1")
            ),
            "rate_limit_refusal_delay_seconds": float(
                env.get("APOTHECA_RATE_LIMIT_REFUSAL_DELAY_SECONDS", "0.5")
            ),
            "password_hash_workers": int(env.get("APOTHECA_PASSWORD_HASH_WORKERS", "1")),
            "password_hash_queue": int(env.get("APOTHECA_PASSWORD_HASH_QUEUE", "8")),
            "password_hash_nice": int(env.get("APOTHECA_PASSWORD_HASH_NICE", "10")),
            "max_query_cost": int(env.get("APOTHECA_MAX_QUERY_COST", "10000")),
            "cost_budget_capacity": int(env.get("APOTHECA_COST_BUDGET_CAPACITY", "50000")),
            "cost_refill_per_second": float(env.get("APOTHECA_COST_REFILL_PER_SECOND", "250")),
            "metrics_token": env.get("APOTHECA_METRICS_TOKEN", ""),
            "webhook_allow_hosts": env.get("APOTHECA_WEBHOOK_ALLOW_HOSTS", ""),
            "webhook_retry_schedule": env.get(
                "APOTHECA_WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000"
            ),
            "webhook_timeout_seconds": float(env.get("APOTHECA_WEBHOOK_TIMEOUT_SECONDS", "10")),
            "webhook_poll_seconds": float(env.get("APOTHECA_WEBHOOK_POLL_SECONDS", "5")),
            "webhook_worker": env.get("APOTHECA_WEBHOOK_WORKER", "1") != "0",
        }
        if pwa_dir := env.get("APOTHECA_PWA_DIR"):
            values["pwa_dir"] = Path(pwa_dir)
        values.update(overrides)
        if not values.get("secret_key"):
            values["secret_key"] = _secret_key()
        return cls(**values)  # type: ignore[arg-type]
