"""The supervisor in this process, its worker processes real, its loop's clock frozen and
moved by hand: the restart backoff and the kill deadline, which take seconds to tens of
seconds on a real clock, to the hundredth of a second."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.observability.metrics import MULTIPROC_ENV
from gateway.process.supervisor import Supervisor
from tests.clock import LoopClock, jump_clock, settles, turns
from tests.support import base_config

pytestmark = pytest.mark.asyncio_loop  # the frozen clock replaces loop.time
STARTED = re.compile(r"worker 0 started \(pid (\d+)\)")


class Running:
    """A supervisor being run, what it logged, and its clock."""

    def __init__(
        self, supervisor: Supervisor, clock: LoopClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        self.supervisor = supervisor
        self.clock = clock
        self._caplog = caplog

    def lines(self) -> list[str]:
        return [record.getMessage() for record in self._caplog.records]

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines())

    async def sees_die(self, pid: int, then: str) -> None:
        """Until the supervisor has logged worker ``pid``'s death and what it does next."""
        line = f"worker 0 (pid {pid}) exited with -9; {then}"
        await settles(lambda: self.logged(line), line)

    async def next_worker(self, after: int) -> int:
        """The pid of worker 0 once ``after`` of them have started before it."""

        def started() -> list[str]:
            return [m.group(1) for line in self.lines() if (m := STARTED.search(line))]

        await settles(lambda: len(started()) > after, f"worker 0 started {after + 1} times")
        return int(started()[after])


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Running]:
    """``gateway run``'s supervisor with one worker, shutdown_timeout 1, on a frozen clock."""
    caplog.set_level(logging.INFO, logger="gateway.process.supervisor")
    monkeypatch.setenv(MULTIPROC_ENV, "")  # run() points it at its own folder: put back after
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(base_config(tmp_path, shutdown_timeout=1)))
    supervisor = Supervisor(str(path), parse_config(path.read_bytes(), env=os.environ))
    clock = jump_clock(monkeypatch, frozen=True)
    run = asyncio.ensure_future(supervisor.run())
    try:
        yield Running(supervisor, clock, caplog)
    finally:
        clock.thaw()
        supervisor.stop()
        supervisor.stop()  # the second: kill whatever is left now
        assert await run == 0


def worker_processes() -> list[int]:
    """Pids of this process's children that are gateway workers (alive or not reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"\0worker\0" in command:
            found.append(int(entry))
    return found


def pending(pid: int) -> set[signal.Signals]:
    """The signals sent to ``pid`` that it has not taken yet."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    (shared,) = [line for line in lines if line.startswith("ShdPnd:")]
    mask = int(shared.split()[1], 16)  # bit n - 1 for signal n
    return {sig for sig in signal.Signals if mask & (1 << (sig - 1))}


def state(pid: int) -> str:
    """The kernel's one-letter state of ``pid``: R, S, T (stopped), Z (exited)..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_a_worker_that_keeps_dying_is_restarted_after_0_1_s_doubling_to_10_s(
    running: Running,
) -> None:
    pid = await running.next_worker(after=0)
    waits = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    for restarts, wait in enumerate(waits, start=1):
        os.kill(pid, signal.SIGKILL)  # within 5 s of its start: no clock time has passed
        await running.sees_die(pid, f"restarting in {wait:.1f}s")
        await turns()  # the restart task, made as the death was logged, begins to wait
        running.clock.advance(wait - 0.01)
        await turns()
        assert worker_processes() == [], f"restarted before {wait} s"
        running.clock.advance(0.01)
        pid = await running.next_worker(after=restarts)
    running.clock.advance(5)  # a worker that lived 5 s is restarted at once
    os.kill(pid, signal.SIGKILL)
    await running.sees_die(pid, "restarting in 0.0s")
    await running.next_worker(after=len(waits) + 1)


async def test_a_worker_that_does_not_stop_is_killed_after_2_shutdown_timeouts_and_5_s(
    running: Running,
) -> None:
    pid = await running.next_worker(after=0)
    os.kill(pid, signal.SIGSTOP)  # a worker that cannot take its SIGTERM
    await settles(lambda: state(pid) == "T", "the worker is stopped")
    running.supervisor.stop()
    # Sent right before the deadline is set: pending, as a stopped process takes nothing.
    await settles(lambda: signal.SIGTERM in pending(pid), "the worker is sent SIGTERM")
    running.clock.advance(2 * 1 + 5 - 0.01)
    await turns()
    assert not running.logged("did not stop in time")
    assert state(pid) == "T"  # still there, stopped
    running.clock.advance(0.01)
    await settles(
        lambda: running.logged(f"worker 0 (pid {pid}) did not stop in time: killing"),
        "the supervisor kills the worker",
    )
    await settles(lambda: running.logged("all workers stopped"), "the supervisor reaps it")
