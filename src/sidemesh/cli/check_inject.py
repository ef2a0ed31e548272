"""`sidemesh check-inject`: would these workloads be injected, by whom, and why — for manifest
files, or for live objects in a cluster."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.table import Table
from rich.text import Text

from sidemesh.cli.console import make_console
from sidemesh.cli.install import cluster_options, run_against_cluster
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
@click.argument("target", required=False)
@click.option("-f", "--filename", "source", help="Manifest file, or - for stdin (no cluster).")
@click.option("-l", "--selector", default=None, help="Live: pods matching this label selector.")
@click.option("--namespace-labels", default="", help="With -f: labels of the namespace, k=v,….")
@click.option(
    "-n", "--namespace", default=None, help="Namespace (default: each object's own, else default)."
)
@click.option(
    "--revision",
    "revisions",
    multiple=True,
    help="With -f: installed revision (repeatable; default: default).",
)
@click.option("--tag", "tags", multiple=True, help="With -f: installed revision tag, TAG=REVISION.")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@cluster_options
def check_inject(
    target: str | None, source: str | None, selector: str | None, namespace_labels: str,
    namespace: str | None, revisions: tuple[str, ...], tags: tuple[str, ...], output: str,
    kubeconfig: Path | None, context: str | None,
) -> None:  # fmt: skip
    """Would these workloads be injected, by which revision, and why.

    With -f FILE, the manifests are checked against the given namespace labels and installed
    revisions. Otherwise `[KIND/]NAME -n NS` or `-l SELECTOR -n NS` is checked against the
    live cluster's webhook configurations, namespace and pod labels; it fails if two webhooks
    would inject the same pod.
    """
    if source is not None:
        if target is not None or selector is not None:
            raise click.UsageError("give either -f FILE or a live [KIND/]NAME / -l SELECTOR")
        results = _check_file(source, namespace_labels, namespace, revisions, tags)
        conflicts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    else:
        from sidemesh.analyze.live_check import check_inject_live

        live = run_against_cluster(
            kubeconfig,
            context,
            lambda client: check_inject_live(
                client, target=target, namespace=namespace or "default", selector=selector
            ),
        )
        results, conflicts = list(live.results), live.conflicts
    _print(results, output)
    if conflicts:
        for name, configurations in conflicts:
            click.echo(
                f"error: {name} would be injected by more than one webhook: "
                + ", ".join(configurations),
                err=True,
            )
        raise SystemExit(1)


def _check_file(
    source: str, namespace_labels: str, namespace: str | None,
    revisions: tuple[str, ...], tags: tuple[str, ...],
) -> list[CheckResult]:  # fmt: skip
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
    return results


def _print(results: list[CheckResult], output: str) -> None:
    """Results on stdout; warnings on stderr as kube-inject prints them (`warning: KIND/NAME:
    SM1xxx: message`), and in the JSON as `{code, message}`."""
    if output == "json":
        click.echo(
            orjson.dumps([r.as_dict() for r in results], option=orjson.OPT_INDENT_2).decode()
        )
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("WORKLOAD", "NAMESPACE", "INJECTED", "REVISION", "REASON"):
            table.add_column(column, overflow="fold")
        for r in results:
            table.add_row(
                f"{r.kind}/{r.name}",
                r.namespace,
                "yes" if r.injected else "no",
                r.revision or "-",
                Text(r.reason),
            )
        make_console().print(table)
    for r in results:
        for warning in r.warnings:
            click.echo(f"warning: {r.kind}/{r.name}: {warning}", err=True)
