"""Deployment -> ReplicaSet -> pods, and the rolling update, as pure state transitions."""

from __future__ import annotations

import copy
from typing import Any

from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, rollout_restart, store_admitted_pod
from sidemesh.local.controllers import (
    reconcile_deployments,
    reconcile_replicasets,
    record_create_failure,
)
from sidemesh.local.model import PodRecord, State
from sidemesh.local.naming import pod_template_hash

NOW = 1_800_000_000.0


def deployment(replicas: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "command": ["x"]}]},
            },
            **spec,
        },
    }


def setup(replicas: int = 2, **spec: Any) -> State:
    state = empty_state()
    apply_objects(
        state,
        [{"kind": "Namespace", "metadata": {"name": "demo"}}, deployment(replicas, **spec)],
        now=NOW,
        default_namespace="default",
    )
    return state


def step(state: State, now: float = NOW) -> list[PodRecord]:
    """One controller pass; requested pods are admitted unchanged and stored."""
    reconcile_deployments(state, now)
    created = []
    for request in reconcile_replicasets(state, now, {}):
        owner = state.replicasets[request.replicaset].name
        created.append(store_admitted_pod(state, request.pod, owner=owner, now=now))
    return created


def active(state: State) -> list[PodRecord]:
    return [p for p in state.pods.values() if not p.terminating]


def make_ready(state: State) -> None:
    for pod in active(state):
        pod.ready, pod.phase = True, "Running"


def test_deployment_makes_a_hashed_replicaset_and_named_pods() -> None:
    state = setup()
    pods = step(state)
    (replicaset,) = state.replicasets.values()
    template = deployment()["spec"]["template"]
    assert replicaset.name == f"web-{pod_template_hash(template)}"
    assert (
        replicaset.template["metadata"]["labels"]["pod-template-hash"] == replicaset.template_hash
    )
    assert len(pods) == 2
    for pod in pods:
        assert (
            pod.name.startswith(replicaset.name + "-") and len(pod.name) == len(replicaset.name) + 6
        )
        assert pod.labels == {"app": "web", "pod-template-hash": replicaset.template_hash}
        assert pod.manifest["metadata"]["ownerReferences"][0]["name"] == replicaset.name
        assert pod.spec["nodeName"] == "sidemesh-local"
    assert step(state) == []  # converged


def test_in_flight_creations_are_not_requested_twice() -> None:
    state = setup()
    reconcile_deployments(state, NOW)
    rs_key = next(iter(state.replicasets))
    assert len(reconcile_replicasets(state, NOW, {rs_key: 2})) == 0
    assert len(reconcile_replicasets(state, NOW, {rs_key: 1})) == 1


def test_deleted_pods_are_replaced() -> None:
    state = setup()
    first = step(state)
    first[0].deletion_requested = NOW
    replacement = step(state)
    assert len(replacement) == 1 and replacement[0].name != first[0].name


def test_rollout_restart_surges_then_drains_as_new_pods_get_ready() -> None:
    state = setup(replicas=2)
    old = step(state)
    make_ready(state)
    assert rollout_restart(state, "demo", [], NOW) == ["deployment.apps/web restarted"]
    new = step(state)
    # maxSurge 25% of 2 -> 1, maxUnavailable 25% of 2 -> 0: one new pod, no old one gone yet.
    assert len(new) == 1 and all(not p.terminating for p in old)
    assert new[0].manifest["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert step(state) == []  # the new pod is not ready: nothing moves
    new[0].ready, new[0].phase = True, "Running"
    step(state)
    assert sum(p.terminating for p in old) == 1
    newer = step(state)
    assert len(newer) == 1
    make_ready(state)
    step(state)
    step(state)
    assert all(p.terminating for p in old)
    assert {p.name for p in active(state)} == {new[0].name, newer[0].name}


def test_recreate_strategy_drains_first() -> None:
    state = setup(replicas=2, strategy={"type": "Recreate"})
    old = step(state)
    rollout_restart(state, "demo", ["web"], NOW)
    assert step(state) == []
    assert all(p.terminating for p in old)
    for pod in old:
        del state.pods[f"demo/{pod.name}"]
    assert len(step(state)) == 2


def test_scale_down_removes_not_ready_pods_first() -> None:
    state = setup(replicas=3)
    pods = step(state)
    for pod in pods[1:]:
        pod.ready, pod.phase = True, "Running"
    state.deployments["demo/web"].manifest["spec"]["replicas"] = 2
    step(state)
    assert [p.terminating for p in pods] == [True, False, False]


def test_failed_creation_backs_off() -> None:
    state = setup()
    reconcile_deployments(state, NOW)
    rs_key = next(iter(state.replicasets))
    record_create_failure(state, rs_key, "denied", NOW)
    record_create_failure(state, rs_key, "denied", NOW)
    assert reconcile_replicasets(state, NOW + 1, {}) == []
    assert len(reconcile_replicasets(state, NOW + 2, {})) == 2
    (event,) = state.events
    assert (event.reason, event.count, event.message) == (
        "FailedCreate",
        2,
        "Error creating: denied",
    )


def test_deleting_the_deployment_retires_its_replicasets() -> None:
    state = setup()
    pods = step(state)
    del state.deployments["demo/web"]
    step(state)
    assert all(p.terminating for p in pods)
    for pod in pods:
        del state.pods[f"demo/{pod.name}"]
    step(state)
    assert state.replicasets == {}


def test_rollback_to_an_old_template_reuses_its_replicaset() -> None:
    state = setup()
    step(state)
    original = copy.deepcopy(state.deployments["demo/web"].manifest)
    rollout_restart(state, "demo", [], NOW)
    step(state)
    assert len(state.replicasets) == 2
    state.deployments["demo/web"].manifest = original
    step(state)
    assert len(state.replicasets) == 2
    newest = max(state.replicasets.values(), key=lambda r: r.revision)
    assert newest.template_hash == pod_template_hash(original["spec"]["template"])
