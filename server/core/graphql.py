"""GraphQL plumbing shared by every domain: context, errors, pagination, loaders.

Domains import from here; this module knows nothing about any domain.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeVar, cast
from weakref import WeakKeyDictionary

import dateutil.parser
import strawberry
from graphql import (
    DocumentNode,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    get_operation_ast,
    is_input_type,
    type_from_ast,
    visit,
)
from graphql.error import GraphQLError
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.relay.types import GlobalIDValueError, InvalidGlobalIDError
from strawberry.relay.utils import to_base64
from strawberry.schema.types.base_scalars import DateTimeDefinition, wrap_parser
from strawberry.types.lazy_type import LazyType
from strawberry.types.nodes import SelectedField
from strawberry.utils.str_converters import to_camel_case

from server.core.cost import weigh
from server.core.db import Base, Database
from server.core.errors import DomainError, ErrorCode, Forbidden, InvalidInput, RequestCode
from server.core.graphql_enums import described_enum
from server.core.pagination import MAX_PK, Page, keyset_page
from server.core.security import Permission, Principal, require_principal
from server.core.validation import check_date, check_datetime, check_decimal, check_text

if TYPE_CHECKING:  # services.py wires every domain, whose api modules import this one
    from server.services import Services

log = logging.getLogger("apotheca.graphql")


T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=Base)  # every table has an integer primary key `id`
NodeT = TypeVar("NodeT", bound=relay.Node)


@dataclass
class Context:
    """What every resolver may use: services, the principal and this request's loaders."""

    services: Services
    principal: Principal | None
    auth_error: DomainError | None = None
    request: Any = None
    response: Any = None
    loaders: dict[Any, DataLoader[Any, Any]] = field(default_factory=dict)
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init
    ws_session: Any = None  # a websocket's server.core.sessions.Connection
    cost_budget: Any = None  # the app's CostBudget (server/core/cost.py); None: no budget
    # One read session (one transaction) for the whole request, shared by the principal, the
    # pages and every loader; `finish_request` closes it. Off for long-lived contexts (a
    # websocket's), where each read opens and closes its own session.
    shared_session: bool = False
    _session: AsyncSession | None = field(default=None, init=False, repr=False)
    _session_exit: AsyncExitStack | None = field(default=None, init=False, repr=False)
    _session_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    # The API objects relation() fields built from each loader's rows, by (converter, row
    # identity): a row many objects point at (a page's shared location) becomes one object, as
    # in memory. Weakly keyed by the loader, so `loaders.clear()` (a subscription's next
    # event) drops them with it.
    _built: WeakKeyDictionary[DataLoader[Any, Any], dict[tuple[Any, int], tuple[Any, Any]]] = field(
        default_factory=WeakKeyDictionary, init=False, repr=False
    )

    @property
    def db(self) -> Database:
        return self.services.db

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read session: this request's one shared session, else a fresh one per use.

        Loaders of one request dispatch concurrently; the lock gives the shared session to one
        statement at a time (an AsyncSession allows no concurrent use)."""
        if not self.shared_session:
            async with self.db.read() as session:
                yield session
            return
        async with self._session_lock:
            if self._session is None:
                self._session_exit = AsyncExitStack()
                self._session = await self._session_exit.enter_async_context(self.db.read())
            yield self._session

    async def close(self) -> None:
        """End this request's shared session, if one was opened (idempotent)."""
        async with self._session_lock:
            exit_stack, self._session, self._session_exit = self._session_exit, None, None
            if exit_stack is not None:
                await exit_stack.aclose()

    def require_principal(self) -> Principal:
        if self.principal is None and self.auth_error is not None:
            raise self.auth_error
        return require_principal(self.principal)

    def built(self, loader: DataLoader[Any, Any], row: Any, convert: Callable[[Any], T]) -> T:
        """`convert(row)` once per row `loader` gave (the row is kept, so its id stays its
        own); rows of a later loader (after `loaders.clear()`) are converted again."""
        built = self._built.get(loader)
        if built is None:
            built = self._built[loader] = {}
        key = (convert, id(row))
        hit = built.get(key)
        if hit is not None and hit[0] is row:
            return cast(T, hit[1])
        value = convert(row)
        built[key] = (row, value)
        return value

    def loader(self, key: Any, factory: Callable[[], DataLoader[Any, Any]]) -> DataLoader[Any, Any]:
        """One loader per key per request, so sibling fields share a batch."""
        if key not in self.loaders:
            self.loaders[key] = factory()
        return self.loaders[key]

    def by_id(self, model: type[ModelT]) -> DataLoader[int, ModelT | None]:
        """Batch-load rows of `model` by primary key.

        A page may prime it with the model's columns as plain rows instead of entities (see
        server.inventory.reads.columns_of): read a row's column attributes, nothing else."""
        loader = self.loaders.get(("by_id", model))
        if loader is not None:
            return loader

        async def load(ids: list[int]) -> list[ModelT | None]:
            async with self.read() as session:
                key = cast(Any, model).id  # Base itself declares no columns
                rows = (await session.execute(select(model).where(key.in_(ids)))).scalars()
                found = {cast(Any, row).id: row for row in rows}
            return [found.get(i) for i in ids]

        return self.loader(("by_id", model), lambda: DataLoader(load_fn=load))

    def grouped(self, name: str, column: Any, order_by: Any = None) -> DataLoader[int, list[Any]]:
        """Batch-load the rows whose `column` is each key (one-to-many), in `order_by` order."""
        model = column.class_

        async def load(keys: list[int]) -> list[list[Any]]:
            stmt = select(model).where(column.in_(keys))
            if order_by is not None:
                stmt = stmt.order_by(order_by)
            async with self.read() as session:
                rows = (await session.execute(stmt)).scalars().all()
            groups: dict[int, list[Any]] = {k: [] for k in keys}
            for row in rows:
                groups[getattr(row, column.key)].append(row)
            return [groups[k] for k in keys]

        return self.loader(("grouped", name), lambda: DataLoader(load_fn=load))


