"""Pure alert rules: when a condition holds, and the key that deduplicates it while it does."""

from __future__ import annotations

from datetime import date, timedelta

from server.alerts.models import Alert, AlertKind
from server.core.security import Principal


def low_stock_key(location_id: int, product_id: int) -> str:
    return f"{AlertKind.LOW_STOCK}:{location_id}:{product_id}"


def expiry_key(kind: AlertKind, location_id: int, lot_id: int) -> str:
    return f"{kind}:{location_id}:{lot_id}"


def serial_key(gtin: str, serial: str) -> str:
    return f"{AlertKind.SERIAL_DECOMMISSIONED_TWICE}:{gtin}:{serial}"


def expiry_condition(
    expiry: date, quantity: int, today: date, window_days: int
) -> AlertKind | None:
    """Stock on a shelf past expiry, or within the warning window; nothing for empty shelves."""
    if quantity <= 0:
        return None
    if expiry < today:
        return AlertKind.EXPIRED_ON_SHELF
    if expiry <= today + timedelta(days=window_days):
        return AlertKind.EXPIRING_SOON
    return None


def alert_visible(principal: Principal, alert: Alert) -> bool:
    """Shelf alerts follow location scope; organisation alerts go to that organisation."""
    if principal.location_ids is None:
        return True
    if alert.location_id is not None:
        return principal.sees_location(alert.location_id)
    return alert.organisation_id is not None and alert.organisation_id == principal.organisation_id
