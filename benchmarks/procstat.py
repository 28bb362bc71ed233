"""CPU time and memory of a server's whole process tree, read from /proc (no psutil).

The gateway and nginx run a leader plus workers, so every figure is summed over the leader
and all its descendants, sampled every ~200 ms while a load runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.2
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` that matter here."""

    ppid: int
    cpu_ticks: int  # utime + stime, all threads
    rss_pages: int


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line (proc(5)); ``comm`` may hold spaces and parentheses."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is 4, utime 14, stime 15, rss 24.
    return ProcStat(
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        rss_pages=int(fields[21]),
    )


@dataclass(frozen=True, slots=True)
class TreeSample:
    """Every process of one tree at one moment, by pid."""

    at: float
    processes: Mapping[int, ProcStat]

    @property
    def rss_bytes(self) -> int:
        return sum(p.rss_pages for p in self.processes.values()) * PAGE_SIZE


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """``root`` and every process below it, given each pid's parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, pending = set(), [root]
    while pending:
        pid = pending.pop()
        if pid in parents and pid not in tree:
            tree.add(pid)
            pending.extend(children.get(pid, ()))
    return tree


def sample_tree(root: int) -> TreeSample:
    """Read ``/proc`` once: the stat of ``root`` and all its descendants (empty if it is gone)."""
    stats: dict[int, ProcStat] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            # Processes come and go while we scan; a vanished one is simply not in the tree.
            with contextlib.suppress(OSError, ValueError, IndexError):
                stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
    tree = descendants(root, {pid: stat.ppid for pid, stat in stats.items()})
    return TreeSample(time.monotonic(), {pid: stats[pid] for pid in tree})


@dataclass(slots=True)
class Usage:
    """CPU seconds and peak RSS of a tree over a run, accumulated from samples."""

    first: TreeSample
    last: TreeSample
    peak_rss_bytes: int
    _latest_ticks: dict[int, int] = field(default_factory=dict)

    @classmethod
    def starting(cls, sample: TreeSample) -> Usage:
        usage = cls(sample, sample, sample.rss_bytes)
        usage.add(sample)
        return usage

    def add(self, sample: TreeSample) -> None:
        self.last = sample
        self.peak_rss_bytes = max(self.peak_rss_bytes, sample.rss_bytes)
        for pid, stat in sample.processes.items():
            self._latest_ticks[pid] = stat.cpu_ticks

    @property
    def cpu_seconds(self) -> float:
        """CPU used since the first sample, including processes that started or exited since."""
        before = self.first.processes
        ticks = sum(
            latest - (before[pid].cpu_ticks if pid in before else 0)
            for pid, latest in self._latest_ticks.items()
        )
        return ticks / CLOCK_TICKS

    @property
    def cores(self) -> float:
        """Average number of cores busy between the first and the last sample."""
        elapsed = self.last.at - self.first.at
        return self.cpu_seconds / elapsed if elapsed > 0 else 0.0


@contextlib.asynccontextmanager
async def sampling(root: int, interval: float = SAMPLE_INTERVAL) -> AsyncIterator[Usage]:
    """Sample ``root``'s tree from entry to exit; the yielded :class:`Usage` is final on exit."""
    usage = Usage.starting(sample_tree(root))

    async def sample_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            # A /proc scan takes about a millisecond; the loop has nothing else to do meanwhile.
            usage.add(sample_tree(root))

    task = asyncio.create_task(sample_forever())
    try:
        yield usage
    finally:
        task.cancel()
        await asyncio.wait([task])
        usage.add(sample_tree(root))
