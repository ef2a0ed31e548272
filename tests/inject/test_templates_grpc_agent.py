"""The `grpc-agent` template (proxyless gRPC with the pod's mesh identity), as a table of what
it promises. Golden files, re-injection and strict validation for its cases run with the other
templates' in test_templates_gateway.py (every file under tests/data/inject-templates).

The promises: an `istio-proxy` that runs the agent without Envoy, ready on the agent's status
port; no istio-init and no capture; every app container gains the bootstrap env and a
read-only mount of the certificates, and keeps its probes; uninjection gives the spec back.
"""

from __future__ import annotations

import copy
from typing import Any

from sidemesh.inject.engine import Injector
from sidemesh.inject.status import uninject

DATA = "/var/lib/istio/data"


def _pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "namespace": "grpc", "labels": {"app": "echo"},
                     "annotations": {"inject.istio.io/templates": "grpc-agent", **annotations}},
        "spec": {
            "serviceAccountName": "echo",
            "containers": [
                {"name": "echo", "image": "echo:1",
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}},
                {"name": "helper", "image": "helper:2"},
            ],
        },
    }  # fmt: skip


def _by_name(containers: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in containers or []}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_proxy_runs_the_agent_without_envoy_and_nothing_is_captured() -> None:
    injected = Injector().inject(_pod(), "grpc")
    spec = injected["spec"]
    assert "istio-init" not in _by_name(spec.get("initContainers"))
    proxy = _by_name(spec["containers"])["istio-proxy"]
    assert proxy["args"][:3] == ["agent", "proxy", "sidecar"]
    env = _env(proxy)
    assert env["DISABLE_ENVOY"] == "true"
    assert env["ISTIO_META_GENERATOR"] == "grpc"
    assert env["OUTPUT_CERTS"] == DATA
    assert env["GRPC_XDS_BOOTSTRAP"] == f"{DATA}/grpc-bootstrap.json"
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15020}
    assert "ports" not in proxy  # no Envoy, nothing on 15090
    assert proxy["securityContext"]["runAsUser"] == 1337


def test_app_containers_get_the_bootstrap_and_read_only_certificates() -> None:
    injected = Injector().inject(_pod(), "grpc")
    containers = _by_name(injected["spec"]["containers"])
    for name in ("echo", "helper"):
        assert _env(containers[name])["GRPC_XDS_BOOTSTRAP"] == f"{DATA}/grpc-bootstrap.json"
        assert {"name": "istio-data", "mountPath": DATA, "readOnly": True} in containers[name][
            "volumeMounts"
        ]
    # Istio's choice for grpc-agent: the app answers its own probes.
    assert containers["echo"]["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8080}}


def test_status_port_zero_removes_the_proxy_probes() -> None:
    injected = Injector().inject(_pod(**{"status.sidecar.istio.io/port": "0"}), "grpc")
    proxy = _by_name(injected["spec"]["containers"])["istio-proxy"]
    assert "readinessProbe" not in proxy and "startupProbe" not in proxy


def test_uninjection_gives_the_spec_back_and_reinjection_is_idempotent() -> None:
    injector = Injector()
    pod = _pod()
    injected = injector.inject(copy.deepcopy(pod), "grpc")
    assert uninject(copy.deepcopy(injected))["spec"] == pod["spec"]  # labels stay, as Istio's
    assert injector.inject(copy.deepcopy(injected), "grpc") == injected
