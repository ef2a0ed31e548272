"""A native sidecar (istio-proxy as an init container with restartPolicy Always) needs
Kubernetes 1.29; on an older API server the injector falls back to the classic layout and
says so in a warning. The server's version is an input (None: unknown, config trusted)."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.api.config import InjectorValues
from sidemesh.inject.engine import Injector, InjectorSettings


def _pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }  # fmt: skip


def _layout(pod: dict[str, Any]) -> tuple[list[str], list[str]]:
    spec = pod["spec"]
    return (
        [c["name"] for c in spec.get("initContainers", [])],
        [c["name"] for c in spec["containers"]],
    )


NATIVE = (["istio-init", "istio-proxy"], ["app"])
CLASSIC = (["istio-init"], ["app", "istio-proxy"])
ASKED = {"sidecar.istio.io/nativeSidecar": "true"}


@pytest.mark.parametrize(
    ("version", "layout", "warned"),
    [(None, NATIVE, False), ((1, 29), NATIVE, False), ((1, 30), NATIVE, False),
     ((1, 28), CLASSIC, True), ((1, 24), CLASSIC, True)],
)  # fmt: skip
def test_the_annotation_on_each_server(
    version: tuple[int, int] | None, layout: tuple[list[str], list[str]], warned: bool
) -> None:
    outcome = Injector(InjectorSettings(revision="r", server_version=version)).admit(
        _pod(ASKED), "shop"
    )
    assert outcome.kind == "injected" and outcome.pod is not None
    assert _layout(outcome.pod) == layout
    if warned:
        assert version is not None
        assert [str(w) for w in outcome.warnings] == [
            "SM1008: annotation sidecar.istio.io/nativeSidecar=true asks for a native sidecar, "
            "but the "
            f"API server runs Kubernetes {version[0]}.{version[1]} (native sidecars, init "
            "containers with restartPolicy Always, need 1.29 or later): istio-proxy was injected "
            "as a classic sidecar container instead",
        ]
    else:
        assert outcome.warnings == ()


def test_the_global_value_falls_back_too_and_says_which_setting_asked() -> None:
    values = InjectorValues.model_validate({"sidecarInjectorWebhook": {"nativeSidecar": True}})
    injector = Injector(InjectorSettings(revision="r", values=values, server_version=(1, 24)))
    outcome = injector.admit(_pod(), "shop")
    assert outcome.pod is not None and _layout(outcome.pod) == CLASSIC
    assert outcome.warnings[0].code == "SM1008"
    assert outcome.warnings[0].message.startswith(
        "sidecarInjectorWebhook.nativeSidecar=true asks for"
    )
    # A pod turning it off asks for nothing to fall back from.
    off = injector.admit(_pod({"sidecar.istio.io/nativeSidecar": "false"}), "shop")
    assert off.warnings == ()


def test_classic_pods_on_an_old_server_have_nothing_to_say() -> None:
    outcome = Injector(InjectorSettings(revision="r", server_version=(1, 24))).admit(_pod(), "x")
    assert outcome.pod is not None and _layout(outcome.pod) == CLASSIC
    assert outcome.warnings == ()
