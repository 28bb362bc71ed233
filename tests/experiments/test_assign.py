"""Assignment: the split over many visitors, stickiness across instances, and what
pausing, stopping, windows, overrides and re-weighting do."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from gateway.config.experiments import Experiment
from gateway.experiments.assign import Assigner, Decision, bucket
from gateway.experiments.cookie import format_value, parse
from gateway.experiments.stats import chi_square, summary

VISITORS = [str(uuid.UUID(int=n * 7919 + 13, version=4)) for n in range(100_000)]


def experiment(**fields: Any) -> Experiment:
    base: dict[str, Any] = {
        "name": "checkout", "routes": ["app"],
        "variants": [{"name": "a", "weight": 0.3}, {"name": "b", "weight": 0.2},
                     {"name": "c", "weight": 0.1}],
    }  # fmt: skip
    return Experiment.model_validate_json(json.dumps({**base, **fields}))


def shares(assigner: Assigner) -> dict[str | None, float]:
    counts: dict[str | None, int] = {}
    for visitor in VISITORS:
        variant = assigner.variant_of(visitor)
        counts[variant] = counts.get(variant, 0) + 1
    return {name: count / len(VISITORS) for name, count in counts.items()}


def test_100000_visitors_split_within_1_percent_of_the_weights() -> None:
    found = shares(Assigner(experiment()))
    expected = {"a": 0.3, "b": 0.2, "c": 0.1, None: 0.4}
    for name, share in expected.items():
        assert abs(found[name] - share) < 0.01, (name, found[name])


def test_the_same_visitor_gets_the_same_variant_in_every_instance() -> None:
    one, other = Assigner(experiment()), Assigner(experiment())
    assert [one.variant_of(v) for v in VISITORS[:2000]] == [
        other.variant_of(v) for v in VISITORS[:2000]
    ]
    # The bucket is SHA-256("salt:visitor") as a fraction: fixed, documented, portable.
    assert (
        bucket("checkout", "v-1")
        == int.from_bytes(__import__("hashlib").sha256(b"checkout:v-1").digest()[:8], "big") / 2**64
    )
    salted = Assigner(experiment(salt="second-run"))
    moved = sum(one.variant_of(v) != salted.variant_of(v) for v in VISITORS[:10_000])
    assert moved > 5000  # a new salt draws everyone again


def test_raising_the_allocation_enrols_more_without_moving_anyone() -> None:
    before = Assigner(experiment())
    after = Assigner(experiment(variants=[{"name": "a", "weight": 0.45},
                                          {"name": "b", "weight": 0.3},
                                          {"name": "c", "weight": 0.15}]))  # fmt: skip
    for visitor in VISITORS[:20_000]:
        was = before.variant_of(visitor)
        if was is not None:
            assert after.variant_of(visitor) == was
    assert abs(shares(after)[None] - 0.1) < 0.01
    # And lowering it (after -> before) un-enrols only the excess: nobody changes variant.
    for visitor in VISITORS[:20_000]:
        assert before.variant_of(visitor) in (None, after.variant_of(visitor))


def test_changing_the_split_moves_only_the_visitors_it_must() -> None:
    half = experiment(variants=[{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}])
    tilted = experiment(variants=[{"name": "a", "weight": 0.6}, {"name": "b", "weight": 0.4}])
    old, new = Assigner(half), Assigner(tilted)
    moved = sum(old.variant_of(v) != new.variant_of(v) for v in VISITORS)
    assert abs(moved / len(VISITORS) - 0.1) < 0.01  # b's first tenth became a's


def test_paused_keeps_enrolled_visitors_and_enrols_nobody_new() -> None:
    paused = Assigner(experiment(status="paused"))
    assert paused.decide("v-new", {}) is None
    assert paused.decide("v-old", {"checkout": "b"}) == Decision("b", "kept")
    assert paused.decide("v-old", {"checkout": "gone"}) is None  # a variant no longer there


def test_stopped_serves_the_winner_to_everyone() -> None:
    stopped = Assigner(experiment(status="stopped", winner="b"))
    assert stopped.decide("v-1", {}) == Decision("b", "stopped")
    assert stopped.decide(None, {"checkout": "a"}, "c") == Decision("b", "stopped")


def test_outside_its_window_an_experiment_enrols_nobody_new() -> None:
    now = [1_800_000_000.0]
    windowed = experiment(start="2027-01-15T00:00:00Z", stop="2027-02-15T00:00:00+00:00")
    assigner = Assigner(windowed, clock=lambda: now[0])
    visitor = next(v for v in VISITORS if assigner.variant_of(v) is not None)
    now[0] = 1_800_000_000 - 86400 * 200  # before the start
    assert assigner.decide(visitor, {}) is None
    now[0] = 1_800_000_000 + 86400 * 30  # 2027-02-13: inside
    assert assigner.decide(visitor, {}) == Decision(str(assigner.variant_of(visitor)), "assigned")
    now[0] = 1_800_000_000 + 86400 * 60  # after the stop: like paused
    assert assigner.decide(visitor, {"checkout": "c"}) == Decision("c", "kept")


def test_an_override_names_a_variant_of_the_experiment() -> None:
    assigner = Assigner(experiment())
    assert assigner.decide("v-1", {}, "c") == Decision("c", "override")
    unknown = assigner.decide("v-1", {}, "zzz")  # not a variant: the usual assignment
    assert unknown is None or unknown.reason == "assigned"


def test_the_cookie_holds_only_names_the_config_could_have() -> None:
    assert parse("checkout=b&pricing=a") == {"checkout": "b", "pricing": "a"}
    assert parse("checkout=b&<script>=x&Pricing=A&a=b=c&&=") == {"checkout": "b"}
    assert format_value({"pricing": "a", "checkout": "b"}) == "checkout=b&pricing=a"


def test_sample_ratio_mismatch_against_the_configured_weights() -> None:
    weights = {"a": 0.25, "b": 0.25}
    assert chi_square({"a": 10_000, "b": 10_000}, weights) == (0.0, 1.0)
    statistic, p = chi_square({"a": 10_200, "b": 9_800}, weights)
    assert (round(statistic, 6), round(p, 6)) == (8.0, 0.004678)
    report = summary(experiment(variants=[{"name": "a", "weight": 0.25},
                                          {"name": "b", "weight": 0.25}]),
                     {("a", "2027-01-02"): 5200, ("b", "2027-01-02"): 4700,
                      ("a", "2027-01-01"): 100})  # fmt: skip
    assert report["variants"] == [{"name": "a", "weight": 0.25, "exposures": 5300},
                                  {"name": "b", "weight": 0.25, "exposures": 4700}]  # fmt: skip
    assert report["exposures_by_day"] == {"2027-01-01": {"a": 100},
                                          "2027-01-02": {"a": 5200, "b": 4700}}  # fmt: skip
    assert report["srm"]["mismatch"] is True and report["srm"]["chi_square"] == 36.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variants": [{"name": "a", "weight": 0.7}, {"name": "b", "weight": 0.4}]},
         "variant weights add up to more than 1"),
        ({"status": "stopped"}, "stopped needs winner: one of its variants"),
        ({"winner": "z"}, "winner 'z' is not one of its variants"),
        ({"variants": [{"name": "a", "weight": 0.5}, {"name": "a", "weight": 0.5}]},
         "variant names must differ"),
        ({"start": "2027-01-01T00:00:00"}, "'2027-01-01T00:00:00' needs a time zone"),
    ],
)  # fmt: skip
def test_an_experiment_that_cannot_be_run_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="validation error") as caught:
        experiment(**fields)
    assert message in str(caught.value)
