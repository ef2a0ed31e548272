"""Who is connected: a sidecar's identity and settings, parsed from its xDS Node.

Node ids are Istio's `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`; the metadata
carries NAMESPACE, SERVICE_ACCOUNT, LABELS, WORKLOAD_NAME, INTERCEPTION_MODE and the revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh.api import names

# Not Istio: where the two virtual listeners bind. The defaults are Istio's; the local runtime
# and the end-to-end tests (several Envoys on one host, no iptables) override them.
META_OUTBOUND_BIND = "SIDEMESH_OUTBOUND_BIND"
META_INBOUND_BIND = "SIDEMESH_INBOUND_BIND"


class NodeError(ValueError):
    """The node id or metadata cannot be understood; the message says which part."""


@dataclass(frozen=True)
class Bind:
    address: str
    port: int


@dataclass(frozen=True)
class ProxyInfo:
    node_id: str
    ip: str
    pod_name: str
    namespace: str
    service_account: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    workload_name: str = ""
    revision: str = ""
    istio_version: str = ""
    interception_mode: str = "REDIRECT"
    cluster_id: str = names.DEFAULT_CLUSTER_ID
    outbound_bind: Bind = Bind("0.0.0.0", names.PORT_OUTBOUND_CAPTURE)
    inbound_bind: Bind = Bind("0.0.0.0", names.PORT_INBOUND_CAPTURE)
    # Node metadata GENERATOR: "grpc" for a proxyless gRPC client (`xds.grpc_gen`), "" for Envoy.
    generator: str = ""

    @property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)


def parse_node(node_id: str, metadata: Mapping[str, Any]) -> ProxyInfo:
    parts = node_id.split("~")
    if len(parts) != 4 or parts[0] not in ("sidecar", "router"):
        raise NodeError(f"node id {node_id!r} is not TYPE~IP~POD.NAMESPACE~DOMAIN")
    _, ip, pod_dot_ns, _domain = parts
    pod_name, _, id_namespace = pod_dot_ns.partition(".")
    namespace = str(metadata.get("NAMESPACE") or id_namespace)
    if not ip or not namespace:
        raise NodeError(f"node id {node_id!r} has no IP or namespace")
    raw_labels = metadata.get("LABELS") or {}
    if not isinstance(raw_labels, Mapping):
        raise NodeError("node metadata LABELS is not a map")
    labels = tuple(sorted((str(k), str(v)) for k, v in raw_labels.items()))
    return ProxyInfo(
        node_id=node_id,
        ip=ip,
        pod_name=pod_name,
        namespace=namespace,
        service_account=str(metadata.get("SERVICE_ACCOUNT") or "default"),
        labels=labels,
        workload_name=str(metadata.get("WORKLOAD_NAME") or pod_name),
        revision=str(
            metadata.get("REVISION")
            or metadata.get("ISTIO_REVISION")
            or dict(labels).get(names.LABEL_REVISION)
            or "default"
        ),
        istio_version=str(metadata.get("ISTIO_VERSION") or ""),
        interception_mode=str(metadata.get("INTERCEPTION_MODE") or "REDIRECT"),
        cluster_id=str(metadata.get("CLUSTER_ID") or names.DEFAULT_CLUSTER_ID),
        outbound_bind=_bind(metadata, META_OUTBOUND_BIND, names.PORT_OUTBOUND_CAPTURE),
        inbound_bind=_bind(metadata, META_INBOUND_BIND, names.PORT_INBOUND_CAPTURE),
        generator=str(metadata.get("GENERATOR") or ""),
    )


def _bind(metadata: Mapping[str, Any], key: str, default_port: int) -> Bind:
    raw = metadata.get(key)
    if not raw:
        return Bind("0.0.0.0", default_port)
    address, _, port = str(raw).rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise NodeError(f"node metadata {key}={raw!r} is not ADDRESS:PORT") from None
    if not address or not 0 < number < 65536:
        raise NodeError(f"node metadata {key}={raw!r} is not ADDRESS:PORT")
    return Bind(address, number)
