"""Static query cost, refused before execution, and a per-principal budget that refills.

Why: depth, alias and token limits still let one small document ask for hundreds of thousands
of nodes (nested connections multiply) or run a heavy report twenty times under aliases. So
every operation is priced from its parsed document and variables before anything runs, as
GitHub's and Shopify's GraphQL APIs do:

- a scalar or enum costs 0, an object 1, a list of objects n x (1 + its selection);
- a connection costs 1 + first x (the cost of its node selection): `first` is read from the
  literal, the variable or the argument's default (else the default page size), and lists
  under a connection (`edges`, `nodes`) have `first` items; other lists without `first` are
  assumed to hold DEFAULT_LIST_SIZE items;
- fragments and inline fragments count where they are spread; @skip/@include are honoured;
- a mutation's root field carries MUTATION_WEIGHT on top of its payload;
- heavy fields carry their own weight, declared where the field is declared:
  `@strawberry.field(metadata=weigh(200))` (see FieldCost).

The pure calculation is `operation_cost`; `CostLimits` (a SchemaExtension) refuses an operation
over the per-request maximum with QUERY_TOO_COSTLY, then spends its cost from the principal's
`CostBudget` (token bucket: capacity C points, refilling R points a second; anonymous requests
are keyed by client IP) and refuses with THROTTLED when the bucket holds too little. Every
response carries `extensions.cost {requested, remaining, resetAt}`.

The budget lives in the process (`memory://`, per worker) unless `rate_limit_storage` names a
Redis URL, where one Lua script refills and spends atomically so all workers share a bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    TypeNode,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    validate,
)
from graphql.execution.values import get_argument_values, get_directive_values, get_variable_values
from graphql.type import GraphQLIncludeDirective, GraphQLSkipDirective
from graphql.type.definition import GraphQLInterfaceType
from graphql.utilities import get_operation_ast, type_from_ast
from starlette.responses import Response
from strawberry.extensions import SchemaExtension

from server.core.errors import RequestCode
from server.core.ratelimit import client_ip

COST_KEY = "apotheca.cost"
DEFAULT_LIST_SIZE = 5  # a list without `first`: a purchase order's lines, a trace's hops
MUTATION_WEIGHT = 10  # a write: one transaction, ledger, audit and events
INTROSPECTION_WEIGHT = 100  # __schema / __type: in memory, priced flat so GraphiQL works
QUERY_TOO_COSTLY = RequestCode.QUERY_TOO_COSTLY.value
THROTTLED = RequestCode.THROTTLED.value


@dataclass(frozen=True)
class FieldCost:
    """The weight a heavy field carries on top of its structural cost.

    `weight` is added once; `per_item` x the value of `size_arg` (else `default_size`) prices a
    field that returns a whole document of that many items as one scalar (epcisExport);
    `flags` adds weight when a boolean argument is true (auditIntegrity(full: true))."""

    weight: int = 0
    per_item: int = 0
    size_arg: str | None = None
    default_size: int = 0
    flags: Mapping[str, int] = field(default_factory=dict)


def weigh(
    weight: int = 0,
    *,
    per_item: int = 0,
    size_arg: str | None = None,
    default_size: int = 0,
    flags: Mapping[str, int] | None = None,
) -> dict[str, FieldCost]:
    """Field metadata declaring a heavy field's weight: `strawberry.field(metadata=weigh(...))`."""
    return {COST_KEY: FieldCost(weight, per_item, size_arg, default_size, dict(flags or {}))}


def field_weight(field_def: GraphQLField) -> FieldCost | None:
    """The FieldCost declared on a Strawberry field, if any."""
    definition = (field_def.extensions or {}).get("strawberry-definition")
    metadata = getattr(definition, "metadata", None) or {}
    found = metadata.get(COST_KEY)
    return found if isinstance(found, FieldCost) else None


def _is_wrapper(named: GraphQLNamedType) -> bool:
    """Relay plumbing costs nothing itself: the connection field and its nodes are priced."""
    name = named.name
    return name.endswith(("Connection", "Edge")) or name == "PageInfo"


