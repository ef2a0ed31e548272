"""The deployment and replica-set controllers, as pure functions over the state.

A Deployment's pod template hashes to a ReplicaSet (`web-5788d57586`); changing the template
(as `rollout restart` does with `kubectl.kubernetes.io/restartedAt`) makes a new one, and the
rolling update moves replicas over with Kubernetes' maxSurge / maxUnavailable arithmetic: old
pods go only as new ones become ready. A ReplicaSet with too few pods asks for new ones (the
caller admits and creates them); with too many, it marks the least useful for deletion.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh.local.model import PodRecord, ReplicaSetRecord, State, key
from sidemesh.local.naming import new_uid, pod_template_hash, replicaset_name

TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_LIMIT = 10
CREATE_BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)


@dataclass(frozen=True)
class PodRequest:
    """A pod a ReplicaSet wants: admit it, then create it (`replicaset` is the state key)."""

    replicaset: str
    pod: dict[str, Any]


def _percent_or_int(value: Any, total: int, *, round_up: bool, default: str) -> int:
    text = str(default if value is None else value)
    if text.endswith("%"):
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def _replicas(manifest: Mapping[str, Any]) -> int:
    value = (manifest.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _active_pods(state: State, replicaset: ReplicaSetRecord) -> list[PodRecord]:
    return [
        p
        for p in state.pods.values()
        if p.owner == replicaset.name and p.namespace == replicaset.namespace and not p.terminating
    ]


def _ready_count(state: State, replicaset: ReplicaSetRecord) -> int:
    return sum(1 for p in _active_pods(state, replicaset) if p.ready)


def _ensure_replicaset(
    state: State, namespace: str, deployment: str, template: Any, now: float
) -> ReplicaSetRecord:
    template_hash = pod_template_hash(template)
    name = replicaset_name(deployment, template_hash)
    owned = [
        r
        for r in state.replicasets.values()
        if r.namespace == namespace and r.deployment == deployment
    ]
    newest_revision = max((r.revision for r in owned), default=0)
    record = state.replicasets.get(key(namespace, name))
    if record is None:
        pod_template = copy.deepcopy(template)
        metadata = pod_template.setdefault("metadata", {})
        metadata.setdefault("labels", {})[TEMPLATE_HASH_LABEL] = template_hash
        record = ReplicaSetRecord(
            namespace=namespace,
            name=name,
            uid=new_uid(),
            created=now,
            deployment=deployment,
            template_hash=template_hash,
            template=pod_template,
            replicas=0,
            revision=newest_revision + 1,
        )
        state.replicasets[key(namespace, name)] = record
    elif record.revision < newest_revision:  # rolled back to an older template
        record.revision = newest_revision + 1
    return record


def reconcile_deployments(state: State, now: float) -> None:
    """Create/scale ReplicaSets for every Deployment; drop those of deleted Deployments."""
    for deployment in state.deployments.values():
        spec = deployment.manifest.get("spec") or {}
        template = spec.get("template") or {}
        new = _ensure_replicaset(state, deployment.namespace, deployment.name, template, now)
        olds = sorted(
            (
                r
                for r in state.replicasets.values()
                if r.namespace == deployment.namespace
                and r.deployment == deployment.name
                and r.name != new.name
            ),
            key=lambda r: r.revision,
        )
        replicas = _replicas(deployment.manifest)
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            for old in olds:
                old.replicas = 0
            if all(not _active_pods(state, old) for old in olds):
                new.replicas = replicas
            continue
        rolling = strategy.get("rollingUpdate") or {}
        surge = _percent_or_int(rolling.get("maxSurge"), replicas, round_up=True, default="25%")
        unavailable = _percent_or_int(
            rolling.get("maxUnavailable"), replicas, round_up=False, default="25%"
        )
        if surge == 0 and unavailable == 0:
            unavailable = 1  # as Kubernetes: a rollout must be able to make progress
        old_total = sum(o.replicas for o in olds)
        if new.replicas < replicas:
            room = replicas + surge - (new.replicas + old_total)
            new.replicas = min(replicas, new.replicas + max(0, room))
        elif new.replicas > replicas:
            new.replicas = replicas
        _scale_down_old(state, new, olds, replicas, unavailable)
        _prune_history(state, olds)
    for rs_key, replicaset in list(state.replicasets.items()):
        if key(replicaset.namespace, replicaset.deployment) not in state.deployments:
            replicaset.replicas = 0
            if not any(
                p.owner == replicaset.name and p.namespace == replicaset.namespace
                for p in state.pods.values()
            ):
                del state.replicasets[rs_key]


def _scale_down_old(
    state: State,
    new: ReplicaSetRecord,
    olds: list[ReplicaSetRecord],
    replicas: int,
    max_unavailable: int,
) -> None:
    min_available = replicas - max_unavailable
    all_replicas = new.replicas + sum(o.replicas for o in olds)
    new_unavailable = max(0, new.replicas - _ready_count(state, new))
    budget = all_replicas - min_available - new_unavailable
    # First the old pods that are not ready anyway (Kubernetes' cleanupUnhealthyReplicas).
    for old in olds:
        if budget <= 0:
            break
        unhealthy = max(0, old.replicas - _ready_count(state, old))
        cut = min(unhealthy, budget)
        old.replicas -= cut
        budget -= cut
    available = _ready_count(state, new) + sum(_ready_count(state, o) for o in olds)
    spare = available - min_available
    for old in olds:
        if spare <= 0:
            break
        cut = min(old.replicas, spare, _ready_count(state, old))
        old.replicas -= cut
        spare -= cut


def _prune_history(state: State, olds: list[ReplicaSetRecord]) -> None:
    idle = [o for o in olds if o.replicas == 0 and not _active_pods(state, o)]
    for old in idle[: max(0, len(idle) - REVISION_HISTORY_LIMIT)]:
        if not any(
            p.owner == old.name and p.namespace == old.namespace for p in state.pods.values()
        ):
            del state.replicasets[key(old.namespace, old.name)]


def _deletion_order(pod: PodRecord) -> tuple[int, int, float]:
    """Which surplus pod goes first: not running, then not ready, then the newest."""
    return (0 if pod.phase != "Running" else 1, 1 if pod.ready else 0, -pod.created)


def pod_from_template(replicaset: ReplicaSetRecord) -> dict[str, Any]:
    template = copy.deepcopy(replicaset.template)
    metadata = template.get("metadata") or {}
    pod_metadata: dict[str, Any] = {
        "generateName": f"{replicaset.name}-",
        "namespace": replicaset.namespace,
        "labels": dict(metadata.get("labels") or {}),
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": replicaset.name,
                "uid": replicaset.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if metadata.get("annotations"):
        pod_metadata["annotations"] = dict(metadata["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_metadata,
        "spec": template.get("spec") or {},
    }


def reconcile_replicasets(
    state: State, now: float, in_flight: Mapping[str, int]
) -> list[PodRequest]:
    """Pods to create (after admission); surplus pods are marked for deletion in place."""
    requests: list[PodRequest] = []
    for rs_key, replicaset in state.replicasets.items():
        active = _active_pods(state, replicaset)
        missing = replicaset.replicas - len(active) - in_flight.get(rs_key, 0)
        if missing > 0 and now >= replicaset.next_create_after:
            requests += [PodRequest(rs_key, pod_from_template(replicaset)) for _ in range(missing)]
        elif missing < 0 and not in_flight.get(rs_key):
            for pod in sorted(active, key=_deletion_order)[:-missing]:
                pod.deletion_requested = now
    return requests


def record_create_failure(state: State, rs_key: str, message: str, now: float) -> None:
    replicaset = state.replicasets.get(rs_key)
    if replicaset is None:
        return
    delay = CREATE_BACKOFF_SECONDS[min(replicaset.create_failures, len(CREATE_BACKOFF_SECONDS) - 1)]
    replicaset.create_failures += 1
    replicaset.next_create_after = now + delay
    state.record_event(
        namespace=replicaset.namespace,
        object=f"replicaset/{replicaset.name}",
        type="Warning",
        reason="FailedCreate",
        message=f"Error creating: {message}",
        now=now,
    )


def record_create_success(state: State, rs_key: str, pod_name: str, now: float) -> None:
    replicaset = state.replicasets.get(rs_key)
    if replicaset is None:
        return
    replicaset.create_failures = 0
    replicaset.next_create_after = 0.0
    state.record_event(
        namespace=replicaset.namespace,
        object=f"replicaset/{replicaset.name}",
        type="Normal",
        reason="SuccessfulCreate",
        message=f"Created pod: {pod_name}",
        now=now,
    )
