"""The experiment step of a route: around its handler, for each experiment naming the
route, decide the visitor's variant, apply what the variant changes (another handler:
an upstream or a static root; request headers for the app; a path rewrite), record an
exposure event on first exposure per session, and set the experiments cookie when the
assignments changed. The visitor is the tracker's: the ``vid`` cookie (minted and set
when missing) or the id a tracker client sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config.experiments import Experiment
from gateway.experiments.assign import Assigner, Decision
from gateway.experiments.cookie import format_value
from gateway.experiments.cookie import parse as parse_cookie
from gateway.handlers import Handler
from gateway.middleware.access import IPFilter
from gateway.request.cookies import cookies_of
from gateway.request.info import INFO
from gateway.request.router import normalize_host

if TYPE_CHECKING:
    from gateway.events.sink import Sink
    from gateway.events.tracker import Identity, Tracker

EXPOSURE = "experiment_exposure"


@dataclass(frozen=True, slots=True)
class Served:
    """What one variant does to a request, in plain values (read per request)."""

    handler: Handler | None  # None: the route's own
    headers: tuple[tuple[str, str], ...]  # the experiment's header first, then its own
    rewrite: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Arm:
    """One experiment on one route: its assigner, and what each variant serves."""

    assigner: Assigner
    served: Mapping[str, Served]
    override_from: IPFilter | None  # None: any client may use the override
    targeted: bool  # anything beyond the route narrows who is in
    every: bool  # an exposure event on every exposure, not once per session

    @property
    def experiment(self) -> Experiment:
        return self.assigner.experiment

    @classmethod
    def of(
        cls,
        experiment: Experiment,
        handlers: Mapping[str, Handler | None],
        override_from: IPFilter | None,
    ) -> Arm:
        e = experiment
        served = {
            v.name: Served(
                handlers.get(v.name),
                ((e.request_header, v.name), *v.headers.items()),
                (v.rewrite.from_, v.rewrite.to) if v.rewrite is not None else None,
            )
            for v in e.variants
        }
        targeted = bool(e.hosts or e.path_prefixes or e.headers or e.cookies or e.countries
                        or e.device_types)  # fmt: skip
        return cls(Assigner(e), served, override_from, targeted, e.exposure == "every")


class ExperimentStep:
    def __init__(
        self,
        route: str,
        handler: Handler,
        arms: Sequence[Arm],
        tracker: Tracker,
        sink: Sink,
        count: Callable[[str, str, str], None] = lambda experiment, variant, day: None,
    ) -> None:
        self.route = route
        self._handler = handler
        self._arms = tuple(arms)
        self._tracker = tracker
        self._sink = sink
        self._count = count  # an exposure: (experiment, variant, UTC day)
        self._cookie = tracker.config.cookies.experiments.name

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        info = request[INFO]
        tracker = self._tracker
        identity = tracker.identify(request)
        jar = cookies_of(request)
        held = parse_cookie(jar.get(self._cookie, "")) if jar else {}
        assignments = dict(held)
        handler, upstream, path = self._handler, list(info.upstream_headers or ()), None
        exposed: list[tuple[Experiment, Decision]] = []
        visitor = None if identity.private else identity.anonymous_id
        for arm in self._arms:
            assigner = arm.assigner
            if arm.targeted and not self._targets(arm.experiment, request, info.client_ip, jar):
                continue
            decision = assigner.decide(
                visitor, held, self._asked(arm, request, jar, info.client_ip)
            )
            name = assigner.name
            if decision is None:
                assignments.pop(name, None)
                continue
            variant = decision.variant
            served = arm.served[variant]
            assignments[name] = variant
            upstream.extend(served.headers)
            handler = served.handler or handler
            if served.rewrite is not None and request.path.startswith(served.rewrite[0]):
                path = served.rewrite[1] + request.path[len(served.rewrite[0]) :]
            if arm.every or identity.new_session or held.get(name) != variant:
                exposed.append((arm.experiment, decision))
        info.experiments = assignments  # the exposure events carry them too
        for experiment, decision in exposed:
            self._expose(request, info.client_ip, identity, experiment, decision)
        info.upstream_headers = upstream or None
        # Ids minted here are set; a known session is refreshed by the tracking calls.
        fields = [("Set-Cookie", v) for v in tracker.cookie_values(identity, minted_only=True)]
        if assignments != held:
            fields.append(("Set-Cookie", tracker.experiments_cookie(format_value(assignments))))
        if fields:
            info.response_fields = [*(info.response_fields or ()), *fields]
        if path is not None:
            query = request.raw_path.partition("?")[2]
            request = request.clone(rel_url=path + ("?" + query if query else ""))
        return await handler(request, max_body)

    def _targets(
        self, experiment: Experiment, request: web.BaseRequest, ip: str, jar: Mapping[str, str]
    ) -> bool:
        if experiment.hosts and not _host_in(normalize_host(request.host), experiment.hosts):
            return False
        if experiment.path_prefixes and not request.path.startswith(experiment.path_prefixes):
            return False
        headers = request.headers
        if any(headers.get(name) != value for name, value in experiment.headers.items()):
            return False
        if any(jar.get(name) != value for name, value in experiment.cookies.items()):
            return False
        enricher = self._tracker.enricher
        if experiment.countries and (
            enricher is None or enricher.country_of(ip) not in experiment.countries
        ):
            return False
        if experiment.device_types:
            agent = headers.get("User-Agent", "")
            kind = enricher.device_type_of(agent, headers) if enricher is not None else None
            if kind not in experiment.device_types:
                return False
        return True

    @staticmethod
    def _asked(
        arm: Arm, request: web.BaseRequest, jar: Mapping[str, str], client_ip: str
    ) -> str | None:
        """The QA override's variant, when configured and the client may use it."""
        override = arm.experiment.override
        if override is None:
            return None
        asked = None
        if override.query is not None:
            asked = request.query.get(override.query)
        if asked is None and override.cookie is not None:
            asked = jar.get(override.cookie)
        if asked is None:
            return None
        if arm.override_from is not None and arm.override_from.refuses(client_ip):
            return None
        return asked

    def _expose(
        self,
        request: web.BaseRequest,
        client_ip: str,
        identity: Identity,
        experiment: Experiment,
        decision: Decision,
    ) -> None:
        properties = {
            "experiment": experiment.name,
            "variant": decision.variant,
            "route": self.route,
            "reason": decision.reason,
        }
        event = self._tracker.event(
            request, client_ip, identity, event_type=EXPOSURE, event_name=experiment.name,
            properties=properties,
        )  # fmt: skip
        self._sink.offer(event)
        self._count(experiment.name, decision.variant, time.strftime("%Y-%m-%d", time.gmtime()))


def _host_in(host: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False
