"""GraphQL for transfers between locations: request, approve or reject, pick, dispatch,
receive (with discrepancies) or cancel; stock in transit; live `transferUpdated`.

Split as the schema is: `types`, `queries`, `mutations`, `subscriptions`. Resolvers only
translate: the service and `server.transfers.queries` own every check, read and transaction.
"""

from server.transfers.api.mutations import Mutation
from server.transfers.api.queries import Query
from server.transfers.api.subscriptions import Subscription

__all__ = ["Mutation", "Query", "Subscription"]
