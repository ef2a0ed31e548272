"""The listeners of a Sidecar's egress listeners with a `bind` or `captureMode: NONE`
(`sidecar_egress.BoundEgress`): `<address>_<port>`, routing to the hosts the view sees on that
port. Pure functions of a scope.

HTTP: one virtual host per service seen on the port, its domains the names an app would put in
the Host header (the hostname, the short forms for services of the proxy's own namespace, the
VIP; each also with `:port`), its routes the VirtualService's or the default route. Envoy
refuses a listener whose virtual hosts repeat a domain, so a name already taken by an earlier
host (sorted order) is left to it. TCP carries no name to route by: it works for exactly one
service on the port, and is left out, with the reason, otherwise.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from sidemesh.xds import outbound, routes, wildcard_listeners
from sidemesh.xds.envoy_json import http_connection_manager, socket_address, tcp_proxy, typed
from sidemesh.xds.model import Service, is_http
from sidemesh.xds.resource_names import outbound_cluster_name, service_listener_name
from sidemesh.xds.routes import FAULT_FILTER
from sidemesh.xds.scoping import Scope
from sidemesh.xds.sidecar_egress import BoundEgress
from sidemesh.xds.telemetry import NO_PLAN, outbound_http, outbound_tcp
from sidemesh.xds.telemetry_policy import SidePlan


@dataclass(frozen=True)
class BoundListeners:
    listeners: tuple[Any, ...]
    reasons: tuple[str, ...]  # what was left out, and why


def bound_egress_listeners(scope: Scope, telemetry: SidePlan = NO_PLAN) -> BoundListeners:
    """`telemetry`: the client side's access logs, tracing and metric overrides, as on the
    proxy's other outbound listeners."""
    plan = scope.egress
    if plan is None or not plan.bound:
        return BoundListeners((), ())
    taken = {service_listener_name(s.vip or "", p) for s, p in outbound.outbound_services(scope)}
    taken |= {f"0.0.0.0_{port}" for port in wildcard_listeners.wildcard_hosts(scope)}
    listeners = []
    reasons = []
    for bound in plan.bound:
        name = service_listener_name(bound.address, bound.port)
        if name in taken:
            reasons.append(f"listener {name} is already a service's listener; the Sidecar's "
                           "listener there is left out")  # fmt: skip
            continue
        services = [s for s in scope.listener_services if s.port(bound.port) is not None]
        if is_http(bound.protocol):
            chain = _http_chain(scope, bound, services, telemetry)
        elif len(services) == 1:
            cluster = outbound_cluster_name(bound.port, services[0].hostname)
            chain = {"name": cluster, "filters": [outbound_tcp(tcp_proxy(cluster), telemetry)]}
        else:
            reasons.append(f"listener {name} (TCP) sees {len(services)} services on port "
                           f"{bound.port}; TCP has no host name to choose one by, so it is "
                           "left out")  # fmt: skip
            continue
        taken.add(name)
        listener = {
            "name": name,
            "address": socket_address(bound.address, bound.port),
            "bind_to_port": bound.bind_to_port,
            "traffic_direction": "OUTBOUND",
            "filter_chains": [chain],
        }
        listeners.append(json_format.ParseDict(listener, listener_pb2.Listener()))
    return BoundListeners(tuple(listeners), tuple(reasons))


def _http_chain(
    scope: Scope, bound: BoundEgress, services: Sequence[Service], telemetry: SidePlan
) -> dict[str, Any]:
    used: set[str] = set()
    virtual_hosts = []
    for service in services:
        domains = [d for d in _domains(service, bound.port, scope.view.namespace)
                   if d not in used]  # fmt: skip
        if not domains:
            continue
        used.update(domains)
        found = routes.http_routes(scope, service, bound.port)
        cluster = outbound_cluster_name(bound.port, service.hostname)
        default = [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]
        virtual_hosts.append({"name": f"{service.hostname}:{bound.port}", "domains": domains,
                              "routes": default if found is None else found})  # fmt: skip
    name = service_listener_name(bound.address, bound.port)
    fault = {
        "name": FAULT_FILTER,
        "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault"),
    }
    manager = http_connection_manager(name, [], filters=[fault])
    route_config = manager["typed_config"]["route_config"]
    route_config["virtual_hosts"] = virtual_hosts
    route_config["validate_clusters"] = False  # a route may name a subset not defined yet
    return {"name": name, "filters": [outbound_http(manager, bound.protocol, telemetry)]}


def _domains(service: Service, port: int, namespace: str) -> list[str]:
    names = [service.hostname]
    if not service.host and service.namespace == namespace:
        short = f"{service.name}.{service.namespace}"
        names += [service.name, short, f"{short}.svc"]
    if service.vip:
        names.append(service.vip)
    return [form for name in names for form in (name, f"{name}:{port}")]
