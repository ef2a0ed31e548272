"""The stale-sidecar restarter: bring pods whose sidecar is not what their namespace selects
now up to date, the way a careful operator would.

* In place first: a pod the planner can upgrade in place (`rollout.plan`) is patched, so only
  its istio-proxy container restarts and the app keeps running; only the pods the planner hands
  to a restart are evicted. Events and metrics say which happened.
* Only namespaces with injection: a namespace no webhook selects is never touched.
* One workload at a time per namespace, one pod at a time per workload, each through the
  Eviction API, so PodDisruptionBudgets hold: a refused eviction (429) is retried after a
  pause, for as long as the budget says no (up to `eviction_timeout`), never forced.
* After each eviction, wait until the workload is healthy again (as many ready pods as it
  wants, the evicted one gone) before the next pod.
* The first failure stops the run; what was done and why it stopped is reported, as Events
  on the workload and as metrics.
* Bare pods are upgraded in place when the planner can; otherwise reported, not evicted:
  nothing would recreate them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, PodEviction

from sidemesh.kube import client as kube
from sidemesh.rollout.metrics import (
    FAILURES,
    IN_PLACE,
    REFUSALS,
    RESTARTS,
    RestarterMetrics,
)
from sidemesh.rollout.plan import PodPlan, workload_of
from sidemesh.rollout.selection import RolloutView, plan_namespace, without_injection
from sidemesh.rollout.upgrade import apply_in_place, load_view, wait_upgraded

log = logging.getLogger("sidemesh.rollout.restarter")

COMPONENT = "sidemesh-sidecar-restarter"
_POD = kube.resource_type("v1", "Pod")
_CONTROLLERS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
}
Sleep = Callable[[float], Awaitable[None]]
Status = Literal[
    "restarted",
    "upgraded in place",
    "would restart",
    "would upgrade in place",
    "not restartable",
    "failed",
    "stopped",
]


@dataclass(frozen=True)
class RestartSettings:
    dry_run: bool = False
    poll_seconds: float = 2.0  # between health checks, and between refused evictions
    eviction_timeout: float = 600.0  # how long a PodDisruptionBudget may hold one eviction
    healthy_timeout: float = 600.0  # how long a workload may take to be healthy again


@dataclass(frozen=True)
class WorkloadRestart:
    namespace: str
    workload: str  # Kind/name
    pods: tuple[PodPlan, ...]

    @property
    def kind(self) -> str:
        return self.workload.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.workload.split("/", 1)[1]

    @property
    def reason(self) -> str:
        return self.pods[0].reasons[0] if self.pods and self.pods[0].reasons else ""

    @property
    def in_place_only(self) -> bool:
        """Every pod can be upgraded in place: nothing is evicted."""
        return all(plan.action == "in-place" for plan in self.pods)


@dataclass(frozen=True)
class RestartResult:
    restart: WorkloadRestart
    status: Status
    detail: str = ""
    evictions_refused: int = 0
    upgraded_in_place: tuple[str, ...] = ()  # pods patched, their app left running
    evicted: tuple[str, ...] = ()  # pods replaced


def stale_workloads(view: RolloutView, namespace: str) -> list[WorkloadRestart]:
    """The workloads of `namespace` with a pod to replace, in name order; none at all in a
    namespace without injection."""
    if without_injection(view, namespace):
        return []
    grouped: dict[str, list[PodPlan]] = {}
    for plan in plan_namespace(view, namespace):
        if plan.action in ("restart", "in-place"):
            grouped.setdefault(plan.workload, []).append(plan)
    return [WorkloadRestart(namespace, w, tuple(p)) for w, p in sorted(grouped.items())]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Restarter:
    def __init__(
        self,
        client: AsyncClient,
        *,
        settings: RestartSettings | None = None,
        metrics: RestarterMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.settings = settings or RestartSettings()
        self.metrics = metrics or RestarterMetrics()
        self.sleep = sleep

    # --- one namespace --------------------------------------------------------------------

    async def run(self, namespace: str) -> list[RestartResult]:
        """Restart the stale workloads of `namespace` one by one; stop at the first failure."""
        view = await load_view(self.client, namespace)
        results: list[RestartResult] = []
        for restart in stale_workloads(view, namespace):
            result = await self.restart(restart)
            results.append(result)
            if result.status == "failed":
                break
        return results

    async def restart(self, restart: WorkloadRestart) -> RestartResult:
        if restart.kind not in _CONTROLLERS and not restart.in_place_only:
            return RestartResult(
                restart, "not restartable",
                f"a bare {restart.kind}: nothing would recreate it; recreate it yourself",
            )  # fmt: skip
        if self.settings.dry_run:
            status: Status = "would upgrade in place" if restart.in_place_only else "would restart"
            return RestartResult(restart, status, restart.reason)
        verb = "upgrading in place" if restart.in_place_only else "restarting"
        await self._event(restart, "Normal", "SidecarRestart", f"{verb}: {restart.reason}")
        refused = 0
        patched: list[str] = []
        evicted: list[str] = []

        def failed(detail: str) -> Awaitable[RestartResult]:
            return self._failed(restart, detail, refused, tuple(patched), tuple(evicted))

        for planned in restart.pods:
            plan = await self._fresh_plan(planned) if planned.action == "in-place" else planned
            if plan is None:
                continue  # gone since the run was planned: its controller replaces it
            if plan.action == "in-place":
                problem = await self._upgrade_in_place(plan)
                if problem:
                    return await failed(problem)
                patched.append(plan.name)
                continue
            if plan.action != "restart":
                continue  # current by now
            if restart.kind not in _CONTROLLERS:
                return await failed(f"pod {plan.name} must be recreated: {plan.reasons[0]}")
            outcome, count = await self._evict(plan)
            refused += count
            if outcome:
                return await failed(outcome)
            evicted.append(plan.name)
            problem = await self._wait_healthy(restart, plan.name)
            if problem:
                return await failed(problem)
        done = [f"{len(patched)} pod(s) upgraded in place"] if patched else []
        done += [f"{len(evicted)} pod(s) replaced"] if evicted else []
        if evicted:
            self.metrics.inc(RESTARTS, restart.namespace)
        await self._event(
            restart, "Normal", "SidecarRestarted" if evicted else "SidecarUpgradedInPlace",
            f"{'; '.join(done) or 'nothing left to do'}; the workload is healthy",
        )  # fmt: skip
        log.info("%s/%s: %s", restart.namespace, restart.workload, "; ".join(done) or "current")
        return RestartResult(
            restart, "restarted" if evicted else "upgraded in place",
            evictions_refused=refused, upgraded_in_place=tuple(patched), evicted=tuple(evicted),
        )  # fmt: skip

    async def _fresh_plan(self, planned: PodPlan) -> PodPlan | None:
        """The pod planned again from what the API server holds now: the patch carries the
        pod's resourceVersion, which its status updates move on while earlier pods restart."""
        view = await load_view(self.client, planned.namespace)
        for plan in plan_namespace(view, planned.namespace):
            if plan.name == planned.name:
                return plan
        return None

    async def _upgrade_in_place(self, plan: PodPlan) -> str:
        """'' once the pod is patched and Ready with its restarted proxy; else why not."""
        result = await apply_in_place(self.client, plan)
        if result.outcome != "patched":
            return f"upgrading pod {plan.name} in place: {result.detail}"
        self.metrics.inc(IN_PLACE, plan.namespace)
        await self._event_for_pod(
            plan, "Normal", "SidecarUpgradedInPlace",
            f"sidecar {plan.current_revision} -> {plan.target_revision} in place: "
            f"restarting {', '.join(plan.restarts) or 'nothing'}, the app keeps running",
        )  # fmt: skip
        return await wait_upgraded(
            self.client, plan, timeout=self.settings.healthy_timeout,
            poll_seconds=self.settings.poll_seconds, sleep=self.sleep,
        )  # fmt: skip

    async def _failed(
        self,
        restart: WorkloadRestart,
        detail: str,
        refused: int,
        patched: tuple[str, ...],
        evicted: tuple[str, ...],
    ) -> RestartResult:
        self.metrics.inc(FAILURES, restart.namespace)
        await self._event(restart, "Warning", "SidecarRestartFailed", f"{detail}; stopped here")
        log.warning("restart of %s/%s stopped: %s", restart.namespace, restart.workload, detail)
        return RestartResult(restart, "failed", detail, refused, patched, evicted)

    # --- eviction ---------------------------------------------------------------------------

    async def _evict(self, plan: PodPlan) -> tuple[str, int]:
        """('', refusals) once evicted (or already gone); (why, refusals) on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.eviction_timeout
        refused = 0
        eviction = PodEviction(metadata=ObjectMeta(name=plan.name, namespace=plan.namespace))
        while True:
            try:
                await self.client.create(eviction, name=plan.name, namespace=plan.namespace)
                return "", refused
            except ApiError as exc:
                code = kube.status_code(exc)
                if code == 404:
                    return "", refused
                if code != 429:
                    return f"evicting pod {plan.name}: {kube.describe_error(exc)}", refused
                refused += 1
                self.metrics.inc(REFUSALS, plan.namespace)
                if refused == 1:
                    message = str(exc.status.message or "eviction refused")
                    await self._event_for_pod(
                        plan, "Normal", "EvictionRefused",
                        f"waiting for the PodDisruptionBudget: {message}",
                    )  # fmt: skip
            if loop.time() >= deadline:
                return (
                    f"pod {plan.name}: a PodDisruptionBudget refused its eviction for "
                    f"{self.settings.eviction_timeout:.0f}s"
                ), refused
            await self.sleep(self.settings.poll_seconds)

    # --- health -----------------------------------------------------------------------------

    async def _desired(self, restart: WorkloadRestart) -> int | None:
        resource = kube.resource_type(_CONTROLLERS[restart.kind], restart.kind)
        obj = await kube.get(self.client, resource, restart.name, restart.namespace)
        if obj is None:
            return None
        if restart.kind == "DaemonSet":
            return int((obj.get("status") or {}).get("desiredNumberScheduled") or 0)
        replicas = (obj.get("spec") or {}).get("replicas")
        return 1 if replicas is None else int(replicas)

    async def _wait_healthy(self, restart: WorkloadRestart, evicted: str) -> str:
        """'' once the workload has its desired number of ready pods and `evicted` is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.healthy_timeout
        while True:
            desired = await self._desired(restart)
            if desired is None:
                return f"{restart.workload} is gone"
            pods = [
                p
                for p in await kube.list_objects(self.client, _POD, namespace=restart.namespace)
                if workload_of(p) == restart.workload
            ]
            names = {str((p.get("metadata") or {}).get("name")) for p in pods}
            ready = [p for p in pods if _ready(p)]
            if evicted not in names and len(ready) >= desired:
                return ""
            if loop.time() >= deadline:
                return (
                    f"{restart.workload} not healthy {self.settings.healthy_timeout:.0f}s after "
                    f"evicting {evicted}: {len(ready)}/{desired} pods ready"
                )
            await self.sleep(self.settings.poll_seconds)

    # --- events -----------------------------------------------------------------------------

    async def _event(self, restart: WorkloadRestart, kind: str, reason: str, message: str) -> None:
        involved = {
            "apiVersion": _CONTROLLERS.get(restart.kind, "v1"),
            "kind": restart.kind,
            "name": restart.name,
            "namespace": restart.namespace,
        }
        await self._create_event(restart.namespace, involved, kind, reason, message)

    async def _event_for_pod(self, plan: PodPlan, kind: str, reason: str, message: str) -> None:
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": plan.name,
            "namespace": plan.namespace,
        }
        await self._create_event(plan.namespace, involved, kind, reason, message)

    async def _create_event(
        self,
        namespace: str,
        involved: Mapping[str, Any],
        kind: str,
        reason: str,
        message: str,
    ) -> None:
        now = _now()
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            # named as the kubelet's recorder names them: the object, then a unique suffix
            "metadata": {
                "name": f"{involved['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            record: Event = Event.from_dict(event)  # type: ignore[assignment]
            await self.client.create(record)
        except ApiError as exc:  # an event lost is not worth stopping a restart for
            log.warning("cannot record event %s: %s", reason, kube.describe_error(exc))


def _ready(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
