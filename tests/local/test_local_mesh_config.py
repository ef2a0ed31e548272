"""MeshConfig in the local runtime as Istio users set it: the `istio[-REV]` ConfigMap in
istio-system, key `mesh`. Checked at apply with discovery's own model, handed to the revision's
control plane as its `--mesh-config` file, re-read live by discovery's file registry; what
discovery reads only at start rolls the control plane's Deployment instead."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from local_testkit import empty_state

from async_waits import eventually
from sidemesh.api import names
from sidemesh.local.apiserver import apply_objects, ensure_namespace, refused_objects
from sidemesh.local.controlplane import (
    ControlPlaneOptions,
    control_plane_objects,
    stamp_mesh_config,
)
from sidemesh.local.mesh_config import (
    DIGEST_ANNOTATION,
    MOUNTED_FILE,
    is_mesh_configmap,
    mesh_dir,
    mesh_text,
)
from sidemesh.local.model import ControlPlaneRecord, State
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.registry_files import FileRegistry

SYSTEM = names.CONTROL_PLANE_NAMESPACE


def mesh_configmap(mesh: Any, name: str = "istio-canary") -> dict[str, Any]:
    text = mesh if isinstance(mesh, str) else yaml.safe_dump(mesh)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYSTEM}, "data": {"mesh": text}}  # fmt: skip


def system_state() -> State:
    state = empty_state()
    ensure_namespace(state, SYSTEM, 1.0)
    return state


def test_a_valid_mesh_configmap_is_stored_and_read_per_revision() -> None:
    state = system_state()
    registry_only = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    result = apply_objects(state, [mesh_configmap(registry_only),
                                   mesh_configmap({"accessLogFile": "/dev/stdout"}, "istio")],
                           now=1.0, default_namespace="default")  # fmt: skip
    assert result.errors == []
    assert yaml.safe_load(mesh_text(state.configmaps, "canary")) == registry_only
    assert "accessLogFile" in mesh_text(state.configmaps, "default")  # `istio`: the default
    assert mesh_text(state.configmaps, "other") == ""  # none: Istio's defaults


@pytest.mark.parametrize(
    ("mesh", "words"),
    [
        ({"outboundTrafficPolicy": {"mode": "SOMETIMES"}},
         "outboundTrafficPolicy.mode: Input should be 'ALLOW_ANY' or 'REGISTRY_ONLY'"),
        ({"outboundTrafficPolicyy": {}}, "outboundTrafficPolicyy: Extra inputs are not permitted"),
        ("mode: [", "ConfigMap istio-canary data.mesh:2: not valid YAML"),
        (["a list"], "expected a mapping, got list"),
    ],
)  # fmt: skip
def test_an_invalid_mesh_is_refused_naming_the_field_and_nothing_is_applied(
    mesh: Any, words: str
) -> None:
    state = system_state()
    batch = [mesh_configmap({"accessLogFile": "/dev/stdout"}, "istio"), mesh_configmap(mesh)]
    [refused] = refused_objects(state, [("mesh.yaml", batch)], now=1.0, default_namespace="x")
    assert refused.startswith('The ConfigMap "istio-canary" is invalid: ')
    assert words in refused
    assert state.configmaps == {}


def test_only_mesh_configmaps_of_istio_system_are_checked() -> None:
    assert is_mesh_configmap(mesh_configmap({}))
    injector = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "istio-sidecar-injector", "namespace": SYSTEM},
                "data": {"config": "policy: enabled\n"}}  # fmt: skip
    assert not is_mesh_configmap(injector)
    elsewhere = mesh_configmap("not: [valid")
    elsewhere["metadata"]["namespace"] = "shop"
    assert not is_mesh_configmap(elsewhere)
    state = system_state()
    ensure_namespace(state, "shop", 1.0)
    assert apply_objects(state, [elsewhere], now=1.0, default_namespace="x").errors == []


def test_the_control_plane_runs_discovery_on_the_revisions_mesh_file(tmp_path: Path) -> None:
    objects = control_plane_objects(ControlPlaneOptions(revision="canary"), serving_cert="c",
                                    serving_key="k", ca_files={}, state_dir=tmp_path)  # fmt: skip
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["args"][container["args"].index("--mesh-config") + 1] == MOUNTED_FILE
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config-volume"]
    assert mount == {"name": "config-volume", "mountPath": "/etc/istio/config", "readOnly": True}
    [volume] = [v for v in spec["volumes"] if v["name"] == "config-volume"]
    assert volume["hostPath"]["path"] == str(mesh_dir(tmp_path, "canary"))


def _plane_state(tmp_path: Path) -> State:
    state = system_state()
    objects = control_plane_objects(ControlPlaneOptions(revision="canary"), serving_cert="c",
                                    serving_key="k", ca_files={}, state_dir=tmp_path)  # fmt: skip
    result = apply_objects(state, objects, now=1.0, default_namespace=SYSTEM)
    assert result.errors == []
    state.control_planes["canary"] = ControlPlaneRecord(revision="canary", default=False,
                                                        created=1.0)  # fmt: skip
    return state


def _digest(state: State) -> str:
    template = state.deployments[f"{SYSTEM}/istiod-canary"].manifest["spec"]["template"]
    return str(template["metadata"]["annotations"][DIGEST_ANNOTATION])


def test_live_fields_leave_the_pods_alone_and_start_only_fields_roll_them(tmp_path: Path) -> None:
    state = _plane_state(tmp_path)
    stamp_mesh_config(state, 2.0)
    first = _digest(state)
    apply_objects(state, [mesh_configmap({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
                                          "accessLogFile": "/dev/stdout"})],
                  now=3.0, default_namespace="x")  # fmt: skip
    stamp_mesh_config(state, 3.0)
    assert _digest(state) == first  # re-read live by discovery: no restart
    assert not [e for e in state.events if e.reason == "MeshConfigRestart"]
    apply_objects(state, [mesh_configmap({"trustDomain": "example.org"})], now=4.0,
                  default_namespace="x")  # fmt: skip
    stamp_mesh_config(state, 4.0)
    assert _digest(state) != first
    [event] = [e for e in state.events if e.reason == "MeshConfigRestart"]
    assert event.object == "deployment/istiod-canary"
    assert "trustDomain" in event.message


async def test_discovery_rereads_its_mesh_file_and_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, mesh_file = tmp_path / "registry", tmp_path / "mesh"
    registry.mkdir()
    (registry / "objects.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    )
    mesh_file.write_text("")
    published: list[MeshSnapshot] = []
    files = FileRegistry([registry], mesh_file=mesh_file, poll=0.05, debounce=0.01)
    task = asyncio.create_task(files.run(published.append))
    try:
        await eventually(lambda: published, timeout=10)
        assert published[-1].outbound_policy == "ALLOW_ANY"
        mesh_file.write_text("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
        await eventually(lambda: published[-1].outbound_policy == "REGISTRY_ONLY", timeout=10)
        assert "MeshConfig/mesh" in published[-1].changed
        count = len(published)
        with caplog.at_level(logging.ERROR, logger="sidemesh.xds.registry_files"):
            mesh_file.write_text("outboundTrafficPolicy: {mode: SOMETIMES}\n")
            await eventually(lambda: "mesh config not reloaded" in caplog.text, timeout=10)
        assert len(published) == count  # the last good one stays
        with caplog.at_level(logging.WARNING, logger="sidemesh.xds.registry_files"):
            mesh_file.write_text("trustDomain: example.org\n")
            await eventually(lambda: published[-1].outbound_policy == "ALLOW_ANY", timeout=10)
        assert "trustDomain take effect when discovery restarts" in caplog.text
        assert published[-1].trust_domain == "cluster.local"  # as the CA signs, until then
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
