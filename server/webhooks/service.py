"""Webhooks: endpoints an organisation's admin registers, the outbox, and the delivery worker.

The outbox: every event emitted on the bus (server.core.events) passes `capture` inside the
emitting transaction. Events a webhook carries become one `webhook_deliveries` row per enabled
endpoint that asked for the type and whose organisation could read the thing through the API
(the same checks the subscriptions and reads use, with the organisation's own view as the
principal). The rows commit or roll back with the change: nothing is lost, nothing is sent for
a change that did not happen.

The worker (`start`, run by the app's lifespan) claims due rows in short transactions of their
own, never the causing one: PostgreSQL `FOR UPDATE SKIP LOCKED`, so several workers on several
hosts never claim one row twice; SQLite, the single writer. A claim pushes the row's next
attempt out by a lease (timeout + a minute), so a worker that dies mid-send leaves the row to
be retried, by anyone, after the lease; rows survive restarts because they are rows. Sending
happens outside any transaction; each result is recorded in one more short transaction.

Answers: 2xx delivered; 410 Gone disables the endpoint; anything else (or no answer within the
timeout) is retried after the schedule's next delay with +-20% jitter, until the schedule is
used up (FAILED). Deliveries to one endpoint are sent one at a time in the order their changes
committed; a retry does not hold back later messages, so order holds for first attempts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from server.alerts.models import Alert
from server.alerts.rules import alert_visible
from server.core import audit
from server.core.db import AFTER_COMMIT, Database, dialect_of, utcnow
from server.core.errors import DomainError, ErrorCode, InvalidInput, NotFound
from server.core.events import Event, EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import Permission, Principal, Role
from server.core.validation import get_or_not_found, optional_text
from server.network.models import Location, Organisation, OrganisationKind
from server.suppliers.parties import sees_parties
from server.webhooks import rules
from server.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from server.webhooks.rules import RetrySchedule, WebhookEventType

log = logging.getLogger("apotheca.webhooks")

_WAKE = "apotheca_webhooks_wake"
ENDPOINT_COLUMNS = ("organisation_id", "url", "description", "event_types", "enabled")


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint and its signing secret: shown once, when created or rotated."""

    endpoint: WebhookEndpoint
    secret: str


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    endpoint_id: int
    message_id: str
    body: str
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None


def endpoint_principal(
    organisation_id: int, kind: OrganisationKind, location_ids: Sequence[int]
) -> Principal:
    """What an organisation reads through the API, as a principal: its suppliers' view for a
    SUPPLIER, everything for a REGULATOR (a global role), else its staff's view of its own
    locations. The visibility checks of reads and subscriptions then apply unchanged."""
    if kind is OrganisationKind.REGULATOR:
        roles, locations = frozenset({Role.REGULATOR}), None
    elif kind is OrganisationKind.SUPPLIER:
        roles, locations = frozenset({Role.SUPPLIER}), frozenset(location_ids)
    else:
        roles, locations = frozenset({Role.PHARMACIST}), frozenset(location_ids)
    return Principal(
        user_id=0,
        username=f"webhooks:{organisation_id}",
        roles=roles,
        organisation_id=organisation_id,
        location_ids=locations,
    )


def may_receive(
    principal: Principal,
    event_type: WebhookEventType,
    payload: dict[str, Any],
    alert: Alert | None,
) -> bool:
    """Whether the organisation could read what the event is about (shipmentUpdated,
    purchase orders, recalls, alertRaised use these same rules)."""
    if event_type is WebhookEventType.SHIPMENT_UPDATED:
        return principal.can(Permission.PROCUREMENT_READ) and sees_parties(
            principal, payload["sender_id"], payload["receiver_id"]
        )
    if event_type is WebhookEventType.PURCHASE_ORDER_UPDATED:
        return principal.can(Permission.PROCUREMENT_READ) and sees_parties(
            principal, payload["buyer_id"], payload["supplier_id"]
        )
    if event_type is WebhookEventType.RECALL_CREATED:
        return principal.can(Permission.STOCK_READ)
    if rules.is_recovery(payload):
        return principal.can(Permission.STOCK_READ) and (
            principal.location_ids is None
            or principal.organisation_id in payload["organisation_ids"]
        )
    return (
        alert is not None
        and principal.can(Permission.STOCK_READ)
        and alert_visible(principal, alert)
    )


