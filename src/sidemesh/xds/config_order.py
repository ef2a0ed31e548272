"""Istio's order for configuration that conflicts, and its merge of DestinationRules. Pure.

Istio sorts VirtualServices, DestinationRules and ServiceEntries oldest first
(`sortConfigByCreationTime`: `metadata.creationTimestamp`, then name, then namespace, so equal
times still give one order), and every rule that picks one of several reads that order:
* a sidecar uses only the oldest VirtualService naming a host (`Scope.virtual_service_for`);
  a gateway merges the routes of all those bound to it, oldest first (`xds.gateway`);
* DestinationRules for one host in one namespace (both without workloadSelector, or with equal
  ones) are merged into the oldest: its traffic policy stays (a later one's is used only when
  it has none), and subsets are added by name, a name already present kept (`merged_rule`);
* ServiceEntries are kept oldest first, as Istio does so addresses are allocated the same way
  each time;
* of several Sidecars at one level of precedence for a workload (which Istio calls undefined),
  the oldest applies, as Istio's sorted sidecar scopes make it (`scoping.select_sidecar`).

The snapshot holds these kinds in this order (`xds.builder`), so a generator walking them
meets the oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sidemesh.api.networking import DestinationRule, Resource
from sidemesh.xds.model import resolve_host

R = TypeVar("R", bound=Resource[Any])
OLDEST_FIRST_KINDS = ("VirtualService", "DestinationRule", "ServiceEntry", "Sidecar")


def config_order(resource: Resource[Any]) -> tuple[float, str, str]:
    """Istio's sort key: creation time, then name, then namespace."""
    return (resource.created, resource.name, resource.namespace)


def oldest_first(resources: Iterable[R]) -> tuple[R, ...]:
    return tuple(sorted(resources, key=config_order))


def _selector(rule: Resource[DestinationRule]) -> dict[str, str] | None:
    selector = rule.spec.workload_selector
    return None if selector is None else dict(selector.labels)


def merged_rule(
    chosen: Resource[DestinationRule], candidates: Sequence[Resource[DestinationRule]]
) -> Resource[DestinationRule]:
    """`chosen` merged, Istio's way, with the other `candidates` for the same host that share
    its namespace and workload selector: the oldest of them is the base; the others add
    subsets with new names, and a traffic policy when the base has none."""
    group = oldest_first(
        rule
        for rule in candidates
        if rule.namespace == chosen.namespace
        and resolve_host(rule.spec.host, rule.namespace)
        == resolve_host(chosen.spec.host, chosen.namespace)
        and _selector(rule) == _selector(chosen)
    )
    if len(group) < 2:
        return chosen
    base, *later = group
    subsets = list(base.spec.subsets)
    policy = base.spec.traffic_policy
    for rule in later:
        names = {subset.name for subset in subsets}
        subsets += [subset for subset in rule.spec.subsets if subset.name not in names]
        if policy is None:
            policy = rule.spec.traffic_policy
    spec = base.spec.model_copy(update={"subsets": tuple(subsets), "traffic_policy": policy})
    return Resource(
        api_version=base.api_version,
        kind=base.kind,
        namespace=base.namespace,
        name=base.name,
        labels=base.labels,
        spec=spec,
        created=base.created,
    )
