"""Envoy resources for one sidecar: pure functions of (mesh snapshot, proxy).

Resources are written as Envoy's own JSON/YAML shape (dicts) and parsed into typed protobufs,
so each reads like the Envoy docs. Per-service pieces take only what they depend on (hashable,
frozen inputs), so `cache.py` can memoise them across snapshots and proxies and encode each one
once for every proxy.

Traffic shape (Istio's): `outbound` — the small capture listener `virtualOutbound` (15001) plus
one `bind_to_port: false` listener per service VIP:port that Envoy hands connections to by their
original destination; `inbound` — `virtualInbound` (15006) with mTLS/plaintext chains per port.
This module is the reference assembly `cache.py` must agree with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidemesh.xds import (
    cluster_policy,
    gateway,
    inbound,
    outbound,
    routes,
    scoping,
    sidecar_listeners,
    wildcard_listeners,
)
from sidemesh.xds.inbound import ProxyShape as ProxyShape
from sidemesh.xds.inbound import proxy_shape as proxy_shape
from sidemesh.xds.model import MeshSnapshot, is_http
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.resource_names import TYPE_CLUSTER as TYPE_CLUSTER
from sidemesh.xds.resource_names import TYPE_ENDPOINT as TYPE_ENDPOINT
from sidemesh.xds.resource_names import TYPE_LISTENER as TYPE_LISTENER
from sidemesh.xds.resource_names import VIRTUAL_INBOUND as VIRTUAL_INBOUND
from sidemesh.xds.resource_names import VIRTUAL_OUTBOUND as VIRTUAL_OUTBOUND
from sidemesh.xds.resource_names import subset_cluster_name


@dataclass(frozen=True)
class GeneratedResources:
    listeners: tuple[Any, ...]
    clusters: tuple[Any, ...]
    load_assignments: tuple[Any, ...]


def generate(snapshot: MeshSnapshot, proxy: ProxyInfo) -> GeneratedResources:
    """All resources for one proxy, uncached (the reference `cache.py` must agree with)."""
    shape = proxy_shape(snapshot, proxy)
    view = scoping.view_of(snapshot, proxy)
    if gateway.is_router(proxy):
        view = gateway.without_sidecar(view)
    scope = scoping.Scope(snapshot, view)  # what this proxy sees
    capture = outbound.virtual_outbound_listener(
        shape.outbound_bind,
        registry_only=scope.registry_only,
        transparent=shape.transparent,
    )
    client = shape.telemetry.client  # the client side's access logs, tracing, metrics
    per_service = [
        outbound.service_listener(s, p, routes.listener_routes(scope, s, p), client)
        for s, p in outbound.outbound_services(scope)
    ]
    per_port = [
        wildcard_listeners.wildcard_listener(
            port, hosts, registry_only=scope.registry_only, telemetry=client
        )
        for port, hosts in sorted(wildcard_listeners.wildcard_hosts(scope).items())
    ]
    services = scope.services
    clusters = [
        outbound.outbound_cluster(
            s, p.port, outbound.peer_identities(snapshot, s), plan,
            () if outbound.uses_eds(s) else outbound.cluster_endpoints(snapshot, s, p.port,
                                                                       plan.labels),
        )
        for s in services
        for p in s.ports
        for plan in cluster_policy.cluster_plans(scope, s, p.port)
    ]  # fmt: skip
    assignments = [
        outbound.load_assignment(
            subset_cluster_name(p.port, plan.subset, s.hostname),
            outbound.cluster_endpoints(snapshot, s, p.port, plan.labels),
            workload_labels=not is_http(p.protocol),  # TCP series name the workload
        )
        for s in services
        if outbound.uses_eds(s)
        for p in s.ports
        for plan in cluster_policy.cluster_plans(scope, s, p.port)
    ]
    if gateway.is_router(proxy):  # a gateway: its Gateways' listeners, the mesh's clusters
        return GeneratedResources(
            listeners=tuple(gateway.gateway_listeners(snapshot, proxy)),
            clusters=(*clusters, *outbound.static_clusters()),
            load_assignments=tuple(assignments),
        )
    return GeneratedResources(
        listeners=(
            capture,
            inbound.inbound_listener(shape, snapshot.trust_domain),
            *inbound.bound_inbound_listeners(shape, snapshot.trust_domain),
            *per_service,
            *per_port,
            *sidecar_listeners.bound_egress_listeners(scope, client).listeners,
        ),
        clusters=(*clusters, *outbound.static_clusters(), *inbound.inbound_clusters(shape)),
        load_assignments=tuple(assignments),
    )
