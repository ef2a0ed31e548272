"""A gateway's TLS passthrough and TCP filter chains, from the `tls` and `tcp` rules of the
VirtualServices bound to its Gateways. Pure functions of (snapshot, proxy, server).

Istio's translation for gateways:
* a PASSTHROUGH server (HTTPS or TLS) gets one filter chain per `tls` rule, matched by the SNI
  names its matches list (`sniHosts`, cut down to the server's hosts); the chain's tcp_proxy
  forwards the client's bytes, its TLS handshake included, so the client sees the backend's
  certificate. A name a former rule took stays with it (the oldest VirtualService first);
* a TCP server gets one chain from the first `tcp` rule whose match holds (its `gateways`,
  `port`, source), in VirtualService order.

The upstream is the mesh's outbound cluster `outbound|PORT|SUBSET|HOST`, as Istio uses: to a
workload with a sidecar the connection is mesh mTLS whose payload is the client's TLS (that
sidecar unwraps the mesh hop and hands the application the client's handshake, so encryption
stays end to end); to one without, plain TCP carrying the client's TLS. A separate plaintext
cluster would bypass the backend's PeerAuthentication (a STRICT backend would refuse it).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sidemesh.xds.gateway_servers import BoundServer, bound_virtual_services, match_applies
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.routes import route_tcp_proxy
from sidemesh.xds.scoping import Scope


def _chain_name(bound: BoundServer, what: str) -> str:
    gateway = bound.gateway
    return f"{what}.{bound.port}.{gateway.namespace}.{gateway.name}.{bound.index}"


def _sni_within(sni: str, server_names: frozenset[str]) -> str | None:
    """The part of `sni` a server with these names serves (its names empty: any)."""
    if not server_names:
        return sni
    for name in sorted(server_names):
        if sni == name or (name.startswith("*.") and sni.endswith(name[1:])):
            return sni
        if sni.startswith("*.") and name.endswith(sni[1:]):
            return name
    return None


def passthrough_chains(
    snapshot: MeshSnapshot, proxy: ProxyInfo, bound: BoundServer, taken: set[str]
) -> list[dict[str, Any]]:
    """The filter chains of a PASSTHROUGH server: one per `tls` rule that names SNI hosts
    this server serves; none when no VirtualService routes it. `taken` holds the SNI names
    other chains of the listener match (two chains matching one name make Envoy refuse the
    listener); the names used here are added to it."""
    scope = Scope(snapshot)
    number = bound.server.port.number
    chains: list[dict[str, Any]] = []
    for resource, _ in bound_virtual_services(snapshot.virtual_services, bound):
        applies = partial(match_applies, proxy=proxy, gateway=bound.reference, port=number,
                          namespace=resource.namespace)  # fmt: skip
        for index, rule in enumerate(resource.spec.tls):
            names: set[str] = set()
            for match in rule.match:
                if not applies(match):
                    continue
                for sni in match.sni_hosts:
                    served = _sni_within(sni, bound.server_names())
                    if served is not None and served not in taken:
                        names.add(served)
            if not names or not rule.route:
                continue
            taken.update(names)
            # `*` matches any name: a chain without server_names (Envoy's catch-all).
            match_names = sorted(names - {"*"})
            chain: dict[str, Any] = {
                "name": _chain_name(bound, f"tls.{resource.namespace}.{resource.name}.{index}"),
                "filters": [route_tcp_proxy(scope, resource.namespace, rule.route, number)],
            }
            if "*" not in names:
                chain["filter_chain_match"] = {"server_names": match_names}
            chains.append(chain)
            if "*" in names:
                return chains  # nothing after a catch-all can be reached
    return chains


def tcp_chains(
    snapshot: MeshSnapshot, proxy: ProxyInfo, bound: BoundServer
) -> list[dict[str, Any]]:
    """The one filter chain of a TCP server (the first `tcp` rule that applies), or none."""
    scope = Scope(snapshot)
    number = bound.server.port.number
    for resource, _ in bound_virtual_services(snapshot.virtual_services, bound):
        applies = partial(match_applies, proxy=proxy, gateway=bound.reference, port=number,
                          namespace=resource.namespace)  # fmt: skip
        for index, rule in enumerate(resource.spec.tcp):
            if rule.route and (not rule.match or any(applies(m) for m in rule.match)):
                name = _chain_name(bound, f"tcp.{resource.namespace}.{resource.name}.{index}")
                filters = [route_tcp_proxy(scope, resource.namespace, rule.route, number)]
                return [{"name": name, "filters": filters}]
    return []
