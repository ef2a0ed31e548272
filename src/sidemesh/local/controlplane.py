"""A local control plane is an ordinary Deployment in `istio-system`, as in a cluster.

`control-plane start --revision REV` applies (into `istio-system`): a Secret with the webhook's
serving certificate, the `cacerts` Secret (the runtime's CA, Istio's plug-in layout), a
ServiceAccount, the Service `istiod[-REV]` (443 -> 15017 webhook, 15012, 15014: plaintext xDS
is off) and the Deployment `istiod[-REV]` whose pods run `sidemesh discovery`, labelled as the
guide shows (`app=istiod`, `istio.io/rev=REV`, `istio=istiod`). The runtime then "installs" the
revision's webhook entries (see `admission.webhook_entries`).

Later growth goes through `ControlPlaneOptions`: extra arguments and environment for
`sidemesh discovery`. The files the xDS server and mesh CA will read are already mounted:

| in the pod                     | what                                           |
|--------------------------------|------------------------------------------------|
| /var/run/secrets/istiod/tls    | tls.crt, tls.key (webhook serving pair)        |
| /etc/cacerts                   | ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem |
| /var/lib/sidemesh/registry     | Services, EndpointSlices, Pods, Namespaces (YAML) |
| /var/lib/sidemesh/tokens       | tokens.yaml: digests of the pods' identity tokens |
| /etc/istio/config              | mesh: the revision's MeshConfig (`mesh_config`)  |

and named in the environment (SIDEMESH_REGISTRY_DIR, SIDEMESH_LOCAL_TOKENS, SIDEMESH_CACERTS_DIR).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidemesh import __version__
from sidemesh.api import names
from sidemesh.local import mesh_config
from sidemesh.local.model import State
from sidemesh.local.pki import TOKEN_FILE

TLS_DIR = "/var/run/secrets/istiod/tls"
CACERTS_DIR = "/etc/cacerts"
REGISTRY_DIR = "/var/lib/sidemesh/registry"
TOKENS_DIR = "/var/lib/sidemesh/tokens"
CONTROL_PLANE_ACCOUNT = "istiod"
KEY_MODE = 0o440  # the secret volumes' files: root's, read by the pod's fsGroup (1337) only


@dataclass(frozen=True)
class ControlPlaneOptions:
    revision: str
    default: bool = False
    replicas: int = 1
    image: str = f"ghcr.io/sidemesh/sidemesh:{__version__}"
    extra_args: tuple[str, ...] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)


def revision_labels(revision: str) -> dict[str, str]:
    """The control-plane pods' labels (the guide's LABELS column, minus pod-template-hash)."""
    return {"app": "istiod", names.LABEL_REVISION: revision, "istio": "istiod"}


def serving_names(revision: str) -> list[str]:
    service = names.service_name(revision)
    namespace = names.CONTROL_PLANE_NAMESPACE
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def discovery_args(options: ControlPlaneOptions) -> list[str]:
    return [
        "discovery",
        "--tls-cert-file",
        f"{TLS_DIR}/tls.crt",
        "--tls-key-file",
        f"{TLS_DIR}/tls.key",
        "--revision",
        options.revision,
        "--port",
        str(names.PORT_WEBHOOK),
        # The mesh side: xDS and the CA over TLS on 15012, monitoring on 15014, reading the
        # runtime's registry, CA and token digests (mounted below).
        "--registry-file",
        REGISTRY_DIR,
        "--ca-dir",
        CACERTS_DIR,
        "--token-file",
        f"{TOKENS_DIR}/{TOKEN_FILE}",
        "--xds-tls-port",
        str(names.PORT_XDS_TLS),
        "--monitoring-port",
        str(names.PORT_MONITORING),
        # The revision's `istio[-REV]` ConfigMap, written by the runtime; re-read on change.
        "--mesh-config",
        mesh_config.MOUNTED_FILE,
        *options.extra_args,
    ]


def _secret(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": names.CONTROL_PLANE_NAMESPACE},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def control_plane_objects(
    options: ControlPlaneOptions,
    *,
    serving_cert: str,
    serving_key: str,
    ca_files: Mapping[str, str],
    state_dir: Path,
) -> list[dict[str, Any]]:
    revision = options.revision
    name = names.service_name(revision)
    namespace = names.CONTROL_PLANE_NAMESPACE
    labels = revision_labels(revision)
    selector = {"app": "istiod", names.LABEL_REVISION: revision}
    env = [
        {"name": "REVISION", "value": revision},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SIDEMESH_REGISTRY_DIR", "value": REGISTRY_DIR},
        {"name": "SIDEMESH_LOCAL_TOKENS", "value": f"{TOKENS_DIR}/tokens.yaml"},
        {"name": "SIDEMESH_CACERTS_DIR", "value": CACERTS_DIR},
        *({"name": k, "value": v} for k, v in options.extra_env.items()),
    ]
    container = {
        "name": "discovery",
        "image": options.image,
        "args": discovery_args(options),
        "env": env,
        "ports": [
            {"name": "https-webhook", "containerPort": names.PORT_WEBHOOK, "protocol": "TCP"},
            {"name": "https-dns", "containerPort": names.PORT_XDS_TLS, "protocol": "TCP"},
            {"name": "http-monitoring", "containerPort": names.PORT_MONITORING, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": names.PORT_WEBHOOK, "scheme": "HTTPS"},
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsUser": names.PROXY_UID,
            "runAsGroup": names.PROXY_GID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "istiod-tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "cacerts", "mountPath": CACERTS_DIR, "readOnly": True},
            {"name": "local-registry", "mountPath": REGISTRY_DIR, "readOnly": True},
            {"name": "local-tokens", "mountPath": TOKENS_DIR, "readOnly": True},
            {"name": "config-volume", "mountPath": mesh_config.MOUNT_DIR, "readOnly": True},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                # Never inject the control plane itself (server-side skip, as ASM's istiod).
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {names.ANNOTATION_INJECT: "false"},
                },
                "spec": {
                    "serviceAccountName": CONTROL_PLANE_ACCOUNT,
                    # As Istio's istiod: the keys below are root's, readable by this group.
                    "securityContext": {"fsGroup": names.PROXY_GID},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "istiod-tls",
                            "secret": {"secretName": f"{name}-tls", "defaultMode": KEY_MODE},
                        },
                        {
                            "name": "cacerts",
                            "secret": {"secretName": "cacerts", "defaultMode": KEY_MODE},
                        },
                        {
                            "name": "local-registry",
                            "hostPath": {
                                "path": str(state_dir / "registry"),
                                "type": "DirectoryOrCreate",
                            },
                        },
                        {
                            "name": "local-tokens",
                            "hostPath": {
                                "path": str(state_dir / "tokens"),
                                "type": "DirectoryOrCreate",
                            },
                        },
                        {
                            "name": "config-volume",
                            "hostPath": {
                                "path": str(mesh_config.mesh_dir(state_dir, revision)),
                                "type": "DirectoryOrCreate",
                            },
                        },
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "istiod", "istio": "pilot", names.LABEL_REVISION: revision},
        },
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "https-dns", "port": names.PORT_XDS_TLS, "protocol": "TCP"},
                {
                    "name": "https-webhook",
                    "port": 443,
                    "targetPort": names.PORT_WEBHOOK,
                    "protocol": "TCP",
                },
                {"name": "http-monitoring", "port": names.PORT_MONITORING, "protocol": "TCP"},
            ],
        },
    }
    return [  # the namespace is ensured by the caller (applying it would reset its labels)
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": CONTROL_PLANE_ACCOUNT, "namespace": namespace},
        },
        _secret(f"{name}-tls", {"tls.crt": serving_cert, "tls.key": serving_key}),
        _secret("cacerts", ca_files),
        service,
        deployment,
    ]


def promote_failure_policies(state: State, now: float) -> None:
    """A revision's webhook turns `failurePolicy: Fail` once one of its pods is ready."""
    for plane in state.control_planes.values():
        if plane.failure_policy == "Fail":
            continue
        wanted = revision_labels(plane.revision)
        if any(
            p.ready
            and p.namespace == names.CONTROL_PLANE_NAMESPACE
            and not p.terminating
            and all(p.labels.get(k) == v for k, v in wanted.items())
            for p in state.pods.values()
        ):
            plane.failure_policy = "Fail"
            state.record_event(
                namespace=names.CONTROL_PLANE_NAMESPACE,
                object=f"mutatingwebhookconfiguration/{names.webhook_configuration_name(plane.revision)}",
                type="Normal",
                reason="FailurePolicyFail",
                now=now,
                message=f"control plane {plane.revision!r} is ready: its webhook now fails closed",
            )


def stamp_mesh_config(state: State, now: float) -> None:
    """Keep each control plane's pod template annotated with the digest of the MeshConfig
    fields discovery reads only at start (`mesh_config.restart_digest`): when they change, the
    Deployment rolls (a new pod is ready before the old one goes); every other field is
    re-read by the running discovery."""
    namespace = names.CONTROL_PLANE_NAMESPACE
    for plane in state.control_planes.values():
        deployment = state.deployments.get(f"{namespace}/{names.service_name(plane.revision)}")
        if deployment is None:
            continue
        template = deployment.manifest.setdefault("spec", {}).setdefault("template", {})
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        digest = mesh_config.restart_digest(mesh_config.mesh_text(state.configmaps, plane.revision))
        previous = annotations.get(mesh_config.DIGEST_ANNOTATION)
        annotations[mesh_config.DIGEST_ANNOTATION] = digest
        if previous is not None and previous != digest:
            state.record_event(
                namespace=namespace,
                object=f"deployment/{deployment.name}",
                type="Normal",
                reason="MeshConfigRestart",
                now=now,
                message=f"control plane {plane.revision!r} restarts: a MeshConfig field read only "
                f"at start changed ({', '.join(mesh_config.RESTART_ALIASES)})",
            )
