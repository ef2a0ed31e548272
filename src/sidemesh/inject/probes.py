"""Probe rewrite: the kubelet cannot reach the app through the sidecar's mTLS, so HTTP, TCP
and gRPC probes of app containers are pointed at the agent, which runs the original probe
against the app from inside the pod. The originals travel to the agent in ISTIO_KUBE_APP_PROBERS.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidemesh.api import names

_PROBE_KINDS = (
    ("readinessProbe", "readyz"),
    ("livenessProbe", "livez"),
    ("startupProbe", "startupz"),
)


def _resolve_port(port: Any, container: dict[str, Any]) -> Any:
    """Named ports become numbers: the agent does not see the container's port names."""
    if isinstance(port, str) and not port.isdigit():
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("name") == port:
                return declared.get("containerPort", port)
    elif isinstance(port, str):
        return int(port)
    return port


def app_probe_path(container: str, kind_suffix: str) -> str:
    return f"/app-health/{container}/{kind_suffix}"


def rewrite_probes(spec: dict[str, Any], status_port: int) -> dict[str, Any]:
    """Rewrites the app containers of `spec` in place (copying changed containers) and returns
    the map path -> original probe, empty when nothing was rewritten."""
    originals: dict[str, Any] = {}
    containers = spec.get("containers")
    if not isinstance(containers, list) or not status_port:
        return originals
    rewritten: list[Any] = []
    for container in containers:
        name = container.get("name") if isinstance(container, dict) else None
        if not isinstance(name, str) or name == names.CONTAINER_PROXY:
            rewritten.append(container)
            continue
        copy: dict[str, Any] | None = None
        for field, suffix in _PROBE_KINDS:
            probe = container.get(field)
            if not isinstance(probe, dict):
                continue
            original: dict[str, Any] = {}
            if isinstance(probe.get("httpGet"), dict):
                http = dict(probe["httpGet"])
                http["port"] = _resolve_port(http.get("port"), container)
                original["httpGet"] = http
            elif isinstance(probe.get("tcpSocket"), dict):
                tcp = dict(probe["tcpSocket"])
                tcp["port"] = _resolve_port(tcp.get("port"), container)
                original["tcpSocket"] = tcp
            elif isinstance(probe.get("grpc"), dict):
                original["grpc"] = dict(probe["grpc"])
            else:
                continue  # exec probes already run inside the container
            if "timeoutSeconds" in probe:
                original["timeoutSeconds"] = probe["timeoutSeconds"]
            path = app_probe_path(name, suffix)
            originals[path] = original
            new_probe = {
                k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket", "grpc")
            }
            new_probe["httpGet"] = {"path": path, "port": status_port}
            if copy is None:
                copy = dict(container)
            copy[field] = new_probe
        rewritten.append(copy if copy is not None else container)
    spec["containers"] = rewritten
    return originals


def restore_probes(spec: dict[str, Any], encoded: str) -> None:
    """Undo `rewrite_probes` from the ISTIO_KUBE_APP_PROBERS value (used before re-injection)."""
    try:
        originals = orjson.loads(encoded)
    except orjson.JSONDecodeError:
        return
    if not isinstance(originals, dict):
        return
    containers = spec.get("containers")
    if not isinstance(containers, list):
        return
    restored: list[Any] = []
    for container in containers:
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            restored.append(container)
            continue
        copy = container
        for field, suffix in _PROBE_KINDS:
            original = originals.get(app_probe_path(container["name"], suffix))
            probe = container.get(field)
            if isinstance(original, dict) and isinstance(probe, dict):
                if copy is container:
                    copy = dict(container)
                base = {k: v for k, v in probe.items() if k != "httpGet"}
                copy[field] = {**base, **original}
        restored.append(copy)
    spec["containers"] = restored
