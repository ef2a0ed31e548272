"""Which pods the real API server sends to the webhook, and which the injector then skips:
the opt-out label, kube-system, and the `default` tag answering `istio-injection=enabled`."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, is_injected, label_for_injection, wait_for


def pod(name: str, **labels: str) -> str:
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }).decode()  # fmt: skip


def test_the_opt_out_label_keeps_the_sidecar_away(
    cluster: Cluster, control_plane: ControlPlane, namespace: str
) -> None:
    label_for_injection(cluster, namespace, f"istio.io/rev={control_plane.revision}")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=pod("out", **{
        "sidecar.istio.io/inject": "false"}))  # fmt: skip
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=pod("in"))
    assert not is_injected(cluster.get_json("pod", "out", "-n", namespace))
    assert is_injected(cluster.get_json("pod", "in", "-n", namespace))
    # check-inject reads the same live objects and agrees with what the server did.
    check = cluster.sidemesh("check-inject", "-l", "app notin (x)", "-n", namespace, "-o", "json")
    verdicts = {r["name"]: r for r in orjson.loads(check.stdout)}
    assert verdicts["in"]["injected"] and verdicts["in"]["revision"] == control_plane.revision
    assert verdicts["in"]["webhook"].endswith("rev.namespace.sidecar-injector.istio.io")
    assert not verdicts["out"]["injected"]
    assert verdicts["out"]["reason"] == "pod label sidecar.istio.io/inject=false opts it out"


@pytest.fixture
def labelled_kube_system(cluster: Cluster, control_plane: ControlPlane) -> Iterator[str]:
    cluster.kubectl("label", "namespace", "kube-system", f"istio.io/rev={control_plane.revision}")
    try:
        yield "kube-system"
    finally:
        cluster.kubectl("label", "namespace", "kube-system", "istio.io/rev-")
        cluster.kubectl("delete", "pod", "-n", "kube-system", "e2e-never", "--wait=false",
                        check=False)  # fmt: skip


def test_kube_system_is_never_injected(
    cluster: Cluster, control_plane: ControlPlane, labelled_kube_system: str
) -> None:
    """Even labelled for a revision: the API server calls the webhook, which declines."""
    skipped = 'sidecar_injection_skip_total{reason="ignored-namespace"} '

    def declined_once() -> bool:
        cluster.kubectl("create", "-n", labelled_kube_system, "--dry-run=server", "-f", "-",
                        input=pod("e2e-probe"))  # fmt: skip
        return skipped in control_plane.webhook_metrics()

    wait_for("the webhook to be called for kube-system, and decline", declined_once)
    cluster.kubectl("create", "-n", labelled_kube_system, "-f", "-", input=pod("e2e-never"))
    assert not is_injected(cluster.get_json("pod", "e2e-never", "-n", labelled_kube_system))


@pytest.fixture
def default_tag(cluster: Cluster, control_plane: ControlPlane) -> Iterator[str]:
    cluster.sidemesh("tag", "set", "default", "--revision", control_plane.revision)
    try:
        yield "default"
    finally:
        cluster.sidemesh("tag", "remove", "default", check=False)


def test_the_default_tag_answers_istio_injection_enabled(
    cluster: Cluster, control_plane: ControlPlane, default_tag: str, namespace: str
) -> None:
    label_for_injection(cluster, namespace, "istio-injection=enabled")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=pod("tagged"))
    created = cluster.get_json("pod", "tagged", "-n", namespace)
    assert is_injected(created)
    status = orjson.loads(created["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["revision"] == control_plane.revision
    listed = cluster.sidemesh("tag", "list").stdout.splitlines()
    assert listed[0].split() == ["TAG", "REVISION", "NAMESPACES"]
    assert listed[1].split()[:2] == ["default", control_plane.revision]
    tags = orjson.loads(cluster.sidemesh("tag", "list", "-o", "json").stdout)
    assert tags == [
        {"tag": "default", "revision": control_plane.revision, "namespaces": [namespace]}
    ]
