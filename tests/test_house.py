"""The house rules the review set, checked on every run so they cannot quietly erode:
resolvers stay thin, the ledger does not know its listeners, and the public schema keeps one
shape (one `input` per mutation, a payload with `errors`, people as `User`, every part
described). GraphQL imports outside the API layer are refused by ruff (TID251, pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.machinery
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    get_named_type,
)

from server.schema import build_schema

SERVER = Path(__file__).resolve().parents[1] / "server"
BUILT_IN_SCALARS = {"String", "Int", "Float", "Boolean", "ID"}
# What a resolver must not do itself: query, write or commit (its service does).
SESSION_CALLS = {"execute", "scalar", "scalars", "add", "add_all", "commit", "flush", "delete"}
QUERY_BUILDERS = {"select", "insert", "update", "delete", "text"}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def api_modules() -> Iterator[Path]:
    yield from sorted(SERVER.glob("*/api.py"))
    yield from sorted(SERVER.glob("*/api/*.py"))


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_there_are_api_modules_to_check() -> None:
    """The checks below look at something (a moved folder would make them pass vacuously)."""
    assert len(list(api_modules())) >= 20


@pytest.mark.parametrize("path", list(api_modules()), ids=lambda p: str(p.relative_to(SERVER)))
def test_resolvers_neither_query_nor_write(path: Path) -> None:
    """A resolver decodes arguments, calls one service method and maps the result."""
    tree = ast.parse(path.read_text(), filename=str(path))
    offences = []
    for call in calls(tree):
        func = call.func
        if isinstance(func, ast.Name) and func.id in QUERY_BUILDERS:
            offences.append(f"line {call.lineno}: {func.id}(...)")
        if isinstance(func, ast.Attribute) and func.attr in SESSION_CALLS:
            offences.append(f"line {call.lineno}: .{func.attr}(...)")
    imports = imported_modules(path)
    offences += [
        f"imports {m}" for m in imports if m == "sqlalchemy" or m.startswith("sqlalchemy.")
    ]
    assert offences == []


def test_the_ledger_does_not_import_its_listeners() -> None:
    """Supervision totals, alerts and events hear of movements through hooks wired in
    services.py; the inventory package imports none of them."""
    listeners = ("server.supervision", "server.alerts")
    for path in (SERVER / "inventory").glob("*.py"):
        wrong = [m for m in imported_modules(path) if m.startswith(listeners)]
        assert wrong == [], f"{path.name} imports {wrong}"


def test_services_do_not_import_api_modules() -> None:
    """Services know nothing of GraphQL, including another domain's types."""
    for path in sorted(SERVER.rglob("*.py")):
        if path.name in {"api.py", "app.py", "schema.py"} or "api" in path.parent.name:
            continue
        wrong = [m for m in imported_modules(path) if m.endswith(".api") or ".api." in m]
        assert wrong == [], f"{path.relative_to(SERVER)} imports {wrong}"


def _named(type_: object) -> object:
    return get_named_type(type_)  # type: ignore[arg-type]


def test_every_mutation_takes_one_input_and_answers_with_errors(schema: GraphQLSchema) -> None:
    assert schema.mutation_type is not None
    wrong = []
    for name, field in schema.mutation_type.fields.items():
        if list(field.args) != ["input"]:
            wrong.append(f"{name}({', '.join(field.args)})")
        elif not isinstance(field.args["input"].type, GraphQLNonNull):
            wrong.append(f"{name}: input is optional")
        payload = _named(field.type)
        if not isinstance(payload, GraphQLObjectType) or "errors" not in payload.fields:
            wrong.append(f"{name}: {payload} has no errors")
    assert wrong == []
    assert len(schema.mutation_type.fields) >= 40


def test_people_are_users_not_usernames(schema: GraphQLSchema) -> None:
    """A `...By` field naming who did something is their User, never a bare username string
    (`neededBy` is a date and `groupBy` a choice: only String-typed ones are people)."""
    wrong = []
    for type_name, type_ in schema.type_map.items():
        if isinstance(type_, GraphQLObjectType) and not type_name.startswith("__"):
            for name, field in type_.fields.items():
                if name.endswith("By") and _named(field.type) == schema.type_map["String"]:
                    wrong.append(f"{type_name}.{name}")
    assert wrong == []


def test_every_list_of_nodes_is_counted(schema: GraphQLSchema) -> None:
    """Every connection answers totalCount (priced; counted only when asked)."""
    connections = [n for n in schema.type_map if n.endswith("Connection")]
    assert len(connections) >= 15
    for name in connections:
        type_ = schema.type_map[name]
        assert isinstance(type_, GraphQLObjectType)
        assert "totalCount" in type_.fields, name


def test_every_part_of_the_schema_is_described(schema: GraphQLSchema) -> None:
    """Types, fields, arguments and enum values: third parties read the schema, not our code."""
    missing = []
    for name, type_ in schema.type_map.items():
        if name.startswith("__") or name in BUILT_IN_SCALARS:
            continue
        if not type_.description:
            missing.append(f"type {name}")
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description:
                        missing.append(f"{name}.{field_name}({arg_name})")
        if isinstance(type_, GraphQLEnumType):
            missing += [f"{name}.{v}" for v, value in type_.values.items() if not value.description]
    assert missing == []


def test_the_checks_can_fail() -> None:
    """The walkers above really see what they look for (a check that cannot fail is no check)."""
    tree = ast.parse("async def f(s):\n    await s.execute(select(X))\n")
    assert {
        c.func.attr if isinstance(c.func, ast.Attribute) else c.func.id for c in calls(tree)
    } == {  # type: ignore[union-attr]
        "execute",
        "select",
    }
    wrapped = GraphQLNonNull(GraphQLList(GraphQLScalarType("Undescribed")))
    assert _named(wrapped).description is None  # type: ignore[attr-defined]


def test_no_bench_script_shadows_an_installed_package() -> None:
    """`python bench/x.py` puts bench/ first on sys.path, so a script named like a package
    (bench/fhir.py once hid `fhir.resources`) breaks every bench that imports the server."""
    bench = SERVER.parent / "bench"
    others = [p for p in sys.path if Path(p or ".").resolve() not in {bench, SERVER.parent}]
    shadowing = []
    for script in sorted(bench.glob("*.py")):
        spec = importlib.machinery.PathFinder.find_spec(script.stem, others)
        if spec is not None or script.stem in sys.builtin_module_names:
            shadowing.append(script.name)
    assert shadowing == [], f"bench scripts named like importable modules: {shadowing}"
