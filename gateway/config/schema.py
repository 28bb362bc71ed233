"""The config's JSON Schema, from its models: what ``gateway schema`` prints and
``docs/config.schema.json`` holds, so an editor completes and checks ``config.json``
(which names it with ``"$schema"``). Also every key path the schema allows, which the
configuration reference must document, each once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.config.root import Config

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_KEY = "$schema"  # the one key a config may hold that is not configuration


# Any string may hold ${VAR} references, substituted before validation: a string
# constrained in the schema also takes one that holds a reference.
_REFERENCE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"}
_STRING_RULES = ("minLength", "maxLength", "pattern", "format", "enum", "const")


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file: pydantic's, with the ``$schema`` key allowed."""
    schema = _with_references(Config.model_json_schema(mode="validation"))
    schema["properties"] = {
        SCHEMA_KEY: {"type": "string", "description": "where an editor finds this schema"},
        **schema["properties"],
    }
    return {SCHEMA_KEY: DRAFT, "title": "edge-gateway config", **schema}


def _with_references(node: Any) -> Any:
    if isinstance(node, list):
        return [_with_references(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _with_references(value) for key, value in node.items()}
    if node.get("type") == "string" and any(rule in node for rule in _STRING_RULES):
        rules = {key: node.pop(key) for key in list(node) if key in _STRING_RULES}
        node["anyOf"] = [{"type": "string", **rules}, _REFERENCE]
        del node["type"]
    return node


def key_paths(schema: dict[str, Any], shared: dict[str, str] | None = None) -> Iterator[str]:
    """Every key a config may hold, as ``routes[].proxy.upstreams[].url``: ``[]`` for a
    list's items, ``*`` for a map's values. A path in ``shared`` is an object documented
    at another path (a variant's ``proxy`` is a route's): its keys are not listed again."""
    defs = schema.get("$defs", {})
    shared = shared or {}

    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        for union in ("anyOf", "oneOf", "allOf"):
            for member in node.get(union, ()):
                yield from walk(member, path)
        items = node.get("items")
        if isinstance(items, dict):
            yield from walk(items, path + "[]")
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            yield from walk(values, path + ".*")
        for name, member in node.get("properties", {}).items():
            if name == SCHEMA_KEY:
                continue
            key = f"{path}.{name}" if path else name
            yield key
            if key not in shared:
                yield from walk(member, key)

    seen: set[str] = set()
    for key in walk(schema, ""):
        if key not in seen:
            seen.add(key)
            yield key
