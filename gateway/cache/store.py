"""A worker's memory tier: entries by key and variant, least recently used evicted to
stay within a byte budget, with the indexes purges need (by URL, by tag)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from gateway.cache.entry import Entry
from gateway.cache.key import Variant

Slot = tuple[str, Variant]


class MemoryStore:
    """Bounded by ``max_bytes`` (bodies, fields and a fixed overhead per entry)."""

    def __init__(self, max_bytes: int, on_evict: Callable[[int], None] = lambda n: None) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Slot, Entry] = OrderedDict()
        # key -> the fields its answers vary on (one Vary per key, as the latest answer
        # says), and how many of its variants are held.
        self._vary: dict[str, tuple[tuple[str, ...], int]] = {}
        self._by_url: dict[str, set[Slot]] = {}
        self._by_tag: dict[str, set[Slot]] = {}
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._entries)

    def vary(self, key: str) -> tuple[str, ...] | None:
        """The fields the key's answers vary on, or None when nothing is held for it."""
        held = self._vary.get(key)
        return held[0] if held is not None else None

    def get(self, key: str, variant: Variant) -> Entry | None:
        entry = self._entries.get((key, variant))
        if entry is not None:
            self._entries.move_to_end((key, variant))
        return entry

    def put(self, entry: Entry) -> None:
        """Hold ``entry`` (replacing its key and variant's), then evict to fit."""
        slot = (entry.key, entry.variant)
        held = self._vary.get(entry.key)
        if held is not None and held[0] != entry.vary:
            self.remove_key(entry.key)  # the answer now varies otherwise: old variants go
        self._remove(slot)
        size = entry.size
        if size > self.max_bytes:
            return
        self._entries[slot] = entry
        count = self._vary.get(entry.key, (entry.vary, 0))[1]
        self._vary[entry.key] = (entry.vary, count + 1)
        self._by_url.setdefault(entry.url, set()).add(slot)
        for tag in entry.tags:
            self._by_tag.setdefault(tag, set()).add(slot)
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            old, _ = next(iter(self._entries.items()))
            self._remove(old)
            evicted += 1
        if evicted:
            self._on_evict(evicted)

    def replace(self, entry: Entry) -> None:
        """Swap in a changed copy of a held entry (a 304's merge, a soft purge)."""
        if (entry.key, entry.variant) in self._entries:
            self.put(entry)

    def remove_key(self, key: str) -> None:
        for slot in [slot for slot in self._entries if slot[0] == key]:
            self._remove(slot)

    def remove(self, key: str, variant: Variant) -> None:
        self._remove((key, variant))

    def by_url(self, url: str) -> list[Entry]:
        return [self._entries[slot] for slot in self._by_url.get(url, ())]

    def by_prefix(self, prefix: str) -> list[Entry]:
        return [entry for entry in self._entries.values() if entry.url.startswith(prefix)]

    def by_tag(self, tag: str) -> list[Entry]:
        return [self._entries[slot] for slot in self._by_tag.get(tag, ())]

    def drop(self, entries: Iterable[Entry]) -> int:
        removed = 0
        for entry in list(entries):
            removed += self._remove((entry.key, entry.variant))
        return removed

    def clear(self) -> None:
        for slot in list(self._entries):
            self._remove(slot)

    def _remove(self, slot: Slot) -> int:
        entry = self._entries.pop(slot, None)
        if entry is None:
            return 0
        self.bytes -= entry.size
        vary, count = self._vary[slot[0]]
        if count <= 1:
            del self._vary[slot[0]]
        else:
            self._vary[slot[0]] = (vary, count - 1)
        _discard(self._by_url, entry.url, slot)
        for tag in entry.tags:
            _discard(self._by_tag, tag, slot)
        return 1


def _discard(index: dict[str, set[Slot]], name: str, slot: Slot) -> None:
    slots = index.get(name)
    if slots is not None:
        slots.discard(slot)
        if not slots:
            del index[name]
