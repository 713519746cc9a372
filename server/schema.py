"""One schema from every domain's Query and Mutation, with the API's limits and error policy."""

from __future__ import annotations

import functools
from datetime import datetime

import strawberry
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.printer import print_schema
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from server.alerts import api as alerts_api
from server.audit import api as audit_api
from server.catalog import api as catalog_api
from server.config import Settings
from server.controlled import api as controlled_api
from server.core.cost import CostLimits
from server.core.graphql import (
    DATETIME_SCALAR,
    ApiErrors,
    InputHygiene,
    install_node_ids,
    install_relations,
    install_self_methods,
)
from server.core.logs import LoggedSchema
from server.counts import api as counts_api
from server.finance import api as finance_api
from server.forecasting import api as forecasting_api
from server.integrations import api as integrations_api
from server.inventory import api as inventory_api
from server.network import api as network_api
from server.production import api as production_api
from server.purchasing import api as purchasing_api
from server.replenishment import api as replenishment_api
from server.reports import api as reports_api
from server.scanning import api as scanning_api
from server.shipments import api as shipments_api
from server.supervision import api as supervision_api
from server.suppliers import api as suppliers_api
from server.transfers import api as transfers_api
from server.webhooks import api as webhooks_api


@strawberry.type
class NodeQuery:
    node: relay.Node | None = relay.node()  # described below: relay.node(description=) drops `id`


Query = merge_types(
    "Query",
    (
        NodeQuery,
        network_api.Query,
        catalog_api.Query,
        inventory_api.Query,
        scanning_api.Query,
        alerts_api.Query,
        counts_api.Query,
        reports_api.Query,
        forecasting_api.Query,
        suppliers_api.Query,
        purchasing_api.Query,
        replenishment_api.Query,
        shipments_api.Query,
        transfers_api.Query,
        supervision_api.Query,
        audit_api.Query,
        integrations_api.Query,
        controlled_api.Query,
        finance_api.Query,
        webhooks_api.Query,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        network_api.Mutation,
        catalog_api.Mutation,
        inventory_api.Mutation,
        scanning_api.Mutation,
        production_api.Mutation,
        alerts_api.Mutation,
        counts_api.Mutation,
        suppliers_api.Mutation,
        purchasing_api.Mutation,
        replenishment_api.Mutation,
        shipments_api.Mutation,
        transfers_api.Mutation,
        supervision_api.Mutation,
        integrations_api.Mutation,
        finance_api.Mutation,
        webhooks_api.Mutation,
    ),
)
Subscription = merge_types(
    "Subscription",
    (
        inventory_api.Subscription,
        alerts_api.Subscription,
        shipments_api.Subscription,
        transfers_api.Subscription,
    ),
)


def _describe_root(root: type, description: str, *, inputs: bool = False) -> None:
    """The merged root types get their description and, with `inputs`, each mutation's one
    `input` argument says what its input type says (written once, on the type). Query's
    arguments are left alone: reading a relay field's arguments before the schema is built
    loses the `id` its extension adds."""
    definition = root.__strawberry_definition__  # type: ignore[attr-defined]
    definition.description = description
    for field in definition.fields if inputs else ():
        for argument in field.arguments:
            if argument.python_name == "input" and argument.description is None:
                argument.description = argument.type.__strawberry_definition__.description


_describe_root(Query, "Everything you may read, each list paged and limited to your scope.")
_describe_root(
    Mutation, "Every change; each takes one `input` and answers with `errors`.", inputs=True
)
_describe_root(Subscription, "Live changes over graphql-transport-ws, limited to your scope.")
_node_field = next(f for f in Query.__strawberry_definition__.fields if f.python_name == "node")  # type: ignore[attr-defined]
_node_field.description = "Any object by its global ID (refused when it is outside your scope)."


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    return _schema(
        settings.max_tokens,
        settings.max_query_depth,
        settings.max_aliases,
        settings.max_query_cost,
        settings.max_page_size,
    )


@functools.cache
def _schema(
    max_tokens: int, max_depth: int, max_aliases: int, max_cost: int, page_size: int
) -> strawberry.Schema:
    """Built once per process and limits: Strawberry's relay fields may only be bound once.

    The depth and alias rules are built once too: each limiter instance makes a new rule
    class, and the validation cache is keyed by the rules, so per-request limiters would
    make every request miss it and validate its document again. The cost check comes after
    the validation cache: it prices only valid documents (server/core/cost.py)."""
    limit_rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    schema = LoggedSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map={datetime: DATETIME_SCALAR}),
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: AddValidationRules(limit_rules),
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            InputHygiene,
            lambda: CostLimits(max_cost=max_cost, default_page_size=page_size),
            ApiErrors,
        ],
    )
    install_relations(schema)  # relation() fields skip Strawberry's per-call wrapping
    install_node_ids(schema)  # so do Node ids
    install_self_methods(schema)  # and methods that take only self
    return schema


def schema_sdl() -> str:
    return print_schema(build_schema()) + "\n"
