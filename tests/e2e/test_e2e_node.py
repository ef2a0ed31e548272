"""This host as a Node of a real API server (`sidemesh local node`), and the guide walked on it
with kubectl (`sidemesh demo --kube`).

Each test starts its own API server instead of the session's `cluster`: a node binds every
pending pod, and would otherwise run the other tests' pods (which expect none to run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_kit import Cluster, ControlPlane, free_port, wait_for

from sidemesh.kube import testbed as kube_testbed
from sidemesh.local import network
from sidemesh.local.naming import node_netns, pod_netns, runtime_prefix
from sidemesh.local.preflight import missing_requirements

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="; ".join(MISSING) or "needs root for network namespaces"
)
SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]
NODE = "e2e-node"

PLAIN_POD = """
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: python:3.12-slim
    command: [python3, -m, http.server, "8080"]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
"""


MESH_NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/rev: node-host}}
"""


def _assets() -> Path:
    try:
        return kube_testbed.find_assets()
    except kube_testbed.TestbedError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the end-to-end tier must run in CI: {exc}")
        pytest.skip(f"no real kube-apiserver: {exc}")


def _state_dir() -> Path:
    # Not under /tmp: a pod's emptyDir mounted at /tmp would hide the pods' directory there.
    return Path("/run") / f"sidemesh-e2e-node-{uuid.uuid4().hex[:8]}"


class Node:
    """`sidemesh local node` against one testbed, started on demand, stopped at the end."""

    def __init__(self, cluster: Cluster, log: Path) -> None:
        self.cluster = cluster
        self.state = _state_dir()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*SIDEMESH, "local", "--state-dir", str(self.state), "node",
                 "--kubeconfig", str(self.cluster.testbed.kubeconfig), "--node-name", NODE,
                 *extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(self.state)], check=False)


@pytest.fixture
def node_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Node]]:
    """A fresh API server, and a node for it (not yet started)."""
    testbed = kube_testbed.start_testbed(tmp_path / "testbed", _assets())
    cluster = Cluster(testbed)
    node = Node(cluster, tmp_path / "node.log")
    try:
        yield cluster, node
    finally:
        node.stop()
        testbed.stop()


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def test_a_node_registers_runs_a_pod_and_lets_it_go(node_cluster: tuple[Cluster, Node]) -> None:
    cluster, node = node_cluster
    node.start()
    state = node.state / "node"
    wait_for("the node to be Ready", lambda: _ready(cluster.try_get_json("node", NODE) or {}))
    lease = wait_for(
        "the node's lease", lambda: cluster.try_get_json("lease", NODE, "-n", "kube-node-lease")
    )
    assert lease["spec"]["holderIdentity"] == NODE

    cluster.kubectl("apply", "-n", "default", "-f", "-", input=PLAIN_POD)

    def running() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.get_json("pod", "plain", "-n", "default")
        return pod if _ready(pod) else None

    pod = wait_for("the pod to run and be ready", running)
    assert pod["spec"]["nodeName"] == NODE  # bound through pods/binding
    status = pod["status"]
    assert status["phase"] == "Running"
    assert status["podIP"].startswith("10.244.")
    assert [(s["name"], s["ready"], s["restartCount"]) for s in status["containerStatuses"]] == [
        ("web", True, 0)
    ]
    listed = cluster.kubectl("get", "pod", "plain", "-n", "default").stdout
    assert listed.splitlines()[1].split()[1:3] == ["1/1", "Running"]
    wait_for(
        "the kubelet's events about the pod",
        lambda: any(
            e["reason"] == "Started" and e["involvedObject"]["name"] == "plain"
            for e in cluster.get_json("events", "-n", "default")["items"]
        ),
    )
    sandbox = pod_netns(runtime_prefix(state), pod["metadata"]["uid"])
    assert sandbox in network.list_netns()

    # Graceful deletion: the node stops the pod, then deletes it with grace 0.
    cluster.kubectl("delete", "pod", "plain", "-n", "default", "--wait=false")
    wait_for(
        "the pod to be gone from the server",
        lambda: cluster.try_get_json("pod", "plain", "-n", "default") is None,
    )
    assert sandbox not in network.list_netns()


