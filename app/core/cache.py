"""A small thread-safe LRU for results derived from one catalog version.

Searches, dataset details and statistics depend only on the catalog, which changes rarely and announces every
change with a new version number (app.catalog.service.catalog_version). Keys therefore carry the database and
the version: after a change no old entry can be found again, and LRU order retires them. Values are shared
between requests and must be treated as read-only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class VersionedCache(Generic[V]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value of `key`, or `compute()`'s (an exception is raised and nothing is kept). Two threads
        missing the same key at once both compute: cheaper than making one wait on the other's lock."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = compute()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def get_many(self, keys: list[Hashable]) -> dict[Hashable, V]:
        """The cached values among `keys` (the others are simply absent)."""
        found = {}
        with self._lock:
            for key in keys:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    found[key] = self._entries[key]
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[Hashable, V]) -> None:
        with self._lock:
            self._entries.update(items)
            for key in items:
                self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


__all__ = ["VersionedCache"]
