"""Websocket sessions that end, and how many a principal may hold.

A websocket is authenticated once, at connection_init, but lives for hours; so each open
connection is registered here with its principal and its token:

- it ends (4401, unauthenticated) when its access token expires: a timer at the token's `exp`;
- it ends on an event of topic "session" (server.core.events; on PostgreSQL LISTEN/NOTIFY brings
  it to every worker): {"user_id": id} (the user was deactivated, or their roles or scope
  changed, so running subscriptions were authorised with access they no longer have: 4403),
  {"client_id": id} (the OAuth client was revoked: 4403), {"session_id": sid} (the sign-in,
  a refresh-token family, was revoked: 4401);
- every operation the socket starts re-authenticates its token first (the websocket handler,
  server.core.fanout), so nothing slips through between the change and the event.

Caps: a principal (a user, or an OAuth client when the principal has `client_id`) may hold
`max_connections` open websockets and `max_subscriptions` running subscriptions across them.
Both are counted per worker process: with N workers a principal may hold up to N times as many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from server.core.errors import AccountDisabled, DomainError, ErrorCode, Forbidden
from server.core.events import EventBus
from server.core.security import Principal

log = logging.getLogger("apotheca.sessions")

SESSION_TOPIC = "session"

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429


class SessionRefused(Exception):
    """A websocket refused at connection_init with its own close code (not Strawberry's 4403)."""

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.message = message


class TooManySubscriptions(DomainError):
    code = ErrorCode.TOO_MANY_SUBSCRIPTIONS


def close_code_for(error: DomainError) -> int:
    """4403 when signing in again will not help (disabled, forbidden), else 4401."""
    if isinstance(error, AccountDisabled | Forbidden):
        return CLOSE_FORBIDDEN
    return CLOSE_UNAUTHENTICATED


class Connection:
    """One websocket: its current principal and token, and how to end it."""

    def __init__(self, close: Callable[[int, str], Awaitable[None]]) -> None:
        self._close = close
        self.principal: Principal | None = None
        self.token: str | None = None
        self.key: str | None = None  # whose quota: Principal.subject
        self.subscriptions = 0
        self.ended = False
        self._timer: asyncio.TimerHandle | None = None
        self._ending: asyncio.Task[None] | None = None

    async def end(self, code: int, reason: str) -> None:
        """Close the socket with `code` (once; later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        self.disarm()
        try:
            await self._close(code, reason[:120])  # a close reason is at most 123 bytes
        except Exception:
            log.debug("closing a websocket that was already gone", exc_info=True)

    def end_soon(self, code: int, reason: str) -> None:
        """End from a callback or another connection's task, without waiting."""
        if self.ended or self._ending is not None:
            return
        self._ending = asyncio.get_running_loop().create_task(self.end(code, reason))

    def arm(self, expires_at: datetime | None) -> None:
        """A timer at the token's expiry; re-armed when the principal is reloaded."""
        self.disarm()
        if expires_at is None:
            return
        delay = max(0.0, (expires_at - datetime.now(UTC)).total_seconds())
        self._timer = asyncio.get_running_loop().call_later(
            delay, self.end_soon, CLOSE_UNAUTHENTICATED, "access token expired"
        )

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SessionRegistry:
    """The open websockets of one worker, by principal; ends them on "session" events."""

    def __init__(self, bus: EventBus, *, max_connections: int, max_subscriptions: int) -> None:
        self.bus = bus
        self.max_connections = max_connections
        self.max_subscriptions = max_subscriptions
        self._connections: dict[str, set[Connection]] = {}
        self._task: asyncio.Task[None] | None = None

    # --- connections -------------------------------------------------------------------------

    def admit(self, connection: Connection, principal: Principal, token: str) -> None:
        """Register a connection at connection_init, or refuse it (4429) over the cap."""
        key = principal.subject
        members = self._connections.setdefault(key, set())
        if connection not in members and len(members) >= self.max_connections:
            if not members:
                del self._connections[key]
            raise SessionRefused(
                CLOSE_TOO_MANY,
                f"{ErrorCode.TOO_MANY_CONNECTIONS.value}: at most {self.max_connections} "
                "websockets per user",
            )
        members.add(connection)
        connection.key = key
        self.refresh(connection, principal, token)

    def refresh(self, connection: Connection, principal: Principal, token: str) -> None:
        """The principal as just re-authenticated (every operation)."""
        connection.principal = principal
        connection.token = token
        connection.arm(principal.expires_at)

    def leave(self, connection: Connection) -> None:
        connection.ended = True
        connection.disarm()
        if connection.key is None:  # never admitted
            return
        members = self._connections.get(connection.key)
        if members is not None:
            members.discard(connection)
            if not members:
                del self._connections[connection.key]

    def connections_of(self, principal: Principal) -> int:
        return len(self._connections.get(principal.subject, ()))

    @property
    def open(self) -> int:
        return sum(len(members) for members in self._connections.values())

    # --- subscriptions -----------------------------------------------------------------------

    def subscriptions_of(self, key: str) -> int:
        return sum(c.subscriptions for c in self._connections.get(key, ()))

    def reserve_subscription(self, connection: Connection) -> None:
        """Count one more running subscription of the connection's principal, or refuse."""
        used = 0 if connection.key is None else self.subscriptions_of(connection.key)
        if used >= self.max_subscriptions:
            raise TooManySubscriptions(
                f"at most {self.max_subscriptions} subscriptions per user at once; "
                "complete one first"
            )
        connection.subscriptions += 1

    @staticmethod
    def release_subscription(connection: Connection) -> None:
        connection.subscriptions = max(0, connection.subscriptions - 1)

    # --- ending on events --------------------------------------------------------------------

    def end_matching(self, payload: dict[str, Any]) -> int:
        """End the connections a "session" event names; returns how many."""
        code, reason, matches = _matcher(payload)
        if matches is None:
            return 0
        ended = 0
        for members in tuple(self._connections.values()):
            for connection in tuple(members):
                if connection.principal is not None and matches(connection.principal):
                    connection.end_soon(code, reason)
                    ended += 1
        return ended

    async def start(self) -> None:
        """Listen for "session" events (subscribed before this returns)."""
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        await ready.wait()

    async def _listen(self, ready: asyncio.Event) -> None:
        async with self.bus.subscribe(SESSION_TOPIC) as subscription:
            ready.set()
            while True:
                event = await subscription.get()
                try:
                    self.end_matching(event.payload)
                except Exception:
                    log.exception("session event %r not applied", event.payload)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _matcher(
    payload: dict[str, Any],
) -> tuple[int, str, Callable[[Principal], bool] | None]:
    if (user_id := payload.get("user_id")) is not None:
        return (
            CLOSE_FORBIDDEN,
            str(payload.get("reason") or "account disabled"),
            lambda p: p.user_id == user_id and getattr(p, "client_id", None) is None,
        )
    if (client_id := payload.get("client_id")) is not None:
        return (
            CLOSE_FORBIDDEN,
            "client revoked",
            lambda p: getattr(p, "client_id", None) == client_id,
        )
    if (session_id := payload.get("session_id")) is not None:
        return CLOSE_UNAUTHENTICATED, "sign-in revoked", lambda p: p.session_id == session_id
    return CLOSE_UNAUTHENTICATED, "", None


__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_TOO_MANY",
    "CLOSE_UNAUTHENTICATED",
    "SESSION_TOPIC",
    "Connection",
    "SessionRefused",
    "SessionRegistry",
    "TooManySubscriptions",
    "close_code_for",
]
