"""plan_pod with real injectors: what a running pod needs to carry its namespace's sidecar."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from sidemesh.api.config import InjectorValues
from sidemesh.inject.engine import Injector
from sidemesh.inject.settings import InjectorSettings
from sidemesh.rollout.plan import PodPlan, apply_merge_patch, plan_pod, sidecar_revision

SELECTION = "namespace label istio.io/rev selects it"


def injector(revision: str, tag: str, **proxy: Any) -> Injector:
    values: dict[str, Any] = {"global": {"tag": tag}}
    if proxy:
        values["global"]["proxy"] = proxy
    return Injector(
        InjectorSettings(revision=revision, values=InjectorValues.model_validate(values))
    )


def app_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d9f-abcde",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                 "controller": True, "uid": "u1"}
            ],
        },
        "spec": {"containers": [{"name": "web", "image": "web:1",
                                 "ports": [{"containerPort": 80}]}]},
    }  # fmt: skip


def running(pod: dict[str, Any]) -> dict[str, Any]:
    """What the API server adds: version, status, a node."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["resourceVersion"] = "41"
    pod["spec"]["nodeName"] = "node-1"
    pod["status"] = {"phase": "Running"}
    return pod


OLD = injector("1-0", "1.0")
NEW = injector("1-1", "1.1")


def test_revision_upgrade_is_in_place_and_restarts_only_the_proxy() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    plan = plan_pod(pod, NEW, selection=SELECTION)
    assert plan.action == "in-place", plan.reasons
    assert (plan.current_revision, plan.target_revision) == ("1-0", "1-1")
    assert plan.workload == "Deployment/web"
    assert plan.restarts == ("istio-proxy",)  # istio-init finished: its new image is recorded
    assert any("follows the istio.io/rev annotation" in c.detail for c in plan.changes)
    assert plan.patch is not None and plan.patch["metadata"]["resourceVersion"] == "41"

    upgraded = apply_merge_patch(pod, plan.patch)
    assert sidecar_revision(upgraded) == "1-1"
    assert upgraded["metadata"]["annotations"]["istio.io/rev"] == "1-1"
    app = next(c for c in upgraded["spec"]["containers"] if c["name"] == "web")
    assert app == next(c for c in pod["spec"]["containers"] if c["name"] == "web")
    # the agent's env still names the old address; it follows the annotation instead
    upgraded["metadata"]["resourceVersion"] = "42"
    again = plan_pod(upgraded, NEW, selection=SELECTION)
    assert again.action == "current", again.reasons


def test_same_image_cannot_move_revision_in_place() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    plan = plan_pod(pod, injector("1-1", "1.0"), selection=SELECTION)
    assert plan.action == "restart"
    assert "restarts a container only when its image changes" in plan.reasons[0]


def test_template_change_that_touches_immutable_fields_needs_a_restart() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    plan = plan_pod(pod, injector("1-0", "1.0", logLevel="debug"), selection=SELECTION)
    assert plan.action == "restart"
    assert any(r.startswith("spec.containers[istio-proxy].args") for r in plan.reasons)


def test_up_to_date_pod_needs_nothing() -> None:
    pod = running(NEW.inject(app_pod(), "shop"))
    plan = plan_pod(pod, NEW, selection=SELECTION)
    assert plan == PodPlan(
        namespace="shop", name="web-7d9f-abcde", workload="Deployment/web", action="current",
        current_revision="1-1", target_revision="1-1",
        reasons=(f"runs the sidecar {SELECTION} wants",),
    )  # fmt: skip


def test_pod_without_sidecar_where_one_is_due_is_restarted() -> None:
    plan = plan_pod(running(app_pod()), NEW, selection=SELECTION)
    assert (plan.action, plan.current_revision) == ("restart", None)


def test_namespace_without_injection_is_never_touched() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    plan = plan_pod(pod, None, selection="namespace has neither label")
    assert plan.action == "skip" and plan.target_revision is None


def test_opted_out_pod_with_a_sidecar_is_restarted_without_one() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    pod["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false"
    plan = plan_pod(pod, NEW, selection=SELECTION)
    assert plan.action == "restart"


def test_garbled_status_annotation_is_a_sidecar_of_unknown_revision() -> None:
    pod = running(OLD.inject(app_pod(), "shop"))
    pod["metadata"]["annotations"]["sidecar.istio.io/status"] = "{not json"
    assert sidecar_revision(pod) == ""
    assert orjson.dumps(plan_pod(pod, NEW, selection=SELECTION).as_dict())
