"""``Cache-Status`` (RFC 9211): what the cache did with a request, as one list member
appended after any an upstream sent; built from a closed set of parameters (an f-string
costs a fraction of a structured-field serializer)."""

from __future__ import annotations

from dataclasses import dataclass

HEADER = "Cache-Status"
AGE_MAX = 2147483648  # RFC 9111 §5.1


@dataclass(frozen=True, slots=True)
class Status:
    """One member: ``hit``, or ``fwd`` with why; ``detail`` is a token of ours."""

    hit: bool = False
    fwd: str | None = None  # uri-miss, vary-miss, stale, request, bypass, miss
    fwd_status: int | None = None
    stored: bool = False
    ttl: int | None = None  # seconds of freshness left (negative: stale by that much)
    collapsed: bool = False
    detail: str | None = None

    def member(self, name: str) -> str:
        parts = [name]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.stored:
            parts.append("stored")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.collapsed:
            parts.append("collapsed")
        if self.detail is not None:
            parts.append(f"detail={self.detail}")
        return "; ".join(parts)


def age_header(age: float) -> str:
    return str(min(int(age), AGE_MAX))
