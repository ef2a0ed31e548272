"""The node agent's pure part: API objects in, the kubelet's records out, and back.

A Pod from the API server becomes the `PodRecord` the local runtime's kubelet (`kubelet`)
runs; the record's status goes back as the Pod's `status` (the same rendering `local get -o
yaml` uses, `objects.pod_object`). Services, ConfigMaps and Secrets become the records the
runtime's kube-proxy rules and hosts files (`services`) and its volumes read. Services backed by
a process on the host (`HostService`) get a stand-in endpoint: the node's bridge address, where
a relay (`node_ports`) listens.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh import __version__
from sidemesh.local.model import (
    ConfigMapRecord,
    NetworkRecord,
    PodPhase,
    PodRecord,
    SecretRecord,
    ServiceRecord,
    key,
)
from sidemesh.local.naming import pod_netns, veth_name
from sidemesh.local.objects import pod_object

HOST_SERVICE_LABEL = "node.sidemesh.io/host-service"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
_PHASES = ("Pending", "Running", "Succeeded", "Failed")


class NodeConfigError(ValueError):
    """A node option cannot be understood; the message quotes it."""


@dataclass(frozen=True)
class HostService:
    """Service port `namespace/name:port` is served by `host:host_port` on the host."""

    namespace: str
    name: str
    port: int
    host: str
    host_port: int

    @classmethod
    def parse(cls, text: str) -> HostService:
        """`NAMESPACE/NAME:PORT=HOST:PORT`."""
        try:
            service, address = text.split("=", 1)
            where, port = service.rsplit(":", 1)
            namespace, name = where.split("/", 1)
            host, host_port = address.rsplit(":", 1)
            return cls(namespace, name, int(port), host, int(host_port))
        except ValueError:
            raise NodeConfigError(
                f"--host-service {text!r}: expected NAMESPACE/NAME:PORT=HOST:PORT"
            ) from None


@dataclass(frozen=True)
class Exposed:
    """`host:host_port` on the host reaches Service port `namespace/name:port` inside."""

    host: str
    host_port: int
    namespace: str
    name: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Exposed:
        """`HOST:PORT=NAMESPACE/NAME:PORT`."""
        try:
            address, service = text.split("=", 1)
            host, host_port = address.rsplit(":", 1)
            where, port = service.rsplit(":", 1)
            namespace, name = where.split("/", 1)
            return cls(host, int(host_port), namespace, name, int(port))
        except ValueError:
            raise NodeConfigError(
                f"--expose {text!r}: expected HOST:PORT=NAMESPACE/NAME:PORT"
            ) from None


def timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> float | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


DEFAULT_SCHEDULER = "default-scheduler"


def is_unscheduled(pod: Mapping[str, Any]) -> bool:
    """A pod waiting for a node: no nodeName, not being deleted, not finished."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return (
        not spec.get("nodeName")
        and not _metadata(pod).get("deletionTimestamp")
        and phase not in ("Succeeded", "Failed")
    )


def fits(pod: Mapping[str, Any], node_labels: Mapping[str, str]) -> bool:
    """What the default scheduler would check before binding here, in the part that applies to
    a single node with no taints: the pod is the default scheduler's, and its nodeSelector
    matches the node's labels. (Affinity and resources are not looked at.)"""
    spec = pod.get("spec") or {}
    if (spec.get("schedulerName") or DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
        return False
    selector = spec.get("nodeSelector") or {}
    return all(node_labels.get(str(k)) == str(v) for k, v in selector.items())


# How pods find the API server (the kubelet's service environment for `kubernetes`): by the
# Service's DNS name, which the API server's certificate carries and every pod's hosts file
# maps to the Service's ClusterIP, rather than by that address, which a test API server's
# certificate may lack.
API_SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": "kubernetes.default.svc",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
}


def pod_record(pod: Mapping[str, Any], *, network: NetworkRecord, pod_ip: str) -> PodRecord:
    """A pod bound to this node, as the kubelet's record (no status yet); its containers get
    the API server's service environment first (their own `env` can override it)."""
    metadata = _metadata(pod)
    uid = str(metadata["uid"])
    manifest = {k: copy.deepcopy(v) for k, v in pod.items() if k != "status"}
    spec = manifest.get("spec") or {}
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            service_env = [{"name": k, "value": v} for k, v in API_SERVICE_ENV.items()]
            container["env"] = [*service_env, *(container.get("env") or [])]
    record = PodRecord(
        namespace=str(metadata["namespace"]),
        name=str(metadata["name"]),
        uid=uid,
        created=parse_time(metadata.get("creationTimestamp")) or 0.0,
        manifest=manifest,
        pod_ip=pod_ip,
        netns=pod_netns(network.prefix, uid),
        veth=veth_name(uid),
    )
    note_deletion(record, pod)
    return record


