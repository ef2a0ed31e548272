"""Reading and writing multi-document YAML manifests for the CLI, with errors that name the
file, the document and the line."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml


class ManifestError(click.ClickException):
    pass


def read_documents(source: str) -> list[Any]:
    """All YAML documents of a file (`-` for standard input), empty documents dropped."""
    label = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{label}: not UTF-8 text: {exc.reason}") from exc
    documents: list[Any] = []
    try:
        for document in yaml.load_all(text, Loader=yaml.CSafeLoader):
            if document is not None:
                documents.append(document)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(
            f"{where}: YAML document {len(documents) + 1} cannot be read: {problem}"
        ) from exc
    return documents


def dump_documents(documents: Iterable[Any]) -> str:
    return "---\n".join(
        yaml.dump(d, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)
        for d in documents
    )


def describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "(not an object)"
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    return f"{obj.get('kind', '?')}/{name}"


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as used by --namespace-labels."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels
