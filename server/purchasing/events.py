"""The `purchase_order` event: what every purchase-order change announces after commit (the
webhooks' `purchase_order.updated`; no subscription reads it yet)."""

from __future__ import annotations

from server.core.db import utcnow
from server.core.events import Event
from server.purchasing.models import PurchaseOrder

PURCHASE_ORDER_TOPIC = "purchase_order"


def purchase_order_event(order: PurchaseOrder, change: str) -> Event:
    """Small like the shipment event: the parties (to decide who may see it) and the status."""
    return Event(
        PURCHASE_ORDER_TOPIC,
        {
            "purchase_order_id": order.id,
            "number": order.number,
            "status": order.status.value,
            "change": change,
            "buyer_id": order.buyer_id,
            "supplier_id": order.supplier_id,
            "at": utcnow().isoformat(),
        },
    )
