"""check-inject: would this workload be injected, by which revision, and why.

Two layers, as in a cluster: the webhook selectors (which configuration the API server calls,
from namespace and pod labels), then the chosen revision's server-side policy (from the pod).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidemesh.api import names
from sidemesh.inject import warnings as w
from sidemesh.inject.annotations import InvalidAnnotation
from sidemesh.inject.decision import pod_annotations, pod_labels, should_inject
from sidemesh.inject.engine import injection_warnings
from sidemesh.inject.manual import DEFAULT_NAMESPACE, misplaced_annotation_warnings
from sidemesh.inject.settings import InjectorSettings
from sidemesh.inject.warnings import InjectionWarning
from sidemesh.inject.webhooks import WebhookEntry, match_webhooks
from sidemesh.inject.workloads import as_pod, pod_site


@dataclass(frozen=True)
class CheckResult:
    kind: str
    name: str
    namespace: str
    injected: bool
    revision: str | None
    reason: str
    webhook: str | None = None
    warnings: tuple[InjectionWarning, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "injected": self.injected,
            "revision": self.revision,
            "webhook": self.webhook,
            "reason": self.reason,
            "warnings": [warning.as_dict() for warning in self.warnings],
        }


def namespace_warnings(namespace_labels: Mapping[str, str]) -> list[InjectionWarning]:
    if names.LABEL_INJECTION in namespace_labels and names.LABEL_REVISION in namespace_labels:
        return [w.namespace_both_labels()]
    return []


def _annotation_only_warning(pod: Mapping[str, Any]) -> list[InjectionWarning]:
    if pod_annotations(pod).get(
        names.ANNOTATION_INJECT
    ) == "true" and names.LABEL_INJECT not in pod_labels(pod):
        return [w.annotation_cannot_opt_in()]
    return []


def check_object(
    obj: Any,
    *,
    entries: Sequence[WebhookEntry],
    settings_by_revision: Mapping[str, InjectorSettings],
    namespace_labels: Mapping[str, str],
    namespace: str | None = None,
) -> CheckResult | None:
    """None for objects that are not workloads."""
    site = pod_site(obj)
    if site is None:
        return None
    ns = namespace or site.namespace or DEFAULT_NAMESPACE
    pod = as_pod(site)
    warnings = namespace_warnings(namespace_labels)
    warnings += misplaced_annotation_warnings(site.owner_metadata, site.kind)
    warnings += _annotation_only_warning(pod)
    match = match_webhooks(entries, namespace_labels, pod_labels(pod))
    if match.entry is None:
        return CheckResult(
            site.kind, site.name, ns, False, None, match.reason, None, tuple(warnings)
        )
    if match.conflicts:
        warnings.append(w.several_webhooks(e.configuration for e in match.conflicts))
    entry = match.entry
    settings = settings_by_revision.get(entry.revision, InjectorSettings(revision=entry.revision))
    decision = should_inject(pod, ns, settings.config)
    warnings += decision.warnings
    webhook = f"{entry.configuration}/{entry.name}"
    reason = f"{match.reason}; {decision.reason}"
    injected = decision.inject
    if injected:
        try:
            warnings += injection_warnings(pod, settings)
        except InvalidAnnotation as exc:  # the webhook denies the pod: it is never created
            injected, reason = False, f"{reason}; the webhook denies the pod: {exc}"
    return CheckResult(
        site.kind, site.name, ns, injected, entry.revision if injected else None,
        reason, webhook, tuple(warnings),
    )  # fmt: skip
