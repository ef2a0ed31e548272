"""Inbound resources and the proxy *shape* they depend on.

`virtualInbound` (15006) has, per port the workload serves, a TLS chain (SDS `default` +
`ROOTCA`, client certificate required; XFCC carries the caller's SPIFFE id to the app) and in
PERMISSIVE a plaintext chain too; the app is reached on 127.0.0.1:<port>. Every chain carries
the workload's request policy (`inbound_policy`): jwt_authn + HTTP RBAC before the router on
HTTP chains, network RBAC before tcp_proxy on TCP ones (the passthrough chain included, so an
undeclared port is no way around a policy).

A Sidecar with `ingress` listeners replaces the Services' ports by its listeners
(`sidecar_ingress` decides each): the same chains, forwarded to the listener's
`defaultEndpoint`; a listener with captureMode NONE also gets a listener of its own, bound
(`bound_inbound_listeners`).
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from google.protobuf import json_format

from sidemesh.xds import outbound  # noqa: F401  (registers the filter types both sides use)
from sidemesh.xds.envoy_json import (
    CONNECT_TIMEOUT,
    ORIGINAL_DST,
    TLS_INSPECTOR,
    common_tls_context,
    http2_protocol_options,
    http_connection_manager,
    socket_address,
    tcp_proxy,
    typed,
)
from sidemesh.xds.inbound_policy import NO_POLICY, InboundPolicy, inbound_policy
from sidemesh.xds.model import MeshSnapshot, MtlsMode, Protocol, is_http
from sidemesh.xds.proxy import Bind, ProxyInfo
from sidemesh.xds.resource_names import (
    BLACKHOLE,
    INBOUND_PASSTHROUGH,
    VIRTUAL_INBOUND,
    inbound_cluster_name,
)
from sidemesh.xds.scoping import select_sidecar
from sidemesh.xds.sidecar_ingress import IngressPort, ingress_decisions
from sidemesh.xds.telemetry import NO_PLAN, inbound_http, inbound_tcp, peer_certificate_filter
from sidemesh.xds.telemetry_policy import (
    DEFAULT_POLICY,
    SidePlan,
    TelemetryPolicy,
    telemetry_policy,
)

# Pre-1.10 Istio forwarding: the app is reached on loopback. Chosen because it works the same
# in every runtime we have: with iptables capture (the proxy's uid is exempt, loopback is not
# redirected) and without it, where the sidecar binds the pod address and the app loopback
# (the single-host tests). The price: an app bound only to 127.0.0.1 is reachable from the mesh.
INBOUND_FORWARD_ADDRESS = "127.0.0.1"


@dataclass(frozen=True, order=True)
class InboundPort:
    port: int
    protocol: Protocol
    mode: MtlsMode
    service: str = ""  # the hostname of the service the port serves (telemetry labels)
    ingress: IngressPort | None = None  # from a Sidecar's ingress listener, else a Service's


@dataclass(frozen=True)
class ProxyShape:
    """Everything about a proxy that its resources depend on; equal shapes, equal bytes."""

    inbound: tuple[InboundPort, ...]
    default_mode: MtlsMode
    outbound_bind: Bind
    inbound_bind: Bind
    transparent: bool = False  # TPROXY interception: virtual listeners are IP_TRANSPARENT
    policy: InboundPolicy = NO_POLICY  # AuthorizationPolicy / RequestAuthentication filters
    telemetry: TelemetryPolicy = DEFAULT_POLICY  # access logs, tracing, metric overrides
    # What the Sidecar's ingress listeners became, and why (explaining only: not a key part).
    ingress_reasons: tuple[str, ...] = field(default=(), compare=False)

    def __hash__(self) -> int:
        # A shape keys the cache's lookups a few times per proxy per push; hashing its nested
        # tuples each time was a tenth of a push's CPU, so it is hashed once.
        found: int | None = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.inbound, self.default_mode, self.outbound_bind, self.inbound_bind,
                          self.transparent, self.policy, self.telemetry))  # fmt: skip
            object.__setattr__(self, "_hash", found)
        return found


# What `proxy_shape` reads of a snapshot besides the proxy's own instances
# (`instances_by_address`, from `services` and `endpoints`): a cache may keep a proxy's shape
# while these and its instances are equal (`shape_inputs`). Extend it with `proxy_shape`.
SHAPE_FIELDS = (
    "peer_authentications", "root_namespace", "sidecars", "authorization_policies",
    "failed_authorization_policies", "request_authentications", "jwks", "telemetries",
    "mesh_telemetry",
)  # fmt: skip


def shape_inputs(snapshot: MeshSnapshot) -> tuple[object, ...]:
    """Equal for two snapshots when every proxy's shape is the same in both, given equal
    instances of the proxy's own. Tracing reads the registry only to find each tracing
    provider's service and port: that answer is part of the inputs, not every service."""
    mesh = snapshot.mesh_telemetry
    tracing = tuple(
        (provider.service, provider.port,
         (found := snapshot.services_by_host.get(provider.service)) is not None
         and found.port(provider.port) is not None)
        for provider in mesh.tracing_providers
    ) if mesh.enable_tracing else ()  # fmt: skip
    return (*(getattr(snapshot, name) for name in SHAPE_FIELDS), tracing)


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
        ports[endpoint.port] = InboundPort(endpoint.port, service_port.protocol, mode,
                                           service.hostname)  # fmt: skip
    reasons: tuple[str, ...] = ()
    sidecar = (select_sidecar(snapshot.sidecars, proxy.namespace, labels,
                              snapshot.root_namespace) if snapshot.sidecars else None)  # fmt: skip
    if sidecar is not None and sidecar.spec.ingress:
        # Istio's rule: the Sidecar's ingress listeners are the inbound ports, not the
        # Services'; a Service's port of the same number still names it in telemetry.
        decisions = ingress_decisions(sidecar.spec.ingress, pod_ip=proxy.ip)
        ports = {d.port.port: InboundPort(
            d.port.port, d.port.protocol,
            snapshot.mtls_mode(proxy.namespace, labels, d.port.port),
            ports[d.port.port].service if d.port.port in ports else "", d.port,
        ) for d in decisions}  # fmt: skip
        where = f"Sidecar {sidecar.namespace}/{sidecar.name}"
        reasons = tuple(f"{where}: {d.reason}" for d in decisions)
    return ProxyShape(
        inbound=tuple(sorted(ports.values())),
        default_mode=snapshot.mtls_mode(proxy.namespace, labels, None),
        outbound_bind=proxy.outbound_bind,
        inbound_bind=proxy.inbound_bind,
        transparent=proxy.interception_mode == "TPROXY",
        policy=inbound_policy(snapshot, proxy.namespace, labels),
        telemetry=telemetry_policy(snapshot, proxy.namespace, labels),
        ingress_reasons=reasons,
    )


