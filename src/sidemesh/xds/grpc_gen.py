"""Resources for proxyless gRPC clients: Istio's `grpc` generator, in gRFC A27's shape.

A gRPC library (its xDS resolver, target `xds:///HOST:PORT`) is no Envoy: it asks for
resources *by name* and understands a subset of Envoy's API. So a node whose metadata says
`GENERATOR: grpc` gets, instead of the sidecar's capture listeners, only what it names:

* Listener `HOST:PORT` (the name as asked; HOST may be a short name, `name.namespace`, …,
  resolved as Istio does against the client's namespace): an *API listener* — no address, no
  filter chains — holding an HttpConnectionManager whose route configuration is inline (one
  round trip fewer than RDS, which gRPC accepts) and whose HTTP filters end with the router;
  its routes are the sidecar's own (`routes.http_routes`: VirtualService matches, weights,
  subsets, retries, faults), as Istio builds them for gRPC too;
* Cluster `outbound|PORT|SUBSET|HOST`: EDS over ADS, the DestinationRule's load balancer
  (round robin, ring hash, least request) and circuit breaker; mTLS only where the rule asks
  for ISTIO_MUTUAL (a gRPC client may not use xDS credentials, and cannot talk to a PERMISSIVE
  server otherwise), with the certificates from the bootstrap's `default` certificate provider;
* ClusterLoadAssignment of those clusters: ready endpoints in one locality of weight 1 (gRPC
  ignores localities without a weight);
* a gRPC *server's* own listener `xds.istio.io/grpc/lds/inbound/IP:PORT` (`grpc_gen_inbound`).

Pure: (snapshot, proxy, the names asked per type) in, `TypedResources` out, memoised per
snapshot on (view, namespace, names), so every gRPC client in one position shares the same
objects and an unchanged answer is recognised by identity. The ADS layer hooks it in for such
nodes (`ads.AdsServer._resources_of`) and answers LDS/CDS asked by name with every subscribed
resource each time (`responses.sotw_payload`): gRPC drops what such an answer leaves out.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401  (registers type)
from google.protobuf import json_format

from sidemesh.xds import cluster_policy, grpc_gen_inbound, outbound, routes, scoping
from sidemesh.xds.cluster_policy import UPSTREAM_TLS, ClusterPlan
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.model import MeshSnapshot, Service
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.resource_names import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    subset_cluster_name,
)
from sidemesh.xds.resource_sets import Resource, TypedResources

GRPC_GENERATOR: Final = "grpc"
# The bootstrap's certificate provider instance (agent/grpc_bootstrap.py writes it).
CERTIFICATE_PROVIDER: Final = "default"
# What gRPC's xDS client can balance with; anything else falls back to its default.
GRPC_LB_POLICIES: Final = frozenset({"ROUND_ROBIN", "RING_HASH", "LEAST_REQUEST"})
_HCM: Final = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_TYPES: Final = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER)

# Type URL → the names asked. None is what the ADS layer makes of an LDS/CDS request naming
# nothing (a wildcard, for Envoy); gRPC never asks for a wildcard, and names nothing only when
# it stops watching every resource of the type, so for gRPC None means no resources.
Subscriptions = Mapping[str, frozenset[str] | None]


def is_grpc(proxy: ProxyInfo) -> bool:
    """Whether the node is a gRPC library (its bootstrap's metadata `GENERATOR: grpc`)."""
    return proxy.generator == GRPC_GENERATOR


def split_target(name: str) -> tuple[str, int] | None:
    """`HOST:PORT` → (HOST, PORT); None for anything else (a bare host has no port to route)."""
    host, colon, port = name.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def resolve_service(scope: scoping.Scope, host: str, namespace: str) -> Service | None:
    """The service a client's HOST means, as Istio expands it: the name itself, else a short
    name (`reviews`) or `name.namespace` / `name.namespace.svc` completed with the domain."""
    by_host = scope.services_by_host
    found = by_host.get(host)
    if found is not None:
        return found
    domains = {s.domain for s in scope.services}
    for domain in sorted(domains):
        dots = host.count(".")
        if dots == 0:
            candidate = f"{host}.{namespace}.svc.{domain}"
        elif dots == 1:
            candidate = f"{host}.svc.{domain}"
        elif dots == 2 and host.endswith(".svc"):
            candidate = f"{host}.{domain}"
        else:
            continue
        found = by_host.get(candidate)
        if found is not None:
            return found
    return None


def api_listener(name: str, service: Service, port: int, scope: scoping.Scope) -> Any:
    """The API listener `name` for a service port: its routes inline, fault then router."""
    found = routes.http_routes(scope, service, port)
    default_cluster = subset_cluster_name(port, "", service.hostname)
    route_list = found if found is not None else [
        {"match": {"prefix": "/"}, "route": {"cluster": default_cluster}}
    ]  # fmt: skip
    http_filters = [
        {"name": routes.FAULT_FILTER,
         "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault")},
        {"name": "envoy.filters.http.router",
         "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")},
    ]  # fmt: skip
    route_config = {
        "name": name,
        # The listener is this host:port's alone: every authority the client uses is it.
        "virtual_hosts": [{"name": default_cluster, "domains": ["*"], "routes": route_list}],
    }
    manager = typed(_HCM, stat_prefix=default_cluster, route_config=route_config,
                    http_filters=http_filters)  # fmt: skip
    listener = {"name": name, "api_listener": {"api_listener": manager}}
    return json_format.ParseDict(listener, listener_pb2.Listener())


