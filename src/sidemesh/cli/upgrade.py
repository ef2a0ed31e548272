"""`sidemesh upgrade-sidecars -n NS [--revision R] [--dry-run]`: move running pods to the
sidecar their namespace selects, in place where Kubernetes allows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson
from rich.table import Table

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster

if TYPE_CHECKING:
    from lightkube import AsyncClient

    from sidemesh.rollout.plan import PodPlan
    from sidemesh.rollout.restarter import RestartResult
    from sidemesh.rollout.upgrade import UpgradeResult


@click.command("upgrade-sidecars")
@click.option("-n", "--namespace", required=True, help="The namespace whose pods to upgrade.")
@click.option(
    "--revision", default=None,
    help="Only pods whose namespace selects this revision (the others are listed as skipped).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Plan and print; change nothing.")
@click.option(
    "--restart-stale", "restart_rest", is_flag=True,
    help="Then hand the pods that need a restart to the restarter (as `sidemesh restart-stale`).",
)  # fmt: skip
@click.option(
    "--wait/--no-wait", default=True, show_default=True,
    help="Patch one pod at a time, each Ready with its new sidecar before the next.",
)  # fmt: skip
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds a patched pod may take to be Ready again.")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--local", is_flag=True, help="The local runtime's pods, not a cluster's.")
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    envvar="SIDEMESH_LOCAL_STATE", help="With --local: the runtime's state directory.",
)  # fmt: skip
@cluster_options
def upgrade_sidecars(
    namespace: str,
    revision: str | None,
    dry_run: bool,
    restart_rest: bool,
    wait: bool,
    timeout: float,
    output: str,
    local: bool,
    state_dir: Path | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Patch pods whose new sidecar differs only in what a running pod may change (images,
    labels, annotations): only istio-proxy restarts, the app keeps running. The other pods are
    listed with the field that forces a restart; `sidemesh restart-stale` replaces them."""
    restarted: list[RestartResult] = []
    if local:
        if restart_rest:
            raise click.UsageError("--restart-stale works on a cluster, not with --local")
        results = _upgrade_local(namespace, revision, dry_run, state_dir, timeout if wait else None)
    else:
        results, restarted = run_against_cluster(
            kubeconfig, context,
            lambda c: _upgrade_cluster(
                c, namespace, revision, dry_run, restart=restart_rest,
                wait_seconds=timeout if wait else None,
            ),
        )  # fmt: skip
    if output == "json":
        rows = [{**r.plan.as_dict(), "outcome": r.outcome, "detail": r.detail} for r in results]
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("POD", "FROM", "TO", "ACTION", "OUTCOME", "REASON"):
            table.add_column(column)
        for r in results:
            plan = r.plan
            reason = "; ".join((*plan.reasons, r.detail) if r.detail else plan.reasons)
            table.add_row(
                plan.name, plan.current_revision or "-", plan.target_revision or "-",
                plan.action, r.outcome, reason,
            )  # fmt: skip
        make_console().print(table)
    for done in restarted:
        click.echo(f"restart-stale: {done.restart.workload}: {done.status} {done.detail}", err=True)
    restarts = [r.plan for r in results if r.plan.action == "restart"]
    if restarts and output == "table" and not restart_rest:
        workloads = sorted({p.workload for p in restarts})
        click.echo(
            f"{len(restarts)} pod(s) need a restart ({', '.join(workloads)}): "
            f"sidemesh restart-stale -n {namespace}",
            err=True,
        )
    if any(r.outcome == "failed" for r in results) or any(r.status == "failed" for r in restarted):
        raise SystemExit(1)


def _upgrade_local(
    namespace: str,
    revision: str | None,
    dry_run: bool,
    state_dir: Path | None,
    wait_seconds: float | None,
) -> list[UpgradeResult]:
    from sidemesh.local.paths import state_dir_from
    from sidemesh.local.runtime import Runtime
    from sidemesh.local.upgrade import patch_local, plan_local, wait_local
    from sidemesh.rollout.upgrade import carry_out

    runtime = Runtime(state_dir_from(state_dir))
    if not runtime.store.exists():
        raise click.ClickException(f"no local runtime state in {runtime.paths.root}")
    plans = plan_local(runtime.store, namespace, revision=revision)

    async def patch(plan: PodPlan) -> UpgradeResult:
        result = patch_local(runtime.store, plan)
        runtime.wake()  # the pod's worker follows the patch now, not at the next poll
        return result

    async def wait(plan: PodPlan) -> str:
        assert wait_seconds is not None
        return await wait_local(runtime.store, plan, timeout=wait_seconds)

    waiter = wait if wait_seconds is not None else None
    return asyncio.run(carry_out(plans, patch, dry_run=dry_run, wait=waiter))


async def _upgrade_cluster(
    client: AsyncClient,
    namespace: str,
    revision: str | None,
    dry_run: bool,
    *,
    restart: bool,
    wait_seconds: float | None,
) -> tuple[list[UpgradeResult], list[RestartResult]]:
    from sidemesh.rollout.restarter import Restarter, RestartSettings
    from sidemesh.rollout.upgrade import upgrade_sidecars

    results = await upgrade_sidecars(
        client, namespace, revision=revision, dry_run=dry_run, wait_seconds=wait_seconds
    )
    if not restart or any(r.outcome == "failed" for r in results):
        return results, []
    restarter = Restarter(client, settings=RestartSettings(dry_run=dry_run))
    return results, await restarter.run(namespace)
