"""What every injected golden must show, straight from ISTIO-COMPAT.md section 3-4, so that a
regenerated corpus cannot quietly drift from the spec: status annotation, labels, the two
containers and their order, ports, env, probes, security contexts and volumes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from golden_support import golden_cases

# Cases whose own configuration replaces the built-in template: the layout is theirs.
OWN_TEMPLATE = {"custom-template-replaces-sidecar"}
REQUIRED_ENV = {
    "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT", "HOST_IP", "PROXY_CONFIG",
    "ISTIO_META_POD_PORTS", "ISTIO_META_APP_CONTAINERS", "ISTIO_META_CLUSTER_ID",
    "ISTIO_META_INTERCEPTION_MODE", "ISTIO_META_WORKLOAD_NAME", "ISTIO_META_OWNER",
    "ISTIO_META_MESH_ID", "TRUST_DOMAIN", "CA_ADDR",
}  # fmt: skip
PROBE_SUFFIX = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}


def _pods(document: Any) -> list[dict[str, Any]]:
    kind = document.get("kind")
    if kind == "List":
        return [p for item in document["items"] for p in _pods(item)]
    if kind == "Pod":
        return [document]
    if kind == "CronJob":
        return [document["spec"]["jobTemplate"]["spec"]["template"]]
    template = document.get("spec", {}).get("template")
    return [template] if isinstance(template, dict) and "spec" in template else []


def _injected_pods() -> list[Any]:
    params = []
    for case in golden_cases():
        if case.name in OWN_TEMPLATE or not case.expected.exists():
            continue
        for document in case.expected_documents():
            for pod in _pods(document):
                if "sidecar.istio.io/status" in (pod["metadata"].get("annotations") or {}):
                    params.append(pytest.param(pod, id=case.name))
    return params


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_most_goldens_are_injected() -> None:
    assert len(_injected_pods()) >= 40


@pytest.mark.parametrize("pod", _injected_pods())
def test_injected_pod_follows_the_spec(pod: dict[str, Any]) -> None:
    metadata, spec = pod["metadata"], pod["spec"]
    annotations, labels = metadata["annotations"], metadata["labels"]
    containers, inits = spec["containers"], spec.get("initContainers", [])

    status = json.loads(annotations["sidecar.istio.io/status"])
    assert list(status) == [
        "initContainers",
        "containers",
        "volumes",
        "imagePullSecrets",
        "revision",
    ]
    assert status["revision"] == annotations["istio.io/rev"] == "default"
    present = {
        "initContainers": inits,
        "containers": containers,
        "volumes": spec["volumes"],
        "imagePullSecrets": spec.get("imagePullSecrets", []),
    }
    for key, items in present.items():
        assert set(status[key] or []) <= set(_by_name(items)), key

    assert labels["security.istio.io/tlsMode"] == "istio"
    assert labels["service.istio.io/canonical-name"]
    assert labels["service.istio.io/canonical-revision"]
    assert len(labels["service.istio.io/canonical-name"]) <= 63
    first_app = next(c["name"] for c in containers if c["name"] != "istio-proxy")
    assert annotations["kubectl.kubernetes.io/default-container"] == first_app

    native = any(c["name"] == "istio-proxy" for c in inits)
    proxies = [c for c in containers + inits if c["name"] == "istio-proxy"]
    assert len(proxies) == 1
    proxy = proxies[0]
    mode = annotations.get("sidecar.istio.io/interceptionMode", "REDIRECT")
    init_names = [c["name"] for c in inits]
    if native:
        assert proxy["restartPolicy"] == "Always"
        expected_head = ["istio-proxy"] if mode == "NONE" else ["istio-init", "istio-proxy"]
        # init containers that bypass the mesh come first, before any capture
        bypass = annotations.get("sidecar.sidemesh.io/bypass-init-containers", "")
        outside = [n for n in init_names if n in {b.strip() for b in bypass.split(",")}]
        assert init_names[: len(outside) + len(expected_head)] == outside + expected_head
    else:
        assert "restartPolicy" not in proxy
        hold = "postStart" in proxy.get("lifecycle", {})
        assert containers[0 if hold else -1]["name"] == "istio-proxy"
        if mode != "NONE":
            assert init_names[-1] == "istio-init"
    if mode == "NONE":
        assert "istio-init" not in init_names
    else:
        _check_istio_init(_by_name(inits)["istio-init"], mode)

    _check_proxy(proxy, annotations, mode)
    _check_volumes(_by_name(spec["volumes"]))
    _check_probe_rewrite(containers, proxy, annotations)


def _check_istio_init(init: dict[str, Any], mode: str) -> None:
    args = init["args"]
    assert args[:9] == ["iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", mode]
    assert [args[9], args[11], args[13], args[15]] == ["-i", "-x", "-b", "-d"]
    assert args[16].startswith("15090,15021")
    sc = init["securityContext"]
    assert set(sc["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert (sc["runAsUser"], sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (0, False, False)


def _check_proxy(proxy: dict[str, Any], annotations: dict[str, str], mode: str) -> None:
    assert {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"} in proxy["ports"]
    env = {e["name"]: e for e in proxy["env"]}
    assert set(env) >= REQUIRED_ENV
    assert env["CA_ADDR"]["value"] == "istiod.istio-system.svc:15012"
    assert env["ISTIO_META_INTERCEPTION_MODE"]["value"] == mode
    sc = proxy["securityContext"]
    assert sc["runAsGroup"] == 1337
    assert "ALL" in sc["capabilities"]["drop"]
    if mode != "TPROXY":
        assert (sc["runAsUser"], sc["runAsNonRoot"]) == (1337, True)
    if annotations.get("status.sidecar.istio.io/port") == "0":
        assert "readinessProbe" not in proxy and "startupProbe" not in proxy
        return
    ready, startup = proxy["readinessProbe"], proxy["startupProbe"]
    assert ready["httpGet"] == startup["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert ready["timeoutSeconds"] == 3
    assert (startup["periodSeconds"], startup["failureThreshold"]) == (1, 600)
    readiness = "readiness.status.sidecar.istio.io/"
    for field, default in (
        ("initialDelaySeconds", 0),
        ("periodSeconds", 15),
        ("failureThreshold", 4),
    ):
        assert ready[field] == int(annotations.get(readiness + field, default))


def _check_volumes(volumes: dict[str, dict[str, Any]]) -> None:
    assert volumes["istio-envoy"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["istio-data"]["emptyDir"] == {}
    paths = {
        i["path"]: i["fieldRef"]["fieldPath"]
        for i in volumes["istio-podinfo"]["downwardAPI"]["items"]
    }
    assert paths == {"labels": "metadata.labels", "annotations": "metadata.annotations"}
    (token,) = volumes["istio-token"]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "istio-ca"
    assert token["serviceAccountToken"]["expirationSeconds"] == 43200
    assert volumes["istiod-ca-cert"]["configMap"] == {"name": "istio-ca-root-cert"}


def _check_probe_rewrite(
    containers: list[dict[str, Any]], proxy: dict[str, Any], annotations: dict[str, str]
) -> None:
    status_port = int(annotations.get("status.sidecar.istio.io/port", "15020"))
    rewrite = annotations.get("sidecar.istio.io/rewriteAppHTTPProbers") != "false"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    originals = json.loads(env.get("ISTIO_KUBE_APP_PROBERS") or "{}")
    rewritten = set()
    for container in containers:
        if container["name"] == "istio-proxy":
            continue
        for field, suffix in PROBE_SUFFIX.items():
            probe = container.get(field)
            if probe is None or "exec" in probe:
                continue
            path = f"/app-health/{container['name']}/{suffix}"
            if rewrite and status_port:
                assert probe["httpGet"] == {"path": path, "port": status_port}
                assert "tcpSocket" not in probe and "grpc" not in probe
                assert not isinstance(next(iter(originals[path].values())).get("port"), str)
                rewritten.add(path)
            else:
                assert not probe.get("httpGet", {}).get("path", "").startswith("/app-health/")
    assert set(originals) == rewritten