Info = strawberry.Info[Context, Any]


def request_ip(info: Info) -> str:
    """The client address of a resolver's request (throttles key on it, as sign-in does)."""
    request = info.context.request
    scope = getattr(request, "scope", None)
    client = scope.get("client") if isinstance(scope, dict) else None
    return str(client[0]) if client else "unknown"


async def finish_request(context: Any) -> None:
    """Release what a request's context holds (its shared read session)."""
    if isinstance(context, Context):
        await context.close()


def decode_id(
    global_id: relay.GlobalID | str,
    expected: type | str | tuple[type | str, ...],
    field: str,
) -> int:
    """The integer id inside a global ID of the expected type, or an INVALID_ID error.

    Given several types, an ID of any of them is accepted; a refusal names the first.
    """
    names = [
        t if isinstance(t, str) else t.__name__
        for t in (expected if isinstance(expected, tuple) else (expected,))
    ]
    try:
        gid = (
            global_id
            if isinstance(global_id, relay.GlobalID)
            else relay.GlobalID.from_id(global_id)
        )
    except GlobalIDValueError:
        raise DomainError(
            f"{field} is not a valid ID", field=field, code=ErrorCode.INVALID_ID
        ) from None
    if gid.type_name not in names:
        raise DomainError(
            f"{field} must be the ID of a {names[0]}", field=field, code=ErrorCode.INVALID_ID
        )
    return parse_pk(gid.node_id, field)


def optional_id(
    global_id: relay.GlobalID | None, expected: type | str | tuple[type | str, ...], field: str
) -> int | None:
    """`decode_id` for an optional argument: None stays None."""
    return None if global_id is None else decode_id(global_id, expected, field)


def sent_id(value: str) -> relay.GlobalID:
    """An ID input as Strawberry converts it for a `relay.GlobalID` field, with the same
    refusal (a request error, INVALID_ID) when it does not decode: for `coerced_input` builders,
    which read graphql-core's values, where IDs are still the strings sent."""
    try:
        return relay.GlobalID.from_id(value)
    except GlobalIDValueError as error:
        raise InvalidGlobalIDError(f'Value cannot represent a GlobalID: "{value}".') from error


