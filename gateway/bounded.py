"""A bounded dict for the steps' per-input results: FIFO eviction, a hit is one dict
lookup (an LRU's bookkeeping would cost more than most of the lookups it saves)."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    __slots__ = ("_items", "_size", "get")

    def __init__(self, size: int) -> None:
        self._items: dict[K, V] = {}
        self._size = size
        self.get = self._items.get  # bound once: the hot path calls it per event

    def put(self, key: K, value: V) -> None:
        items = self._items
        if len(items) >= self._size:
            del items[next(iter(items))]  # the oldest entry
        items[key] = value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
