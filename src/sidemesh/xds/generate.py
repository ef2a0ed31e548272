"""Envoy resources for one sidecar: pure functions of (mesh snapshot, proxy).

Resources are written as Envoy's own JSON/YAML shape (dicts) and parsed into typed protobufs,
so each reads like the Envoy docs. Per-service pieces take only what they depend on (hashable,
frozen inputs), so `cache.py` can memoise them across snapshots and proxies.

Traffic shape (Istio's): outbound `virtualOutbound` (15001) with one filter chain per service
VIP:port and a default chain to PassthroughCluster (ALLOW_ANY) or BlackHoleCluster
(REGISTRY_ONLY); inbound `virtualInbound` (15006) with, per port, a TLS chain (SDS `default` +
`ROOTCA`, client certificate required) and in PERMISSIVE a plaintext chain too; the app is
reached on 127.0.0.1:<port> (see `INBOUND_FORWARD_ADDRESS`).
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from sidemesh.security.identity import SpiffeId
from sidemesh.xds.envoy_json import (
    CONNECT_TIMEOUT,
    ORIGINAL_DST,
    TLS_INSPECTOR,
    TLS_MODE_ISTIO,
    TLS_MODE_KEY,
    common_tls_context,
    http2_protocol_options,
    http_connection_manager,
    socket_address,
    tcp_proxy,
    typed,
)
from sidemesh.xds.model import Endpoint, MeshSnapshot, MtlsMode, Protocol, Service, is_http
from sidemesh.xds.proxy import Bind, ProxyInfo

TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
# Pre-1.10 Istio forwarding: the app is reached on loopback. Chosen because it works the same
# in every runtime we have: with iptables capture (the proxy's uid is exempt, loopback is not
# redirected) and without it, where the sidecar binds the pod address and the app loopback
# (the single-host tests). The price: an app bound only to 127.0.0.1 is reachable from the mesh.
INBOUND_FORWARD_ADDRESS = "127.0.0.1"


def outbound_cluster_name(port: int, hostname: str) -> str:
    return f"outbound|{port}||{hostname}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


@dataclass(frozen=True, order=True)
class InboundPort:
    port: int
    protocol: Protocol
    mode: MtlsMode


@dataclass(frozen=True)
class ProxyShape:
    """Everything about a proxy that its resources depend on; equal shapes, equal bytes."""

    inbound: tuple[InboundPort, ...]
    default_mode: MtlsMode
    outbound_bind: Bind
    inbound_bind: Bind


def proxy_shape(snapshot: MeshSnapshot, proxy: ProxyInfo) -> ProxyShape:
    labels = proxy.label_map
    ports: dict[int, InboundPort] = {}
    for service, endpoint in snapshot.instances_by_address.get(proxy.ip, ()):
        if endpoint.namespace and endpoint.namespace != proxy.namespace:
            continue
        service_port = service.port(endpoint.service_port)
        if service_port is None or endpoint.port in ports:
            continue  # first service wins a shared target port
        mode = snapshot.mtls_mode(proxy.namespace, labels, endpoint.port)
        ports[endpoint.port] = InboundPort(endpoint.port, service_port.protocol, mode)
    return ProxyShape(
        inbound=tuple(sorted(ports.values())),
        default_mode=snapshot.mtls_mode(proxy.namespace, labels, None),
        outbound_bind=proxy.outbound_bind,
        inbound_bind=proxy.inbound_bind,
    )


# --- outbound --------------------------------------------------------------------------------


def service_domains(service: Service, port: int) -> list[str]:
    short = [service.hostname, f"{service.name}.{service.namespace}.svc",
             f"{service.name}.{service.namespace}", service.name]  # fmt: skip
    if service.vip:
        short.append(service.vip)
    return [d for host in short for d in (host, f"{host}:{port}")]


def outbound_filter_chain(service: Service, port: int) -> Any:
    """The chain for traffic to VIP:port (None for headless services)."""
    service_port = service.port(port)
    assert service_port is not None and service.vip is not None
    cluster = outbound_cluster_name(port, service.hostname)
    if is_http(service_port.protocol):
        # Traffic to the VIP belongs to the service whatever Host it carries.
        routes = [(service_domains(service, port), cluster), (["*"], cluster)]
        filters = [http_connection_manager(cluster, routes)]
    else:
        filters = [tcp_proxy(cluster)]
    chain = {
        "name": cluster,
        "filter_chain_match": {
            "prefix_ranges": [{"address_prefix": service.vip, "prefix_len": 32}],
            "destination_port": port,
        },
        "filters": filters,
    }
    return json_format.ParseDict(chain, listener_components_pb2.FilterChain())


def outbound_listener(chains: Iterable[Any], bind: Bind, registry_only: bool) -> Any:
    listener = json_format.ParseDict(
        {
            "name": VIRTUAL_OUTBOUND,
            "address": socket_address(bind.address, bind.port),
            "use_original_dst": True,
            "traffic_direction": "OUTBOUND",
            "listener_filters": [ORIGINAL_DST],
            "default_filter_chain": {
                "name": BLACKHOLE if registry_only else PASSTHROUGH,
                "filters": [tcp_proxy(BLACKHOLE if registry_only else PASSTHROUGH)],
            },
        },
        listener_pb2.Listener(),
    )
    listener.filter_chains.extend(chains)
    return listener


def outbound_services(snapshot: MeshSnapshot) -> list[tuple[Service, int]]:
    """(service, port) pairs that get a chain: VIP services, first owner of a VIP:port."""
    seen: set[tuple[str, int]] = set()
    pairs = []
    for service in sorted(snapshot.services):
        if not service.vip:
            continue
        for service_port in service.ports:
            key = (service.vip, service_port.port)
            if key not in seen:
                seen.add(key)
                pairs.append((service, service_port.port))
    return pairs


def peer_identities(snapshot: MeshSnapshot, service: Service) -> tuple[str, ...]:
    return tuple(sorted({
        SpiffeId(snapshot.trust_domain, e.namespace or service.namespace, e.service_account).uri
        for e in snapshot.endpoints.get(service.hostname, ())
        if e.has_sidecar
    }))  # fmt: skip


def outbound_cluster(service: Service, port: int, peer_sans: tuple[str, ...]) -> Any:
    service_port = service.port(port)
    assert service_port is not None
    name = outbound_cluster_name(port, service.hostname)
    upstream_tls = typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        sni=f"outbound_.{port}_._.{service.hostname}",
        common_tls_context=common_tls_context(
            [{"san_type": "URI", "matcher": {"exact": san}} for san in peer_sans]
        ),
    )
    cluster: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "eds_cluster_config": {
            "eds_config": {"ads": {}, "resource_api_version": "V3"},
            "service_name": name,
        },
        "transport_socket_matches": [
            {
                "name": "tlsMode-istio",
                "match": {TLS_MODE_KEY: TLS_MODE_ISTIO},
                "transport_socket": {"name": "envoy.transport_sockets.tls",
                                     "typed_config": upstream_tls},
            },
            {
                "name": "tlsMode-disabled",
                "match": {},
                "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": typed(
                        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                    ),
                },
            },
        ],
    }  # fmt: skip
    if service_port.protocol in ("HTTP2", "GRPC"):
        cluster["typed_extension_protocol_options"] = http2_protocol_options()
    return json_format.ParseDict(cluster, cluster_pb2.Cluster())


def static_clusters() -> list[Any]:
    passthrough = {
        "name": PASSTHROUGH, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT,
    }  # fmt: skip
    inbound_passthrough = {**passthrough, "name": INBOUND_PASSTHROUGH}
    blackhole = {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT}
    return [json_format.ParseDict(c, cluster_pb2.Cluster())
            for c in (passthrough, inbound_passthrough, blackhole)]  # fmt: skip


def endpoint_tls(snapshot: MeshSnapshot, endpoint: Endpoint, namespace: str) -> bool:
    """Auto mTLS: talk TLS to an endpoint that has a sidecar whose policy is not DISABLE."""
    if not endpoint.has_sidecar:
        return False
    mode = snapshot.mtls_mode(endpoint.namespace or namespace, endpoint.label_map, endpoint.port)
    return mode != "DISABLE"


def load_assignment(cluster_name: str, endpoints: Sequence[tuple[Endpoint, bool]]) -> Any:
    lb_endpoints = []
    for endpoint, tls in endpoints:
        entry: dict[str, Any] = {
            "endpoint": {"address": socket_address(endpoint.address, endpoint.port)},
            "health_status": "HEALTHY",
        }
        if tls:
            entry["metadata"] = {
                "filter_metadata": {"envoy.transport_socket_match": {TLS_MODE_KEY: TLS_MODE_ISTIO}}
            }
        lb_endpoints.append(entry)
    assignment = {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": lb_endpoints}]}
    return json_format.ParseDict(assignment, endpoint_pb2.ClusterLoadAssignment())


def cluster_endpoints(
    snapshot: MeshSnapshot, service: Service, port: int
) -> tuple[tuple[Endpoint, bool], ...]:
    """Ready endpoints of a service port and whether each is reached over mTLS."""
    return tuple(
        (e, endpoint_tls(snapshot, e, service.namespace))
        for e in sorted(snapshot.endpoints_for(service.hostname, port))
        if e.ready
    )


# --- inbound ---------------------------------------------------------------------------------


def _inbound_chains(
    port: int | None, protocol: Protocol, mode: MtlsMode, trust_domain: str
) -> list[dict[str, Any]]:
    cluster = inbound_cluster_name(port) if port is not None else INBOUND_PASSTHROUGH

    def filters(tls: bool) -> list[dict[str, Any]]:
        if not is_http(protocol):
            return [tcp_proxy(cluster)]
        # Over mTLS the app learns the caller's SPIFFE id; plaintext callers cannot forge it.
        xfcc: dict[str, Any] = (
            {"forward_client_cert_details": "APPEND_FORWARD",
             "set_current_client_cert_details": {"uri": True}}
            if tls else {"forward_client_cert_details": "SANITIZE"}
        )  # fmt: skip
        return [http_connection_manager(cluster, [(["*"], cluster)], **xfcc)]

    match: dict[str, Any] = {"destination_port": port} if port is not None else {}
    downstream_tls = typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        require_client_certificate=True,
        common_tls_context=common_tls_context(
            [{"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}]
        ),
    )
    name = cluster
    chains: list[dict[str, Any]] = []
    if mode in ("STRICT", "PERMISSIVE"):
        chains.append({
            "name": f"{name}-mtls",
            "filter_chain_match": {**match, "transport_protocol": "tls"},
            "transport_socket": {"name": "envoy.transport_sockets.tls",
                                 "typed_config": downstream_tls},
            "filters": filters(tls=True),
        })  # fmt: skip
    if mode == "PERMISSIVE":
        chains.append({
            "name": f"{name}-plaintext",
            "filter_chain_match": {**match, "transport_protocol": "raw_buffer"},
            "filters": filters(tls=False),
        })  # fmt: skip
    if mode == "DISABLE":
        chains.append({"name": name, "filter_chain_match": match, "filters": filters(tls=False)})
    return chains


def inbound_listener(shape: ProxyShape, trust_domain: str) -> Any:
    chains = []
    for inbound in shape.inbound:
        chains += _inbound_chains(inbound.port, inbound.protocol, inbound.mode, trust_domain)
    chains += _inbound_chains(None, "TCP", shape.default_mode, trust_domain)
    listener = {
        "name": VIRTUAL_INBOUND,
        "address": socket_address(shape.inbound_bind.address, shape.inbound_bind.port),
        "use_original_dst": True,
        "traffic_direction": "INBOUND",
        "listener_filters": [ORIGINAL_DST, TLS_INSPECTOR],
        "filter_chains": chains,
    }
    return json_format.ParseDict(listener, listener_pb2.Listener())


def inbound_clusters(shape: ProxyShape) -> list[Any]:
    clusters = []
    for inbound in shape.inbound:
        name = inbound_cluster_name(inbound.port)
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": socket_address(INBOUND_FORWARD_ADDRESS, inbound.port)}}
                ]}],
            },
        }  # fmt: skip
        if inbound.protocol in ("HTTP2", "GRPC"):
            cluster["typed_extension_protocol_options"] = http2_protocol_options()
        clusters.append(json_format.ParseDict(cluster, cluster_pb2.Cluster()))
    return clusters


# --- everything for one proxy ----------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedResources:
    listeners: tuple[Any, ...]
    clusters: tuple[Any, ...]
    load_assignments: tuple[Any, ...]


def generate(snapshot: MeshSnapshot, proxy: ProxyInfo) -> GeneratedResources:
    """All resources for one proxy, uncached (the reference `cache.py` must agree with)."""
    shape = proxy_shape(snapshot, proxy)
    pairs = outbound_services(snapshot)
    outbound = outbound_listener(
        [outbound_filter_chain(s, p) for s, p in pairs],
        shape.outbound_bind,
        snapshot.outbound_policy == "REGISTRY_ONLY",
    )
    clusters = [
        outbound_cluster(s, p.port, peer_identities(snapshot, s))
        for s in sorted(snapshot.services)
        for p in s.ports
    ]
    assignments = [
        load_assignment(
            outbound_cluster_name(p.port, s.hostname), cluster_endpoints(snapshot, s, p.port)
        )
        for s in sorted(snapshot.services)
        for p in s.ports
    ]
    return GeneratedResources(
        listeners=(outbound, inbound_listener(shape, snapshot.trust_domain)),
        clusters=(*clusters, *static_clusters(), *inbound_clusters(shape)),
        load_assignments=tuple(assignments),
    )
