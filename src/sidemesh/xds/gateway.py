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
* `tls.httpsRedirect` on an HTTP server answers every request with a redirect to https;
* PASSTHROUGH (HTTPS/TLS) servers share a port's SNI-matched chains with HTTPS ones and forward
  the client's TLS by the `tls` rules' `sniHosts`; a TCP server takes its port and forwards by
  the first `tcp` rule (`xds.gateway_passthrough`);
* a TLS server with SIMPLE/MUTUAL/ISTIO_MUTUAL terminates TLS as an HTTPS one does, then
  forwards the bytes by the first `tcp` rule that applies (no ALPN offered: the payload is
  opaque);
* AUTO_PASSTHROUGH servers forward by the SNI alone to the SNI-DNAT cluster it names
  (`xds.gateway_auto_passthrough`);
* client-side telemetry, as Istio's gateways report it: every HTTP connection manager and TCP
  proxy counts `reporter="source"` series with the gateway as `source_workload`, and writes the
  access logs and trace spans the gateway's Telemetry/meshConfig ask for (`xds.telemetry`'s
  outbound writers, with the client side's plan of `xds.telemetry_policy`). The peer-metadata
  headers are overwritten towards the backend and removed from its responses, so neither an
  outside client can forge them nor see the backend's.

What cannot be served is left out with a reason (`GatewayPlan.skipped`) instead of making Envoy
refuse the whole listener set: file-based certificates, a missing or broken Secret, a second
server claiming the same port and hosts, modes sidemesh has no translation for.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from sidemesh.api.networking import Gateway
from sidemesh.api.text import untrusted
from sidemesh.xds import inbound  # noqa: F401  (registers the TLS inspector type)
from sidemesh.xds.credentials import TlsCredential
from sidemesh.xds.envoy_json import (
    TLS_INSPECTOR,
    common_tls_context,
    socket_address,
    typed,
)
from sidemesh.xds.gateway_auto_passthrough import auto_passthrough_chain, server_sni_names
from sidemesh.xds.gateway_passthrough import passthrough_chains, tcp_chains
from sidemesh.xds.gateway_servers import (
    PORT_FAMILY,
    BoundServer,
    bound_virtual_services,
    intersect_hosts,
    match_applies,
    server_kind,
)
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.routes import FAULT_FILTER, gateway_routes
from sidemesh.xds.scoping import ProxyView, Scope
from sidemesh.xds.telemetry import outbound_http, outbound_tcp
from sidemesh.xds.telemetry_policy import SidePlan, telemetry_policy

__all__ = ["BoundServer", "GatewayPlan", "gateway_listeners", "intersect_hosts", "is_router",
           "plan_gateway", "without_sidecar"]  # fmt: skip

ROUTER = "router"
_TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2",
                 "TLSV1_3": "TLSv1_3"}  # fmt: skip
_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_TCP_PROXY = "envoy.filters.network.tcp_proxy"


def is_router(proxy: ProxyInfo) -> bool:
    """Whether a proxy is a gateway (node type `router`) rather than a sidecar."""
    return proxy.node_id.startswith(f"{ROUTER}~")


def without_sidecar(view: ProxyView) -> ProxyView:
    """A gateway's view: Sidecar resources never apply to gateways (Istio's rule), so a
    mesh-wide Sidecar limiting egress does not cut a gateway off from its backends."""
    return replace(view, sidecar="") if view.sidecar else view


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
    mode = tls.mode
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
    # per listen address:port: what it carries (PORT_FAMILY), and which SNI name sets are taken
    ports: dict[tuple[str, int], tuple[str, list[frozenset[str]]]] = {}
    for gateway in sorted(snapshot.gateways, key=lambda g: (g.namespace, g.name)):
        if not selects(gateway.spec, labels):
            continue
        for index, server in enumerate(gateway.spec.servers):
            bound = BoundServer(
                gateway, index, server,
                server.bind if server.bind and not server.bind.startswith("unix://") else "0.0.0.0",
                targets.get(server.port.number, server.port.number),
            )  # fmt: skip
            kind, reason = server_kind(server)
            if kind is None:
                skipped.append(f"{bound.where}: {reason}")
                continue
            bound = replace(bound, kind=kind)
            if bound.terminates_tls:
                credential, reason = _credential(snapshot, proxy, bound)
                if reason:
                    skipped.append(f"{bound.where}: {reason}")
                    continue
                bound = replace(bound, credential=credential)
            family = PORT_FAMILY[kind]
            family_taken, taken = ports.setdefault((bound.address, bound.port), (family, []))
            if family_taken != family:
                skipped.append(f"{bound.where}: port {bound.port} already serves "
                               f"{family_taken} for another server")  # fmt: skip
                continue
            if kind == "tcp" and taken:
                skipped.append(f"{bound.where}: port {bound.port} already serves TCP for "
                               "another server (one TCP server per port)")  # fmt: skip
                continue
            names = bound.server_names()
            if bound.reads_sni and any(not names or not other or names & other
                                       for other in taken):  # fmt: skip
                skipped.append(f"{bound.where}: another TLS server on port {bound.port} "
                               "already claims these hosts")  # fmt: skip
                continue
            taken.append(names)
            servers.append(bound)
    return GatewayPlan(tuple(servers), tuple(skipped))


