"""A small LRU memo for admissions.

Injection is a pure function of (pod, namespace, cluster, network) for one injector, and a
rollout admits the same pod again and again: every replica of a ReplicaSet arrives with the
same template, `generateName` and owner. Keying on the pod's JSON bytes makes those repeats a
dictionary lookup. Pods that do not encode (never the case for admission JSON) are not memoised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import orjson

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """LRU by entry count and, with `max_weight`, by the summed weight of what `put` was told."""

    def __init__(self, size: int, *, max_weight: int | None = None) -> None:
        self.size = size
        self.max_weight = max_weight
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def weight(self) -> int:
        """The summed weight of the entries kept."""
        return self._weight

    @staticmethod
    def key(*parts: Any) -> bytes | None:
        try:
            return orjson.dumps(parts)
        except TypeError:
            return None

    def get(self, key: K | None) -> V | None:
        if key is None or not self.size:
            return None
        entry = self._items.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: K | None, value: V, *, weight: int = 0) -> None:
        if key is None or not self.size:
            return
        previous = self._items.pop(key, None)
        if previous is not None:
            self._weight -= previous[1]
        self._items[key] = (value, weight)
        self._weight += weight
        while self._items and (
            len(self._items) > self.size
            or (self.max_weight is not None and self._weight > self.max_weight)
        ):
            _, (_, evicted) = self._items.popitem(last=False)
            self._weight -= evicted
