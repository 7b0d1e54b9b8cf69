"""Whether a change to a published event schema would break a subscriber of the same version.

A subscriber written against `X.vN` keeps reading every later `X.vN` event, so within one version
the contract may only grow by optional fields: every event valid under the new schema must still
be valid under the first published one (fields it does not know are ignored, as the README's
evolution policy promises). Anything else (a field removed, renamed or retyped, an enum widened,
a new required field) is a new version with an upcaster. `breaking_changes` compares two JSON
Schemas as `tillstream.catalog` writes them (`$defs` and local `$ref`s, `anyOf` for optionals).
"""
from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def breaking_changes(published: Schema, current: Schema) -> list[str]:
    """What in `current` a subscriber of `published` would not accept; empty when compatible."""
    return _narrower(_Resolver(current), current, _Resolver(published), published, "$")


class _Resolver:
    def __init__(self, root: Schema) -> None:
        self.defs = root.get("$defs", {})

    def __call__(self, schema: Schema) -> Schema:
        seen = 0
        while "$ref" in schema and seen < 32:  # a bound, in case of a cycle
            schema = self.defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
            seen += 1
        return schema


def _alternatives(resolve: _Resolver, schema: Schema) -> list[Schema]:
    schema = resolve(schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    return [alternative for option in options for alternative in _alternatives(resolve, option)]


def _types(schema: Schema) -> set[str] | None:
    if "const" in schema:
        return None
    kind = schema.get("type")
    if kind is None:
        return None  # unconstrained
    found = set(kind) if isinstance(kind, list) else {kind}
    if "number" in found:
        found.add("integer")
    return found


def _narrower(new_resolve: _Resolver, new: Schema, old_resolve: _Resolver, old: Schema, path: str) -> list[str]:
    """Problems with `new` accepting something `old` refuses."""
    new_options, old_options = _alternatives(new_resolve, new), _alternatives(old_resolve, old)
    problems: list[str] = []
    for option in new_options:
        attempts = [_one(new_resolve, option, old_resolve, candidate, path) for candidate in old_options]
        if all(attempts):
            problems += min(attempts, key=len)
    return problems


def _one(new_resolve: _Resolver, new: Schema, old_resolve: _Resolver, old: Schema, path: str) -> list[str]:
    if not old or old == {}:
        return []
    if "const" in old and new.get("const") != old["const"]:
        return [f"{path}: was always {old['const']!r}"]
    if "enum" in old:
        extra = set(map(repr, new.get("enum", [new["const"]] if "const" in new else []))) - set(map(repr, old["enum"]))
        if extra or ("enum" not in new and "const" not in new):
            return [f"{path}: values beyond {old['enum']} ({sorted(extra) or 'any'})"]
    old_types, new_types = _types(old), _types(new)
    if old_types is not None:
        if new_types is None and "const" not in new and "enum" not in new:
            return [f"{path}: was {sorted(old_types)}, is now unconstrained"]
        if new_types is not None and not new_types <= old_types:
            return [f"{path}: was {sorted(old_types)}, is now {sorted(new_types)}"]
    problems: list[str] = _loosened(new, old, path)
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    required_old, required_new = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(required_old - required_new):
        problems.append(f"{path}.{name}: required, now optional or gone")
    for name in sorted(required_new - required_old - set(old_props)):
        problems.append(f"{path}.{name}: a new field that is required (new fields must be optional)")
    for name, old_property in old_props.items():
        if name in new_props:
            problems += _narrower(new_resolve, new_props[name], old_resolve, old_property, f"{path}.{name}")
        else:
            problems.append(f"{path}.{name}: removed")
    if "items" in old:
        problems += _narrower(new_resolve, new.get("items", {}), old_resolve, old["items"], f"{path}[]")
    return problems


# Bounds a subscriber may have relied on: the new schema may keep or tighten them, never drop or
# loosen them (a lower bound may only rise, an upper one only fall; a format or pattern stays).
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("format", "pattern", "multipleOf")


def _loosened(new: Schema, old: Schema, path: str) -> list[str]:
    problems = []
    for key in (*_LOWER, *_UPPER, *_EXACT):
        if key not in old:
            continue
        was, now = old[key], new.get(key)
        kept = (now is not None and (now >= was if key in _LOWER else now <= was if key in _UPPER else now == was))
        if not kept:
            problems.append(f"{path}: {key} was {was!r}, is now {now!r}")
    return problems
