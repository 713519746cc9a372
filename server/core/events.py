"""Event bus: services emit small events inside their transaction; subscribers receive them
only once it commits.

- In memory (SQLite, one process): events wait on the session and are published after commit.
- PostgreSQL: events are sent with pg_notify inside the transaction (PostgreSQL delivers them
  only on commit) and every worker LISTENs, so all workers on all hosts fan out the same events.

Each subscriber has a bounded queue: a slow reader loses its oldest events (and `dropped` counts
them) instead of stalling the publisher or growing memory. Websocket subscriptions are shared
(server.core.fanout): one bus subscription per group of identical subscribers, which then hands
each member the encoded result through the member's own bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import AFTER_COMMIT, dialect_of

log = logging.getLogger("apotheca.events")

CHANNEL = "apotheca_events"
NOTIFY_LIMIT = 7000  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
_PENDING = "apotheca_pending_events"

# Set by a shared subscription (server.core.fanout): how many websocket subscribers the bus
# subscriptions opened in this context stand for, so subscriber counts stay per subscriber.
LISTENERS: contextvars.ContextVar[Callable[[], int] | None] = contextvars.ContextVar(
    "apotheca_listeners", default=None
)


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)


EmitHook = Callable[[AsyncSession, list[Event]], Awaitable[None]]


class Subscription:
    """One subscriber's bounded queue (one shared subscription's, when `listeners` is set)."""

    def __init__(self, size: int, listeners: Callable[[], int] | None = None) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0
        self._listeners = listeners

    @property
    def listeners(self) -> int:
        return 1 if self._listeners is None else self._listeners()

    def offer(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()


def _chunks(events: list[Event]) -> list[str]:
    """Pack events into as few notifications as fit under PostgreSQL's payload limit."""
    payloads: list[str] = []
    batch: list[dict[str, Any]] = []
    size = 2
    for event in events:
        item = {"t": event.topic, "p": event.payload}
        item_size = len(json.dumps(item, default=str)) + 1
        if batch and size + item_size > NOTIFY_LIMIT:
            payloads.append(json.dumps(batch, default=str))
            batch, size = [], 2
        batch.append(item)
        size += item_size
    if batch:
        payloads.append(json.dumps(batch, default=str))
    return payloads


def _drain(pending: list[Event]) -> list[Event]:
    taken = list(pending)
    pending.clear()
    return taken


_NOTIFY_ALL = text(
    "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload"
)


class EventBus:
    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self._pg_dsn: str | None = None
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._hooks: list[EmitHook] = []

    def on_emit(self, hook: EmitHook) -> None:
        """Run `hook(session, events)` inside the emitting transaction, before the events are
        queued: what it writes commits or rolls back with the change (the webhook outbox)."""
        self._hooks.append(hook)

    # --- publishing --------------------------------------------------------------------------

    async def emit(self, session: AsyncSession, events: list[Event]) -> None:
        """Queue events in the caller's transaction; they go out only if it commits."""
        if not events:
            return
        for hook in self._hooks:
            await hook(session, events)
        if dialect_of(session) == "postgresql":
            # Every chunk in one statement: a feed of 1,000 movements is one round trip.
            await session.execute(_NOTIFY_ALL, {"channel": CHANNEL, "payloads": _chunks(events)})
            return
        pending = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            # Published once the outermost transaction commits (see Database.write); the list
            # itself is captured, so it follows the request that emitted it in a group commit.
            session.info.setdefault(AFTER_COMMIT, []).append(lambda: self.publish(_drain(pending)))
        pending.extend(events)

    def take_pending(self, session: AsyncSession) -> list[Event]:
        """Events emitted in this session and not yet published (in-memory bus only; on
        PostgreSQL they are NOTIFYs inside the transaction). A caller that rolls back to a
        savepoint takes out what the undone work emitted, or keeps it to publish itself."""
        pending = session.info.get(_PENDING)
        return _drain(pending) if pending else []

    def publish(self, events: list[Event]) -> None:
        """Hand events to this process's subscribers (never blocks)."""
        for event in events:
            for subscription in tuple(self._subscribers.get(event.topic, ())):
                subscription.offer(event)

    # --- subscribing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(self._queue_size, LISTENERS.get())
        for topic in topics:
            self._subscribers.setdefault(topic, set()).add(subscription)
        try:
            yield subscription
        finally:
            for topic in topics:
                self._subscribers.get(topic, set()).discard(subscription)

    @property
    def queue_size(self) -> int:
        return self._queue_size

    def topics(self) -> set[str]:
        """Every topic this process has had subscribers for (a gauge lists each, zero or not)."""
        return set(self._subscribers)

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of `topic`: a shared subscription counts its members."""
        return sum(s.listeners for s in self._subscribers.get(topic, ()))

    # --- PostgreSQL fan-out ------------------------------------------------------------------

    async def start(self, database_url: str) -> None:
        """On PostgreSQL, LISTEN (and keep listening across reconnects) in this worker."""
        if not database_url.startswith("postgresql"):
            return
        self._pg_dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        ready = asyncio.Event()
        self._listen_task = asyncio.create_task(self._listen_forever(ready))
        await asyncio.wait_for(ready.wait(), timeout=10)

    async def _listen_forever(self, ready: asyncio.Event) -> None:
        import asyncpg

        while True:
            lost = asyncio.Event()
            try:
                self._listener = await asyncpg.connect(self._pg_dsn)
                self._listener.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await self._listener.add_listener(CHANNEL, self._on_notify)
                ready.set()
                await lost.wait()
                log.warning("event listener connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event listener failed; retrying in 1 s")
            await asyncio.sleep(1)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            items = json.loads(payload)
            self.publish([Event(item["t"], item["p"]) for item in items])
        except (ValueError, KeyError, TypeError):
            log.exception("malformed event notification dropped")

    async def stop(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None


class SharedLookups:
    """Work done once per event for all subscribers: with 1,000 listeners, the first one that
    needs an event's rows loads them and the other 999 await the same result."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._results: dict[Any, asyncio.Future[Any]] = {}

    async def get(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        future = self._results.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._results[key] = future
            while len(self._results) > self._size:
                self._results.pop(next(iter(self._results)))
            try:
                future.set_result(await load())
            except Exception as error:
                future.set_exception(error)
                self._results.pop(key, None)
                raise
        return await future
