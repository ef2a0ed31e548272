"""The Helm chart renders the same objects as `sidemesh install --dry-run` for the same values
(its templates plus its `crds/`), and lints clean, with real Helm (helm-python-sdk: Helm's Go
SDK, no helm binary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from sidemesh.api.config import InjectorConfig, InjectorValues, MeshConfig
from sidemesh.install import manifests
from sidemesh.install.overrides import load_install_values
from sidemesh.install.values import default_values_document

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (real Helm for the chart tests) is not installed"
)

CHART = Path(__file__).resolve().parents[2] / "charts" / "sidemesh"

VALUE_SETS: list[tuple[str, dict[str, Any]]] = [
    ("asm-173-3 defaults", {"revision": "asm-173-3"}),
    ("default revision", {}),
    ("everything set", {
        "revision": "canary",
        "global": {"hub": "reg.example/mesh", "tag": "1.2.3", "imagePullPolicy": "Always",
                   "imagePullSecrets": ["pull-a", "pull-b"],
                   "defaultPodDisruptionBudget": {"enabled": False},
                   "proxy": {"logLevel": "debug"}},
        "pilot": {"replicaCount": 3, "nodeSelector": {"disk": "ssd"},
                  "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                  "podAnnotations": {"a": "b"}, "env": {"B": "2", "A": "1"},
                  "priorityClassName": "system-cluster-critical",
                  "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"cpu": "2", "memory": "2Gi"}}},
        "sidecarInjectorWebhook": {
            "timeoutSeconds": 5, "reinvocationPolicy": "IfNeeded", "nativeSidecar": True,
            "neverInjectSelector": [{"matchLabels": {"skip": "yes"},
                                     "matchExpressions": [{"key": "k", "operator": "Exists",
                                                           "values": []}]}],
            "injectedAnnotations": {"example.com/injected": "yes"},
        },
        "meshConfig": {"trustDomain": "example.org", "defaultConfig": {"concurrency": 2}},
    }),
    ("image by digest", {"revision": "pinned", "pilot": {"image": "reg.example/sm@sha256:ab"}}),
    ("plaintext xDS", {"revision": "open", "pilot": {"plaintextXds": {"enabled": True}}}),
    ("sidecar restarter", {"revision": "r2", "sidecarRestarter": {"enabled": True}}),
]  # fmt: skip


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return (obj["kind"], metadata.get("namespace", ""), metadata["name"])


def _normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """ConfigMap data is text; compare what the injector reads from it, not the formatting."""
    if obj["kind"] != "ConfigMap":
        return obj
    data = dict(obj["data"])
    if "config" in data:
        data["config"] = InjectorConfig.model_validate(yaml.safe_load(data["config"]))
        data["values"] = InjectorValues.model_validate(orjson.loads(data["values"]))
    if "mesh" in data:
        data["mesh"] = MeshConfig.model_validate(yaml.safe_load(data["mesh"]))
    return {**obj, "data": data}


def _render_chart(values: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What `helm install` creates: the CRDs of `crds/` (installed first, never templated),
    then the rendered templates."""
    with helm.Chart.load(str(CHART)) as chart:
        texts = [crd["data"] for crd in chart.crds]
        rendered = chart.render(values=values, name="sidemesh", namespace="istio-system")
    texts += rendered.values()
    objects = [d for text in texts for d in yaml.safe_load_all(text) if d]
    return {_key(o): _normalized(o) for o in objects}


def _write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(("title", "values"), VALUE_SETS, ids=[v[0] for v in VALUE_SETS])
def test_chart_renders_what_install_applies(
    title: str, values: dict[str, Any], tmp_path: Path
) -> None:
    install_values, revision = load_install_values(
        [_write_values(tmp_path, values)], [], revision=None
    )
    expected = {
        _key(o): _normalized(o)
        for o in manifests.render(install_values, revision)
        if o["kind"] != "Namespace"  # helm install --create-namespace owns the namespace
    }
    rendered = _render_chart(values)
    assert sorted(rendered) == sorted(expected)
    for key, obj in expected.items():
        assert rendered[key] == obj, key


def test_chart_values_are_the_install_defaults() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text()) == default_values_document()


@pytest.mark.parametrize(("title", "values"), VALUE_SETS, ids=[v[0] for v in VALUE_SETS])
def test_chart_lints_clean(title: str, values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace="istio-system")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_refuses_another_namespace() -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError, match="istio-system"):
        chart.render(values={"revision": "x"}, name="sidemesh", namespace="default")


def _discovery(objects: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for k, o in objects.items() if k[0] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_chart_declares_plaintext_xds_only_when_enabled() -> None:
    for enabled in (False, True):
        objects = _render_chart({"pilot": {"plaintextXds": {"enabled": enabled}}})
        (service,) = [o for k, o in objects.items() if k[0] == "Service"]
        container = _discovery(objects)
        service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        args = container["args"]
        if enabled:
            assert service_ports["grpc-xds"] == container_ports["grpc-xds"] == 15010
            assert args[args.index("--xds-port") + 1] == "15010"
        else:
            assert "grpc-xds" not in service_ports and "grpc-xds" not in container_ports
            assert "--xds-port" not in args
    defaults = _render_chart({})
    assert "--xds-port" not in _discovery(defaults)["args"]


def test_chart_ships_the_crd_install_applies() -> None:
    expected = [o for o in manifests.render(*load_install_values([], [], revision=None))
                if o["kind"] == "CustomResourceDefinition"]  # fmt: skip
    with helm.Chart.load(str(CHART)) as chart:
        shipped = [yaml.safe_load(crd["data"]) for crd in chart.crds]
    assert expected
    assert shipped == expected, (
        "charts/sidemesh/crds/ differs from src/sidemesh/install/crds.py: write the chart's file "
        "from yaml.safe_dump(crds.peer_authentication(), sort_keys=False)"
    )
