"""Carrying out in-place plans: one pod at a time, each running again before the next, and
the first failure stops the run."""

from __future__ import annotations

from typing import Any

from sidemesh.rollout.plan import PodPlan, is_upgraded
from sidemesh.rollout.upgrade import UpgradeResult, carry_out


def _plan(name: str, action: Any = "in-place") -> PodPlan:
    return PodPlan(
        namespace="shop", name=name, workload="Deployment/web", action=action,
        current_revision="1-0", target_revision="1-1", reasons=("r",),
        restarts=("istio-proxy",), patch={"metadata": {}},
        restart_counts={"istio-proxy": 2},
    )  # fmt: skip


async def test_one_at_a_time_and_stop_at_the_first_failure() -> None:
    calls: list[str] = []

    async def patch(plan: PodPlan) -> UpgradeResult:
        calls.append(f"patch {plan.name}")
        return UpgradeResult(plan, "patched")

    async def wait(plan: PodPlan) -> str:
        calls.append(f"wait {plan.name}")
        return "not ready" if plan.name == "b" else ""

    plans = [_plan("a"), _plan("b"), _plan("c"), _plan("d", "restart")]
    results = await carry_out(plans, patch, wait=wait)
    assert calls == ["patch a", "wait a", "patch b", "wait b"]
    assert [(r.plan.name, r.outcome) for r in results] == [
        ("a", "patched"), ("b", "failed"), ("c", "unchanged"), ("d", "unchanged"),
    ]  # fmt: skip
    assert results[1].detail == "not ready" and "stopped after b failed" in results[2].detail
    dry = await carry_out(plans, patch, dry_run=True, wait=wait)
    assert [r.outcome for r in dry] == ["would patch"] * 3 + ["unchanged"] and len(calls) == 4


def _pod(ready: bool, restarts: int) -> dict[str, Any]:
    return {"status": {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "istio-proxy", "restartCount": restarts}],
    }}  # fmt: skip


def test_upgraded_means_ready_and_restarted_since_the_plan() -> None:
    plan = _plan("a")
    assert is_upgraded(_pod(True, 3), plan)
    assert not is_upgraded(_pod(True, 2), plan)  # not restarted yet: still the old proxy
    assert not is_upgraded(_pod(False, 3), plan)  # restarted, not ready yet
