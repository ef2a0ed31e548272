"""Outbound resources: the capture listener, one listener per service VIP:port, and the clusters
and load assignments behind them. Pure functions of small frozen inputs, memoised by `cache.py`.

Istio's layout. `virtualOutbound` (15001, `use_original_dst`) holds no per-service chains: a
default chain to PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY), and one
that blackholes connections whose original destination is the capture port itself (a loop).
Envoy hands each captured connection to the listener bound (`bind_to_port: false`) to its
original destination, so every service VIP:port is a listener of its own, `<VIP>_<port>`, and a
service change touches only that service's listeners and clusters, never a shared resource.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from sidemesh.api.telemetry import peer
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.cluster_policy import DEFAULT_PLAN, UPSTREAM_TLS, ClusterPlan
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
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, is_http
from sidemesh.xds.proxy import Bind
from sidemesh.xds.resource_names import (
    BLACKHOLE,
    INBOUND_PASSTHROUGH,
    PASSTHROUGH,
    VIRTUAL_OUTBOUND,
    outbound_cluster_name,
    service_listener_name,
    subset_cluster_name,
)
from sidemesh.xds.routes import FAULT_FILTER
from sidemesh.xds.scoping import Scope
from sidemesh.xds.telemetry import (
    NO_PLAN,
    cluster_metadata,
    endpoint_metadata,
    outbound_http,
    outbound_tcp,
)
from sidemesh.xds.telemetry_policy import SidePlan

INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"


def virtual_outbound_listener(bind: Bind, *, registry_only: bool, transparent: bool) -> Any:
    """The capture listener. `transparent` (TPROXY interception) makes Envoy take the accepted
    socket's own address as the original destination, so hand-off works without NAT."""
    default = BLACKHOLE if registry_only else PASSTHROUGH
    listener: dict[str, Any] = {
        "name": VIRTUAL_OUTBOUND,
        "address": socket_address(bind.address, bind.port),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "listener_filters": [ORIGINAL_DST],
        "filter_chains": [{
            "name": f"{VIRTUAL_OUTBOUND}-blackhole",
            "filter_chain_match": {"destination_port": bind.port},
            "filters": [tcp_proxy(BLACKHOLE)],
        }],
        "default_filter_chain": {"name": default, "filters": [tcp_proxy(default)]},
    }  # fmt: skip
    if transparent:
        listener["transparent"] = True
    return json_format.ParseDict(listener, listener_pb2.Listener())


def service_listener(
    service: Service, port: int, routes: str = "", telemetry: SidePlan = NO_PLAN
) -> Any:
    """The listener for traffic to one service VIP:port, handed over by `virtualOutbound`;
    `routes` is the canonical JSON of its VirtualService's routes (`routes.http_routes`),
    "" for the default route; `telemetry`: the client side's access logs, tracing and metric
    overrides (`xds.telemetry_policy`)."""
    service_port = service.port(port)
    assert service_port is not None and service.vip is not None
    cluster = outbound_cluster_name(port, service.hostname)
    if is_http(service_port.protocol) and routes:
        fault = {
            "name": FAULT_FILTER,
            "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault"),
        }
        filters = [http_connection_manager(cluster, [], routes=orjson.loads(routes),
                                           filters=[fault])]  # fmt: skip
    elif is_http(service_port.protocol):
        # The listener is the VIP's own: its traffic belongs to the service whatever Host it
        # carries (one virtual host, no domain list to keep in step with the service's names).
        filters = [http_connection_manager(cluster, [(["*"], cluster)])]
    else:
        filters = [tcp_proxy(cluster)]
    filters = [
        outbound_http(filters[0], service_port.protocol, telemetry)
        if is_http(service_port.protocol)
        else outbound_tcp(filters[0], telemetry)
    ]
    chains: list[dict[str, Any]] = [{"name": cluster, "filters": filters}]
    if not is_http(service_port.protocol) and routes:  # a VirtualService's tls/tcp rules
        chains = [{**chain, "filters": [outbound_tcp(chain["filters"][0], telemetry)]}
                  for chain in orjson.loads(routes)]  # fmt: skip
    listener: dict[str, Any] = {
        "name": service_listener_name(service.vip, port),
        "address": socket_address(service.vip, port),
        "bind_to_port": False,
        "traffic_direction": "OUTBOUND",
        "filter_chains": chains,
    }
    if any("filter_chain_match" in chain for chain in chains):
        listener["listener_filters"] = [TLS_INSPECTOR]  # SNI for the `tls` rules' chains
    return json_format.ParseDict(listener, listener_pb2.Listener())


