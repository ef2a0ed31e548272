"""Which webhook the API server calls for a pod: Istio's selector layout, as data.

The entries built here are the single source of truth for both sides: `sidemesh install`
writes them into MutatingWebhookConfigurations, and `check-inject` / the local runtime
evaluate them against namespace and pod labels exactly as the API server would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidemesh.api import names
from sidemesh.api.selectors import LabelSelector, expr, selector

_NOT_OPTED_OUT = expr(names.LABEL_INJECT, "NotIn", "false")


@dataclass(frozen=True)
class WebhookEntry:
    """One `webhooks[]` item of a MutatingWebhookConfiguration."""

    name: str
    namespace_selector: LabelSelector
    object_selector: LabelSelector
    revision: str  # the control-plane revision whose service answers
    configuration: str  # the MutatingWebhookConfiguration it belongs to
    tag: str | None = None

    def matches(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        return self.namespace_selector.matches(namespace_labels) and self.object_selector.matches(
            pod_labels
        )

    def describe(self) -> str:
        return (
            f"{self.configuration}/{self.name} "
            f"(namespace: {self.namespace_selector.describe()}; "
            f"pod: {self.object_selector.describe()})"
        )


def _revision_entries(
    selected_by: str, revision: str, configuration: str, tag: str | None
) -> list[WebhookEntry]:
    return [
        WebhookEntry(
            name="rev.namespace.sidecar-injector.istio.io",
            namespace_selector=selector(
                expr(names.LABEL_REVISION, "In", selected_by),
                expr(names.LABEL_INJECTION, "DoesNotExist"),
            ),
            object_selector=selector(_NOT_OPTED_OUT),
            revision=revision,
            configuration=configuration,
            tag=tag,
        ),
        WebhookEntry(
            name="rev.object.sidecar-injector.istio.io",
            namespace_selector=selector(
                expr(names.LABEL_REVISION, "DoesNotExist"),
                expr(names.LABEL_INJECTION, "DoesNotExist"),
            ),
            object_selector=selector(_NOT_OPTED_OUT, expr(names.LABEL_REVISION, "In", selected_by)),
            revision=revision,
            configuration=configuration,
            tag=tag,
        ),
    ]


def _default_entries(revision: str, configuration: str, tag: str | None) -> list[WebhookEntry]:
    return [
        WebhookEntry(
            name="namespace.sidecar-injector.istio.io",
            namespace_selector=selector(expr(names.LABEL_INJECTION, "In", "enabled")),
            object_selector=selector(_NOT_OPTED_OUT),
            revision=revision,
            configuration=configuration,
            tag=tag,
        ),
        WebhookEntry(
            name="object.sidecar-injector.istio.io",
            namespace_selector=selector(
                expr(names.LABEL_INJECTION, "DoesNotExist"),
                expr(names.LABEL_REVISION, "DoesNotExist"),
            ),
            object_selector=selector(
                expr(names.LABEL_INJECT, "In", "true"),
                expr(names.LABEL_REVISION, "DoesNotExist"),
            ),
            revision=revision,
            configuration=configuration,
            tag=tag,
        ),
    ]


def revision_webhooks(revision: str, *, default: bool = False) -> list[WebhookEntry]:
    """Entries of `istio-sidecar-injector[-REV]`.

    `default` adds the revision-less entries (istio-injection=enabled, pod opt-in); it is true
    for the `default` revision when no `default` tag exists.
    """
    configuration = names.webhook_configuration_name(revision)
    entries: list[WebhookEntry] = []
    if revision not in ("", "default"):
        entries += _revision_entries(revision, revision, configuration, None)
    else:
        # The default revision is also selected by `istio.io/rev=default`.
        entries += _revision_entries("default", "default", configuration, None)
    if default:
        entries += _default_entries(revision or "default", configuration, None)
    return entries


def tag_webhooks(tag: str, revision: str) -> list[WebhookEntry]:
    """Entries of `istio-revision-tag-TAG`: a tag selects `revision` under its own name; the
    `default` tag also takes over the revision-less entries."""
    configuration = f"istio-revision-tag-{tag}"
    entries = _revision_entries(tag, revision, configuration, tag)
    if tag == "default":
        entries += _default_entries(revision, configuration, tag)
    return entries


@dataclass(frozen=True)
class WebhookMatch:
    entry: WebhookEntry | None
    reason: str
    conflicts: tuple[WebhookEntry, ...] = ()  # more than one configuration would mutate the pod


def match_webhooks(
    entries: Iterable[WebhookEntry],
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> WebhookMatch:
    """Evaluate every entry as the API server does; say which one would call the injector."""
    matched = [e for e in entries if e.matches(namespace_labels, pod_labels)]
    if not matched:
        return WebhookMatch(entry=None, reason=_why_nothing_matched(namespace_labels, pod_labels))
    configurations = {e.configuration for e in matched}
    first = matched[0]
    reason = f"selected by webhook {first.describe()}"
    if len(configurations) > 1:
        return WebhookMatch(
            entry=first,
            reason=reason + "; more than one webhook configuration matches this pod",
            conflicts=tuple(matched),
        )
    return WebhookMatch(entry=first, reason=reason)


def _why_nothing_matched(namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> str:
    injection = namespace_labels.get(names.LABEL_INJECTION)
    ns_rev = namespace_labels.get(names.LABEL_REVISION)
    if pod_labels.get(names.LABEL_INJECT) == "false":
        return f"pod label {names.LABEL_INJECT}=false opts it out"
    if injection is not None and injection != "enabled":
        return f"namespace label {names.LABEL_INJECTION}={injection} disables injection"
    if injection == "enabled":
        return (
            f"namespace label {names.LABEL_INJECTION}=enabled selects the default revision, "
            "and no default revision or default tag is installed"
        )
    if ns_rev is not None:
        return f"namespace label {names.LABEL_REVISION}={ns_rev} names no installed revision or tag"
    pod_rev = pod_labels.get(names.LABEL_REVISION)
    if pod_rev is not None:
        return f"pod label {names.LABEL_REVISION}={pod_rev} names no installed revision or tag"
    return (
        f"namespace has neither {names.LABEL_REVISION} nor {names.LABEL_INJECTION} label "
        "(injection is off by default)"
    )
