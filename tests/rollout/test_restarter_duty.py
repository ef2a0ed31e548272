"""The restarter as a cluster duty: it runs only on the replica holding the lease, and it
restarts a stale workload it finds there."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from rollout_kit import (
    add_deployment,
    add_namespace,
    add_pod,
    api_server,
    app_pod,
    client_for,
    enable_evictions,
    install_revision,
    ready_status,
)

from sidemesh.kube.duties import DutySettings, run_cluster_duties
from sidemesh.kube.leader import LeaseTimings
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import Backoff
from sidemesh.rollout.duty import RestarterDuty
from sidemesh.rollout.metrics import RestarterMetrics
from sidemesh.rollout.restarter import RestartSettings


async def _eventually(predicate: Any, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_leader_runs_the_restarter(tmp_path: Path) -> None:
    async with api_server() as api, client_for(api) as client:
        new = install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        add_deployment(api, "shop", "api")
        add_pod(api, app_pod("api-5c8d-old", "shop", deployment="api"), None)

        def replace(pod: dict[str, Any]) -> None:
            stored = add_pod(api, app_pod("api-5c8d-new", "shop", deployment="api"), new)
            stored["status"] = ready_status()
            api.store("v1/pods", stored)

        evicted = enable_evictions(api, replace)
        restarts = RestarterMetrics()
        duty = RestarterDuty(
            settings=RestartSettings(poll_seconds=0.01, eviction_timeout=10, healthy_timeout=10),
            interval_seconds=0.05,
            metrics=restarts,
        )
        settings = DutySettings(
            revision="1-1", cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key",
            identity="replica-a", backoff=Backoff(initial=0.05, maximum=0.2),
            lease=LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.1),
            leader_extras=(duty,),
        )  # fmt: skip
        metrics = KubeMetrics()
        task = asyncio.create_task(run_cluster_duties(settings, client=client, metrics=metrics))
        try:
            await _eventually(lambda: evicted == ["api-5c8d-old"])
            await _eventually(
                lambda: restarts.value("sidemesh_sidecar_restarts_total", "shop") == 1
            )
            assert metrics.gauges.get("sidemesh_leader") == 1  # it ran as the leader
            text = restarts.render().decode()
            assert 'sidemesh_sidecar_restarts_total{namespace="shop"} 1' in text
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
