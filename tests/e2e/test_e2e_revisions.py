"""Two revisions side by side, each namespace injected by its own; one revision's webhook down
(failurePolicy Fail: its pods are refused with a clear error, the other revision carries on)
and back (the ReplicaSet fills itself with injected pods)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, free_port, is_injected, label_for_injection, wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: api, image: nginx:1.27}
"""


def pod(name: str) -> str:
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }).decode()  # fmt: skip


def injected_by(pod: dict[str, Any]) -> str | None:
    status = (pod["metadata"].get("annotations") or {}).get("sidecar.istio.io/status")
    return None if status is None else str(orjson.loads(status)["revision"])


@pytest.fixture(scope="module")
def second(
    cluster: Cluster, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        cluster, "e2e-2", tmp_path_factory.mktemp("cp-e2e-2"), webhook_port=free_port()
    )
    plane.install()
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        cluster.sidemesh("uninstall", "--revision", "e2e-2", check=False)


@pytest.fixture
def other_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace[:55]}-other"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_each_namespace_is_injected_by_its_own_revision(
    cluster: Cluster,
    control_plane: ControlPlane,
    second: ControlPlane,
    namespace: str,
    other_namespace: str,
) -> None:
    planes = {namespace: control_plane.revision, other_namespace: second.revision}
    for ns, revision in planes.items():
        label_for_injection(cluster, ns, f"istio.io/rev={revision}")
        cluster.kubectl("create", "-n", ns, "-f", "-", input=pod("web"))
    for ns, revision in planes.items():
        created = cluster.get_json("pod", "web", "-n", ns)
        assert injected_by(created) == revision
        proxy = next(c for c in created["spec"]["containers"] if c["name"] == "istio-proxy")
        ca_addr = next(e["value"] for e in proxy["env"] if e["name"] == "CA_ADDR")
        assert ca_addr == f"istiod-{revision}.istio-system.svc:15012"
    for ns, revision in planes.items():
        check = cluster.sidemesh("check-inject", "web", "-n", ns, "-o", "json")
        [verdict] = orjson.loads(check.stdout)
        assert verdict["injected"] and verdict["revision"] == revision
        assert verdict["webhook"] == (
            f"istio-sidecar-injector-{revision}/rev.namespace.sidecar-injector.istio.io"
        )


def test_webhook_down_refuses_pods_and_back_fills_the_replicaset(
    cluster: Cluster,
    control_plane: ControlPlane,
    second: ControlPlane,
    namespace: str,
    other_namespace: str,
) -> None:
    label_for_injection(cluster, namespace, f"istio.io/rev={second.revision}")
    label_for_injection(cluster, other_namespace, f"istio.io/rev={control_plane.revision}")
    lease = wait_for("e2e-2's leader Lease", second.lease)
    assert lease["spec"].get("holderIdentity")
    second.stop()  # SIGTERM, as the kubelet sends it
    # The leader gave its Lease up on the way out: a successor need not wait a lease term.
    assert not (second.lease() or {"spec": {}})["spec"].get("holderIdentity")

    refused = cluster.kubectl("create", "-n", namespace, "-f", "-", input=pod("down"), check=False)
    assert refused.returncode != 0
    assert (
        'Internal error occurred: failed calling webhook "rev.namespace.sidecar-injector.istio.io"'
        in refused.stderr
    )
    assert second.injection_url in refused.stderr, refused.stderr
    assert "connection refused" in refused.stderr
    # The other revision is unaffected.
    cluster.kubectl("create", "-n", other_namespace, "-f", "-", input=pod("up"))
    assert injected_by(cluster.get_json("pod", "up", "-n", other_namespace)) == "e2e-1"

    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    def failed_create() -> bool:
        events = cluster.get_json("events", "-n", namespace)["items"]
        return any(e.get("reason") == "FailedCreate" for e in events)

    wait_for("the ReplicaSet's FailedCreate event", failed_create)
    assert cluster.pods(namespace, "app=api") == []

    second.start()
    pods = wait_for(
        "the ReplicaSet to fill with injected pods",
        lambda: (found := cluster.pods(namespace, "app=api")) and len(found) == 2 and found,
    )
    assert all(is_injected(p) and injected_by(p) == "e2e-2" for p in pods)
    assert wait_for("e2e-2 to lead again", second.lease)["spec"].get("holderIdentity")
