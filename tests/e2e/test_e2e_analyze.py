"""`sidemesh analyze -A` and `sidemesh injector list` against the real server: the control
plane's own pods (opted out, running as uid 1337 like istiod) are not findings; an injected
app running as 1337 is."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, is_injected, label_for_injection


def pod(name: str, labels: dict[str, str]) -> str:
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "discovery", "image": "sidemesh:latest",
                                 "securityContext": {"runAsUser": 1337}}]},
    }).decode()  # fmt: skip


@pytest.fixture
def istiod_lookalike(cluster: Cluster, control_plane: ControlPlane) -> Iterator[str]:
    """A pod shaped like the istiod pod: app=istiod, the revision, opted out, uid 1337."""
    labels = {"app": "istiod", "istio.io/rev": control_plane.revision,
              "sidecar.istio.io/inject": "false"}  # fmt: skip
    cluster.kubectl("create", "-n", "istio-system", "-f", "-", input=pod("istiod-e2e-look", labels))
    try:
        yield "istiod-e2e-look"
    finally:
        cluster.kubectl("delete", "pod", "-n", "istio-system", "istiod-e2e-look", "--wait=false")


def test_analyze_spares_the_control_plane_and_injector_list_counts(
    cluster: Cluster, control_plane: ControlPlane, istiod_lookalike: str, namespace: str
) -> None:
    label_for_injection(cluster, namespace, f"istio.io/rev={control_plane.revision}")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=pod("as-proxy", {"app": "a"}))
    assert is_injected(cluster.get_json("pod", "as-proxy", "-n", namespace))
    assert not is_injected(cluster.get_json("pod", istiod_lookalike, "-n", "istio-system"))

    analyzed = cluster.sidemesh("analyze", "-A", "-o", "json", "--failure-threshold", "None")
    findings = orjson.loads(analyzed.stdout)
    about = {(f["code"], f["object"]) for f in findings}
    assert ("IST0144", f"Pod {namespace}/as-proxy") in about, findings
    assert [f for f in findings if f["object"].startswith("Pod istio-system/")] == []

    listed = cluster.sidemesh("injector", "list").stdout.splitlines()
    assert listed[0].split() == [
        "NAMESPACE", "WEBHOOK", "REVISION", "UP-TO-DATE", "OUTDATED", "MISSING"
    ]  # fmt: skip
    rows = orjson.loads(cluster.sidemesh("injector", "list", "-o", "json").stdout)
    row = next(r for r in rows if r["namespace"] == namespace)
    assert row["revision"] == control_plane.revision
    assert row["webhook"].endswith("/rev.namespace.sidecar-injector.istio.io")
    assert (row["upToDate"], row["outdated"], row["missing"]) == (1, 0, 0)
