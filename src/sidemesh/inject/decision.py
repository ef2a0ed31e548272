"""Should this pod get a sidecar, and why — the injector's server-side policy.

This runs after the API server has already chosen the webhook (see `webhooks`); namespace
labels are never read here, exactly as in Istio. Every answer carries a stable code and a
reason written for the person who has to act on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh.api import names
from sidemesh.api.config import InjectorConfig
from sidemesh.inject import warnings as w
from sidemesh.inject.warnings import InjectionWarning


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    code: str
    reason: str
    warnings: tuple[InjectionWarning, ...] = ()


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def pod_labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return _map(_map(pod.get("metadata")).get("labels"))


def pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return _map(_map(pod.get("metadata")).get("annotations"))


def should_inject(
    pod: Mapping[str, Any],
    namespace: str,
    config: InjectorConfig,
    *,
    manual: bool = False,
) -> Decision:
    """Istio's order: hostNetwork, ignored namespaces, the explicit label (over the deprecated
    annotation), never/always selectors, then the injector policy.

    `manual` is kube-inject: policy `enabled` and no selectors, so only an explicit `false` or
    hostNetwork keeps the sidecar out.
    """
    spec = _map(pod.get("spec"))
    if spec.get("hostNetwork") is True:
        return Decision(
            False, "host-network", "pod uses hostNetwork; a sidecar cannot capture its traffic"
        )
    if not manual and namespace in names.IGNORED_NAMESPACES:
        return Decision(False, "ignored-namespace", f"namespace {namespace} is never injected")

    labels = pod_labels(pod)
    annotations = pod_annotations(pod)
    warnings: list[InjectionWarning] = []
    label_value = labels.get(names.LABEL_INJECT)
    annotation_value = annotations.get(names.ANNOTATION_INJECT)
    if label_value is not None:
        explicit, source = label_value, f"label {names.LABEL_INJECT}={label_value}"
        if annotation_value is not None and annotation_value != label_value:
            warnings.append(w.annotation_overruled(annotation_value, label_value))
    elif annotation_value is not None:
        explicit, source = (
            annotation_value,
            f"annotation {names.ANNOTATION_INJECT}={annotation_value}",
        )
        warnings.append(w.annotation_deprecated())
    else:
        explicit, source = None, ""

    if explicit == "true":
        return Decision(True, "pod-opt-in", f"{source} requests injection", tuple(warnings))
    if explicit == "false":
        return Decision(False, "pod-opt-out", f"{source} opts the pod out", tuple(warnings))
    if explicit is not None:
        warnings.append(w.not_a_boolean(source))

    if manual:
        return Decision(
            True, "manual", "kube-inject injects unless the pod opts out", tuple(warnings)
        )

    # An empty selector matches nothing here (Istio skips it), unlike in a webhook.
    for position, never in enumerate(config.never_inject_selector):
        if never.requirements() and never.matches(labels):
            return Decision(
                False,
                "never-inject-selector",
                f"pod labels match neverInjectSelector[{position}] ({never.describe()})",
                tuple(warnings),
            )
    for position, always in enumerate(config.always_inject_selector):
        if always.requirements() and always.matches(labels):
            return Decision(
                True,
                "always-inject-selector",
                f"pod labels match alwaysInjectSelector[{position}] ({always.describe()})",
                tuple(warnings),
            )
    if config.policy == "enabled":
        return Decision(True, "policy-enabled", "injector policy is enabled", tuple(warnings))
    return Decision(
        False,
        "policy-disabled",
        f"injector policy is disabled and the pod does not set {names.LABEL_INJECT}=true",
        tuple(warnings),
    )