def coerced_input(build: Callable[[Mapping[str, Any]], Any]) -> Callable[[type[T]], type[T]]:
    """Class decorator, above `@strawberry.input`: an argument of this input type is
    `build(value)`, `value` being graphql-core's coerced input (GraphQL field names, every
    published default filled in, scalars and enums parsed, IDs as sent; see `sent_id`).

    Strawberry otherwise converts an input field by field into instances, resolving each
    field's type and name on every call: ~140 µs an item for a feed's list of 1,000, more than
    the ledger spends recording it. `from_input` is Strawberry's hook for input types that
    build their own value; a resolver takes the result with
    `Annotated[Built, strawberry.argument(graphql_type=TheInput)]`, so the schema is the same.
    Refusals of the built value belong in the resolver (typed errors), not in `build`."""

    def decorate(cls: type[T]) -> type[T]:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        if not definition.is_input:
            raise TypeError(f"{cls.__name__} is not a Strawberry input type")
        definition.from_input = lambda _cls, value, _context: build(value)
        return cls

    return decorate


def parse_pk(node_id: str, field: str = "id") -> int:
    """The primary key inside a global ID: ASCII digits within the column's range."""
    if not (node_id.isascii() and node_id.isdigit()) or not 0 < int(node_id) <= MAX_PK:
        raise DomainError(f"{field} is not a valid ID", field=field, code=ErrorCode.INVALID_ID)
    return int(node_id)


def parse_pks(node_ids: Iterable[str]) -> list[int]:
    """For `resolve_nodes`: every id must parse, or the whole lookup is an INVALID_ID error."""
    return [parse_pk(i) for i in node_ids]


# --- typed mutation errors -------------------------------------------------------------------

ErrorCodeEnum = described_enum(
    ErrorCode,
    "Why a mutation was refused: one code to switch on, with `field` and a message beside it.",
    name="ErrorCode",
    UNAUTHENTICATED="No valid token: sign in (or refresh the token) and retry.",
    FORBIDDEN="Signed in, but your role or scope does not allow this.",
    NOT_FOUND="No such record (or none you may see).",
    INVALID_INPUT="An input value is malformed or out of range; `field` names it.",
    INVALID_ID="An ID that does not decode, or names another type than expected.",
    INSUFFICIENT_STOCK="Not enough stock at the location; nothing was written.",
    EXPIRED_LOT="The lot is past its expiry date and cannot be issued.",
    LOT_NOT_ISSUABLE="The lot is quarantined or recalled and cannot be issued.",
    DUPLICATE="A record with this unique value already exists.",
    IDEMPOTENCY_KEY_REUSED="This idempotency key was used for a different request.",
    INVALID_CREDENTIALS="Wrong username, password or client secret.",
    BARCODE_INVALID="The barcode cannot be read as a GS1 or EAN/UPC code.",
    UNKNOWN_PRODUCT="No catalogue product has the barcode's GTIN.",
    UNKNOWN_BATCH="The product has no recorded lot with the barcode's batch.",
    EXPIRY_MISMATCH="The barcode's expiry date differs from the recorded lot's.",
    SERIAL_ALREADY_DECOMMISSIONED="This serialised pack was already dispensed or disposed of.",
    COUNT_ALREADY_OPEN="A stock count is already open at this location.",
    COUNT_CLOSED="The stock count is finalized or cancelled.",
    INVALID_TRANSITION="The record's status does not allow this step now.",
    LOT_ALREADY_RECALLED="The lot is already under recall.",
    ALREADY_RECEIVED="That line or shipment was already received.",
    TOO_MANY_CONNECTIONS="You hold the most live connections allowed; close one first.",
    TOO_MANY_SUBSCRIPTIONS="This connection holds the most subscriptions allowed.",
    RATE_LIMITED="Too many requests in a short time; retry after the reset time.",
    WITNESS_REQUIRED="A controlled drug's disposal, adjustment or count variance needs a "
    "witness: a second user re-entering their password.",
    WITNESS_INVALID="The witness's username or password is wrong, or that user may not "
    "witness here (inactive, another organisation, or not a pharmacist or nurse).",
    WITNESS_SAME_USER="The witness must be a different person from the one recording.",
    PATIENT_REFERENCE_REQUIRED="A controlled drug is dispensed only against a patient reference.",
)


@strawberry.type(description="Why a mutation was refused; `field` names the input at fault.")
class MutationError:
    code: ErrorCodeEnum = strawberry.field(  # type: ignore[valid-type]
        description="What kind of refusal; switch on this."
    )
    field: str | None = strawberry.field(
        description="The input at fault as the schema spells it (e.g. `lines.0.quantity`); "
        "null when it is not one input."
    )
    message: str = strawberry.field(description="What went wrong, for people.")

    @classmethod
    def from_domain(cls, error: DomainError) -> MutationError:
        """Services name fields in Python (`minimum_quantity`, `lines.0.lot_id`); the API
        reports them as the schema spells them (`minimumQuantity`, `lines.0.lotId`)."""
        return cls(code=error.code, field=graphql_field(error.field), message=error.message)


