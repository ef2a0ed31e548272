"""Analyzers: pure functions from a cluster snapshot to findings, each with what to do."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sidemesh.analyze import findings as codes
from sidemesh.analyze.findings import Finding
from sidemesh.analyze.security_policies import SecurityConfig, security_findings
from sidemesh.analyze.traffic import TrafficConfig, traffic_findings
from sidemesh.analyze.view import (
    INJECTED_CONTAINERS,
    InjectionView,
    injected_revision,
    is_finished,
    pod_with_kind,
)
from sidemesh.api import names
from sidemesh.inject.webhooks import WebhookEntry
from sidemesh.install.webhooks import is_deactivated, is_injector_configuration, service_reference
from sidemesh.kube.snapshot import ClusterSnapshot, labels_of, metadata, name_of, namespace_of

SYSTEM_NAMESPACES = names.IGNORED_NAMESPACES | {names.CONTROL_PLANE_NAMESPACE}

Scope = set[str] | None  # namespaces to report on; None: all
Analyzer = Callable[[InjectionView, Scope], Iterable[Finding]]


def _in_scope(namespace: str, scope: Scope) -> bool:
    return scope is None or namespace in scope


def _revision_hint(view: InjectionView) -> str:
    return view.revisions[0] if view.revisions else "REVISION"


def restart_hint(pod: Mapping[str, Any]) -> str:
    """The command that recreates this pod through its owner."""
    ns, name = namespace_of(pod), name_of(pod)
    owners = metadata(pod).get("ownerReferences") or []
    owner = owners[0] if owners and isinstance(owners[0], Mapping) else {}
    kind, owner_name = owner.get("kind"), str(owner.get("name", ""))
    if kind == "ReplicaSet" and "pod-template-hash" in labels_of(pod):
        return f"kubectl rollout restart deployment/{owner_name.rsplit('-', 1)[0]} -n {ns}"
    if kind in ("StatefulSet", "DaemonSet"):
        return f"kubectl rollout restart {str(kind).lower()}/{owner_name} -n {ns}"
    return f"kubectl delete pod {name} -n {ns} (and recreate it, if nothing owns it)"


def namespace_labels(view: InjectionView, scope: Scope) -> Iterator[Finding]:
    """IST0102, IST0123, SM0002: how namespaces ask for injection."""
    for ns in view.snapshot.namespaces:
        name, labels = name_of(ns), labels_of(ns)
        if not _in_scope(name, scope):
            continue
        injection, revision = labels.get(names.LABEL_INJECTION), labels.get(names.LABEL_REVISION)
        where = f"Namespace {name}"
        if injection is not None and revision is not None:
            yield Finding(
                codes.NAMESPACE_MULTIPLE_INJECTION_LABELS, where,
                f"the namespace has both {names.LABEL_INJECTION}={injection} and "
                f"{names.LABEL_REVISION}={revision}; {names.LABEL_INJECTION} wins and the "
                "revision label is ignored",
                f"keep one: kubectl label namespace {name} {names.LABEL_INJECTION}- "
                f"{names.LABEL_REVISION}={revision} --overwrite",
            )  # fmt: skip
        elif injection is None and revision is None and name not in SYSTEM_NAMESPACES:
            yield Finding(
                codes.NAMESPACE_NOT_INJECTED, where,
                "the namespace is not enabled for sidecar injection",
                f"kubectl label namespace {name} {names.LABEL_REVISION}={_revision_hint(view)} "
                f"(revisions: kubectl -n istio-system get pods -l app=istiod --show-labels), "
                f"or label it {names.LABEL_INJECTION}=disabled if that is deliberate",
            )  # fmt: skip
        elif (
            revision is not None and injection is None and view.namespace_match(name).entry is None
        ):
            yield Finding(
                codes.NAMESPACE_REVISION_NOT_INSTALLED, where,
                f"{names.LABEL_REVISION}={revision} names no installed revision or tag, so "
                "no pod here is injected",
                f"use an installed revision ({', '.join(view.revisions) or 'none installed'}) "
                f"or create the tag: sidemesh tag set {revision} --revision "
                f"{_revision_hint(view)}",
            )  # fmt: skip


def pod_injection(view: InjectionView, scope: Scope) -> Iterator[Finding]:
    """IST0103 and SM0001: pods whose sidecar does not match what their namespace selects."""
    for pod in view.snapshot.pods_in(scope):
        if is_finished(pod):
            continue
        expectation = view.expect(pod_with_kind(pod))
        if expectation is None or expectation.revision is None:
            continue
        ns, name = namespace_of(pod), name_of(pod)
        wanted = expectation.revision
        current = injected_revision(pod)
        if current is None:
            yield Finding(
                codes.POD_MISSING_PROXY, f"Pod {ns}/{name}",
                f"the pod has no {names.CONTAINER_PROXY} container, but it would be injected "
                f"by revision {wanted} if created now (it predates the namespace's label, or "
                "the webhook was unavailable)",
                f"restart it: {restart_hint(pod)}",
            )  # fmt: skip
        elif current != wanted:
            yield Finding(
                codes.POD_REVISION_OUTDATED, f"Pod {ns}/{name}",
                f"the pod's sidecar was injected by revision {current}, but its namespace now "
                f"selects revision {wanted}",
                f"restart it to move to {wanted}: {restart_hint(pod)}",
            )  # fmt: skip


def application_uid(view: InjectionView, scope: Scope) -> Iterator[Finding]:
    """IST0144: traffic from uid 1337 is never captured, so an app running as it bypasses
    the sidecar. Only pods that have a sidecar, or would get one if created now, are checked:
    without one nothing is captured, so the control plane's own pods (opted out, running as
    1337 like istiod) and any other opted-out pod are not findings."""
    for pod in view.snapshot.pods_in(scope):
        if injected_revision(pod) is None:
            expectation = view.expect(pod_with_kind(pod))
            if expectation is None or expectation.revision is None:
                continue
        spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        pod_context = spec.get("securityContext") or {}
        pod_uid = pod_context.get("runAsUser") if isinstance(pod_context, Mapping) else None
        for container in spec.get("containers") or []:
            if not isinstance(container, Mapping) or container.get("name") in INJECTED_CONTAINERS:
                continue
            context = container.get("securityContext") or {}
            uid = context.get("runAsUser", pod_uid) if isinstance(context, Mapping) else pod_uid
            if uid == names.PROXY_UID:
                yield Finding(
                    codes.INVALID_APPLICATION_UID,
                    f"Pod {namespace_of(pod)}/{name_of(pod)}",
                    f"container {container.get('name')} runs as uid {names.PROXY_UID}, the "
                    "proxy's uid: its traffic is never captured and bypasses the mesh",
                    "set securityContext.runAsUser of the container (or pod) to another uid",
                )


def webhook_services(view: InjectionView, scope: Scope) -> Iterator[Finding]:
    """IST0139: a webhook calling a Service that does not exist fails every pod it selects."""
    for configuration in view.snapshot.webhook_configurations:
        if not is_injector_configuration(configuration) or is_deactivated(configuration):
            continue
        name = name_of(configuration)
        for item in configuration.get("webhooks") or []:
            reference = service_reference(item) if isinstance(item, Mapping) else None
            if reference is None or view.snapshot.has_service(*reference):
                continue
            policy = item.get("failurePolicy", "Fail")
            consequence = (
                "every pod it selects is rejected" if policy == "Fail"
                else "pods it selects are created without a sidecar"
            )  # fmt: skip
            yield Finding(
                codes.INVALID_WEBHOOK, f"MutatingWebhookConfiguration {name}",
                f"webhook {item.get('name')} calls Service {reference[0]}/{reference[1]}, "
                f"which does not exist; with failurePolicy {policy} {consequence}",
                "install the revision it belongs to (sidemesh install --revision REV), or "
                "remove it (sidemesh tag remove TAG / sidemesh uninstall --revision REV)",
            )  # fmt: skip
            break
    for configuration_name, problem in view.live.problems:
        yield Finding(
            codes.INVALID_WEBHOOK, f"MutatingWebhookConfiguration {configuration_name}",
            problem, "fix the selector, or reinstall: sidemesh install --revision REV",
        )  # fmt: skip


def _label_samples(entries: Iterable[WebhookEntry], namespace: bool) -> list[dict[str, str]]:
    samples: list[dict[str, str]] = [{}]
    for entry in entries:
        selector = entry.namespace_selector if namespace else entry.object_selector
        for requirement in selector.requirements():
            if requirement.operator == "In":
                samples += [{requirement.key: v} for v in requirement.values]
    unique = {tuple(sorted(s.items())): s for s in samples}
    return list(unique.values())


def overlapping_webhooks(view: InjectionView, scope: Scope) -> Iterator[Finding]:
    """IST0139: two configurations that would both inject one pod (stacked sidecars)."""
    entries = view.entries
    cases: list[tuple[dict[str, str], dict[str, str], str]] = [
        (ns_labels, pod_labels, "")
        for ns_labels, pod_labels in itertools.product(
            _label_samples(entries, True), _label_samples(entries, False)
        )
    ]
    for pod in view.snapshot.pods:
        ns = namespace_of(pod)
        cases.append(
            (view.snapshot.namespace_labels(ns), labels_of(pod), f"Pod {ns}/{name_of(pod)}")
        )
    reported: set[tuple[str, ...]] = set()
    for ns_labels, pod_labels, example in cases:
        matched = sorted({e.configuration for e in entries if e.matches(ns_labels, pod_labels)})
        if len(matched) < 2 or tuple(matched) in reported:
            continue
        reported.add(tuple(matched))
        shown = example or (
            f"a pod labelled {pod_labels or '{}'} in a namespace labelled {ns_labels or '{}'}"
        )
        yield Finding(
            codes.INVALID_WEBHOOK, f"MutatingWebhookConfiguration {matched[0]}",
            f"webhook configurations {', '.join(matched)} would all inject {shown}: the pod "
            "would get two sidecars",
            "remove the duplicate: a tag must not share a revision's name "
            "(sidemesh tag remove TAG), and only one of the default revision and a default "
            "tag may serve istio-injection=enabled (sidemesh tag set default ...)",
        )  # fmt: skip


ANALYZERS: tuple[Analyzer, ...] = (
    namespace_labels,
    pod_injection,
    application_uid,
    webhook_services,
    overlapping_webhooks,
)


def analyze(
    snapshot: ClusterSnapshot,
    *,
    namespaces: Scope = None,
    traffic: TrafficConfig | None = None,
    security: SecurityConfig | None = None,
) -> list[Finding]:
    """Every finding, most severe first. Webhook findings are cluster-wide whatever the scope.
    With `traffic`, also the traffic configuration's (the snapshot's pods are those of
    `namespaces`)."""
    view = InjectionView(snapshot)
    found = [f for analyzer in ANALYZERS for f in analyzer(view, namespaces)]
    if traffic is not None:
        found += traffic_findings(
            traffic, namespaces=namespaces, pods=snapshot.pods, pod_namespaces=namespaces
        )
    if security is not None:
        found += security_findings(
            security, namespaces=namespaces, pods=snapshot.pods, pod_namespaces=namespaces
        )
    return sorted(found, key=Finding.sort_key)
