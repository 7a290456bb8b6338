"""A small thread-safe least-recently-used map: the one cache the live views and the exports share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LockedLRU(Generic[K, V]):
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        return value

    def get_or_put(self, key: K, make: Callable[[], V], keep: Callable[[V], bool] = lambda v: True) -> V:
        """The cached value if there is one that `keep` accepts, else `make()`, cached. `make` runs under
        the lock: use it for cheap values (an expensive one: `get`, compute, then `put`)."""
        with self._lock:
            value = self._items.get(key)
            if value is None or not keep(value):
                value = self._items[key] = make()
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
            return value
