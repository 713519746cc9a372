"""GraphQL for counts (being written)."""

from __future__ import annotations

import strawberry


@strawberry.type
class Query:
    @strawberry.field(description="Placeholder until the counts API lands.")
    def counts_pending(self) -> bool:
        return True


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Placeholder until the counts API lands.")
    def counts_pending(self) -> bool:
        return True
