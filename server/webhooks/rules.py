"""Pure rules of webhooks: which bus events become which public event types, the body sent,
which URLs may be targets, secrets, and the retry schedule. No I/O here."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from server.alerts.service import ALERT_TOPIC
from server.core.errors import InvalidInput
from server.core.validation import required_text
from server.purchasing.events import PURCHASE_ORDER_TOPIC
from server.shipments.events import SHIPMENT_TOPIC
from server.supervision.checks import RECOVERY_TOPIC
from server.supervision.service import RECALL_TOPIC

SECRET_PREFIX = "whsec_"
MAX_URL = 2000


class WebhookEventType(StrEnum):
    """Public event type names (the body's `type`), one per kind of change a third party
    may follow."""

    SHIPMENT_UPDATED = "shipment.updated"
    PURCHASE_ORDER_UPDATED = "purchase_order.updated"
    RECALL_CREATED = "recall.created"
    SUPERVISION_STATUS_CHANGED = "supervision.status_changed"
    STOCK_LOW = "stock.low"


# The alert kinds that become webhooks (other bus topics map one to one, below).
ALERT_KINDS = {
    "LOW_STOCK": WebhookEventType.STOCK_LOW,
    "SUPERVISION_STATUS": WebhookEventType.SUPERVISION_STATUS_CHANGED,
}


def event_type_of(topic: str, payload: dict[str, Any]) -> WebhookEventType | None:
    """The public type of one bus event; None for events no webhook carries."""
    if topic == SHIPMENT_TOPIC:
        return WebhookEventType.SHIPMENT_UPDATED
    if topic == PURCHASE_ORDER_TOPIC:
        return WebhookEventType.PURCHASE_ORDER_UPDATED
    if topic == RECALL_TOPIC:
        return WebhookEventType.RECALL_CREATED
    if topic == ALERT_TOPIC:
        return ALERT_KINDS.get(str(payload.get("kind")))
    if topic == RECOVERY_TOPIC:
        return WebhookEventType.SUPERVISION_STATUS_CHANGED
    return None


def is_recovery(payload: dict[str, Any]) -> bool:
    """A RECOVERY_TOPIC payload (a batch back from alerting), as opposed to an alert's."""
    return "organisation_ids" in payload


def supervision_fields(details: dict[str, Any]) -> dict[str, Any]:
    """What every `supervision.status_changed` body carries beside the alert, whether the
    batch went into an alerting status (from the alert's details) or came back from one."""
    return {
        "approvalNumber": details.get("approval_number"),
        "batchNumber": details.get("batch_number"),
        "status": details.get("status"),
        "previousStatus": details.get("previous_status"),
        "gamma": details.get("gamma"),
    }


def node_id(type_name: str, pk: int | None) -> str | None:
    """The GraphQL global ID of a row (Relay: base64 of "Type:pk"), so a receiver can fetch
    the object through the API."""
    if pk is None:
        return None
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def event_data(event_type: WebhookEventType, payload: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a webhook body: IDs as the API spells them, plus what a receiver needs to
    decide whether to fetch more."""
    p = payload
    if event_type is WebhookEventType.SHIPMENT_UPDATED:
        return {
            "shipment": node_id("Shipment", p["shipment_id"]),
            "number": p["number"],
            "status": p["status"],
            "change": p["change"],
            "sender": node_id("Organisation", p["sender_id"]),
            "receiver": node_id("Organisation", p["receiver_id"]),
        }
    if event_type is WebhookEventType.PURCHASE_ORDER_UPDATED:
        return {
            "purchaseOrder": node_id("PurchaseOrder", p["purchase_order_id"]),
            "number": p["number"],
            "status": p["status"],
            "change": p["change"],
            "buyer": node_id("Organisation", p["buyer_id"]),
            "supplier": node_id("Organisation", p["supplier_id"]),
        }
    if event_type is WebhookEventType.RECALL_CREATED:
        return {
            "recall": node_id("Recall", p["recall_id"]),
            "reference": p["reference"],
            "lots": [node_id("Lot", x) for x in p["lot_ids"]],
        }
    if is_recovery(p):
        # A recovery: the alerts it resolved are gone from the reader's view, none is named.
        return {
            "alert": None,
            "kind": "SUPERVISION_STATUS",
            "location": None,
            "message": p["message"],
        } | supervision_fields(p)
    data = {
        "alert": node_id("Alert", p["alert_id"]),
        "kind": p["kind"],
        "location": node_id("Location", p.get("location_id")),
        "message": p.get("message"),
    }
    if event_type is WebhookEventType.SUPERVISION_STATUS_CHANGED:
        data |= supervision_fields(p.get("details") or {})
    return data


def message_body(event_type: WebhookEventType, data: dict[str, Any], at: datetime) -> str:
    """The Standard Webhooks body: {"type", "timestamp", "data"}, compact and fixed once."""
    return json.dumps(
        {"type": event_type.value, "timestamp": at.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def check_event_types(values: Sequence[str]) -> list[str]:
    """At least one, each known; sorted and without repeats."""
    known = {t.value for t in WebhookEventType}
    chosen = sorted(set(values))
    if not chosen:
        raise InvalidInput("choose at least one event type", field="event_types")
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise InvalidInput(f"unknown event types: {', '.join(unknown)}", field="event_types")
    return chosen


# --- targets ----------------------------------------------------------------------------------

_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def looks_internal(host: str) -> bool:
    """Loopback, private, link-local, reserved, multicast or unspecified addresses, and names
    that only resolve inside a network (localhost, *.local, single labels...). Literal checks
    only: a public name that resolves to a private address is not caught here."""
    address = _ip(host)
    if address is not None:
        return not address.is_global or address.is_multicast
    return host == "localhost" or host.endswith(_INTERNAL_SUFFIXES) or "." not in host


def _allowed(host: str, allow: Sequence[str]) -> bool:
    address = _ip(host)
    for entry in allow:
        if entry == host:
            return True
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def parse_allow_hosts(setting: str) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in setting.split(",") if x.strip())


def check_url(value: str, allow: Sequence[str]) -> str:
    """An http(s) URL with a host, no credentials, and not an internal target unless the
    `webhook_allow_hosts` setting names it."""
    url = required_text(value, "url", max_length=MAX_URL)
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise InvalidInput(f"not a URL: {error}", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("the URL must start with https:// (or http://)", field="url")
    if not host:
        raise InvalidInput("the URL names no host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("put no credentials in the URL; verify signatures", field="url")
    if looks_internal(host) and not _allowed(host, allow):
        raise InvalidInput(
            f"{host} is an internal address; webhooks go to public hosts unless the server's "
            "APOTHECA_WEBHOOK_ALLOW_HOSTS names it",
            field="url",
        )
    return url


# --- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrySchedule:
    """Delays after each failed attempt; once they are used up the delivery FAILED."""

    delays: tuple[float, ...]
    jitter: float = 0.2

    @classmethod
    def parse(cls, setting: str) -> RetrySchedule:
        delays = tuple(float(x) for x in setting.split(",") if x.strip())
        if any(d < 0 for d in delays):
            raise ValueError("webhook retry delays cannot be negative")
        return cls(delays)

    def next_delay(self, attempts: int, rng: random.Random | None = None) -> timedelta | None:
        """After `attempts` failed attempts: how long to wait, or None to give up."""
        if attempts > len(self.delays):
            return None
        base = self.delays[attempts - 1]
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=base * factor)
