"""Serialised resources, built once and shared.

Per-service pieces (a service's outbound listener, cluster and load assignment) are memoised on
exactly the inputs they depend on, so a snapshot in which one service changed rebuilds one
service's pieces. Per type, the outbound resources form one base set per *view*
(`scoping.ProxyView`: what Sidecar scoping, exportTo and selectors make of a proxy; one view
for every proxy when the snapshot has no such configuration); a proxy *shape* adds its own few
(capture and inbound listeners, inbound clusters), so proxies that would get identical bytes
share one object (and the ADS layer compares objects, not bytes). Shapes, base sets and each
shape's sets are carried into the next snapshot and kept where their inputs are unchanged
(`cache_carry`): a VirtualService change recomputes no shape and replaces listener sets only.
Each resource carries its encoded `Any` field ready to splice into a response, and each set its
concatenation, so even a state-of-the-world response is a join of a few ready byte strings
(`resource_sets`). A gateway's sets are assembled in `gateway_resources`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial

from sidemesh.xds import (
    cache_carry,
    cluster_policy,
    gateway,
    inbound,
    outbound,
    routes,
    scoping,
    sidecar_listeners,
    wildcard_listeners,
)
from sidemesh.xds.cache_carry import Carried, SweptMemo
from sidemesh.xds.gateway_resources import gateway_resources
from sidemesh.xds.inbound import ProxyShape, proxy_shape, shape_inputs
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, is_http
from sidemesh.xds.proxy import Bind, ProxyInfo
from sidemesh.xds.resource_names import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    VIRTUAL_INBOUND,
    VIRTUAL_OUTBOUND,
    subset_cluster_name,
)
from sidemesh.xds.resource_sets import (
    TYPE_ORDER,
    Diff,
    Resource,
    TypedResources,
    diff,
)
from sidemesh.xds.telemetry import NO_PLAN
from sidemesh.xds.telemetry_policy import SidePlan

__all__ = ["TYPE_ORDER", "Diff", "Resource", "ResourceCache", "TypedResources", "diff"]

Instances = tuple[tuple[Service, Endpoint], ...]  # what a proxy serves (its inbound side)
log = logging.getLogger("sidemesh.xds.cache")


class ResourceCache:
    def __init__(self, snapshot: MeshSnapshot) -> None:
        self._service_listeners = SweptMemo()
        self._clusters = SweptMemo()
        self._assignments = SweptMemo()
        self._wildcard_listeners = SweptMemo()
        # A shape's inbound listener and clusters: pure functions of it, kept across snapshots
        # (rebuilding them for every shape on every push dominated a VirtualService change).
        self._inbound = SweptMemo()
        self._static = [
            Resource.of(TYPE_CLUSTER, c.name, c.SerializeToString())
            for c in outbound.static_clusters()
        ]
        self._capture_listeners = SweptMemo()
        self._diffs: dict[tuple[TypedResources | None, TypedResources], Diff] = {}
        self._gateway_problems: set[str] = set()  # logged once each
        # Carried into the next snapshot and kept there only if still valid (`cache_carry`):
        # a VirtualService change then recomputes no shape and rebuilds only listener sets.
        self._shapes: Carried[ProxyInfo, tuple[Instances, ProxyShape]] = Carried()
        self._by_shape: Carried[tuple[ProxyShape, scoping.ProxyView],
                                dict[str, TypedResources]] = Carried()  # fmt: skip
        self._shared: Carried[tuple[scoping.ProxyView, str, SidePlan], TypedResources] = Carried()
        self._shape_inputs = shape_inputs(snapshot)
        self._same_instances = False  # every proxy's instances as in the previous snapshot
        self.snapshot = snapshot
        self._reset()

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        previous, self.snapshot = self.snapshot, snapshot
        for memo in (self._service_listeners, self._clusters, self._assignments,
                     self._wildcard_listeners, self._inbound, self._capture_listeners):  # fmt: skip
            memo.sweep()
        inputs = shape_inputs(snapshot)
        self._shapes.roll(keep=inputs == self._shape_inputs)
        self._shape_inputs = inputs
        self._same_instances = (
            snapshot.services is previous.services and snapshot.endpoints is previous.endpoints
        )
        self._by_shape.roll()
        self._shared.roll()
        self._reset()

    def _reset(self) -> None:
        self._views: dict[ProxyInfo, scoping.ProxyView] = {}
        self._scopes: dict[scoping.ProxyView, scoping.Scope] = {}
        self._facts = scoping.ScopingFacts.of(self.snapshot)
        self._gateways: dict[ProxyInfo, dict[str, TypedResources]] = {}
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
            offered = self._shapes.offered(proxy)
            if offered is not None and self._same_instances:
                found = self._shapes.put(proxy, offered)
            else:
                instances = self.snapshot.instances_by_address.get(proxy.ip, ())
                if offered is None or offered[0] != instances:
                    offered = (instances, proxy_shape(self.snapshot, proxy))
                found = self._shapes.put(proxy, offered)
        return found[1]

    def view_of(self, proxy: ProxyInfo) -> scoping.ProxyView:
        found = self._views.get(proxy)
        if found is None:
            found = self._views[proxy] = scoping.view_of(self.snapshot, proxy, self._facts)
        return found

    def scope_of(self, view: scoping.ProxyView) -> scoping.Scope:
        found = self._scopes.get(view)
        if found is None:
            found = self._scopes[view] = scoping.Scope(self.snapshot, view)
        return found

    def resources_for(self, proxy: ProxyInfo) -> dict[str, TypedResources]:
        if gateway.is_router(proxy):
            return self._gateway_resources(proxy)
        key = (self.shape_of(proxy), self.view_of(proxy))
        found = self._by_shape.get(key)
        if found is None:
            found = self._by_shape.put(key, self._build(*key, self._by_shape.offered(key) or {}))
        return found

    def _build(
        self,
        shape: ProxyShape,
        view: scoping.ProxyView,
        previous: Mapping[str, TypedResources],  # the previous snapshot's, kept if still equal
    ) -> dict[str, TypedResources]:
        scope = self.scope_of(view)
        key = (shape, self.snapshot.trust_domain)
        inbound_listeners, inbound_clusters = self._inbound.get_or_build(
            key, partial(_inbound_resources, shape, self.snapshot.trust_domain)
        )
        client = shape.telemetry.client  # the client side's telemetry: part of the key
        listeners = _extended(
            previous.get(TYPE_LISTENER),
            self._shared_typed(scope, TYPE_LISTENER,
                               partial(self._listener_resources, client=client), client),
            [self._capture_listener(shape.outbound_bind, shape.transparent, scope.registry_only),
             *inbound_listeners],
        )  # fmt: skip
        clusters = _extended(
            previous.get(TYPE_CLUSTER),
            self._shared_typed(scope, TYPE_CLUSTER, self._outbound_clusters),
            inbound_clusters,
        )
        endpoints = self._shared_typed(scope, TYPE_ENDPOINT, self._load_assignments)
        return {TYPE_LISTENER: listeners, TYPE_CLUSTER: clusters, TYPE_ENDPOINT: endpoints}

    def _gateway_resources(self, proxy: ProxyInfo) -> dict[str, TypedResources]:
        """A gateway (router): listeners of its own (`xds.gateway`), the mesh's clusters."""
        found = self._gateways.get(proxy)
        if found is None:
            scope = self.scope_of(gateway.without_sidecar(self.view_of(proxy)))
            plan = gateway.plan_gateway(self.snapshot, proxy)
            for problem in plan.skipped:
                if problem not in self._gateway_problems:
                    log.warning("gateway %s/%s: %s", proxy.namespace, proxy.pod_name, problem)
                    self._gateway_problems.add(problem)
            found = self._gateways[proxy] = gateway_resources(
                self.snapshot, proxy, plan,
                clusters=self._shared_typed(scope, TYPE_CLUSTER, self._outbound_clusters),
                endpoints=self._shared_typed(scope, TYPE_ENDPOINT, self._load_assignments),
            )  # fmt: skip
        return found

    def _shared_typed(
        self,
        scope: scoping.Scope,
        type_url: str,
        build: Callable[[scoping.Scope], list[Resource]],
        client: SidePlan = NO_PLAN,
    ) -> TypedResources:
        """A view's base set of one type; listeners also differ by the client side's telemetry
        plan (`client`): proxies with equal views and plans share one object."""
        key = (scope.view, type_url, client)
        found = self._shared.get(key)
        if found is None:
            resources = build(scope)
            offered = self._shared.offered(key)
            if offered is None or not cache_carry.same_set(offered, resources):
                offered = TypedResources.of(type_url, resources)
            found = self._shared.put(key, offered)
        return found

    def _capture_listener(self, bind: Bind, transparent: bool, registry_only: bool) -> Resource:
        build = partial(_capture_listener_resource, bind, transparent, registry_only)
        found: Resource = self._capture_listeners.get_or_build((bind, transparent, registry_only),
                                                               build)  # fmt: skip
        return found

    def _listener_resources(
        self, scope: scoping.Scope, *, client: SidePlan = NO_PLAN
    ) -> list[Resource]:
        resources = []
        for service, port in outbound.outbound_services(scope):
            key = routes.listener_routes(scope, service, port)
            build = partial(_service_listener_resource, service, port, key, client)
            memo_key = (service, port, key, client)
            resources.append(self._service_listeners.get_or_build(memo_key, build))
        registry_only = scope.registry_only
        for port, hosts in sorted(wildcard_listeners.wildcard_hosts(scope).items()):
            wildcard_key = (port, tuple(hosts), registry_only, client)
            build = partial(_wildcard_listener_resource, port, tuple(hosts), registry_only, client)
            resources.append(self._wildcard_listeners.get_or_build(wildcard_key, build))
        # a Sidecar's egress listeners with a bind or captureMode NONE (built once per view)
        bound = sidecar_listeners.bound_egress_listeners(scope, client).listeners
        resources += [Resource.of(TYPE_LISTENER, b.name, b.SerializeToString()) for b in bound]
        return resources

    def _outbound_clusters(self, scope: scoping.Scope) -> list[Resource]:
        snapshot = self.snapshot
        resources = [*self._static]
        for service in scope.services:
            sans = outbound.peer_identities(snapshot, service)
            for port in service.ports:
                for plan in cluster_policy.cluster_plans(scope, service, port.port):
                    dns = () if outbound.uses_eds(service) else outbound.cluster_endpoints(
                        snapshot, service, port.port, plan.labels)  # fmt: skip
                    build = partial(_cluster_resource, service, port.port, sans, plan, dns)
                    key = (service, port.port, sans, plan, dns)
                    resources.append(self._clusters.get_or_build(key, build))
        return resources

    def _load_assignments(self, scope: scoping.Scope) -> list[Resource]:
        snapshot = self.snapshot
        resources = []
        for service in scope.services:
            if not outbound.uses_eds(service):
                continue
            for port in service.ports:
                for plan in cluster_policy.cluster_plans(scope, service, port.port):
                    name = subset_cluster_name(port.port, plan.subset, service.hostname)
                    endpoints = outbound.cluster_endpoints(
                        snapshot, service, port.port, plan.labels
                    )
                    tcp = not is_http(port.protocol)  # TCP series name the workload
                    build = partial(_assignment_resource, name, endpoints, tcp)
                    key = (name, endpoints, tcp)
                    resources.append(self._assignments.get_or_build(key, build))
        return resources


