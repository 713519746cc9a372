"""Subscription fan-out: one execution per group and event, the same bytes to every member.

Subscribers are grouped by (document, operation name, variables, scope class). The scope class
is everything of the principal that decides what it may see (roles, organisation, location scope,
lent permissions); identity (user id, name, request id) is left out, so two nurses of the same
wards share a group while nurses of different wards never do. A group runs the subscription
once, with the context of the member that opened it; each event's result is encoded once and
the same text goes to every member.

Each member has its own bounded queue and its own sending task: a member whose socket stalls
loses its oldest messages (`dropped`) and never holds up the group or the other members.

What is not shared: a group whose first result carries errors (typically a refused subscription,
whose message names the user) is dissolved and every member runs its subscription on its own,
exactly as without grouping; so do operations that are not subscriptions.

Sessions that end (server.core.sessions): every `subscribe` (query, mutation or subscription)
re-authenticates the connection's token first and is refused, and the socket closed, when the
token expired (4401), the sign-in was revoked (4401) or the account disabled (4403); a
subscription over the principal's cap gets an error TOO_MANY_SUBSCRIPTIONS. A connection that
ends cancels its operations, so each member leaves its group as if it had sent `complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationType, get_operation_ast, parse
from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from server.core.errors import DomainError
from server.core.security import Principal
from server.core.sessions import (
    Connection,
    SessionRefused,
    SessionRegistry,
    TooManySubscriptions,
    close_code_for,
)

log = logging.getLogger("apotheca.fanout")

END = "end"  # the group's stream finished: members send `complete`
ALONE = "alone"  # the group could not be shared: members run their subscription themselves


def scope_class(principal: Principal) -> Hashable:
    """What of a principal changes what it may see; principals equal here see the same."""
    return (principal.roles, principal.organisation_id, principal.location_ids, principal.grants)


@functools.lru_cache(maxsize=256)
def _document(query: str) -> DocumentNode | None:
    try:
        return parse(query)
    except GraphQLError:
        return None


def is_subscription(query: str, operation_name: str | None) -> bool:
    document = _document(query) if isinstance(query, str) else None
    if document is None:
        return False
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation is OperationType.SUBSCRIPTION


class Member:
    """One subscriber of a group: a bounded queue of encoded payloads and its own sender."""

    __slots__ = ("_items", "_ready", "_send", "_size", "dropped", "sent")

    def __init__(self, send: Callable[[str], Awaitable[None]], size: int) -> None:
        self._send = send
        self._items: deque[str] = deque()
        self._ready = asyncio.Event()
        self._size = size
        self.dropped = 0
        self.sent = 0

    def offer(self, payload: str) -> None:
        """Never blocks: when the queue is full the oldest payload is dropped."""
        if len(self._items) >= self._size:
            self._items.popleft()
            self.dropped += 1
        self._items.append(payload)
        self._ready.set()

    def finish(self, outcome: str) -> None:
        self._items.append(outcome)  # END/ALONE are never dropped: they go past the bound
        self._ready.set()

    async def run(self) -> str:
        """Send payloads until the group ends; returns END or ALONE."""
        items = self._items
        while True:
            while not items:
                self._ready.clear()
                await self._ready.wait()
            item = items.popleft()
            if item is END or item is ALONE:
                return item
            await self._send(item)
            self.sent += 1


class Group:
    """One running subscription shared by members of the same key."""

    def __init__(
        self,
        hub: FanoutHub,
        key: Hashable,
        run: Callable[[], Awaitable[Any]],
    ) -> None:
        self.hub = hub
        self.key = key
        self.members: set[Member] = set()
        self.closed = False
        self._open_stream = run
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from server.core.events import LISTENERS

        LISTENERS.set(lambda: len(self.members))  # the bus counts members, not groups
        outcome = END
        try:
            stream = await self._open_stream()
            async with aclosing(stream):
                first = True
                async for result in stream:
                    if (
                        isinstance(result, PreExecutionError)
                        or not isinstance(result, ExecutionResult)
                        or (first and result.errors)
                    ):
                        outcome = ALONE
                        return
                    first = False
                    self.hub.executions += 1
                    payload = self.hub.encode(result)
                    for member in tuple(self.members):
                        member.offer(payload)
        except asyncio.CancelledError:
            outcome = END
            raise
        except Exception:
            log.exception("shared subscription failed; its members run on their own")
            outcome = ALONE
        finally:
            self.close(outcome)

    def close(self, outcome: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub.forget(self)
        for member in tuple(self.members):
            member.finish(outcome)


class FanoutHub:
    """The groups of one process."""

    def __init__(self, encode: Callable[[Any], str | bytes], queue_size: int = 256) -> None:
        self._encode = encode
        self.queue_size = queue_size
        self._groups: dict[Hashable, Group] = {}
        self.executions = 0  # group results produced (one per group and event)
        self._members: set[Member] = set()  # every member still sending, its group open or not
        self._dropped_by_gone = 0

    # --- groups ------------------------------------------------------------------------------

    def key(
        self,
        query: str,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        principal: Principal | None,
    ) -> Hashable | None:
        """The group key of a subscription, or None when it is not to be shared."""
        if principal is None or not is_subscription(query, operation_name):
            return None
        try:
            canonical = json.dumps(variables or {}, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        return (query, operation_name, canonical, scope_class(principal))

    async def serve(
        self, key: Hashable, member: Member, open_stream: Callable[[], Awaitable[Any]]
    ) -> str:
        """Join (or open) the group of `key` and send its results until it ends; returns END
        or ALONE. `open_stream` starts the subscription when this member opens the group."""
        group = self._groups.get(key)
        if group is None or group.closed:
            group = self._groups[key] = Group(self, key, open_stream)
            group.members.add(member)
            group.start()
        else:
            group.members.add(member)
        self._members.add(member)
        try:
            return await member.run()
        finally:
            self._leave(group, member)

    def _leave(self, group: Group, member: Member) -> None:
        group.members.discard(member)
        self._members.discard(member)
        self._dropped_by_gone += member.dropped
        if not group.members and not group.closed:
            group.closed = True
            self.forget(group)
            if group.task is not None:
                group.task.cancel()

    def forget(self, group: Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    # --- encoding ----------------------------------------------------------------------------

    def encode(self, result: ExecutionResult) -> str:
        """The `payload` of a graphql-transport-ws `next` message, as Strawberry builds it."""
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        encoded = self._encode(payload)
        return encoded.decode() if isinstance(encoded, bytes) else encoded

    # --- figures -----------------------------------------------------------------------------

    @property
    def groups(self) -> int:
        return len(self._groups)

    @property
    def members(self) -> int:
        return len(self._members)

    @property
    def dropped(self) -> int:
        """Payloads dropped by members that could not keep up, since the process started."""
        return self._dropped_by_gone + sum(m.dropped for m in self._members)


class SharedTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws with subscriptions served through the view's FanoutHub.

    Everything else (connection_init, ping, limits, queries and mutations over the socket,
    refused subscriptions) is Strawberry's handler unchanged. The view provides `fanout` (a
    FanoutHub), `shared_context(principal)` (the context a group executes with), `sessions`
    (a SessionRegistry) and `reauthenticate(token)` (the principal of a token, checked afresh).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = Connection(self._end_session)
        if hasattr(self.context, "ws_session"):
            self.context.ws_session = self.session

    @property
    def sessions(self) -> SessionRegistry:
        return self.view.sessions  # type: ignore[attr-defined,no-any-return]

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SessionRefused as refused:  # over the principal's cap: 4429, not 4403
            await self.websocket.close(code=refused.close_code, reason=refused.message[:120])

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """Re-check the principal before any operation; count subscriptions against the cap."""
        if not self.connection_acknowledged or self.session.token is None:
            await super().handle_subscribe(message)
            return
        operation_id = message["id"]
        payload = message["payload"]
        token = self.session.token
        try:
            principal: Principal = await self.view.reauthenticate(token)  # type: ignore[attr-defined]
        except DomainError as error:
            await self._refuse(operation_id, error)
            await self.session.end(close_code_for(error), error.message)
            return
        if self.session.ended:
            return
        self.sessions.refresh(self.session, principal, token)
        self.context.principal = principal
        if not is_subscription(payload["query"], payload.get("operationName")):
            await super().handle_subscribe(message)
            return
        try:
            self.sessions.reserve_subscription(self.session)
        except TooManySubscriptions as error:
            await self._refuse(operation_id, error)
            return
        before = self.operations.get(operation_id)
        try:
            await super().handle_subscribe(message)
        finally:
            operation = self.operations.get(operation_id)
            if operation is not None and operation is not before and operation.task is not None:
                operation.task.add_done_callback(
                    lambda _: self.sessions.release_subscription(self.session)
                )
            else:  # refused by Strawberry (duplicate id, per-connection limit)
                self.sessions.release_subscription(self.session)

    async def _refuse(self, operation_id: str, error: DomainError) -> None:
        refusal = GraphQLError(error.message, extensions={"code": error.code.value})
        with contextlib.suppress(WebSocketDisconnected, RuntimeError):
            await self.send_message(
                {"id": operation_id, "type": "error", "payload": [refusal.formatted]}
            )

    async def _end_session(self, code: int, reason: str) -> None:
        """Cancel every operation (members leave their groups), then close with `code`."""
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(code=code, reason=reason)

    async def shutdown(self) -> None:
        self.sessions.leave(self.session)
        await super().shutdown()

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        hub: FanoutHub = self.view.fanout  # type: ignore[attr-defined]
        principal = getattr(self.context, "principal", None)
        key = hub.key(operation.query, operation.operation_name, operation.variables, principal)
        if key is None:
            await super().run_operation(operation)
            return
        send_text = self.websocket.ws.send_text  # type: ignore[attr-defined]
        prefix = f'{{"id":{json.dumps(operation.id)},"type":"next","payload":'

        async def send(payload: str) -> None:
            if operation.completed:
                return
            try:
                await send_text(prefix + payload + "}")
            except WebSocketDisconnect as error:
                raise WebSocketDisconnected from error

        context = self.view.shared_context(principal)  # type: ignore[attr-defined]

        def open_stream() -> Awaitable[Any]:
            return self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )

        try:
            outcome = await hub.serve(key, Member(send, hub.queue_size), open_stream)
        except WebSocketDisconnected:
            return
        if outcome == ALONE:
            await super().run_operation(operation)
            return
        with contextlib.suppress(WebSocketDisconnected):
            await operation.send_operation_message({"id": operation.id, "type": "complete"})


__all__ = [
    "ALONE",
    "END",
    "FanoutHub",
    "Group",
    "Member",
    "SharedTransportWSHandler",
    "scope_class",
]
