"""Gateway proxies: listeners from the Gateways that select a proxy, routes from the
VirtualServices bound to those Gateways. Pure functions of (snapshot, proxy).

A gateway is Istio's `router` node (`router~IP~POD.NS~DOMAIN`, the `gateway` injection
template's `agent proxy router`): no capture, no `virtualOutbound`/`virtualInbound`; it gets the
mesh's outbound clusters (so it reaches backends over mTLS exactly as a sidecar does) and one
real listener per port its Gateways' servers name.

Istio's rules, as implemented here:
* a Gateway applies to every gateway proxy whose labels include its `selector` (any
  namespace; an empty selector selects every gateway proxy);
* a server's `port.number` is the port of a Service in front of the gateway: when a Service
  selecting the proxy has that port, the listener binds its `targetPort` (80 → 8080), else the
  number itself;
* a VirtualService is bound by naming the Gateway in `gateways` (`name` in its own namespace,
  or `namespace/name`); its hosts meet the server's hosts (`namespace/host`, `*/` or `./`, `*`
  and `*.suffix` wildcards), and each host they share becomes a virtual host;
* HTTP servers of one port share a filter chain; HTTPS ones each get a chain matched by SNI
  (their hosts) that terminates TLS: SIMPLE/MUTUAL with `credentialName` (a Secret in the
  gateway proxy's own namespace, sent inline to that proxy only), or ISTIO_MUTUAL (mesh certs);
* `tls.httpsRedirect` on an HTTP server answers every request with a redirect to https.

What cannot be served is left out with a reason (`GatewayPlan.skipped`) instead of making Envoy
refuse the whole listener set: TCP/TLS passthrough servers, file-based certificates, a missing
or broken Secret, a second server claiming the same port and hosts.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from sidemesh.api.networking import Gateway, Resource, VirtualService
from sidemesh.api.networking.gateway import Server
from sidemesh.api.networking.virtual_service import MESH_GATEWAY, HTTPMatchRequest
from sidemesh.api.text import untrusted
from sidemesh.xds import inbound  # noqa: F401  (registers the TLS inspector type)
from sidemesh.xds.credentials import TlsCredential
from sidemesh.xds.envoy_json import (
    TLS_INSPECTOR,
    common_tls_context,
    socket_address,
    typed,
)
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.routes import FAULT_FILTER, gateway_routes
from sidemesh.xds.scoping import ProxyView, Scope

ROUTER = "router"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "HTTPS"})
TERMINATED_TLS_MODES = frozenset({"SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
_TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2",
                 "TLSV1_3": "TLSv1_3"}  # fmt: skip
_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def is_router(proxy: ProxyInfo) -> bool:
    """Whether a proxy is a gateway (node type `router`) rather than a sidecar."""
    return proxy.node_id.startswith(f"{ROUTER}~")


def without_sidecar(view: ProxyView) -> ProxyView:
    """A gateway's view: Sidecar resources never apply to gateways (Istio's rule), so a
    mesh-wide Sidecar limiting egress does not cut a gateway off from its backends."""
    return replace(view, sidecar="") if view.sidecar else view


@dataclass(frozen=True)
class BoundServer:
    """One Gateway server as one proxy serves it."""

    gateway: Resource[Gateway]
    index: int  # in the Gateway's `servers`
    server: Server
    address: str  # where the listener binds
    port: int  # the listener's port (the Service's targetPort for server.port.number)
    credential: TlsCredential | None = None

    @property
    def terminates_tls(self) -> bool:
        return (self.server.port.protocol or "").upper() == "HTTPS"

    @property
    def where(self) -> str:
        return f"Gateway {self.gateway.namespace}/{self.gateway.name} servers[{self.index}]"

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


@dataclass(frozen=True)
class GatewayPlan:
    servers: tuple[BoundServer, ...]
    skipped: tuple[str, ...]  # why a selected server is not served, one reason each


def selects(gateway: Gateway, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in gateway.selector.items())


def _target_ports(snapshot: MeshSnapshot, proxy: ProxyInfo) -> dict[int, int]:
    """Service port → the proxy's port, for the Services in front of this gateway proxy."""
    targets: dict[int, int] = {}
    for _, endpoint in snapshot.instances_by_address.get(proxy.ip, ()):
        if endpoint.namespace and endpoint.namespace != proxy.namespace:
            continue
        targets.setdefault(endpoint.service_port, endpoint.port)
    return targets


