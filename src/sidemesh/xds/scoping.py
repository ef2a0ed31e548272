"""Per-proxy views: which part of the mesh one sidecar sees, and so receives.

A proxy's outbound configuration depends on the Sidecar resource that selects it (egress hosts,
outbound traffic policy), on `exportTo` of ServiceEntries, VirtualServices and
DestinationRules, on DestinationRule `workloadSelector`, and on VirtualService matches by
`sourceLabels`/`sourceNamespace`. `view_of` reduces a proxy to a `ProxyView` holding only the
facts the current snapshot makes relevant (its namespace only when some configuration reads
it, only the label keys some selector reads), so proxies with equal views share every byte;
`Scope` is the snapshot as one view sees it. Pure functions of the snapshot.

Istio's rules (pilot/pkg/model/sidecar.go, push_context.go):
* the Sidecar of a proxy is the one in its namespace whose workloadSelector matches its
  labels, else the one in its namespace without a selector, else the root namespace's one
  without a selector; the first by namespace/name when several qualify (Istio: the oldest);
* egress hosts are `namespace/host`: namespace `*` (any), `.` (the proxy's), `~` (none) or a
  name; host `*`, `*.suffix` or a name; an egress listener with a `port` decides what is seen
  on that port, the one without a port the other ports (`sidecar_egress`), so a service may be
  seen on some of its ports only (`Scope.services` then carries just those);
* the services the routes of the VirtualServices an egress listener imports send traffic to
  are seen too, on that listener's port or the ports the routes name (`scoping_destinations`),
  but only as clusters: `Scope.listener_services`, which the outbound listeners are built
  from, leaves out what only such a route makes visible;
* exportTo: empty or `*` everywhere, `.` the object's own namespace, `~` nowhere, or names;
* a DestinationRule with a workloadSelector applies only to selected workloads of its own
  namespace; lookup prefers the proxy's namespace, then the service's, then the root's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from sidemesh.api.networking import DestinationRule, Resource, Sidecar, VirtualService
from sidemesh.api.networking.virtual_service import (
    MESH_GATEWAY,
    HTTPMatchRequest,
    L4MatchAttributes,
)
from sidemesh.xds.config_order import merged_rule
from sidemesh.xds.model import MeshSnapshot, OutboundPolicy, Service, resolve_host
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.scoping_destinations import routed_ports
from sidemesh.xds.sidecar_egress import EgressPlan, egress_plan

EVERYWHERE = ("*",)


@dataclass(frozen=True)
class ProxyView:
    """What a proxy's outbound resources depend on besides the snapshot."""

    namespace: str = ""  # "" when nothing in the snapshot depends on it
    labels: tuple[tuple[str, str], ...] = ()  # only the keys some selector reads
    sidecar: str = ""  # "namespace/name" of the Sidecar resource that applies, if any


GLOBAL_VIEW = ProxyView()


def exported(export_to: Iterable[str], owner: str, namespace: str) -> bool:
    """Whether an object of namespace `owner` with `export_to` is visible in `namespace`."""
    targets = tuple(export_to)
    if not targets or "*" in targets:
        return True
    return any(t == namespace or (t == "." and owner == namespace) for t in targets)


def _restricted(export_to: Iterable[str]) -> bool:
    targets = tuple(export_to)
    return bool(targets) and "*" not in targets


