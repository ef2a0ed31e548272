"""AUTO_PASSTHROUGH gateway servers (Istio's multi-network east-west gateway). Pure.

A client in another network dials the gateway with the SNI its own mesh cluster sends,
`outbound_.PORT_.SUBSET_.HOST` (`_` for no subset), and the gateway forwards the connection,
the client's mTLS handshake untouched, to that service's endpoints: no VirtualService is
involved. Istio's translation, as here:

* the gateway proxy gets *SNI-DNAT clusters*, one per outbound cluster `outbound|P|S|H`, named
  after the SNI (`outbound_.P_.S_.H`): the same endpoints (EDS still reads the outbound
  cluster's load assignment) and policy, but plain TCP upstream, because the bytes already are
  the client's mTLS, which the backend's sidecar terminates (so the backend's
  PeerAuthentication sees the real client);
* the server's filter chain reads the SNI (`envoy.filters.network.sni_cluster`) and hands the
  connection to the cluster of that name.

Security: `sni_cluster` would take *any* SNI as a cluster name, and the gateway also holds the
mesh's mTLS clusters (`outbound|...`, with the gateway's own identity) and the
PassthroughCluster. So the chain matches only the exact SNI-DNAT names the server's hosts
cover, never a wildcard: a name outside that list finds no chain and the connection is closed.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2  # noqa: F401

from sidemesh.xds import cluster_policy
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.gateway_servers import BoundServer, intersect_hosts
from sidemesh.xds.resource_names import BLACKHOLE, subset_cluster_name
from sidemesh.xds.scoping import Scope

SNI_CLUSTER: Final = "envoy.filters.network.sni_cluster"
_OUTBOUND: Final = "outbound|"


def sni_dnat_name(cluster_name: str) -> str | None:
    """`outbound|P|S|H` → `outbound_.P_.S_.H` (`_` for no subset); None for other clusters."""
    if not cluster_name.startswith(_OUTBOUND):
        return None
    parts = cluster_name.split("|")
    if len(parts) != 4:
        return None
    _, port, subset, host = parts
    return f"outbound_.{port}_.{subset}_.{host}"


def sni_dnat_cluster(outbound: Any) -> Any | None:
    """The SNI-DNAT twin of one outbound cluster (a `Cluster` message), or None when it has
    none (not an outbound cluster, or one forwarding to the original destination)."""
    name = sni_dnat_name(outbound.name)
    if name is None or outbound.type == cluster_pb2.Cluster.ORIGINAL_DST:
        return None
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(outbound)
    cluster.name = name
    if cluster.type == cluster_pb2.Cluster.EDS and not cluster.eds_cluster_config.service_name:
        cluster.eds_cluster_config.service_name = outbound.name
    # Plain TCP: the payload is already the client's TLS, ALPN and all.
    cluster.ClearField("transport_socket")
    cluster.ClearField("transport_socket_matches")
    cluster.ClearField("typed_extension_protocol_options")
    if cluster.load_assignment.cluster_name:
        cluster.load_assignment.cluster_name = name
    return cluster


def sni_dnat_clusters(outbound: Iterable[Any]) -> list[Any]:
    """SNI-DNAT clusters for a gateway with an AUTO_PASSTHROUGH server, in the given order."""
    return [c for c in (sni_dnat_cluster(o) for o in outbound) if c is not None]


def server_sni_names(scope: Scope, bound: BoundServer) -> list[str]:
    """The SNI-DNAT names an AUTO_PASSTHROUGH server serves: every outbound cluster (each
    port, each DestinationRule subset) of a service its hosts cover, sorted."""
    names: set[str] = set()
    hosts = bound.hosts()
    for service in scope.services:
        if service.resolution == "NONE":
            continue  # forwards to the original destination: no SNI-DNAT cluster
        if not any(namespace in ("*", service.namespace)
                   and intersect_hosts(service.hostname, host) == service.hostname
                   for namespace, host in hosts):  # fmt: skip
            continue
        for port in service.ports:
            for plan in cluster_policy.cluster_plans(scope, service, port.port):
                found = sni_dnat_name(subset_cluster_name(port.port, plan.subset, service.hostname))
                if found is not None:
                    names.add(found)
    return sorted(names)


def auto_passthrough_chain(bound: BoundServer, names: list[str]) -> dict[str, Any] | None:
    """The filter chain of an AUTO_PASSTHROUGH server: exactly `names` (other chains of the
    listener do not claim them), the cluster named by the SNI; None when no name is left."""
    if not names:
        return None
    gateway = bound.gateway
    proxy = typed(
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        stat_prefix=f"auto_passthrough.{bound.port}",
        cluster=BLACKHOLE,
    )  # fmt: skip  (replaced by the SNI's cluster)
    return {
        "name": f"auto_passthrough.{bound.port}.{gateway.namespace}.{gateway.name}.{bound.index}",
        "filter_chain_match": {"server_names": names},
        "filters": [
            {"name": SNI_CLUSTER,
             "typed_config": typed("envoy.extensions.filters.network.sni_cluster.v3.SniCluster")},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy},
        ],
    }  # fmt: skip


def sni_dnat_bodies(clusters: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`sni_dnat_clusters` on serialised clusters, (name, bytes) in and out: what the resource
    cache holds (only the outbound ones are parsed)."""
    found = []
    for name, body in clusters:
        if sni_dnat_name(name) is None:
            continue
        twin = sni_dnat_cluster(cluster_pb2.Cluster.FromString(body))
        if twin is not None:
            found.append((twin.name, twin.SerializeToString()))
    return found
