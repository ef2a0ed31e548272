"""A gateway's (router's) resources: listeners of its own (`xds.gateway`), the mesh's clusters
and load assignments as its view sees them, and for AUTO_PASSTHROUGH servers the SNI-DNAT
clusters (plain TCP twins of the outbound ones, named by the SNI). Pure: plan and sets in,
sets out; the cache memoises them."""

from __future__ import annotations

from sidemesh.xds import gateway, gateway_auto_passthrough
from sidemesh.xds.gateway import GatewayPlan
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.resource_sets import Resource, TypedResources


def gateway_resources(
    snapshot: MeshSnapshot,
    proxy: ProxyInfo,
    plan: GatewayPlan,
    *,
    clusters: TypedResources,
    endpoints: TypedResources,
) -> dict[str, TypedResources]:
    """The gateway's sets; `clusters` and `endpoints`: the shared sets of its view."""
    listeners = [
        Resource.of(TYPE_LISTENER, listener.name, listener.SerializeToString())
        for listener in gateway.gateway_listeners(snapshot, proxy, plan)
    ]
    if any(bound.kind == "auto_passthrough" for bound in plan.servers):
        twins = gateway_auto_passthrough.sni_dnat_bodies(
            (r.name, r.body) for r in clusters.resources.values()
        )
        clusters = TypedResources.extend(
            clusters, [Resource.of(TYPE_CLUSTER, n, b) for n, b in twins]
        )
    return {TYPE_LISTENER: TypedResources.of(TYPE_LISTENER, listeners),
            TYPE_CLUSTER: clusters, TYPE_ENDPOINT: endpoints}  # fmt: skip
