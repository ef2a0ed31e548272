"""Serialised resources, built once and shared.

Per-service pieces (an outbound filter chain, an outbound cluster, a load assignment) are
memoised on exactly the inputs they depend on, so a snapshot in which one service changed
rebuilds one service's pieces. Whole per-type sets are memoised per proxy *shape*, so proxies
that would get identical bytes share one object (and the ADS layer compares objects, not bytes).
Each resource carries its encoded `Any` field ready to splice into a response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sidemesh.xds import generate as gen
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service
from sidemesh.xds.proxy import Bind, ProxyInfo

K = TypeVar("K")

TYPE_ORDER = (gen.TYPE_CLUSTER, gen.TYPE_ENDPOINT, gen.TYPE_LISTENER)  # push order


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes, or embedded message)."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload


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
    """All resources of one type for one proxy shape; compared by identity."""

    type_url: str
    resources: Mapping[str, Resource]
    version: str = field(default="")

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> TypedResources:
        by_name = {r.name: r for r in resources}
        version = digest(*(f"{n}={r.version};".encode() for n, r in sorted(by_name.items())))
        return cls(type_url, by_name, version)


@dataclass(frozen=True)
class Diff:
    changed: tuple[str, ...]  # new or different
    removed: tuple[str, ...]


def diff(old: TypedResources | None, new: TypedResources) -> Diff:
    if old is None:
        return Diff(tuple(new.resources), ())
    changed = tuple(
        name for name, r in new.resources.items()
        if (previous := old.resources.get(name)) is None or previous.version != r.version
    )  # fmt: skip
    removed = tuple(name for name in old.resources if name not in new.resources)
    return Diff(changed, removed)


class _Memo(dict[Any, Any]):
    """A dict that remembers which keys were used since the last sweep, and forgets the rest."""

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


class ResourceCache:
    def __init__(self, snapshot: MeshSnapshot) -> None:
        self._chains = _Memo()
        self._clusters = _Memo()
        self._assignments = _Memo()
        self._static = [
            Resource.of(gen.TYPE_CLUSTER, c.name, c.SerializeToString())
            for c in gen.static_clusters()
        ]
        self._diffs: dict[tuple[TypedResources | None, TypedResources], Diff] = {}
        self.snapshot = snapshot
        self._reset()

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.snapshot = snapshot
        for memo in (self._chains, self._clusters, self._assignments):
            memo.sweep()
        self._reset()

    def _reset(self) -> None:
        self._by_shape: dict[gen.ProxyShape, dict[str, TypedResources]] = {}
        self._shapes: dict[ProxyInfo, gen.ProxyShape] = {}
        self._outbound_listeners: dict[Bind, Resource] = {}
        self._shared: dict[str, TypedResources] = {}
        self._diffs.clear()

    def diff(self, old: TypedResources | None, new: TypedResources) -> Diff:
        key = (old, new)
        found = self._diffs.get(key)
        if found is None:
            found = self._diffs[key] = diff(old, new)
        return found

    def shape_of(self, proxy: ProxyInfo) -> gen.ProxyShape:
        found = self._shapes.get(proxy)
        if found is None:
            found = self._shapes[proxy] = gen.proxy_shape(self.snapshot, proxy)
        return found

    def resources_for(self, proxy: ProxyInfo) -> dict[str, TypedResources]:
        shape = self.shape_of(proxy)
        found = self._by_shape.get(shape)
        if found is None:
            found = self._by_shape[shape] = self._build(shape)
        return found

    def _build(self, shape: gen.ProxyShape) -> dict[str, TypedResources]:
        trust_domain = self.snapshot.trust_domain
        inbound_listener = gen.inbound_listener(shape, trust_domain)
        listeners = TypedResources.of(gen.TYPE_LISTENER, [
            self._outbound_listener(shape.outbound_bind),
            Resource.of(gen.TYPE_LISTENER, gen.VIRTUAL_INBOUND,
                        inbound_listener.SerializeToString()),
        ])  # fmt: skip
        inbound = [
            Resource.of(gen.TYPE_CLUSTER, c.name, c.SerializeToString())
            for c in gen.inbound_clusters(shape)
        ]
        outbound = self._shared_typed(gen.TYPE_CLUSTER, self._outbound_clusters)
        clusters = TypedResources.of(
            gen.TYPE_CLUSTER, [*outbound.resources.values(), *self._static, *inbound]
        )
        endpoints = self._shared_typed(gen.TYPE_ENDPOINT, self._load_assignments)
        return {gen.TYPE_LISTENER: listeners, gen.TYPE_CLUSTER: clusters,
                gen.TYPE_ENDPOINT: endpoints}  # fmt: skip

    def _shared_typed(self, type_url: str, build: Callable[[], list[Resource]]) -> TypedResources:
        found = self._shared.get(type_url)
        if found is None:
            found = self._shared[type_url] = TypedResources.of(type_url, build())
        return found

    def _outbound_listener(self, bind: Bind) -> Resource:
        found = self._outbound_listeners.get(bind)
        if found is not None:
            return found
        snapshot = self.snapshot
        chains = [
            self._chains.get_or_build((service, port), partial(_chain_bytes, service, port))
            for service, port in gen.outbound_services(snapshot)
        ]
        base = gen.outbound_listener((), bind, snapshot.outbound_policy == "REGISTRY_ONLY")
        # `repeated FilterChain filter_chains = 3`, spliced in already serialised.
        body = base.SerializeToString() + b"".join(length_delimited(3, c) for c in chains)
        found = self._outbound_listeners[bind] = Resource.of(
            gen.TYPE_LISTENER, gen.VIRTUAL_OUTBOUND, body
        )
        return found

    def _outbound_clusters(self) -> list[Resource]:
        snapshot = self.snapshot
        resources = []
        for service in sorted(snapshot.services):
            sans = gen.peer_identities(snapshot, service)
            for port in service.ports:
                build = partial(_cluster_resource, service, port.port, sans)
                resources.append(self._clusters.get_or_build((service, port.port, sans), build))
        return resources

    def _load_assignments(self) -> list[Resource]:
        snapshot = self.snapshot
        resources = []
        for service in sorted(snapshot.services):
            for port in service.ports:
                name = gen.outbound_cluster_name(port.port, service.hostname)
                endpoints = gen.cluster_endpoints(snapshot, service, port.port)
                build = partial(_assignment_resource, name, endpoints)
                resources.append(self._assignments.get_or_build((name, endpoints), build))
        return resources


def _chain_bytes(service: Service, port: int) -> bytes:
    chain: bytes = gen.outbound_filter_chain(service, port).SerializeToString()
    return chain


def _assignment_resource(name: str, endpoints: tuple[tuple[Endpoint, bool], ...]) -> Resource:
    return Resource.of(
        gen.TYPE_ENDPOINT, name, gen.load_assignment(name, endpoints).SerializeToString()
    )


def _cluster_resource(service: Service, port: int, sans: tuple[str, ...]) -> Resource:
    cluster = gen.outbound_cluster(service, port, sans)
    return Resource.of(gen.TYPE_CLUSTER, cluster.name, cluster.SerializeToString())
