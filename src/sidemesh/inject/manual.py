"""Manual injection (`kube-inject`): inject the pod templates inside manifest objects, with the
same engine and rendering as the webhook, under kube-inject's policy (inject unless opted out).

`inject_pieces` does it for a manifest read a piece at a time (`api.manifests.pieces`): a
List's items are injected and written one by one, so memory does not grow with the List."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sidemesh.api import names
from sidemesh.api.block_yaml import BlockWriter
from sidemesh.api.manifests import (
    DocumentEnd,
    DocumentStart,
    Field,
    Item,
    ItemsEnd,
    ItemsStart,
    Piece,
    Whole,
)
from sidemesh.inject import warnings as w
from sidemesh.inject.annotations import InvalidAnnotation
from sidemesh.inject.engine import InjectionError, Injector
from sidemesh.inject.template import TemplateError
from sidemesh.inject.warnings import InjectionWarning
from sidemesh.inject.workloads import TEMPLATE_PATHS, as_pod, pod_site, with_template

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class ManualResult:
    obj: Any
    injected: bool
    reason: str
    warnings: tuple[InjectionWarning, ...] = ()


def misplaced_annotation_warnings(
    owner_metadata: dict[str, Any], kind: str
) -> list[InjectionWarning]:
    """`sidecar.istio.io/inject` on a workload's own metadata instead of its pod template."""
    if kind == "Pod":
        return []
    annotations = owner_metadata.get("annotations")
    labels = owner_metadata.get("labels")
    found = [
        where
        for where, mapping in (("annotation", annotations), ("label", labels))
        if isinstance(mapping, dict) and names.LABEL_INJECT in mapping
    ]
    return [w.inject_on_workload(where, kind) for where in found]


def inject_object(injector: Injector, obj: Any) -> ManualResult:
    """Raises InjectionError, InvalidAnnotation or TemplateError for an object it cannot inject."""
    site = pod_site(obj)
    if site is None:
        return ManualResult(obj, False, "not a workload with a pod template")
    warnings = misplaced_annotation_warnings(site.owner_metadata, site.kind)
    namespace = site.namespace or DEFAULT_NAMESPACE
    pod = as_pod(site)
    decision = injector.decide(pod, namespace, manual=True)
    warnings += decision.warnings
    if not decision.inject:
        return ManualResult(obj, False, decision.reason, tuple(warnings))
    injected, found = injector.inject_with_warnings(pod, namespace, workload=site.workload)
    warnings += found
    return ManualResult(with_template(obj, site, injected), True, decision.reason, tuple(warnings))


class ManualInjectionError(Exception):
    """A document cannot be injected; the message names the file, the document and why."""


def describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "(not an object)"
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    return f"{obj.get('kind', '?')}/{name}"


def inject_document(
    injector: Injector, document: Any, label: str, index: int, report: Callable[[str], None]
) -> Any:
    """A whole document injected (a List's items one by one); warnings and skips go to
    `report`. Raises ManualInjectionError."""
    if (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    ):
        items = [inject_document(injector, i, label, index, report) for i in document["items"]]
        return {**document, "items": items}
    try:
        result = inject_object(injector, document)
    except (InjectionError, InvalidAnnotation, TemplateError) as exc:
        raise ManualInjectionError(
            f"{label}: document {index} ({describe(document)}): {exc}"
        ) from exc
    for warning in result.warnings:
        report(f"warning: {describe(document)}: {warning}")
    if not result.injected and result.reason != "not a workload with a pod template":
        report(f"skipping injection of {describe(document)}: {result.reason}")
    return result.obj


def inject_pieces(
    injector: Injector,
    pieces: Iterable[Piece],
    label: str,
    report: Callable[[str], None],
    *,
    spool: Callable[[], IO[bytes]],
) -> Iterator[tuple[int, str]]:
    """(document number, text) of the injected manifest, written as `yaml.dump` writes each
    document and joined by `---`, with a List's items read, injected and written one at a time.
    `spool` gives a scratch file (the caller's I/O) for items that come before their List's
    kind. Raises ManualInjectionError."""
    writer = BlockWriter()
    document: _StreamedDocument | None = None
    for piece in pieces:
        if isinstance(piece, DocumentStart):
            document = _StreamedDocument(injector, writer, label, piece.index, report, spool)
            if piece.index > 1:  # every document is written, so the first is number 1
                yield piece.index, "---\n"
            continue
        assert document is not None
        for text in document.take(piece):
            yield document.index, text


