"""What `sidemesh demo --kube`'s steps share: a step's outcome and failure, the API server's pod
objects read as the guide reads them, and requests made from inside a pod's network namespace
(where `kubectl exec` would run them: through the pod's sidecar, whose capture rules redirect
every uid but the proxy's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.demo.session import http_get
from sidemesh.local.naming import node_netns, pod_netns, runtime_prefix
from sidemesh.local.netns import connect_in_netns

REQUEST_TIMEOUT_SECONDS = 10.0


class KubeStepFailed(Exception):
    """A step's outcome is not what the guide promises; the message says what was seen."""


@dataclass
class KubeOutcome:
    number: int
    title: str
    ok: bool = False
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)  # what the step saw, as it went


def node_runtime(state_dir: Path) -> str:
    """The runtime prefix of the node's network namespaces (the node keeps its state in
    `state_dir/node`)."""
    return runtime_prefix(state_dir / "node")


def node_namespace(state_dir: Path) -> str:
    return node_netns(node_runtime(state_dir))


def pod_namespace(state_dir: Path, pod: dict[str, Any]) -> str:
    """The network namespace the node made for this pod object."""
    return pod_netns(node_runtime(state_dir), str(pod["metadata"]["uid"]))


def request(netns: str, address: str, port: int, host: str, path: str) -> tuple[int | None, str]:
    """One HTTP GET from inside `netns`: the status and the body (None and the error when no
    answer came)."""
    try:
        sock = connect_in_netns(netns, address, port, REQUEST_TIMEOUT_SECONDS)
        status, body = http_get(sock, host, path)
    except OSError as exc:
        return None, f"error: {exc}"
    return status, body.decode("utf-8", errors="replace")


def envoy_config(state_dir: Path, pod: dict[str, Any]) -> str:
    """The pod's Envoy configuration (its admin `/config_dump` on the pod's loopback), or ""
    while it does not answer."""
    status, body = request(
        pod_namespace(state_dir, pod), "127.0.0.1", names.PORT_ENVOY_ADMIN, "127.0.0.1",
        "/config_dump",
    )  # fmt: skip
    return body if status == 200 else ""


def fully_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Running"
        and len(statuses) == len(containers)
        and all(s.get("ready") for s in statuses)
    )


def sidecar_revision(pod: dict[str, Any]) -> str | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_STATUS)
    if not raw:
        return None
    try:
        revision = orjson.loads(raw).get("revision")
    except (ValueError, AttributeError):
        return None
    return str(revision) if revision else None


def live(pod: dict[str, Any]) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp")
