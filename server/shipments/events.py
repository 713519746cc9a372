"""The `shipment` event: what every shipment change announces after commit."""

from __future__ import annotations

from server.core.db import utcnow
from server.core.events import Event
from server.shipments.models import Shipment

SHIPMENT_TOPIC = "shipment"


def shipment_event(shipment: Shipment, change: str) -> Event:
    """Small on purpose: subscribers filter on the parties and load the rest themselves."""
    return Event(
        SHIPMENT_TOPIC,
        {
            "shipment_id": shipment.id,
            "number": shipment.number,
            "status": shipment.status.value,
            "change": change,
            "sender_id": shipment.sender_id,
            "receiver_id": shipment.receiver_id,
            "destination_id": shipment.destination_id,
            "at": utcnow().isoformat(),
        },
    )
