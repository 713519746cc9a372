"""GraphQL for alerts: list, acknowledge, minimum levels, and the `alertRaised` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from typing import Any, Self

import strawberry
from sqlalchemy import and_, or_, select
from strawberry import relay
from strawberry.scalars import JSON

from server.alerts import models
from server.alerts.service import ALERT_TOPIC
from server.catalog import models as catalog_models
from server.catalog.api import Lot, Product
from server.core.errors import Forbidden
from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    paginate,
)
from server.core.security import Permission, Principal
from server.network import models as network_models
from server.network.api import Location

AlertKind = strawberry.enum(models.AlertKind)


def alert_visible(principal: Principal, alert: models.Alert) -> bool:
    """Shelf alerts follow location scope; organisation alerts go to that organisation."""
    if principal.location_ids is None:
        return True
    if alert.location_id is not None:
        return principal.sees_location(alert.location_id)
    return alert.organisation_id is not None and alert.organisation_id == principal.organisation_id


AlertStatus = strawberry.enum(models.AlertStatus)


@strawberry.type
class Alert(relay.Node):
    id: relay.NodeID[int]
    kind: AlertKind  # type: ignore[valid-type]
    status: AlertStatus  # type: ignore[valid-type]
    active: bool = strawberry.field(description="True while the condition still holds.")
    message: str
    details: JSON
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledgement_note: str | None
    resolved_at: datetime | None
    location_id: strawberry.Private[int | None]
    product_id: strawberry.Private[int | None]
    lot_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, a: models.Alert) -> Self:
        return cls(
            id=a.id,
            kind=a.kind,
            status=a.status,
            active=a.active,
            message=a.message,
            details=a.details,
            raised_at=a.raised_at,
            acknowledged_at=a.acknowledged_at,
            acknowledgement_note=a.acknowledgement_note,
            resolved_at=a.resolved_at,
            location_id=a.location_id,
            product_id=a.product_id,
            lot_id=a.lot_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()

        def visible(alert: models.Alert) -> Self:
            if not alert_visible(principal, alert):
                raise Forbidden("that alert is outside your scope")
            return cls.from_model(alert)

        return await load_nodes(
            info, models.Alert, node_ids, visible, permission=Permission.STOCK_READ
        )

    @strawberry.field
    async def location(self, info: Info) -> Location | None:
        return await load_related(
            info, network_models.Location, self.location_id, Location.from_model
        )

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)

    @strawberry.field
    async def lot(self, info: Info) -> Lot | None:
        return await load_related(info, catalog_models.Lot, self.lot_id, Lot.from_model)


@strawberry.type
class AlertConnection(CountedConnection[Alert]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Alerts in your scope, newest first.")
    async def alerts(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        status: list[AlertStatus] | None = None,  # type: ignore[valid-type]
        kinds: list[AlertKind] | None = None,  # type: ignore[valid-type]
        location: relay.GlobalID | None = None,
        active: bool | None = None,
    ) -> AlertConnection:
        principal = info.context.require_principal()
        A = models.Alert
        stmt = select(A)
        if location is not None:
            location_id = decode_id(location, Location, "location")
            principal.require(Permission.STOCK_READ, location_id=location_id)
            stmt = stmt.where(A.location_id == location_id)
        else:
            principal.require(Permission.STOCK_READ)
            if principal.location_ids is not None:
                stmt = stmt.where(
                    or_(
                        A.location_id.in_(principal.location_ids),
                        and_(
                            A.location_id.is_(None),
                            A.organisation_id == principal.organisation_id,
                        ),
                    )
                )
        if status:
            stmt = stmt.where(A.status.in_(status))
        if kinds:
            stmt = stmt.where(A.kind.in_(kinds))
        if active is not None:
            stmt = stmt.where(A.active.is_(active))
        page = await paginate(
            info,
            stmt,
            keys=[A.id],
            first=first,
            after=after,
            descending=True,
            key_of=lambda r: [r.id],
        )
        return connection(AlertConnection, page, Alert.from_model)


@strawberry.type
class AlertPayload:
    alert: Alert | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class MinimumLevel:
    minimum_quantity: int
    location_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @strawberry.field
    async def location(self, info: Info) -> Location:
        return await load_related(
            info, network_models.Location, self.location_id, Location.from_model
        )

    @strawberry.field
    async def product(self, info: Info) -> Product:
        return await load_related(info, catalog_models.Product, self.product_id, Product.from_model)


@strawberry.type
class MinimumLevelPayload:
    minimum_level: MinimumLevel | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Mark an open alert as seen, with an optional note.")
    async def acknowledge_alert(
        self, info: Info, id: relay.GlobalID, note: str | None = None
    ) -> AlertPayload:
        alert, errors = await attempt(
            info,
            lambda p: info.context.services.alerts.acknowledge(p, decode_id(id, Alert, "id"), note),
        )
        return AlertPayload(alert=alert and Alert.from_model(alert), errors=errors)

    @strawberry.mutation(description="Below this usable quantity a LOW_STOCK alert is raised.")
    async def set_minimum_level(
        self,
        info: Info,
        location: relay.GlobalID,
        product: relay.GlobalID,
        minimum_quantity: int,
    ) -> MinimumLevelPayload:
        level, errors = await attempt(
            info,
            lambda p: info.context.services.alerts.set_minimum_level(
                p,
                location_id=decode_id(location, Location, "location"),
                product_id=decode_id(product, Product, "product"),
                minimum_quantity=minimum_quantity,
            ),
        )
        if level is None:
            return MinimumLevelPayload(errors=errors)
        return MinimumLevelPayload(
            minimum_level=MinimumLevel(
                minimum_quantity=level.minimum_quantity,
                location_id=level.location_id,
                product_id=level.product_id,
            )
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Alerts as they are raised, within your scope.")
    async def alert_raised(
        self, info: Info, locations: list[relay.GlobalID] | None = None
    ) -> AsyncGenerator[Alert, None]:
        principal = info.context.require_principal()
        principal.require(Permission.STOCK_READ)
        wanted = {decode_id(x, Location, "locations") for x in locations or []}
        for location_id in wanted:
            principal.require(Permission.STOCK_READ, location_id=location_id)
        async with info.context.services.bus.subscribe(ALERT_TOPIC) as subscription:
            while True:
                event = await subscription.get()
                location_id: Any = event.payload.get("location_id")
                if wanted and location_id not in wanted:
                    continue
                if location_id is not None and not principal.sees_location(location_id):
                    continue
                async with info.context.db.read() as session:
                    alert = await session.get(models.Alert, event.payload["alert_id"])
                if alert is not None and not alert_visible(principal, alert):
                    continue
                if alert is not None:
                    yield Alert.from_model(alert)
