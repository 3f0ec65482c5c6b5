"""A cache of unwrapped keys in a reader's memory: each kept ``ttl_s`` seconds, at most ``max_keys`` of them, least
recently used out first. Readers keep DEKs and subject keys in it, so a key destroyed in the store (an erased
customer's subject key, a DEK retention destroyed) leaves a long-running process's memory within one TTL."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable


class KeyCache:
    """Entries kept ``ttl_s`` seconds, at most ``max_keys`` of them, least recently used out first (thread-safe)."""

    def __init__(self, ttl_s: float, max_keys: int, clock: Callable[[], float]) -> None:
        self.ttl_s, self.max_keys, self._clock = ttl_s, max_keys, clock
        self._items: OrderedDict[Any, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: Any) -> Any | None:
        with self._lock:
            hit = self._items.get(name)
            if hit is None or hit[1] <= self._clock():
                return None
            self._items.move_to_end(name)
            return hit[0]

    def put(self, name: Any, value: Any) -> None:
        with self._lock:
            self._items[name] = (value, self._clock() + self.ttl_s)
            self._items.move_to_end(name)
            while len(self._items) > self.max_keys:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