def test_sidecars_reach_a_control_plane_run_on_the_host(
    node_cluster: tuple[Cluster, Node], tmp_path: Path
) -> None:
    cluster, node = node_cluster
    plane = ControlPlane(cluster, "node-host", tmp_path / "plane", webhook_port=free_port())
    plane.workdir.mkdir()
    plane.install()
    # istiod runs on the host here, not as the install's pods.
    cluster.kubectl("scale", "deployment", "istiod-node-host", "-n", "istio-system",
                    "--replicas=0")  # fmt: skip
    plane.start()
    try:
        assert plane.process is not None
        arguments = [str(a) for a in plane.process.args]  # type: ignore[union-attr]
        xds_port = arguments[arguments.index("--xds-tls-port") + 1]
        node.start("--host-service", f"istio-system/istiod-node-host:15012=127.0.0.1:{xds_port}")
        cluster.kubectl("apply", "-f", "-", input=MESH_NAMESPACE)
        cluster.kubectl("apply", "-n", "mesh", "-f", "-", input=PLAIN_POD)

        def ready() -> dict[str, Any] | None:
            pod = cluster.try_get_json("pod", "plain", "-n", "mesh")
            return pod if pod and _ready(pod) else None

        pod = wait_for("the injected pod to be ready (its sidecar synced over xDS)", ready)
        assert [s["name"] for s in pod["status"]["containerStatuses"]] == ["web", "istio-proxy"]
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])
        listed = cluster.kubectl("get", "pod", "-n", "mesh").stdout
        assert listed.splitlines()[1].split()[1:3] == ["2/2", "Running"]
    finally:
        plane.stop()


def test_demo_kube_walks_the_guide(tmp_path: Path) -> None:
    """The whole guide on the real server, `--json` too (one run: the narration goes to
    stderr, the object of checks to stdout)."""
    assets = _assets()
    state = _state_dir()
    result = subprocess.run(
        [*SIDEMESH, "demo", "--kube", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBEBUILDER_ASSETS": str(assets), "COLUMNS": "200"},
        timeout=900,
        check=False,
    )
    output = result.stderr
    assert result.returncode == 0, output + result.stdout
    for command in (
        "kubectl -n istio-system get pods -l app=istiod --show-labels",
        "kubectl label namespace demo istio-injection- istio.io/rev=asm-173-3 --overwrite",
        "kubectl rollout restart deployment -n demo",
        "kubectl get pod -n demo",
        "kubectl apply -f - <<EOF",
    ):
        assert f"$ {command}" in output
    last_listing = output.rsplit("$ kubectl get pod -n demo", 1)[1].splitlines()[1:]
    listing = last_listing[: next(i for i, line in enumerate(last_listing) if "✔" in line)]
    rows = [line.split() for line in listing[1:] if line.split()]
    app_rows = [r for r in rows if r[0].startswith(("backend-", "frontend-", "client-"))]
    assert len(app_rows) == 4 and all(r[1:3] == ["2/2", "Running"] for r in app_rows), output
    # The app's traffic crossed both sidecars with mutual TLS: the backend saw its caller.
    assert '"caller": "spiffe://cluster.local/ns/demo/sa/frontend"' in output
    # The AuthorizationPolicy, applied with kubectl, reached the backends' sidecars: the guest
    # (its own service account) is refused by them, the client let through.
    assert "kind: AuthorizationPolicy" in output
    assert "$ kubectl exec -n demo guest -c guest -- curl -s -w" in output
    assert "RBAC: access denied\nHTTP 403" in output
    assert '"caller": "spiffe://cluster.local/ns/demo/sa/client"' in output
    assert "\nHTTP 200" in output
    assert "Golden signals" in output
    assert "7 of 7 steps as the guide says." in output

    report = json.loads(result.stdout)  # the whole of stdout: one object
    assert report["ok"] is True and report["failed_step"] is None, report
    assert report["kube"] is True and report["node_ready"] is True
    assert report["control_plane_ready"] is True and report["ready_2_of_2"] is True
    assert report["mtls"] is True
    assert report["mtls_caller"] == "spiffe://cluster.local/ns/demo/sa/frontend"
    assert report["authz_denied_status"] == 403
    assert report["authz_denied_body"] == "RBAC: access denied"
    assert report["authz_allowed_status"] == 200
    assert report["authz_allowed_caller"] == "spiffe://cluster.local/ns/demo/sa/client"
    assert report["requests_edge"] == "demo/client -> demo/backend"
    sent = report["requests_sent"]
    assert sent >= 1
    assert report["requests_total_source"] == report["requests_total_destination"] == sent
    edge = next(e for e in report["golden_signals"] if e["source"] == "demo/client"
                and e["destination"] == "demo/backend")  # fmt: skip
    assert edge["mutual_tls"] is True and edge["success_rate"] == 1.0
    assert "upgrade_ready_2_of_2" not in report  # the kube walk does no upgrade
    assert [(s["step"], s["ok"]) for s in report["steps"]] == [(n, True) for n in range(1, 8)]
    assert report["cleaned_up"] is True
    # Everything the node made is gone: its network namespace and its state.
    assert node_netns(runtime_prefix(state / "node")) not in network.list_netns()
    assert not state.exists()
