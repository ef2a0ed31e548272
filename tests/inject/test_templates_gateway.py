"""The `gateway` injection template (Istio's way of deploying gateways): golden files under
tests/data/inject-templates, re-injection idempotent, every object valid for Kubernetes
(strict), and the facts a gateway depends on stated as a table.

Regenerate with SIDEMESH_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from click.testing import CliRunner
from golden_support import load_documents

from golden_files import update_golden, updating
from sidemesh.cli.kube_inject import kube_inject
from sidemesh.inject.engine import Injector
from sidemesh.inject.template import TemplateSet

DATA = Path(__file__).resolve().parent.parent / "data" / "inject-templates"
CASES = sorted(p.name[: -len(".yaml")] for p in DATA.glob("*.yaml") if p.name.count(".") == 1)
GATEWAY_CASES = [c for c in CASES if c.startswith("gateway-")]
NEWEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])


def _inject(case: str, source: Path | None = None) -> str:
    args = ["-f", str(source or DATA / f"{case}.yaml")]
    values = DATA / f"{case}.values.yaml"
    if values.exists():
        args += ["--values", str(values)]
    result = CliRunner().invoke(kube_inject, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = document["spec"]
    return spec if document["kind"] == "Pod" else spec["template"]["spec"]


def _pod_metadata(document: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = (
        document["metadata"]
        if document["kind"] == "Pod"
        else document["spec"]["template"]["metadata"]
    )
    return meta


def test_gateway_is_a_builtin_template() -> None:
    assert "gateway" in TemplateSet().names
    assert len(GATEWAY_CASES) >= 3


@pytest.mark.parametrize("case", CASES)
def test_kube_inject_matches_golden(case: str) -> None:
    actual = _inject(case)
    expected_path = DATA / f"{case}.injected.yaml"
    if updating():
        update_golden(expected_path, actual)
    expected = expected_path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                              "golden", "kube-inject", lineterm=""))  # fmt: skip
        pytest.fail(f"kube-inject output differs from {expected_path.name}:\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_reinjection_changes_nothing(case: str) -> None:
    golden = DATA / f"{case}.injected.yaml"
    assert load_documents(_inject(case, golden)) == load_documents(golden.read_text())


@pytest.mark.parametrize("case", CASES)
def test_injected_objects_validate_strictly(case: str) -> None:
    for document in load_documents((DATA / f"{case}.injected.yaml").read_text()):
        try:
            kubernetes_validate.validate(document, NEWEST, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{case}: invalid for Kubernetes {exc.version} at {where}: {exc.message}")


@pytest.mark.parametrize("case", GATEWAY_CASES)
def test_gateway_pod_runs_a_router_without_capture(case: str) -> None:
    (document,) = load_documents((DATA / f"{case}.injected.yaml").read_text())
    spec, metadata = _pod_spec(document), _pod_metadata(document)
    (proxy,) = [c for c in spec["containers"] if c["name"] == "istio-proxy"]
    assert proxy["args"][:3] == ["agent", "proxy", "router"]
    assert proxy["image"] != "auto"
    assert not any(c["name"] == "istio-init" for c in spec.get("initContainers") or [])
    assert "security.istio.io/tlsMode" not in metadata["labels"]  # not a mesh endpoint
    assert metadata["labels"]["istio.io/rev"]


def _pod(containers: list[str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gw", "namespace": "ingress",
                     "labels": {"istio": "ingressgateway"},
                     "annotations": {"inject.istio.io/templates": "gateway",
                                     **(annotations or {})}},
        "spec": {"containers": [{"name": n, "image": "auto" if n == "istio-proxy" else "app:1"}
                                for n in containers]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("containers", "annotations", "default_container"),
    [
        (["istio-proxy"], {}, None),
        (["istio-proxy", "debug"], {}, "debug"),
        (["istio-proxy", "debug", "other"], {}, None),  # Istio: only when there is exactly one
        (["istio-proxy", "debug"], {"kubectl.kubernetes.io/default-container": "istio-proxy"},
         "istio-proxy"),
    ],
)  # fmt: skip
def test_default_container_table(
    containers: list[str], annotations: dict[str, str], default_container: str | None
) -> None:
    injected = Injector().inject(_pod(containers, annotations), "ingress")
    found = injected["metadata"]["annotations"].get("kubectl.kubernetes.io/default-container")
    assert found == default_container


def test_revision_label_pins_the_gateway_to_its_injector() -> None:
    injected = Injector().inject(_pod(["istio-proxy"]), "ingress")
    assert injected["metadata"]["labels"]["istio.io/rev"] == "default"
    pinned = _pod(["istio-proxy"])
    pinned["metadata"]["labels"]["istio.io/rev"] = "canary"
    assert Injector().inject(pinned, "ingress")["metadata"]["labels"]["istio.io/rev"] == "canary"
