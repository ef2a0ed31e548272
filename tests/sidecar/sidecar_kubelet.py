"""What kubelet does with an injected pod, as far as the sidecar tests need it: find a
container, resolve its env (value, fieldRef, resourceFieldRef, `$(VAR)`), materialise the
volumes it mounts, and map the agent's default paths onto those volumes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from sidemesh.agent import config as agent_config
from sidemesh.api import names

NAMESPACE = "demo"
HTTP_PORT, TCP_PORT = 8080, 9090  # the app's container ports
# Where the agent looks by default (Istio's paths) → the flag that moves it.
AGENT_PATH_FLAGS: Mapping[str, PurePosixPath] = {
    "--config-dir": PurePosixPath(agent_config.DEFAULT_CONFIG_DIR),
    "--token-path": PurePosixPath(agent_config.DEFAULT_TOKEN_PATH),
    "--root-cert": PurePosixPath(agent_config.DEFAULT_ROOT_CERT),
    "--podinfo-dir": PurePosixPath(agent_config.DEFAULT_PODINFO_DIR),
}


def pod_manifest(name: str, *, app: str, service_account: str,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A plain, not yet injected Pod as a user would write it."""
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": {"app": app}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{
                "name": "app",
                "image": "sidemesh-test-app",
                "ports": [{"name": "http", "containerPort": HTTP_PORT},
                          {"name": "tcp-echo", "containerPort": TCP_PORT}],
                # rewritten by the injector to the agent's /app-health/app/readyz
                "readinessProbe": {"httpGet": {"path": "/app-ready", "port": "http"},
                                   "periodSeconds": 5},
            }],
        },
    }  # fmt: skip


def container(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    for item in [*(spec.get("initContainers") or []), *spec["containers"]]:
        if item["name"] == name:
            return dict(item)
    raise AssertionError(f"the injected pod has no container {name}")


def _cpu_quantity(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def resolve_env(pod: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, str]:
    """A container's env as kubelet resolves it (value, fieldRef, resourceFieldRef)."""
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "status.podIP": pod["status"]["podIP"],
        "status.hostIP": pod["status"]["hostIP"],
    }
    env: dict[str, str] = {}
    for item in spec.get("env") or []:
        source = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in source:
            reference = source["resourceFieldRef"]
            resource = reference["resource"]
            kind, _, which = resource.partition(".")
            quantity = ((spec.get("resources") or {}).get(kind) or {}).get(which, "0")
            divisor = _cpu_quantity(str(reference.get("divisor") or "1")) or 1.0
            env[item["name"]] = str(math.ceil(_cpu_quantity(str(quantity)) / divisor))
        else:
            raise AssertionError(f"env {item['name']}: a source this kit cannot resolve")
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (unknown references stay as they are)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def _downward_file(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(values.items()))


def materialise_volumes(pod: Mapping[str, Any], spec: Mapping[str, Any], root: Path, *,
                        token: str, root_cert: bytes) -> dict[PurePosixPath, Path]:  # fmt: skip
    """Create each volume `spec` mounts under `root`; mountPath → the directory."""
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    mounts: dict[PurePosixPath, Path] = {}
    for mount in spec.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        directory = root / mount["name"]
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        if "emptyDir" in volume:
            directory.chmod(0o777)  # kubelet makes emptyDirs world-writable
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    path = directory / source["serviceAccountToken"]["path"]
                    path.write_text(token)
                    path.chmod(0o644)
        elif "configMap" in volume:
            assert volume["configMap"]["name"] == names.CONFIGMAP_CA_ROOT, volume
            (directory / "root-cert.pem").write_bytes(root_cert)
        elif "downwardAPI" in volume:
            for item in volume["downwardAPI"]["items"]:
                source = item["fieldRef"]["fieldPath"]
                values = pod["metadata"].get(source.removeprefix("metadata.")) or {}
                (directory / item["path"]).write_text(_downward_file(values))
        mounts[PurePosixPath(mount["mountPath"])] = directory
    return mounts


def agent_path_flags(mounts: Mapping[PurePosixPath, Path]) -> list[str]:
    """Flags moving each of the agent's default paths onto the volume mounted there."""
    flags: list[str] = []
    for flag, default in AGENT_PATH_FLAGS.items():
        owner = next((m for m in mounts if default == m or default.is_relative_to(m)), None)
        if owner is None:
            raise AssertionError(
                f"the agent's default {default} ({flag}) is on no volume the injector mounts "
                f"into istio-proxy ({sorted(map(str, mounts))})"
            )
        flags += [flag, str(mounts[owner] / default.relative_to(owner))]
    return flags
