"""A minimal graphql-transport-ws client over `websockets`, for tests and benchmarks."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"


class GraphQLWebSocket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._next_id = 0

    @classmethod
    async def open(cls, http_url: str, token: str, **kwargs: Any) -> GraphQLWebSocket:
        url = http_url.replace("http://", "ws://", 1) + "/graphql"
        connection = await connect(url, subprotocols=[PROTOCOL], **kwargs)  # type: ignore[list-item]
        client = cls(connection)
        await client.send({"type": "connection_init", "payload": {"token": token}})
        ack = await client.receive()
        if ack.get("type") != "connection_ack":
            raise ConnectionError(f"no connection_ack: {ack}")
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        while True:
            message = json.loads(await self.connection.recv())
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            return dict(message)

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._next_id += 1
        operation_id = str(self._next_id)
        await self.send(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return operation_id

    async def close(self) -> None:
        await self.connection.close()
