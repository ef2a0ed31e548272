"""The restarter as a leader-only cluster duty (`sidecarRestarter.enabled`): every
`interval_seconds`, each namespace with injection is checked and its stale workloads are
restarted, one at a time. A failure stops the pass and pauses the duty for
`failure_pause_seconds`, so a workload that cannot become healthy is not evicted again and
again; the Warning Event on it says why."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from lightkube import AsyncClient

from sidemesh.kube import client as kube
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.snapshot import name_of
from sidemesh.rollout.metrics import RESTARTER_METRICS, RestarterMetrics
from sidemesh.rollout.restarter import Restarter, RestartSettings

log = logging.getLogger("sidemesh.rollout.duty")

_NAMESPACE = kube.resource_type("v1", "Namespace")


@dataclass(frozen=True)
class RestarterDuty:
    settings: RestartSettings = field(default_factory=RestartSettings)
    interval_seconds: float = 60.0
    failure_pause_seconds: float = 3600.0
    metrics: RestarterMetrics = field(default_factory=lambda: RESTARTER_METRICS)

    async def one_pass(self, restarter: Restarter) -> bool:
        """Check every namespace once; False if a restart failed (the pass stopped there)."""
        for namespace in sorted(
            name_of(n) for n in await kube.list_objects(restarter.client, _NAMESPACE)
        ):
            results = await restarter.run(namespace)
            if any(r.status == "failed" for r in results):
                return False
        return True

    async def __call__(self, client: AsyncClient, metrics: KubeMetrics) -> None:
        restarter = Restarter(client, settings=self.settings, metrics=self.metrics)
        while True:
            pause = self.interval_seconds
            try:
                if not await self.one_pass(restarter):
                    pause = self.failure_pause_seconds
                    log.warning("sidecar restarter paused for %.0fs after a failure", pause)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server away, RBAC missing...: next pass
                metrics.inc("sidemesh_kube_api_failures_total", operation="restart stale sidecars")
                log.warning("stale-sidecar check failed: %s", kube.describe_error(exc))
            await asyncio.sleep(pause)
