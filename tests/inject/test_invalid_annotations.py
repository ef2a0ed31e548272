"""Annotation values that cannot be honoured deny the pod (webhook) or fail kube-inject, with a
message naming the annotation and the offending value, and nothing half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sidemesh.cli.kube_inject import kube_inject
from sidemesh.inject.engine import Injector

P = "sidecar.istio.io/"
T = "traffic.sidecar.istio.io/"
R = "readiness.status.sidecar.istio.io/"
CONFIG = "proxy.istio.io/config"

# (annotation at fault, its value, other annotations the pod carries)
BAD: list[Any] = [
    pytest.param("status.sidecar.istio.io/port", "abc", {}, id="status-port-not-number"),
    pytest.param("status.sidecar.istio.io/port", "70000", {}, id="status-port-too-big"),
    pytest.param("status.sidecar.istio.io/port", "-1", {}, id="status-port-negative"),
    pytest.param(T + "includeInboundPorts", "80,http", {}, id="include-inbound-named"),
    pytest.param(T + "includeInboundPorts", "0", {}, id="include-inbound-zero"),
    pytest.param(T + "excludeInboundPorts", "*", {}, id="exclude-inbound-wildcard"),
    pytest.param(T + "excludeInboundPorts", "65536", {}, id="exclude-inbound-too-big"),
    pytest.param(T + "includeOutboundPorts", "443;80", {}, id="include-outbound-separator"),
    pytest.param(T + "excludeOutboundPorts", "-5", {}, id="exclude-outbound-negative"),
    pytest.param(T + "includeOutboundIPRanges", "10.0.0.0/33", {}, id="include-cidr-prefix"),
    pytest.param(T + "includeOutboundIPRanges", "10.0.0.0/8,cluster", {}, id="include-cidr-word"),
    pytest.param(T + "excludeOutboundIPRanges", "*", {}, id="exclude-cidr-wildcard"),
    pytest.param(T + "excludeOutboundIPRanges", "300.1.1.1", {}, id="exclude-cidr-octet"),
    pytest.param(T + "excludeOutboundIPRanges", "fd00::/129", {}, id="exclude-cidr-ipv6-prefix"),
    pytest.param(T + "excludeInterfaces", "eth0 eth1", {}, id="exclude-interfaces-space"),
    pytest.param("istio.io/reroute-virtual-interfaces", "tap/0", {}, id="reroute-interfaces"),
    pytest.param("sidecar.sidemesh.io/while-proxy-down", "wait", {}, id="while-proxy-down-word"),
    pytest.param(P + "proxyCPU", "lots", {}, id="cpu-word"),
    pytest.param(P + "proxyMemory", "1.5.5Gi", {}, id="memory-two-points"),
    pytest.param(P + "proxyCPULimit", "-1", {}, id="cpu-limit-negative"),
    pytest.param(P + "proxyMemoryLimit", "12XB", {}, id="memory-limit-suffix"),
    pytest.param(P + "proxyCPU", "2", {P + "proxyCPULimit": "1"}, id="cpu-request-over-limit"),
    pytest.param(
        P + "proxyMemory", "2Gi", {P + "proxyMemoryLimit": "1024Mi"}, id="memory-request-over-limit"
    ),
    pytest.param(P + "nativeSidecar", "maybe", {}, id="native-sidecar-bool"),
    pytest.param(P + "rewriteAppHTTPProbers", "nope", {}, id="rewrite-probes-bool"),
    pytest.param("prometheus.istio.io/merge-metrics", "sometimes", {}, id="merge-metrics-bool"),
    pytest.param(P + "interceptionMode", "IPTABLES", {}, id="interception-unknown"),
    pytest.param(P + "interceptionMode", "redirect", {}, id="interception-lowercase"),
    pytest.param(P + "logLevel", "verbose", {}, id="log-level"),
    pytest.param(P + "componentLogLevel", "upstream", {}, id="component-log-level-no-scope"),
    pytest.param(P + "agentLogLevel", "default=debug", {}, id="agent-log-level-separator"),
    pytest.param(R + "initialDelaySeconds", "-1", {}, id="readiness-delay-negative"),
    pytest.param(R + "periodSeconds", "0", {}, id="readiness-period-zero"),
    pytest.param(R + "failureThreshold", "many", {}, id="readiness-threshold-word"),
    pytest.param(CONFIG, "holdApplicationUntilProxyStart: true", {}, id="proxy-config-unknown"),
    pytest.param(CONFIG, "{holdApplicationUntilProxyStarts: true", {}, id="proxy-config-bad-yaml"),
    pytest.param(CONFIG, "concurrency: lots", {}, id="proxy-config-wrong-type"),
    pytest.param(CONFIG, "- concurrency: 2", {}, id="proxy-config-not-mapping"),
    pytest.param(P + "userVolume", "{name: certs}", {}, id="user-volume-not-json"),
    pytest.param(P + "userVolume", '{"certs": "secret"}', {}, id="user-volume-not-objects"),
    pytest.param(P + "userVolumeMount", "[1]", {}, id="user-volume-mount-list"),
    pytest.param("inject.istio.io/templates", "sidecar,nope", {}, id="template-unknown"),
    pytest.param("inject.istio.io/templates", " , ", {}, id="template-empty"),
    pytest.param(P + "proxyImage", "", {}, id="proxy-image-empty"),
    pytest.param(P + "bootstrapOverride", "Not_A_ConfigMap", {}, id="bootstrap-override-name"),
]


def pod_with(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "labels": {"app": "bad"}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


@pytest.mark.parametrize(("name", "value", "others"), BAD)
def test_admission_is_denied_naming_annotation_and_value(
    name: str, value: str, others: dict[str, str]
) -> None:
    outcome = Injector().admit(pod_with({**others, name: value}), "demo")
    assert outcome.kind == "denied"
    assert not outcome.allowed
    assert outcome.code == "invalid-annotation"
    assert outcome.patch is None
    assert f'{name}="{value}"' in outcome.reason


@pytest.mark.parametrize(("name", "value", "others"), BAD)
def test_kube_inject_fails_naming_file_and_document(
    name: str, value: str, others: dict[str, str], tmp_path: Path
) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": pod_with({**others, name: value})},
    }
    del deployment["spec"]["template"]["apiVersion"], deployment["spec"]["template"]["kind"]
    source = tmp_path / "app.yaml"
    source.write_text(yaml.safe_dump_all([service, deployment]), encoding="utf-8")
    output = tmp_path / "out.yaml"

    result = CliRunner().invoke(kube_inject, ["-f", str(source), "-o", str(output)])

    assert result.exit_code != 0
    assert f"{source}: document 2 (Deployment/web)" in result.stderr
    assert name in result.stderr
    assert not output.exists()


def test_a_valid_neighbour_does_not_hide_the_failure(tmp_path: Path) -> None:
    """The good first document is not written either: all or nothing."""
    good = pod_with({})
    bad = pod_with({P + "proxyCPU": "lots"})
    source = tmp_path / "pods.yaml"
    source.write_text(yaml.safe_dump_all([good, bad]), encoding="utf-8")
    output = tmp_path / "out.yaml"
    output.write_text("previous content\n", encoding="utf-8")

    result = CliRunner().invoke(kube_inject, ["-f", str(source), "-o", str(output)])

    assert result.exit_code != 0
    assert "document 2 (Pod/bad)" in result.stderr
    assert output.read_text(encoding="utf-8") == "previous content\n"


def test_valid_edge_values_are_accepted() -> None:
    """The other side of the table: boundaries that must not be denied."""
    annotations = {
        "status.sidecar.istio.io/port": "0",
        T + "includeInboundPorts": "*",
        T + "includeOutboundIPRanges": "*",
        T + "excludeOutboundIPRanges": "",
        T + "excludeInboundPorts": "65535, 1",
        P + "proxyCPU": "1",
        P + "proxyCPULimit": "1000m",
        P + "nativeSidecar": "false",
        R + "initialDelaySeconds": "0",
        CONFIG: '{"concurrency": 2}',
    }
    outcome = Injector().admit(pod_with(annotations), "demo")
    assert outcome.kind == "injected", outcome.reason
