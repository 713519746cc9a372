"""GraphQL for recalls and trace (being written)."""

from __future__ import annotations

import strawberry


@strawberry.type
class Query:
    @strawberry.field(description="Placeholder until the supervision API lands.")
    def supervision_pending(self) -> bool:
        return True


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Placeholder until the supervision API lands.")
    def supervision_pending(self) -> bool:
        return True
