"""Per pod: is its sidecar current, can it be upgraded in place, or must the pod be replaced.

`plan_pod` is pure: the running pod and the injector of the revision its namespace selects
now go in, a `PodPlan` with its reasons comes out. The target is the running pod re-injected
(injection first undoes what its status annotation lists), so the comparison is between the
sidecar the pod runs and the one it would get if created now: another revision, another
template or other injector values all show up as differences.

Two differences are not Kubernetes' business but the agent's: `CA_ADDR` (and a discovery
address derived from it) names the revision's control plane, and the agent re-derives it from
the pod's `istio.io/rev` annotation when it starts (`agent.config.follow_revision`). So a
revision change whose only other differences are mutable (images, labels, annotations) is
done in place, provided the proxy image changes too: the kubelet restarts a container only
when its image changes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from sidemesh.agent.config import ENV_CA_ADDR, follow_revision
from sidemesh.api import names
from sidemesh.api.config import ConfigError
from sidemesh.inject.annotations import InvalidAnnotation
from sidemesh.inject.engine import InjectionError, Injector
from sidemesh.inject.template import TemplateError
from sidemesh.inject.workloads import pod_site
from sidemesh.rollout.mutability import Change, Difference, difference

Action = Literal["current", "in-place", "restart", "skip"]


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    workload: str  # kind/name of what owns the pod (Pod/NAME for a bare pod)
    action: Action
    current_revision: str | None  # None: no sidecar
    target_revision: str | None  # None: the namespace selects no injection
    reasons: tuple[str, ...]
    changes: tuple[Change, ...] = ()
    restarts: tuple[str, ...] = ()  # containers an in-place patch restarts
    patch: Mapping[str, Any] | None = field(default=None, compare=False)  # JSON merge patch
    # restartCount of each restarted container when planned: the patch took once it is higher
    restart_counts: Mapping[str, int] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pod": self.name,
            "workload": self.workload,
            "action": self.action,
            "currentRevision": self.current_revision,
            "targetRevision": self.target_revision,
            "reasons": list(self.reasons),
            "restarts": list(self.restarts),
        }


def _metadata(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    value = pod.get("metadata")
    return value if isinstance(value, Mapping) else {}


def sidecar_revision(pod: Mapping[str, Any]) -> str | None:
    """The revision that injected the pod, from its status annotation; None if not injected."""
    annotations = _metadata(pod).get("annotations")
    raw = annotations.get(names.ANNOTATION_STATUS) if isinstance(annotations, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    revision = status.get("revision") if isinstance(status, dict) else None
    return revision if isinstance(revision, str) else ""


def workload_of(pod: Mapping[str, Any]) -> str:
    """What a restart goes through: the controller's kind/name (a ReplicaSet is reported as
    its Deployment), else the bare pod."""
    site = pod_site(dict(pod))
    for owner in _metadata(pod).get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller"):
            kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
            hash_label = (_metadata(pod).get("labels") or {}).get("pod-template-hash")
            if kind == "ReplicaSet" and hash_label and name.endswith(f"-{hash_label}"):
                return f"Deployment/{name.removesuffix(f'-{hash_label}')}"
            return f"{kind}/{name}"
    return f"Pod/{site.name if site else _metadata(pod).get('name', '')}"


def _proxy_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if isinstance(c, dict) and c.get("name") == names.CONTAINER_PROXY
    ]


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get("value")
            return value if isinstance(value, str) else None
    return None


def _follow_addresses(
    current: Mapping[str, Any], target: dict[str, Any], revision: str
) -> list[Change]:
    """Give the target the current CA_ADDR where the agent will follow the annotation to the
    target's address anyway; the change is reported, not compared."""
    followed: list[Change] = []
    old_proxies, new_proxies = _proxy_containers(current), _proxy_containers(target)
    for old, new in zip(old_proxies, new_proxies, strict=False):
        old_value, new_value = _env(old, ENV_CA_ADDR), _env(new, ENV_CA_ADDR)
        if old_value is None or new_value is None or old_value == new_value:
            continue
        if follow_revision(old_value, revision) != new_value:
            continue
        for item in new.get("env") or []:
            if item.get("name") == ENV_CA_ADDR:
                item["value"] = old_value
        followed.append(
            Change(
                f"spec.containers[{names.CONTAINER_PROXY}].env[{ENV_CA_ADDR}]",
                f"the agent follows the {names.LABEL_REVISION} annotation to {new_value}",
            )
        )
    return followed


