"""The mesh model: an immutable, typed snapshot of what the registries know.

Everything the xDS generator reads is here, as frozen dataclasses and tuples, so a snapshot can
be shared by every connection without locks and pieces of it can key caches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from sidemesh.api import names
from sidemesh.api.telemetry.mesh import MeshTelemetry

if TYPE_CHECKING:  # the models load with the registries; readers of the model need not
    from sidemesh.api.networking import (
        DestinationRule,
        Gateway,
        Resource,
        ServiceEntry,
        Sidecar,
        VirtualService,
    )
    from sidemesh.api.security import AuthorizationPolicy, RequestAuthentication
    from sidemesh.api.telemetry import Telemetry
    from sidemesh.xds.credentials import TlsCredential

Protocol = Literal["HTTP", "HTTP2", "GRPC", "TCP"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
OutboundPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]
# How a service's endpoints are found: EDS (a Kubernetes Service, a ServiceEntry's STATIC
# endpoints), DNS by Envoy, or NONE (the caller's original destination).
Resolution = Literal["EDS", "DNS", "DNS_ROUND_ROBIN", "NONE"]

# Istio's port-name prefixes (`<protocol>[-<suffix>]`) and appProtocol values. TLS-ish and
# database protocols are proxied as opaque TCP; unknown ones too (Istio would sniff them).
_PROTOCOLS: Mapping[str, Protocol] = {
    "http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "HTTP",
    "h2c": "HTTP2", "kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": "HTTP",
    "tcp": "TCP", "https": "TCP", "tls": "TCP", "mongo": "TCP", "mysql": "TCP", "redis": "TCP",
}  # fmt: skip


def port_protocol(name: str, app_protocol: str | None = None) -> Protocol:
    """Istio's rule: appProtocol if set and known, else the port name's prefix, else TCP."""
    if app_protocol:
        known = _PROTOCOLS.get(app_protocol.lower())
        if known is not None:
            return known
    lowered = name.lower()
    if lowered in _PROTOCOLS:
        return _PROTOCOLS[lowered]
    prefix, dash, _ = lowered.partition("-")
    return _PROTOCOLS.get(prefix, "TCP") if dash else "TCP"


def is_http(protocol: Protocol) -> bool:
    return protocol != "TCP"


@dataclass(frozen=True, order=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: Protocol = "TCP"
    target_port: int | str | None = None  # number, a container port name, or None (= port)


@dataclass(frozen=True, order=True)
class Service:
    namespace: str
    name: str
    vip: str | None  # None for headless services
    ports: tuple[ServicePort, ...]
    domain: str = "cluster.local"
    # A ServiceEntry host (`api.example.com`, `*.example.com`); "" for a Kubernetes Service.
    host: str = ""
    resolution: Resolution = "EDS"
    export_to: tuple[str, ...] = ()  # ServiceEntry exportTo; () is everywhere

    @property
    def hostname(self) -> str:
        return self.host or f"{self.name}.{self.namespace}.svc.{self.domain}"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True, order=True)
class Endpoint:
    """One address serving one port of one service (a Pod, a WorkloadEntry, a raw address)."""

    address: str
    port: int  # the port the workload listens on (target port)
    service_port: int
    ready: bool = True
    service_account: str = "default"
    namespace: str = ""
    workload_name: str = ""
    has_sidecar: bool = False  # label security.istio.io/tlsMode=istio
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class PeerAuthentication:
    """Istio's PeerAuthentication: mesh-wide (root namespace, no selector), per namespace, or
    per workload (selector); `port_modes` only apply to workload-selecting policies."""

    namespace: str
    name: str
    mode: MtlsMode | None  # None = UNSET: inherit from the parent level
    selector: tuple[tuple[str, str], ...] | None = None
    # workload (target) port → mode; None = UNSET: the policy's own effective mode
    port_modes: tuple[tuple[int, MtlsMode | None], ...] = ()
    created: float = 0.0  # creationTimestamp (seconds): the oldest policy wins its level

    def selects(self, labels: Mapping[str, str]) -> bool:
        return self.selector is not None and all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class MeshSnapshot:
    version: int
    services: tuple[Service, ...] = ()
    # service hostname → its endpoints, for every port
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    # Validated networking.istio.io objects, by (namespace, name); never re-validated here.
    virtual_services: tuple[Resource[VirtualService], ...] = ()
    destination_rules: tuple[Resource[DestinationRule], ...] = ()
    # Kept for per-proxy views (`xds.scoping`); ServiceEntry hosts are also in `services`.
    service_entries: tuple[Resource[ServiceEntry], ...] = ()
    sidecars: tuple[Resource[Sidecar], ...] = ()
    # Gateways (`xds.gateway`) and the TLS Secrets their servers name, by (namespace, name).
    gateways: tuple[Resource[Gateway], ...] = ()
    credentials: Mapping[tuple[str, str], TlsCredential] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # Validated security.istio.io policies (api.security.validate), by (namespace, name).
    authorization_policies: tuple[Resource[AuthorizationPolicy], ...] = ()
    request_authentications: tuple[Resource[RequestAuthentication], ...] = ()
    # Invalid AuthorizationPolicies as DENY-everything stand-ins (`security.deny_all_stand_in`).
    failed_authorization_policies: tuple[Resource[AuthorizationPolicy], ...] = ()
    # jwksUri → the JWKS document the control plane fetched for it (absent: not available).
    jwks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Validated telemetry.istio.io Telemetries and MeshConfig's telemetry (xds.telemetry_policy).
    telemetries: tuple[Resource[Telemetry], ...] = ()
    mesh_telemetry: MeshTelemetry = field(default_factory=MeshTelemetry)
    outbound_policy: OutboundPolicy = "ALLOW_ANY"
    trust_domain: str = names.TRUST_DOMAIN
    root_namespace: str = names.CONTROL_PLANE_NAMESPACE
    changed: frozenset[str] = frozenset()  # "Kind/namespace/name" since the previous snapshot

    @cached_property
    def services_by_host(self) -> Mapping[str, Service]:
        return {s.hostname: s for s in self.services}

    @cached_property
    def instances_by_address(self) -> Mapping[str, tuple[tuple[Service, Endpoint], ...]]:
        """Which (service, endpoint) pairs live at an address: a proxy's inbound side."""
        found: dict[str, list[tuple[Service, Endpoint]]] = {}
        for service in self.services:
            for endpoint in self.endpoints.get(service.hostname, ()):
                found.setdefault(endpoint.address, []).append((service, endpoint))
        return {address: tuple(pairs) for address, pairs in found.items()}

    def endpoints_for(self, hostname: str, service_port: int) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints.get(hostname, ()) if e.service_port == service_port)

    def mtls_mode(self, namespace: str, labels: Mapping[str, str], port: int | None) -> MtlsMode:
        """The effective PeerAuthentication mode of a workload (and port)."""
        return effective_mtls_mode(
            self.peer_authentications,
            root_namespace=self.root_namespace,
            namespace=namespace,
            labels=labels,
            port=port,
        )


