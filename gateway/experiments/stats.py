"""Trusting a split: exposures per variant (and per UTC day) from the metrics every
worker writes, and the sample-ratio-mismatch check: Pearson's chi-square of the
exposures against the configured weights, with its p-value. A p-value under
``SRM_THRESHOLD`` says the split is not what was configured (a bug in targeting,
caching or redirects, usually): do not trust the results until it is explained."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gateway.config.experiments import Experiment

SRM_THRESHOLD = 0.001  # what the A/B testing literature uses (Kohavi et al.)


def chi_square(observed: Mapping[str, float], weights: Mapping[str, float]) -> tuple[float, float]:
    """The statistic and its p-value (upper tail, k - 1 degrees of freedom)."""
    total = sum(observed.get(name, 0.0) for name in weights)
    weight_sum = sum(weights.values())
    if total <= 0 or len(weights) < 2:
        return 0.0, 1.0
    statistic = 0.0
    for name, weight in weights.items():
        expected = total * weight / weight_sum
        statistic += (observed.get(name, 0.0) - expected) ** 2 / expected
    return statistic, _upper_gamma_q((len(weights) - 1) / 2, statistic / 2)


def _upper_gamma_q(a: float, x: float) -> float:
    """Q(a, x), the regularized upper incomplete gamma function (Numerical Recipes
    §6.2: the series below a + 1, the continued fraction above)."""
    if x <= 0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def summary(experiment: Experiment, exposures: Mapping[tuple[str, str], float]) -> dict[str, Any]:
    """What the admin API and ``gateway experiments show`` report: ``exposures`` maps
    (variant, day) to a count, summed over workers."""
    by_variant: dict[str, float] = {}
    by_day: dict[str, dict[str, int]] = {}
    for (variant, day), count in exposures.items():
        by_variant[variant] = by_variant.get(variant, 0) + count
        by_day.setdefault(day, {})[variant] = int(count)
    weights = {variant.name: variant.weight for variant in experiment.variants}
    statistic, p_value = chi_square(by_variant, weights)
    return {
        "name": experiment.name,
        "status": experiment.status,
        "winner": experiment.winner,
        "routes": list(experiment.routes),
        "allocation": round(experiment.allocation, 6),
        "variants": [
            {"name": v.name, "weight": v.weight, "exposures": int(by_variant.get(v.name, 0))}
            for v in experiment.variants
        ],
        "exposures_by_day": dict(sorted(by_day.items())),
        "srm": {
            "chi_square": round(statistic, 4),
            "p_value": p_value,
            "mismatch": p_value < SRM_THRESHOLD,
        },
    }