def graphql_field(name: str | None) -> str | None:
    """A service's snake_case field path in the schema's camelCase (dots and indexes kept)."""
    if name is None:
        return None
    return ".".join(to_camel_case(part) for part in name.split("."))


# --- error masking with stable codes ---------------------------------------------------------

# How the limiters and the parser word their refusals, and the code each gets.
_REQUEST_ERROR_CODES = (
    ("exceeds maximum operation depth", RequestCode.QUERY_TOO_DEEP.value),
    ("aliases found", RequestCode.TOO_MANY_ALIASES.value),
    ("tokens", RequestCode.TOO_MANY_TOKENS.value),
)


def request_error_code(message: str) -> str:
    """A stable code for errors about the request itself (syntax, validation, limits)."""
    lowered = message.lower()
    for needle, code in _REQUEST_ERROR_CODES:
        if needle in lowered:
            return code
    return RequestCode.GRAPHQL_VALIDATION_FAILED.value


class ApiErrors(MaskErrors):
    """Expected errors keep their message and code; anything else becomes INTERNAL_SERVER_ERROR."""

    def __init__(self) -> None:
        super().__init__(error_message="Internal server error")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._convert(error) for error in errors]

    def _convert(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if isinstance(original, DomainError):
            return self._with_code(
                error,
                original.message,
                original.code.value,
                {"field": graphql_field(original.field)},
            )
        if isinstance(original, GlobalIDValueError):
            return self._with_code(error, error.message, ErrorCode.INVALID_ID.value)
        if original is None or isinstance(original, GraphQLError):
            if error.extensions and "code" in error.extensions:
                return error
            return self._with_code(error, error.message, request_error_code(error.message))
        # Logged once, with its traceback, by server.core.logs.LoggedSchema.process_errors.
        return self._with_code(error, self.error_message, "INTERNAL_SERVER_ERROR")

    @staticmethod
    def _with_code(
        error: GraphQLError, message: str, code: str, extra: dict[str, Any] | None = None
    ) -> GraphQLError:
        extensions = {**(error.extensions or {}), "code": code, **(extra or {})}
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=extensions,
        )


# --- input hygiene ---------------------------------------------------------------------------


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 date-time as sent: the C parser first (45x faster on what clients send,
    `Z` included), dateutil's isoparse (Strawberry's own DateTime parser) for what it refuses,
    so every value Strawberry accepted is still accepted."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return dateutil.parser.isoparse(value)


# Strawberry's DateTime with `parse_datetime`: a feed of 1,000 movements with their times
# parsed ~7 ms faster. Name, description and serialisation are Strawberry's.
DATETIME_SCALAR = replace(DateTimeDefinition, parse_value=wrap_parser(parse_datetime, "DateTime"))


def _check_leaf(value: Any, scalar: str | None, path: str) -> None:
    """One scalar as sent: every string is clean text; Decimal, DateTime and Date values are
    within what their columns and date arithmetic hold. Values that do not even parse are left
    to the scalar's own coercion (GRAPHQL_VALIDATION_FAILED)."""
    if isinstance(value, dict):  # a JSON scalar: its keys and values are stored as text too
        for key, item in value.items():
            _check_leaf(key, None, path)
            _check_leaf(item, None, f"{path}.{key}" if isinstance(key, str) else path)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_leaf(item, scalar, f"{path}.{index}")
        return
    if isinstance(value, str):
        check_text(value, path)
    if scalar == "Decimal" and isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return
        check_decimal(number, path)
    elif scalar == "DateTime" and isinstance(value, str):
        try:
            moment = parse_datetime(value)
        except (ValueError, OverflowError):
            return
        check_datetime(moment, path)
    elif scalar == "Date" and isinstance(value, str):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return
        check_date(day, path)


