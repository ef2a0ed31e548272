"""The stale-sidecar restarter on the in-memory API server: PodDisruptionBudgets hold (it
waits on a 429 and proceeds once the budget allows), one workload at a time, a health wait
after each eviction, stop at the first failure, Events and metrics, and namespaces without
injection left alone."""

from __future__ import annotations

import itertools
from typing import Any

from rollout_kit import (
    FAST,
    add_budget,
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

from sidemesh.rollout.metrics import RestarterMetrics
from sidemesh.rollout.plan import sidecar_revision
from sidemesh.rollout.restarter import Restarter, RestartSettings


async def test_budget_makes_it_wait_then_it_proceeds() -> None:
    async with api_server() as api, client_for(api) as client:
        install_revision(api, "1-0", "1.0")
        new = install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        add_namespace(api, "plain", {})
        names = itertools.count()
        for app in ("api", "web"):
            add_deployment(api, "shop", app)
            add_pod(api, app_pod(f"{app}-5c8d-old", "shop", deployment=app), None)  # no sidecar
        add_deployment(api, "plain", "other")
        add_pod(api, app_pod("other-5c8d-old", "plain", deployment="other"), None)
        add_budget(api, "shop", "web", allowed=0)  # maxUnavailable: 0

        def replace(pod: dict[str, Any]) -> None:
            app = pod["metadata"]["labels"]["app"]
            fresh = app_pod(f"{app}-5c8d-new{next(names)}", "shop", deployment=app)
            stored = add_pod(api, fresh, new)
            stored["status"] = ready_status()
            api.store("v1/pods", stored)

        evicted = enable_evictions(api, replace)
        pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 3:  # the budget keeps saying no for a while, then allows
                add_budget(api, "shop", "web", allowed=1)

        metrics = RestarterMetrics()
        restarter = Restarter(client, settings=FAST, metrics=metrics, sleep=sleep)
        results = await restarter.run("shop")

        assert [(r.restart.workload, r.status) for r in results] == [
            ("Deployment/api", "restarted"),
            ("Deployment/web", "restarted"),
        ]
        assert evicted == ["api-5c8d-old", "web-5c8d-old"]  # one at a time, in order
        assert results[0].evictions_refused == 0 and results[1].evictions_refused == 3
        assert metrics.value("sidemesh_sidecar_evictions_refused_total", "shop") == 3
        assert metrics.value("sidemesh_sidecar_restarts_total", "shop") == 2
        live = [p for p in api.objects.values() if not p.deleted and p.raw.get("kind") == "Pod"]
        shop = [p.raw for p in live if p.raw["metadata"]["namespace"] == "shop"]
        assert {sidecar_revision(p) for p in shop} == {"1-1"}
        recorded = events(api, "shop")
        assert ("Pod/web-5c8d-old", "Normal", "EvictionRefused") in recorded
        assert ("Deployment/web", "Normal", "SidecarRestarted") in recorded
        # never touches a namespace without injection
        assert await restarter.run("plain") == []
        assert api.stored("v1/pods", "plain", "other-5c8d-old") is not None


async def test_stops_at_the_first_failure() -> None:
    async with api_server() as api, client_for(api) as client:
        install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        for app in ("api", "web"):
            add_deployment(api, "shop", app)
            add_pod(api, app_pod(f"{app}-5c8d-old", "shop", deployment=app), None)

        def never_ready(pod: dict[str, Any]) -> None:
            app = pod["metadata"]["labels"]["app"]
            add_pod(api, app_pod(f"{app}-5c8d-new", "shop", deployment=app), None)  # not Ready

        evicted = enable_evictions(api, never_ready)
        metrics = RestarterMetrics()
        settings = RestartSettings(poll_seconds=0.01, eviction_timeout=30, healthy_timeout=0.2)
        results = await Restarter(client, settings=settings, metrics=metrics).run("shop")
        assert [(r.restart.workload, r.status) for r in results] == [("Deployment/api", "failed")]
        assert "0/1 pods ready" in results[0].detail
        assert evicted == ["api-5c8d-old"]  # web untouched
        assert ("Deployment/api", "Warning", "SidecarRestartFailed") in events(api, "shop")
        assert metrics.value("sidemesh_sidecar_restart_failures_total", "shop") == 1


async def test_dry_run_and_bare_pods() -> None:
    async with api_server() as api, client_for(api) as client:
        install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        add_deployment(api, "shop", "api")
        add_pod(api, app_pod("api-5c8d-old", "shop", deployment="api"), None)
        bare = app_pod("lonely", "shop")
        del bare["metadata"]["ownerReferences"]
        add_pod(api, bare, None)
        evicted = enable_evictions(api, lambda pod: None)
        dry = RestartSettings(dry_run=True)
        results = await Restarter(client, settings=dry).run("shop")
        assert [(r.restart.workload, r.status) for r in results] == [
            ("Deployment/api", "would restart"),
            ("Pod/lonely", "not restartable"),
        ]
        assert evicted == []
