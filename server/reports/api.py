"""GraphQL for reports (being written)."""

from __future__ import annotations

import strawberry


@strawberry.type
class Query:
    @strawberry.field(description="Placeholder until the reports API lands.")
    def reports_pending(self) -> bool:
        return True
