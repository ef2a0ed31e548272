"""`sidecar.sidemesh.io/bypass-init-containers`: which init containers run outside the mesh,
as a truth table over the pod's init containers and the sidecar mode."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.inject.engine import Injector

BYPASS = "sidecar.sidemesh.io/bypass-init-containers"
NATIVE = "sidecar.istio.io/nativeSidecar"
INJECTOR = Injector()


def _pod(annotations: dict[str, str], inits: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {
            "initContainers": [{"name": n, "image": "busybox"} for n in inits],
            "containers": [{"name": "app", "image": "nginx"}],
        },
    }


def _init_order(annotations: dict[str, str], inits: list[str]) -> list[str]:
    outcome = INJECTOR.admit(_pod(annotations, inits), "shop")
    assert outcome.kind == "injected" and outcome.pod is not None, outcome.reason
    return [c["name"] for c in outcome.pod["spec"]["initContainers"]]


@pytest.mark.parametrize(
    ("native", "bypass", "inits", "order"),
    [
        ("true", None, ["migrate", "fetch"],
         ["istio-init", "istio-proxy", "migrate", "fetch"]),
        ("true", "fetch", ["migrate", "fetch"],
         ["fetch", "istio-init", "istio-proxy", "migrate"]),
        ("true", "fetch,migrate", ["migrate", "fetch", "setup"],
         ["migrate", "fetch", "istio-init", "istio-proxy", "setup"]),
        ("true", " fetch , fetch ", ["fetch"], ["fetch", "istio-init", "istio-proxy"]),
        ("true", "nothere", ["fetch"], ["istio-init", "istio-proxy", "fetch"]),
        ("false", None, ["migrate", "fetch"], ["migrate", "fetch", "istio-init"]),
        # classic: the user's init containers already run before capture
        ("false", "fetch", ["migrate", "fetch"], ["migrate", "fetch", "istio-init"]),
    ],
)  # fmt: skip
def test_which_init_containers_run_before_capture(
    native: str, bypass: str | None, inits: list[str], order: list[str]
) -> None:
    annotations = {NATIVE: native}
    if bypass is not None:
        annotations[BYPASS] = bypass
    assert _init_order(annotations, inits) == order


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("Fetch", '"Fetch" is not a container name'),
        ("fetch,-x", '"-x" is not a container name'),
        ("istio-proxy", "istio-proxy is injected and cannot bypass the mesh"),
        ("istio-init", "istio-init is injected and cannot bypass the mesh"),
    ],
)
def test_invalid_values_deny_the_pod_naming_the_annotation(value: str, why: str) -> None:
    outcome = INJECTOR.admit(_pod({NATIVE: "true", BYPASS: value}, ["fetch"]), "shop")
    assert outcome.kind == "denied"
    assert outcome.reason == f'annotation {BYPASS}="{value}" is invalid: {why}'


def test_reinjection_keeps_the_order() -> None:
    first = INJECTOR.admit(_pod({NATIVE: "true", BYPASS: "fetch"}, ["migrate", "fetch"]), "x")
    assert first.pod is not None
    again = INJECTOR.admit(first.pod, "x")
    assert again.pod == first.pod
