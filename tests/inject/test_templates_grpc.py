"""The `grpc-simple` template (proxyless gRPC, Istio's name): what it promises, as a table.
Golden files, re-injection and strict validation for its cases run with the other templates'
in test_templates_gateway.py (every file under tests/data/inject-templates).

The promises: the app containers keep their image, args and probes and gain the bootstrap env
and mount; the status annotation lists only what the template added, so uninjection gives the
pod back exactly; no proxy means no probe rewrite and no metrics merge.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from sidemesh.inject.engine import Injector
from sidemesh.inject.status import uninject

BOOTSTRAP = "/var/lib/grpc/data/bootstrap.json"


def _pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "namespace": "grpc", "labels": {"app": "echo"},
                     "annotations": {"inject.istio.io/templates": "grpc-simple", **annotations}},
        "spec": {
            "initContainers": [{"name": "setup", "image": "setup:1"}],
            "containers": [
                {"name": "echo", "image": "echo:1", "args": ["--port", "7070"],
                 "env": [{"name": "MODE", "value": "server"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/echo"}]},
                {"name": "helper", "image": "helper:2"},
            ],
            "volumes": [{"name": "config", "configMap": {"name": "echo"}}],
        },
    }  # fmt: skip


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


def _status(pod: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = orjson.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
    return status


def test_app_containers_keep_what_they_had_and_gain_the_bootstrap() -> None:
    injected = Injector().inject(_pod(), "grpc")
    echo = _containers(injected)["echo"]
    assert echo["image"] == "echo:1"
    assert echo["args"] == ["--port", "7070"]
    assert {"name": "MODE", "value": "server"} in echo["env"]
    assert {"name": "GRPC_XDS_BOOTSTRAP", "value": BOOTSTRAP} in echo["env"]
    assert [m["mountPath"] for m in echo["volumeMounts"]] == ["/etc/echo", "/var/lib/grpc/data"]
    assert _containers(injected)["helper"]["image"] == "helper:2"
    assert "istio-proxy" not in _containers(injected)


def test_status_lists_only_what_the_template_added() -> None:
    status = _status(Injector().inject(_pod(), "grpc"))
    assert status["containers"] is None
    assert status["initContainers"] == ["grpc-bootstrap-init"]
    assert status["volumes"] == ["grpc-io-proxyless-bootstrap"]


def test_uninjection_gives_the_pod_back() -> None:
    pod = _pod()
    injected = Injector().inject(copy.deepcopy(pod), "grpc")
    assert uninject(injected) == pod


def test_reinjection_is_idempotent() -> None:
    injector = Injector()
    once = injector.inject(_pod(), "grpc")
    assert injector.inject(copy.deepcopy(once), "grpc") == once


def test_a_template_switch_removes_the_grpc_additions() -> None:
    """Re-injected with the sidecar template, nothing of grpc-simple is left behind."""
    injector = Injector()
    grpc = injector.inject(_pod(), "grpc")
    grpc["metadata"]["annotations"]["inject.istio.io/templates"] = "sidecar"
    sidecar = injector.inject(grpc, "grpc")
    echo = _containers(sidecar)["echo"]
    assert all(e["name"] != "GRPC_XDS_BOOTSTRAP" for e in echo["env"])
    assert all(v["name"] != "grpc-io-proxyless-bootstrap" for v in sidecar["spec"]["volumes"])
    assert "istio-proxy" in _containers(sidecar)


@pytest.mark.parametrize(
    ("annotations", "templates", "probe_rewritten", "metrics_merged"),
    [
        ({}, "grpc-simple", False, False),  # no agent on the status port
        ({}, "sidecar", True, True),
        ({"sidecar.istio.io/rewriteAppHTTPProbers": "false"}, "sidecar", False, True),
        ({"prometheus.istio.io/merge-metrics": "false"}, "sidecar", True, False),
        ({}, "sidecar,grpc-simple", True, True),  # with a proxy both stay on
    ],
)
def test_post_processing_follows_the_rendered_pod(
    annotations: dict[str, str], templates: str, probe_rewritten: bool, metrics_merged: bool
) -> None:
    pod = _pod(**annotations, **{"prometheus.io/scrape": "true", "prometheus.io/port": "9090"})
    pod["metadata"]["annotations"]["inject.istio.io/templates"] = templates
    injected = Injector().inject(pod, "grpc")
    probe = _containers(injected)["echo"]["readinessProbe"]["httpGet"]
    assert (probe["port"] == 15020) is probe_rewritten
    port = injected["metadata"]["annotations"]["prometheus.io/port"]
    assert (port == "15020") is metrics_merged
