"""A short link: what the management API accepts and the store keeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.links.safety import UnsafeTarget, check_target

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CAMPAIGN_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


class Link(BaseModel):
    """A stored redirect. ``campaign`` fields are appended to the target's query."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    slug: str
    target: str
    status: int = 302
    campaign: dict[str, str] = Field(default_factory=dict)
    pass_query: bool = False
    expires_at: datetime | None = None
    enabled: bool = True
    tags: tuple[Annotated[str, Field(max_length=64)], ...] = ()

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be 1-64 letters, digits, '-' or '_', not starting with - or _")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        try:
            check_target(value, allow_ip=False)
        except UnsafeTarget as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("status")
    @classmethod
    def _status(cls, value: int) -> int:
        if value not in (301, 302, 307, 308):
            raise ValueError("must be 301, 302, 307 or 308")
        return value

    @field_validator("campaign")
    @classmethod
    def _campaign(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key not in CAMPAIGN_KEYS:
                raise ValueError(f"{key!r} is not one of {', '.join(CAMPAIGN_KEYS)}")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def location(self, incoming_query: str) -> str:
        """The Location to send: target, campaign fields (in a fixed order), then the
        visitor's own query when ``pass_query``; a fragment stays last."""
        base, hash_mark, fragment = self.target.partition("#")
        extra = [
            urlencode(
                [(k, self.campaign[k]) for k in CAMPAIGN_KEYS if k in self.campaign],
                quote_via=quote,
            )
        ]
        if self.pass_query and incoming_query:
            extra.append(incoming_query)
        query = "&".join(part for part in extra if part)
        if query:
            base += ("&" if "?" in base else "?") + query
        return base + hash_mark + fragment

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
