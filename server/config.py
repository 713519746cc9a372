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
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    max_page_size: int = 100
    max_query_depth: int = 12
    max_aliases: int = 20
    max_tokens: int = 3000
    max_body_bytes: int = 256 * 1024
    sql_echo: bool = False
    expiry_window_days: int = 90
    expiry_check_seconds: int = 3600
    max_subscriptions_per_connection: int = 20
    transit_window_hours: int = 72
    # /metrics answers only `Authorization: Bearer <metrics_token>`; empty disables it (404).
    metrics_token: str = field(default="", repr=False)
    pwa_dir: Path = Path(__file__).resolve().parent.parent / "pwa" / "dist"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("APOTHECA_DATABASE_URL", DEFAULT_DATABASE_URL),
            "access_token_minutes": int(env.get("APOTHECA_ACCESS_TOKEN_MINUTES", "15")),
            "refresh_token_days": int(env.get("APOTHECA_REFRESH_TOKEN_DAYS", "30")),
            "max_page_size": int(env.get("APOTHECA_MAX_PAGE_SIZE", "100")),
            "sql_echo": env.get("APOTHECA_SQL_ECHO", "") == "1",
            "expiry_window_days": int(env.get("APOTHECA_EXPIRY_WINDOW_DAYS", "90")),
            "expiry_check_seconds": int(env.get("APOTHECA_EXPIRY_CHECK_SECONDS", "3600")),
            "transit_window_hours": int(env.get("APOTHECA_TRANSIT_WINDOW_HOURS", "72")),
            "metrics_token": env.get("APOTHECA_METRICS_TOKEN", ""),
        }
        if pwa_dir := env.get("APOTHECA_PWA_DIR"):
            values["pwa_dir"] = Path(pwa_dir)
        values.update(overrides)
        if not values.get("secret_key"):
            values["secret_key"] = _secret_key()
        return cls(**values)  # type: ignore[arg-type]