def _check_value(value: Any, type_: GraphQLInputType | None, path: str) -> None:
    """A variable's value walked along its declared type, so each leaf knows its scalar."""
    if value is None:
        return
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            _check_value(item, type_.of_type, f"{path}.{index}")
    elif isinstance(type_, GraphQLInputObjectType) and isinstance(value, dict):
        for key, item in value.items():
            field_def = type_.fields.get(key)
            _check_value(item, field_def.type if field_def else None, f"{path}.{key}")
    else:
        named = get_named_type(type_) if type_ is not None else None
        _check_leaf(value, named.name if named is not None else None, path)


class _LiteralChecker(Visitor):
    """Literals written into the document, named `field.argument.inputField`."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.fields: list[str] = []
        self.path: list[str] = []

    def enter_field(self, node: Any, *_: Any) -> None:
        self.fields.append(node.name.value)

    def leave_field(self, *_: Any) -> None:
        self.fields.pop()

    def enter_argument(self, node: Any, *_: Any) -> None:
        self.path.append(node.name.value)

    def leave_argument(self, *_: Any) -> None:
        self.path.pop()

    enter_object_field = enter_argument
    leave_object_field = leave_argument

    def enter_variable_definition(self, node: Any, *_: Any) -> None:
        self.path.append(f"${node.variable.name.value}")

    leave_variable_definition = leave_argument

    def _leaf(self, node: Any, *_: Any) -> None:
        named = get_named_type(self.type_info.get_input_type())
        where = ".".join(self.fields[-1:] + self.path) or "document"
        _check_leaf(node.value, named.name if named is not None else None, where)

    enter_string_value = enter_int_value = enter_float_value = _leaf


def _variables_problem(
    schema: GraphQLSchema, document: DocumentNode, operation: str | None, variables: Any
) -> None:
    definition = get_operation_ast(document, operation)
    if definition is None or not isinstance(variables, dict):
        return
    for var_def in definition.variable_definitions or ():
        name = var_def.variable.name.value
        if name in variables:
            declared = type_from_ast(schema, var_def.type)  # an input type once validated
            _check_value(variables[name], declared if is_input_type(declared) else None, f"${name}")


class InputHygiene(SchemaExtension):
    """Every argument passes server.core.validation's checks once, before any resolver runs:
    the variables as sent (walked along their declared types) and the document's literals
    (checked once per distinct document). A refusal is INVALID_INPUT naming the argument path
    (`$input.reason`, or `receiveStock.input.reason` for a literal); nothing executes."""

    _literal_verdicts: dict[str, str | None] = {}  # query text -> "path\0message" or None
    _MAX_VERDICTS = 512

    def on_execute(self) -> Any:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            try:
                self._check_literals(context.schema._schema, context.query, document)
                _variables_problem(
                    context.schema._schema, document, context.operation_name, context.variables
                )
            except InvalidInput as error:
                raise GraphQLError(
                    error.message,
                    extensions={"code": error.code.value, "field": error.field},
                ) from None
        yield

    def _check_literals(self, schema: GraphQLSchema, query: str | None, document: Any) -> None:
        verdicts = InputHygiene._literal_verdicts
        verdict = verdicts.get(query) if query is not None else None
        if verdict is None and (query is None or query not in verdicts):
            type_info = TypeInfo(schema)
            try:
                visit(document, TypeInfoVisitor(type_info, _LiteralChecker(type_info)))
            except InvalidInput as error:
                verdict = f"{error.field}\0{error.message}"
            if query is not None:
                if len(verdicts) >= self._MAX_VERDICTS:
                    verdicts.clear()
                verdicts[query] = verdict
        if verdict is not None:
            field_name, _, message = verdict.partition("\0")
            raise InvalidInput(message, field=field_name)


# --- connections -----------------------------------------------------------------------------


# A count(*) over the list's whole filtered set: priced like a page of 20 nodes.
TOTAL_COUNT_WEIGHT = 20


@strawberry.type(description="A page of a list, with where it sits in the whole list.")
class CountedConnection(relay.Connection[NodeT]):
    _total: strawberry.Private[Callable[[], Awaitable[int]]]

    # strawberry types `field(...)` used as a decorator as Any
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="How many items the list holds over all its pages (the filters applied).",
        metadata=weigh(TOTAL_COUNT_WEIGHT),
    )
    async def total_count(self) -> int:
        return await self._total()


ConnectionT = TypeVar("ConnectionT", bound=CountedConnection[Any])

# The two arguments of every keyset-paged list field, said the same way everywhere.
PageSize = Annotated[int, strawberry.argument(description="Page size (capped).")]
PageAfter = Annotated[
    str | None, strawberry.argument(description="Cursor of the previous page's end.")
]


def connection(
    connection_type: type[ConnectionT], page: Page[Any], convert: Callable[[Any], Any]
) -> ConnectionT:
    """A service's `Page` as a Relay connection of `convert(row)`; `totalCount` counts lazily."""
    edges = [
        relay.Edge(cursor=c, node=convert(r)) for r, c in zip(page.rows, page.cursors, strict=True)
    ]
    page_info = relay.PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=page.has_previous_page,
        start_cursor=page.cursors[0] if page.cursors else None,
        end_cursor=page.cursors[-1] if page.cursors else None,
    )
    return connection_type(edges=edges, page_info=page_info, _total=page.total)


