"""The stale-sidecar restarter upgrades in place first, on the in-memory API server: a pod the
planner can patch keeps running (same uid, only istio-proxy restarts), only a pod the planner
hands to a restart is evicted, and events and metrics say which happened."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from rollout_kit import (
    FAST,
    add_deployment,
    add_namespace,
    add_pod,
    api_server,
    app_pod,
    client_for,
    enable_evictions,
    events,
    install_revision,
    ready_status,
)

from sidemesh.rollout.metrics import IN_PLACE, RESTARTS, RestarterMetrics
from sidemesh.rollout.plan import sidecar_revision
from sidemesh.rollout.restarter import Restarter, RestartSettings


def _kubelet_restarts_patched_proxies(api: Any, namespace: str) -> None:
    """Play the kubelet: a pod patched to revision 1-1 gets its istio-proxy restarted, Ready."""
    for (resource, ns, _), obj in list(api.objects.items()):
        if getattr(resource, "plural", None) != "pods" or ns != namespace or obj.deleted:
            continue
        pod = obj.raw
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get("istio.io/rev") == "1-1" and "containerStatuses" not in pod["status"]:
            pod["status"] = {
                **ready_status(),
                "containerStatuses": [
                    {
                        "name": "istio-proxy",
                        "restartCount": 1,
                        "image": "proxy:1.1",
                        "imageID": "",
                        "ready": True,
                    }
                ],
            }
            api.store("v1/pods", pod)


async def test_in_place_first_and_evict_only_what_must_be_recreated() -> None:
    async with api_server() as api, client_for(api) as client:
        old = install_revision(api, "1-0", "1.0")
        new = install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        add_deployment(api, "shop", "api")
        api_pod = add_pod(api, app_pod("api-5c8d-old", "shop", deployment="api"), old)
        add_deployment(api, "shop", "web")
        add_pod(api, app_pod("web-5c8d-old", "shop", deployment="web"), None)  # no sidecar
        bare = app_pod("lonely", "shop")
        del bare["metadata"]["ownerReferences"]
        add_pod(api, bare, old)  # nothing would recreate it, but a patch needs nothing to

        def replace(pod: dict[str, Any]) -> None:
            app = pod["metadata"]["labels"]["app"]
            stored = add_pod(api, app_pod(f"{app}-5c8d-new", "shop", deployment=app), new)
            stored["status"] = ready_status()
            api.store("v1/pods", stored)

        evicted = enable_evictions(api, replace)

        async def sleep(seconds: float) -> None:
            _kubelet_restarts_patched_proxies(api, "shop")

        dry = await Restarter(client, settings=RestartSettings(dry_run=True)).run("shop")
        assert [(r.restart.workload, r.status) for r in dry] == [
            ("Deployment/api", "would upgrade in place"),
            ("Deployment/web", "would restart"),
            ("Pod/lonely", "would upgrade in place"),
        ]
        metrics = RestarterMetrics()
        results = await Restarter(client, settings=FAST, metrics=metrics, sleep=sleep).run("shop")

        assert [(r.restart.workload, r.status) for r in results] == [
            ("Deployment/api", "upgraded in place"),
            ("Deployment/web", "restarted"),
            ("Pod/lonely", "upgraded in place"),
        ]
        assert [r.upgraded_in_place for r in results] == [("api-5c8d-old",), (), ("lonely",)]
        assert evicted == ["web-5c8d-old"]  # only the pod that must be recreated
        live = api.stored("v1/pods", "shop", "api-5c8d-old")
        assert live["metadata"]["uid"] == api_pod["metadata"]["uid"]  # the same pod, patched
        assert sidecar_revision(live) == "1-1"
        assert sidecar_revision(api.stored("v1/pods", "shop", "lonely")) == "1-1"
        assert metrics.value(IN_PLACE, "shop") == 2
        assert metrics.value(RESTARTS, "shop") == 1
        recorded = events(api, "shop")
        assert ("Pod/api-5c8d-old", "Normal", "SidecarUpgradedInPlace") in recorded
        assert ("Deployment/api", "Normal", "SidecarUpgradedInPlace") in recorded
        assert ("Deployment/web", "Normal", "SidecarRestarted") in recorded
        assert ("Deployment/api", "Normal", "SidecarRestarted") not in recorded
        for (resource, ns, _), obj in api.objects.items():
            if getattr(resource, "plural", None) == "events" and ns == "shop":
                event = {k: v for k, v in obj.raw.items() if k != "metadata"}
                event["metadata"] = {
                    k: v for k, v in obj.raw["metadata"].items() if k in ("name", "namespace")
                }
                kubernetes_validate.validate(
                    event, kubernetes_validate.utils.latest_version(), strict=True
                )
        # run again: everything is current, nothing to do
        assert await Restarter(client, settings=FAST, sleep=sleep).run("shop") == []


async def test_a_failed_in_place_upgrade_stops_the_run() -> None:
    async with api_server() as api, client_for(api) as client:
        old = install_revision(api, "1-0", "1.0")
        install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        for app in ("api", "web"):
            add_deployment(api, "shop", app)
            add_pod(api, app_pod(f"{app}-5c8d-old", "shop", deployment=app), old)
        evicted = enable_evictions(api, lambda pod: None)
        metrics = RestarterMetrics()
        settings = RestartSettings(poll_seconds=0.01, eviction_timeout=30, healthy_timeout=0.2)
        results = await Restarter(client, settings=settings, metrics=metrics).run("shop")
        # the kubelet never restarts the proxy here: api is not upgraded in time, web untouched
        assert [(r.restart.workload, r.status) for r in results] == [("Deployment/api", "failed")]
        assert "not ready with its new sidecar" in results[0].detail
        assert evicted == []
        assert sidecar_revision(api.stored("v1/pods", "shop", "web-5c8d-old")) == "1-0"
        assert ("Deployment/api", "Warning", "SidecarRestartFailed") in events(api, "shop")
        assert metrics.value("sidemesh_sidecar_restart_failures_total", "shop") == 1
