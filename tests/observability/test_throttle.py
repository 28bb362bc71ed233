"""A log line a client can cause at will is written once per episode, with a count."""

from __future__ import annotations

import logging

import pytest

from gateway.observability.throttle import ThrottledLog


async def test_an_episode_is_one_line_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("t"), "refusals", interval=10, clock=lambda: now[0])
    for peer in range(6):
        now[0] += 1
        throttled("refused %s", peer)
    assert [r.getMessage() for r in caplog.records] == ["refused 0"]
    throttled.summarize()  # what the timer does when the interval ends
    assert caplog.records[-1].getMessage() == "5 more refusals in 10 s; the last: refused 5"
    now[0] += 25  # quiet for longer than an interval: the next one opens a new episode
    throttled("refused %s", "again")
    throttled.summarize()
    assert [r.getMessage() for r in caplog.records][2:] == ["refused again"]
