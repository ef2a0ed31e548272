"""Gateway servers as one proxy serves them, and Istio's rules for which VirtualServices reach
them: shared by the HTTP listeners (`xds.gateway`) and the TLS passthrough and TCP ones
(`xds.gateway_passthrough`). Pure.

A server is one of six kinds, by its protocol and TLS mode:
* `http`: HTTP, HTTP2, GRPC (routes from the VirtualServices' `http` rules);
* `https`: HTTPS whose TLS the gateway terminates (SIMPLE, MUTUAL, ISTIO_MUTUAL), then `http`;
* `passthrough`: HTTPS or TLS with mode PASSTHROUGH (Istio's default mode): the gateway reads
  only the SNI and forwards the client's TLS untouched by the `tls` rules' `sniHosts`;
* `tcp`: TCP (or MONGO, REDIS, MYSQL: opaque bytes), forwarded by the first `tcp` rule;
* `tls`: TLS whose TLS the gateway terminates (SIMPLE, MUTUAL, ISTIO_MUTUAL), then `tcp`;
* `auto_passthrough`: HTTPS or TLS with mode AUTO_PASSTHROUGH: the SNI names the mesh cluster
  (`outbound_.PORT_.SUBSET_.HOST`), no VirtualService (`xds.gateway_auto_passthrough`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sidemesh.api.networking import Gateway, Resource, VirtualService
from sidemesh.api.networking.gateway import Server
from sidemesh.api.networking.virtual_service import (
    MESH_GATEWAY,
    HTTPMatchRequest,
    L4MatchAttributes,
)
from sidemesh.api.text import untrusted
from sidemesh.xds.credentials import TlsCredential
from sidemesh.xds.proxy import ProxyInfo

ServerKind = Literal["http", "https", "passthrough", "tcp", "tls", "auto_passthrough"]
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "REDIS", "MYSQL"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
TERMINATED_TLS_MODES = frozenset({"SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
# Which kinds can share one address:port: SNI tells TLS chains apart; nothing tells plain HTTP
# from raw TCP, and one raw TCP server takes its whole port.
PORT_FAMILY: dict[ServerKind, str] = {
    "http": "plain HTTP", "https": "TLS", "passthrough": "TLS", "tcp": "TCP", "tls": "TLS",
    "auto_passthrough": "TLS",
}  # fmt: skip


def server_kind(server: Server) -> tuple[ServerKind | None, str]:
    """What kind of server this is, or None and why sidemesh cannot serve it."""
    protocol = (server.port.protocol or "").upper()
    if protocol in HTTP_PROTOCOLS:
        return "http", ""
    if protocol in TCP_PROTOCOLS:
        return "tcp", ""
    if protocol not in TLS_PROTOCOLS:
        return None, (f"protocol {untrusted(protocol)} is not served by sidemesh gateways "
                      "(HTTP, HTTP2, GRPC, HTTPS, TLS and TCP are)")  # fmt: skip
    mode = (server.tls.mode if server.tls is not None else None) or "PASSTHROUGH"
    if mode == "PASSTHROUGH":
        return "passthrough", ""
    if mode in TERMINATED_TLS_MODES:
        return ("https" if protocol == "HTTPS" else "tls"), ""
    if mode == "AUTO_PASSTHROUGH":
        return "auto_passthrough", ""
    return None, (f"TLS mode {untrusted(mode)} is not served (PASSTHROUGH, SIMPLE, MUTUAL, "
                  "ISTIO_MUTUAL and AUTO_PASSTHROUGH are)")  # fmt: skip


@dataclass(frozen=True)
class BoundServer:
    """One Gateway server as one proxy serves it."""

    gateway: Resource[Gateway]
    index: int  # in the Gateway's `servers`
    server: Server
    address: str  # where the listener binds
    port: int  # the listener's port (the Service's targetPort for server.port.number)
    credential: TlsCredential | None = None
    kind: ServerKind = "http"

    @property
    def terminates_tls(self) -> bool:
        return self.kind in ("https", "tls")

    @property
    def reads_sni(self) -> bool:
        """Whether its chains are told apart by SNI (a TLS inspector reads it)."""
        return self.kind in ("https", "passthrough", "tls", "auto_passthrough")

    @property
    def reference(self) -> str:
        """`namespace/name` of its Gateway, as VirtualServices name it."""
        return f"{self.gateway.namespace}/{self.gateway.name}"

    @property
    def where(self) -> str:
        return f"Gateway {self.reference} servers[{self.index}]"

    def hosts(self) -> list[tuple[str, str]]:
        """(namespace, host) pairs: `host` alone means any namespace, `.` the Gateway's."""
        found = []
        for entry in self.server.hosts:
            namespace, slash, host = entry.partition("/")
            if not slash:
                namespace, host = "*", entry
            found.append((self.gateway.namespace if namespace == "." else namespace, host))
        return found

    def server_names(self) -> frozenset[str]:
        """SNI names of a TLS chain; empty when a host is `*` (then it matches any name)."""
        hosts = {host for _, host in self.hosts()}
        return frozenset() if "*" in hosts else frozenset(hosts)


def gateway_refs(refs: tuple[str, ...], namespace: str) -> set[str]:
    """`namespace/name` of the Gateways named in a VirtualService of `namespace`."""
    found = set()
    for ref in refs:
        if ref == MESH_GATEWAY:
            continue
        found.add(ref if "/" in ref else f"{namespace}/{ref}")
    return found


def intersect_hosts(vs_host: str, server_host: str) -> str | None:
    """The more specific of two hosts when one covers the other (Istio's wildcard rules)."""
    if vs_host == server_host or server_host == "*":
        return vs_host
    if vs_host == "*":
        return server_host
    if server_host.startswith("*.") and vs_host.endswith(server_host[1:]):
        return vs_host
    if vs_host.startswith("*.") and server_host.endswith(vs_host[1:]):
        return server_host
    return None


def match_applies(
    match: HTTPMatchRequest | L4MatchAttributes,
    *,
    proxy: ProxyInfo,
    gateway: str,
    port: int,
    namespace: str,
) -> bool:
    """Whether a match of a VirtualService of `namespace` selects traffic that `proxy`
    receives on a server (`port`) of `gateway`: its `gateways`, `port` and source."""
    if match.gateways and gateway not in gateway_refs(match.gateways, namespace):
        return False
    if match.port is not None and match.port != port:
        return False
    labels = proxy.label_map
    if any(labels.get(k) != v for k, v in match.source_labels.items()):
        return False
    return match.source_namespace in (None, proxy.namespace)


def shared_hosts(resource: Resource[VirtualService], bound: BoundServer) -> list[str]:
    """The hosts a VirtualService and a server share (VirtualService hosts `bound` may serve)."""
    found: list[str] = []
    for namespace, server_host in bound.hosts():
        if namespace != "*" and namespace != resource.namespace:
            continue
        for vs_host in resource.spec.hosts:
            host = intersect_hosts(vs_host, server_host)
            if host is not None and host not in found:
                found.append(host)
    return found


def bound_virtual_services(
    virtual_services: tuple[Resource[VirtualService], ...], bound: BoundServer
) -> list[tuple[Resource[VirtualService], list[str]]]:
    """The VirtualServices bound to the server's Gateway that share hosts with it, in the
    snapshot's order (Istio's: oldest first), each with the hosts shared."""
    found = []
    for resource in virtual_services:
        if bound.reference not in gateway_refs(resource.spec.gateways, resource.namespace):
            continue
        hosts = shared_hosts(resource, bound)
        if hosts:
            found.append((resource, hosts))
    return found
