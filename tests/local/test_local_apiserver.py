"""`apply`, `label`, `delete`, `rollout restart` as the API server answers them."""

from __future__ import annotations

import base64

import pytest
from local_testkit import empty_state

from sidemesh.local.apiserver import (
    ApiError,
    allocate_pod_ip,
    apply_objects,
    delete_object,
    delete_pods,
    ensure_system_namespaces,
    label_namespace,
    object_data,
    rollout_restart,
    store_admitted_pod,
    three_way_merge,
)
from sidemesh.local.labels import parse_label_args
from sidemesh.local.model import State

NOW = 1_800_000_000.0
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "demo"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "command": ["x"]}]},
        },
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "demo"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}


def _state() -> State:
    state = empty_state()
    ensure_system_namespaces(state, NOW)
    return state


def test_apply_reports_like_kubectl() -> None:
    state = _state()
    first = apply_objects(
        state, [NAMESPACE, DEPLOYMENT, SERVICE], now=NOW, default_namespace="default"
    )
    assert first.lines == [
        "namespace/demo created",
        "deployment.apps/web created",
        "service/web created",
    ]
    again = apply_objects(
        state, [NAMESPACE, DEPLOYMENT, SERVICE], now=NOW, default_namespace="default"
    )
    assert again.lines == [
        "namespace/demo unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]
    assert state.namespaces["demo"].labels == {"kubernetes.io/metadata.name": "demo"}


def test_reapplying_keeps_labels_and_restarts_made_since() -> None:
    state = _state()
    apply_objects(state, [NAMESPACE, DEPLOYMENT], now=NOW, default_namespace="default")
    label_namespace(state, "demo", parse_label_args(["istio.io/rev=canary"]), overwrite=False)
    rollout_restart(state, "demo", ["web"], NOW)
    result = apply_objects(state, [NAMESPACE, DEPLOYMENT], now=NOW, default_namespace="default")
    assert result.lines == ["namespace/demo unchanged", "deployment.apps/web unchanged"]
    assert state.namespaces["demo"].labels["istio.io/rev"] == "canary"
    template = state.deployments["demo/web"].manifest["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]


def test_three_way_merge() -> None:
    last = {"a": 1, "b": {"x": 1, "y": 2}, "gone": 1}
    new = {"a": 2, "b": {"x": 1}, "list": [3]}
    live = {"a": 1, "b": {"x": 1, "y": 2, "mine": 5}, "gone": 1, "theirs": 7, "list": [1, 2]}
    assert three_way_merge(last, new, live) == {
        "a": 2,
        "b": {"x": 1, "mine": 5},
        "theirs": 7,
        "list": [3],
    }


def test_namespaced_objects_need_their_namespace() -> None:
    result = apply_objects(_state(), [DEPLOYMENT], now=NOW, default_namespace="default")
    assert result.errors == ['Error from server (NotFound): namespaces "demo" not found']


def test_unsupported_kinds_are_named() -> None:
    result = apply_objects(
        _state(),
        [{"kind": "StatefulSet", "metadata": {"name": "db"}}],
        now=NOW,
        default_namespace="default",
    )
    assert 'does not run kind "StatefulSet"' in result.errors[0]


def test_services_get_cluster_ips_in_order_and_keep_them() -> None:
    state = _state()
    other = {**SERVICE, "metadata": {"name": "api", "namespace": "default"}}
    headless = {
        **SERVICE,
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
    }
    pinned = {
        **SERVICE,
        "metadata": {"name": "pinned", "namespace": "default"},
        "spec": {"clusterIP": "10.96.7.7", "ports": [{"port": 1}]},
    }
    apply_objects(
        state, [NAMESPACE, SERVICE, other, headless, pinned], now=NOW, default_namespace="default"
    )
    assert state.services["demo/web"].cluster_ip == "10.96.0.10"
    assert state.services["default/api"].cluster_ip == "10.96.0.11"
    assert state.services["default/db"].cluster_ip is None
    assert state.services["default/pinned"].cluster_ip == "10.96.7.7"
    changed = {**SERVICE, "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}}
    assert apply_objects(state, [changed], now=NOW, default_namespace="x").lines == [
        "service/web configured"
    ]
    assert state.services["demo/web"].cluster_ip == "10.96.0.10"
    taken = {**SERVICE, "metadata": {"name": "dup"}, "spec": {"clusterIP": "10.96.7.7"}}
    assert (
        "already allocated"
        in apply_objects(state, [taken], now=NOW, default_namespace="demo").errors[0]
    )


def test_secrets_keep_string_data_as_base64() -> None:
    state = _state()
    secret = {
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"k": "v"},
        "data": {"b": base64.b64encode(b"w").decode()},
    }
    apply_objects(state, [secret], now=NOW, default_namespace="default")
    assert object_data(state.secrets["default/s"]) == {"k": "v", "b": "w"}


def test_bare_pods_are_returned_for_admission_then_stored() -> None:
    state = _state()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "command": ["sleep", "1"]}]},
    }
    result = apply_objects(state, [pod], now=NOW, default_namespace="default")
    assert result.lines == [] and len(result.pods) == 1
    record = store_admitted_pod(state, result.pods[0], owner=None, now=NOW)
    assert record.name == "client" and record.manifest["metadata"]["uid"] == record.uid
    assert apply_objects(state, [pod], now=NOW, default_namespace="default").lines == [
        "pod/client unchanged"
    ]
    delete_pods(state, "default", ["client"], everything=False, now=NOW)
    again = apply_objects(state, [pod], now=NOW, default_namespace="default")
    assert "object is being deleted" in again.errors[0] and not again.pods


def test_label_namespace_errors() -> None:
    state = _state()
    with pytest.raises(ApiError, match='namespaces "nope" not found'):
        label_namespace(state, "nope", parse_label_args(["a=b"]), overwrite=False)
    with pytest.raises(ApiError, match="cannot be changed"):
        label_namespace(
            state, "default", parse_label_args(["kubernetes.io/metadata.name-"]), overwrite=True
        )


def test_rollout_restart_of_a_missing_deployment() -> None:
    with pytest.raises(ApiError, match=r'deployments\.apps "nope" not found'):
        rollout_restart(_state(), "default", ["nope"], NOW)
    assert rollout_restart(_state(), "default", [], NOW) == []


def test_delete_namespace_takes_its_objects() -> None:
    state = _state()
    apply_objects(state, [NAMESPACE, DEPLOYMENT, SERVICE], now=NOW, default_namespace="default")
    assert delete_object(state, "Namespace", "", "demo", NOW) == 'namespace "demo" deleted'
    assert not state.deployments and not state.services and "demo" not in state.namespaces
    with pytest.raises(ApiError, match="may not be deleted"):
        delete_object(state, "Namespace", "", "kube-system", NOW)
    with pytest.raises(ApiError, match='services "web" not found'):
        delete_object(state, "Service", "demo", "web", NOW)


def test_pod_addresses_are_handed_out_round_robin() -> None:
    state = _state()
    pods = []
    for name in ("a", "b", "c"):
        pod = {"kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": {}}
        record = store_admitted_pod(state, pod, owner=None, now=NOW)
        record.pod_ip = allocate_pod_ip(state)
        pods.append(record)
    assert [p.pod_ip for p in pods] == ["10.244.0.2", "10.244.0.3", "10.244.0.4"]
    del state.pods["default/b"]  # .3 is free again, but the next pod gets .5
    assert allocate_pod_ip(state) == "10.244.0.5"
    state.network.last_pod_ip = "10.244.255.254"  # wraps around to the first free one
    assert allocate_pod_ip(state) == "10.244.0.3"
