"""GraphQL for webhooks: an organisation's admin registers endpoints, reads the delivery log and
replays deliveries. Secrets appear once, in the payload of the mutation that made them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Self

import strawberry
from strawberry import relay

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
from server.network.api import Organisation, User
from server.webhooks import models
from server.webhooks.rules import WebhookEventType as _EventType
from server.webhooks.service import EndpointWithSecret

WebhookEventType = described_enum(
    _EventType,
    "What a webhook tells; the body's `type` is the value shown with each.",
    SHIPMENT_UPDATED="`shipment.updated`: a shipment your organisation sends or receives "
    "was announced, changed status or had packs received.",
    PURCHASE_ORDER_UPDATED="`purchase_order.updated`: a purchase order your organisation "
    "buys or supplies was created or changed status.",
    RECALL_CREATED="`recall.created`: lots were recalled (every stock reader sees recalls).",
    SUPERVISION_STATUS_CHANGED="`supervision.status_changed`: a batch's supervision status "
    "became abnormal and the alert names your organisation or one of its locations, or came "
    "back to NORMAL/IN_TRANSIT after alerting you (then `alert` is null); `status`, "
    "`previousStatus`, `approvalNumber`, `batchNumber` and `gamma` say which way.",
    STOCK_LOW="`stock.low`: a shelf of one of your locations fell below its minimum.",
)

DeliveryStatus = described_enum(
    models.DeliveryStatus,
    "Where a webhook delivery stands.",
    PENDING="Waiting for its first or next attempt.",
    DELIVERED="The receiver answered 2xx.",
    FAILED="Given up: the retries ran out, or the receiver answered 410 Gone.",
)


@strawberry.type(description="A URL that receives signed webhooks for an organisation.")
class WebhookEndpoint(FromModel, relay.Node):
    id: relay.NodeID[int]
    url: str = strawberry.field(description="Where deliveries are POSTed.")
    description: str | None = strawberry.field(description="What it is for, if given.")
    enabled: bool = strawberry.field(description="False: nothing is captured or sent for it.")
    disabled_reason: str | None = strawberry.field(
        description="Why the system disabled it (a 410 Gone answer); null otherwise."
    )
    created_at: datetime = strawberry.field(description="When it was registered.")
    updated_at: datetime = strawberry.field(description="When it last changed.")
    previous_secret_until: datetime | None = strawberry.field(
        description="After a rotation: until when the previous secret also signs."
    )
    organisation_id: strawberry.Private[int]
    created_by_id: strawberry.Private[int]
    event_type_names: strawberry.Private[list[str]]
    __columns__ = {"created_by_id": "created_by", "event_type_names": "event_types"}

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.WebhookEndpoint,
            node_ids,
            cls.from_model,
            permission=Permission.NETWORK_MANAGE,
        )

    @strawberry.field(description="The event types it receives.")
    def event_types(self) -> list[WebhookEventType]:  # type: ignore[valid-type]
        return [_EventType(x) for x in self.event_type_names]

    organisation: Organisation = relation(
        network_models.Organisation,
        "organisation_id",
        description="Whose events it receives (what that organisation may read).",
    )
    created_by: User | None = relation(
        network_models.User, "created_by_id", description="Who registered it."
    )


@strawberry.type(description="One message to one endpoint: the outbox entry and its log.")
class WebhookDelivery(FromModel, relay.Node):
    id: relay.NodeID[int]
    message_id: str = strawberry.field(
        description="The `webhook-id` header: the same for every attempt and replay."
    )
    event_type: str = strawberry.field(description="The body's `type`, e.g. shipment.updated.")
    body: str = strawberry.field(description="The exact JSON body sent (and signed).")
    status: DeliveryStatus = strawberry.field(  # type: ignore[valid-type]
        description="PENDING, DELIVERED or FAILED."
    )
    attempts: int = strawberry.field(description="Attempts made so far.")
    response_status: int | None = strawberry.field(
        description="The HTTP status of the last answer; null before one or without an answer."
    )
    last_error: str | None = strawberry.field(
        description="Why the last attempt failed (status or network error); null on success."
    )
    next_attempt_at: datetime | None = strawberry.field(
        description="When it is tried next; null once DELIVERED or FAILED."
    )
    last_attempt_at: datetime | None = strawberry.field(description="When it was last tried.")
    delivered_at: datetime | None = strawberry.field(description="When a 2xx came back.")
    created_at: datetime = strawberry.field(
        description="When the change that caused it committed (or the replay was asked)."
    )
    endpoint_id: strawberry.Private[int]
    replay_of_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info,
            models.WebhookDelivery,
            node_ids,
            cls.from_model,
            permission=Permission.NETWORK_MANAGE,
        )

    endpoint: WebhookEndpoint = relation(
        models.WebhookEndpoint, "endpoint_id", description="Where it goes."
    )
    replay_of: WebhookDelivery | None = relation(
        models.WebhookDelivery, "replay_of_id", description="The delivery this one replays."
    )


@strawberry.type(description="A page of webhook endpoints.")
class WebhookEndpointConnection(CountedConnection[WebhookEndpoint]):
    pass


@strawberry.type(description="A page of the webhook delivery log, newest first.")
class WebhookDeliveryConnection(CountedConnection[WebhookDelivery]):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Webhook endpoints (ADMIN), optionally one organisation's.")
    async def webhook_endpoints(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only this organisation's endpoints."),
        ] = None,
    ) -> WebhookEndpointConnection:
        page = await info.context.services.webhooks.endpoints_page(
            info.context.require_principal(),
            organisation_id=optional_id(organisation, Organisation, "organisation"),
            first=first,
            after=after,
        )
        return connection(WebhookEndpointConnection, page, WebhookEndpoint.from_model)

    @strawberry.field(description="The webhook delivery log (ADMIN), newest first.")
    async def webhook_deliveries(
        self,
        info: Info,
        first: PageSize,
        after: PageAfter = None,
        endpoint: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only deliveries to this WebhookEndpoint."),
        ] = None,
        status: Annotated[
            DeliveryStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only deliveries in this status."),
        ] = None,
    ) -> WebhookDeliveryConnection:
        page = await info.context.services.webhooks.deliveries_page(
            info.context.require_principal(),
            endpoint_id=optional_id(endpoint, WebhookEndpoint, "endpoint"),
            status=status,
            first=first,
            after=after,
        )
        return connection(WebhookDeliveryConnection, page, WebhookDelivery.from_model)


# --- mutations ---------------------------------------------------------------------------------


@strawberry.input(description="A new webhook endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="http(s) URL; internal addresses only where the server allows them."
    )
    event_types: list[WebhookEventType] = strawberry.field(  # type: ignore[valid-type]
        description="What it receives (at least one)."
    )
    description: str | None = strawberry.field(default=None, description="What it is for.")
    enabled: bool = strawberry.field(default=True, description="False: registered but idle.")
    organisation: relay.GlobalID | None = strawberry.field(
        default=None, description="Whose events; default: your organisation."
    )


@strawberry.input(description="Changes to a webhook endpoint; omitted fields stay as they are.")
class UpdateWebhookEndpointInput:
    id: relay.GlobalID = strawberry.field(description="The WebhookEndpoint.")
    url: str | None = strawberry.field(default=None, description="A new URL.")
    event_types: list[WebhookEventType] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="The new set of event types (at least one)."
    )
    description: str | None = strawberry.field(
        default=None, description="A new description; an empty one clears it."
    )
    enabled: bool | None = strawberry.field(
        default=None, description="Switch it off or on (on: held deliveries go out now)."
    )


@strawberry.input(description="Which webhook endpoint.")
class WebhookEndpointIdInput:
    id: relay.GlobalID = strawberry.field(description="The WebhookEndpoint.")


@strawberry.input(description="Which delivery to send again.")
class ReplayWebhookDeliveryInput:
    id: relay.GlobalID = strawberry.field(description="The WebhookDelivery to replay.")


@strawberry.type(description="The endpoint changed, or why not.")
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = strawberry.field(
        default=None, description="The endpoint; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The endpoint and its new secret, or why not.")
class WebhookSecretPayload:
    endpoint: WebhookEndpoint | None = strawberry.field(
        default=None, description="The endpoint; null when refused."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The signing secret (`whsec_...`), shown this once: keep it to verify "
        "signatures. Null when refused.",
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The endpoint deleted, or why not.")
class DeleteWebhookEndpointPayload:
    deleted_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The deleted endpoint's ID; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The new delivery queued, or why not.")
class ReplayWebhookDeliveryPayload:
    delivery: WebhookDelivery | None = strawberry.field(
        default=None, description="The new PENDING delivery; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


def _secret_payload(
    result: EndpointWithSecret | None, errors: list[MutationError]
) -> WebhookSecretPayload:
    if result is None:
        return WebhookSecretPayload(errors=errors)
    return WebhookSecretPayload(
        endpoint=WebhookEndpoint.from_model(result.endpoint), secret=result.secret, errors=errors
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Register a webhook endpoint (ADMIN); the payload shows its secret once."
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookSecretPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.webhooks.create_endpoint(
                p,
                organisation_id=optional_id(input.organisation, Organisation, "organisation"),
                url=input.url,
                description=input.description,
                event_types=[_EventType(t).value for t in input.event_types],
                enabled=input.enabled,
            ),
        )
        return _secret_payload(result, errors)

    @strawberry.mutation(description="Change a webhook endpoint (ADMIN).")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        types = input.event_types
        endpoint, errors = await attempt(
            info,
            lambda p: info.context.services.webhooks.update_endpoint(
                p,
                decode_id(input.id, WebhookEndpoint, "id"),
                url=input.url,
                description=input.description,
                event_types=None if types is None else [_EventType(t).value for t in types],
                enabled=input.enabled,
            ),
        )
        return WebhookEndpointPayload(
            endpoint=endpoint and WebhookEndpoint.from_model(endpoint), errors=errors
        )

    @strawberry.mutation(description="Delete a webhook endpoint and its log (ADMIN).")
    async def delete_webhook_endpoint(
        self, info: Info, input: WebhookEndpointIdInput
    ) -> DeleteWebhookEndpointPayload:
        deleted, errors = await attempt(
            info,
            lambda p: info.context.services.webhooks.delete_endpoint(
                p, decode_id(input.id, WebhookEndpoint, "id")
            ),
        )
        return DeleteWebhookEndpointPayload(
            deleted_id=input.id if deleted is not None else None, errors=errors
        )

    @strawberry.mutation(
        description="A new signing secret (ADMIN), shown once; the previous one keeps signing "
        "alongside it for the overlap window."
    )
    async def rotate_webhook_secret(
        self, info: Info, input: WebhookEndpointIdInput
    ) -> WebhookSecretPayload:
        result, errors = await attempt(
            info,
            lambda p: info.context.services.webhooks.rotate_secret(
                p, decode_id(input.id, WebhookEndpoint, "id")
            ),
        )
        return _secret_payload(result, errors)

    @strawberry.mutation(
        description="Send a logged delivery again (ADMIN): same body and webhook-id, new signature."
    )
    async def replay_webhook_delivery(
        self, info: Info, input: ReplayWebhookDeliveryInput
    ) -> ReplayWebhookDeliveryPayload:
        delivery, errors = await attempt(
            info,
            lambda p: info.context.services.webhooks.replay(
                p, decode_id(input.id, WebhookDelivery, "id")
            ),
        )
        return ReplayWebhookDeliveryPayload(
            delivery=delivery and WebhookDelivery.from_model(delivery), errors=errors
        )
