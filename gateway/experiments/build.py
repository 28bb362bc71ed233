"""The experiment step of each route an experiment names, built with the runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gateway.config import Route
from gateway.config.experiments import Experiment, Variant
from gateway.experiments.step import Arm, ExperimentStep
from gateway.handlers import Handler
from gateway.middleware.access import IPFilter

if TYPE_CHECKING:
    from gateway.events.sink import Sink
    from gateway.events.tracker import Tracker


def variant_route(route: Route, variant: Variant) -> Route | None:
    """The route as the variant serves it: another upstream or static root (None when
    the variant keeps the route's own handler)."""
    if variant.proxy is not None:
        return route.model_copy(update={"proxy": variant.proxy})
    if variant.static_root is not None and route.static is not None:
        static = route.static.model_copy(update={"root": variant.static_root})
        return route.model_copy(update={"static": static})
    return None


def with_experiments(
    route: Route,
    handler: Handler,
    experiments: Sequence[Experiment],
    build: Callable[[Route], Handler],
    tracker: Tracker,
    sink: Sink,
    count: Callable[[str, str, str], None],
) -> Handler:
    """``handler`` wrapped in the step of the experiments naming ``route`` (itself when
    none does). ``build`` makes a variant's handler from its version of the route."""
    arms = []
    for experiment in experiments:
        if route.name not in experiment.routes:
            continue
        handlers: dict[str, Handler | None] = {}
        for variant in experiment.variants:
            changed = variant_route(route, variant)
            handlers[variant.name] = build(changed) if changed is not None else None
        override = experiment.override
        trusted = IPFilter(override.trusted, ()) if override and override.trusted else None
        arms.append(Arm.of(experiment, handlers, trusted))
    if not arms:
        return handler
    return ExperimentStep(route.name, handler, arms, tracker, sink, count)
