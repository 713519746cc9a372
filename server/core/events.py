"""Event bus: services publish small events after commit; subscribers get them from a queue.

This is the in-memory bus for one process (SQLite). Each subscriber has a bounded queue: a
slow reader loses its oldest events (and is told so) instead of stalling the publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[Event]]] = {}

    def publish(self, events: list[Event]) -> None:
        for event in events:
            for queue in self._subscribers.get(event.topic, ()):
                if queue.full():
                    queue.get_nowait()  # drop the oldest rather than block everyone
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.setdefault(topic, set()).add(queue)
        try:
            yield queue
        finally:
            self._subscribers[topic].discard(queue)

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))
