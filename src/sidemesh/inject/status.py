"""The `sidecar.istio.io/status` annotation, and undoing an earlier injection.

Re-injection never stacks sidecars: what the status annotation lists is removed first, and
the changes post-processing made (probes, metrics annotations, a user's own istio-proxy) are
put back from where injection recorded them, so `inject(inject(pod)) == inject(pod)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.inject.probes import restore_probes
from sidemesh.inject.prometheus import restore_annotations


def _names(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]


def status_annotation(
    *,
    init_containers: Iterable[str],
    containers: Iterable[str],
    volumes: Iterable[str],
    image_pull_secrets: Iterable[str],
    revision: str,
) -> str:
    return orjson.dumps(
        {
            "initContainers": list(init_containers) or None,
            "containers": list(containers) or None,
            "volumes": list(volumes) or None,
            "imagePullSecrets": list(image_pull_secrets) or None,
            "revision": revision,
        }
    ).decode()


def injected_names(rendered: dict[str, Any], pod: dict[str, Any]) -> dict[str, list[str]]:
    """What the template added to `pod` (the pod before injection): a template entry named like
    one of the pod's own containers or volumes merged into it and is not listed, so uninjection
    never removes the app. A user's own `istio-proxy` is listed: injection replaced it and
    records the original in `proxy.istio.io/overrides`."""
    spec = rendered.get("spec") or {}
    own = pod.get("spec") or {}

    def added(field: str) -> list[str]:
        theirs = set(_names(own.get(field))) - {names.CONTAINER_PROXY}
        return [n for n in _names(spec.get(field)) if n not in theirs]

    return {
        "init_containers": added("initContainers"),
        "containers": added("containers"),
        "volumes": added("volumes"),
        "image_pull_secrets": added("imagePullSecrets"),
    }


def overrides_annotation(
    user_proxy: dict[str, Any] | None, merged_originals: dict[str, list[dict[str, Any]]]
) -> str | None:
    """`proxy.istio.io/overrides`: the pod's own containers as they were before injection
    changed them. Only a user's `istio-proxy`: that container alone (sidemesh's first format);
    app containers a template merged into: Istio's `{"containers": [...]}`."""
    if not merged_originals:
        return None if user_proxy is None else orjson.dumps(user_proxy).decode()
    listed = {field: list(items) for field, items in merged_originals.items()}
    if user_proxy is not None:
        listed.setdefault("containers", []).append(user_proxy)
    return orjson.dumps(listed).decode()


def _restore_overrides(spec: dict[str, Any], raw: str) -> None:
    """Put back what `overrides_annotation` recorded: a container still in the pod (an app
    container the template merged into) is replaced in place, a removed one is appended."""
    try:
        recorded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(recorded, dict):
        return
    if "name" in recorded:  # a user's istio-proxy alone
        recorded = {"containers": [recorded]}
    for field in ("containers", "initContainers"):
        originals = recorded.get(field)
        if not isinstance(originals, list):
            continue
        items = list(spec.get(field) or [])
        for original in originals:
            if not (isinstance(original, dict) and isinstance(original.get("name"), str)):
                continue
            index = next(
                (i for i, c in enumerate(items)
                 if isinstance(c, dict) and c.get("name") == original["name"]),
                None,
            )  # fmt: skip
            if index is None:
                items.append(original)
            else:
                items[index] = original
        spec[field] = items


def _env_value(container: dict[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if (
            isinstance(item, dict)
            and item.get("name") == name
            and isinstance(item.get("value"), str)
        ):
            return str(item["value"])
    return None


def uninject(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` without what an earlier injection added, as far as its status annotation tells.
    A pod without the annotation is returned as is."""
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    raw = annotations.get(names.ANNOTATION_STATUS) if isinstance(annotations, dict) else None
    if not isinstance(raw, str):
        return pod
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        status = {}
    assert isinstance(metadata, dict) and isinstance(annotations, dict)

    def listed(key: str) -> set[str]:
        value = status.get(key)
        return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()

    spec = dict(pod.get("spec") or {})
    new_annotations = dict(annotations)
    del new_annotations[names.ANNOTATION_STATUS]

    removed_proxy: dict[str, Any] | None = None
    for field, key in (("initContainers", "initContainers"), ("containers", "containers")):
        items = spec.get(field)
        if not isinstance(items, list):
            continue
        drop = listed(key)
        for item in items:
            if (
                isinstance(item, dict)
                and item.get("name") == names.CONTAINER_PROXY
                and names.CONTAINER_PROXY in drop
            ):
                removed_proxy = item
        kept = [i for i in items if not (isinstance(i, dict) and i.get("name") in drop)]
        if kept:
            spec[field] = kept
        else:
            spec.pop(field)
    for field, key in (("volumes", "volumes"), ("imagePullSecrets", "imagePullSecrets")):
        items = spec.get(field)
        if isinstance(items, list):
            drop = listed(key)
            kept = [i for i in items if not (isinstance(i, dict) and i.get("name") in drop)]
            if kept:
                spec[field] = kept
            else:
                spec.pop(field)

    if removed_proxy is not None:
        probers = _env_value(removed_proxy, names.ENV_KUBE_APP_PROBERS)
        if probers is not None:
            restore_probes(spec, probers)
        prometheus = _env_value(removed_proxy, names.ENV_PROMETHEUS_ANNOTATIONS)
        if prometheus is not None:
            restore_annotations(new_annotations, prometheus)
    overrides = new_annotations.pop(names.ANNOTATION_PROXY_OVERRIDES, None)
    if isinstance(overrides, str):
        _restore_overrides(spec, overrides)

    out = dict(pod)
    out["metadata"] = {**metadata, "annotations": new_annotations}
    out["spec"] = spec
    return out
