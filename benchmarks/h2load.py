"""h2load (nghttp2) as the HTTP/2 load generator: its command line and its report, in the
figures wrk gives (its summary has no percentiles: they come from its per-request log)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from benchmarks.load import WrkError, WrkStats, run_load

STREAMS = 10  # concurrent streams per connection (h2load -m), as browsers multiplex
_FINISHED = re.compile(r"^finished in ([0-9.]+)s, ([0-9.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


def h2load_command(
    h2load: str, url: str, *, connections: int, duration: int, log: Path, script: Path | None
) -> list[str]:
    """One thread, as for wrk; ``script``: a file holding the request body (a POST)."""
    body = ["-d", str(script)] if script is not None else []
    return [
        h2load, "-t1", f"-c{connections}", f"-m{STREAMS}", f"-D{duration}",
        f"--log-file={log}", *body, url,
    ]  # fmt: skip


def percentile(durations_us: list[int], fraction: float) -> float:
    """The nearest-rank percentile of ``durations_us``, in milliseconds."""
    ordered = sorted(durations_us)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index] / 1000


def parse_h2load(output: str, log: str) -> WrkStats:
    """h2load's summary and ``--log-file`` (start time, status, duration in µs per line)."""
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    status = _STATUS.search(output)
    durations = [int(line.split("\t")[2]) for line in log.splitlines() if line.count("\t") == 2]
    if finished is None or requests is None or status is None or not durations:
        raise WrkError(f"unexpected h2load output: {output.strip()[-300:]!r}")
    done, failed, errored, timeout = (int(requests.group(i)) for i in (2, 4, 5, 6))
    return WrkStats(
        requests_per_s=float(finished.group(2)),
        p50_ms=percentile(durations, 0.50),
        p99_ms=percentile(durations, 0.99),
        requests=done,
        seconds=float(finished.group(1)),
        non_2xx_3xx=int(status.group(3)) + int(status.group(4)),
        socket_errors=failed + errored + timeout,
    )


async def run_h2load(command: list[str], *, duration: int, log: Path) -> WrkStats:
    output = await run_load(command, duration=duration, name="h2load")
    text = await asyncio.to_thread(log.read_text)  # megabytes after a long run
    return parse_h2load(output, text)