def _plan(scope: scoping.Scope, service: Service, port: int, subset: str) -> ClusterPlan | None:
    return next((p for p in cluster_policy.cluster_plans(scope, service, port)
                 if p.subset == subset), None)  # fmt: skip


def parse_cluster_name(name: str) -> tuple[int, str, str] | None:
    """`outbound|PORT|SUBSET|HOST` → (PORT, SUBSET, HOST), else None."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound" or not parts[1].isdigit() or not parts[3]:
        return None
    return int(parts[1]), parts[2], parts[3]


def upstream_tls(peer_sans: tuple[str, ...]) -> dict[str, Any]:
    """gRPC's client mTLS (gRFC A29): certificate and roots from the bootstrap's provider,
    the server's SPIFFE identity checked when the mesh knows it."""
    validation: dict[str, Any] = {
        "ca_certificate_provider_instance": {"instance_name": CERTIFICATE_PROVIDER},
    }
    if peer_sans:
        validation["match_subject_alt_names"] = [{"exact": san} for san in peer_sans]
    context = typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        common_tls_context={
            "tls_certificate_provider_instance": {"instance_name": CERTIFICATE_PROVIDER},
            "validation_context": validation,
        },
    )
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def grpc_cluster(
    name: str, service: Service, port: int, plan: ClusterPlan, snapshot: MeshSnapshot
) -> Any:
    """An EDS cluster gRPC accepts, with what of the DestinationRule gRPC can honour."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {
            "eds_config": {"ads": {}, "resource_api_version": "V3"},
            "service_name": name,
        },
    }
    fields = plan.cluster_fields
    if fields.get("lb_policy") in GRPC_LB_POLICIES:
        cluster["lb_policy"] = fields["lb_policy"]
        if "ring_hash_lb_config" in fields:
            cluster["ring_hash_lb_config"] = fields["ring_hash_lb_config"]
    if "circuit_breakers" in fields:
        cluster["circuit_breakers"] = fields["circuit_breakers"]
    tls = fields.get(UPSTREAM_TLS)
    if tls is not None and tls.get("mode") == "ISTIO_MUTUAL":
        sans = tuple(tls.get("subject_alt_names") or outbound.peer_identities(snapshot, service))
        cluster["transport_socket"] = upstream_tls(sans)
    return json_format.ParseDict(cluster, cluster_pb2.Cluster())


def grpc_assignment(name: str, service: Service, port: int, plan: ClusterPlan,
                    snapshot: MeshSnapshot) -> Any:  # fmt: skip
    """The ready endpoints of a cluster, in one locality of weight 1."""
    endpoints = outbound.cluster_endpoints(snapshot, service, port, plan.labels)
    assignment = outbound.load_assignment_dict(name, endpoints)
    localities = [
        {**locality, "locality": {}, "load_balancing_weight": 1}
        for locality in assignment["endpoints"]
        if locality["lb_endpoints"]
    ]
    assignment["endpoints"] = localities
    return json_format.ParseDict(assignment, endpoint_pb2.ClusterLoadAssignment())


class GrpcGenerator:
    """Answers gRPC clients from one snapshot at a time; memoised until the snapshot changes."""

    def __init__(self) -> None:
        self._snapshot: MeshSnapshot | None = None
        self._memo: dict[tuple[Any, ...], TypedResources] = {}
        self._scopes: dict[scoping.ProxyView, scoping.Scope] = {}
        self._facts: scoping.ScopingFacts | None = None

    def resources_for(
        self, snapshot: MeshSnapshot, proxy: ProxyInfo, subscriptions: Subscriptions
    ) -> dict[str, TypedResources]:
        """Every type's resources among the names `subscriptions` asks (absent type: none)."""
        if snapshot is not self._snapshot or len(self._memo) > 10_000:
            self._snapshot = snapshot
            self._memo = {}  # bounded: subscriptions are the clients' choice
            self._scopes = {}
            self._facts = scoping.ScopingFacts.of(snapshot)
        view = scoping.view_of(snapshot, proxy, self._facts)
        scope = self._scopes.get(view)
        if scope is None:
            scope = self._scopes[view] = scoping.Scope(snapshot, view)
        found: dict[str, TypedResources] = {}
        for type_url in _TYPES:
            names = subscriptions.get(type_url) or frozenset()
            # A server's own listener depends on the pod (its address, labels), not its view.
            own = any(map(grpc_gen_inbound.is_server_listener, names))
            key = (type_url, view, proxy.namespace, names, (proxy.ip, proxy.labels) if own else ())
            typed_resources = self._memo.get(key)
            if typed_resources is None:
                built = _BUILDERS[type_url](scope, proxy, names)
                typed_resources = self._memo[key] = TypedResources.of(type_url, built)
            found[type_url] = typed_resources
        return found


