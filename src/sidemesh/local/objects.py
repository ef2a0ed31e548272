"""Records shown as Kubernetes objects (`get -o yaml|json`): the manifest plus a status in
the API's shape."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from sidemesh.local.model import ContainerStatus, ObjectRecord, PodRecord


def _time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_status(status: ContainerStatus, image: str) -> dict[str, Any]:
    state: dict[str, Any]
    if status.state == "running":
        state = {"running": {"startedAt": _time(status.started_at)}}
    elif status.state == "terminated":
        state = {
            "terminated": {
                "exitCode": status.exit_code,
                "reason": status.reason,
                "startedAt": _time(status.started_at),
                "finishedAt": _time(status.finished_at),
            }
        }
        if status.signal:
            state["terminated"]["signal"] = status.signal
    else:
        state = {"waiting": {"reason": status.reason or "ContainerCreating"}}
        if status.message:
            state["waiting"]["message"] = status.message
    last: dict[str, Any] = {}
    if status.last_finished_at is not None:
        last = {
            "terminated": {
                "exitCode": status.last_exit_code,
                "finishedAt": _time(status.last_finished_at),
            }
        }
    return {
        "name": status.name,
        "image": image,
        "ready": status.ready,
        "started": status.started,
        "restartCount": status.restart_count,
        "state": state,
        "lastState": last,
    }


def pod_object(pod: PodRecord, *, host_ip: str) -> dict[str, Any]:
    manifest = copy.deepcopy(pod.manifest)
    metadata = manifest.setdefault("metadata", {})
    if pod.deletion_requested is not None:
        metadata["deletionTimestamp"] = _time(pod.deletion_requested)
    images = {
        str(c.get("name")): str(c.get("image") or "")
        for group in ("initContainers", "containers")
        for c in pod.spec.get(group) or []
    }

    def condition(kind: str, value: bool) -> dict[str, str]:
        return {"type": kind, "status": "True" if value else "False"}

    manifest["status"] = {
        "phase": pod.phase,
        "hostIP": host_ip,
        "podIP": pod.pod_ip,
        "podIPs": [{"ip": pod.pod_ip}] if pod.pod_ip else [],
        "startTime": _time(pod.created),
        "conditions": [
            condition("PodScheduled", True),
            condition("Initialized", pod.initialized),
            condition("ContainersReady", pod.ready),
            condition("Ready", pod.ready),
        ],
        "initContainerStatuses": [
            _container_status(s, images.get(s.name, "")) for s in pod.init_statuses
        ],
        "containerStatuses": [_container_status(s, images.get(s.name, "")) for s in pod.statuses],
    }
    if pod.reason:
        manifest["status"]["reason"] = pod.reason
    return manifest


def stored_object(record: ObjectRecord) -> dict[str, Any]:
    manifest = copy.deepcopy(record.manifest)
    metadata = manifest.setdefault("metadata", {})
    metadata.update(uid=record.uid, creationTimestamp=_time(record.created))
    return manifest