@dataclass
class _Pricer:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDefinitionNode]
    variables: Any  # graphql-core's coerced VariableValues, None when the variables are bad
    default_page_size: int
    default_list_size: int

    def selection(
        self,
        parent: GraphQLNamedType,
        selection_set: SelectionSetNode | None,
        list_size: int | None,
        seen: frozenset[str] = frozenset(),
        root_weight: int = 0,
    ) -> int:
        if selection_set is None:
            return 0
        total = 0
        for node in selection_set.selections:
            if not self._included(node):
                continue
            if isinstance(node, FieldNode):
                total += self.field(parent, node, list_size, root_weight)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selection(
                    target or parent, node.selection_set, list_size, seen, root_weight
                )
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:  # unknown or cyclic: validation refuses
                    continue
                target = self.schema.get_type(fragment.type_condition.name.value)
                total += self.selection(
                    target or parent, fragment.selection_set, list_size, seen | {name}, root_weight
                )
        return total

    def field(
        self, parent: GraphQLNamedType, node: FieldNode, list_size: int | None, root_weight: int
    ) -> int:
        name = node.name.value
        if name == "__typename":
            return 0
        if name in ("__schema", "__type"):
            return INTROSPECTION_WEIGHT
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        field_def = parent.fields.get(name)
        if field_def is None:
            return 0
        args = self._arguments(field_def, node)
        first = _count(args.get("first"))
        if first is None and "first" in field_def.args:
            first = self.default_page_size
        nullable = get_nullable_type(field_def.type)
        named = get_named_type(field_def.type)
        item = 0 if is_leaf_type(named) or _is_wrapper(named) else 1
        if is_list_type(nullable):
            size = first if first is not None else list_size
            size = self.default_list_size if size is None else size
            structural = size * (item + self.selection(named, node.selection_set, None))
        elif first is not None and not is_leaf_type(named):  # a connection
            structural = 1 + self.selection(named, node.selection_set, first)
        else:
            structural = item + self.selection(named, node.selection_set, None)
        declared = field_weight(field_def)
        if declared is None:
            return structural + root_weight
        extra = declared.weight
        if declared.per_item:
            size = _count(args.get(declared.size_arg)) if declared.size_arg else None
            extra += declared.per_item * (declared.default_size if size is None else size)
        extra += sum(w for flag, w in declared.flags.items() if args.get(flag) is True)
        return structural + extra

    def _arguments(self, field_def: GraphQLField, node: FieldNode) -> dict[str, Any]:
        try:
            return get_argument_values(field_def, node, self.variables)
        except GraphQLError:  # a bad value: execution refuses it; price the defaults
            return {}

    def _included(self, node: Any) -> bool:
        try:
            skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
            include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        except GraphQLError:
            return True
        return not (skip and skip.get("if") is True) and not (
            include and include.get("if") is False
        )


def _count(value: Any) -> int | None:
    """A size argument as a non-negative count; None when absent or not an integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(value, 0)


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
    *,
    default_page_size: int = 100,
    default_list_size: int = DEFAULT_LIST_SIZE,
) -> int:
    """The static cost of the operation `operation_name` of `document` (see the module doc)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    pricer = _Pricer(
        schema,
        fragments,
        _coerced_variables(schema, operation, variables or {}),
        default_page_size,
        default_list_size,
    )
    weight = MUTATION_WEIGHT if operation.operation is OperationType.MUTATION else 0
    return pricer.selection(root, operation.selection_set, None, root_weight=weight)


def _coerced_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode, raw: Mapping[str, Any]
) -> Any:
    """The variables as execution will see them (defaults applied); None when they are bad
    (execution refuses the request then, and the pricing falls back to argument defaults).

    Only scalars and enums are coerced here, which is where sizes and flags come from: an input
    object or list given as a variable (a feed's thousand movements) would cost as much to
    coerce again as to execute, and is passed on as given (it never changes a price; execution
    coerces and checks it)."""
    given: dict[str, Any] = {}
    definitions = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name in raw and not _is_leaf(schema, definition.type):
            given[name] = raw[name]
        else:
            definitions.append(definition)
    coerced = get_variable_values(schema, definitions, dict(raw))
    if isinstance(coerced, list):
        return None
    coerced.coerced.update(given)
    return coerced


def _is_leaf(schema: GraphQLSchema, node: TypeNode) -> bool:
    """A variable's declared type is a scalar or an enum (not a list, not an input object)."""
    declared = type_from_ast(schema, node)
    if isinstance(declared, GraphQLNonNull):
        declared = declared.of_type
    return is_leaf_type(declared)


# --- the per-principal budget ----------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """The outcome of spending `requested` points from a bucket."""

    allowed: bool
    requested: int
    remaining: int
    reset_at: datetime  # when the bucket is full again
    retry_after: float  # seconds until `requested` points are available (0 when allowed)

    def as_extension(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "remaining": self.remaining,
            "resetAt": self.reset_at.isoformat().replace("+00:00", "Z"),
        }


