"""The wildcard listeners `0.0.0.0_<port>`: how a sidecar reaches ServiceEntry hosts that have
no address of their own, and what meets every other destination on those ports.

Envoy hands a captured connection to the listener bound (`bind_to_port: false`) to its original
destination, falling back to the port's wildcard address: so a port some ServiceEntry host uses
without an address gets one listener that tells its hosts apart, by the Host header (HTTP) or
by SNI (TLS), and sends the rest to Istio's fallback: PassthroughCluster (ALLOW_ANY) or a 502 /
the BlackHoleCluster (REGISTRY_ONLY). Pure functions of small frozen inputs, memoised by
`cache.py`.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from sidemesh.xds import service_entries
from sidemesh.xds.envoy_json import (
    TLS_INSPECTOR,
    http_connection_manager,
    socket_address,
    tcp_proxy,
    typed,
)
from sidemesh.xds.model import Service, is_http
from sidemesh.xds.resource_names import (
    BLACKHOLE,
    PASSTHROUGH,
    PROXY_PORTS,
    outbound_cluster_name,
    wildcard_listener_name,
)
from sidemesh.xds.routes import FAULT_FILTER, listener_routes
from sidemesh.xds.scoping import Scope
from sidemesh.xds.telemetry import NO_PLAN, client_http_logs, client_tcp_logs
from sidemesh.xds.telemetry_policy import SidePlan

WILDCARD_ADDRESS = "0.0.0.0"
# Istio's virtual hosts for a port's requests to no known host: forwarded (ALLOW_ANY) or
# answered 502 (REGISTRY_ONLY).
ALLOW_ANY_HOST = "allow_any"
BLOCK_ALL_HOST = "block_all"

WildcardHost = tuple[Service, str, bool]  # service, its routes' memo key, TLS (by SNI)


def wildcard_hosts(scope: Scope) -> dict[int, list[WildcardHost]]:
    """Port → the ServiceEntry hosts without an address a view sees: they are reached by name
    (Host header, or SNI on a TLS port) on the port's wildcard listener `0.0.0.0_<port>`.
    Only hosts the view's egress hosts import (`Scope.listener_services`): one seen only as a
    VirtualService's destination is reached through that VirtualService, by its cluster."""
    tls = service_entries.tls_ports(scope.snapshot.service_entries)
    found: dict[int, list[WildcardHost]] = {}
    for service in scope.listener_services:
        if service.vip or not service.host:
            continue  # VIP services have listeners of their own; headless ones none
        for service_port in service.ports:
            if service_port.port in PROXY_PORTS:
                continue  # a listener there would make Envoy refuse the whole update
            key = listener_routes(scope, service, service_port.port)
            is_tls = (service.hostname, service_port.port) in tls
            found.setdefault(service_port.port, []).append((service, key, is_tls))
    return found


def wildcard_listener(
    port: int,
    hosts: Sequence[WildcardHost],
    *,
    registry_only: bool,
    telemetry: SidePlan = NO_PLAN,
) -> Any:
    """`0.0.0.0_<port>`: connections to a port's unknown addresses. HTTP: one virtual host per
    ServiceEntry host (by the Host header, its port stripped) and Istio's fallback, forward
    (`allow_any`) or 502 (`block_all`). TLS: one filter chain per host by SNI, the rest
    forwarded or blackholed. Opaque TCP: the first host's cluster takes the port, as in Istio
    (nothing else tells such connections apart). `telemetry`: the client side's access logs
    and tracing (no standard metrics or peer headers here: the hosts are not sidecars); the
    default plan adds nothing."""
    http = [(s, key) for s, key, _ in hosts if is_http(_protocol(s, port))]
    tls = [s for s, _, is_tls in hosts if is_tls and not is_http(_protocol(s, port))]
    name = wildcard_listener_name(port)
    if tls and not http:
        fallback_cluster = BLACKHOLE if registry_only else PASSTHROUGH
        by_sni = {
            "name": name,
            "address": socket_address(WILDCARD_ADDRESS, port),
            "bind_to_port": False,
            "traffic_direction": "OUTBOUND",
            "listener_filters": [TLS_INSPECTOR],
            "filter_chains": [{
                "name": outbound_cluster_name(port, s.hostname),
                "filter_chain_match": {"server_names": [s.hostname]},
                "filters": [client_tcp_logs(tcp_proxy(outbound_cluster_name(port, s.hostname)),
                                            telemetry)],
            } for s in tls],
            "default_filter_chain": {"name": fallback_cluster,
                                     "filters": [client_tcp_logs(tcp_proxy(fallback_cluster),
                                                                 telemetry)]},
        }  # fmt: skip
        return json_format.ParseDict(by_sni, listener_pb2.Listener())
    if http or not hosts:
        virtual_hosts = []
        for service, key in http:
            cluster = outbound_cluster_name(port, service.hostname)
            routes = (orjson.loads(key) if key
                      else [{"match": {"prefix": "/"},
                             "route": {"cluster": cluster, "timeout": "0s"}}])  # fmt: skip
            virtual_hosts.append({"name": f"{service.hostname}:{port}",
                                  "domains": [service.hostname], "routes": routes})  # fmt: skip
        if registry_only:
            action: dict[str, Any] = {"direct_response": {"status": 502}}
        else:
            action = {"route": {"cluster": PASSTHROUGH, "timeout": "0s"}}
        fallback = {"name": BLOCK_ALL_HOST if registry_only else ALLOW_ANY_HOST,
                    "domains": ["*"], "routes": [{"match": {"prefix": "/"}, **action}]}  # fmt: skip
        fault = {
            "name": FAULT_FILTER,
            "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault"),
        }
        manager = http_connection_manager(name, [], filters=[fault], strip_any_host_port=True)
        manager["typed_config"]["route_config"] = {
            "name": name, "virtual_hosts": [*virtual_hosts, fallback],
            "validate_clusters": False,
        }  # fmt: skip
        filters = [client_http_logs(manager, telemetry)]
    else:
        filters = [
            client_tcp_logs(tcp_proxy(outbound_cluster_name(port, hosts[0][0].hostname)), telemetry)
        ]
    listener = {
        "name": name,
        "address": socket_address(WILDCARD_ADDRESS, port),
        "bind_to_port": False,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"name": name, "filters": filters}],
    }
    return json_format.ParseDict(listener, listener_pb2.Listener())


def _protocol(service: Service, port: int) -> Any:
    service_port = service.port(port)
    return service_port.protocol if service_port is not None else "TCP"