def _extended(
    old: TypedResources | None, base: TypedResources, own: list[Resource]
) -> TypedResources:
    """`TypedResources.extend(base, own)`, or `old` if that is what it would be."""
    if old is not None and cache_carry.same_extension(old, base, own):
        return old
    return TypedResources.extend(base, own)


def _capture_listener_resource(bind: Bind, transparent: bool, registry_only: bool) -> Resource:
    listener = outbound.virtual_outbound_listener(
        bind, registry_only=registry_only, transparent=transparent
    )
    return Resource.of(TYPE_LISTENER, VIRTUAL_OUTBOUND, listener.SerializeToString())


def _service_listener_resource(
    service: Service, port: int, http_routes: str, client: SidePlan
) -> Resource:
    listener = outbound.service_listener(service, port, http_routes, client)
    return Resource.of(TYPE_LISTENER, listener.name, listener.SerializeToString())


def _assignment_resource(
    name: str, endpoints: tuple[tuple[Endpoint, bool], ...], tcp: bool
) -> Resource:
    assignment = outbound.load_assignment(name, endpoints, workload_labels=tcp)
    return Resource.of(TYPE_ENDPOINT, name, assignment.SerializeToString())


def _inbound_resources(
    shape: ProxyShape, trust_domain: str
) -> tuple[list[Resource], list[Resource]]:
    listener = inbound.inbound_listener(shape, trust_domain)
    # a Sidecar's ingress listeners with captureMode NONE: bound listeners of their own
    bound = [Resource.of(TYPE_LISTENER, b.name, b.SerializeToString())
             for b in inbound.bound_inbound_listeners(shape, trust_domain)]  # fmt: skip
    clusters = [Resource.of(TYPE_CLUSTER, c.name, c.SerializeToString())
                for c in inbound.inbound_clusters(shape)]  # fmt: skip
    virtual = Resource.of(TYPE_LISTENER, VIRTUAL_INBOUND, listener.SerializeToString())
    return [virtual, *bound], clusters


def _wildcard_listener_resource(
    port: int,
    hosts: tuple[wildcard_listeners.WildcardHost, ...],
    registry_only: bool,
    client: SidePlan,
) -> Resource:
    listener = wildcard_listeners.wildcard_listener(
        port, hosts, registry_only=registry_only, telemetry=client
    )
    return Resource.of(TYPE_LISTENER, listener.name, listener.SerializeToString())


def _cluster_resource(
    service: Service,
    port: int,
    sans: tuple[str, ...],
    plan: cluster_policy.ClusterPlan,
    dns: tuple[tuple[Endpoint, bool], ...],
) -> Resource:
    cluster = outbound.outbound_cluster(service, port, sans, plan, dns)
    return Resource.of(TYPE_CLUSTER, cluster.name, cluster.SerializeToString())
