"""Building crafted cluster snapshots: installed revisions, tags, namespaces and pods."""

from __future__ import annotations

from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.install import manifests, workload
from sidemesh.install.tags import tag_configuration
from sidemesh.install.values import InstallValues
from sidemesh.install.webhooks import WebhookSettings
from sidemesh.kube.snapshot import ClusterSnapshot


def revision(rev: str, *, service: bool = True, default_tag_exists: bool = False) -> dict[str, Any]:
    """The snapshot parts one installed revision contributes."""
    values = InstallValues()
    parts: dict[str, Any] = {
        "webhook_configurations": [
            manifests.injector_webhook(values, rev, default_tag_exists=default_tag_exists)
        ],
        "injector_config_maps": [workload.injector_configmap(values, rev)],
        "services": [workload.service(rev)] if service else [],
    }
    return parts


def tag(name: str, rev: str) -> dict[str, Any]:
    settings = WebhookSettings(service_name=names.service_name(rev))
    return {"webhook_configurations": [tag_configuration(name, rev, settings)]}


def namespace(name: str, *, rev: str | None = None, injection: str | None = None) -> dict[str, Any]:
    labels = {}
    if rev is not None:
        labels[names.LABEL_REVISION] = rev
    if injection is not None:
        labels[names.LABEL_INJECTION] = injection
    return {"namespaces": [{"metadata": {"name": name, "labels": labels}}]}


def pod(
    ns: str,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    sidecar: str | None = None,
    run_as: int | None = None,
    pod_run_as: int | None = None,
    host_network: bool = False,
    phase: str = "Running",
    owner: tuple[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "app"}
    if run_as is not None:
        container["securityContext"] = {"runAsUser": run_as}
    spec: dict[str, Any] = {"containers": [container]}
    annotations: dict[str, str] = {}
    if sidecar is not None:
        spec["containers"].append({"name": "istio-proxy", "image": "sidemesh"})
        annotations[names.ANNOTATION_STATUS] = orjson.dumps(
            {"containers": ["istio-proxy"], "revision": sidecar}
        ).decode()
    if pod_run_as is not None:
        spec["securityContext"] = {"runAsUser": pod_run_as}
    if host_network:
        spec["hostNetwork"] = True
    metadata: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels or {}),
                                "annotations": annotations}  # fmt: skip
    if owner is not None:
        metadata["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "apiVersion": "v1",
                                        "uid": "u"}]  # fmt: skip
        if owner[0] == "ReplicaSet":
            metadata["labels"]["pod-template-hash"] = owner[1].rsplit("-", 1)[1]
    return {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                      "status": {"phase": phase}}]}  # fmt: skip


def cluster(*parts: dict[str, Any]) -> ClusterSnapshot:
    merged: dict[str, list[Any]] = {}
    for part in parts:
        for key, items in part.items():
            merged.setdefault(key, []).extend(items)
    return ClusterSnapshot(**{k: tuple(v) for k, v in merged.items()})


SYSTEM = (namespace("kube-system"), namespace("istio-system"), namespace("kube-public"))
