"""The mesh model: an immutable, typed snapshot of what the registries know.

Everything the xDS generator reads is here, as frozen dataclasses and tuples, so a snapshot can
be shared by every connection without locks and pieces of it can key caches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from sidemesh.api import names

if TYPE_CHECKING:  # the models load with the registries; readers of the model need not
    from sidemesh.api.networking import DestinationRule, Resource, VirtualService

Protocol = Literal["HTTP", "HTTP2", "GRPC", "TCP"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
OutboundPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]

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

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{self.domain}"

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

    @cached_property
    def _virtual_services_by_host(self) -> Mapping[str, tuple[Resource[VirtualService], ...]]:
        from sidemesh.api.networking.virtual_service import MESH_GATEWAY

        found: dict[str, list[Resource[VirtualService]]] = {}
        for resource in self.virtual_services:
            spec = resource.spec
            if spec.gateways and MESH_GATEWAY not in spec.gateways:
                continue  # bound to gateways only: not the sidecars' business
            for host in spec.hosts:
                found.setdefault(resolve_host(host, resource.namespace), []).append(resource)
        return {host: tuple(found[host]) for host in found}

    def virtual_service_for(self, hostname: str) -> Resource[VirtualService] | None:
        """The VirtualService routing `hostname` from sidecars. Istio does not merge several
        for one host outside gateways: the first one wins (we take the first by
        namespace/name; Istio the oldest)."""
        found = self._virtual_services_by_host.get(hostname, ())
        return found[0] if found else None

    def destination_rule_for(self, service: Service) -> Resource[DestinationRule] | None:
        """The DestinationRule for a service's host: exact host before wildcard, the service's
        own namespace, then the root namespace, then any other (Istio's lookup, as seen by a
        proxy in none of them: outbound resources are shared by every proxy today)."""
        exact, wildcards = self._destination_rules_by_host
        candidates = exact.get(service.hostname, [])
        if not candidates:
            candidates = [(h, r) for h, r in wildcards if service.hostname.endswith(h[1:])]
        if not candidates:
            return None

        def rank(candidate: tuple[str, Resource[DestinationRule]]) -> tuple[Any, ...]:
            host, rule = candidate
            return (rule.namespace != service.namespace, rule.namespace != self.root_namespace,
                    -len(host), rule.namespace, rule.name)  # fmt: skip

        return min(candidates, key=rank)[1]

    @cached_property
    def _destination_rules_by_host(self) -> tuple[
        Mapping[str, list[tuple[str, Resource[DestinationRule]]]],
        list[tuple[str, Resource[DestinationRule]]],
    ]:  # fmt: skip
        """Exact hosts indexed, wildcard ones (`*.example.com`) listed."""
        exact: dict[str, list[tuple[str, Resource[DestinationRule]]]] = {}
        wildcards: list[tuple[str, Resource[DestinationRule]]] = []
        for rule in self.destination_rules:
            if rule.spec.workload_selector is not None:
                continue  # applies to selected workloads only: needs per-proxy views
            host = resolve_host(rule.spec.host, rule.namespace)
            if host.startswith("*"):
                wildcards.append((host, rule))
            else:
                exact.setdefault(host, []).append((host, rule))
        return exact, wildcards

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
