"""The guide's commands, verbatim, against a real API server: find the revision, label the
namespace, restart the workloads, and the new pods carry that revision's sidecar."""

from __future__ import annotations

import orjson
from e2e_kit import Cluster, ControlPlane, is_injected, wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  # No kubelet here, so no pod ever becomes ready: surge the whole new ReplicaSet at once.
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 100%, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx:1.27, ports: [{containerPort: 80}]}
"""


def test_the_guide_verbatim(cluster: Cluster, control_plane: ControlPlane, namespace: str) -> None:
    revision = control_plane.revision
    # Step 1: the revision, from the control plane's labels.
    listed = cluster.kubectl(
        "-n", "istio-system", "get", "pods", "-l", "app=istiod", "--show-labels"
    )
    assert listed.returncode == 0
    # Pods without a sidecar, before the namespace opts in.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    old = wait_for(
        "two pods of web",
        lambda: ((pods := cluster.pods(namespace, "app=web")) and len(pods) == 2 and pods) or None,
    )
    assert not any(is_injected(p) for p in old)
    # Step 2: the label, exactly as the guide writes it.
    cluster.kubectl(
        "label", "namespace", namespace, "istio-injection-", f"istio.io/rev={revision}",
        "--overwrite",
    )  # fmt: skip
    # Step 3: restart; the controllers replace the pods through the webhook.
    cluster.kubectl("rollout", "restart", "deployment", "-n", namespace)
    old_names = {p["metadata"]["name"] for p in old}

    def injected_replacements() -> list[dict[str, object]] | None:
        pods = [
            p for p in cluster.pods(namespace, "app=web") if p["metadata"]["name"] not in old_names
        ]
        injected = [p for p in pods if is_injected(p)]
        return injected if len(injected) >= 2 else None

    new = wait_for("two injected replacement pods", injected_replacements)
    for pod in new:
        status = orjson.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
        assert status["revision"] == revision
    # `kubectl delete pod --all` brings them back injected too.
    cluster.kubectl("delete", "pod", "-n", namespace, "--all", "--wait=false")
    wait_for(
        "pods recreated with the sidecar",
        lambda: (pods := [p for p in cluster.pods(namespace, "app=web")
                          if p["metadata"]["name"] not in {q["metadata"]["name"] for q in new}])
        and len([p for p in pods if is_injected(p)]) >= 2,
    )  # fmt: skip