_REDIS_SPEND = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if cost <= tokens then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1)
return {allowed, tostring(tokens), tostring(now)}
"""


class CostBudget:
    """Token buckets by key: `capacity` points, refilling `refill_per_second`.

    `memory://` keeps them in this process (one budget per worker); a `redis://` URL keeps them
    in Redis, shared by every worker and host."""

    MAX_MEMORY_KEYS = 50_000

    def __init__(
        self, capacity: int, refill_per_second: float, storage_url: str = "memory://"
    ) -> None:
        if capacity < 1 or refill_per_second <= 0:
            raise ValueError("a cost budget needs a positive capacity and refill rate")
        self.capacity = capacity
        self.rate = refill_per_second
        self.storage_url = storage_url
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._redis: Any = None
        self._script: Any = None
        if storage_url.startswith(("redis://", "rediss://", "unix://")):
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(storage_url)
            self._script = self._redis.register_script(_REDIS_SPEND)
        elif not storage_url.startswith("memory://"):
            raise ValueError(f"unsupported cost budget storage {storage_url!r}")

    async def spend(self, key: str, cost: int) -> Spend:
        if self._script is not None:
            allowed, tokens, now = await self._script(
                keys=[f"apotheca:cost:{key}"], args=[self.capacity, self.rate, cost]
            )
            return self._outcome(bool(int(allowed)), cost, float(tokens), float(now))
        return self._spend_memory(key, cost, time.time())

    def _spend_memory(self, key: str, cost: int, now: float) -> Spend:
        """Refill and spend in one step; nothing awaits in between, so the loop keeps it atomic."""
        tokens, at = self._buckets.get(key, (float(self.capacity), now))
        tokens = min(float(self.capacity), tokens + max(0.0, now - at) * self.rate)
        allowed = cost <= tokens
        if allowed:
            tokens -= cost
        if tokens >= self.capacity:
            self._buckets.pop(key, None)  # a full bucket is the same as none
        else:
            if len(self._buckets) >= self.MAX_MEMORY_KEYS:
                self._forget_full(now)
            self._buckets[key] = (tokens, now)
        return self._outcome(allowed, cost, tokens, now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled, so anonymous IPs cannot grow the table forever."""
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]

    def _outcome(self, allowed: bool, cost: int, tokens: float, now: float) -> Spend:
        remaining = math.floor(tokens)
        reset_at = datetime.fromtimestamp(now + (self.capacity - tokens) / self.rate, UTC)
        retry_after = 0.0 if allowed else max(0.0, (cost - tokens) / self.rate)
        return Spend(allowed, cost, remaining, reset_at, retry_after)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def budget_key(context: Any) -> str:
    """Whose bucket: the signed-in principal, else the client's IP address."""
    principal = getattr(context, "principal", None)
    if principal is not None:
        return f"principal:{principal.subject}"
    request = getattr(context, "request", None)
    return f"ip:{client_ip(request.scope) if request is not None else 'unknown'}"


# --- the schema extension --------------------------------------------------------------------


def too_costly(cost: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"query costs {cost:,}; the limit is {limit:,}",
        extensions={"code": QUERY_TOO_COSTLY, "cost": {"requested": cost, "limit": limit}},
    )


def retry_after(spend: Spend) -> int:
    """Whole seconds to wait (at least 1), as Retry-After and the error both say."""
    return max(1, math.ceil(spend.retry_after))


def throttled(spend: Spend) -> GraphQLError:
    wait = retry_after(spend)
    return GraphQLError(
        f"query costs {spend.requested:,} and {spend.remaining:,} of your budget remain; "
        f"retry in {wait} s",
        extensions={"code": THROTTLED, "cost": spend.as_extension(), "retryAfter": wait},
    )


class CostLimits(SchemaExtension):
    """Prices the validated document; refuses it over the maximum or the remaining budget.

    Runs in `on_validate` after ValidationCache (extensions enter in order), so an invalid
    document keeps its validation errors, and a refused one never reaches execution. A refused
    or invalid request spends nothing but still reports the budget (`requested` is its price).
    """

    def __init__(self, *, max_cost: int, default_page_size: int) -> None:
        super().__init__()
        self.max_cost = max_cost
        self.default_page_size = default_page_size
        self.spend: Spend | None = None

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.pre_execution_errors is None and ec.graphql_document is not None:
            ec.pre_execution_errors = validate(
                ec.schema._schema, ec.graphql_document, ec.validation_rules
            )
        cost = 0
        if not ec.pre_execution_errors and ec.graphql_document is not None:
            cost = operation_cost(
                ec.schema._schema,
                ec.graphql_document,
                ec.variables,
                ec.operation_name,
                default_page_size=self.default_page_size,
            )
            if cost > self.max_cost:
                ec.pre_execution_errors = [too_costly(cost, self.max_cost)]
        budget = getattr(ec.context, "cost_budget", None)
        if isinstance(budget, CostBudget):
            refused = bool(ec.pre_execution_errors)
            spend = await budget.spend(budget_key(ec.context), 0 if refused else cost)
            self.spend = replace(spend, requested=cost)
            if not spend.allowed:
                _answer_429(ec.context, spend)
                ec.pre_execution_errors = [throttled(spend)]
        yield

    def get_results(self) -> dict[str, Any]:
        return {"cost": self.spend.as_extension()} if self.spend is not None else {}


def _answer_429(context: Any, spend: Spend) -> None:
    """On HTTP, the refusal is also a 429 with Retry-After (a websocket has no status)."""
    response = getattr(context, "response", None)
    if isinstance(response, Response):  # a websocket's context holds the socket here
        response.status_code = 429
        response.headers["Retry-After"] = str(retry_after(spend))
