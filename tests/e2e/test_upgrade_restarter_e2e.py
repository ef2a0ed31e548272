"""`restart-stale` against a real kube-apiserver and kube-controller-manager, with this host
as the node running the pods: the API server refuses the eviction (429) while the
PodDisruptionBudget allows no disruption, the restarter waits and then stops without forcing
anything, and once the budget allows one it evicts and waits for the Deployment to be whole.

Only the revision's injector objects are installed (its webhook with failurePolicy Ignore and
no server behind it): the restarter reads them to know the pod is stale; the replacement pod
is created without a sidecar, which is all this test needs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from e2e_kit import Cluster, wait_for
from test_e2e_node import MISSING, Node, _ready, node_cluster  # noqa: F401 (the fixture)

from sidemesh.install import manifests, workload
from sidemesh.install.values import InstallValues

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="; ".join(MISSING) or "needs root for network namespaces"
)
REVISION = "pdb-1"
NAMESPACE = "shop"
NODE = "e2e-node"


def web_deployment(namespace: str, *, replicas: int = 1, grace_seconds: int = 2) -> str:
    """A Deployment of a small web server, ready when it answers."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: {grace_seconds}
      containers:
      - name: web
        image: python:3.12-slim
        command: [python3, -m, http.server, "8080"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
"""


BUDGET = """
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: shop}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: web}}
"""


def _injector_objects() -> list[dict[str, Any]]:
    values = InstallValues()
    webhook = manifests.injector_webhook(values, REVISION)
    for item in webhook["webhooks"]:
        item["failurePolicy"] = "Ignore"  # nothing serves it here
    return [
        manifests.namespace(),
        workload.injector_configmap(values, REVISION),
        workload.mesh_configmap(values, REVISION),
        webhook,
    ]


def _budget(cluster: Cluster, allowed: int) -> dict[str, Any] | None:
    budget: dict[str, Any] = cluster.get_json("pdb", "web", "-n", NAMESPACE)
    status = budget.get("status") or {}
    settled = status.get("observedGeneration") == budget["metadata"]["generation"]
    healthy = status.get("currentHealthy") == 1
    return budget if settled and healthy and status.get("disruptionsAllowed") == allowed else None


def _restart_stale(cluster: Cluster, *flags: str) -> tuple[int, list[dict[str, Any]]]:
    result = cluster.sidemesh("restart-stale", "-n", NAMESPACE, "-o", "json", *flags, check=False)
    return result.returncode, orjson.loads(result.stdout or "[]")


def test_a_real_budget_holds_then_lets_the_restart_through(
    node_cluster: tuple[Cluster, Node],  # noqa: F811 (the fixture imported above)
) -> None:
    cluster, node = node_cluster
    node.start()
    wait_for("the node to be Ready", lambda: _ready(cluster.try_get_json("node", NODE) or {}))
    cluster.kubectl("apply", "-f", "-", input="\n".join(
        orjson.dumps(o).decode() for o in _injector_objects()))  # fmt: skip
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=web_deployment(NAMESPACE) + "---" + BUDGET)
    pod = wait_for(
        "the web pod to run and be ready",
        lambda: next((p for p in cluster.pods(NAMESPACE, "app=web") if _ready(p)), None),
    )
    wait_for("the budget to allow no disruption", lambda: _budget(cluster, 0))
    cluster.kubectl("label", "namespace", NAMESPACE, f"istio.io/rev={REVISION}")

    code, rows = _restart_stale(cluster, "--eviction-timeout", "4")
    assert code == 1, rows
    [row] = rows
    assert (row["workload"], row["status"]) == ("Deployment/web", "failed")
    assert "PodDisruptionBudget refused its eviction" in row["detail"]
    assert row["evictionsRefused"] >= 1  # 429s from the API server, waited on
    assert cluster.get_json("pod", pod["metadata"]["name"], "-n", NAMESPACE)  # still there
    events = cluster.get_json("events", "-n", NAMESPACE)["items"]
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in events}
    assert {("Pod", "EvictionRefused"), ("Deployment", "SidecarRestartFailed")} <= reasons
    refusal = next(e for e in events if e["reason"] == "EvictionRefused")
    assert "disruption budget" in refusal["message"]

    cluster.kubectl("patch", "pdb", "web", "-n", NAMESPACE, "--type=merge",
                    "-p", '{"spec": {"maxUnavailable": 1}}')  # fmt: skip
    wait_for("the budget to allow one disruption", lambda: _budget(cluster, 1))
    code, rows = _restart_stale(cluster, "--eviction-timeout", "60", "--healthy-timeout", "120")
    assert code == 0, rows
    assert [(r["workload"], r["status"]) for r in rows] == [("Deployment/web", "restarted")]
    pods = cluster.pods(NAMESPACE, "app=web")
    assert pod["metadata"]["name"] not in {p["metadata"]["name"] for p in pods}
    assert any(_ready(p) for p in pods)