def build_listeners(
    scope: scoping.Scope, proxy: ProxyInfo, names: frozenset[str]
) -> list[Resource]:
    """The listeners asked for: clients' `HOST:PORT`, and a gRPC server's own
    (`grpc_gen_inbound`)."""
    resources = []
    for name in sorted(names):
        if grpc_gen_inbound.is_server_listener(name):
            inbound = grpc_gen_inbound.server_listener(name, scope.snapshot, proxy)
            if inbound is not None:
                resources.append(Resource.of(TYPE_LISTENER, name, inbound.SerializeToString()))
            continue
        target = split_target(name)
        service = None if target is None else resolve_service(scope, target[0], proxy.namespace)
        if target is None or service is None or service.port(target[1]) is None:
            continue  # not in this client's mesh: left out, which tells gRPC it does not exist
        listener = api_listener(name, service, target[1], scope)
        resources.append(Resource.of(TYPE_LISTENER, name, listener.SerializeToString()))
    return resources


def _cluster_targets(
    scope: scoping.Scope, names: frozenset[str]
) -> list[tuple[str, Service, int, ClusterPlan]]:
    targets = []
    for name in sorted(names):
        parsed = parse_cluster_name(name)
        if parsed is None:
            continue
        port, subset, host = parsed
        service = scope.services_by_host.get(host)
        if service is None or service.port(port) is None or not outbound.uses_eds(service):
            continue  # gRPC resolves endpoints only through EDS
        plan = _plan(scope, service, port, subset)
        if plan is not None:
            targets.append((name, service, port, plan))
    return targets


def build_clusters(scope: scoping.Scope, proxy: ProxyInfo, names: frozenset[str]) -> list[Resource]:
    snapshot = scope.snapshot
    return [
        Resource.of(TYPE_CLUSTER, name,
                    grpc_cluster(name, service, port, plan, snapshot).SerializeToString())
        for name, service, port, plan in _cluster_targets(scope, names)
    ]  # fmt: skip


def build_assignments(
    scope: scoping.Scope, proxy: ProxyInfo, names: frozenset[str]
) -> list[Resource]:
    snapshot = scope.snapshot
    return [
        Resource.of(TYPE_ENDPOINT, name,
                    grpc_assignment(name, service, port, plan, snapshot).SerializeToString())
        for name, service, port, plan in _cluster_targets(scope, names)
    ]  # fmt: skip


_BUILDERS = {
    TYPE_LISTENER: build_listeners,
    TYPE_CLUSTER: build_clusters,
    TYPE_ENDPOINT: build_assignments,
}
