"""GraphQL for recalls, lot traces and batch supervision: types, queries and mutations.

Resolvers only decode IDs and convert results; the services decide who may do what (see
server/supervision/service.py for the recall scope and the patient-reference privacy rule,
checks.py for the supervision scope)."""

from server.supervision.api.mutations import Mutation
from server.supervision.api.queries import Query

__all__ = ["Mutation", "Query"]
