"""`upgrade-sidecars` against a real kube-apiserver: what the planner calls "in place" is what
the API server's pod update validation accepts, and what it sends to a restart the API
server refuses (422). The pods need not run for this (the session's cluster has no node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, label_for_injection, wait_for

UPGRADE = "e2e-up"
TAG = "9.9.9-up"
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "python:3.12-slim", command: [python3, -m, http.server, "8080"]}
"""


@pytest.fixture(scope="module")
def upgrade_revision(cluster: Cluster, control_plane: ControlPlane) -> Iterator[str]:
    """A second revision, installed only (its injector's ConfigMaps and webhook): a newer
    proxy image, nothing else changed."""
    cluster.sidemesh("install", "--revision", UPGRADE, "--set", f"global.tag={TAG}")
    try:
        yield UPGRADE
    finally:
        cluster.sidemesh("uninstall", "--revision", UPGRADE, check=False)


def _proxy(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    return next(
        c for c in [*spec.get("initContainers", []), *spec["containers"]]
        if c["name"] == "istio-proxy"
    )  # fmt: skip


def _pod(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    pods = cluster.pods(namespace, "app=web")
    return pods[0] if len(pods) == 1 else None


def test_in_place_is_what_the_api_server_accepts(
    cluster: Cluster, control_plane: ControlPlane, upgrade_revision: str, namespace: str
) -> None:
    label_for_injection(cluster, namespace, f"istio.io/rev={control_plane.revision}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    before = wait_for("the web pod", lambda: _pod(cluster, namespace))
    assert before["metadata"]["annotations"]["istio.io/rev"] == control_plane.revision

    cluster.kubectl("label", "namespace", namespace, f"istio.io/rev={upgrade_revision}",
                    "--overwrite")  # fmt: skip
    dry = cluster.sidemesh("upgrade-sidecars", "-n", namespace, "--dry-run", "-o", "json")
    [planned] = orjson.loads(dry.stdout)
    assert (planned["action"], planned["outcome"]) == ("in-place", "would patch"), planned[
        "reasons"
    ]
    assert planned["restarts"] == ["istio-proxy"]

    # --no-wait: no node runs pods in this cluster, so none becomes Ready again
    done = cluster.sidemesh("upgrade-sidecars", "-n", namespace, "--no-wait", "-o", "json")
    assert [r["outcome"] for r in orjson.loads(done.stdout)] == ["patched"]
    after = cluster.get_json("pod", before["metadata"]["name"], "-n", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # the same pod
    assert after["metadata"]["annotations"]["istio.io/rev"] == upgrade_revision
    status = orjson.loads(after["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["revision"] == upgrade_revision
    assert _proxy(after)["image"].endswith(f":{TAG}")
    web = [c for c in after["spec"]["containers"] if c["name"] == "web"]
    assert web == [c for c in before["spec"]["containers"] if c["name"] == "web"]
    again = cluster.sidemesh("upgrade-sidecars", "-n", namespace, "-o", "json")
    assert [r["action"] for r in orjson.loads(again.stdout)] == ["current"]

    # What the planner sends to a restart, the API server refuses in place.
    env = [*(_proxy(after).get("env") or []), {"name": "EXTRA", "value": "1"}]
    where = "initContainers" if any(
        c["name"] == "istio-proxy" for c in after["spec"].get("initContainers", [])
    ) else "containers"  # fmt: skip
    containers = [
        {**c, "env": env} if c["name"] == "istio-proxy" else c for c in after["spec"][where]
    ]
    refused = cluster.kubectl(
        "patch", "pod", after["metadata"]["name"], "-n", namespace, "--type=merge",
        "-p", orjson.dumps({"spec": {where: containers}}).decode(), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "pod updates may not change fields other than" in refused.stderr
