"""`sidecar.sidemesh.io/bypass-init-containers` on the local runtime, through the real webhook,
real capture and a real Envoy.

The mesh is REGISTRY_ONLY, and an init container fetches from a server the mesh does not know
(a pod outside it, by IP). With a native sidecar the init container runs after istio-proxy is
ready, so its fetch goes through Envoy, which refuses the unknown destination: the init
container fails. Named in the annotation, it runs before istio-init installs capture, outside
the mesh, and the fetch succeeds. With a classic sidecar the user's init containers already
run before capture (Istio's order): the fetch succeeds with or without the annotation, and
the annotation is reported as ignored (SM1108). Needs root, `ip` and `iptables`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, Local, fresh_runtime, needs_root, served_directory

pytestmark = needs_root

BYPASS = "sidecar.sidemesh.io/bypass-init-containers"
MESH_DIR = "/etc/sidemesh-test-mesh"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with fresh_runtime(tmp_path_factory) as runtime:
        yield runtime
    assert not Path(MESH_DIR).exists()  # a mount point inside pods only


def _apply(local: Local, tmp: Path, objects: list[dict[str, Any]]) -> str:
    path = tmp / f"objects-{len(list(tmp.iterdir()))}.yaml"
    path.write_text("\n---\n".join(json.dumps(o) for o in objects))
    return local.run("apply", "-f", str(path)).stderr


def _server(served: Path) -> list[dict[str, Any]]:
    """A pod outside the mesh, serving a file: no Service, so the mesh has no entry for it."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "outside"}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "files", "namespace": "outside", "labels": {"app": "files"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "files", "image": "python:3.11",
                    "command": [PYTHON, "-m", "http.server", "9000", "--directory", str(served)],
                    "ports": [{"containerPort": 9000}],
                    "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1},
                }],
            },
        },
    ]  # fmt: skip


def _client(name: str, url: str, *, native: bool, bypass: bool) -> dict[str, Any]:
    annotations = {"sidecar.istio.io/nativeSidecar": "true" if native else "false"}
    if bypass:
        annotations[BYPASS] = "fetch"
    fetch = (
        "import sys, urllib.request\n"
        f"body = urllib.request.urlopen({url!r}, timeout=5).read()\n"
        "sys.exit(0 if body.startswith(b'hello') else 3)\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "mesh", "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "initContainers": [{"name": "fetch", "image": "python:3.11",
                                "command": [PYTHON, "-c", fetch]}],
            "containers": [{"name": "app", "image": "python:3.11",
                            "command": [PYTHON, "-c", "import time; time.sleep(3600)"]}],
        },
    }  # fmt: skip


def _ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def _fetched(local: Local, name: str) -> bool:
    return _fetch_succeeded(_pod(local, "mesh", name))


def _pod(local: Local, namespace: str, name: str) -> dict[str, Any]:
    (pod,) = [p for p in local.pods(namespace) if p["metadata"]["name"] == name]
    return pod


def _fetch_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    return next((s for s in statuses if s["name"] == "fetch"), {})


def _fetch_succeeded(pod: dict[str, Any]) -> bool:
    return _fetch_status(pod).get("state", {}).get("terminated", {}).get("exitCode") == 0


def _fetch_failed(pod: dict[str, Any]) -> bool:
    status = _fetch_status(pod)
    for state in (status.get("state", {}), status.get("lastState", {})):
        code = state.get("terminated", {}).get("exitCode")
        if code not in (None, 0):
            return True
    return False


def _restrict_to_registry(local: Local, tmp: Path) -> None:
    """The control plane's MeshConfig says REGISTRY_ONLY (its Deployment, edited as a user
    would with kubectl edit); returns once the new control-plane pod is the only one."""
    mesh = tmp / "mesh"
    mesh.mkdir(mode=0o755)
    (mesh / "mesh.yaml").write_text("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")
    (mesh / "mesh.yaml").chmod(0o644)
    deployment = json.loads(
        local.run("get", "deployment", "istiod-canary", "-n", "istio-system", "-o", "json").stdout
    )
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    container["args"] += ["--mesh-config", f"{MESH_DIR}/mesh.yaml"]
    container["volumeMounts"].append({"name": "mesh", "mountPath": MESH_DIR, "readOnly": True})
    spec["volumes"].append({"name": "mesh", "hostPath": {"path": str(mesh)}})
    deployment.pop("status", None)
    deployment["metadata"] = {"name": "istiod-canary", "namespace": "istio-system",
                              "labels": deployment["metadata"].get("labels", {})}  # fmt: skip
    _apply(local, tmp, [deployment])

    def restarted() -> bool:
        pods = local.pods("istio-system", "app=istiod")
        return len(pods) == 1 and all(
            "--mesh-config" in (p["spec"]["containers"][0].get("args") or []) and _ready(p)
            for p in pods
        )

    local.wait("the control plane restarted with REGISTRY_ONLY", restarted)


def test_named_init_containers_run_outside_the_mesh(local: Local, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    _apply(local, tmp_path, _server(served_directory(tmp_path / "www")))
    local.run("control-plane", "start", "--revision", "canary", "--timeout", "90")
    _restrict_to_registry(local, tmp_path)
    local.wait("the file server", lambda: _ready(_pod(local, "outside", "files")))
    url = f"http://{_pod(local, 'outside', 'files')['status']['podIP']}:9000/index.html"

    namespace = {"name": "mesh", "labels": {"istio.io/rev": "canary"}}
    _apply(local, tmp_path, [{"apiVersion": "v1", "kind": "Namespace", "metadata": namespace}])
    warnings = _apply(local, tmp_path, [
        _client("native-without", url, native=True, bypass=False),
        _client("native-with", url, native=True, bypass=True),
        _client("classic-without", url, native=False, bypass=False),
        _client("classic-with", url, native=False, bypass=True),
    ])  # fmt: skip
    assert warnings.splitlines() == [  # classic-without, then classic-with
        "Warning: SM1106: init container fetch appears to use the network, and runs before the "
        "sidecar (classic sidecar mode): its calls leave the pod outside the mesh (no mTLS; a "
        'STRICT destination refuses them). Set sidecar.istio.io/nativeSidecar: "true" to run it '
        "after the sidecar is ready",
        f"Warning: SM1108: annotation {BYPASS} is ignored: with a classic sidecar every init "
        "container already runs before istio-init installs capture, outside the mesh",
    ]

    def order(name: str) -> list[str]:
        return [c["name"] for c in _pod(local, "mesh", name)["spec"]["initContainers"]]

    assert order("native-without") == ["istio-init", "istio-proxy", "fetch"]
    assert order("native-with") == ["fetch", "istio-init", "istio-proxy"]
    assert order("classic-without") == order("classic-with") == ["fetch", "istio-init"]

    for name in ("native-with", "classic-without", "classic-with"):
        local.wait(f"{name}: fetch succeeded", partial(_fetched, local, name))
    # Through the sidecar the unknown destination is refused (REGISTRY_ONLY).
    local.wait("native-without: fetch failed",
               lambda: _fetch_failed(_pod(local, "mesh", "native-without")))  # fmt: skip
    assert not _fetch_succeeded(_pod(local, "mesh", "native-without"))
