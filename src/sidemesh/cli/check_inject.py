"""`sidemesh check-inject -f FILE`: would these workloads be injected, by whom, and why."""

from __future__ import annotations

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sidemesh.cli.manifests import parse_labels, read_documents
from sidemesh.inject.check import CheckResult, check_object
from sidemesh.inject.settings import InjectorSettings
from sidemesh.inject.webhooks import WebhookEntry, revision_webhooks, tag_webhooks
from sidemesh.inject.workloads import iter_objects


def _entries(revisions: tuple[str, ...], tags: tuple[str, ...]) -> list[WebhookEntry]:
    entries: list[WebhookEntry] = []
    has_default_tag = any(t.partition("=")[0] == "default" for t in tags)
    for revision in revisions:
        if revision == "default" and has_default_tag:
            continue  # a `default` tag deactivates the revision-less webhook configuration
        entries += revision_webhooks(revision, default=revision == "default")
    for tag in tags:
        name, sep, target = tag.partition("=")
        if not sep or not name or not target:
            raise click.BadParameter(f"{tag!r} is not TAG=REVISION", param_hint="--tag")
        entries += tag_webhooks(name, target)
    return entries


@click.command("check-inject")
@click.option("-f", "--filename", "source", required=True, help="Manifest file, or - for stdin.")
@click.option("--namespace-labels", default="", help="Labels of the namespace, k=v,k2=v2.")
@click.option(
    "-n", "--namespace", default=None, help="Namespace (default: each object's own, else default)."
)
@click.option(
    "--revision",
    "revisions",
    multiple=True,
    help="Installed revision (repeatable; default: default).",
)
@click.option(
    "--tag", "tags", multiple=True, help="Installed revision tag, TAG=REVISION (repeatable)."
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def check_inject(
    source: str, namespace_labels: str, namespace: str | None,
    revisions: tuple[str, ...], tags: tuple[str, ...], output: str,
) -> None:  # fmt: skip
    """For each workload in FILE: would it be injected, by which revision, and why."""
    labels = parse_labels(namespace_labels)
    installed = revisions or ("default",)
    entries = _entries(installed, tags)
    settings = {r: InjectorSettings(revision=r) for r in installed}
    results: list[CheckResult] = []
    for document in read_documents(source):
        for obj, _ in iter_objects(document):
            result = check_object(
                obj, entries=entries, settings_by_revision=settings,
                namespace_labels=labels, namespace=namespace,
            )  # fmt: skip
            if result is not None:
                results.append(result)
    if output == "json":
        click.echo(
            orjson.dumps([r.as_dict() for r in results], option=orjson.OPT_INDENT_2).decode()
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("WORKLOAD", "NAMESPACE", "INJECTED", "REVISION", "REASON"):
        table.add_column(column, overflow="fold")
    for r in results:
        reason = r.reason + "".join(f"\nwarning: {w}" for w in r.warnings)
        table.add_row(
            f"{r.kind}/{r.name}",
            r.namespace,
            "yes" if r.injected else "no",
            r.revision or "-",
            Text(reason),
        )
    Console(width=160).print(table)
