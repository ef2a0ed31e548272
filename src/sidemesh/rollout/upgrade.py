"""`upgrade-sidecars` against the API server: plan every pod of a namespace, patch those that
can move in place.

A patch carries the pod's `resourceVersion`, so a pod that changed since it was read is left
alone (409) and reported; running the command again plans it afresh. Pods that need a restart
are only listed here: the restarter (`restart-stale`) replaces them, one workload at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from sidemesh.install import naming
from sidemesh.kube import client as kube
from sidemesh.kube.snapshot import load_snapshot, name_of
from sidemesh.rollout.plan import PodPlan, is_upgraded
from sidemesh.rollout.selection import RolloutView, plan_namespace, view_from_snapshot

log = logging.getLogger("sidemesh.rollout")

_POD = kube.resource_type("v1", "Pod")
_CONFIG_MAP = kube.resource_type("v1", "ConfigMap")

Outcome = Literal["patched", "would patch", "failed", "unchanged"]


@dataclass(frozen=True)
class UpgradeResult:
    plan: PodPlan
    outcome: Outcome
    detail: str = ""


def _is_mesh_config_map(name: str) -> bool:
    return name == naming.mesh_configmap_name("") or (
        name.startswith("istio-") and not name.startswith("istio-sidecar-injector")
    )


async def load_view(client: AsyncClient, namespace: str) -> RolloutView:
    """What planning `namespace` needs: its pods and labels, the injector webhooks, and each
    revision's injector and mesh ConfigMaps."""
    snapshot = await load_snapshot(client, namespace=namespace)
    config_maps = await kube.list_objects(client, _CONFIG_MAP, namespace=naming.NAMESPACE)
    mesh = tuple(c for c in config_maps if _is_mesh_config_map(name_of(c)))
    return view_from_snapshot(snapshot, mesh)


async def apply_in_place(client: AsyncClient, plan: PodPlan) -> UpgradeResult:
    assert plan.action == "in-place" and plan.patch is not None
    try:
        await kube.merge_patch(client, _POD, plan.name, plan.patch, namespace=plan.namespace)
    except ApiError as exc:
        detail = (
            "the pod changed since it was read; run the command again"
            if kube.is_conflict(exc)
            else kube.describe_error(exc)
        )
        log.warning("in-place upgrade of pod %s/%s failed: %s", plan.namespace, plan.name, detail)
        return UpgradeResult(plan, "failed", detail)
    log.info(
        "pod %s/%s: sidecar %s -> %s in place (restarts %s)",
        plan.namespace, plan.name, plan.current_revision, plan.target_revision,
        ", ".join(plan.restarts) or "nothing",
    )  # fmt: skip
    return UpgradeResult(plan, "patched")


Patcher = Callable[[PodPlan], Awaitable[UpgradeResult]]
Waiter = Callable[[PodPlan], Awaitable[str]]  # '' once the pod runs again, else why not


async def carry_out(
    plans: list[PodPlan], patch: Patcher, *, dry_run: bool = False, wait: Waiter | None = None
) -> list[UpgradeResult]:
    """Patch the in-place plans (unless `dry_run`), one pod at a time: with `wait`, each
    patched pod must run again (Ready, its proxy restarted) before the next is patched, so a
    workload loses one replica at a time; the first failure stops the run."""
    results: list[UpgradeResult] = []
    stopped = ""
    for plan in plans:
        if plan.action != "in-place":
            results.append(UpgradeResult(plan, "unchanged"))
        elif dry_run:
            results.append(UpgradeResult(plan, "would patch"))
        elif stopped:
            results.append(UpgradeResult(plan, "unchanged", f"not patched: {stopped}"))
        else:
            result = await patch(plan)
            if result.outcome == "patched" and wait is not None:
                problem = await wait(plan)
                if problem:
                    result = UpgradeResult(plan, "failed", problem)
            if result.outcome == "failed":
                stopped = f"stopped after {plan.name} failed"
            results.append(result)
    return results


async def wait_upgraded(
    client: AsyncClient,
    plan: PodPlan,
    *,
    timeout: float,
    poll_seconds: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str:
    """'' once the patched pod is Ready with its proxy restarted; why not after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pod = await kube.get(client, _POD, plan.name, plan.namespace)
        if pod is None:
            return f"pod {plan.name} is gone"
        if is_upgraded(pod, plan):
            return ""
        if loop.time() >= deadline:
            return f"pod {plan.name} not ready with its new sidecar {timeout:.0f}s after the patch"
        await sleep(poll_seconds)


async def upgrade_sidecars(
    client: AsyncClient,
    namespace: str,
    *,
    revision: str | None = None,
    dry_run: bool = False,
    wait_seconds: float | None = None,
) -> list[UpgradeResult]:
    """Plan every pod of `namespace`; patch the in-place ones unless `dry_run`. With
    `wait_seconds`, one pod at a time, each Ready again before the next."""
    view = await load_view(client, namespace)
    plans = plan_namespace(view, namespace, revision=revision)

    async def wait(plan: PodPlan) -> str:
        assert wait_seconds is not None
        return await wait_upgraded(client, plan, timeout=wait_seconds)

    return await carry_out(
        plans, lambda plan: apply_in_place(client, plan), dry_run=dry_run,
        wait=wait if wait_seconds is not None else None,
    )  # fmt: skip
