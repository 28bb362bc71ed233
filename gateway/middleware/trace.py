"""W3C Trace Context (https://www.w3.org/TR/trace-context/): each request belongs to a
trace, taken from a valid ``traceparent`` the gateway believes, else started here.

The upstream gets ``traceparent`` with the same trace id and a span id of the gateway's
own (the proxy hop is a span), and the client's ``tracestate`` unchanged; the trace id
goes into the access log line and into every event the request produces.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# version 00: 2 hex, 32 hex trace id, 16 hex parent id, 2 hex flags (§3.2.2).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_TRACESTATE = 512  # §3.3.1.1: at least 512 characters must be propagated


@dataclass(slots=True)
class Trace:
    trace_id: str
    span_id: str  # the gateway's span: the parent id the upstream sees
    flags: str
    state: str | None = None  # the client's tracestate, passed on unchanged

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, flags) of a valid header, else None. A higher version is read as far
    as version 00 goes (§3.2.4); version ff and all-zero ids are invalid."""
    value = value.strip()
    found = _TRACEPARENT.match(value)
    if found is None:
        return None
    version, trace_id, parent_id, flags = found.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None
    if version != "00" and len(value) > 55 and value[55] != "-":
        return None
    return trace_id, flags


def start_trace(traceparent: str | None, tracestate: str | None) -> Trace:
    """The request's trace: the caller's (when ``traceparent`` is given and valid) with a
    new span of the gateway's, else a new sampled trace."""
    ids = os.urandom(24).hex()
    if traceparent is not None and (parsed := parse_traceparent(traceparent)) is not None:
        trace_id, flags = parsed
        state = tracestate.strip() if tracestate else None
        if state is not None and (len(state) > MAX_TRACESTATE or not state.isprintable()):
            state = None  # §3.3.1.1: a tracestate that cannot be passed on whole is dropped
        return Trace(trace_id, ids[32:], flags, state or None)
    return Trace(ids[:32], ids[32:], "01")