def outbound_services(scope: Scope) -> list[tuple[Service, int]]:
    """(service, port) pairs that get a listener: VIP services, first owner of a VIP:port. Of
    the services a view sees, only those its egress hosts import (`Scope.listener_services`):
    a VirtualService's destination gets a cluster, not an address to call directly."""
    seen: set[tuple[str, int]] = set()
    pairs = []
    for service in scope.listener_services:
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


def outbound_cluster(
    service: Service,
    port: int,
    peer_sans: tuple[str, ...],
    plan: ClusterPlan = DEFAULT_PLAN,
    dns_endpoints: Sequence[tuple[Endpoint, bool]] = (),
) -> Any:
    """A service port's cluster, or one of its subsets' (`plan`), with the DestinationRule's
    fields (circuit breakers, outlier detection, load balancing, HTTP options). A ServiceEntry
    resolved by DNS carries its endpoints (`dns_endpoints`, names Envoy resolves) inline; one
    with resolution NONE forwards to the original destination."""
    service_port = service.port(port)
    assert service_port is not None
    name = subset_cluster_name(port, plan.subset, service.hostname)
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
    cluster["metadata"] = cluster_metadata(service.hostname)
    fields = plan.cluster_fields
    common = fields.pop("common_http_protocol_options", None)
    tls_settings = fields.pop(UPSTREAM_TLS, None)
    cluster.update(fields)
    if tls_settings is not None:  # the DestinationRule's TLS replaces auto mTLS
        del cluster["transport_socket_matches"]
        socket = destination_rule_tls(tls_settings, upstream_tls, service, port)
        if socket is not None:
            cluster["transport_socket"] = socket
    if service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        del cluster["eds_cluster_config"]
        cluster["type"] = "STRICT_DNS" if service.resolution == "DNS" else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["load_assignment"] = load_assignment_dict(
            name, dns_endpoints, workload_labels=not is_http(service_port.protocol)
        )
    elif service.resolution == "NONE":
        del cluster["eds_cluster_config"]
        cluster["type"] = "ORIGINAL_DST"
        cluster["lb_policy"] = "CLUSTER_PROVIDED"  # the only one Envoy allows for it
    if service_port.protocol in ("HTTP2", "GRPC"):
        cluster["typed_extension_protocol_options"] = http2_protocol_options(common)
    elif common and is_http(service_port.protocol):
        cluster["typed_extension_protocol_options"] = http2_protocol_options(common, http1=True)
    return json_format.ParseDict(cluster, cluster_pb2.Cluster())


