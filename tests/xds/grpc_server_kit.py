"""A proxyless gRPC server in tests: the workload `who-0` (Service `who`, gRPC on 7070 → 17070)
asking with the `grpc` generator, and the mesh snapshot it lives in."""

from __future__ import annotations

from typing import Any

from sidemesh.api.config import MeshConfig
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo, parse_node

NODE = "sidecar~10.0.0.21~who-0.demo~demo.svc.cluster.local"
NAME = "xds.istio.io/grpc/lds/inbound/0.0.0.0:17070"  # its server listener


def server(labels: dict[str, str] | None = None) -> ProxyInfo:
    """The server's node; its pod's labels are `app: who` unless given."""
    labels = {"app": "who"} if labels is None else labels
    return parse_node(NODE, {"NAMESPACE": "demo", "GENERATOR": "grpc", "LABELS": labels})


def mesh(*config: dict[str, Any]) -> MeshSnapshot:
    """The server's Service and Pod, and `config`."""
    objects = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "demo"},
         "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "who"},
                  "ports": [{"name": "grpc", "port": 7070, "targetPort": 17070}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "who-0", "namespace": "demo", "labels": {"app": "who"}},
         "spec": {"serviceAccountName": "who", "containers": [{"name": "app"}]},
         "status": {"podIP": "10.0.0.21", "conditions": [{"type": "Ready", "status": "True"}]}},
        *config,
    ]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1)
