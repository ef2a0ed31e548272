"""Names the sidecar, the agent and Istio's tools rely on: resource type URLs, listener and
cluster names. Istio's spelling throughout, so `istioctl`-shaped tooling and habits carry over."""

from __future__ import annotations

from sidemesh.api import names

TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"

# The sidecar's own ports (Envoy's and the agent's): no listener of the mesh's configuration
# may take one (a `0.0.0.0_<port>` wildcard listener, a Sidecar egress or ingress listener),
# or Envoy would refuse the whole update or the agent lose its port.
PROXY_PORTS = frozenset({
    names.PORT_ENVOY_ADMIN, names.PORT_OUTBOUND_CAPTURE, names.PORT_INBOUND_CAPTURE,
    names.PORT_AGENT_STATUS, names.PORT_HEALTH, names.PORT_PROMETHEUS,
})  # fmt: skip


def outbound_cluster_name(port: int, hostname: str) -> str:
    return f"outbound|{port}||{hostname}"


def subset_cluster_name(port: int, subset: str, hostname: str) -> str:
    """`outbound|PORT|SUBSET|HOST`, Istio's; the empty subset is the service's own cluster."""
    return f"outbound|{port}|{subset}|{hostname}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def service_listener_name(vip: str, port: int) -> str:
    """Istio's name for the outbound listener of one service VIP:port (`10.96.0.10_80`)."""
    return f"{vip}_{port}"


def wildcard_listener_name(port: int) -> str:
    """Istio's name for a port's listener of no particular address (`0.0.0.0_80`)."""
    return f"0.0.0.0_{port}"
