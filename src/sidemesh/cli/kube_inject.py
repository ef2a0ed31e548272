"""`sidemesh kube-inject`: manual sidecar injection of manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sidemesh.cli.manifests import ManifestError, describe, dump_documents, read_documents
from sidemesh.cli.options import build_injector, injector_options
from sidemesh.inject.annotations import InvalidAnnotation
from sidemesh.inject.engine import InjectionError, Injector
from sidemesh.inject.manual import inject_object
from sidemesh.inject.template import TemplateError


def _inject_document(injector: Injector, document: Any, label: str, index: int) -> Any:
    if (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    ):
        items = [_inject_document(injector, item, label, index) for item in document["items"]]
        return {**document, "items": items}
    try:
        result = inject_object(injector, document)
    except (InjectionError, InvalidAnnotation, TemplateError) as exc:
        raise ManifestError(f"{label}: document {index} ({describe(document)}): {exc}") from exc
    for warning in result.warnings:
        click.echo(f"warning: {describe(document)}: {warning}", err=True)
    if not result.injected and result.reason != "not a workload with a pod template":
        click.echo(f"skipping injection of {describe(document)}: {result.reason}", err=True)
    return result.obj


@click.command("kube-inject")
@click.option("-f", "--filename", "source", required=True, help="Manifest file, or - for stdin.")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
@injector_options
def kube_inject(
    source: str,
    output: Path | None,
    revision: str,
    injector_config: Path | None,
    mesh_config: Path | None,
    values_file: Path | None,
) -> None:
    """Inject the sidecar into the pod templates of a multi-document manifest.

    Pods, Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs,
    ReplicationControllers and Lists are injected; other kinds pass through untouched.
    Nothing is written unless every document succeeds.
    """
    injector = build_injector(revision, injector_config, mesh_config, values_file)
    label = "<stdin>" if source == "-" else source
    documents = read_documents(source)
    injected = [
        _inject_document(injector, document, label, index)
        for index, document in enumerate(documents, start=1)
    ]
    text = dump_documents(injected)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"{output}: cannot write: {exc.strerror or exc}") from exc
