"""What `ResourceCache` carries from one snapshot to the next, and the checks that make
carrying it safe.

A push used to recompute every proxy's shape and rebuild every shape's resource sets, although
a VirtualService change leaves shapes, clusters and load assignments as they were. Here an
entry of the previous snapshot is offered again; the cache keeps it only when what it was made
of is unchanged: the same resources (the same objects from the per-service memos, or the same
name and digest) or, for a shape, equal inputs. An object kept is the very object the ADS
layer sent before, so it sees no change and sends nothing for that type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from sidemesh.xds.resource_sets import Resource, TypedResources

K = TypeVar("K")
V = TypeVar("V")


class SweptMemo(dict[Any, Any]):
    """A memo of pure builds kept across snapshots: it remembers which keys were used since
    the last sweep (one per snapshot), and the sweep forgets the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[Any] = set()

    def get_or_build(self, key: K, build: Callable[[], Any]) -> Any:
        self.used.add(key)
        if key not in self:
            self[key] = build()
        return self[key]

    def sweep(self) -> None:
        for key in [k for k in self if k not in self.used]:
            del self[key]
        self.used = set()


class Carried(Generic[K, V]):
    """Entries of the current snapshot, and those of the previous one, offered for checking.

    `roll` starts a snapshot: what the ending snapshot used becomes `previous`, everything
    older is forgotten (so a departed proxy's entries last one snapshot longer, no more)."""

    def __init__(self) -> None:
        self.current: dict[K, V] = {}
        self.previous: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self.current.get(key)

    def offered(self, key: K) -> V | None:
        """The previous snapshot's entry, if any: the caller checks it before `put`."""
        return self.previous.get(key)

    def put(self, key: K, value: V) -> V:
        self.current[key] = value
        return value

    def roll(self, *, keep: bool = True) -> None:
        """A new snapshot; `keep=False` when nothing of the ending one can be valid."""
        self.previous = self.current if keep else {}
        self.current = {}


def _same_items(old: Mapping[str, Resource], new: Sequence[Resource]) -> bool:
    """The same resources in the same order: as objects (the memos hand out the same ones) or
    by name and digest. Names in `old` are unique, so equal names in order make `new`'s too."""
    if len(old) != len(new):
        return False
    for a, b in zip(old.values(), new, strict=True):
        if a is not b and (a.name != b.name or a.version != b.version):
            return False
    return True


def same_set(old: TypedResources, resources: Sequence[Resource]) -> bool:
    """Would `TypedResources.of(type, resources)` equal `old` (a flat set)?"""
    return old.base is None and _same_items(old.own, resources)


def same_extension(old: TypedResources, base: TypedResources, own: Sequence[Resource]) -> bool:
    """Would `TypedResources.extend(base, own)` equal `old`? (`base` compared by identity:
    bases are carried as objects, see `same_set`.)"""
    return old.base is base and _same_items(old.own, own)