def _credential(
    snapshot: MeshSnapshot, proxy: ProxyInfo, bound: BoundServer
) -> tuple[TlsCredential | None, str]:
    """The server's certificate, or None and why it cannot be served."""
    tls = bound.server.tls
    assert tls is not None  # validation: HTTPS servers have TLS settings
    mode = tls.mode or "PASSTHROUGH"
    if mode not in TERMINATED_TLS_MODES:
        return None, f"TLS mode {mode} is not served (SIMPLE, MUTUAL and ISTIO_MUTUAL are)"
    if mode == "ISTIO_MUTUAL":
        return None, ""
    if not tls.credential_name:
        return None, ("certificate files (serverCertificate/privateKey) are not supported: "
                      "name a Secret with credentialName")  # fmt: skip
    # Istio's rule: the Secret lives in the namespace of the gateway workload, whatever the
    # Gateway resource's namespace; a proxy never receives another namespace's keys.
    credential = snapshot.credentials.get((proxy.namespace, tls.credential_name))
    if credential is None:
        return None, (
            f"credentialName {untrusted(tls.credential_name)}: no usable TLS Secret of that "
            f"name in namespace {proxy.namespace!r} (the gateway's)"
        )
    if mode == "MUTUAL" and not credential.ca_certificates:
        return None, f"MUTUAL TLS: Secret {untrusted(tls.credential_name)} has no ca.crt/cacert"
    return credential, ""


def plan_gateway(snapshot: MeshSnapshot, proxy: ProxyInfo) -> GatewayPlan:
    """Which servers of which Gateways this proxy serves, on which ports, and what it cannot."""
    labels = proxy.label_map
    targets = _target_ports(snapshot, proxy)
    servers: list[BoundServer] = []
    skipped: list[str] = []
    # per listen address:port: does it carry TLS, and which SNI name sets are taken
    ports: dict[tuple[str, int], tuple[bool, list[frozenset[str]]]] = {}
    for gateway in sorted(snapshot.gateways, key=lambda g: (g.namespace, g.name)):
        if not selects(gateway.spec, labels):
            continue
        for index, server in enumerate(gateway.spec.servers):
            bound = BoundServer(
                gateway, index, server,
                server.bind if server.bind and not server.bind.startswith("unix://") else "0.0.0.0",
                targets.get(server.port.number, server.port.number),
            )  # fmt: skip
            protocol = (server.port.protocol or "").upper()
            if protocol not in HTTP_PROTOCOLS:
                skipped.append(f"{bound.where}: protocol {untrusted(protocol)} is not served "
                               "by sidemesh gateways yet (HTTP and HTTPS are)")  # fmt: skip
                continue
            if bound.terminates_tls:
                credential, reason = _credential(snapshot, proxy, bound)
                if reason:
                    skipped.append(f"{bound.where}: {reason}")
                    continue
                bound = BoundServer(gateway, index, server, bound.address, bound.port, credential)
            key = (bound.address, bound.port)
            tls, taken = ports.setdefault(key, (bound.terminates_tls, []))
            if tls != bound.terminates_tls:
                served = "HTTPS" if tls else "plain HTTP"
                skipped.append(f"{bound.where}: port {bound.port} already serves {served} "
                               "for another server")  # fmt: skip
                continue
            if tls:
                names = bound.server_names()
                if any(not names or not other or names & other for other in taken):
                    skipped.append(f"{bound.where}: another HTTPS server on port {bound.port} "
                                   "already claims these hosts")  # fmt: skip
                    continue
                taken.append(names)
            servers.append(bound)
    return GatewayPlan(tuple(servers), tuple(skipped))


# --- routes -----------------------------------------------------------------------------------


def _gateway_refs(refs: tuple[str, ...], namespace: str) -> set[str]:
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


def _applies(
    match: HTTPMatchRequest, *, proxy: ProxyInfo, gateway: str, port: int, namespace: str
) -> bool:
    """Whether a match of a VirtualService of `namespace` selects requests that `proxy`
    receives on a server (`port`) of `gateway`: its `gateways`, `port` and source."""
    if match.gateways and gateway not in _gateway_refs(match.gateways, namespace):
        return False
    if match.port is not None and match.port != port:
        return False
    labels = proxy.label_map
    if any(labels.get(k) != v for k, v in match.source_labels.items()):
        return False
    return match.source_namespace in (None, proxy.namespace)


def _shared_hosts(resource: Resource[VirtualService], bound: BoundServer) -> list[str]:
    found: list[str] = []
    for namespace, server_host in bound.hosts():
        if namespace != "*" and namespace != resource.namespace:
            continue
        for vs_host in resource.spec.hosts:
            host = intersect_hosts(vs_host, server_host)
            if host is not None and host not in found:
                found.append(host)
    return found


def _virtual_hosts(
    snapshot: MeshSnapshot, proxy: ProxyInfo, servers: list[BoundServer]
) -> list[dict[str, Any]]:
    scope = Scope(snapshot)
    by_host: dict[str, list[dict[str, Any]]] = {}
    redirect: set[str] = set()
    for bound in servers:
        reference = f"{bound.gateway.namespace}/{bound.gateway.name}"
        number = bound.server.port.number
        for resource in snapshot.virtual_services:
            if reference not in _gateway_refs(resource.spec.gateways, resource.namespace):
                continue
            hosts = _shared_hosts(resource, bound)
            if not hosts or not resource.spec.http:
                continue
            applies = partial(_applies, proxy=proxy, gateway=reference, port=number,
                              namespace=resource.namespace)  # fmt: skip
            routes = gateway_routes(scope, resource, number, applies)
            for host in hosts:
                by_host.setdefault(host, []).extend(routes)
        tls = bound.server.tls
        if tls is not None and tls.https_redirect and not bound.terminates_tls:
            for _, host in bound.hosts():
                by_host.setdefault(host, [])
                redirect.add(host)
    virtual_hosts = []
    for host, routes in by_host.items():
        virtual_host: dict[str, Any] = {"name": host, "domains": [host], "routes": routes}
        if host in redirect:
            virtual_host["require_tls"] = "ALL"
        virtual_hosts.append(virtual_host)
    return virtual_hosts


def _http_filter(name: str, virtual_hosts: list[dict[str, Any]]) -> dict[str, Any]:
    config = typed(
        _HCM,
        stat_prefix=name,
        codec_type="AUTO",
        # The edge of the mesh: the peer address is the client's, and a Host header with a
        # port (a NodePort, a host port mapping) still finds its virtual host.
        use_remote_address=True,
        strip_any_host_port=True,
        # A route may name a cluster no service has (yet): 503 for it, not a refused listener.
        route_config={"name": name, "virtual_hosts": virtual_hosts, "validate_clusters": False},
        http_filters=[
            {"name": FAULT_FILTER,
             "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault")},
            {"name": "envoy.filters.http.router",
             "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")},
        ],
    )  # fmt: skip
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _downstream_tls(bound: BoundServer, trust_domain: str) -> dict[str, Any]:
    tls = bound.server.tls
    assert tls is not None
    mode = tls.mode or "SIMPLE"
    credential = bound.credential
    if mode == "ISTIO_MUTUAL":
        common = common_tls_context(
            [{"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}]
        )
    else:
        assert credential is not None  # plan_gateway served no such server without one
        common = {"tls_certificates": [{
            "certificate_chain": {"inline_string": credential.certificate_chain},
            "private_key": {"inline_string": credential.private_key},
        }]}  # fmt: skip
        if mode == "MUTUAL":
            validation: dict[str, Any] = {
                "trusted_ca": {"inline_string": credential.ca_certificates}
            }
            if tls.subject_alt_names:
                validation["match_typed_subject_alt_names"] = [
                    {"san_type": kind, "matcher": {"exact": name}}
                    for name in tls.subject_alt_names
                    for kind in ("DNS", "URI")
                ]
            common["validation_context"] = validation
    common["alpn_protocols"] = ["h2", "http/1.1"]
    parameters: dict[str, Any] = {}
    if tls.min_protocol_version in _TLS_VERSIONS:
        parameters["tls_minimum_protocol_version"] = _TLS_VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version in _TLS_VERSIONS:
        parameters["tls_maximum_protocol_version"] = _TLS_VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        parameters["cipher_suites"] = list(tls.cipher_suites)
    if parameters:
        common["tls_params"] = parameters
    return typed(_DOWNSTREAM_TLS, common_tls_context=common,
                 require_client_certificate=mode != "SIMPLE")  # fmt: skip


def listener_name(address: str, port: int) -> str:
    return f"{address}_{port}"


def gateway_listeners(
    snapshot: MeshSnapshot, proxy: ProxyInfo, plan: GatewayPlan | None = None
) -> list[Any]:
    """One listener per address:port the proxy's Gateways serve, sorted by name."""
    plan = plan or plan_gateway(snapshot, proxy)
    by_port: dict[tuple[str, int], list[BoundServer]] = {}
    for bound in plan.servers:
        by_port.setdefault((bound.address, bound.port), []).append(bound)
    listeners = []
    for (address, port), servers in sorted(by_port.items()):
        name = listener_name(address, port)
        chains: list[dict[str, Any]] = []
        if not servers[0].terminates_tls:  # plan_gateway keeps one kind per port
            chains.append({"name": f"http.{port}", "filters": [
                _http_filter(f"http.{port}", _virtual_hosts(snapshot, proxy, servers))
            ]})  # fmt: skip
        for bound in servers:
            if not bound.terminates_tls:
                continue
            gateway = bound.gateway
            route_name = f"https.{port}.{gateway.namespace}.{gateway.name}.{bound.index}"
            match = {"server_names": sorted(bound.server_names())} if bound.server_names() else {}
            chains.append({
                "name": route_name,
                "filter_chain_match": match,
                "transport_socket": {"name": "envoy.transport_sockets.tls",
                                     "typed_config": _downstream_tls(bound, snapshot.trust_domain)},
                "filters": [_http_filter(route_name, _virtual_hosts(snapshot, proxy, [bound]))],
            })  # fmt: skip
        listener: dict[str, Any] = {
            "name": name,
            "address": socket_address(address, port),
            # Inbound to the mesh: the agent's graceful drain (inbound only) covers it.
            "traffic_direction": "INBOUND",
            "filter_chains": chains,
        }
        if servers[0].terminates_tls:
            listener["listener_filters"] = [TLS_INSPECTOR]
        listeners.append(json_format.ParseDict(listener, listener_pb2.Listener()))
    return listeners
