"""``routes[].static``: the directory served, its cache and headers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import (
    Field,
    field_validator,
)

from gateway.config.base import (
    _Model,
)

if TYPE_CHECKING:
    pass


class CacheControlRule(_Model):
    """``Cache-Control`` for files whose name matches ``glob`` (first match wins)."""

    glob: str
    value: str

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain CR, LF or NUL")
        return value


class StaticCache(_Model):
    """Bounds of the in-memory cache of hot files (per route and worker)."""

    max_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 64 << 20
    max_file_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20
    check_interval: Annotated[float, Field(ge=0, le=3600)] = 1.0


class Static(_Model):
    """Files under ``root``."""

    root: str
    index: tuple[str, ...] = ("index.html",)
    spa_fallback: str | None = None
    listing: bool = False
    allow_hidden: bool = False
    follow_symlinks_outside: bool = False
    compress: bool = True
    compress_min_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1024
    cache_control: tuple[CacheControlRule, ...] = ()
    cache: StaticCache = StaticCache()
