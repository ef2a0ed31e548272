"""The values a sidecar template sees. Everything here is computed and validated in Python;
templates only arrange it. This is the documented template interface:

pod                {name, namespace, labels, annotations, service_account}
spec               the pod's spec as received (read it, do not rely on mutating it)
revision           control-plane revision serving this injection
image              proxy image (values or `sidecar.istio.io/proxyImage`)
image_pull_policy, image_pull_secrets
capture_args       `istio-init` args, or None when interception mode is NONE
proxy_args         `istio-proxy` args (the sidemesh agent)
interception_mode  REDIRECT | TPROXY | NONE
native_sidecar, hold_application, status_port, readiness{initialDelaySeconds,periodSeconds,
failureThreshold}, resources (or None)
proxy_config_json  JSON of the ProxyConfig fields that differ from the defaults
proxy_metadata     ProxyConfig.proxyMetadata (extra env for the proxy)
workload           {name, kind, owner}
canonical_name, canonical_revision, first_app_container, app_containers (comma list),
pod_ports (JSON list of the app containers' ports)
cluster_id, network, mesh_id, trust_domain, ca_addr, discovery_address
xds_plaintext_address  the discovery's plaintext xDS port (proxyless gRPC's bootstrap)
cluster_domain     values.global.proxy.clusterDomain (cluster.local)
user_volumes, user_volume_mounts   from the sidecar.istio.io/userVolume[Mount] annotations
bootstrap_override ConfigMap named by sidecar.istio.io/bootstrapOverride, or None
values, mesh, proxy_config         the full configuration, in its file spelling
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.inject.identity import Workload, canonical_name, canonical_revision, workload_of
from sidemesh.inject.params import InjectionParams
from sidemesh.inject.settings import InjectorSettings


def _app_container_names(spec: Mapping[str, Any]) -> list[str]:
    containers = spec.get("containers")
    if not isinstance(containers, list):
        return []
    return [
        c["name"]
        for c in containers
        if isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and c["name"] != names.CONTAINER_PROXY
    ]


def _pod_ports(spec: Mapping[str, Any]) -> str:
    ports: list[Any] = []
    for container in spec.get("containers") or []:
        if isinstance(container, dict) and container.get("name") != names.CONTAINER_PROXY:
            declared = container.get("ports")
            if isinstance(declared, list):
                ports.extend(declared)
    return orjson.dumps(ports).decode()


def build_context(
    pod: Mapping[str, Any],
    namespace: str,
    params: InjectionParams,
    settings: InjectorSettings,
    *,
    cluster_id: str | None,
    network: str | None,
    workload: Workload | None = None,
) -> dict[str, Any]:
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    workload = workload or workload_of(metadata)
    app_containers = _app_container_names(spec)
    values, mesh = settings.values, settings.mesh
    revision = settings.revision
    ca_addr = (
        f"{names.service_name(revision)}.{names.CONTROL_PLANE_NAMESPACE}.svc:{names.PORT_XDS_TLS}"
    )
    discovery = params.proxy_config.discovery_address or ca_addr
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    proxy_values = values.global_.proxy
    return {
        "pod": {
            "name": metadata.get("name") or "",
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "service_account": service_account,
        },
        "spec": spec,
        "revision": revision,
        "image": params.image,
        "image_pull_policy": values.global_.image_pull_policy,
        "image_pull_secrets": [{"name": s} for s in values.global_.image_pull_secrets],
        "capture_args": None
        if params.capture.mode == "NONE"
        else params.capture.args(params.status_port),
        "proxy_args": [
            "agent",
            "proxy",
            "sidecar",
            "--domain",
            f"$(POD_NAMESPACE).svc.{proxy_values.cluster_domain}",
            f"--proxyLogLevel={params.log_level}",
            f"--proxyComponentLogLevel={params.component_log_level}",
            f"--log_output_level={params.agent_log_level}",
        ],
        "interception_mode": params.capture.mode,
        "native_sidecar": params.native_sidecar,
        "hold_application": params.hold_application,
        "status_port": params.status_port,
        "readiness": dict(params.readiness),
        "resources": params.resources,
        "proxy_config_json": orjson.dumps(params.proxy_config.non_default()).decode(),
        "proxy_metadata": params.proxy_config.proxy_metadata,
        "workload": {
            "name": workload.name,
            "kind": workload.kind,
            "owner": workload.owner_uri(namespace),
        },
        "canonical_name": canonical_name(labels, workload),
        "canonical_revision": canonical_revision(labels),
        "first_app_container": app_containers[0] if app_containers else "",
        "app_containers": ",".join(app_containers),
        "pod_ports": _pod_ports(spec),
        "cluster_id": cluster_id or values.global_.cluster_id,
        "network": network if network is not None else values.global_.network,
        "mesh_id": mesh.mesh_id or values.global_.mesh_id or mesh.trust_domain,
        "trust_domain": mesh.trust_domain,
        "ca_addr": ca_addr,
        "discovery_address": discovery,
        "xds_plaintext_address": f"{names.service_name(revision)}."
        f"{names.CONTROL_PLANE_NAMESPACE}.svc:{names.PORT_XDS_PLAINTEXT}",
        "cluster_domain": proxy_values.cluster_domain,
        "user_volumes": params.user_volumes,
        "user_volume_mounts": params.user_volume_mounts,
        "bootstrap_override": params.bootstrap_override,
        "values": settings.values_dump,
        "mesh": settings.mesh_dump,
        "proxy_config": params.proxy_config.model_dump(by_alias=True),
    }
