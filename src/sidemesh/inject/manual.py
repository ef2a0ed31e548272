"""Manual injection (`kube-inject`): inject the pod templates inside manifest objects, with the
same engine and rendering as the webhook, under kube-inject's policy (inject unless opted out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidemesh.api import names
from sidemesh.inject.engine import Injector
from sidemesh.inject.workloads import as_pod, pod_site, with_template

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class ManualResult:
    obj: Any
    injected: bool
    reason: str
    warnings: tuple[str, ...] = ()


def misplaced_annotation_warnings(owner_metadata: dict[str, Any], kind: str) -> list[str]:
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
    return [
        f"{names.LABEL_INJECT} {where} is on the {kind}'s metadata, where it has no effect; "
        "put it in the pod template (spec.template.metadata)"
        for where in found
    ]


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
    injected = injector.inject(pod, namespace, workload=site.workload)
    return ManualResult(with_template(obj, site, injected), True, decision.reason, tuple(warnings))
