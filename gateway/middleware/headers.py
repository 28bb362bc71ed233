"""``headers``: set, add and remove request headers (to the upstream) and response
headers (to the client), with placeholders for what the gateway knows of the request.

Names the gateway itself writes (forwarding headers, framing, trace context, request id)
are refused by the config, so a rule can never forge them.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict

from gateway.config.middleware import PLACEHOLDER, HeaderOps


class _Value:
    """A header value with ``{client_ip}``-style placeholders, split once at build."""

    __slots__ = ("_parts", "_plain")

    def __init__(self, template: str) -> None:
        self._plain = template if not PLACEHOLDER.search(template) else None
        self._parts = PLACEHOLDER.split(template)  # text, name, text, name, ..., text

    def render(self, facts: Mapping[str, str]) -> str:
        if self._plain is not None:
            return self._plain
        return "".join(
            # Odd parts are placeholder names; a value never brings CR or LF in.
            part if i % 2 == 0 else facts.get(part, "").replace("\r", "").replace("\n", "")
            for i, part in enumerate(self._parts)
        )


class HeaderRewriter:
    """One direction's rules: remove, then set, then add."""

    __slots__ = ("_add", "_remove", "_set")

    def __init__(self, ops: HeaderOps) -> None:
        self._remove = tuple(ops.remove)
        self._set = tuple((name, _Value(value)) for name, value in ops.set.items())
        self._add = tuple((name, _Value(value)) for name, value in ops.add.items())

    @classmethod
    def of(cls, ops: HeaderOps) -> HeaderRewriter | None:
        return cls(ops) if ops.names() else None

    def apply(self, headers: CIMultiDict[str], facts: Mapping[str, str]) -> None:
        for name in self._remove:
            headers.popall(name, None)
        for name, value in self._set:
            headers[name] = value.render(facts)
        for name, value in self._add:
            headers.add(name, value.render(facts))
