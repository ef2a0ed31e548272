"""ServiceEntry → services of the mesh model, so every later stage (routes, clusters, views)
treats a ServiceEntry host like a Kubernetes Service.

Istio's translation (pilot/pkg/serviceregistry/serviceentry): one service per host, its ports
the entry's; `addresses` give the host a VIP (its own outbound listener), a host without one is
reached by its name on the port's wildcard listener. `resolution` decides the cluster: STATIC
endpoints are served over EDS, DNS ones are resolved by Envoy (the host itself when the entry
lists no endpoints), NONE forwards to the caller's original destination. MESH_EXTERNAL
endpoints never get mTLS; MESH_INTERNAL ones do when labelled `security.istio.io/tlsMode:
istio`, like pods. Pure: validated resources in, model pieces out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sidemesh.api.networking import Resource, ServiceEntry
from sidemesh.api.networking.common import is_ip
from sidemesh.xds.envoy_json import TLS_MODE_ISTIO
from sidemesh.xds.model import Endpoint, Resolution, Service, ServicePort, port_protocol

TLS_MODE_LABEL = "security.istio.io/tlsMode"
_RESOLUTIONS: Mapping[str, Resolution] = {
    "STATIC": "EDS", "DNS": "DNS", "DNS_ROUND_ROBIN": "DNS_ROUND_ROBIN", "NONE": "NONE",
}  # fmt: skip


# The workloads (Pods, WorkloadEntries) of a namespace a label selector picks, as endpoints of
# a service: the registry's own selection, handed in so this module stays pure.
Selector = Callable[[Service, Mapping[str, str]], Iterable[Endpoint]]


def entry_services(
    entries: Iterable[Resource[ServiceEntry]],
    taken: Iterable[str] = (),
    problems: list[str] | None = None,
    select: Selector | None = None,
) -> tuple[list[Service], dict[str, tuple[Endpoint, ...]]]:
    """The services and endpoints of `entries` (ordered by namespace/name). A host already in
    `taken` (a Kubernetes Service) or claimed by an earlier entry is skipped, and why is
    appended to `problems`: one host, one service. An entry with a `workloadSelector` gets
    the workloads `select` picks in its namespace."""
    seen = set(taken)
    services: list[Service] = []
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    for resource in entries:
        for host in resource.spec.hosts:
            if host in seen:
                if problems is not None:
                    problems.append(f"{resource.describe()}: host {host!r} is already defined; "
                                    "this entry's is ignored")  # fmt: skip
                continue
            seen.add(host)
            service = entry_service(resource, host)
            services.append(service)
            selector = resource.spec.workload_selector
            if selector is not None:
                picked = select(service, selector.labels) if select is not None else ()
                endpoints[host] = tuple(sorted(set(picked)))
            else:
                endpoints[host] = entry_endpoints(resource, service)
    return services, endpoints


def entry_service(resource: Resource[ServiceEntry], host: str) -> Service:
    spec = resource.spec
    vip = next((a for a in spec.addresses if is_ip(a)), None)  # CIDRs get no listener of their own
    ports = tuple(sorted(
        ServicePort(port=p.number, name=p.name or "",
                    protocol=port_protocol(p.name or "", p.protocol),
                    target_port=p.target_port)
        for p in spec.ports
    ))  # fmt: skip
    return Service(
        namespace=resource.namespace,
        name=host,
        vip=vip,
        ports=ports,
        host=host,
        resolution=_RESOLUTIONS[spec.resolution or "NONE"],
        export_to=spec.export_to,
    )


def entry_endpoints(resource: Resource[ServiceEntry], service: Service) -> tuple[Endpoint, ...]:
    spec = resource.spec
    internal = spec.location == "MESH_INTERNAL"
    found: list[Endpoint] = []
    for port in service.ports:
        declared = next(p for p in spec.ports if p.number == port.port)
        default_target = declared.target_port or declared.number
        if not spec.endpoints and service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            found.append(Endpoint(service.hostname, default_target, port.port,
                                  namespace=resource.namespace))  # fmt: skip
            continue
        for entry in spec.endpoints:
            address = entry.address or ""
            if not address or address.startswith("unix://"):
                continue  # network-only (multi-network gateways) and unix endpoints: not here
            labels: dict[str, Any] = dict(entry.labels)
            found.append(Endpoint(
                address=address,
                port=entry.ports.get(port.name, default_target),
                service_port=port.port,
                service_account=entry.service_account or "default",
                namespace=resource.namespace,
                has_sidecar=internal and labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO,
                labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            ))  # fmt: skip
    return tuple(sorted(set(found)))


def tls_ports(entries: Iterable[Resource[ServiceEntry]]) -> frozenset[tuple[str, int]]:
    """(host, port) pairs whose ServiceEntry port speaks TLS (protocol TLS/HTTPS, or a port
    named so): the model proxies them as opaque TCP; the wildcard listener tells them apart
    by SNI."""
    found: set[tuple[str, int]] = set()
    for resource in entries:
        for port in resource.spec.ports:
            protocol = (port.protocol or (port.name or "").partition("-")[0]).upper()
            if protocol in ("TLS", "HTTPS"):
                found.update((host, port.number) for host in resource.spec.hosts)
    return frozenset(found)
