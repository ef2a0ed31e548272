"""The local runtime runs as root and turns names, keys and paths into directories and files:
`apply` refuses what the API server would, in its words, and the volume writer refuses any
path out of the pod's directory even if one got past apply."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from local_testkit import empty_state

from sidemesh.api import kube_names
from sidemesh.local.apiserver import apply_objects, ensure_system_namespaces
from sidemesh.local.env import PodFacts
from sidemesh.local.model import State
from sidemesh.local.volumes import VolumeError, VolumeSources, container_mounts, materialize

NOW = 1_800_000_000.0
LONG = "a" * 64
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "containers": [
            {"name": "web", "volumeMounts": [{"name": "conf", "mountPath": "/c", "subPath": "x"}]}
        ],
        "volumes": [{"name": "conf", "configMap": {"name": "conf", "items": [
            {"key": "a", "path": "dir/a.txt"}]}}],
    },
}  # fmt: skip


def _state() -> State:
    state = empty_state()
    ensure_system_namespaces(state, NOW)
    return state


def _refusal(obj: dict[str, Any]) -> str:
    result = apply_objects(_state(), [obj], now=NOW, default_namespace="default")
    assert len(result.errors) == 1, result
    assert not result.pods and not result.lines
    return result.errors[0]


def _pod(change: str, value: str) -> dict[str, Any]:
    pod = copy.deepcopy(POD)
    spec = pod["spec"]
    target = {
        "name": pod["metadata"],
        "container": spec["containers"][0],
        "volume": spec["volumes"][0],
        "item": spec["volumes"][0]["configMap"]["items"][0],
        "subPath": spec["containers"][0]["volumeMounts"][0],
    }[change]
    target["path" if change == "item" else "subPath" if change == "subPath" else "name"] = value
    return pod


def test_a_valid_pod_is_accepted() -> None:
    result = apply_objects(_state(), [POD], now=NOW, default_namespace="default")
    assert not result.errors
    assert [p["metadata"]["name"] for p in result.pods] == ["web"]


@pytest.mark.parametrize(
    ("change", "value", "field", "reason"),
    [
        ("name", "../../etc", "metadata.name", kube_names.SUBDOMAIN_MESSAGE),
        ("name", "a/b", "metadata.name", kube_names.SUBDOMAIN_MESSAGE),
        ("name", "/etc/passwd", "metadata.name", kube_names.SUBDOMAIN_MESSAGE),
        ("name", "Web", "metadata.name", kube_names.SUBDOMAIN_MESSAGE),
        ("name", "web\n", "metadata.name", kube_names.SUBDOMAIN_MESSAGE),
        ("name", "a" * 254, "metadata.name", "must be no more than 253 characters"),
        ("container", "../x", "spec.containers[0].name", kube_names.LABEL_MESSAGE),
        ("container", "App", "spec.containers[0].name", kube_names.LABEL_MESSAGE),
        ("container", LONG, "spec.containers[0].name", "must be no more than 63 characters"),
        ("container", "a.b", "spec.containers[0].name", kube_names.LABEL_MESSAGE),
        ("volume", "../../etc", "spec.volumes[0].name", kube_names.LABEL_MESSAGE),
        ("item", "/etc/shadow", "spec.volumes[0].configMap.items[0].path",
         "must be a relative path"),
        ("item", "../../etc/cron.d/x", "spec.volumes[0].configMap.items[0].path",
         "must not contain '..'"),
        ("item", "a/../../b", "spec.volumes[0].configMap.items[0].path", "must not contain '..'"),
        ("item", "..data", "spec.volumes[0].configMap.items[0].path",
         "must not start with '..'"),
        ("subPath", "/etc", "spec.containers[0].volumeMounts[0].subPath",
         "must be a relative path"),
        ("subPath", "../..", "spec.containers[0].volumeMounts[0].subPath",
         "must not contain '..'"),
    ],
)  # fmt: skip
def test_hostile_pod_fields_are_refused(change: str, value: str, field: str, reason: str) -> None:
    pod = _pod(change, value)
    name = pod["metadata"]["name"]
    quoted = value.replace('"', '\\"')
    error = _refusal(pod)
    assert error.startswith(f'The Pod "{name}" is invalid: ')
    assert f'{field}: Invalid value: "{quoted}": {reason}' in error


@pytest.mark.parametrize(
    ("kind", "name", "reason"),
    [
        ("Namespace", "a.b", kube_names.LABEL_MESSAGE),
        ("Namespace", "../x", kube_names.LABEL_MESSAGE),
        ("Namespace", LONG, "must be no more than 63 characters"),
        ("Service", "1web", kube_names.DNS1035_MESSAGE),
        ("Service", "web.x", kube_names.DNS1035_MESSAGE),
        ("Deployment", "Web", kube_names.SUBDOMAIN_MESSAGE),
        ("ConfigMap", "../conf", kube_names.SUBDOMAIN_MESSAGE),
        ("Secret", "a/b", kube_names.SUBDOMAIN_MESSAGE),
        ("ServiceAccount", "-sa", kube_names.SUBDOMAIN_MESSAGE),
    ],
)
def test_hostile_object_names_are_refused(kind: str, name: str, reason: str) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    assert _refusal(obj) == (
        f'The {kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": {reason}'
    )


def test_a_long_name_says_both_rules() -> None:
    name = "A" * 64
    error = _refusal({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert error == (
        f'The Namespace "{name}" is invalid: [metadata.name: Invalid value: "{name}": must be no '
        f'more than 63 characters, metadata.name: Invalid value: "{name}": '
        f"{kube_names.LABEL_MESSAGE}]"
    )


def test_a_deployment_template_is_checked() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": copy.deepcopy(POD["spec"])}},
    }
    deployment["spec"]["template"]["spec"]["containers"][0]["name"] = "../web"
    assert _refusal(deployment) == (
        'The Deployment "web" is invalid: spec.template.spec.containers[0].name: '
        f'Invalid value: "../web": {kube_names.LABEL_MESSAGE}'
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../../etc/passwd", kube_names.CONFIG_KEY_MESSAGE),
        ("/abs", kube_names.CONFIG_KEY_MESSAGE),
        ("a/b", kube_names.CONFIG_KEY_MESSAGE),
        ("..", "must not be '..'"),
        (".", "must not be '.'"),
        ("..data", "must not start with '..'"),
    ],
)
@pytest.mark.parametrize(
    ("kind", "field"), [("ConfigMap", "data"), ("ConfigMap", "binaryData"), ("Secret", "data"),
                        ("Secret", "stringData")],
)  # fmt: skip
def test_hostile_data_keys_are_refused(kind: str, field: str, key: str, reason: str) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "conf"}, field: {key: "eA=="}}
    error = _refusal(obj)
    assert error.startswith(f'The {kind} "conf" is invalid: ')
    shown = "data" if field == "stringData" else field  # the API server merges it into data
    assert f'{shown}[{key}]: Invalid value: "{key}": {reason}' in error


@pytest.mark.parametrize("key", ["KEY_NAME", "key.name", "key-name", ".hidden", "a..b"])
def test_kubernetes_valid_keys_are_accepted(key: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {key: ""}}
    result = apply_objects(_state(), [obj], now=NOW, default_namespace="default")
    assert result.errors == [] and result.lines == ["configmap/conf created"]


# --- the volume writer, for pods that did not come through apply ------------------------------

FACTS = PodFacts(
    name="web", namespace="default", uid="u", pod_ip="10.244.0.2", host_ip="10.244.0.1",
    node_name="n", service_account="default",
)  # fmt: skip


def _sources(data: dict[str, str]) -> VolumeSources:
    return VolumeSources(config_maps=lambda _n: data, secrets=lambda _n: None,
                         token=lambda _ns, _sa: "t")  # fmt: skip


@pytest.mark.parametrize(
    ("volume", "data"),
    [
        ({"name": "../../escape", "emptyDir": {}}, {}),
        ({"name": "c", "configMap": {"name": "c"}}, {"../../escape": "x"}),
        ({"name": "c", "configMap": {"name": "c", "items": [{"key": "k", "path": "{tmp}/x"}]}},
         {"k": "x"}),
        ({"name": "c", "configMap": {"name": "c", "items": [{"key": "k", "path": "a/../../x"}]}},
         {"k": "x"}),
    ],
)  # fmt: skip
def test_materialize_never_writes_outside_the_pod(
    tmp_path: Path, volume: dict[str, Any], data: dict[str, str]
) -> None:
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    for item in (volume.get("configMap") or {}).get("items") or []:
        item["path"] = item["path"].format(tmp=tmp_path)  # absolute, yet inside the test's
    with pytest.raises(VolumeError):
        materialize([volume], pod_dir, FACTS, _sources(data))
    assert [p.name for p in tmp_path.rglob("*") if "escape" in p.name or p.name == "x"] == []


def test_materialize_writes_nested_item_paths(tmp_path: Path) -> None:
    volume = {"name": "c", "configMap": {"name": "c", "items": [{"key": "k", "path": "d/k.txt"}]}}
    paths = materialize([volume], tmp_path, FACTS, _sources({"k": "v"}))
    assert (paths["c"] / "d" / "k.txt").read_text() == "v"


@pytest.mark.parametrize("sub_path", ["../../..", "/etc", "link/passwd"])
def test_a_sub_path_stays_in_its_volume(tmp_path: Path, sub_path: str) -> None:
    volume = {"name": "data", "emptyDir": {}}
    paths = materialize([volume], tmp_path, FACTS, _sources({}))
    os.symlink("/etc", paths["data"] / "link")  # what a container could do in its emptyDir
    container = {"name": "web", "volumeMounts": [
        {"name": "data", "mountPath": "/d", "subPath": sub_path}]}  # fmt: skip
    with pytest.raises(VolumeError, match="subPath"):
        container_mounts(container, [volume], paths)
