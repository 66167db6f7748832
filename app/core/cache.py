"""A small thread-safe LRU for results derived from one catalog version.

Searches, dataset details and statistics depend only on the catalog, which changes rarely and announces every
change with a new version number (app.catalog.service.catalog_version). Keys therefore carry the database and
the version: after a change no old entry can be found again, and LRU order retires them. Values are shared
between requests and must be treated as read-only.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# Every cache of derived answers, and every other forgetful holder of catalog-derived state, so that one call can
# forget them all: when a database is rolled back to an earlier state (a test's transaction is undone), version
# numbers repeat, and an answer kept for "version 7" may describe a version 7 that no longer exists.
_forgetters: list[Callable[[], None]] = []
_caches: weakref.WeakSet[VersionedCache[object]] = weakref.WeakSet()


def on_forget(forget: Callable[[], None]) -> Callable[[], None]:
    """Register `forget` to run on every `forget_derived_state()` (usable as a decorator)."""
    _forgetters.append(forget)
    return forget


def forget_derived_state() -> None:
    """Drop every kept answer and every registered piece of catalog-derived state in this process."""
    for cache in list(_caches):
        cache.clear()
    for forget in _forgetters:
        forget()


class VersionedCache(Generic[V]):
    """At most `maxsize` entries and, for bytes values, at most `max_bytes` of them in all (the least
    recently used go first): anyone can ask for new URLs, so the memory a cache may take is bounded."""

    def __init__(self, maxsize: int, max_bytes: int | None = None) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        _caches.add(self)  # type: ignore[arg-type]  # every value type is forgotten alike

    @staticmethod
    def _weight(value: object) -> int:
        return len(value) if isinstance(value, bytes) else 0

    def _store(self, key: Hashable, value: V) -> None:
        """Keep `value` under `key` and evict past the limits (the caller holds the lock)."""
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= self._weight(previous)
        self._entries[key] = value
        self._bytes += self._weight(value)
        while self._entries and (
            len(self._entries) > self.maxsize or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= self._weight(evicted)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value of `key`, or `compute()`'s (an exception is raised and nothing is kept). Two threads
        missing the same key at once both compute: cheaper than making one wait on the other's lock."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = compute()
        with self._lock:
            self._store(key, value)
        return value

    def get_many(self, keys: list[Hashable]) -> dict[Hashable, V]:
        """The cached values among `keys` (the others are simply absent)."""
        found = {}
        with self._lock:
            for key in keys:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    found[key] = self._entries[key]
        return found

    def put_many(self, items: dict[Hashable, V]) -> None:
        with self._lock:
            for key, value in items.items():
                self._store(key, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


__all__ = ["VersionedCache", "forget_derived_state", "on_forget"]
