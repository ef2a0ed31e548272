"""The MeshConfig followed live on the real API server: the revision's `istio-<rev>` ConfigMap
edited with kubectl reaches the Kubernetes registry (running with the control plane's own
ServiceAccount token and RBAC), and the running `sidemesh discovery --kube` applies it too;
an invalid edit is refused with the last good MeshConfig kept."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import yaml
from e2e_kit import Cluster, ControlPlane, wait_for

from sidemesh.install import naming
from sidemesh.kube.client import make_client
from sidemesh.xds.mesh_reload_kube import MeshConfigMap
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.registry_kube import KubeRegistry

# A ConfigMap of this test's own (another revision's name): the shared control plane's stays.
OWN = MeshConfigMap(naming.NAMESPACE, naming.mesh_configmap_name("e2e-meshreload"))


class _RunningRegistry:
    """KubeRegistry following `where`, on its own loop in a thread; `latest` is the last
    snapshot."""

    def __init__(self, kubeconfig: Path, where: MeshConfigMap) -> None:
        self.latest: MeshSnapshot | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, args=(kubeconfig, where), daemon=True)
        self._thread.start()

    def _publish(self, snapshot: MeshSnapshot) -> None:
        self.latest = snapshot

    def _run(self, kubeconfig: Path, where: MeshConfigMap) -> None:
        asyncio.set_event_loop(self._loop)
        client = make_client(kubeconfig)
        registry = KubeRegistry(client, debounce=0.05, kinds={}, mesh_config_map=where)
        self._task = self._loop.create_task(registry.run(self._publish))
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.run_until_complete(client.close())
            self._loop.close()

    def policy(self) -> str | None:
        snapshot = self.latest
        return None if snapshot is None else snapshot.outbound_policy

    def stop(self) -> None:
        def cancel() -> None:
            if self._task is not None:
                self._task.cancel()

        self._loop.call_soon_threadsafe(cancel)
        self._thread.join(timeout=30)


def _set_mesh(cluster: Cluster, name: str, mesh: str) -> None:
    patch = json.dumps({"data": {"mesh": mesh}})
    cluster.kubectl("patch", "configmap", name, "-n", naming.NAMESPACE, "--type=merge",
                    "-p", patch)  # fmt: skip


def test_the_registry_follows_its_mesh_config_map_with_the_control_planes_rbac(
    cluster: Cluster, control_plane: ControlPlane
) -> None:
    account = f"system:serviceaccount:istio-system:istiod-{control_plane.revision}"
    for verb in ("get", "watch"):
        answer = cluster.kubectl("auth", "can-i", verb, "configmaps", "-n", naming.NAMESPACE,
                                 "--as", account, check=False)  # fmt: skip
        assert answer.stdout.strip() == "yes", verb
    cluster.kubectl("create", "configmap", OWN.name, "-n", OWN.namespace,
                    "--from-literal=mesh=outboundTrafficPolicy: {mode: REGISTRY_ONLY}")  # fmt: skip
    registry = _RunningRegistry(control_plane.service_account_kubeconfig(), OWN)
    try:
        wait_for("the ConfigMap's REGISTRY_ONLY", lambda: registry.policy() == "REGISTRY_ONLY")
        _set_mesh(cluster, OWN.name, "outboundTrafficPolicy: {mode: ALLOW_ANY}\n")
        wait_for("ALLOW_ANY after the edit", lambda: registry.policy() == "ALLOW_ANY")
        assert registry.latest is not None
        version = registry.latest.version
        _set_mesh(cluster, OWN.name, "outboundTrafficPolicy: {mode: SOMETIMES}\n")
        _set_mesh(cluster, OWN.name, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
        wait_for(
            "REGISTRY_ONLY after an invalid edit", lambda: registry.policy() == "REGISTRY_ONLY"
        )
        assert registry.latest.version == version + 1  # the invalid one published nothing
    finally:
        registry.stop()
        cluster.kubectl("delete", "configmap", OWN.name, "-n", OWN.namespace, check=False)


def test_running_discovery_applies_an_edit_of_its_revisions_mesh_config_map(
    cluster: Cluster, control_plane: ControlPlane
) -> None:
    name = naming.mesh_configmap_name(control_plane.revision)
    original = cluster.get_json("configmap", name, "-n", naming.NAMESPACE)["data"]["mesh"]
    edited = {**(yaml.safe_load(original) or {}),
              "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}  # fmt: skip
    reloaded = f"mesh config reloaded from ConfigMap istio-system/{name} key 'mesh'"
    before = control_plane.log().count(reloaded)
    _set_mesh(cluster, name, yaml.safe_dump(edited))
    try:
        wait_for("discovery to reload its MeshConfig",
                 lambda: control_plane.log().count(reloaded) > before)  # fmt: skip
        assert f"{reloaded}: outboundTrafficPolicy REGISTRY_ONLY" in control_plane.log()
    finally:
        _set_mesh(cluster, name, original)
    wait_for("discovery back on the installed MeshConfig",
             lambda: control_plane.log().count(reloaded) > before + 1)  # fmt: skip
