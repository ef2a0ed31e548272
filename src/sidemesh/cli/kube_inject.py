"""`sidemesh kube-inject`: manual sidecar injection of manifests.

The manifest is read, injected and written a document (and a List item) at a time, so memory
stays flat however large the input; the output goes to a temporary file first and reaches
stdout or `-o` only when every document succeeded."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import click

from sidemesh.api import manifests
from sidemesh.cli.manifests import ManifestError
from sidemesh.cli.options import build_injector, injector_options
from sidemesh.inject.engine import Injector
from sidemesh.inject.manual import ManualInjectionError, inject_pieces


class _Reporter:
    """Warnings and skips to stderr, each once: a document read again whole (after
    NotStreamable) repeats, in the same order, the lines it already gave."""

    def __init__(self) -> None:
        self.document = 1
        self.given: dict[int, int] = {}  # document -> lines printed
        self.muted = 0

    def __call__(self, line: str) -> None:
        if self.muted:
            self.muted -= 1
            return
        self.given[self.document] = self.given.get(self.document, 0) + 1
        click.echo(line, err=True)

    def again(self, document: int) -> None:
        self.document = document
        self.muted = self.given.get(document, 0)


@contextmanager
def _seekable_input(source: str) -> Iterator[str]:
    """A path to read (again, if a document must be re-read whole): stdin is copied to disk."""
    if source != manifests.STDIN:
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="kube-inject-stdin-") as copy:
        stdin = sys.stdin.buffer
        shutil.copyfileobj(stdin, copy)
        copy.flush()
        yield copy.name


def inject_manifest(injector: Injector, source: str, spool: IO[bytes]) -> int:
    """Write the injected manifest to `spool`; the number of documents. Raises ManifestError
    (the CLI's) naming the file, the document and the line."""
    label = manifests.label(source)
    whole: set[int] = set()
    skip_before = 0
    started: dict[int, int] = {}  # document -> where its text begins in the spool
    report = _Reporter()
    with _seekable_input(source) as path:
        while True:
            try:
                pieces = manifests.pieces(
                    path, label=label, whole=frozenset(whole), skip_before=skip_before
                )
                injected = inject_pieces(
                    injector, pieces, label, report, spool=tempfile.TemporaryFile
                )
                for index, text in injected:
                    report.document = index  # a document's lines all come after its "---"
                    started.setdefault(index, spool.tell())
                    spool.write(text.encode("utf-8"))
                return len(started)
            except manifests.NotStreamable as exc:  # anchors across items: read it whole
                whole.add(exc.index)
                skip_before = exc.index
                report.again(exc.index)
                spool.seek(started.get(exc.index, spool.tell()))
                spool.truncate()
                started = {i: at for i, at in started.items() if i < exc.index}
            except (manifests.ManifestError, ManualInjectionError) as exc:
                raise ManifestError(str(exc)) from exc


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
    with tempfile.TemporaryFile(prefix="kube-inject-") as spool:
        if not inject_manifest(injector, source, spool):
            raise ManifestError(f"{manifests.label(source)}: no objects passed to kube-inject")
        spool.seek(0)
        if output is None:
            stdout = sys.stdout.buffer
            shutil.copyfileobj(spool, stdout)
            return
        try:
            with output.open("wb") as written:
                shutil.copyfileobj(spool, written)
        except OSError as exc:
            raise click.ClickException(f"{output}: cannot write: {exc.strerror or exc}") from exc
