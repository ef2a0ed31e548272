"""Serialised xDS resources and sets of them, as the cache builds and the ADS layer sends them.

A `Resource` carries its encoded `Any` field ready to splice into a response; a
`TypedResources` set is compared by identity and carries its concatenation, built flat or as a
shared base plus a shape's own few; `diff` says what changed between two sets, comparing shared
bases once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sidemesh.api.protowire import length_delimited
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER

TYPE_ORDER = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER)  # push order


def digest(*parts: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()


@dataclass(frozen=True, eq=False)
class Resource:
    name: str
    version: str  # digest of the body: equal bytes, equal version, across restarts too
    body: bytes  # the serialised typed message
    any_field: bytes  # `repeated Any resources = 2` entry of a DiscoveryResponse, pre-encoded

    @classmethod
    def of(cls, type_url: str, name: str, body: bytes) -> Resource:
        encoded_any = length_delimited(1, type_url.encode()) + length_delimited(2, body)
        return cls(name, digest(body), body, length_delimited(2, encoded_any))


@dataclass(frozen=True, eq=False)
class TypedResources:
    """All resources of one type for one proxy shape; compared by identity.

    Built either flat (`of`) or as a shared `base` plus a few resources of the shape's own
    (`extend`): then the base's encoded bytes and its diff against the previous snapshot are
    computed once for every shape. Names in `own` never occur in `base` (per-service names and
    per-proxy names are disjoint by construction)."""

    type_url: str
    resources: Mapping[str, Resource]
    version: str = field(default="")
    base: TypedResources | None = None
    own: Mapping[str, Resource] = field(default_factory=dict)

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> TypedResources:
        by_name = {r.name: r for r in resources}
        version = digest(*(f"{n}={r.version};".encode() for n, r in sorted(by_name.items())))
        return cls(type_url, by_name, version, None, by_name)

    @classmethod
    def extend(cls, base: TypedResources, own: Iterable[Resource]) -> TypedResources:
        own_by_name = {r.name: r for r in own}
        resources = {**base.resources, **own_by_name}
        parts = (f"{n}={r.version};".encode() for n, r in sorted(own_by_name.items()))
        return cls(base.type_url, resources, digest(base.version.encode(), *parts), base,
                   own_by_name)  # fmt: skip

    @cached_property
    def encoded(self) -> bytes:
        """Every resource's pre-encoded `Any` field, concatenated (a SotW response body)."""
        own = b"".join(r.any_field for r in self.own.values())
        return own if self.base is None else self.base.encoded + own


@dataclass(frozen=True)
class Diff:
    changed: tuple[str, ...]  # new or different
    removed: tuple[str, ...]

    def as_tuple(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.changed, self.removed


NO_CHANGE = Diff((), ())


def _diff_maps(old: Mapping[str, Resource], new: Mapping[str, Resource]) -> Diff:
    changed = tuple(
        name for name, r in new.items()
        if (previous := old.get(name)) is None or previous.version != r.version
    )  # fmt: skip
    return Diff(changed, tuple(name for name in old if name not in new))


def diff(
    old: TypedResources | None,
    new: TypedResources,
    base_diff: Callable[[TypedResources, TypedResources], Diff] | None = None,
) -> Diff:
    """What changed from `old` to `new`; `base_diff` (memoised) compares shared bases."""
    if old is None:
        return Diff(tuple(new.resources), ())
    if old is new:
        return NO_CHANGE
    if old.base is None or new.base is None:
        return _diff_maps(old.resources, new.resources)
    shared = (base_diff or diff)(old.base, new.base)
    own = _diff_maps(old.own, new.own)
    return Diff(shared.changed + own.changed, shared.removed + own.removed)
