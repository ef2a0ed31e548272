"""What a VirtualService a Sidecar's egress listener imports makes visible besides its own
hosts: the services its routes send traffic to (Istio's "infer more possible destinations from
virtual services", pilot/pkg/model/sidecar.go `collectImportedServices`).

Istio's rules, which `scoping.Scope` applies per egress listener:
* a listener imports the VirtualServices bound to the mesh and exported to the proxy's
  namespace one of whose hosts overlaps one of the listener's hosts of the VirtualService's
  *own* namespace (`ns/host` with ns that namespace, `.` when it is the proxy's, or `*`);
* their destinations (`http` routes and mirrors, `tcp` and `tls` routes) become visible; an
  `http` route whose every match names another `sourceNamespace` cannot apply to the proxy and
  adds nothing;
* a destination is seen only when its service is exported to the proxy's namespace;
* a listener with a port shows the destination on that port only; the listener without one on
  the ports the routes name (every port when a destination names none).
Pure functions of their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from sidemesh.api.networking import Resource, VirtualService
from sidemesh.api.networking.common import Destination
from sidemesh.api.networking.virtual_service import TCPRoute, TLSRoute
from sidemesh.xds.model import Service, resolve_host
from sidemesh.xds.sidecar_egress import EgressPlan

EVERY_PORT = 0  # a destination without a port: the service is seen on all of its ports


def routed_ports(
    plan: EgressPlan,
    virtual_services: Iterable[Resource[VirtualService]],
    service_for: Callable[[str], Service | None],
    namespace: str,
) -> dict[tuple[str, str], frozenset[int]]:
    """(namespace, hostname) → the ports a service is seen on by a proxy of `namespace` with
    the egress `plan`, because a route of an imported VirtualService (of `virtual_services`,
    those bound to the mesh and exported to `namespace`) sends traffic to it. `service_for`
    says which service a destination hostname means (None: none known)."""
    listeners: list[tuple[int | None, tuple[str, ...]]] = list(plan.by_port.items())
    if plan.catch_all:
        listeners.append((None, plan.catch_all))
    found: dict[tuple[str, str], set[int]] = {}
    for resource in virtual_services:
        owner = resource.namespace
        hosts = tuple(resolve_host(h, owner) for h in resource.spec.hosts)
        routes = route_destinations(resource.spec, owner, namespace)
        for listener_port, patterns in listeners:
            if not any(imports(p, owner, hosts, namespace) for p in patterns):
                continue
            for hostname, wanted in routes.items():
                service = service_for(hostname)
                if service is not None:
                    seen = found.setdefault((service.namespace, hostname), set())
                    seen.update(_shown(service, listener_port, wanted, plan))
    return {key: frozenset(ports) for key, ports in found.items() if ports}


def _shown(
    service: Service, listener_port: int | None, wanted: frozenset[int], plan: EgressPlan
) -> Iterator[int]:
    """The ports of a destination `service` a listener shows: its own port (`listener_port`),
    or, for the listener without one, the ports the routes name that no other listener
    decides."""
    for port in (p.port for p in service.ports):
        if listener_port is not None:
            if port == listener_port:
                yield port
        elif port not in plan.by_port and (EVERY_PORT in wanted or port in wanted):
            yield port


def hosts_overlap(one: str, other: str) -> bool:
    """Istio's `host.Name.Matches`, both ways: equal hosts, or a wildcard (`*`, `*.suffix`)
    covering the other host, or two wildcards one of which covers the other."""
    if one.startswith("*") and other.startswith("*"):
        return one.endswith(other[1:]) or other.endswith(one[1:])
    if one.startswith("*"):
        return other.endswith(one[1:])
    if other.startswith("*"):
        return one.endswith(other[1:])
    return one == other


def imports(pattern: str, owner: str, hosts: tuple[str, ...], namespace: str) -> bool:
    """Whether the egress host `pattern` (`ns/host`) of a proxy in `namespace` imports a
    VirtualService of namespace `owner` with (resolved) `hosts`."""
    wanted, _, host = pattern.partition("/")
    if wanted == ".":
        wanted = namespace
    if wanted not in ("*", owner):  # `~` names no namespace
        return False
    return any(hosts_overlap(host, h) for h in hosts)


def route_destinations(
    spec: VirtualService, owner: str, namespace: str
) -> dict[str, frozenset[int]]:
    """Hostname (resolved in the VirtualService's namespace `owner`) → the ports its routes
    name (`EVERY_PORT` for a destination without one), for proxies of `namespace`."""
    found: dict[str, set[int]] = {}
    for destination in _destinations(spec, namespace):
        port = EVERY_PORT if destination.port is None else destination.port.number
        found.setdefault(resolve_host(destination.host, owner), set()).add(port)
    return {host: frozenset(ports) for host, ports in found.items()}


def _destinations(spec: VirtualService, namespace: str) -> Iterator[Destination]:
    for http in spec.http:
        sources = [m.source_namespace for m in http.match]
        if sources and all(s is not None and s != namespace for s in sources):
            continue  # only for proxies of other namespaces
        yield from (weighted.destination for weighted in http.route)
        if http.mirror is not None:
            yield http.mirror
    layer4: list[TCPRoute | TLSRoute] = [*spec.tcp, *spec.tls]
    for rule in layer4:
        yield from (target.destination for target in rule.route)
