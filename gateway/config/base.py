"""What every config model shares: the frozen base model, names, issues with their key
paths, and turning pydantic's errors into those issues."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
)

if TYPE_CHECKING:
    pass


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 64)")
    return value


# Names of listeners, routes and rules: they appear in metrics labels and log lines.
Name = Annotated[str, AfterValidator(_check_name)]


def _check_redis_url(value: str) -> str:
    if not re.fullmatch(r"rediss?://[^\s/]+(/\d{1,2})?", value):
        raise ValueError("must be redis://host:port[/db] or rediss://host:port[/db]")
    return value


# A Redis server (shared limits, the cache's tier, ACME storage); rediss:// for TLS.
RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where it is and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config could not be loaded; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


class _Model(BaseModel):
    # strict: a port written as "8080" or a flag written as 1 is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RedisServer(_Model):
    """Where a Redis server is (shared limits, the cache's tier, ACME storage)."""

    url: RedisUrl  # redis://host:port[/db], or rediss:// for TLS
    password: str | None = None
    ca_file: str | None = None  # for rediss://: the CA that signed the server's certificate

    def client_options(self) -> dict[str, Any]:
        """redis-py's options for it: the server's certificate verified on rediss:// (a
        plain connection takes no TLS options at all: redis-py refuses them)."""
        options: dict[str, Any] = {"password": self.password}
        if self.url.startswith("rediss://"):
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            if self.ca_file:
                options["ssl_ca_certs"] = self.ca_file
        return options


def _check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, item in enumerate(value):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"[{i}] {item!r} is not an IP address or CIDR") from None
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key:
        return path
    return f"{path}.{key}" if path else key


def _issues_from(exc: ValidationError) -> Iterator[ConfigIssue]:
    errors = exc.errors(include_url=False)
    inner = {error["loc"][:n] for error in errors for n in range(1, len(error["loc"]))}
    for error in errors:
        path = ""
        for part in error["loc"]:
            path = _join(path, part)
        kind = error["type"]
        if kind == "too_short" and error["loc"] in inner:
            continue  # pydantic drops the bad items, then also calls the list too short
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "is required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        # A list item's own message names its index ("[1] 'x' is not ..."): attach it.
        if message.startswith("[") and "]" in message:
            index, _, rest = message.partition("] ")
            path, message = f"{path}{index}]", rest
        yield ConfigIssue(path, message)
