"""`sidemesh analyze`: find what keeps pods from being (correctly) injected, and say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.table import Table
from rich.text import Text

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster

# Like istioctl: findings at or above the threshold make the command exit 79.
FAILURE_EXIT_CODE = 79


@click.command("analyze")
@click.option("-n", "--namespace", default=None, help="Only this namespace (default: default).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--failure-threshold",
    type=click.Choice(["Error", "Warning", "Info", "None"]),
    default="Error",
    show_default=True,
    help="Exit 79 when a finding is at least this severe.",
)
@cluster_options
def analyze(
    namespace: str | None, all_namespaces: bool, output: str, failure_threshold: str,
    kubeconfig: Path | None, context: str | None,
) -> None:  # fmt: skip
    """Analyze the mesh in the cluster: injection (namespaces, pods, webhooks), traffic
    configuration (VirtualServices, DestinationRules) and security policies
    (AuthorizationPolicies, RequestAuthentications)."""
    from sidemesh.analyze.analyzers import analyze as run_analyzers
    from sidemesh.analyze.findings import Severity
    from sidemesh.analyze.security_loader import load_security_config
    from sidemesh.analyze.security_policies import SecurityConfig
    from sidemesh.analyze.traffic import TrafficConfig
    from sidemesh.analyze.traffic_loader import load_traffic_config
    from sidemesh.kube.snapshot import ClusterSnapshot, load_snapshot

    if all_namespaces and namespace:
        raise click.UsageError("give -n NAMESPACE or -A, not both")
    scope = None if all_namespaces else {namespace or "default"}
    pods_of = None if all_namespaces else namespace or "default"

    async def load(client: Any) -> tuple[ClusterSnapshot, TrafficConfig, SecurityConfig]:
        return (await load_snapshot(client, namespace=pods_of),
                await load_traffic_config(client), await load_security_config(client))  # fmt: skip

    snapshot, traffic, security = run_against_cluster(kubeconfig, context, load)
    found = run_analyzers(snapshot, namespaces=scope, traffic=traffic, security=security)
    if output == "json":
        click.echo(orjson.dumps([f.as_dict() for f in found], option=orjson.OPT_INDENT_2).decode())
    elif not found:
        click.echo("No validation issues found when analyzing " + (
            "all namespaces." if scope is None else f"namespace: {next(iter(scope))}."
        ))  # fmt: skip
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("CODE", "SEVERITY", "OBJECT", "MESSAGE", "FIX"):
            table.add_column(column, overflow="fold")
        for f in found:
            table.add_row(f.code.code, f.severity.value, f.object, Text(f.message), Text(f.fix))
        make_console().print(table)
    if failure_threshold != "None":
        limit = Severity(failure_threshold).rank
        if any(f.severity.rank <= limit for f in found):
            raise SystemExit(FAILURE_EXIT_CODE)