def note_deletion(record: PodRecord, pod: Mapping[str, Any]) -> None:
    metadata = _metadata(pod)
    requested = parse_time(metadata.get("deletionTimestamp"))
    if requested is not None and record.deletion_requested is None:
        record.deletion_requested = requested
        grace = metadata.get("deletionGracePeriodSeconds")
        record.grace_seconds = None if grace is None else int(grace)


def peer_record(pod: Mapping[str, Any]) -> PodRecord | None:
    """Any pod with an address (on this node or not), for Service endpoints and hosts files."""
    metadata = _metadata(pod)
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return None
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    phase: PodPhase = "Pending"
    if status.get("phase") in _PHASES:
        phase = status["phase"]
    return PodRecord(
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        created=parse_time(metadata.get("creationTimestamp")) or 0.0,
        manifest={k: v for k, v in pod.items() if k != "status"},
        deletion_requested=parse_time(metadata.get("deletionTimestamp")),
        phase=phase,
        pod_ip=str(status["podIP"]),
        ready=conditions.get("Ready") == "True",
    )


def pod_status(record: PodRecord, *, host_ip: str) -> dict[str, Any]:
    """The Pod's `status`, as the kubelet reports it."""
    status: dict[str, Any] = pod_object(record, host_ip=host_ip)["status"]
    return status


def service_record(service: Mapping[str, Any]) -> ServiceRecord:
    metadata = _metadata(service)
    cluster_ip = (service.get("spec") or {}).get("clusterIP")
    return ServiceRecord(
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        created=parse_time(metadata.get("creationTimestamp")) or 0.0,
        manifest=dict(service),
        cluster_ip=None if cluster_ip in (None, "", "None") else str(cluster_ip),
    )


def config_record(obj: Mapping[str, Any]) -> ConfigMapRecord | SecretRecord:
    metadata = _metadata(obj)
    kind = SecretRecord if obj.get("kind") == "Secret" else ConfigMapRecord
    return kind(
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        created=0.0,
        manifest={"data": dict(obj.get("data") or {})},
    )


def host_backed(
    services: Iterable[ServiceRecord], host_services: Iterable[HostService], bridge_ip: str
) -> tuple[dict[str, ServiceRecord], list[PodRecord]]:
    """Services keyed `namespace/name`, those served from the host rewritten to select a
    stand-in pod at the node's bridge address (one per host-backed Service, listening on the
    host ports); the stand-ins."""
    by_service: dict[tuple[str, str], dict[int, int]] = {}
    for backing in host_services:
        by_service.setdefault((backing.namespace, backing.name), {})[backing.port] = (
            backing.host_port
        )
    records: dict[str, ServiceRecord] = {}
    stand_ins: list[PodRecord] = []
    for service in services:
        ports = by_service.get((service.namespace, service.name))
        if ports is None:
            records[key(service.namespace, service.name)] = service
            continue
        manifest = copy.deepcopy(service.manifest)
        spec = manifest.setdefault("spec", {})
        spec["selector"] = {HOST_SERVICE_LABEL: service.name}
        for port in spec.get("ports") or []:
            if int(port.get("port", 0)) in ports:
                port["targetPort"] = ports[int(port["port"])]
        records[key(service.namespace, service.name)] = service.model_copy(
            update={"manifest": manifest}
        )
        stand_ins.append(
            PodRecord(
                namespace=service.namespace,
                name=f"host-{service.name}",
                uid=f"host-{service.namespace}-{service.name}",
                created=0.0,
                manifest={"metadata": {"labels": {HOST_SERVICE_LABEL: service.name}}},
                phase="Running",
                pod_ip=bridge_ip,
                ready=True,
            )
        )
    return records, stand_ins


def node_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.sidemesh.io/local-runtime": "true",
            },
        },
    }


def node_status(
    name: str, *, address: str, cpus: int, memory_bytes: int, max_pods: int, now: float
) -> dict[str, Any]:
    capacity = {"cpu": str(cpus), "memory": f"{memory_bytes // 1024}Ki", "pods": str(max_pods)}
    moment = timestamp(now)

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": moment,
            "lastTransitionTime": moment,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            condition("Ready", "True", "KubeletReady", "sidemesh node agent is posting ready"),
        ],
        "nodeInfo": {
            "kubeletVersion": f"sidemesh-{__version__}",
            "kubeProxyVersion": f"sidemesh-{__version__}",
            "containerRuntimeVersion": f"sidemesh-local://{__version__}",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "sidemesh local runtime",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def lease_object(node: str, node_uid: str, *, now: float) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_timestamp(now),
        },
    }
