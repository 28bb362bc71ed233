"""Reading a config file: JSON with ``${VAR}`` references, validated into a frozen
:class:`Config` with every problem reported by its key path."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import (
    ValidationError,
)

from gateway.config.base import (
    _ENV_REF,
    ConfigError,
    ConfigIssue,
    _issues_from,
    _join,
)
from gateway.config.root import Config, cross_checks


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute ``${VAR}`` references, validate and freeze a config file."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [ConfigIssue("", f"cannot read: {exc.strerror}")]) from None
    return parse_config(raw, source=source, env=os.environ if env is None else env)


def parse_config(raw: bytes, *, source: str = "<config>", env: Mapping[str, str]) -> Config:
    """Validate config JSON; raise :class:`ConfigError` listing every problem."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(source, [ConfigIssue("", f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("", "must be a JSON object")])

    issues: list[ConfigIssue] = list(_duplicate_keys(raw))
    # "$schema" names the file's JSON Schema for editors (docs/config.schema.json).
    if not isinstance(data.pop("$schema", ""), str):
        issues.append(ConfigIssue("$schema", "must be a string (where the schema is)"))
    data = _substitute_env(data, "", env, issues)
    try:
        # Validate from JSON text, not Python objects: strict JSON mode keeps arrays valid
        # for tuple fields while still rejecting "8080" for a port.
        config = Config.model_validate_json(orjson.dumps(data), strict=True)
    except ValidationError as exc:
        issues.extend(_issues_from(exc))
        raise ConfigError(source, issues) from None
    issues.extend(cross_checks(config))
    if issues:
        raise ConfigError(source, issues)
    return config


_DUPLICATES = "\0duplicates"  # where the parse below notes an object's repeated keys


def _note_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    repeated: list[str] = []
    for key, item in pairs:
        if key in value and key not in repeated:
            repeated.append(key)
        value[key] = item
    if repeated:
        value[_DUPLICATES] = repeated
    return value


def _duplicate_keys(raw: bytes) -> Iterator[ConfigIssue]:
    """A key given twice in one object: JSON parsers keep the last silently, which hides
    an edit that did not take. (orjson cannot report them; this parse runs once.)"""
    import json

    def walk(value: Any, path: str) -> Iterator[ConfigIssue]:
        if isinstance(value, dict):
            for key in value.pop(_DUPLICATES, ()):
                yield ConfigIssue(_join(path, key), "given more than once (the last would win)")
            for key, item in value.items():
                yield from walk(item, _join(path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}[{i}]")

    yield from walk(json.loads(raw, object_pairs_hook=_note_duplicates), "")


def _substitute_env(
    value: Any, path: str, env: Mapping[str, str], issues: list[ConfigIssue]
) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                issues.append(ConfigIssue(path, f"environment variable {name} is not set"))
                return ""
            return env[name]

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, _join(path, k), env, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", env, issues) for i, v in enumerate(value)]
    return value
