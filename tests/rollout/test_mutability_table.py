"""The pod update rules as a truth table: each row is one change to a running pod."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from sidemesh.rollout.mutability import difference, same

Pod = dict[str, Any]


def running_pod() -> Pod:
    """A pod as the API server returns it: defaults filled in."""
    return {
        "metadata": {"name": "web-1", "labels": {"app": "web"}, "annotations": {"a": "1"}},
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "containers": [
                {
                    "name": "web",
                    "image": "web:1",
                    "env": [{"name": "X", "value": "1"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {},
                },
                {
                    "name": "istio-proxy",
                    "image": "proxy:1",
                    "args": ["proxy"],
                    "readinessProbe": {"periodSeconds": 15},
                    "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
                },
            ],
            "initContainers": [
                {
                    "name": "istio-init",
                    "image": "proxy:1",
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-x",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    ],
                }
            ],
            "volumes": [{"name": "v", "configMap": {"name": "c", "defaultMode": 420}}],
        },
    }


def edit(change: Callable[[Pod], None]) -> Pod:
    pod = running_pod()
    change(pod)
    return pod


def _containers(pod: Pod) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    return containers


# (case, change to the target, in place?, the path reported)
CASES: list[tuple[str, Callable[[Pod], None], bool, str | None]] = [
    ("nothing", lambda p: None, True, None),
    ("proxy image", lambda p: _containers(p)[1].update(image="proxy:2"), True,
     "spec.containers[istio-proxy].image"),
    ("init image", lambda p: p["spec"]["initContainers"][0].update(image="proxy:2"), True,
     "spec.initContainers[istio-init].image"),
    ("annotation added", lambda p: p["metadata"]["annotations"].update(b="2"), True,
     "metadata.annotations[b]"),
    ("annotation removed", lambda p: p["metadata"]["annotations"].pop("a"), True,
     "metadata.annotations[a]"),
    ("label changed", lambda p: p["metadata"]["labels"].update(app="api"), True,
     "metadata.labels[app]"),
    ("toleration added", lambda p: p["spec"]["tolerations"].append({"key": "new"}), True,
     "spec.tolerations"),
    ("toleration removed", lambda p: p["spec"].update(tolerations=[]), False, "spec.tolerations"),
    ("deadline set", lambda p: p["spec"].update(activeDeadlineSeconds=60), True,
     "spec.activeDeadlineSeconds"),
    ("env changed", lambda p: _containers(p)[0]["env"][0].update(value="2"), False,
     "spec.containers[web].env"),
    ("args changed", lambda p: _containers(p)[1].update(args=["proxy", "-v"]), False,
     "spec.containers[istio-proxy].args"),
    ("resources changed", lambda p: _containers(p)[0].update(resources={"limits": {"cpu": "1"}}),
     False, "spec.containers[web].resources"),
    ("container added", lambda p: _containers(p).append({"name": "x", "image": "x"}), False,
     "spec.containers"),
    ("containers reordered", lambda p: _containers(p).reverse(), False, "spec.containers"),
    ("volume added", lambda p: p["spec"]["volumes"].append({"name": "w", "emptyDir": {}}), False,
     "spec.volumes"),
    ("grace period", lambda p: p["spec"].update(terminationGracePeriodSeconds=5), False,
     "spec.terminationGracePeriodSeconds"),
    # defaults the target lacks are not differences
    ("defaults absent", lambda p: [_containers(p)[0].pop(k) for k in (
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources")],
     True, None),
    ("port protocol absent", lambda p: _containers(p)[0]["ports"][0].pop("protocol"), True, None),
    ("defaultMode absent", lambda p: p["spec"]["volumes"][0]["configMap"].pop("defaultMode"),
     True, None),
    ("non-default value absent", lambda p: _containers(p)[0].pop("env"), False,
     "spec.containers[web].env"),
    # what a real API server does to a fresh rendering (seen in tests/e2e)
    ("zero the server omits", lambda p: _containers(p)[1].update(
        readinessProbe={"periodSeconds": 15, "initialDelaySeconds": 0}), True, None),
    ("quantity spelled otherwise", lambda p: _containers(p)[1].update(
        resources={"limits": {"cpu": "2000m", "memory": "1024Mi"}}), True, None),
    ("quantity changed", lambda p: _containers(p)[1].update(
        resources={"limits": {"cpu": "3", "memory": "1Gi"}}), False,
     "spec.containers[istio-proxy].resources"),
    ("token mount the admission added", lambda p: p["spec"]["initContainers"][0].pop(
        "volumeMounts"), True, None),
]  # fmt: skip


@pytest.mark.parametrize(("change", "in_place", "path"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_pod_update_rules(change: Callable[[Pod], None], in_place: bool, path: str | None) -> None:
    found = difference(running_pod(), edit(change))
    assert found.in_place is in_place, found
    paths = [c.path for c in found.changes] + [b.path for b in found.blockers]
    assert paths == ([] if path is None else [path])
    for blocker in found.blockers:
        assert blocker.reason  # every refusal says why


def test_deadline_can_be_lowered_not_raised_or_unset() -> None:
    current = edit(lambda p: p["spec"].update(activeDeadlineSeconds=60))
    lowered = edit(lambda p: p["spec"].update(activeDeadlineSeconds=30))
    raised = edit(lambda p: p["spec"].update(activeDeadlineSeconds=90))
    assert difference(current, lowered).in_place
    assert not difference(current, raised).in_place
    assert not difference(current, running_pod()).in_place


def test_image_changes_name_the_containers_that_restart() -> None:
    target = edit(lambda p: _containers(p)[1].update(image="proxy:2"))
    target["spec"]["initContainers"][0]["image"] = "proxy:2"
    assert difference(running_pod(), target).restarted_containers == ("istio-proxy",)
    target["spec"]["initContainers"][0]["restartPolicy"] = "Always"  # a native sidecar runs
    current = running_pod()
    current["spec"]["initContainers"][0]["restartPolicy"] = "Always"
    restarted = difference(current, target).restarted_containers
    assert sorted(restarted) == ["istio-init", "istio-proxy"]


def test_same_is_not_fooled_by_a_missing_key_with_another_value() -> None:
    assert same({"protocol": "TCP"}, {})
    assert not same({"protocol": "UDP"}, {})
    assert not same({}, {"protocol": "TCP"})
    assert same([{"a": 1}], [{"a": 1}]) and not same([{"a": 1}], [])
    assert copy.deepcopy(running_pod()) == running_pod()
