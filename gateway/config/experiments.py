"""``experiments``: growth experiments decided at the edge. Each names the routes where a
visitor is enrolled, its variants with weights (their sum is the share of visitors
enrolled), who it targets, and what each variant changes (another upstream or static
root, request headers for the app, a path rewrite)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import _TOKEN, ConfigIssue, Name, _check_cidrs, _Model
from gateway.config.proxy import Proxy

if TYPE_CHECKING:
    from gateway.config.root import Config

Weight = Annotated[float, Field(gt=0, le=1)]
DEVICE_TYPES = ("mobile", "tablet", "desktop", "bot", "other")


class Rewrite(_Model):
    """The path's leading ``from`` replaced by ``to`` for this variant's requests."""

    from_: str = Field(alias="from")
    to: str

    @model_validator(mode="after")
    def _paths(self) -> Rewrite:
        if not self.from_.startswith("/") or not self.to.startswith("/"):
            raise ValueError('from and to must start with "/"')
        return self


class Variant(_Model):
    name: Name
    weight: Weight
    proxy: Proxy | None = None  # proxy routes: this upstream instead of the route's
    static_root: str | None = None  # static routes: files from here instead
    headers: Mapping[str, str] = Field(default_factory=dict)  # added to the request
    rewrite: Rewrite | None = None

    @field_validator("headers")
    @classmethod
    def _names(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, field_value in value.items():
            if not _TOKEN.match(name) or "\r" in field_value or "\n" in field_value:
                raise ValueError(f"{name!r}: not a header field name and value")
        return value


class Override(_Model):
    """QA: a query parameter or cookie naming the variant to see, from trusted clients
    (all, when ``trusted`` is empty)."""

    query: str | None = None
    cookie: str | None = None
    trusted: tuple[str, ...] = ()

    @field_validator("trusted")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)


class Experiment(_Model):
    name: Name
    salt: str | None = None  # the name when not set: a new salt re-draws every visitor
    status: Literal["running", "paused", "stopped"] = "running"
    winner: str | None = None  # stopped: the variant everyone gets
    variants: Annotated[tuple[Variant, ...], Field(min_length=2, max_length=26)]
    # Targeting: where and whom. Routes are required; the rest narrow them down.
    routes: Annotated[tuple[Name, ...], Field(min_length=1)]
    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    headers: Mapping[str, str] = Field(default_factory=dict)  # request field == value
    cookies: Mapping[str, str] = Field(default_factory=dict)  # cookie == value
    countries: tuple[str, ...] = ()  # ISO codes (tracking.enrich.geo)
    device_types: tuple[Literal["mobile", "tablet", "desktop", "bot", "other"], ...] = ()
    start: str | None = None  # ISO 8601 times; outside them nobody new is enrolled
    stop: str | None = None
    header: str | None = None  # sent to the app: default X-Experiment-<name>
    override: Override | None = None
    exposure: Literal["session", "every"] = "session"

    @field_validator("start", "stop")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 time") from None
            if moment.tzinfo is None:
                raise ValueError(f"{value!r} needs a time zone (Z or +hh:mm)")
        return value

    @field_validator("path_prefixes")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, prefix in enumerate(value):
            if not prefix.startswith("/"):
                raise ValueError(f'[{i}] {prefix!r} must start with "/"')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must differ")
        if sum(variant.weight for variant in self.variants) > 1 + 1e-9:
            raise ValueError("variant weights add up to more than 1")
        if self.status == "stopped" and self.winner not in names:
            raise ValueError("stopped needs winner: one of its variants")
        if self.winner is not None and self.winner not in names:
            raise ValueError(f"winner {self.winner!r} is not one of its variants")
        return self

    @property
    def allocation(self) -> float:
        return sum(variant.weight for variant in self.variants)

    @property
    def request_header(self) -> str:
        return self.header or f"X-Experiment-{self.name}"

    def window(self) -> tuple[float | None, float | None]:
        """start and stop as Unix times."""
        return tuple(  # type: ignore[return-value]
            datetime.fromisoformat(t).timestamp() if t else None for t in (self.start, self.stop)
        )


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Experiments name routes that exist, with actions those routes can take."""
    routes = {route.name: route for route in config.routes}
    enrich = config.tracking.enrich
    seen: set[str] = set()
    if config.experiments and not config.tracking.cookies.enabled:
        yield ConfigIssue(
            "experiments", "needs tracking.cookies.enabled: a visitor is known by its cookie"
        )
    for i, experiment in enumerate(config.experiments):
        path = f"experiments[{i}]"
        if experiment.name in seen:
            yield ConfigIssue(f"{path}.name", f"duplicate experiment name {experiment.name!r}")
        seen.add(experiment.name)
        for j, name in enumerate(experiment.routes):
            if name not in routes:
                yield ConfigIssue(f"{path}.routes[{j}]", f"no route named {name!r}")
        kinds = {name: routes[name] for name in experiment.routes if name in routes}
        for j, name in enumerate(experiment.routes):
            if name in kinds and kinds[name].cache is not None:
                yield ConfigIssue(
                    f"{path}.routes[{j}]",
                    f"route {name!r} caches its answers: one variant's would be served to "
                    "the other's visitors",
                )
        for j, variant in enumerate(experiment.variants):
            where = f"{path}.variants[{j}]"
            if variant.proxy is not None and any(r.proxy is None for r in kinds.values()):
                yield ConfigIssue(f"{where}.proxy", "needs every route of the experiment to proxy")
            if variant.static_root is not None:
                if any(r.static is None for r in kinds.values()):
                    yield ConfigIssue(
                        f"{where}.static_root", "needs every route of the experiment to be static"
                    )
                elif not os.path.isdir(variant.static_root):
                    yield ConfigIssue(
                        f"{where}.static_root", f"{variant.static_root!r} is not a directory"
                    )
        if experiment.countries and (enrich is None or enrich.geo is None):
            yield ConfigIssue(f"{path}.countries", "needs tracking.enrich.geo")
        if experiment.device_types and (enrich is None or enrich.device is None):
            yield ConfigIssue(f"{path}.device_types", "needs tracking.enrich.device")
