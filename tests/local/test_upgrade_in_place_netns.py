"""An in-place sidecar upgrade on the local runtime, with real Envoy, iptables and mTLS:
two revisions whose proxy images differ, the namespace moved from one to the other, then
`sidemesh upgrade-sidecars --local`. Only istio-proxy restarts (the app's process and restart
count stay), the sidecar's agent moves to the new revision's control plane by following the
pod's annotations, and requests between the pods (STRICT mTLS) keep being answered.
Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, SIDEMESH, Local, alive, needs_root, owned, served_directory

from sidemesh.local.controlplane import ControlPlaneOptions
from sidemesh.local.runtime import Runtime

pytestmark = needs_root

NAMESPACE = "shop"
UPGRADE = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "upgrade-sidecars"]
# The client's loop: GET http://web every 50 ms until /tmp/stop appears; prints ok and failed.
CLIENT_LOOP = """
import os, time, urllib.request
ok = failed = 0
while not os.path.exists('/tmp/stop-{tag}'):
    try:
        urllib.request.urlopen('http://web.shop/', timeout=5).read()
        ok += 1
    except Exception:
        failed += 1
    time.sleep(0.05)
print(ok, failed)
"""


def manifest(served: Path) -> list[dict[str, Any]]:
    def deployment(name: str, command: list[str], port: int | None) -> dict[str, Any]:
        container: dict[str, Any] = {"name": name, "image": "python:3.11", "command": command}
        if port is not None:
            container["ports"] = [{"name": "http", "containerPort": port}]
            container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1}  # fmt: skip
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"terminationGracePeriodSeconds": 5,
                                      "containers": [container]}},
            },
        }  # fmt: skip

    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {"istio.io/rev": "1-0"}}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": NAMESPACE},
         "spec": {"mtls": {"mode": "STRICT"}}},
        deployment("web", [PYTHON, "-m", "http.server", "8080", "--directory", str(served)], 8080),
        deployment("client", [PYTHON, "-c", "import time; time.sleep(3600)"], None),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    served = served_directory(tmp_path_factory.mktemp("www"))
    local = Local(tmp_path_factory.mktemp("sm") / "state")
    # readable by the control plane's uid 1337 (pytest's own temporary tree is not)
    values_dir = Path(tempfile.mkdtemp(prefix="sidemesh-upgrade-"))
    values_dir.chmod(0o755)
    values = values_dir / "values.yaml"
    values.write_text('{"global": {"tag": "1.1-upgrade"}}\n')
    values.chmod(0o644)
    try:
        local.run("control-plane", "start", "--revision", "1-0", "--timeout", "90")
        runtime = Runtime(local.state_dir)
        options = ControlPlaneOptions(revision="1-1", extra_args=("--values", str(values)))
        runtime.start_control_plane(options)
        runtime.wake()
        assert runtime.wait_control_plane_ready(options, 90), local.daemon_log()
        path = tmp_path_factory.mktemp("manifests") / "app.yaml"
        path.write_text("\n---\n".join(json.dumps(d) for d in manifest(served)))
        local.run("apply", "-f", str(path))
        yield local
    finally:
        local.run("down", check=False)
        shutil.rmtree(values_dir, ignore_errors=True)
        assert local.our_netns() == []


def _status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod["status"].get("containerStatuses", []) + pod["status"].get(
        "initContainerStatuses", []
    )
    return next(s for s in statuses if s["name"] == name)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    return conditions["Ready"] == "True"


def _pod(local: Local, app: str) -> dict[str, Any]:
    pods = owned(local.pods(NAMESPACE, f"app={app}"))
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _pid(local: Local, pod: dict[str, Any], container: str) -> int:
    """The container's main process, as the runtime records it (its launcher's pid)."""
    spec = local.state_dir / "state.json"
    state = json.loads(spec.read_text())
    record = state["pods"][f"{NAMESPACE}/{pod['metadata']['name']}"]
    return int(next(s["pid"] for s in record["statuses"] if s["name"] == container))


def test_upgrade_in_place_restarts_only_the_proxy(local: Local) -> None:
    def both_ready() -> bool:
        pods = owned(local.pods(NAMESPACE))
        return len(pods) == 2 and all(_ready(p) for p in pods)

    local.wait("web and client ready with 1-0 sidecars", both_ready)
    before = {app: _pod(local, app) for app in ("web", "client")}
    for pod in before.values():
        assert pod["metadata"]["annotations"]["istio.io/rev"] == "1-0"
    app_pids = {app: _pid(local, before[app], app) for app in before}

    client = before["client"]["metadata"]["name"]
    tag = "upgrade"
    loop = subprocess.Popen(
        [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", client, "-n", NAMESPACE,
         "-c", "client", "--", PYTHON, "-c", CLIENT_LOOP.format(tag=tag)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        local.run("label", "namespace", NAMESPACE, "istio.io/rev=1-1", "--overwrite")
        dry = subprocess.run(
            [*UPGRADE, "--local", "--state-dir", str(local.state_dir), "-n", NAMESPACE,
             "--dry-run", "-o", "json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        planned = json.loads(dry.stdout)
        assert {p["workload"]: (p["action"], p["outcome"]) for p in planned} == {
            "Deployment/client": ("in-place", "would patch"),
            "Deployment/web": ("in-place", "would patch"),
        }
        done = subprocess.run(
            [*UPGRADE, "--local", "--state-dir", str(local.state_dir), "-n", NAMESPACE],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

        def upgraded() -> bool:
            pods = owned(local.pods(NAMESPACE))
            return len(pods) == 2 and all(
                _ready(p)
                and _status(p, "istio-proxy")["restartCount"] == 1
                and _status(p, "istio-proxy")["image"].endswith(":1.1-upgrade")
                for p in pods
            )

        local.wait("istio-proxy restarted once with the 1-1 image, pods ready", upgraded)
        # the agent went to 1-1's control plane: its xDS connection is to istiod-1-1
        for app in ("web", "client"):
            name = before[app]["metadata"]["name"]
            check = local.run(
                "exec", name, "-n", NAMESPACE, "-c", "istio-proxy", "--", "sh", "-c",
                "cat /etc/istio/pod/annotations; getent hosts istiod-1-1.istio-system.svc",
            ).stdout  # fmt: skip
            assert 'istio.io/rev="1-1"' in check
        answer = local.run(
            "exec", before["client"]["metadata"]["name"], "-n", NAMESPACE, "-c", "client", "--",
            PYTHON, "-c", "import urllib.request as u; print(u.urlopen('http://web.shop/').read())",
        ).stdout  # fmt: skip
        assert "hello from web" in answer  # through both new sidecars, STRICT mTLS
        logs = local.run(
            "logs", before["web"]["metadata"]["name"], "-n", NAMESPACE, "-c", "istio-proxy"
        ).stdout
        assert "istiod-1-1.istio-system.svc:15012" in logs, logs[-2000:]
    finally:
        subprocess.run(
            [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", client, "-n", NAMESPACE,
             "-c", "client", "--", "touch", f"/tmp/stop-{tag}"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        out, err = loop.communicate(timeout=60)
        Path(f"/tmp/stop-{tag}").unlink(missing_ok=True)
    ok, failed = (int(n) for n in out.split())
    print(f"requests during the upgrade: {ok} answered, {failed} failed")
    assert ok > 0, err
    after = {app: _pod(local, app) for app in ("web", "client")}
    for app in ("web", "client"):
        # the same pod, the app's process untouched
        assert after[app]["metadata"]["uid"] == before[app]["metadata"]["uid"]
        assert _status(after[app], app)["restartCount"] == 0
        assert _pid(local, after[app], app) == app_pids[app] and alive(app_pids[app])
