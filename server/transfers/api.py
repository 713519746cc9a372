"""GraphQL for transfers (being written)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry


@strawberry.type
class Query:
    @strawberry.field(description="Placeholder until the transfers API lands.")
    def transfers_pending(self) -> bool:
        return True


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Placeholder until the transfers API lands.")
    def transfers_pending(self) -> bool:
        return True


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Placeholder until the transfers API lands.")
    async def transfers_pending(self) -> AsyncGenerator[bool, None]:
        yield True