def _inbound_chains(
    port: int | None,
    protocol: Protocol,
    mode: MtlsMode,
    trust_domain: str,
    policy: InboundPolicy = NO_POLICY,
    service: str = "",
    telemetry: SidePlan = NO_PLAN,
    ingress: IngressPort | None = None,
) -> list[dict[str, Any]]:
    cluster = inbound_cluster_name(port) if port is not None else INBOUND_PASSTHROUGH
    match: dict[str, Any] = {"destination_port": port} if port is not None else {}
    if ingress is not None and ingress.refused:  # dropped, never passed through to the app
        return [{"name": f"{cluster}-refused", "filter_chain_match": match,
                 "filters": [tcp_proxy(BLACKHOLE)]}]  # fmt: skip
    if ingress is not None and ingress.bind:
        length = 128 if ":" in ingress.bind else 32
        match["prefix_ranges"] = [{"address_prefix": ingress.bind, "prefix_len": length}]

    def filters(tls: bool) -> list[dict[str, Any]]:
        if not is_http(protocol):
            return [
                *policy.network(),
                *([peer_certificate_filter()] if tls else []),
                inbound_tcp(tcp_proxy(cluster), service=service, tls=tls, plan=telemetry),
            ]
        # Over mTLS the app learns the caller's SPIFFE id; plaintext callers cannot forge it.
        xfcc: dict[str, Any] = (
            {"forward_client_cert_details": "APPEND_FORWARD",
             "set_current_client_cert_details": {"uri": True}}
            if tls else {"forward_client_cert_details": "SANITIZE"}
        )  # fmt: skip
        # Istio's default path normalization (BASE, RFC 3986): `/a/../admin` is `/admin` to
        # the RBAC path rules and to the app alike, so it cannot slip past a DENY.
        manager = http_connection_manager(cluster, [(["*"], cluster)], filters=policy.http(),
                                          normalize_path=True, **xfcc)  # fmt: skip
        return [inbound_http(manager, protocol, service=service, tls=tls, plan=telemetry)]

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


