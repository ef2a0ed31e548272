"""Serialised resources, built once and shared.

Per-service pieces (a service's outbound listener, cluster and load assignment) are memoised on
exactly the inputs they depend on, so a snapshot in which one service changed rebuilds one
service's pieces. Per type, the resources every proxy shares form one base set per snapshot;
a proxy *shape* adds its own few (capture and inbound listeners, inbound clusters), so proxies
that would get identical bytes share one object (and the ADS layer compares objects, not bytes).
Each resource carries its encoded `Any` field ready to splice into a response, and each set its
concatenation, so even a state-of-the-world response is a join of a few ready byte strings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, TypeVar

from sidemesh.api.protowire import length_delimited
from sidemesh.xds import cluster_policy, inbound, outbound, routes
from sidemesh.xds.inbound import ProxyShape, proxy_shape
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service
from sidemesh.xds.proxy import Bind, ProxyInfo
from sidemesh.xds.resource_names import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    VIRTUAL_INBOUND,
    VIRTUAL_OUTBOUND,
    subset_cluster_name,
)

K = TypeVar("K")

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
        self._service_listeners = _Memo()
        self._clusters = _Memo()
        self._assignments = _Memo()
        self._static = [
            Resource.of(TYPE_CLUSTER, c.name, c.SerializeToString())
            for c in outbound.static_clusters()
        ]
        self._diffs: dict[tuple[TypedResources | None, TypedResources], Diff] = {}
        self.snapshot = snapshot
        self._reset()

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.snapshot = snapshot
        for memo in (self._service_listeners, self._clusters, self._assignments):
            memo.sweep()
        self._reset()

    def _reset(self) -> None:
        self._by_shape: dict[ProxyShape, dict[str, TypedResources]] = {}
        self._shapes: dict[ProxyInfo, ProxyShape] = {}
        self._capture_listeners: dict[tuple[Bind, bool], Resource] = {}
        self._shared: dict[str, TypedResources] = {}
        self._diffs.clear()

    def diff(self, old: TypedResources | None, new: TypedResources) -> Diff:
        key = (old, new)
        found = self._diffs.get(key)
        if found is None:
            found = self._diffs[key] = diff(old, new, self.diff)
        return found

    def shape_of(self, proxy: ProxyInfo) -> ProxyShape:
        found = self._shapes.get(proxy)
        if found is None:
            found = self._shapes[proxy] = proxy_shape(self.snapshot, proxy)
        return found

    def resources_for(self, proxy: ProxyInfo) -> dict[str, TypedResources]:
        shape = self.shape_of(proxy)
        found = self._by_shape.get(shape)
        if found is None:
            found = self._by_shape[shape] = self._build(shape)
        return found

    def _build(self, shape: ProxyShape) -> dict[str, TypedResources]:
        inbound_listener = inbound.inbound_listener(shape, self.snapshot.trust_domain)
        listeners = TypedResources.extend(
            self._shared_typed(TYPE_LISTENER, self._service_listener_resources),
            [self._capture_listener(shape.outbound_bind, shape.transparent),
             Resource.of(TYPE_LISTENER, VIRTUAL_INBOUND, inbound_listener.SerializeToString())],
        )  # fmt: skip
        clusters = TypedResources.extend(
            self._shared_typed(TYPE_CLUSTER, self._outbound_clusters),
            [Resource.of(TYPE_CLUSTER, c.name, c.SerializeToString())
             for c in inbound.inbound_clusters(shape)],
        )  # fmt: skip
        endpoints = self._shared_typed(TYPE_ENDPOINT, self._load_assignments)
        return {TYPE_LISTENER: listeners, TYPE_CLUSTER: clusters, TYPE_ENDPOINT: endpoints}

    def _shared_typed(self, type_url: str, build: Callable[[], list[Resource]]) -> TypedResources:
        found = self._shared.get(type_url)
        if found is None:
            found = self._shared[type_url] = TypedResources.of(type_url, build())
        return found

    def _capture_listener(self, bind: Bind, transparent: bool) -> Resource:
        found = self._capture_listeners.get((bind, transparent))
        if found is None:
            listener = outbound.virtual_outbound_listener(
                bind,
                registry_only=self.snapshot.outbound_policy == "REGISTRY_ONLY",
                transparent=transparent,
            )
            found = self._capture_listeners[(bind, transparent)] = Resource.of(
                TYPE_LISTENER, VIRTUAL_OUTBOUND, listener.SerializeToString()
            )
        return found

    def _service_listener_resources(self) -> list[Resource]:
        resources = []
        for service, port in outbound.outbound_services(self.snapshot):
            key = routes.listener_routes(self.snapshot, service, port)
            build = partial(_service_listener_resource, service, port, key)
            resources.append(self._service_listeners.get_or_build((service, port, key), build))
        return resources

    def _outbound_clusters(self) -> list[Resource]:
        snapshot = self.snapshot
        resources = [*self._static]
        for service in sorted(snapshot.services):
            sans = outbound.peer_identities(snapshot, service)
            for port in service.ports:
                for plan in cluster_policy.cluster_plans(snapshot, service, port.port):
                    build = partial(_cluster_resource, service, port.port, sans, plan)
                    key = (service, port.port, sans, plan)
                    resources.append(self._clusters.get_or_build(key, build))
        return resources

    def _load_assignments(self) -> list[Resource]:
        snapshot = self.snapshot
        resources = []
        for service in sorted(snapshot.services):
            for port in service.ports:
                for plan in cluster_policy.cluster_plans(snapshot, service, port.port):
                    name = subset_cluster_name(port.port, plan.subset, service.hostname)
                    endpoints = outbound.cluster_endpoints(
                        snapshot, service, port.port, plan.labels
                    )
                    build = partial(_assignment_resource, name, endpoints)
                    resources.append(self._assignments.get_or_build((name, endpoints), build))
        return resources


def _service_listener_resource(service: Service, port: int, http_routes: str) -> Resource:
    listener = outbound.service_listener(service, port, http_routes)
    return Resource.of(TYPE_LISTENER, listener.name, listener.SerializeToString())


def _assignment_resource(name: str, endpoints: tuple[tuple[Endpoint, bool], ...]) -> Resource:
    assignment = outbound.load_assignment(name, endpoints)
    return Resource.of(TYPE_ENDPOINT, name, assignment.SerializeToString())


def _cluster_resource(
    service: Service, port: int, sans: tuple[str, ...], plan: cluster_policy.ClusterPlan
) -> Resource:
    cluster = outbound.outbound_cluster(service, port, sans, plan)
    return Resource.of(TYPE_CLUSTER, cluster.name, cluster.SerializeToString())
