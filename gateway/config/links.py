"""``redirects``: tracking links, their store and API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import (
    ValidationError,
    field_validator,
)

from gateway.config.base import (
    _HOST_PATTERN,
    ConfigIssue,
    _issues_from,
    _join,
    _Model,
)
from gateway.config.paths import writable_file_issue

if TYPE_CHECKING:
    from gateway.config.root import Config


class Redirects(_Model):
    """Short links and ad-hoc signed redirects."""

    signing_keys: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_ip_literals: bool = False
    admin_token: str | None = None
    topic: str = "links"
    file: str = "links.jsonl"
    links: tuple[dict[str, Any], ...] = ()

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _HOST_PATTERN.match(host):
                raise ValueError(f"[{i}] {host!r} is not a lowercase host name or '*.domain'")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class RedirectRoute(_Model):
    """Short links at ``<prefix>/<slug>``; ad-hoc signed ones at ``<prefix>/r``."""

    adhoc: bool = True


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Links given in the config are valid links; the links file can be written."""
    if config.redirects is not None:
        from gateway.links.model import Link

        if config.kafka is None and (problem := writable_file_issue(config.redirects.file)):
            yield ConfigIssue("redirects.file", problem)

        for i, raw in enumerate(config.redirects.links):
            try:
                Link.model_validate_json(orjson.dumps(raw))
            except ValidationError as exc:
                for issue in _issues_from(exc):
                    yield ConfigIssue(_join(f"redirects.links[{i}]", issue.path), issue.message)