def destination_rule_tls(
    settings: dict[str, Any], istio_tls: dict[str, Any], service: Service, port: int
) -> dict[str, Any] | None:
    """A DestinationRule's `tls` as the cluster's one transport socket: DISABLE → none
    (plaintext, even to sidecars); ISTIO_MUTUAL → the mesh's mTLS to every endpoint; SIMPLE /
    MUTUAL → TLS originated by the sidecar, trusting `caCertificates` and presenting the
    client certificate files (MUTUAL), with `sni` (else the host) and `subjectAltNames`."""
    mode = settings["mode"]
    names = settings.get("subject_alt_names") or []
    if mode == "DISABLE":
        return None
    if mode == "ISTIO_MUTUAL":
        context = dict(istio_tls)
        if "sni" in settings:
            context["sni"] = settings["sni"]
        if names:
            context["common_tls_context"] = common_tls_context(
                [{"san_type": "URI", "matcher": {"exact": n}} for n in names]
            )
    else:
        common: dict[str, Any] = {}
        if not settings.get("insecure_skip_verify") and ("ca_certificates" in settings or names):
            validation: dict[str, Any] = {}
            if "ca_certificates" in settings:
                validation["trusted_ca"] = {"filename": settings["ca_certificates"]}
            if names:
                validation["match_typed_subject_alt_names"] = [
                    {"san_type": "DNS", "matcher": {"exact": n}} for n in names
                ]
            common["validation_context"] = validation
        if mode == "MUTUAL" and "client_certificate" in settings:
            common["tls_certificates"] = [{
                "certificate_chain": {"filename": settings["client_certificate"]},
                "private_key": {"filename": settings.get("private_key", "")},
            }]  # fmt: skip
        sni = settings.get("sni") or ("" if service.hostname.startswith("*") else service.hostname)
        context = typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        common_tls_context=common, **({"sni": sni} if sni else {}))  # fmt: skip
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def static_clusters() -> list[Any]:
    passthrough = {
        "name": PASSTHROUGH, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT,
    }  # fmt: skip
    # Istio's: inbound traffic to a port no service declares goes to its original destination
    # (the pod's own address) from 127.0.0.6, which capture lets through; from the pod address
    # the proxy's own connection would be captured again into 15006, and loop.
    inbound_passthrough = {
        **passthrough, "name": INBOUND_PASSTHROUGH,
        "upstream_bind_config": {"source_address": {"address": INBOUND_PASSTHROUGH_SOURCE,
                                                    "port_value": 0}},
    }  # fmt: skip
    blackhole = {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT}
    return [json_format.ParseDict(c, cluster_pb2.Cluster())
            for c in (passthrough, inbound_passthrough, blackhole)]  # fmt: skip


def endpoint_tls(snapshot: MeshSnapshot, endpoint: Endpoint, namespace: str) -> bool:
    """Auto mTLS: talk TLS to an endpoint that has a sidecar whose policy is not DISABLE."""
    if not endpoint.has_sidecar:
        return False
    mode = snapshot.mtls_mode(endpoint.namespace or namespace, endpoint.label_map, endpoint.port)
    return mode != "DISABLE"


def load_assignment(
    cluster_name: str,
    endpoints: Sequence[tuple[Endpoint, bool]],
    *,
    workload_labels: bool = False,
) -> Any:
    assignment = load_assignment_dict(cluster_name, endpoints, workload_labels=workload_labels)
    return json_format.ParseDict(assignment, endpoint_pb2.ClusterLoadAssignment())


def load_assignment_dict(
    cluster_name: str,
    endpoints: Sequence[tuple[Endpoint, bool]],
    *,
    workload_labels: bool = False,
) -> dict[str, Any]:
    """`workload_labels`: mTLS endpoints name their workload for the client side's TCP series
    (`telemetry.endpoint_metadata`); HTTP ports learn it from the response, and go without."""
    lb_endpoints = []
    for endpoint, tls in endpoints:
        entry: dict[str, Any] = {
            "endpoint": {"address": socket_address(endpoint.address, endpoint.port)},
            "health_status": "HEALTHY",
        }
        if tls:
            workload: peer.WorkloadMetadata | None = None
            if workload_labels:
                workload = peer.workload_metadata(workload=endpoint.workload_name,
                                                  namespace=endpoint.namespace,
                                                  labels=endpoint.label_map)  # fmt: skip
            entry["metadata"] = {"filter_metadata": {
                "envoy.transport_socket_match": {TLS_MODE_KEY: TLS_MODE_ISTIO},
                **endpoint_metadata(workload),
            }}  # fmt: skip
        lb_endpoints.append(entry)
    return {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": lb_endpoints}]}


def cluster_endpoints(
    snapshot: MeshSnapshot, service: Service, port: int, labels: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[Endpoint, bool], ...]:
    """Ready endpoints of a service port (those carrying `labels`: a subset's) and whether
    each is reached over mTLS."""
    return tuple(
        (e, endpoint_tls(snapshot, e, service.namespace))
        for e in sorted(snapshot.endpoints_for(service.hostname, port))
        if e.ready and all(pair in e.labels for pair in labels)
    )


def uses_eds(service: Service) -> bool:
    """Whether a service's clusters take their endpoints from EDS (load assignments)."""
    return service.resolution == "EDS"