async def attempt(
    info: Info, action: Callable[[Principal], Any]
) -> tuple[Any, list[MutationError]]:
    """Run a mutation's service call; expected refusals come back as typed errors, not raised.

    The request's shared read session ends first: on SQLite its snapshot predates the write,
    so the payload's fields (a lot the write created, say) are read in a new one after it."""
    await info.context.close()
    try:
        return await action(info.context.require_principal()), []
    except DomainError as error:
        return None, [MutationError.from_domain(error)]


async def load_nodes(
    info: Info,
    model: type[Any],
    node_ids: Iterable[str],
    convert: Callable[[Any], T],
    *,
    permission: Permission | None = None,
    location_of: Callable[[Any], int | None] | None = None,
    check: Callable[[Principal, Any], Awaitable[None] | None] | None = None,
) -> list[T | None]:
    """`resolve_nodes` for every type: signed in, allowed, in scope (the row's location, or
    `check`, which raises for a row the principal may not read), batched through a loader."""
    principal = info.context.require_principal()
    if permission is not None:
        principal.require(permission)
    rows = await info.context.by_id(model).load_many(parse_pks(node_ids))
    for row in rows:
        if row is None:
            continue
        if location_of is not None:
            location_id = location_of(row)
            if location_id is not None and not principal.sees_location(location_id):
                raise Forbidden("that record belongs to a location outside your scope")
        if check is not None and inspect.isawaitable(outcome := check(principal, row)):
            await outcome
    return [convert(row) if row is not None else None for row in rows]


async def load_related(
    info: Info, model: type[Any], pk: int | None, convert: Callable[[Any], T]
) -> T | None:
    """A to-one relation through this request's loader (None when the key is None)."""
    if pk is None:
        return None
    row = await info.context.by_id(model).load(pk)
    return convert(row) if row is not None else None


MISSING: Any = object()


def peek(loader: DataLoader[Any, Any], key: Any) -> Any:
    """The value `loader` already holds for `key`, else `MISSING` (not loaded, or failed)."""
    future = loader.cache_map.get(key)
    if future is None or not future.done() or future.cancelled() or future.exception():
        return MISSING
    return future.result()


def related(
    info: Info, model: type[Any], pk: int | None, convert: Callable[[Any], T]
) -> T | Awaitable[T | None] | None:
    """`load_related` for a sync resolver: the value itself when this request's loader already
    holds the row (no coroutine, no task), else the awaitable that batches it."""
    if pk is None:
        return None
    row = peek(info.context.by_id(model), pk)
    if row is MISSING:
        return load_related(info, model, pk, convert)
    return convert(row) if row is not None else None


def _node_type(annotation: Any) -> Any:
    """The Strawberry type a field resolves to, unwrapped from Optional/list and lazy types."""
    while hasattr(annotation, "of_type"):
        annotation = annotation.of_type
    if isinstance(annotation, LazyType):
        annotation = annotation.resolve_type()
    return annotation


# Field metadata of a relation() field: what `install_relations` needs to resolve it.
RELATION_KEY = "apotheca.relation"


@dataclass(frozen=True)
class _Relation:
    model: type[Any]
    key: str


def _resolve_relation(
    context: Context, source: Any, relation: _Relation, convert: Callable[[Any], Any]
) -> Any:
    """A relation's value: the object now when the request's loader holds the row (built once
    per request), else the awaitable that batches it."""
    pk = getattr(source, relation.key)
    if pk is None:
        return None
    loader = context.by_id(relation.model)
    row = peek(loader, pk)
    if row is MISSING:
        return _load_relation(loader, pk, context, convert)
    return context.built(loader, row, convert) if row is not None else None