def _port_chains(shape: ProxyShape, inbound: InboundPort, trust_domain: str) -> list[Any]:
    return _inbound_chains(inbound.port, inbound.protocol, inbound.mode, trust_domain,
                           shape.policy, inbound.service, shape.telemetry.server,
                           inbound.ingress)  # fmt: skip


def inbound_listener(shape: ProxyShape, trust_domain: str) -> Any:
    chains = []
    for inbound in shape.inbound:
        chains += _port_chains(shape, inbound, trust_domain)
    chains += _inbound_chains(None, "TCP", shape.default_mode, trust_domain, shape.policy,
                              telemetry=shape.telemetry.server)  # fmt: skip
    listener: dict[str, Any] = {
        "name": VIRTUAL_INBOUND,
        "address": socket_address(shape.inbound_bind.address, shape.inbound_bind.port),
        "use_original_dst": True,
        "traffic_direction": "INBOUND",
        "listener_filters": [ORIGINAL_DST, TLS_INSPECTOR],
        "filter_chains": chains,
    }
    if shape.transparent:
        listener["transparent"] = True
    return json_format.ParseDict(listener, listener_pb2.Listener())


def bound_inbound_listeners(shape: ProxyShape, trust_domain: str) -> list[Any]:
    """A listener of its own, bound to its address, per ingress port with captureMode NONE:
    reached by connections the capture does not redirect (or where there is no capture)."""
    listeners = []
    for inbound in shape.inbound:
        if inbound.ingress is None or not inbound.ingress.listen:
            continue
        address = inbound.ingress.listen
        listener: dict[str, Any] = {
            "name": f"inbound_{address}_{inbound.port}",
            "address": socket_address(address, inbound.port),
            "traffic_direction": "INBOUND",
            "listener_filters": [TLS_INSPECTOR],
            "filter_chains": _port_chains(shape, inbound, trust_domain),
        }
        if shape.transparent:
            listener["transparent"] = True
        listeners.append(json_format.ParseDict(listener, listener_pb2.Listener()))
    return listeners


def inbound_clusters(shape: ProxyShape) -> list[Any]:
    clusters = []
    for inbound in shape.inbound:
        ingress = inbound.ingress
        if ingress is not None and ingress.refused:
            continue  # its chain drops the connection: nothing to reach
        name = inbound_cluster_name(inbound.port)
        address = socket_address(INBOUND_FORWARD_ADDRESS, inbound.port)
        fields: dict[str, Any] = {}
        if ingress is not None:
            forward = ingress.forward
            address = ({"pipe": {"path": forward.pipe}} if forward.pipe
                       else socket_address(forward.address, forward.port))  # fmt: skip
            if forward.source:
                fields["upstream_bind_config"] = {
                    "source_address": {"address": forward.source, "port_value": 0}
                }
            if ingress.cluster_fields:
                fields.update(orjson.loads(ingress.cluster_fields))
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }  # fmt: skip
        common = fields.pop("common_http_protocol_options", None)
        cluster.update(fields)
        if inbound.protocol in ("HTTP2", "GRPC"):
            cluster["typed_extension_protocol_options"] = http2_protocol_options(common)
        elif common and is_http(inbound.protocol):
            cluster["typed_extension_protocol_options"] = http2_protocol_options(common, http1=True)
        clusters.append(json_format.ParseDict(cluster, cluster_pb2.Cluster()))
    return clusters