def effective_mtls_mode(
    policies: Iterable[PeerAuthentication],
    *,
    root_namespace: str,
    namespace: str,
    labels: Mapping[str, str],
    port: int | None,
) -> MtlsMode:
    """Istio's composition of PeerAuthentications for one workload port: a selector policy of
    the workload's namespace > that namespace's policy without selector > the root
    namespace's (mesh) policy without selector > PERMISSIVE. Within a level the oldest policy
    wins (creationTimestamp, then name); UNSET inherits the level below. The workload
    policy's `portLevelMtls` then overrides its port (UNSET there keeps the result). Selector
    policies in the root namespace apply to no workload, as Istio documents."""
    workload: list[PeerAuthentication] = []
    namespace_wide: list[PeerAuthentication] = []
    mesh: list[PeerAuthentication] = []
    for policy in policies:
        if policy.namespace == root_namespace:
            if policy.selector is None:
                mesh.append(policy)
        elif policy.namespace == namespace:
            if policy.selector is None:
                namespace_wide.append(policy)
            elif policy.selects(labels):
                workload.append(policy)
    mode: MtlsMode = "PERMISSIVE"
    for level in (mesh, namespace_wide, workload):
        oldest = _oldest(level)
        if oldest is not None and oldest.mode is not None:
            mode = oldest.mode
    chosen = _oldest(workload)
    if chosen is not None and port is not None:
        return dict(chosen.port_modes).get(port) or mode
    return mode


def _oldest(policies: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(policies, key=lambda p: (p.created, p.name), default=None)


def resolve_host(host: str, namespace: str, domain: str = "cluster.local") -> str:
    """Istio's short-name rule: a host without a dot names a service in the rule's own
    namespace (`reviews` in `demo` is `reviews.demo.svc.cluster.local`); others are literal."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.{domain}"


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
