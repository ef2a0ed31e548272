"""`sidemesh restart-stale -n NS [--dry-run]`: bring up to date the pods whose sidecar is not
the one their namespace selects now, one workload at a time: in place where the planner can
(only istio-proxy restarts), else through the Eviction API."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.table import Table

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster


@click.command("restart-stale")
@click.option("-n", "--namespace", "namespaces", multiple=True, required=True,
              help="A namespace to check (repeatable).")  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="List what would be upgraded or restarted; change nothing."
)
@click.option(
    "--eviction-timeout", type=float, default=600.0, show_default=True,
    help="Seconds a PodDisruptionBudget may hold one eviction before the run stops.",
)  # fmt: skip
@click.option(
    "--healthy-timeout", type=float, default=600.0, show_default=True,
    help="Seconds a workload may take to be healthy again after an eviction.",
)  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@cluster_options
def restart_stale(
    namespaces: tuple[str, ...],
    dry_run: bool,
    eviction_timeout: float,
    healthy_timeout: float,
    output: str,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Restart workloads running a sidecar of another revision or template than their
    namespace selects (or none where one is due). Pods that can be upgraded in place are
    patched (only istio-proxy restarts); the rest are evicted. PodDisruptionBudgets hold; the first
    failure stops the run. Namespaces without injection are never touched."""
    from sidemesh.rollout.restarter import Restarter, RestartResult, RestartSettings

    settings = RestartSettings(
        dry_run=dry_run, eviction_timeout=eviction_timeout, healthy_timeout=healthy_timeout
    )

    async def work(client: object) -> list[RestartResult]:
        restarter = Restarter(client, settings=settings)  # type: ignore[arg-type]
        results: list[RestartResult] = []
        for namespace in namespaces:
            done = await restarter.run(namespace)
            results += done
            if any(r.status == "failed" for r in done):
                break
        return results

    results = run_against_cluster(kubeconfig, context, work)
    if output == "json":
        rows = [
            {"namespace": r.restart.namespace, "workload": r.restart.workload,
             "pods": [p.name for p in r.restart.pods], "status": r.status,
             "detail": r.detail or r.restart.reason, "evictionsRefused": r.evictions_refused,
             "upgradedInPlace": list(r.upgraded_in_place), "evicted": list(r.evicted)}
            for r in results
        ]  # fmt: skip
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("NAMESPACE", "WORKLOAD", "PODS", "STATUS", "REASON"):
            table.add_column(column)
        for r in results:
            table.add_row(
                r.restart.namespace, r.restart.workload, str(len(r.restart.pods)), r.status,
                r.detail or r.restart.reason,
            )  # fmt: skip
        make_console().print(table)
        if not results:
            click.echo("no stale sidecars", err=True)
    if any(r.status == "failed" for r in results):
        raise SystemExit(1)
