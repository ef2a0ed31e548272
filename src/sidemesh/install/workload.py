"""The control plane's ConfigMaps, Deployment, Service and PodDisruptionBudget, per revision."""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from sidemesh.api import names
from sidemesh.api.config import Resources
from sidemesh.install import naming
from sidemesh.install.values import InstallValues

# (service port name, service port, container port): Istio's names. Only ports discovery serves
# are declared, so plaintext xDS (unauthenticated, off unless asked for) is added separately.
PLAINTEXT_XDS_PORT = ("grpc-xds", names.PORT_XDS_PLAINTEXT, names.PORT_XDS_PLAINTEXT)
SERVICE_PORTS: tuple[tuple[str, int, int], ...] = (
    ("https-dns", names.PORT_XDS_TLS, names.PORT_XDS_TLS),
    ("https-webhook", naming.WEBHOOK_SERVICE_PORT, names.PORT_WEBHOOK),
    ("http-monitoring", names.PORT_MONITORING, names.PORT_MONITORING),
)


def service_ports(*, plaintext_xds: bool) -> tuple[tuple[str, int, int], ...]:
    """The ports `sidemesh discovery` serves, as the Service declares them."""
    return (PLAINTEXT_XDS_PORT, *SERVICE_PORTS) if plaintext_xds else SERVICE_PORTS


def _metadata(name: str, revision: str, **extra_labels: str) -> dict[str, Any]:
    labels = {**naming.install_labels(revision), **extra_labels}
    return {"name": name, "namespace": naming.NAMESPACE, "labels": labels}


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def injector_configmap(values: InstallValues, revision: str) -> dict[str, Any]:
    config = values.injector_config().model_dump(by_alias=True, mode="json")
    injector_values = values.injector_values(revision).model_dump(by_alias=True, mode="json")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(naming.injector_configmap_name(revision), revision),
        "data": {
            "config": _yaml(config),
            "values": orjson.dumps(injector_values, option=orjson.OPT_INDENT_2).decode(),
        },
    }


def mesh_configmap(values: InstallValues, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(naming.mesh_configmap_name(revision), revision),
        "data": {"mesh": _yaml(values.mesh_config.model_dump(by_alias=True, mode="json"))},
    }


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        items = getattr(resources, kind).model_dump(exclude_none=True)
        if items:
            out[kind] = items
    return out


def discovery_args(
    revision: str, *, plaintext_xds: bool = False, sidecar_restarter: bool = False
) -> list[str]:
    """`sidemesh discovery` as the image's ENTRYPOINT runs it in the cluster."""
    cert_dir = naming.WEBHOOK_CERT_DIR
    extra = ["--xds-port", str(names.PORT_XDS_PLAINTEXT)] if plaintext_xds else []
    extra += ["--sidecar-restarter"] if sidecar_restarter else []
    return [
        "discovery",
        "--kube",
        "--revision", naming.revision_label(revision),
        "--injector-config", f"{naming.INJECTOR_CONFIG_DIR}/config",
        "--values", f"{naming.INJECTOR_CONFIG_DIR}/values",
        "--mesh-config", f"{naming.MESH_CONFIG_DIR}/mesh",
        "--tls-cert-file", f"{cert_dir}/tls.crt",
        "--tls-key-file", f"{cert_dir}/tls.key",
        *extra,
    ]  # fmt: skip


def _container(values: InstallValues, revision: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "REVISION", "value": naming.revision_label(revision)},
        {"name": "GATEWAY_CREDENTIAL_NAMESPACES",
         "value": ",".join(values.gateways.credential_namespaces)},
    ]  # fmt: skip
    env += [{"name": k, "value": v} for k, v in sorted(values.pilot.env.items())]
    plaintext_xds = values.pilot.plaintext_xds.enabled
    ports = sorted(service_ports(plaintext_xds=plaintext_xds), key=lambda p: p[2])
    container: dict[str, Any] = {
        "name": "discovery",
        "image": values.control_plane_image(),
        "args": discovery_args(
            revision,
            plaintext_xds=plaintext_xds,
            sidecar_restarter=values.sidecar_restarter.enabled,
        ),
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"} for name, _, port in ports
        ],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": names.PORT_WEBHOOK, "scheme": "HTTPS"},
            "initialDelaySeconds": 1,
            "periodSeconds": 3,
            "timeoutSeconds": 5,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": names.PROXY_UID,
            "runAsGroup": names.PROXY_GID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "inject", "mountPath": naming.INJECTOR_CONFIG_DIR, "readOnly": True},
            {"name": "config-volume", "mountPath": naming.MESH_CONFIG_DIR, "readOnly": True},
            {"name": "webhook-certs", "mountPath": naming.WEBHOOK_CERT_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if values.global_.image_pull_policy:
        container["imagePullPolicy"] = values.global_.image_pull_policy
    resources = _resources(values.pilot.resources)
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(values: InstallValues, revision: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": naming.service_account_name(revision),
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": names.PROXY_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": naming.selector_labels(revision)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
        "containers": [_container(values, revision)],
        "volumes": [
            {"name": "inject", "configMap": {"name": naming.injector_configmap_name(revision)}},
            {"name": "config-volume", "configMap": {"name": naming.mesh_configmap_name(revision)}},
            {"name": "webhook-certs", "emptyDir": {"medium": "Memory"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if values.pilot.node_selector:
        spec["nodeSelector"] = dict(values.pilot.node_selector)
    if values.pilot.tolerations:
        spec["tolerations"] = [dict(t) for t in values.pilot.tolerations]
    if values.pilot.priority_class_name:
        spec["priorityClassName"] = values.pilot.priority_class_name
    if values.global_.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in values.global_.image_pull_secrets]
    return spec


def deployment(values: InstallValues, revision: str) -> dict[str, Any]:
    template_metadata: dict[str, Any] = {"labels": naming.pod_labels(revision)}
    if values.pilot.pod_annotations:
        template_metadata["annotations"] = dict(values.pilot.pod_annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(naming.deployment_name(revision), revision, app="istiod"),
        "spec": {
            "replicas": values.pilot.replica_count,
            # Keep every ready replica until its successor is ready: the webhook fails closed.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": naming.selector_labels(revision)},
            "template": {"metadata": template_metadata, "spec": _pod_spec(values, revision)},
        },
    }


def service(revision: str, *, plaintext_xds: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.service_name(revision), revision, app="istiod"),
        "spec": {
            "selector": naming.selector_labels(revision),
            "ports": [
                {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}
                for name, port, target in service_ports(plaintext_xds=plaintext_xds)
            ],
        },
    }


def disruption_budget(revision: str) -> dict[str, Any]:
    # maxUnavailable (not minAvailable: 1) so a single-replica install never blocks a drain.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(naming.deployment_name(revision), revision, app="istiod"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector_labels(revision)},
        },
    }
