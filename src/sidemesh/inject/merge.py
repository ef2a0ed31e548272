"""Merge a rendered template into a pod, then put the injected containers in Istio's order.

The template wins over the pod on conflicts (it is the injector's contract), except for a
container the user declared themselves under an injected name (`istio-proxy`): there the
user's fields win, list fields keyed by name are merged, and `image: auto` means the injected
image. A template entry named like one of the pod's own containers (Istio's `grpc-*` templates
add env and mounts to every app container) merges into it, as a strategic merge patch would:
the app keeps its image and everything the template does not mention. Nothing here mutates
its inputs; changed levels are copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from sidemesh.api import names

# Lists Kubernetes merges by a key rather than replacing (strategic merge patch semantics).
_MERGE_KEYS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
}


def _merge_lists(base: list[Any], top: list[Any], key: str) -> list[Any]:
    out = list(base)
    position = {
        item.get(key): i for i, item in enumerate(out) if isinstance(item, dict) and key in item
    }
    for item in top:
        index = position.get(item.get(key)) if isinstance(item, dict) else None
        if index is None:
            out.append(item)
        else:
            out[index] = merge_objects(out[index], item)
    return out


def merge_objects(base: Any, top: Any) -> Any:
    """`top` over `base`: maps merge recursively, keyed lists merge by key, the rest replaces."""
    if not (isinstance(base, dict) and isinstance(top, dict)):
        return top
    out = dict(base)
    for field, value in top.items():
        if field not in out:
            out[field] = value
        elif field in _MERGE_KEYS and isinstance(out[field], list) and isinstance(value, list):
            out[field] = _merge_lists(out[field], value, _MERGE_KEYS[field])
        else:
            out[field] = merge_objects(out[field], value)
    return out


def overlay_user_container(template: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = merge_objects(template, user)
    if user.get("image") == "auto":
        merged["image"] = template.get("image")
    return merged


def combine_templates(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Several templates overlay one another (as Istio's do) before the result meets the pod,
    so a later template adds to the proxy container of an earlier one instead of replacing it.
    An empty section (`initContainers:` with no items) adds nothing."""
    combined: dict[str, Any] = {}
    for part in parts:
        trimmed = {
            section: {k: v for k, v in value.items() if v is not None}
            if section in ("metadata", "spec") and isinstance(value, dict)
            else value
            for section, value in part.items()
        }
        combined = merge_objects(combined, trimmed)
    return combined


def _named(items: Any, name: str) -> bool:
    return isinstance(items, list) and any(
        isinstance(c, dict) and c.get("name") == name for c in items
    )


@dataclasses.dataclass(frozen=True)
class Applied:
    """The merged pod, and the pod's own containers the template merged into, as they were
    (keyed by `containers` / `initContainers`), so uninjection can put them back."""

    pod: dict[str, Any]
    merged_originals: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)


def apply_template(
    pod: dict[str, Any], rendered: dict[str, Any], user_proxy: dict[str, Any] | None
) -> Applied:
    """The pod with `rendered` merged in (a new top-level object)."""
    out = dict(pod)
    originals: dict[str, list[dict[str, Any]]] = {}
    metadata = dict(pod.get("metadata") or {})
    rendered_meta = rendered.get("metadata") or {}
    for field in ("labels", "annotations"):
        extra = rendered_meta.get(field)
        if extra:
            metadata[field] = {**(metadata.get(field) or {}), **extra}
    out["metadata"] = metadata

    spec = dict(pod.get("spec") or {})
    for field, value in (rendered.get("spec") or {}).items():
        if value is None:  # an empty section in the template (`initContainers:` with no items)
            continue
        if field in ("containers", "initContainers") and isinstance(value, list):
            existing = list(spec.get(field) or [])
            for container in value:
                if not isinstance(container, dict):
                    continue
                name = container.get("name")
                index = next(
                    (
                        i
                        for i, c in enumerate(existing)
                        if isinstance(c, dict) and c.get("name") == name
                    ),
                    None,
                )
                if name == names.CONTAINER_PROXY and user_proxy is not None:
                    container = overlay_user_container(container, user_proxy)
                if index is None:
                    existing.append(container)
                elif name == names.CONTAINER_PROXY:
                    existing[index] = container
                else:  # the pod's own container: the template adds to it
                    originals.setdefault(field, []).append(existing[index])
                    existing[index] = merge_objects(existing[index], container)
            spec[field] = existing
        elif field in _MERGE_KEYS and isinstance(value, list) and isinstance(spec.get(field), list):
            spec[field] = _merge_lists(spec[field], value, _MERGE_KEYS[field])
        else:
            spec[field] = merge_objects(spec.get(field), value)
    rendered_inits = (rendered.get("spec") or {}).get("initContainers")
    if user_proxy is not None and _named(rendered_inits, names.CONTAINER_PROXY):
        # Native sidecar: the user's istio-proxy was merged into the init container; it must
        # not also stay behind in `containers`.
        spec["containers"] = [
            c
            for c in spec.get("containers") or []
            if not (isinstance(c, dict) and c.get("name") == names.CONTAINER_PROXY)
        ]
    out["spec"] = spec
    return Applied(out, originals)


def _move(items: list[Any], name: str, first: bool) -> list[Any]:
    chosen = [c for c in items if isinstance(c, dict) and c.get("name") == name]
    if not chosen:
        return items
    rest = [c for c in items if not (isinstance(c, dict) and c.get("name") == name)]
    return chosen + rest if first else rest + chosen


def reorder(
    spec: dict[str, Any],
    *,
    native_sidecar: bool,
    hold_application: bool,
    outside_mesh: tuple[str, ...] = (),
) -> None:
    """Istio's order. Classic: proxy last among containers (first when the app must wait for
    it), istio-init last among init containers so user init containers run uncaptured.
    Native: istio-init, then istio-proxy, then the user's init containers; those named in
    `outside_mesh` (sidecar.sidemesh.io/bypass-init-containers) first, before any capture."""
    step: Callable[[list[Any], str, bool], list[Any]] = _move
    if isinstance(spec.get("containers"), list):
        spec["containers"] = step(spec["containers"], names.CONTAINER_PROXY, hold_application)
    if isinstance(spec.get("initContainers"), list):
        inits = spec["initContainers"]
        if native_sidecar:
            inits = step(inits, names.CONTAINER_PROXY, True)
            inits = step(inits, names.CONTAINER_INIT, True)
            # In the pod's own order: one may need what an earlier one did.
            bypass = [c for c in inits if isinstance(c, dict) and c.get("name") in outside_mesh]
            inits = bypass + [c for c in inits if c not in bypass]
        else:
            inits = step(inits, names.CONTAINER_INIT, False)
        spec["initContainers"] = inits
