"""Reading manifests (`-f FILE|DIR|-`) and kubectl's resource words."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

# The words kubectl accepts for each kind the runtime knows.
RESOURCE_WORDS = {
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
    **dict.fromkeys(("deployment", "deployments", "deploy"), "Deployment"),
    **dict.fromkeys(("service", "services", "svc"), "Service"),
    **dict.fromkeys(("namespace", "namespaces", "ns"), "Namespace"),
    **dict.fromkeys(("configmap", "configmaps", "cm"), "ConfigMap"),
    **dict.fromkeys(("secret", "secrets"), "Secret"),
    **dict.fromkeys(("serviceaccount", "serviceaccounts", "sa"), "ServiceAccount"),
    **dict.fromkeys(("event", "events", "ev"), "Event"),
    **dict.fromkeys(
        ("peerauthentication", "peerauthentications", "pa", "peerauthentication.security.istio.io"),
        "PeerAuthentication",
    ),
}
SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest cannot be read; the message names the file."""


def load(names: tuple[str, ...]) -> list[tuple[str, list[Any]]]:
    """(source, documents) for every file; a directory means its YAML/JSON files, `-` stdin."""
    loaded = []
    for name in names:
        paths = [Path(name)]
        if name != "-" and Path(name).is_dir():
            paths = sorted(p for p in Path(name).iterdir() if p.suffix in SUFFIXES)
        for path in paths:
            try:
                text = sys.stdin.read() if name == "-" else path.read_text(encoding="utf-8")
                loaded.append((str(path), list(yaml.safe_load_all(text))))
            except (OSError, yaml.YAMLError) as exc:
                raise ManifestError(f"error: {path}: {exc}") from exc
    return loaded


def named_objects(documents: list[Any], namespace: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in the documents (for `delete -f`)."""
    found = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        items = document.get("items") if document.get("kind") == "List" else [document]
        for item in items or []:
            metadata = item.get("metadata") or {}
            kind = str(item.get("kind"))
            where = "" if kind == "Namespace" else str(metadata.get("namespace") or namespace)
            found.append((kind, where, str(metadata.get("name"))))
    return found