class _StreamedDocument:
    """One document as pieces arrive. A List's kind may come after its items (kubectl sorts
    the keys), so items seen before the kind wait in a temporary file, not in memory."""

    def __init__(
        self,
        injector: Injector,
        writer: BlockWriter,
        label: str,
        index: int,
        report: Callable[[str], None],
        new_spool: Callable[[], IO[bytes]],
    ) -> None:
        self.injector, self.writer, self.label, self.index = injector, writer, label, index
        self.report, self.new_spool = report, new_spool
        self.fields: list[tuple[Any, Any]] = []  # not written yet, in order; items as _ITEMS
        self.kind: Any = None
        # "" until decided; then "inject", "pass" (items as they are), "whole" or "given" (whole)
        self.mode = ""
        self.items: list[Any] = []  # "whole" mode only
        self.spool: IO[bytes] | None = None  # items before the kind is known
        self.items_written = 0
        self.items_done = False

    def take(self, piece: Piece) -> Iterator[str]:
        if isinstance(piece, Whole):
            self.mode = "given"
            yield self.writer.dump(inject_document(self.injector, piece.value, *self._where()))
        elif isinstance(piece, Field):
            if piece.key == "kind":
                self.kind = piece.value
            if self.mode in ("inject", "pass"):
                yield self._dump({piece.key: piece.value})
            else:
                self.fields.append((piece.key, piece.value))
                if piece.key == "kind" and self.spool is not None:
                    yield from self._decide()
        elif isinstance(piece, ItemsStart):
            self.fields.append((piece.key, _ITEMS))
            if "kind" in (key for key, _ in self.fields):
                yield from self._decide()
            else:
                self.spool = self.new_spool()  # closed once read back (_unpickle_all)
        elif isinstance(piece, Item):
            if self.spool is not None:
                pickle.dump(piece.value, self.spool, protocol=pickle.HIGHEST_PROTOCOL)
            elif self.mode == "whole":
                self.items.append(piece.value)
            else:
                yield from self._item(piece.value)
        elif isinstance(piece, ItemsEnd):
            self.items_done = True
            if self.mode in ("inject", "pass") and not self.items_written:
                yield "items: []\n"
        elif isinstance(piece, DocumentEnd):
            if self.spool is not None:
                yield from self._decide()
            if self.mode == "whole" or not self.mode:
                whole = {k: (self.items if v is _ITEMS else v) for k, v in self.fields}
                yield self._dump(inject_document(self.injector, whole, *self._where()))

    def _decide(self) -> Iterator[str]:
        """The kind is known (or will never be): write what waited, in order."""
        if self.kind == "List":
            self.mode = "inject"
        elif isinstance(self.kind, str) and self.kind in TEMPLATE_PATHS:
            self.mode = "whole"  # a workload with a top-level `items` list: odd, kept whole
        else:
            self.mode = "pass"
        spooled = self._spooled()
        if self.mode == "whole":
            self.items = list(spooled)
            return
        waiting, self.fields = self.fields, []
        for key, value in waiting:
            if value is not _ITEMS:
                yield self._dump({key: value})
                continue
            for item in spooled:
                yield from self._item(item)
            if self.items_done and not self.items_written:
                yield "items: []\n"

    def _spooled(self) -> Iterator[Any]:
        spool, self.spool = self.spool, None
        if spool is None:
            return iter(())
        return _unpickle_all(spool)

    def _item(self, item: Any) -> Iterator[str]:
        if self.mode == "inject":
            item = inject_document(self.injector, item, *self._where())
        if not self.items_written:
            yield "items:\n"
        self.items_written += 1
        yield self._dump([item])

    def _where(self) -> tuple[str, int, Callable[[str], None]]:
        return self.label, self.index, self.report

    def _dump(self, built: Any) -> str:
        """What the streaming reader built (no anchors, so nothing shared), injected or not."""
        return self.writer.dump(built, unshared=True)


_ITEMS = object()  # where the `items` list sits among a document's fields


def _unpickle_all(spool: IO[bytes]) -> Iterator[Any]:
    with spool:
        spool.seek(0)
        while True:
            try:
                yield pickle.load(spool)
            except EOFError:
                return