def _selector(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


@dataclass(frozen=True)
class ScopingFacts:
    """What of a snapshot makes views differ; computed once per snapshot."""

    namespace_matters: bool
    label_keys: frozenset[str]
    sidecars: tuple[Resource[Sidecar], ...]

    @classmethod
    def of(cls, snapshot: MeshSnapshot) -> ScopingFacts:
        keys: set[str] = set()
        namespace_matters = bool(snapshot.sidecars)
        for resource in snapshot.virtual_services:
            spec = resource.spec
            namespace_matters |= _restricted(spec.export_to)
            matches: list[HTTPMatchRequest | L4MatchAttributes] = [
                m for r in spec.http for m in r.match
            ]
            matches += [m for r in spec.tcp for m in r.match]
            matches += [m for r in spec.tls for m in r.match]
            for match in matches:
                keys.update(match.source_labels)
                namespace_matters |= match.source_namespace is not None
        hosts: dict[str, int] = {}
        for rule in snapshot.destination_rules:
            namespace_matters |= _restricted(rule.spec.export_to)
            if rule.spec.workload_selector is not None:
                keys.update(rule.spec.workload_selector.labels)
                namespace_matters = True  # it applies in its own namespace only
            host = resolve_host(rule.spec.host, rule.namespace)
            hosts[host] = hosts.get(host, 0) + 1
        # Which rule wins only depends on the caller's namespace when rules compete for a host.
        namespace_matters |= any(n > 1 for n in hosts.values())
        namespace_matters |= any(h.startswith("*") for h in hosts) and len(hosts) > 1
        namespace_matters |= any(_restricted(s.export_to) for s in snapshot.services)
        for sidecar in snapshot.sidecars:
            if sidecar.spec.workload_selector is not None:
                keys.update(sidecar.spec.workload_selector.labels)
        return cls(namespace_matters, frozenset(keys), snapshot.sidecars)

    def sidecar_for(self, namespace: str, labels: Mapping[str, str], root: str) -> str:
        """`namespace/name` of the Sidecar that applies to a workload, or ""."""
        found = select_sidecar(self.sidecars, namespace, labels, root)
        return "" if found is None else f"{found.namespace}/{found.name}"


def select_sidecar(
    sidecars: Iterable[Resource[Sidecar]], namespace: str, labels: Mapping[str, str], root: str
) -> Resource[Sidecar] | None:
    """The Sidecar that applies to a workload (Istio's precedence, above), or None."""

    def selector(sidecar: Resource[Sidecar]) -> tuple[tuple[str, str], ...]:
        chosen = sidecar.spec.workload_selector
        return _selector(chosen.labels if chosen is not None else None)

    every = tuple(sidecars)
    own = [s for s in every if s.namespace == namespace]
    for level in (
        [s for s in own if selector(s) and all(labels.get(k) == v for k, v in selector(s))],
        [s for s in own if not selector(s)],
        [s for s in every if s.namespace == root and not selector(s)],
    ):
        if level:  # sidecars come oldest first (`config_order`): the oldest one wins
            return level[0]
    return None


def view_of(
    snapshot: MeshSnapshot, proxy: ProxyInfo, facts: ScopingFacts | None = None
) -> ProxyView:
    facts = facts or ScopingFacts.of(snapshot)
    if not facts.namespace_matters and not facts.label_keys:
        return GLOBAL_VIEW
    labels = proxy.label_map
    sidecar = facts.sidecar_for(proxy.namespace, labels, snapshot.root_namespace)
    return ProxyView(
        namespace=proxy.namespace if facts.namespace_matters else "",
        labels=tuple((k, v) for k, v in proxy.labels if k in facts.label_keys),
        sidecar=sidecar,
    )


def _egress_host_matches(pattern: str, service: Service, namespace: str) -> bool:
    wanted_namespace, _, host = pattern.partition("/")
    if wanted_namespace == "~":
        return False
    if wanted_namespace == ".":
        wanted_namespace = namespace
    if wanted_namespace != "*" and wanted_namespace != service.namespace:
        return False
    hostname = service.hostname
    if host == "*" or host == hostname:
        return True
    if host.startswith("*."):
        return hostname.endswith(host[1:]) or (hostname.startswith("*.")
                                               and hostname.endswith(host[1:]))  # fmt: skip
    return False


class Scope:
    """The snapshot as the proxies of one view see it (lookups memoised per scope)."""

    def __init__(self, snapshot: MeshSnapshot, view: ProxyView = GLOBAL_VIEW) -> None:
        self.snapshot = snapshot
        self.view = view
        self._rules: dict[str, Resource[DestinationRule] | None] = {}

    @cached_property
    def sidecar(self) -> Sidecar | None:
        if not self.view.sidecar:
            return None
        namespace, _, name = self.view.sidecar.partition("/")
        return next((s.spec for s in self.snapshot.sidecars
                     if s.namespace == namespace and s.name == name), None)  # fmt: skip

    @cached_property
    def outbound_policy(self) -> OutboundPolicy:
        sidecar = self.sidecar
        if sidecar is not None and sidecar.outbound_traffic_policy is not None:
            mode = sidecar.outbound_traffic_policy.mode
            if mode is not None:
                return mode
        return self.snapshot.outbound_policy

    @property
    def registry_only(self) -> bool:
        return self.outbound_policy == "REGISTRY_ONLY"

    @cached_property
    def egress(self) -> EgressPlan | None:
        """The Sidecar's egress listeners as a plan (`sidecar_egress`), or None: everything
        exported is seen, on every port."""
        sidecar = self.sidecar
        return None if sidecar is None else egress_plan(sidecar)

    def visible(self, service: Service) -> bool:
        """Whether this view sees `service` on at least one of its ports."""
        return self.visible_on(service) is not None

    def visible_on(self, service: Service, *, routed: bool = True) -> Service | None:
        """`service` as this view sees it: None when not at all, else with only the ports some
        egress listener lets it see (the same object when every port is seen). `routed`:
        count the ports seen only as an imported VirtualService's destination."""
        namespace = self.view.namespace
        if not exported(service.export_to, service.namespace, namespace):
            return None
        plan = self.egress
        if plan is None:
            return service
        routed_ports = self._routed_ports if routed else {}
        routed_here = routed_ports.get((service.namespace, service.hostname), frozenset())
        ports = tuple(
            p for p in service.ports
            if p.port in routed_here
            or any(_egress_host_matches(h, service, namespace) for h in plan.hosts_for(p.port))
        )  # fmt: skip
        if not ports:
            return None
        return service if len(ports) == len(service.ports) else replace(service, ports=ports)

    @cached_property
    def _routed_ports(self) -> Mapping[tuple[str, str], frozenset[int]]:
        """(namespace, hostname) → the ports a service is seen on because the routes of a
        VirtualService some egress listener imports send traffic to it."""
        plan = self.egress
        if plan is None:
            return {}
        return routed_ports(plan, self._mesh_virtual_services, self._destination_service,
                            self.view.namespace)  # fmt: skip

    @cached_property
    def _mesh_virtual_services(self) -> tuple[Resource[VirtualService], ...]:
        """The VirtualServices the sidecars of this view may use: bound to the mesh (those
        bound to gateways only are not the sidecars' business) and exported to its namespace."""
        return tuple(
            r for r in self.snapshot.virtual_services
            if (not r.spec.gateways or MESH_GATEWAY in r.spec.gateways)
            and exported(r.spec.export_to, r.namespace, self.view.namespace)
        )  # fmt: skip

    def _destination_service(self, hostname: str) -> Service | None:
        """The service a route's destination hostname names, if exported to this view (a
        snapshot holds one service per hostname, so Istio's choice among namespaces serving
        one hostname does not arise)."""
        found = self.snapshot.services_by_host.get(hostname)
        if found is None or not exported(found.export_to, found.namespace, self.view.namespace):
            return None
        return found

    @cached_property
    def services(self) -> tuple[Service, ...]:
        """The services this view sees, sorted (the order every generator walks them in),
        each with the ports it is seen on."""
        everything = sorted(self.snapshot.services)
        if self.view == GLOBAL_VIEW:
            return tuple(everything)
        seen = (self.visible_on(s) for s in everything)
        return tuple(s for s in seen if s is not None)

    @cached_property
    def listener_services(self) -> tuple[Service, ...]:
        """The services that get this view's outbound listeners (VIP:port listeners, wildcard
        listener hosts), sorted, each with the ports an egress listener's hosts import. A
        service seen only as the destination of an imported VirtualService's route
        (`scoping_destinations`) is in `services` (a cluster, endpoints) but not here: it is
        reached through that VirtualService, as in Istio, not called directly by address."""
        if not self._routed_ports:
            return self.services
        seen = (self.visible_on(s, routed=False) for s in sorted(self.snapshot.services))
        return tuple(s for s in seen if s is not None)

    @cached_property
    def services_by_host(self) -> Mapping[str, Service]:
        return {s.hostname: s for s in self.services}

    @cached_property
    def _virtual_services_by_host(self) -> Mapping[str, Resource[VirtualService]]:
        found: dict[str, Resource[VirtualService]] = {}
        for resource in self._mesh_virtual_services:
            for host in resource.spec.hosts:
                found.setdefault(resolve_host(host, resource.namespace), resource)
        return found

    def virtual_service_for(self, hostname: str) -> Resource[VirtualService] | None:
        """The VirtualService routing `hostname` for this view: one naming it exactly, else the
        one whose wildcard host (`*.example.com`) is the longest suffix of it. Istio does not
        merge several for one host outside gateways: the first one wins, and the snapshot
        holds them oldest first (`config_order`), as Istio's."""
        by_host = self._virtual_services_by_host
        found = by_host.get(hostname)
        if found is not None or not self._wildcard_hosts:
            return found
        matching = [h for h in self._wildcard_hosts if hostname.endswith(h[1:])]
        return by_host[max(matching, key=len)] if matching else None

    @cached_property
    def _wildcard_hosts(self) -> tuple[str, ...]:
        return tuple(h for h in self._virtual_services_by_host if h.startswith("*."))

    def source_matches(self, match: HTTPMatchRequest | L4MatchAttributes) -> bool:
        """Whether a match's `sourceLabels`/`sourceNamespace` hold for this view's proxies."""
        labels = dict(self.view.labels)
        if any(labels.get(k) != v for k, v in match.source_labels.items()):
            return False
        return match.source_namespace is None or match.source_namespace == self.view.namespace

    def destination_rule_for(self, service: Service) -> Resource[DestinationRule] | None:
        host = service.hostname
        if host not in self._rules:
            self._rules[host] = self._find_rule(service)
        return self._rules[host]

    @cached_property
    def _rule_index(self) -> tuple[
        Mapping[str, list[tuple[str, Resource[DestinationRule]]]],
        list[tuple[str, Resource[DestinationRule]]],
    ]:  # fmt: skip
        """The rules this view may use: exact hosts indexed, wildcard ones listed."""
        namespace = self.view.namespace
        labels = dict(self.view.labels)
        exact: dict[str, list[tuple[str, Resource[DestinationRule]]]] = {}
        wildcard: list[tuple[str, Resource[DestinationRule]]] = []
        for rule in self.snapshot.destination_rules:
            spec = rule.spec
            if spec.workload_selector is not None and (rule.namespace != namespace or any(
                labels.get(k) != v for k, v in spec.workload_selector.labels.items()
            )):  # fmt: skip
                continue
            if not exported(spec.export_to, rule.namespace, namespace):
                continue
            host = resolve_host(spec.host, rule.namespace)
            if host.startswith("*"):
                wildcard.append((host, rule))
            else:
                exact.setdefault(host, []).append((host, rule))
        return exact, wildcard

    def _find_rule(self, service: Service) -> Resource[DestinationRule] | None:
        namespace = self.view.namespace
        exact, wildcards = self._rule_index
        hostname = service.hostname
        candidates = exact.get(hostname) or [
            (h, r) for h, r in wildcards if hostname.endswith(h[1:]) or hostname == h
        ]
        if not candidates:
            return None
        root = self.snapshot.root_namespace

        def rank(candidate: tuple[str, Resource[DestinationRule]]) -> tuple[Any, ...]:
            host, rule = candidate
            return (rule.namespace != namespace, rule.spec.workload_selector is None,
                    rule.namespace != service.namespace, rule.namespace != root,
                    -len(host), rule.namespace, rule.name)  # fmt: skip

        # Istio merges the rules for one host of one namespace, oldest first (`config_order`).
        return merged_rule(min(candidates, key=rank)[1], [r for _, r in candidates])
