"""The local runtime for real: pods as network namespaces, services through kube-proxy rules,
probes, restarts, volumes, and `down` leaving nothing, even after the daemon was killed.

Everything runs through the `sidemesh local` command line. Needs root, `ip` and `iptables`;
all networking happens inside namespaces the runtime creates (10.244.0.0/16 and 10.96.0.0/16
exist only there). Every wait is bounded; no assertion depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_kit import (
    PYTHON,
    Local,
    alive,
    manifest,
    names,
    needs_root,
    owned,
    ready,
    running_app,
    served_directory,
)

pytestmark = needs_root


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with running_app(tmp_path_factory, "demo") as local:
        yield local


def test_pods_become_ready_through_real_readiness_probes(app: Local) -> None:
    app.wait(
        "2 web pods and the client ready",
        lambda: len([p for p in app.pods("demo") if ready(p)]) == 3,
    )
    table = app.run("get", "pods", "-n", "demo").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(line.split()[1:4] == ["1/1", "Running", "0"] for line in table[1:])
    labelled = app.run("get", "pods", "-n", "demo", "-l", "app=web", "--show-labels").stdout
    assert all("app=web,pod-template-hash=" in line for line in labelled.splitlines()[1:])


def test_client_reaches_the_service_by_name_and_the_pods_by_address(app: Local) -> None:
    web = [p for p in app.pods("demo", "app=web") if ready(p)]
    urls = [
        "http://web/",
        "http://web.demo/",
        "http://web.demo.svc.cluster.local/",
        *(f"http://{p['status']['podIP']}:8080/" for p in web),
    ]
    script = (
        "import urllib.request, sys\n"
        "for url in sys.argv[1:]:\n"
        "    print(url, urllib.request.urlopen(url, timeout=5).read().decode().strip())\n"
    )
    result = app.run("exec", "client", "-n", "demo", "--", PYTHON, "-c", script, *urls)
    assert result.stdout.splitlines() == [f"{url} hello from web" for url in urls]
    cluster_ip = app.run("get", "svc", "web", "-n", "demo").stdout.splitlines()[1].split()[2]
    assert cluster_ip.startswith("10.96.")
    resolved = app.run("exec", "client", "-n", "demo", "--", "getent", "hosts", "web").stdout
    assert resolved.split()[0] == cluster_ip


def test_logs_show_the_containers_output(app: Local) -> None:
    pod = sorted(names(app.pods("demo", "app=web")))[0]
    output = app.run("logs", pod, "-n", "demo", "-c", "web").stdout
    assert '"GET / HTTP/1.1" 200' in output


def test_rollout_restart_replaces_every_pod(app: Local) -> None:
    before = names(owned(app.pods("demo")))
    assert app.run("rollout", "restart", "deployment", "-n", "demo").stdout == (
        "deployment.apps/web restarted\n"
    )

    def replaced() -> bool:
        pods = owned(app.pods("demo"))
        return len(pods) == 2 and all(ready(p) for p in pods) and not names(pods) & before

    app.wait("the restarted deployment's new pods", replaced)


def test_delete_all_recreates_deployment_pods_but_not_bare_ones(app: Local) -> None:
    before = names(owned(app.pods("demo")))
    deleted = app.run("delete", "pod", "-n", "demo", "--all").stdout.splitlines()
    assert sorted(deleted) == sorted(f'pod "{n}" deleted' for n in [*before, "client"])

    def recreated() -> bool:
        pods = app.pods("demo")
        return len(pods) == 2 and all(ready(p) for p in pods) and not names(pods) & before

    app.wait("recreated deployment pods", recreated)
    assert "client" not in names(app.pods("demo"))


def test_a_new_daemon_adopts_the_pods_of_a_killed_one(app: Local) -> None:
    before = names(app.pods("demo"))
    os.kill(int((app.state_dir / "daemon.pid").read_text()), signal.SIGKILL)
    stale = app.run("get", "pods", "-n", "demo")
    assert "the local runtime daemon is not running" in stale.stderr
    app.run("rollout", "restart", "deployment", "web", "-n", "demo")  # starts a new daemon

    def settled() -> bool:
        pods = owned(app.pods("demo"))
        return len(pods) == 2 and all(ready(p) for p in pods) and not names(pods) & before

    app.wait("the rollout under the new daemon", settled)
    assert "not running" not in app.run("get", "pods", "-n", "demo").stderr


FEATURES_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "features", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 2,
        "volumes": [{"name": "work", "emptyDir": {}}],
        "initContainers": [
            {
                "name": "prepare",
                "image": "busybox",
                "command": ["sh", "-c", 'echo "$POD_NAME $POD_IP $CPU" > /mnt/sidemesh-test/info'],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                ],
                "resources": {"limits": {"cpu": "1500m"}},
                "volumeMounts": [{"name": "work", "mountPath": "/mnt/sidemesh-test"}],
            },
            {
                "name": "sidecar",
                "image": "busybox",
                "restartPolicy": "Always",
                "command": [PYTHON, "-m", "http.server", "9090"],
                "startupProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1},
            },
        ],
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "securityContext": {"runAsUser": 4242},
                "command": [
                    "sh",
                    "-c",
                    "cat /mnt/sidemesh-test/info; echo uid=$(id -u);"
                    " cat /proc/sys/kernel/hostname; exec sleep 3600",
                ],
                "volumeMounts": [{"name": "work", "mountPath": "/mnt/sidemesh-test"}],
            },
            {
                "name": "crasher",
                "image": "busybox",
                "command": ["sh", "-c", "echo attempt; exit 3"],
            },
        ],
    },
}


def test_init_containers_native_sidecars_volumes_and_restarts(app: Local, tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(json.dumps(FEATURES_POD))
    assert app.run("apply", "-f", str(path)).stdout == "pod/features created\n"

    def settled() -> bool:
        (pod,) = app.pods("default")
        statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
        return bool(statuses["main"]["ready"]) and statuses["crasher"]["restartCount"] >= 1

    app.wait("the features pod to run and restart its crasher", settled)
    (pod,) = app.pods("default")
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert init["prepare"]["state"]["terminated"]["exitCode"] == 0
    assert init["sidecar"]["started"] and "running" in init["sidecar"]["state"]
    row = app.run("get", "pods", "features").stdout.splitlines()[1].split()
    assert row[1] == "2/3"  # main and the native sidecar are ready, the crasher is not
    assert int(row[3]) >= 1
    logs = app.run("logs", "features", "-c", "main").stdout.splitlines()
    assert logs == [f"features {pod['status']['podIP']} 2", "uid=4242", "features"]
    assert app.run("logs", "features", "-c", "crasher", "-p").stdout == "attempt\n"
    app.run("delete", "pod", "features")
    assert app.pods("default") == []


def test_down_after_a_killed_daemon_leaves_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    served = served_directory(tmp_path_factory.mktemp("www"))
    local = Local(tmp_path_factory.mktemp("sm") / "state")
    path = tmp_path_factory.mktemp("manifests") / "app.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in manifest("crash", served)))
    local.run("apply", "-f", str(path))
    local.wait("pods ready", lambda: len([p for p in local.pods("crash") if ready(p)]) == 3)
    namespaces = local.our_netns()
    assert len(namespaces) == 4  # the node and three pods
    pids = [
        int(p)
        for n in namespaces
        for p in subprocess.run(
            ["ip", "netns", "pids", n], capture_output=True, text=True
        ).stdout.split()
    ]
    daemon = int((local.state_dir / "daemon.pid").read_text())
    assert daemon in pids  # the daemon lives in the node namespace
    os.kill(daemon, signal.SIGKILL)

    result = local.run("down")
    assert "removed 4 network namespace(s)" in result.stdout
    assert local.our_netns() == []
    assert not any(Path("/etc/netns").glob(f"{local.prefix}-*"))
    assert not local.state_dir.exists()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if alive(p)] == []
    again = local.run("down")
    assert again.stdout == "nothing to remove\n"
