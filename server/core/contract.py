"""The API contract: a breaking change to the SDL passes only when CHANGES.md lists it.

`graphql_schema/released.graphql` is the last released SDL. graphql-core's
`find_breaking_changes` compares it with the current one; each breaking change has a schema
coordinate (`Type`, `Type.field`, `Type.field(arg:)`, `Enum.VALUE`, `@directive`), and it is
acknowledged by a line of CHANGES.md's "Unreleased" section containing the word "breaking" and
that coordinate in backticks. Removing a field, an argument or an enum value that the released
SDL did not deprecate fails even when listed, unless that line also says "without deprecation"
(third parties get a deprecation period first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from graphql import GraphQLEnumType, GraphQLSchema, build_schema
from graphql.utilities import BreakingChangeType, find_breaking_changes, find_dangerous_changes

_COORDINATE = re.compile(r"@?[A-Za-z_]\w*\.\w+(?:\(\w+:\))?|@[A-Za-z_]\w*(?:\(\w+:\))?")
_TYPE_FIRST = re.compile(r"^(?:Standard scalar )?([A-Za-z_]\w*) ")
_UNION = re.compile(r"was removed from union type ([A-Za-z_]\w*)")
_REMOVALS = (
    BreakingChangeType.FIELD_REMOVED,
    BreakingChangeType.ARG_REMOVED,
    BreakingChangeType.VALUE_REMOVED_FROM_ENUM,
)


@dataclass(frozen=True)
class Change:
    coordinate: str
    description: str
    removal: bool


def coordinate(description: str) -> str:
    """The schema coordinate a graphql-core change description is about."""
    if union := _UNION.search(description):
        return union.group(1)
    if found := _COORDINATE.search(description):
        return found.group(0)
    if first := _TYPE_FIRST.match(description):
        return first.group(1)
    return description


def breaking_changes(released_sdl: str, current_sdl: str) -> list[Change]:
    old, new = build_schema(released_sdl), build_schema(current_sdl)
    return [
        Change(coordinate(c.description), c.description, c.type in _REMOVALS)
        for c in find_breaking_changes(old, new)
    ]


def dangerous_changes(released_sdl: str, current_sdl: str) -> list[str]:
    """Changes that break no query but may surprise a client (a new enum value, say)."""
    old, new = build_schema(released_sdl), build_schema(current_sdl)
    return [c.description for c in find_dangerous_changes(old, new)]


def unreleased_lines(changes_md: str) -> list[str]:
    """The lines of the `## Unreleased` section (up to the next `## ` heading)."""
    lines: list[str] = []
    inside = False
    for line in changes_md.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower().startswith("unreleased")
            continue
        if inside:
            lines.append(line)
    return lines


def _was_deprecated(schema: GraphQLSchema, coordinate: str) -> bool:
    match = re.fullmatch(r"(\w+)\.(\w+)(?:\((\w+):\))?", coordinate)
    if not match:
        return False
    type_name, member, arg = match.groups()
    named = schema.get_type(type_name)
    if isinstance(named, GraphQLEnumType):
        value = named.values.get(member)
        return bool(value and value.deprecation_reason)
    field = getattr(named, "fields", {}).get(member)
    if field is None:
        return False
    if arg is not None:
        argument = getattr(field, "args", {}).get(arg)
        return bool(argument and argument.deprecation_reason)
    return bool(field.deprecation_reason)


def contract_problems(released_sdl: str, current_sdl: str, changes_md: str) -> list[str]:
    """Why the current SDL may not ship: unlisted breaking changes and undeprecated removals."""
    listed = [line for line in unreleased_lines(changes_md) if "breaking" in line.lower()]
    released = build_schema(released_sdl)
    problems = []
    for change in breaking_changes(released_sdl, current_sdl):
        lines = [line for line in listed if f"`{change.coordinate}`" in line]
        if not lines:
            problems.append(
                f"{change.description} Breaking: list it in graphql_schema/CHANGES.md under "
                f"## Unreleased as: - breaking `{change.coordinate}`: <why, what to use instead>"
            )
        elif (
            change.removal
            and not _was_deprecated(released, change.coordinate)
            and not any("without deprecation" in line.lower() for line in lines)
        ):
            problems.append(
                f"{change.description} It was not deprecated in the released schema: deprecate "
                "it first (@deprecated), or say 'without deprecation' on its CHANGES.md line"
            )
    return problems
