"""Traffic configuration findings: what a VirtualService or DestinationRule refers to that is
not there, and what two of them make undefined. Pure: stored objects in, findings out.

* IST0106 SchemaValidationError: a stored object `sidemesh validate` refuses (it got in before
  the validating webhook was closed, or past another control plane's);
* IST0101 ReferencedResourceNotFound: a route to a host the mesh does not know (no Service,
  no ServiceEntry), or to a subset no DestinationRule of that host defines;
* IST0109 ConflictingMeshGatewayVirtualServiceHosts: two VirtualServices bound to the `mesh`
  gateway for one host (only the oldest takes effect, and the finding names it);
* IST0130 VirtualServiceUnreachableRule: an HTTP/TCP rule after a rule that matches everything;
* IST0173 DestinationRuleSubsetNotSelectPods: a subset no pod of its service carries the
  labels of (requests routed to it fail with 503 UH, no healthy upstream);
* SM0015 SidecarListenerNotServed: a Sidecar listener asking for what is not done
  (`analyze.sidecar_resource`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidemesh.analyze import findings as codes
from sidemesh.analyze.findings import Finding
from sidemesh.analyze.sidecar_resource import sidecar_findings
from sidemesh.api import networking
from sidemesh.api.networking import (
    DestinationRule,
    Resource,
    ServiceEntry,
    Sidecar,
    VirtualService,
)
from sidemesh.api.networking.common import Destination
from sidemesh.api.networking.virtual_service import MESH_GATEWAY, HTTPRoute, TCPRoute, TLSRoute
from sidemesh.kube.snapshot import Object, labels_of, name_of, namespace_of
from sidemesh.xds.config_order import config_order
from sidemesh.xds.model import resolve_host

DOMAIN = "cluster.local"
PROBLEMS_SHOWN = 3


@dataclass(frozen=True)
class TrafficConfig:
    """The stored traffic configuration of every namespace, and every Service."""

    virtual_services: tuple[Object, ...] = ()
    destination_rules: tuple[Object, ...] = ()
    service_entries: tuple[Object, ...] = ()
    services: tuple[Object, ...] = ()
    sidecars: tuple[Object, ...] = ()


@dataclass(frozen=True)
class _Route:
    """One destination a VirtualService sends traffic to, and where it says so."""

    path: str  # spec.http[0].route[1].destination
    host: str  # as resolved in the VirtualService's namespace
    written: str  # as written
    subset: str | None


class _Mesh:
    """The parsed configuration and the hosts the mesh knows."""

    def __init__(self, config: TrafficConfig) -> None:
        self.invalid: list[tuple[Object, networking.ValidationError]] = []
        self.virtual_services: list[Resource[VirtualService]] = self._parse(config.virtual_services)
        self.destination_rules: list[Resource[DestinationRule]] = self._parse(
            config.destination_rules
        )
        entries: list[Resource[ServiceEntry]] = self._parse(config.service_entries)
        self.sidecars: list[Resource[Sidecar]] = self._parse(config.sidecars)
        self.services: dict[str, Object] = {
            f"{name_of(s)}.{namespace_of(s)}.svc.{DOMAIN}": s for s in config.services
        }
        self.entry_hosts = {
            canonical(host, entry.namespace) for entry in entries for host in entry.spec.hosts
        }

    def _parse(self, objects: Sequence[Object]) -> list[Any]:
        parsed = []
        for obj in objects:
            try:
                parsed.append(networking.validate(obj))
            except networking.ValidationError as exc:
                self.invalid.append((obj, exc))
        return parsed

    def knows(self, host: str) -> bool:
        return host in self.services or any(_host_matches(p, host) for p in self.entry_hosts)

    def subsets_of(self, host: str) -> set[str]:
        """Subset names DestinationRules define for `host` (exact or wildcard rule hosts)."""
        names: set[str] = set()
        for rule in self.destination_rules:
            if _host_matches(canonical(rule.spec.host, rule.namespace), host):
                names |= {subset.name for subset in rule.spec.subsets}
        return names


def canonical(host: str, namespace: str) -> str:
    """The host a name means in `namespace`: short names are Services of the namespace
    (Istio's rule), and `name.ns` / `name.ns.svc` name a Service through the DNS search path."""
    host = resolve_host(host, namespace, DOMAIN)
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return f"{parts[0]}.{parts[1]}.svc.{DOMAIN}"
    return host


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return pattern == host


def _in_scope(namespace: str, scope: set[str] | None) -> bool:
    return scope is None or namespace in scope


def _routes(vs: Resource[VirtualService]) -> Iterator[_Route]:
    def route(path: str, destination: Destination) -> _Route:
        host = canonical(destination.host, vs.namespace)
        return _Route(path, host, destination.host, destination.subset)

    for i, http in enumerate(vs.spec.http):
        for j, weighted in enumerate(http.route):
            yield route(f"spec.http[{i}].route[{j}].destination", weighted.destination)
        if http.mirror is not None:
            yield route(f"spec.http[{i}].mirror", http.mirror)
    layer4: list[tuple[str, Sequence[TCPRoute | TLSRoute]]] = [
        ("tcp", vs.spec.tcp), ("tls", vs.spec.tls)
    ]  # fmt: skip
    for kind, rules in layer4:
        for i, rule in enumerate(rules):
            for j, target in enumerate(rule.route):
                yield route(f"spec.{kind}[{i}].route[{j}].destination", target.destination)


def invalid_objects(mesh: _Mesh, scope: set[str] | None) -> Iterator[Finding]:
    """IST0106: stored objects the validate path refuses."""
    for obj, error in mesh.invalid:
        if not _in_scope(namespace_of(obj) or "default", scope):
            continue
        shown = "; ".join(str(issue) for issue in error.issues[:PROBLEMS_SHOWN])
        more = len(error.issues) - PROBLEMS_SHOWN
        shown += f" (and {more} more)" if more > 0 else ""
        yield Finding(
            codes.SCHEMA_VALIDATION_ERROR, error.document,
            f"the stored object is invalid: {shown}",
            "fix it and apply it again (sidemesh validate -f FILE lists every problem); "
            "meanwhile the control plane ignores it",
        )  # fmt: skip


def referenced_resources(mesh: _Mesh, scope: set[str] | None) -> Iterator[Finding]:
    """IST0101: routes to unknown hosts, or to subsets no DestinationRule defines."""
    for vs in mesh.virtual_services:
        if not _in_scope(vs.namespace, scope):
            continue
        for route in _routes(vs):
            if not mesh.knows(route.host):
                yield Finding(
                    codes.REFERENCED_RESOURCE_NOT_FOUND, vs.describe(),
                    f'Referenced host not found: "{route.written}" ({route.path}.host): no '
                    "Service or ServiceEntry has that name, so the route fails",
                    f"create the Service, or a ServiceEntry for an external host, or correct "
                    f"{route.path}.host",
                )  # fmt: skip
            elif route.subset is not None and route.subset not in mesh.subsets_of(route.host):
                yield Finding(
                    codes.REFERENCED_RESOURCE_NOT_FOUND, vs.describe(),
                    f'Referenced host+subset in destinationrule not found: "{route.written}+'
                    f'{route.subset}" ({route.path}.subset): requests routed there fail (503 NR)',
                    f"define subset {route.subset} in the DestinationRule of {route.host}, or "
                    f"route to a subset it defines",
                )  # fmt: skip


def conflicting_hosts(mesh: _Mesh, scope: set[str] | None) -> Iterator[Finding]:
    """IST0109: several VirtualServices bound to the mesh gateway claim one host."""
    claims: dict[str, list[Resource[VirtualService]]] = defaultdict(list)
    for vs in mesh.virtual_services:
        if vs.spec.gateways and MESH_GATEWAY not in vs.spec.gateways:
            continue
        for host in dict.fromkeys(canonical(h, vs.namespace) for h in vs.spec.hosts):
            claims[host].append(vs)
    for host, claimants in sorted(claims.items()):
        if len(claimants) < 2:
            continue
        listed = ", ".join(sorted(f"{v.namespace}/{v.name}" for v in claimants))
        # Istio's rule (and sidemesh's, `xds.config_order`): sidecars use the oldest only.
        winner = min(claimants, key=config_order)
        won = f"{winner.namespace}/{winner.name}"
        for vs in claimants:
            if _in_scope(vs.namespace, scope):
                yield Finding(
                    codes.CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS, vs.describe(),
                    f"the VirtualServices {listed} bound to the mesh gateway all define host "
                    f"{host}: only the oldest, {won}, takes effect for sidecars (by "
                    "creationTimestamp, then name, then namespace)"
                    + ("" if vs is winner else "; this one's rules for the host are ignored"),
                    "merge them into a single VirtualService for the host",
                )  # fmt: skip


def unreachable_rules(mesh: _Mesh, scope: set[str] | None) -> Iterator[Finding]:
    """IST0130: rules after a rule without matches (it takes every request)."""
    for vs in mesh.virtual_services:
        if not _in_scope(vs.namespace, scope):
            continue
        ordered: list[tuple[str, Sequence[HTTPRoute | TCPRoute]]] = [
            ("http", vs.spec.http), ("tcp", vs.spec.tcp)
        ]  # fmt: skip
        for kind, rules in ordered:
            catch_all = next((i for i, rule in enumerate(rules) if not rule.match), None)
            if catch_all is None:
                continue
            for index in range(catch_all + 1, len(rules)):
                yield Finding(
                    codes.VIRTUAL_SERVICE_UNREACHABLE_RULE, vs.describe(),
                    f"VirtualService rule spec.{kind}[{index}] is never used: spec.{kind}"
                    f"[{catch_all}] has no match and takes every request",
                    f"move spec.{kind}[{catch_all}] last, or give it a match",
                )  # fmt: skip


def subsets_without_pods(
    mesh: _Mesh, scope: set[str] | None, pods: Sequence[Object], pod_scope: set[str] | None
) -> Iterator[Finding]:
    """IST0173: a subset of a Kubernetes Service whose pods none carry its labels. Only where
    the Service's pods were loaded (`pod_scope`); finished pods do not count."""
    for rule in mesh.destination_rules:
        service = mesh.services.get(canonical(rule.spec.host, rule.namespace))
        if service is None or not _in_scope(rule.namespace, scope):
            continue
        if not _in_scope(namespace_of(service), pod_scope):
            continue
        selected = _service_pods(service, pods)
        for subset in rule.spec.subsets:
            if any(_has_labels(pod, subset.labels) for pod in selected):
                continue
            wanted = ",".join(f"{k}={v}" for k, v in sorted(subset.labels.items()))
            yield Finding(
                codes.DESTINATION_RULE_SUBSET_NOT_SELECT_PODS, rule.describe(),
                f"subset {subset.name} selects no pod of Service {namespace_of(service)}/"
                f"{name_of(service)} (labels {wanted or 'none'}): requests routed to it fail "
                "with 503 UH (no healthy upstream)",
                f"deploy pods labelled {wanted} behind the Service, or correct the subset's "
                "labels",
            )  # fmt: skip


def _service_pods(service: Object, pods: Sequence[Object]) -> list[Object]:
    spec = service.get("spec")
    selector = spec.get("selector") if isinstance(spec, Mapping) else None
    if not isinstance(selector, Mapping) or not selector:
        return []  # no selector: endpoints are managed by hand, nothing to compare
    namespace = namespace_of(service)
    return [
        pod for pod in pods
        if namespace_of(pod) == namespace and _has_labels(pod, selector) and not _finished(pod)
    ]  # fmt: skip


def _has_labels(pod: Object, wanted: Mapping[str, Any]) -> bool:
    labels = labels_of(pod)
    return all(labels.get(key) == value for key, value in wanted.items())


def _finished(pod: Object) -> bool:
    status = pod.get("status")
    return isinstance(status, Mapping) and status.get("phase") in ("Succeeded", "Failed")


def traffic_findings(
    config: TrafficConfig,
    *,
    namespaces: set[str] | None,
    pods: Sequence[Object],
    pod_namespaces: set[str] | None,
) -> list[Finding]:
    """Every traffic finding on objects in `namespaces` (None: all). `pods` are those of
    `pod_namespaces` (None: every namespace), for the subset check."""
    mesh = _Mesh(config)
    return [
        *invalid_objects(mesh, namespaces),
        *referenced_resources(mesh, namespaces),
        *conflicting_hosts(mesh, namespaces),
        *unreachable_rules(mesh, namespaces),
        *subsets_without_pods(mesh, namespaces, pods, pod_namespaces),
        *sidecar_findings(mesh.sidecars, namespaces),
    ]