class WebhookService:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        *,
        allow_hosts: str = "",
        retry_schedule: str = "5,300,1800,7200,18000,36000,36000",
        timeout_seconds: float = 10.0,
        poll_seconds: float = 5.0,
        secret_overlap: timedelta = timedelta(hours=24),
        max_page_size: int = 100,
        batch: int = 100,
    ) -> None:
        self.db = db
        self.bus = bus
        self.allow_hosts = rules.parse_allow_hosts(allow_hosts)
        self.schedule = RetrySchedule.parse(retry_schedule)
        self.timeout = timeout_seconds
        self.poll_seconds = poll_seconds
        self.secret_overlap = secret_overlap
        self.max_page_size = max_page_size
        self.batch = batch
        self.lease = timedelta(seconds=timeout_seconds + 60)
        self._wake = asyncio.Event()
        self.rounds = 0  # worker rounds run: the tests check an idle worker stays idle
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        bus.on_emit(self.capture)

    # --- the outbox: inside the causing transaction -----------------------------------------

    async def capture(self, session: AsyncSession, events: list[Event]) -> None:
        """The bus hook: outbox rows for the events webhooks carry, in the caller's
        transaction. Costs nothing for other events and one query when nobody listens."""
        wanted = [
            (event, kind)
            for event in events
            if (kind := rules.event_type_of(event.topic, event.payload)) is not None
        ]
        if not wanted:
            return
        endpoints = [
            (endpoint_id, organisation_id, set(types))
            for endpoint_id, organisation_id, types in (
                await session.execute(
                    select(
                        WebhookEndpoint.id,
                        WebhookEndpoint.organisation_id,
                        WebhookEndpoint.event_types,
                    ).where(WebhookEndpoint.enabled.is_(True))
                )
            ).all()
        ]
        kinds = {kind.value for _, kind in wanted}
        endpoints = [e for e in endpoints if e[2] & kinds]
        if not endpoints:
            return
        principals = await self._principals(session, {e[1] for e in endpoints})
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for event, kind in wanted:
            alert = None
            if event.topic == rules.ALERT_TOPIC:
                alert = await session.get(Alert, event.payload["alert_id"])
            body: str | None = None
            for endpoint_id, organisation_id, types in endpoints:
                if kind.value not in types:
                    continue
                principal = principals.get(organisation_id)
                if principal is None or not may_receive(principal, kind, event.payload, alert):
                    continue
                if body is None:
                    payload = event.payload
                    if alert is not None:
                        payload = payload | {"details": alert.details or {}}
                    body = rules.message_body(kind, rules.event_data(kind, payload), now)
                rows.append(
                    {
                        "endpoint_id": endpoint_id,
                        "message_id": rules.new_message_id(),
                        "event_type": kind.value,
                        "body": body,
                        "status": DeliveryStatus.PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        if not rows:
            return
        await session.execute(insert(WebhookDelivery), rows)
        self._wake_after_commit(session)

    def _wake_after_commit(self, session: AsyncSession) -> None:
        if not session.info.get(_WAKE):
            session.info[_WAKE] = True
            session.info.setdefault(AFTER_COMMIT, []).append(self._wake.set)

    async def _principals(
        self, session: AsyncSession, organisation_ids: set[int]
    ) -> dict[int, Principal]:
        orgs = dict(
            (
                await session.execute(
                    select(Organisation.id, Organisation.kind).where(
                        Organisation.id.in_(organisation_ids)
                    )
                )
            ).all()
        )
        locations: dict[int, list[int]] = defaultdict(list)
        for location_id, organisation_id in (
            await session.execute(
                select(Location.id, Location.organisation_id).where(
                    Location.organisation_id.in_(organisation_ids)
                )
            )
        ).all():
            locations[organisation_id].append(location_id)
        return {
            org_id: endpoint_principal(org_id, kind, locations[org_id])
            for org_id, kind in orgs.items()
        }

    # --- the worker: outside any causing transaction ----------------------------------------

    async def start(self) -> None:
        """Run the delivery worker in this process until `stop`."""
        if self._task is not None:
            return
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            self.rounds += 1
            self._wake.clear()  # before claiming: a commit meanwhile sets it again
            try:
                sent = await self.deliver_due()
            except Exception:
                log.exception("webhook delivery round failed; retrying shortly")
                sent = 0
            if sent:
                continue
            wait = self.poll_seconds
            with contextlib.suppress(Exception):
                due = await self._next_due()
                if due is not None:
                    wait = max(0.0, min(wait, (due - utcnow()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def deliver_due(self) -> int:
        """Claim the due deliveries, send them (each endpoint's in order, endpoints side by
        side) and record the answers; how many were claimed."""
        claimed = await self._claim()
        if not claimed:
            return 0
        by_endpoint: dict[int, list[_Claimed]] = defaultdict(list)
        for c in claimed:
            by_endpoint[c.endpoint_id].append(c)
        await asyncio.gather(*(self._send_in_order(group) for group in by_endpoint.values()))
        return len(claimed)

    async def _send_in_order(self, group: list[_Claimed]) -> None:
        """One endpoint's claimed messages, one after the other; the answers are recorded
        together in one transaction (a crash before it only means those are sent again: the
        receiver deduplicates by webhook-id). A 410 stops the round: the rest wait."""
        results: list[tuple[_Claimed, _Outcome]] = []
        for claimed in group:
            outcome = await self._send(claimed)
            results.append((claimed, outcome))
            if outcome.status_code == 410:
                break
        await self._record(results, unsent=[c.delivery_id for c in group[len(results) :]])

    async def _claim(self) -> list[_Claimed]:
        now = utcnow()
        async with self.db.write() as session:
            stmt = (
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.endpoint_id,
                    WebhookDelivery.message_id,
                    WebhookDelivery.body,
                    WebhookEndpoint.url,
                    WebhookEndpoint.secret,
                    WebhookEndpoint.previous_secret,
                    WebhookEndpoint.previous_secret_until,
                )
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                    WebhookEndpoint.enabled.is_(True),
                )
                .order_by(WebhookDelivery.id)
                .limit(self.batch)
            )
            if dialect_of(session) == "postgresql":
                stmt = stmt.with_for_update(of=WebhookDelivery.__table__, skip_locked=True)
            rows = (await session.execute(stmt)).all()
            if not rows:
                return []
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([r.id for r in rows]))
                .values(next_attempt_at=now + self.lease)
            )
        return [
            _Claimed(
                r.id,
                r.endpoint_id,
                r.message_id,
                r.body,
                r.url,
                (r.secret,)
                + (
                    (r.previous_secret,)
                    if r.previous_secret
                    and r.previous_secret_until
                    and r.previous_secret_until > now
                    else ()
                ),
            )
            for r in rows
        ]

    async def _next_due(self) -> datetime | None:
        async with self.db.read() as session:
            due: datetime | None = (
                await session.execute(
                    # Held rows of disabled endpoints are not due: the worker would spin.
                    select(func.min(WebhookDelivery.next_attempt_at))
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(
                        WebhookDelivery.status == DeliveryStatus.PENDING,
                        WebhookEndpoint.enabled.is_(True),
                    )
                )
            ).scalar_one()
        return due

    async def _send(self, claimed: _Claimed) -> _Outcome:
        """One signed POST (Standard Webhooks: webhook-id, -timestamp, -signature)."""
        client = self._client
        if client is None:  # deliver_due called without start (tests, the CLI)
            client = self._client = httpx.AsyncClient(timeout=self.timeout)
        at = utcnow()
        signature = " ".join(
            Webhook(secret).sign(claimed.message_id, at, claimed.body) for secret in claimed.secrets
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "Apotheca-Webhooks/1",
            "webhook-id": claimed.message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
        }
        try:
            response = await client.post(claimed.url, content=claimed.body, headers=headers)
        except httpx.HTTPError as error:
            return _Outcome(None, f"{type(error).__name__}: {error}"[:500] or "request failed")
        code = response.status_code
        return _Outcome(code, None if 200 <= code < 300 else f"answered HTTP {code}")

    async def _record(self, results: list[tuple[_Claimed, _Outcome]], *, unsent: list[int]) -> None:
        """Store each attempt's result; release what was claimed and not sent."""
        now = utcnow()
        async with self.db.write() as session:
            rows = {
                d.id: d
                for d in (
                    await session.execute(
                        select(WebhookDelivery).where(
                            WebhookDelivery.id.in_([c.delivery_id for c, _ in results])
                        )
                    )
                ).scalars()
            }  # a missing one: its endpoint was deleted meanwhile
            for claimed, outcome in results:
                delivery = rows.get(claimed.delivery_id)
                if delivery is not None:
                    await self._record_one(session, delivery, claimed, outcome, now)
                if outcome.error:
                    log.info("webhook %s to %s: %s", claimed.message_id, claimed.url, outcome.error)
            if unsent:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(unsent))
                    .values(next_attempt_at=now)
                )

    async def _record_one(
        self,
        session: AsyncSession,
        delivery: WebhookDelivery,
        claimed: _Claimed,
        outcome: _Outcome,
        now: datetime,
    ) -> None:
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.response_status = outcome.status_code
        delivery.last_error = outcome.error
        code = outcome.status_code
        if code is not None and 200 <= code < 300:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            return
        if code == 410:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            endpoint = await session.get(WebhookEndpoint, claimed.endpoint_id)
            if endpoint is not None and endpoint.enabled:
                endpoint.enabled = False
                endpoint.disabled_reason = (
                    f"the receiver answered 410 Gone at {now:%Y-%m-%d %H:%M} UTC"
                )
                endpoint.updated_at = now
                await session.flush()
                await audit.record(
                    session,
                    None,
                    action="webhook_endpoint.disable",
                    entity_type="WebhookEndpoint",
                    entity_id=endpoint.id,
                    before={"enabled": True},
                    after={"enabled": False},
                    reason=endpoint.disabled_reason,
                )
            return
        delay = self.schedule.next_delay(delivery.attempts)
        if delay is None:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = now + delay

    # --- endpoints: the organisation admin's use cases ---------------------------------------

    def _organisation(self, principal: Principal, organisation_id: int | None) -> int:
        principal.require(Permission.NETWORK_MANAGE)
        chosen = organisation_id if organisation_id is not None else principal.organisation_id
        if chosen is None:
            raise InvalidInput(
                "you belong to no organisation: name the one the endpoint is for",
                field="organisation",
            )
        return chosen

    async def create_endpoint(
        self,
        principal: Principal,
        *,
        organisation_id: int | None,
        url: str,
        description: str | None,
        event_types: Sequence[str],
        enabled: bool = True,
    ) -> EndpointWithSecret:
        org = self._organisation(principal, organisation_id)
        url = rules.check_url(url, self.allow_hosts)
        description = optional_text(description, "description", max_length=500)
        types = rules.check_event_types(event_types)
        secret = rules.new_secret()
        async with self.db.write() as session:
            await get_or_not_found(session, Organisation, org, "organisation")
            endpoint = WebhookEndpoint(
                organisation_id=org,
                url=url,
                description=description,
                event_types=types,
                enabled=enabled,
                secret=secret,
                created_by=principal.user_id,
            )
            session.add(endpoint)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="webhook_endpoint.create",
                entity_type="WebhookEndpoint",
                entity_id=endpoint.id,
                after=audit.snapshot(endpoint, *ENDPOINT_COLUMNS),
            )
        return EndpointWithSecret(endpoint, secret)

    async def _endpoint(
        self, session: AsyncSession, principal: Principal, endpoint_id: int
    ) -> WebhookEndpoint:
        principal.require(Permission.NETWORK_MANAGE)
        endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None:
            raise NotFound("no such webhook endpoint", field="id")
        return endpoint

    async def update_endpoint(
        self,
        principal: Principal,
        endpoint_id: int,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change what is given (None: unchanged; an empty description clears it)."""
        principal.require(Permission.NETWORK_MANAGE)
        checked_url = rules.check_url(url, self.allow_hosts) if url is not None else None
        types = rules.check_event_types(event_types) if event_types is not None else None
        async with self.db.write() as session:
            endpoint = await self._endpoint(session, principal, endpoint_id)
            before = audit.snapshot(endpoint, *ENDPOINT_COLUMNS)
            if checked_url is not None:
                endpoint.url = checked_url
            if description is not None:
                endpoint.description = optional_text(description, "description", max_length=500)
            if types is not None:
                endpoint.event_types = types
            if enabled is not None:
                endpoint.enabled = enabled
                if enabled:
                    endpoint.disabled_reason = None
                    # Held deliveries go out now rather than at their old retry time.
                    await session.execute(
                        update(WebhookDelivery)
                        .where(
                            WebhookDelivery.endpoint_id == endpoint.id,
                            WebhookDelivery.status == DeliveryStatus.PENDING,
                        )
                        .values(next_attempt_at=utcnow())
                    )
                    self._wake_after_commit(session)
            endpoint.updated_at = utcnow()
            await session.flush()
            await audit.record(
                session,
                principal,
                action="webhook_endpoint.update",
                entity_type="WebhookEndpoint",
                entity_id=endpoint.id,
                before=before,
                after=audit.snapshot(endpoint, *ENDPOINT_COLUMNS),
            )
        return endpoint

    async def delete_endpoint(self, principal: Principal, endpoint_id: int) -> int:
        """The endpoint and its delivery log; pending deliveries are never sent."""
        async with self.db.write() as session:
            endpoint = await self._endpoint(session, principal, endpoint_id)
            before = audit.snapshot(endpoint, *ENDPOINT_COLUMNS)
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint.id)
                .values(replay_of_id=None)
            )
            await session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
            )
            await session.delete(endpoint)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="webhook_endpoint.delete",
                entity_type="WebhookEndpoint",
                entity_id=endpoint_id,
                before=before,
            )
        return endpoint_id

    async def rotate_secret(self, principal: Principal, endpoint_id: int) -> EndpointWithSecret:
        """A new secret; the previous one also signs (a second signature) for the overlap, so
        a receiver can switch without losing a message."""
        secret = rules.new_secret()
        now = utcnow()
        async with self.db.write() as session:
            endpoint = await self._endpoint(session, principal, endpoint_id)
            endpoint.previous_secret = endpoint.secret
            endpoint.previous_secret_until = now + self.secret_overlap
            endpoint.secret = secret
            endpoint.updated_at = now
            await session.flush()
            await audit.record(
                session,
                principal,
                action="webhook_endpoint.rotate_secret",
                entity_type="WebhookEndpoint",
                entity_id=endpoint.id,
                after={"previous_secret_until": endpoint.previous_secret_until.isoformat()},
            )
        return EndpointWithSecret(endpoint, secret)

    async def replay(self, principal: Principal, delivery_id: int) -> WebhookDelivery:
        """Send a logged message again: a new delivery with the same body and `webhook-id`
        (a receiver that already has it can tell), signed afresh when it is sent."""
        principal.require(Permission.NETWORK_MANAGE)
        now = utcnow()
        async with self.db.write() as session:
            original = await session.get(WebhookDelivery, delivery_id)
            if original is None:
                raise NotFound("no such webhook delivery", field="id")
            endpoint = await self._endpoint(session, principal, original.endpoint_id)
            if not endpoint.enabled:
                raise DomainError(
                    "the endpoint is disabled; enable it before replaying",
                    field="id",
                    code=ErrorCode.INVALID_TRANSITION,
                )
            replay = WebhookDelivery(
                endpoint_id=original.endpoint_id,
                message_id=original.message_id,
                event_type=original.event_type,
                body=original.body,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                replay_of_id=original.id,
                created_at=now,
            )
            session.add(replay)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="webhook_delivery.replay",
                entity_type="WebhookDelivery",
                entity_id=replay.id,
                after={"replay_of": original.id, "message_id": original.message_id},
            )
            self._wake_after_commit(session)
        return replay

    # --- reads -----------------------------------------------------------------------------

    async def endpoints_page(
        self,
        principal: Principal,
        *,
        organisation_id: int | None,
        first: int,
        after: str | None,
    ) -> Page[WebhookEndpoint]:
        principal.require(Permission.NETWORK_MANAGE)
        stmt = select(WebhookEndpoint)
        if organisation_id is not None:
            stmt = stmt.where(WebhookEndpoint.organisation_id == organisation_id)
        return await keyset_page(
            self.db,
            stmt,
            keys=[WebhookEndpoint.id],
            first=first,
            after=after,
            max_page_size=self.max_page_size,
            key_of=lambda e: [e.id],
        )

    async def deliveries_page(
        self,
        principal: Principal,
        *,
        endpoint_id: int | None,
        status: DeliveryStatus | None,
        first: int,
        after: str | None,
    ) -> Page[WebhookDelivery]:
        """The delivery log, newest first."""
        principal.require(Permission.NETWORK_MANAGE)
        stmt = select(WebhookDelivery)
        if endpoint_id is not None:
            stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            stmt = stmt.where(WebhookDelivery.status == status)
        return await keyset_page(
            self.db,
            stmt,
            keys=[WebhookDelivery.id],
            first=first,
            after=after,
            max_page_size=self.max_page_size,
            descending=True,
            key_of=lambda d: [d.id],
        )
