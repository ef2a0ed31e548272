"""`sidemesh injector list`: namespaces with injection on, and their pods' sidecars."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.table import Table

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster


@click.group("injector")
def injector() -> None:
    """The sidecar injector as the cluster sees it."""


@injector.command("list")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@cluster_options
def list_(output: str, kubeconfig: Path | None, context: str | None) -> None:
    """NAMESPACE WEBHOOK REVISION UP-TO-DATE OUTDATED MISSING, then pods needing a restart."""
    from sidemesh.analyze.injector_list import injector_list
    from sidemesh.kube.snapshot import load_snapshot

    snapshot = run_against_cluster(kubeconfig, context, lambda c: load_snapshot(c))
    rows = injector_list(snapshot)
    if output == "json":
        click.echo(orjson.dumps([r.as_dict() for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    console = make_console()
    if not rows:
        click.echo("no namespace has sidecar injection enabled")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAMESPACE", "WEBHOOK", "REVISION", "UP-TO-DATE", "OUTDATED", "MISSING"):
        table.add_column(column)
    for r in rows:
        revision = f"{r.revision} (tag {r.tag})" if r.tag else r.revision
        table.add_row(
            r.namespace, r.webhook, revision,
            str(r.count("up-to-date")), str(r.count("outdated")), str(r.count("missing")),
        )  # fmt: skip
    console.print(table)
    attention = [p for r in rows for p in r.pods if p.state != "up-to-date"]
    if attention:
        click.echo("")
        pods = Table(box=None, pad_edge=False)
        for column in ("POD", "NAMESPACE", "SIDECAR", "INJECTED-REVISION", "EXPECTED-REVISION"):
            pods.add_column(column)
        for p in attention:
            pods.add_row(p.name, p.namespace, p.state, p.injected_revision or "-",
                         p.expected_revision or "-")  # fmt: skip
        console.print(pods)
