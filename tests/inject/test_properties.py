"""Laws of injection over generated pods:

* the JSON patch the webhook returns turns the admitted pod into exactly `inject(pod)`;
* injecting an injected pod changes nothing;
* the patch never touches metadata.managedFields, and the admitted pod is never mutated;
* and, for the diff alone, any patch between two JSON documents applies.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidemesh.api.config import InjectorValues, SidecarInjectorWebhookValues
from sidemesh.inject.engine import Injector
from sidemesh.inject.patch import create_patch
from sidemesh.inject.settings import InjectorSettings

INJECTORS = {
    "classic": Injector(),
    "native": Injector(
        InjectorSettings(
            values=InjectorValues(
                sidecar_injector_webhook=SidecarInjectorWebhookValues(native_sidecar=True)
            )
        )
    ),
}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
env_names = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=10)
values = st.text(max_size=12)


def env_lists() -> st.SearchStrategy[list[dict[str, Any]]]:
    entry = st.builds(lambda n, v: {"name": n, "value": v}, env_names, values)
    return st.lists(entry, max_size=6, unique_by=lambda e: e["name"])


@st.composite
def probes(draw: st.DrawFn, port_names: list[str]) -> dict[str, Any]:
    port: Any = draw(
        st.one_of(
            st.integers(1, 65535),
            st.integers(1, 65535).map(str),
            st.sampled_from(port_names) if port_names else st.integers(1, 65535),
        )
    )
    handler = draw(
        st.sampled_from(
            [
                {"httpGet": {"path": "/h", "port": port}},
                {"httpGet": {"path": "/s", "port": port, "scheme": "HTTPS"}},
                {"tcpSocket": {"port": port}},
                {"grpc": {"port": draw(st.integers(1, 65535))}},
                {"exec": {"command": ["true"]}},
            ]
        )
    )
    extra = draw(
        st.dictionaries(st.sampled_from(["timeoutSeconds", "periodSeconds"]), st.integers(1, 9))
    )
    return {**handler, **extra}


@st.composite
def containers(draw: st.DrawFn, index: int) -> dict[str, Any]:
    container: dict[str, Any] = {"name": f"c{index}", "image": "example/app:1"}
    port_names = draw(st.lists(names, max_size=2, unique=True))
    ports = [{"name": n, "containerPort": 8000 + i} for i, n in enumerate(port_names)]
    ports += draw(
        st.lists(st.builds(lambda p: {"containerPort": p}, st.integers(1, 65535)), max_size=2)
    )
    if ports:
        container["ports"] = ports
    if draw(st.booleans()):
        container["env"] = draw(env_lists())
    for field in ("readinessProbe", "livenessProbe", "startupProbe"):
        if draw(st.booleans()):
            container[field] = draw(probes(port_names))
    return container


ANNOTATION_CHOICES = {
    "prometheus.io/scrape": st.sampled_from(["true", "false"]),
    "prometheus.io/port": st.sampled_from(["9100", "8080"]),
    "prometheus.io/path": st.sampled_from(["/metrics", "/m"]),
    "prometheus.istio.io/merge-metrics": st.sampled_from(["true", "false"]),
    "sidecar.istio.io/nativeSidecar": st.sampled_from(["true", "false"]),
    "sidecar.istio.io/rewriteAppHTTPProbers": st.sampled_from(["true", "false"]),
    "sidecar.istio.io/interceptionMode": st.sampled_from(["REDIRECT", "TPROXY", "NONE"]),
    "status.sidecar.istio.io/port": st.sampled_from(["15020", "15030", "0"]),
    "proxy.istio.io/config": st.sampled_from(["holdApplicationUntilProxyStarts: true", "{}"]),
    "sidecar.istio.io/proxyCPU": st.sampled_from(["50m", "1"]),
    "sidecar.istio.io/userVolume": st.just('{"extra":{"emptyDir":{}}}'),
    "sidecar.istio.io/userVolumeMount": st.just('{"extra":{"mountPath":"/extra"}}'),
    "kubectl.kubernetes.io/default-container": st.just("c0"),
    "example.com/free": values,
}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 4))
    app_containers = [draw(containers(i)) for i in range(count)]
    if draw(st.booleans()):  # the user's own istio-proxy, somewhere among the containers
        user_proxy: dict[str, Any] = {
            "name": "istio-proxy",
            "image": draw(st.sampled_from(["auto", "me/proxy:1"])),
        }
        if draw(st.booleans()):
            user_proxy["env"] = draw(env_lists())
        app_containers.insert(draw(st.integers(0, count)), user_proxy)
    spec: dict[str, Any] = {"containers": app_containers}
    inits = draw(
        st.lists(
            st.builds(lambda n: {"name": f"init-{n}", "image": "busybox"}, names),
            max_size=2,
            unique_by=lambda c: c["name"],
        )
    )
    if inits:
        spec["initContainers"] = inits
    volumes = draw(
        st.lists(
            st.builds(lambda n: {"name": f"v-{n}", "emptyDir": {}}, names),
            max_size=2,
            unique_by=lambda v: v["name"],
        )
    )
    if volumes:
        spec["volumes"] = volumes
    labels = draw(
        st.dictionaries(
            st.sampled_from(["app", "version", "app.kubernetes.io/name", "tier"]), names, max_size=3
        )
    )
    chosen = draw(st.lists(st.sampled_from(sorted(ANNOTATION_CHOICES)), unique=True, max_size=6))
    annotations = {key: draw(ANNOTATION_CHOICES[key]) for key in chosen}
    metadata: dict[str, Any] = {"name": "p", "namespace": "demo", "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    if draw(st.booleans()):
        metadata["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


injectors = st.sampled_from(sorted(INJECTORS))


@SETTINGS
@given(pod=pods(), which=injectors)
def test_patch_applied_to_pod_gives_injected_pod(pod: dict[str, Any], which: str) -> None:
    injector = INJECTORS[which]
    before = copy.deepcopy(pod)
    outcome = injector.admit(pod, "demo")
    assert outcome.kind == "injected", outcome.reason
    assert outcome.patch is not None
    ops = json.loads(outcome.patch)
    assert jsonpatch.apply_patch(pod, ops) == injector.inject(pod, "demo") == outcome.pod
    assert not any(op["path"].startswith("/metadata/managedFields") for op in ops)
    assert pod == before


@SETTINGS
@given(pod=pods(), which=injectors)
def test_injection_is_idempotent(pod: dict[str, Any], which: str) -> None:
    injector = INJECTORS[which]
    once = injector.inject(pod, "demo")
    frozen = copy.deepcopy(once)
    assert injector.inject(once, "demo") == frozen
    assert once == frozen


@SETTINGS
@given(pod=pods(), which=injectors)
def test_injected_pod_has_one_proxy_and_status_lists_it(pod: dict[str, Any], which: str) -> None:
    injected = INJECTORS[which].inject(pod, "demo")
    spec = injected["spec"]
    everything = spec["containers"] + spec.get("initContainers", [])
    assert [c["name"] for c in everything].count("istio-proxy") == 1
    status = json.loads(injected["metadata"]["annotations"]["sidecar.istio.io/status"])
    listed = (status["containers"] or []) + (status["initContainers"] or [])
    assert "istio-proxy" in listed


keys = st.sampled_from(["name", "a", "b/c", "d~e", "~1", ""])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["x", "y"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.lists(
            st.builds(lambda n, v: {"name": n, "v": v}, st.sampled_from("pqrs"), inner), max_size=4
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(old=json_values, new=json_values)
def test_any_patch_applies(old: Any, new: Any) -> None:
    """The diff alone, on arbitrary JSON: escaping, list alignment, type changes."""
    before = copy.deepcopy(old)
    ops = create_patch(old, new)
    assert jsonpatch.apply_patch(copy.deepcopy(old), ops) == new
    assert old == before
