"""The admin API's ``experiments`` (every experiment) and ``experiments/NAME`` (one):
the config's view with exposures per variant and per UTC day, summed over every worker
from the metrics they write, and the sample-ratio-mismatch check."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.config.experiments import Experiment
from gateway.experiments.stats import summary
from gateway.observability.metrics import Metrics

FAMILY = "gateway_experiment_exposures"


async def report(
    name: str, experiments: Sequence[Experiment], metrics: Metrics
) -> tuple[int, dict[str, Any]]:
    """(status, body) for ``experiments`` (name "") or ``experiments/NAME``."""
    chosen = [e for e in experiments if not name or e.name == name]
    if name and not chosen:
        return 404, {"error": f"no experiment named {name!r}"}
    metrics.flush()
    text = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
    counts = exposures(text.decode())
    reports = [
        summary(e, {key[1:]: n for key, n in counts.items() if key[0] == e.name}) for e in chosen
    ]
    return 200, (reports[0] if name else {"experiments": reports})


def exposures(text: str) -> dict[tuple[str, str, str], float]:
    """(experiment, variant, day) -> exposures, from a Prometheus exposition."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            if sample.name == FAMILY + "_total":
                labels = sample.labels
                key = (labels["experiment"], labels["variant"], labels["day"])
                found[key] = found.get(key, 0.0) + sample.value
    return found
