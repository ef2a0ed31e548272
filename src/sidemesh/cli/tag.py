"""`sidemesh tag set|list|remove`: stable names for control-plane revisions."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
import yaml
from rich.table import Table

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster


@click.group("tag")
def tag() -> None:
    """Revision tags: namespaces select a tag, the tag points at a revision."""


@tag.command("set")
@click.argument("name")
@click.option("--revision", required=True, help="The revision the tag points at.")
@click.option("--overwrite", is_flag=True, help="Move the tag if it points elsewhere.")
@cluster_options
def set_(
    name: str, revision: str, overwrite: bool, kubeconfig: Path | None, context: str | None
) -> None:
    """Create tag NAME for a revision, or move it (with --overwrite)."""
    from sidemesh.kube.tags import set_tag

    message = run_against_cluster(
        kubeconfig, context, lambda c: set_tag(c, name, revision, overwrite=overwrite)
    )
    click.echo(message)


@tag.command("list")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
    show_default=True,
)  # fmt: skip
@cluster_options
def list_(output: str, kubeconfig: Path | None, context: str | None) -> None:
    """TAG REVISION NAMESPACES."""
    from sidemesh.kube.tags import get_tags

    tags = run_against_cluster(kubeconfig, context, get_tags)
    rows = [t.as_dict() for t in tags]
    if output == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if output == "yaml":
        click.echo(yaml.safe_dump(rows, sort_keys=False), nl=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("TAG", "REVISION", "NAMESPACES"):
        table.add_column(column)
    for t in tags:
        table.add_row(t.tag, t.revision, ",".join(t.namespaces))
    make_console().print(table)


@tag.command("remove")
@click.argument("name")
@cluster_options
def remove(name: str, kubeconfig: Path | None, context: str | None) -> None:
    """Delete tag NAME. Namespaces that select it lose injection on their next pod restart."""
    from sidemesh.kube.tags import remove_tag

    message, namespaces = run_against_cluster(kubeconfig, context, lambda c: remove_tag(c, name))
    click.echo(message)
    if namespaces:
        click.echo(
            f"warning: namespaces {', '.join(namespaces)} still select tag {name}; new pods "
            "there will not be injected until they select another tag or revision",
            err=True,
        )
