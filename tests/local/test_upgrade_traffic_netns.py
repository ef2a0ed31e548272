"""Requests keep being answered through an in-place sidecar upgrade on the local runtime (issue
#15's proof): real Envoy, iptables capture and STRICT mTLS, a client calling a two-replica
`web` every 50 ms while `upgrade-sidecars --local` restarts every istio-proxy, one pod at a
time. A request may be delayed; none may fail, but for the one residual named below.

Why requests do not fail, by design rather than by luck:
* the capture rules hold (drop, not refuse) a SYN to the proxy's ports while nothing listens
  there, so a connection made while a proxy restarts waits for the new proxy (`capture.rules`);
* the old proxy drains inbound connections, then stops listening and lets the requests in
  flight finish before it exits (`agent.envoy`);
* while a web pod's proxy restarts, the pod is not ready and leaves the Service's endpoints:
  the other replica answers. (With a single replica there is no endpoint left to send to while
  the only one is not ready — Kubernetes' readiness, which the mesh honours.)

The client's timeout is 30 s: a delayed connect is not a failure, and the test says so by
printing the slowest request.

What the design cannot rule out, so the test allows it and counts it: a connection the kernel
completed into the old proxy's listen backlog in the instant before that listener closed is
reset by the kernel (the app sees ConnectionResetError). It needs a new connection within
microseconds of the close; observed about once in ten runs on a loaded 2-core machine. Every
other failure — refused, timed out, a 503 — fails the test. Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, SIDEMESH, Local, needs_root, owned, served_directory

from sidemesh.local.controlplane import ControlPlaneOptions
from sidemesh.local.runtime import Runtime

pytestmark = needs_root

NAMESPACE = "trade"
UPGRADE = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "upgrade-sidecars"]
# GET http://web every 50 ms until the stop file appears; print "answered failed slowest",
# and each failure on stderr.
CLIENT_LOOP = """
import os, sys, time, urllib.request
ok = failed = 0
slowest = 0.0
while not os.path.exists({stop!r}):
    started = time.monotonic()
    try:
        urllib.request.urlopen('http://web.trade/', timeout=30).read()
        ok += 1
    except Exception as exc:
        failed += 1
        print('failed at', time.time(), repr(exc)[:300], file=sys.stderr, flush=True)
    slowest = max(slowest, time.monotonic() - started)
    time.sleep(0.05)
print(ok, failed, round(slowest, 2))
"""


def manifest(served: Path) -> list[dict[str, Any]]:
    def deployment(name: str, replicas: int, command: list[str], port: int | None) -> Any:
        container: dict[str, Any] = {"name": name, "image": "python:3.11", "command": command}
        if port is not None:
            container["ports"] = [{"name": "http", "containerPort": port}]
            container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1}  # fmt: skip
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": replicas, "selector": {"matchLabels": {"app": name}},
                # the grace covers the proxy's drain (terminationDrainDuration 5 s) and quiesce
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"terminationGracePeriodSeconds": 10,
                                      "containers": [container]}},
            },
        }  # fmt: skip

    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {"istio.io/rev": "1-0"}}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": NAMESPACE},
         "spec": {"mtls": {"mode": "STRICT"}}},
        deployment("web", 2, [PYTHON, "-m", "http.server", "8080", "--directory", str(served)],
                   8080),
        deployment("client", 1, [PYTHON, "-c", "import time; time.sleep(3600)"], None),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    served = served_directory(tmp_path_factory.mktemp("www"))
    local = Local(tmp_path_factory.mktemp("sm") / "state")
    # readable by the control plane's uid 1337 (pytest's own temporary tree is not)
    values_dir = Path(tempfile.mkdtemp(prefix="sidemesh-traffic-"))
    values_dir.chmod(0o755)
    values = values_dir / "values.yaml"
    values.write_text('{"global": {"tag": "1.1-traffic"}}\n')
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


def _proxy(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod["status"]
    statuses = status.get("containerStatuses", []) + status.get("initContainerStatuses", [])
    return next(s for s in statuses if s["name"] == "istio-proxy")


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def test_no_request_fails_while_every_sidecar_is_upgraded_in_place(local: Local) -> None:
    def all_ready() -> bool:
        pods = owned(local.pods(NAMESPACE))
        return len(pods) == 3 and all(_ready(p) for p in pods)

    local.wait("two web pods and the client ready with 1-0 sidecars", all_ready)
    client = owned(local.pods(NAMESPACE, "app=client"))[0]["metadata"]["name"]
    stop = f"/tmp/sidemesh-traffic-stop-{os.getpid()}"
    loop = subprocess.Popen(
        [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", client, "-n", NAMESPACE,
         "-c", "client", "--", PYTHON, "-c", CLIENT_LOOP.format(stop=stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        local.run("label", "namespace", NAMESPACE, "istio.io/rev=1-1", "--overwrite")
        done = subprocess.run(
            [*UPGRADE, "--local", "--state-dir", str(local.state_dir), "-n", NAMESPACE,
             "-o", "json"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        outcomes = sorted((r["workload"], r["outcome"]) for r in json.loads(done.stdout))
        assert outcomes == [("Deployment/client", "patched")] + [("Deployment/web", "patched")] * 2

        def upgraded() -> bool:
            pods = owned(local.pods(NAMESPACE))
            return len(pods) == 3 and all(
                _ready(p)
                and _proxy(p)["restartCount"] == 1
                and _proxy(p)["image"].endswith(":1.1-traffic")
                for p in pods
            )

        local.wait("every istio-proxy restarted with the 1-1 image, pods ready", upgraded)
    finally:
        subprocess.run(
            [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", client, "-n", NAMESPACE,
             "-c", "client", "--", "touch", stop],
            capture_output=True, timeout=60,
        )  # fmt: skip
        out, err = loop.communicate(timeout=90)
        Path(stop).unlink(missing_ok=True)
    answered, failed, slowest = out.split()
    print(f"requests during the upgrade: {answered} answered, {failed} failed, "
          f"slowest {slowest}s")  # fmt: skip
    assert int(answered) > 0, err
    failures = [line for line in err.splitlines() if line.startswith("failed at")]
    assert len(failures) == int(failed), err
    # the listen-backlog reset (see the module's docstring) is the only failure allowed; at
    # most one per proxy whose listener closed with a connection arriving
    assert all("ConnectionResetError" in line for line in failures), err
    assert int(failed) <= 3, err
