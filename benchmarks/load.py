"""wrk as the load generator: its command line, a bounded run, and parsing its report."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# wrk prints latencies with the largest unit that keeps the number >= 1 (units.c).
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1_000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)")
_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_PERCENTILE = r"^\s+{}%\s+(\S+)\s*$"
_REQUESTS = re.compile(r"^\s+(\d+) requests in (\S+), ", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_NON_2XX_3XX = re.compile(r"^\s+Non-2xx or 3xx responses: (\d+)\s*$", re.MULTILINE)
# wrk stops itself after -d; this bounds a wrk that hangs anyway (connect storms, a stuck server).
_GRACE = 30.0


class WrkError(Exception):
    """wrk failed, or printed something that is not a wrk report."""


@dataclass(frozen=True, slots=True)
class WrkStats:
    """The figures taken from one wrk report."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float  # how long wrk actually ran
    non_2xx_3xx: int
    socket_errors: int  # connect + read + write + timeout

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + self.socket_errors

    @property
    def successes(self) -> int:
        """Answers below 400: wrk's "Non-2xx or 3xx" counts only statuses above 399 (wrk.c),
        so a redirect scenario's 302s are successes, not errors."""
        return self.requests - self.non_2xx_3xx


def to_ms(text: str) -> float:
    """A wrk latency such as ``254.17us``, ``1.39ms`` or ``1.02s`` in milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise WrkError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _MS_PER_UNIT[match.group(2)]


def parse_wrk(output: str) -> WrkStats:
    """Parse ``wrk --latency`` output; raise :class:`WrkError` if a needed figure is absent."""
    rate = _RATE.search(output)
    p50 = re.search(_PERCENTILE.format(50), output, re.MULTILINE)
    p99 = re.search(_PERCENTILE.format(99), output, re.MULTILINE)
    requests = _REQUESTS.search(output)
    if rate is None or p50 is None or p99 is None or requests is None:
        raise WrkError(f"unexpected wrk output: {output.strip()[:200]!r}")
    sockets = _SOCKET_ERRORS.search(output)
    non_2xx_3xx = _NON_2XX_3XX.search(output)
    return WrkStats(
        requests_per_s=float(rate.group(1)),
        p50_ms=to_ms(p50.group(1)),
        p99_ms=to_ms(p99.group(1)),
        requests=int(requests.group(1)),
        seconds=to_ms(requests.group(2)) / 1000,
        non_2xx_3xx=int(non_2xx_3xx.group(1)) if non_2xx_3xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def lua_string(data: bytes) -> str:
    """A Lua string literal holding ``data`` byte for byte: printable ASCII as is, the
    rest as three-digit decimal escapes (so a following digit cannot extend one)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def wrk_script(method: str, body: bytes, headers: Mapping[str, str]) -> str | None:
    """The Lua that makes wrk send this request; None for a plain GET (wrk's default).

    Setting only ``wrk.method``/``body``/``headers`` lets wrk build the request once and
    resend the same bytes, so the load generator costs as little as for a GET.
    """
    if method == "GET" and not body and not headers:
        return None
    lines = [f"wrk.method = {lua_string(method.encode())}"]
    if body:
        lines.append(f"wrk.body = {lua_string(body)}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}")
    return "\n".join(lines) + "\n"


def wrk_mix_script(
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    mix: Sequence[Mapping[str, str]],
) -> str:
    """Lua that makes wrk send the request with each of ``mix``'s header sets in turn:
    every request is formatted once, in ``init``, and only picked per request."""
    rows = []
    for extra in mix:
        fields = {**headers, **extra}
        table = ", ".join(f"[{lua_string(k.encode())}] = {lua_string(v.encode())}"
                          for k, v in fields.items())  # fmt: skip
        rows.append(f"  {{{table}}},")
    return "\n".join([
        "local mix = {", *rows, "}",
        "local requests, i = {}, 0",
        "function init(args)",
        "  for n, fields in ipairs(mix) do",
        f"    requests[n] = wrk.format({lua_string(method.encode())}, "
        f"{lua_string(path.encode())}, fields, {lua_string(body) if body else 'nil'})",
        "  end",
        "end",
        "function request()",
        "  i = i % #requests + 1",
        "  return requests[i]",
        "end",
    ]) + "\n"  # fmt: skip


def wrk_command(
    wrk: str, url: str, *, connections: int, duration: int, script: Path | None = None
) -> list[str]:
    """One wrk thread: with two cores, more threads would take CPU from the server under test."""
    lua = ["-s", str(script)] if script is not None else []
    return [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *lua, url]


async def run_load(command: list[str], *, duration: int, name: str) -> str:
    """Run a load generator to completion (bounded by ``duration`` plus a grace) and
    return what it printed; WrkError, naming it, if it hangs or fails."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(duration + _GRACE):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        raise WrkError(f"{name} did not finish within {duration + _GRACE:.0f}s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        detail = (stderr or stdout).decode(errors="replace").strip().splitlines()
        raise WrkError(f"{name} exited with {process.returncode}: {' '.join(detail[-2:])}")
    return stdout.decode(errors="replace")


async def run_wrk(command: list[str], *, duration: int) -> WrkStats:
    """Run wrk to completion (bounded) and parse its report."""
    return parse_wrk(await run_load(command, duration=duration, name="wrk"))
