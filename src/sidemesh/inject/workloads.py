"""Where each workload kind keeps its pod template, for manual injection (kube-inject) and
for checking manifests (check-inject). Kinds not listed here pass through untouched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sidemesh.inject.identity import Workload

# kind -> path from the object to its pod template ("" for a Pod itself)
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "DeploymentConfig": ("spec", "template"),
}


@dataclass(frozen=True)
class PodSite:
    """A pod (or pod template) found inside a manifest object."""

    kind: str
    name: str
    namespace: str | None
    template: dict[str, Any]
    path: tuple[str, ...]
    workload: Workload | None  # None for a Pod: its owner references tell
    owner_metadata: dict[str, Any]


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def pod_site(obj: Any) -> PodSite | None:
    """The pod template of a workload object, or None for kinds that have none."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in TEMPLATE_PATHS:
        return None
    path = TEMPLATE_PATHS[kind]
    template = obj if not path else _get(obj, path)
    if not isinstance(template, dict):
        return None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    name = metadata.get("name") or metadata.get("generateName") or ""
    namespace = metadata.get("namespace")
    api_version = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else "v1"
    workload = None if kind == "Pod" else Workload(str(name), kind, str(api_version))
    return PodSite(
        kind=kind,
        name=str(name),
        namespace=namespace if isinstance(namespace, str) else None,
        template=template,
        path=path,
        workload=workload,
        owner_metadata=metadata,
    )


def as_pod(site: PodSite) -> dict[str, Any]:
    """The template as a Pod the injector can take (templates have no kind/apiVersion)."""
    if not site.path:
        return site.template
    return {"apiVersion": "v1", "kind": "Pod", **site.template}


def with_template(obj: dict[str, Any], site: PodSite, pod: dict[str, Any]) -> dict[str, Any]:
    """`obj` with its pod template replaced by the injected `pod` (copying only the path)."""
    if not site.path:
        return pod
    template = {k: v for k, v in pod.items() if k not in ("apiVersion", "kind")}

    def rebuild(node: dict[str, Any], rest: tuple[str, ...]) -> dict[str, Any]:
        copy = dict(node)
        copy[rest[0]] = template if len(rest) == 1 else rebuild(node[rest[0]], rest[1:])
        return copy

    return rebuild(obj, site.path)


def iter_objects(document: Any) -> Iterator[tuple[Any, tuple[int, ...]]]:
    """Objects in a YAML document, descending into `List` kinds; yields (object, index path)."""
    if (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    ):
        for index, item in enumerate(document["items"]):
            for obj, sub in iter_objects(item):
                yield obj, (index, *sub)
    else:
        yield document, ()