async def _load_relation(
    loader: DataLoader[int, Any], pk: int, context: Context, convert: Callable[[Any], Any]
) -> Any:
    row = await loader.load(pk)
    return context.built(loader, row, convert) if row is not None else None


def relation(model: type[Any], key: str, *, description: str | None = None) -> Any:
    """A to-one field: the `model` row whose id is this object's `key` attribute, through the
    request's loader, as the field's annotated type (built with its `from_model`).

        product: Product = relation(catalog_models.Product, "product_id")
        approver: User | None = relation(network_models.User, "approved_by_id")

    `install_relations` gives a built schema's relation fields a direct resolver; this one
    serves until then (and any schema it is not run on)."""
    spec = _Relation(model, key)
    convert: list[Callable[[Any], Any]] = []  # resolved on first use: the type may be lazy

    def resolve(self: Any, info: Info) -> Any:
        if not convert:
            convert.append(_node_type(info.return_type).from_model)
        return _resolve_relation(info.context, self, spec, convert[0])

    return strawberry.field(
        resolver=resolve, description=description, metadata={RELATION_KEY: spec}
    )


def install_relations(schema: strawberry.Schema) -> int:
    """Resolve every relation() field of `schema` with a plain graphql-core resolver.

    Such a field takes no arguments and has no field extensions, so Strawberry's per-call
    wrapping (an Info object, argument conversion, the extension chain) does nothing for it
    but costs a page of 100 nested objects hundreds of calls. The direct resolver does what
    `relation`'s does, from the same context and loader. Returns how many fields it took."""
    taken = 0
    for _named, graphql_field, definition in _strawberry_fields(schema):
        spec = (getattr(definition, "metadata", None) or {}).get(RELATION_KEY)
        if not isinstance(spec, _Relation) or definition.extensions:
            continue
        graphql_field.resolve = _direct_resolver(spec, _node_type(definition.type).from_model)
        taken += 1
    return taken


def _strawberry_fields(schema: strawberry.Schema) -> Iterator[tuple[Any, Any, Any]]:
    """(object type, its graphql-core field, the field's Strawberry definition) for every
    field of `schema` that Strawberry defined: what the install_* functions rewire."""
    for named in schema._schema.type_map.values():
        if not isinstance(named, GraphQLObjectType):
            continue
        for graphql_field in named.fields.values():
            definition = (graphql_field.extensions or {}).get("strawberry-definition")
            if definition is not None:
                yield named, graphql_field, definition


def _direct_resolver(spec: _Relation, convert: Callable[[Any], Any]) -> Callable[..., Any]:
    def resolve(source: Any, info: Any) -> Any:
        return _resolve_relation(info.context, source, spec, convert)

    return resolve


def install_node_ids(schema: strawberry.Schema) -> int:
    """Resolve the `id` of every Node type of `schema` with a plain graphql-core resolver.

    Strawberry resolves each `id` through its generic field wrapping (an Info object, argument
    conversion, the extension chain) into a GlobalID object that the ID scalar then encodes: a
    stock page of 100 asks for 400 of them, the largest share of its execution that is ours.
    The direct resolver encodes the same `base64("<Type>:<node id>")` from the NodeID
    attribute. Types that override `resolve_id` or `resolve_typename`, or whose `id` carries
    field extensions, keep Strawberry's. Returns how many types it took."""
    taken = 0
    for named, id_field, definition in _strawberry_fields(schema):
        if id_field is not named.fields.get("id"):
            continue
        origin = getattr((named.extensions or {}).get("strawberry-definition"), "origin", None)
        if (
            definition.python_name != "_id"  # relay.Node's own id field
            or definition.extensions
            or not (isinstance(origin, type) and issubclass(origin, relay.Node))
            or origin.resolve_id.__func__ is not relay.Node.resolve_id.__func__  # type: ignore[attr-defined]
            or origin.resolve_typename.__func__ is not relay.Node.resolve_typename.__func__  # type: ignore[attr-defined]
        ):
            continue
        id_field.resolve = _node_id_resolver(named.name, origin.resolve_id_attr())
        taken += 1
    return taken