def merge_patch(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch carrying the target's labels, annotations and container images.

    Container lists are sent whole (a merge patch replaces lists), as they are now except for
    the images, and `resourceVersion` makes the API server refuse the patch (409) if the pod
    changed since it was read."""
    old_meta, new_meta = _metadata(current), _metadata(target)
    metadata: dict[str, Any] = {"resourceVersion": old_meta.get("resourceVersion")}
    for key in ("labels", "annotations"):
        old, new = old_meta.get(key) or {}, new_meta.get(key) or {}
        delta: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
        delta.update({k: None for k in old if k not in new})
        if delta:
            metadata[key] = delta
    patch: dict[str, Any] = {"metadata": metadata}
    spec: dict[str, Any] = {}
    old_spec, new_spec = current.get("spec") or {}, target.get("spec") or {}
    for key in ("initContainers", "containers"):
        olds, news = old_spec.get(key) or [], new_spec.get(key) or []
        if any(o.get("image") != n.get("image") for o, n in zip(olds, news, strict=True)):
            spec[key] = [{**o, "image": n.get("image")} for o, n in zip(olds, news, strict=True)]
    for key in ("activeDeadlineSeconds", "tolerations"):
        if key in new_spec and new_spec.get(key) != old_spec.get(key):
            spec[key] = new_spec[key]
    if spec:
        patch["spec"] = spec
    return patch


def restart_count(pod: Mapping[str, Any], container: str) -> int:
    """The container's restartCount in the pod's status (0 if it has none yet)."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for item in status.get(key) or []:
            if isinstance(item, Mapping) and item.get("name") == container:
                return int(item.get("restartCount") or 0)
    return 0


def is_upgraded(pod: Mapping[str, Any], plan: PodPlan) -> bool:
    """The patched pod runs again: Ready, every restarted container restarted since."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and all(
        restart_count(pod, name) > count for name, count in plan.restart_counts.items()
    )


def apply_merge_patch(document: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(document) if isinstance(document, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = apply_merge_patch(merged.get(key), value)
    return merged


def _plan(pod: Mapping[str, Any], action: Action, reasons: list[str], **extra: Any) -> PodPlan:
    metadata = _metadata(pod)
    return PodPlan(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        workload=workload_of(pod),
        action=action,
        reasons=tuple(reasons),
        **extra,
    )


def plan_pod(
    pod: Mapping[str, Any],
    target: Injector | None,
    *,
    selection: str,
) -> PodPlan:
    """What to do with running `pod`. `target` is the injector of the revision its namespace
    selects now (None: none selected); `selection` says why, in words."""
    current_revision = sidecar_revision(pod)
    revisions = {"current_revision": current_revision}
    if target is None:
        return _plan(
            pod, "skip", [f"{selection}: sidecars here are not managed"],
            target_revision=None, **revisions,
        )  # fmt: skip
    revision = target.revision
    revisions["target_revision"] = revision
    if (_metadata(pod).get("deletionTimestamp")) is not None:
        return _plan(pod, "skip", ["the pod is being deleted"], **revisions)
    namespace = str(_metadata(pod).get("namespace") or "default")
    base = {k: copy.deepcopy(v) for k, v in pod.items() if k != "status"}
    decision = target.decide(base, namespace)
    if not decision.inject:
        if current_revision is None:
            return _plan(
                pod, "current", [f"not injected, as wanted: {decision.reason}"], **revisions
            )
        return _plan(
            pod, "restart", [f"runs a sidecar it should not have: {decision.reason}"], **revisions
        )
    if current_revision is None:
        return _plan(
            pod, "restart", [f"{selection}, but the pod has no sidecar: only a new pod gets one"],
            **revisions,
        )  # fmt: skip
    try:
        wanted = target.inject(base, namespace)
    except (InjectionError, InvalidAnnotation, TemplateError, ConfigError) as exc:
        return _plan(
            pod, "skip", [f"revision {revision} cannot inject this pod: {exc}"], **revisions
        )
    followed = _follow_addresses(pod, wanted, revision)
    if current_revision == revision:
        followed = []  # upgraded in place earlier: the agent already follows its annotation
    found: Difference = difference(pod, wanted)
    changes = (*found.changes, *followed)
    if not changes and not found.blockers:
        return _plan(pod, "current", [f"runs the sidecar {selection} wants"], **revisions)
    if found.blockers:
        return _plan(
            pod, "restart", [f"{b.path}: {b.reason}" for b in found.blockers],
            changes=changes, **revisions,
        )  # fmt: skip
    restarts = found.restarted_containers
    if followed and names.CONTAINER_PROXY not in restarts:
        return _plan(
            pod, "restart",
            [f"the {names.CONTAINER_PROXY} image is the same in revision {current_revision!r} and "
             f"{revision!r}: the kubelet restarts a container only when its image changes"],
            changes=changes, **revisions,
        )  # fmt: skip
    reason = (
        f"in place: restarts {', '.join(restarts)} only"
        if restarts
        else "in place: labels and annotations only, no container restarts"
    )
    return _plan(
        pod, "in-place", [reason], changes=changes, restarts=restarts,
        restart_counts={n: restart_count(pod, n) for n in restarts},
        patch=merge_patch(pod, wanted), **revisions,
    )  # fmt: skip
