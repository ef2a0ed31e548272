"""A small LRU memo for admissions.

Injection is a pure function of (pod, namespace, cluster, network) for one injector, and a
rollout admits the same pod again and again: every replica of a ReplicaSet arrives with the
same template, `generateName` and owner. Keying on the pod's JSON bytes makes those repeats a
dictionary lookup. Pods that do not encode (never the case for admission JSON) are not memoised.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

import orjson

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts: Any) -> bytes | None:
        try:
            return orjson.dumps(parts)
        except TypeError:
            return None

    def get(self, key: bytes | None) -> V | None:
        if key is None or not self.size:
            return None
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: bytes | None, value: V) -> None:
        if key is None or not self.size:
            return
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
