"""GraphQL for alerts: list, acknowledge, minimum levels, and the `alertRaised` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from typing import Annotated, Self

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from server.alerts import models
from server.alerts.rules import alert_visible
from server.alerts.service import ALERT_TOPIC
from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.errors import Forbidden
from server.core.graphql import (
    CountedConnection,
    FromModel,
    Info,
    MutationError,
    PageAfter,
    PageSize,
    attempt,
    connection,
    decode_id,
    load_nodes,
    optional_id,
    relation,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission
from server.network import models as network_models
from server.network.api import Location, User

AlertKind = described_enum(
    models.AlertKind,
    "What an alert is about.",
    {
        "LOW_STOCK": "Usable stock of a product at a location fell below its minimum level.",
        "EXPIRING_SOON": "A lot with stock on a shelf expires within the warning window.",
        "EXPIRED_ON_SHELF": "A lot past its expiry date still has stock on a shelf.",
        "SERIAL_DECOMMISSIONED_TWICE": "A serialised pack was scanned out a second time.",
        "RECALL": "A recalled lot is held at a location.",
        "SHIPMENT_OVERDUE": "A shipment is past its expected arrival.",
        "SUPERVISION_STATUS": "A batch's supervision check is not NORMAL.",
        "CONTROLLED_DISCREPANCY": "A count of a controlled drug differs from its register balance.",
        "BUDGET_WARNING": "A location's spend passed the warning share of its budget.",
        "BUDGET_EXCEEDED": "A location's spend reached or passed its budget for the period.",
    },
)
AlertStatus = described_enum(
    models.AlertStatus,
    "Where an alert stands in its handling.",
    {
        "OPEN": "Raised, not yet seen by anyone.",
        "ACKNOWLEDGED": "Someone saw it (and may have left a note).",
        "RESOLVED": "The condition no longer holds.",
    },
)


@strawberry.type(description="A condition that needs attention, raised once while it holds.")
class Alert(FromModel, relay.Node):
    __columns__ = {"acknowledged_by_id": "acknowledged_by"}

    id: relay.NodeID[int]
    kind: AlertKind = strawberry.field(description="What the alert is about.")  # type: ignore[valid-type]
    status: AlertStatus = strawberry.field(description="OPEN, ACKNOWLEDGED or RESOLVED.")  # type: ignore[valid-type]
    active: bool = strawberry.field(description="True while the condition still holds.")
    message: str = strawberry.field(description="What happened, in words.")
    details: JSON = strawberry.field(
        description="Figures behind the message (quantities, dates), by alert kind."
    )
    raised_at: datetime = strawberry.field(description="When the alert was raised.")
    acknowledged_at: datetime | None = strawberry.field(
        description="When it was acknowledged; null if not."
    )
    acknowledgement_note: str | None = strawberry.field(
        description="The note left when acknowledging, if any."
    )
    resolved_at: datetime | None = strawberry.field(
        description="When the condition stopped holding; null while active."
    )
    location_id: strawberry.Private[int | None]
    product_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]
    acknowledged_by_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()

        def visible(alert: models.Alert) -> models.Alert:
            if not alert_visible(principal, alert):
                raise Forbidden("that alert is outside your scope")
            return alert

        return await load_nodes(
            info,
            models.Alert,
            node_ids,
            lambda alert: cls.from_model(visible(alert)),
            permission=Permission.STOCK_READ,
        )

    location: Location | None = relation(
        network_models.Location,
        "location_id",
        description="The shelf it is about; null for organisation-wide alerts.",
    )
    product: Product | None = relation(
        catalog_models.Product, "product_id", description="The product, when it is about one."
    )
    lot: Lot | None = relation(
        catalog_models.Lot, "lot_id", description="The lot, when it is about one."
    )
    acknowledged_by: User | None = relation(
        network_models.User, "acknowledged_by_id", description="Who acknowledged it; null if not."
    )


@strawberry.type(description="A page of alerts.")
class AlertConnection(CountedConnection[Alert]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Alerts in your scope, newest first.")
    async def alerts(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        status: Annotated[
            list[AlertStatus] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only alerts in one of these statuses."),
        ] = None,
        kinds: Annotated[
            list[AlertKind] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only alerts of one of these kinds."),
        ] = None,
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only alerts about this location (in your scope)."),
        ] = None,
        active: Annotated[
            bool | None,
            strawberry.argument(description="Only alerts whose condition holds (true) or not."),
        ] = None,
    ) -> AlertConnection:
        page = await info.context.services.alerts.alerts_page(
            info.context.require_principal(),
            location_id=optional_id(location, Location, "location"),
            statuses=status or [],
            kinds=kinds or [],
            active=active,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(AlertConnection, page, Alert.from_model)


@strawberry.input(description="Mark an open alert as seen.")
class AcknowledgeAlertInput:
    id: relay.GlobalID = strawberry.field(description="The OPEN alert.")
    note: str | None = strawberry.field(
        default=None, description="What was done about it (up to 500 characters)."
    )


@strawberry.input(description="The minimum usable quantity of a product at a location.")
class SetMinimumLevelInput:
    location: relay.GlobalID = strawberry.field(description="The location.")
    product: relay.GlobalID = strawberry.field(description="The product.")
    minimum_quantity: int = strawberry.field(
        description="Packs; below it a LOW_STOCK alert is raised. 0 or more."
    )


@strawberry.type(description="The alert acknowledged, or why it was refused.")
class AlertPayload:
    alert: Alert | None = strawberry.field(
        default=None, description="The alert after the change; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="A product's minimum usable quantity at a location.")
class MinimumLevel(FromModel):
    minimum_quantity: int = strawberry.field(
        description="Packs of usable (released, unexpired) stock."
    )
    location_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    location: Location = relation(
        network_models.Location, "location_id", description="The location."
    )
    product: Product = relation(catalog_models.Product, "product_id", description="The product.")


@strawberry.type(description="The minimum level set, or why it was refused.")
class MinimumLevelPayload:
    minimum_level: MinimumLevel | None = strawberry.field(
        default=None, description="The level as stored; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Mark an open alert as seen, with an optional note; needs alert "
        "acknowledgement at the alert's location."
    )
    async def acknowledge_alert(self, info: Info, input: AcknowledgeAlertInput) -> AlertPayload:
        alert, errors = await attempt(
            info,
            lambda p: info.context.services.alerts.acknowledge(
                p, decode_id(input.id, Alert, "id"), input.note
            ),
        )
        return AlertPayload(alert=alert and Alert.from_model(alert), errors=errors)

    @strawberry.mutation(
        description="Below this usable quantity a LOW_STOCK alert is raised; needs stock "
        "adjustment at the location."
    )
    async def set_minimum_level(
        self, info: Info, input: SetMinimumLevelInput
    ) -> MinimumLevelPayload:
        level, errors = await attempt(
            info,
            lambda p: info.context.services.alerts.set_minimum_level(
                p,
                location_id=decode_id(input.location, Location, "location"),
                product_id=decode_id(input.product, Product, "product"),
                minimum_quantity=input.minimum_quantity,
            ),
        )
        return MinimumLevelPayload(
            minimum_level=level and MinimumLevel.from_model(level), errors=errors
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Alerts as they are raised, within your scope.")
    async def alert_raised(
        self,
        info: Info,
        locations: Annotated[
            list[relay.GlobalID] | None,
            strawberry.argument(description="Only alerts about these locations (in your scope)."),
        ] = None,
    ) -> AsyncGenerator[Alert, None]:
        principal = info.context.require_principal()
        principal.require(Permission.STOCK_READ)
        wanted = {decode_id(x, Location, "locations") for x in locations or []}
        for location_id in wanted:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        alerts = info.context.services.alerts
        async with info.context.services.bus.subscribe(ALERT_TOPIC) as subscription:
            while True:
                event = await subscription.get()
                alert = await alerts.raised_for(principal, event.payload, wanted)
                if alert is not None:
                    yield Alert.from_model(alert)
