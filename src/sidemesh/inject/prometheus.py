"""Prometheus metrics merge: scrapers keep scraping one port (the agent's 15020), which serves
Envoy's, the agent's and the app's metrics together. The app's own scrape settings move into
ISTIO_PROMETHEUS_ANNOTATIONS so the agent knows where to fetch them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sidemesh.api import names

MERGED_PATH = "/stats/prometheus"
_FALSE = frozenset({"false", "False", "FALSE", "f", "F", "0"})
_KEYS = (
    ("scrape", names.ANNOTATION_PROMETHEUS_SCRAPE),
    ("path", names.ANNOTATION_PROMETHEUS_PATH),
    ("port", names.ANNOTATION_PROMETHEUS_PORT),
)


def merge_annotations(
    annotations: Mapping[str, str], status_port: int
) -> tuple[dict[str, str], str] | None:
    """New annotations and the env value, or None when the pod opted out of scraping."""
    # Every spelling of false that Go's ParseBool accepts (as Istio reads it) opts out.
    if annotations.get(names.ANNOTATION_PROMETHEUS_SCRAPE) in _FALSE or not status_port:
        return None
    original = {key: annotations[name] for key, name in _KEYS if name in annotations}
    merged = dict(annotations)
    merged[names.ANNOTATION_PROMETHEUS_SCRAPE] = "true"
    merged[names.ANNOTATION_PROMETHEUS_PORT] = str(status_port)
    merged[names.ANNOTATION_PROMETHEUS_PATH] = MERGED_PATH
    return merged, orjson.dumps(original).decode()


def restore_annotations(annotations: dict[str, Any], encoded: str) -> None:
    """Undo `merge_annotations` (before re-injection): put back exactly what the pod had."""
    try:
        original = orjson.loads(encoded)
    except orjson.JSONDecodeError:
        return
    if not isinstance(original, dict):
        return
    for key, name in _KEYS:
        if key in original:
            annotations[name] = original[key]
        else:
            annotations.pop(name, None)
