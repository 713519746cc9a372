"""Pure alert rules: when a condition holds, and the key that deduplicates it while it does."""

from __future__ import annotations

from datetime import date, timedelta

from server.alerts.models import AlertKind


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
