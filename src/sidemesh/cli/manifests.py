"""Manifests for the CLI: read by `api.manifests` (the one reader; errors name the file, the
document and the line), written as PyYAML writes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from sidemesh.api import manifests
from sidemesh.api.block_yaml import BlockWriter
from sidemesh.inject.manual import describe

__all__ = ["ManifestError", "describe", "dump_documents", "parse_labels", "read_documents"]


class ManifestError(click.ClickException):
    pass


def read_documents(source: str) -> list[Any]:
    """All YAML documents of a file (`-` for standard input), empty documents dropped; none at
    all is an error naming the command (`no objects passed to check-inject`)."""
    try:
        documents = list(manifests.documents(source))
    except manifests.ManifestError as exc:
        raise ManifestError(str(exc)) from exc
    if not documents:
        context = click.get_current_context(silent=True)
        command = context.info_name if context is not None else "this command"
        raise ManifestError(f"{manifests.label(source)}: no objects passed to {command}")
    return documents


def dump_documents(documents: Iterable[Any]) -> str:
    writer = BlockWriter()
    return "---\n".join(writer.dump(d) for d in documents)


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