# --- routes -----------------------------------------------------------------------------------


def _virtual_hosts(
    snapshot: MeshSnapshot, proxy: ProxyInfo, servers: list[BoundServer]
) -> list[dict[str, Any]]:
    scope = Scope(snapshot)
    by_host: dict[str, list[dict[str, Any]]] = {}
    redirect: set[str] = set()
    for bound in servers:
        number = bound.server.port.number
        for resource, hosts in bound_virtual_services(snapshot.virtual_services, bound):
            if not resource.spec.http:
                continue
            applies = partial(match_applies, proxy=proxy, gateway=bound.reference, port=number,
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


def _http_filter(
    name: str, virtual_hosts: list[dict[str, Any]], telemetry: SidePlan
) -> dict[str, Any]:
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
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}
    return outbound_http(hcm, "HTTP", telemetry)


def _with_client_telemetry(chain: dict[str, Any], telemetry: SidePlan) -> dict[str, Any]:
    """A TCP chain's proxy counting `reporter="source"` connections, and the plan's logs."""
    chain["filters"] = [outbound_tcp(f, telemetry) if f["name"] == _TCP_PROXY else f
                        for f in chain["filters"]]  # fmt: skip
    return chain


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
    if bound.kind == "https":  # a terminated TLS server's payload is opaque: no ALPN
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
    telemetry = telemetry_policy(snapshot, proxy.namespace, proxy.label_map).client
    by_port: dict[tuple[str, int], list[BoundServer]] = {}
    for bound in plan.servers:
        by_port.setdefault((bound.address, bound.port), []).append(bound)
    listeners = []
    for (address, port), servers in sorted(by_port.items()):
        name = listener_name(address, port)
        chains: list[dict[str, Any]] = []
        if servers[0].kind == "http":  # plan_gateway keeps one family per port
            chains.append({"name": f"http.{port}", "filters": [
                _http_filter(f"http.{port}", _virtual_hosts(snapshot, proxy, servers), telemetry)
            ]})  # fmt: skip
        elif servers[0].kind == "tcp":
            chains += tcp_chains(snapshot, proxy, servers[0])
        # Terminating chains claim their names first; passthrough rules get the names left.
        taken = {n for b in servers if b.terminates_tls for n in b.server_names()}
        for bound in servers:
            if bound.kind == "passthrough":
                chains += passthrough_chains(snapshot, proxy, bound, taken)
            if bound.kind == "auto_passthrough":
                names = [n for n in server_sni_names(Scope(snapshot), bound) if n not in taken]
                taken.update(names)
                auto = auto_passthrough_chain(bound, names)
                chains += [auto] if auto is not None else []
            if not bound.terminates_tls:
                continue
            gateway = bound.gateway
            route_name = f"{bound.kind}.{port}.{gateway.namespace}.{gateway.name}.{bound.index}"
            if bound.kind == "tls":  # terminated, then the first `tcp` rule that applies
                routed = tcp_chains(snapshot, proxy, bound)
                if not routed:
                    continue
                filters = routed[0]["filters"]
            else:
                virtual_hosts = _virtual_hosts(snapshot, proxy, [bound])
                filters = [_http_filter(route_name, virtual_hosts, telemetry)]
            match = {"server_names": sorted(bound.server_names())} if bound.server_names() else {}
            chains.append({
                "name": route_name,
                "filter_chain_match": match,
                "transport_socket": {"name": "envoy.transport_sockets.tls",
                                     "typed_config": _downstream_tls(bound, snapshot.trust_domain)},
                "filters": filters,
            })  # fmt: skip
        chains = [_with_client_telemetry(chain, telemetry) for chain in chains]
        if not chains:
            continue  # no route for these servers yet: Envoy refuses a listener without chains
        listener: dict[str, Any] = {
            "name": name,
            "address": socket_address(address, port),
            # Inbound to the mesh: the agent's graceful drain (inbound only) covers it.
            "traffic_direction": "INBOUND",
            "filter_chains": chains,
        }
        if servers[0].reads_sni:
            listener["listener_filters"] = [TLS_INSPECTOR]
        listeners.append(json_format.ParseDict(listener, listener_pb2.Listener()))
    return listeners