def _node_id_resolver(type_name: str, attr: str) -> Callable[..., str]:
    def resolve(source: Any, info: Any) -> str:
        node_id = getattr(source, attr)
        if node_id is None:  # as Strawberry's resolver, which asserts it
            raise ValueError(f"a {type_name} without its {attr}")
        return to_base64(type_name, node_id)

    return resolve


def install_self_methods(schema: strawberry.Schema) -> int:
    """Resolve every field whose resolver is a plain sync method of its type taking only
    `self` (`Lot.expired`, `Product.controlled`) by calling it on the source object.

    Strawberry would build an Info object and run its argument conversion and extension
    chain for each call, to hand the method the same source object. Fields with arguments,
    an `info`/`root` parameter, field extensions, or an async resolver keep Strawberry's.
    Returns how many fields it took."""
    taken = 0
    for _named, graphql_field, definition in _strawberry_fields(schema):
        resolver = getattr(definition, "base_resolver", None)
        if (
            resolver is None
            or definition.extensions
            or definition.arguments
            or resolver.is_async
            or resolver.self_parameter is None
            or resolver.info_parameter is not None
            or resolver.root_parameter is not None
            or resolver.parent_parameter is not None
            or not inspect.isfunction(resolver.wrapped_func)  # not a class or static method
        ):
            continue
        graphql_field.resolve = _self_method_resolver(resolver.wrapped_func)
        taken += 1
    return taken


def _self_method_resolver(method: Callable[[Any], Any]) -> Callable[..., Any]:
    def resolve(source: Any, info: Any) -> Any:
        return method(source)

    return resolve


class FromModel:
    """`from_model` for a type whose fields copy a model's columns of the same names.

    `__columns__` renames where the type's field differs from the column, e.g.
    `{"started_by_id": "started_by"}`; resolver fields are not copied."""

    __columns__: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_model(cls, row: Any) -> Self:
        return cls(**{name: getattr(row, column) for name, column in _copied_columns(cls)})


# Filled once per type. A dict rather than functools.cache: mypy does not take a `type[Self]`
# for the Hashable that cache's wrapper asks of its arguments.
_COPIED_COLUMNS: dict[type[Any], tuple[tuple[str, str], ...]] = {}


def _copied_columns(cls: type[Any]) -> tuple[tuple[str, str], ...]:
    """(field, column) for each constructor field of a FromModel type, computed once per type."""
    columns = _COPIED_COLUMNS.get(cls)
    if columns is None:
        renamed = cls.__columns__
        columns = tuple((f.name, renamed.get(f.name, f.name)) for f in fields(cls) if f.init)
        _COPIED_COLUMNS[cls] = columns
    return columns


def then(value: Any, convert: Callable[[Any], T]) -> T | Awaitable[T]:
    """`convert(value)`, now if `value` is ready, else once the awaitable gives it."""
    if inspect.isawaitable(value):

        async def later() -> T:
            return convert(await value)

        return later()
    return convert(value)


async def prefetch(
    info: Info, model: type[ModelT], pks: Iterable[int | None]
) -> list[ModelT | None]:
    """Load the rows a page refers to in one batch of this request's loader, so the page's
    to-one fields resolve without waiting (see `related`)."""
    keys = list(dict.fromkeys(pk for pk in pks if pk is not None))
    return await info.context.by_id(model).load_many(keys) if keys else []


def selected_paths(info: Info) -> set[str]:
    """The dotted GraphQL paths selected below the current field (fragments included), e.g.
    {"edges", "edges.node", "edges.node.lot"}: what a resolver may prefetch for."""
    paths: set[str] = set()

    def walk(selections: Iterable[Any], prefix: str) -> None:
        for selection in selections:
            if not isinstance(selection, SelectedField):  # a fragment: its fields count here
                walk(selection.selections, prefix)
                continue
            path = prefix + selection.name
            paths.add(path)
            walk(selection.selections, path + ".")

    for selected in info.selected_fields:
        walk(selected.selections, "")
    return paths


async def paginate(info: Info, stmt: Select[*tuple[Any, ...]], **options: Any) -> Page[Any]:
    """`keyset_page` with this request's database and the configured page cap."""
    return await keyset_page(
        info.context,
        stmt,
        max_page_size=info.context.services.settings.max_page_size,
        **options,
    )
