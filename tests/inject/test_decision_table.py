"""Would this pod be injected, by which revision, and why: both layers end to end.

Layer 1 is the API server choosing a webhook from namespace and pod *labels*
(`match_webhooks` over Istio's selector layout); layer 2 is the chosen revision's policy
(`should_inject`). Each row reads: installed webhooks, namespace, pod -> outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sidemesh.api.config import InjectorConfig
from sidemesh.api.selectors import LabelSelector
from sidemesh.inject.check import namespace_warnings
from sidemesh.inject.decision import should_inject
from sidemesh.inject.webhooks import WebhookEntry, match_webhooks, revision_webhooks, tag_webhooks

DEFAULT = revision_webhooks("default", default=True)
CANARY_ONLY = revision_webhooks("canary")  # a revision-only install: no default revision
DEFAULT_AND_CANARY = DEFAULT + CANARY_ONLY
DEFAULT_TAG_ON_CANARY = CANARY_ONLY + tag_webhooks("default", "canary")
TAGS = (
    revision_webhooks("1-20")
    + revision_webhooks("1-21")
    + tag_webhooks("stable", "1-20")
    + tag_webhooks("prod", "1-21")
)
# The revision-less webhook left active next to a `default` tag: both select one pod.
CONFLICTING = DEFAULT + tag_webhooks("default", "canary")

REV, INJECTION, INJECT = "istio.io/rev", "istio-injection", "sidecar.istio.io/inject"
NO_WEBHOOK = "no-webhook"


@dataclass(frozen=True)
class Row:
    injected: bool
    revision: str | None
    code: str  # the decision code, or NO_WEBHOOK when the API server calls no injector
    reason: str = ""  # a substring the reason must contain
    install: list[WebhookEntry] = field(default_factory=lambda: DEFAULT)
    namespace: str = "demo"
    ns_labels: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    host_network: bool = False
    config: InjectorConfig = field(default_factory=InjectorConfig)
    manual: bool = False
    conflict: bool = False


def row(id: str, **kwargs: Any) -> Any:
    return pytest.param(Row(**kwargs), id=id)


def selectors(*labels: dict[str, str]) -> tuple[LabelSelector, ...]:
    return tuple(LabelSelector(match_labels=m) for m in labels)


DISABLED = InjectorConfig(policy="disabled")
NEVER_DB = InjectorConfig(never_inject_selector=selectors({"tier": "db"}))
ALWAYS_WEB = InjectorConfig(policy="disabled", always_inject_selector=selectors({"tier": "web"}))
NEVER_AND_ALWAYS = InjectorConfig(
    policy="disabled",
    never_inject_selector=selectors({"tier": "web"}),
    always_inject_selector=selectors({"tier": "web"}),
)
EMPTY_SELECTORS = InjectorConfig(
    policy="disabled", always_inject_selector=selectors({}), never_inject_selector=()
)
EMPTY_NEVER = InjectorConfig(never_inject_selector=selectors({}))

# One row per line reads as a table; keep the formatter away from it.
# fmt: off
ROWS = [
    # --- namespace labels -------------------------------------------------------------------
    row("ns-rev-default", ns_labels={REV: "default"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("ns-injection-enabled", ns_labels={INJECTION: "enabled"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("ns-injection-disabled", ns_labels={INJECTION: "disabled"}, injected=False, revision=None, code=NO_WEBHOOK, reason="istio-injection=disabled disables"),  # noqa: E501
    row("ns-injection-other-value", ns_labels={INJECTION: "true"}, injected=False, revision=None, code=NO_WEBHOOK, reason="istio-injection=true"),  # noqa: E501
    row("ns-unlabelled", injected=False, revision=None, code=NO_WEBHOOK, reason="injection is off by default"),  # noqa: E501
    row("ns-rev-canary", install=DEFAULT_AND_CANARY, ns_labels={REV: "canary"}, injected=True, revision="canary", code="policy-enabled"),  # noqa: E501
    row("ns-injection-beats-rev", install=DEFAULT_AND_CANARY, ns_labels={INJECTION: "enabled", REV: "canary"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("ns-disabled-beats-rev", install=DEFAULT_AND_CANARY, ns_labels={INJECTION: "disabled", REV: "canary"}, injected=False, revision=None, code=NO_WEBHOOK, reason="disables injection"),  # noqa: E501
    row("ns-rev-not-installed", install=CANARY_ONLY, ns_labels={REV: "other"}, injected=False, revision=None, code=NO_WEBHOOK, reason="istio.io/rev=other names no installed"),  # noqa: E501
    row("ns-injection-enabled-without-default", install=CANARY_ONLY, ns_labels={INJECTION: "enabled"}, injected=False, revision=None, code=NO_WEBHOOK, reason="no default revision"),  # noqa: E501
    # --- namespaces the injector never touches (istio-system is not one of them) -------------
    row("kube-system", namespace="kube-system", ns_labels={INJECTION: "enabled"}, injected=False, revision=None, code="ignored-namespace"),  # noqa: E501
    row("kube-public", namespace="kube-public", ns_labels={REV: "default"}, injected=False, revision=None, code="ignored-namespace"),  # noqa: E501
    row("kube-node-lease", namespace="kube-node-lease", ns_labels={INJECTION: "enabled"}, injected=False, revision=None, code="ignored-namespace"),  # noqa: E501
    row("local-path-storage", namespace="local-path-storage", ns_labels={INJECTION: "enabled"}, injected=False, revision=None, code="ignored-namespace"),  # noqa: E501
    row("ignored-namespace-beats-opt-in", namespace="kube-system", labels={INJECT: "true"}, injected=False, revision=None, code="ignored-namespace"),  # noqa: E501
    row("istio-system-is-injected", namespace="istio-system", ns_labels={INJECTION: "enabled"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    # --- pod labels ---------------------------------------------------------------------------
    row("pod-rev-in-unlabelled-ns", install=DEFAULT_AND_CANARY, labels={REV: "canary"}, injected=True, revision="canary", code="policy-enabled"),  # noqa: E501
    row("pod-rev-ignored-under-ns-rev", install=DEFAULT_AND_CANARY, ns_labels={REV: "default"}, labels={REV: "canary"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("pod-rev-ignored-under-ns-injection", install=DEFAULT_AND_CANARY, ns_labels={INJECTION: "enabled"}, labels={REV: "canary"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("pod-rev-under-ns-disabled", install=DEFAULT_AND_CANARY, ns_labels={INJECTION: "disabled"}, labels={REV: "canary"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    row("pod-rev-not-installed", install=CANARY_ONLY, labels={REV: "other"}, injected=False, revision=None, code=NO_WEBHOOK, reason="pod label istio.io/rev=other"),  # noqa: E501
    row("opt-out-under-ns-rev", ns_labels={REV: "default"}, labels={INJECT: "false"}, injected=False, revision=None, code=NO_WEBHOOK, reason="opts it out"),  # noqa: E501
    row("opt-out-under-ns-injection", ns_labels={INJECTION: "enabled"}, labels={INJECT: "false"}, injected=False, revision=None, code=NO_WEBHOOK, reason="opts it out"),  # noqa: E501
    row("opt-out-with-pod-rev", install=DEFAULT_AND_CANARY, labels={REV: "canary", INJECT: "false"}, injected=False, revision=None, code=NO_WEBHOOK, reason="opts it out"),  # noqa: E501
    row("opt-in-unlabelled-ns", labels={INJECT: "true"}, injected=True, revision="default", code="pod-opt-in"),  # noqa: E501
    row("opt-in-without-default-revision", install=CANARY_ONLY, labels={INJECT: "true"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    row("opt-in-with-pod-rev", install=DEFAULT_AND_CANARY, labels={INJECT: "true", REV: "canary"}, injected=True, revision="canary", code="pod-opt-in"),  # noqa: E501
    row("opt-in-under-ns-disabled", ns_labels={INJECTION: "disabled"}, labels={INJECT: "true"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    # --- the annotation: invisible to selectors, honoured (below the label) by the policy -----
    row("annotation-true-cannot-opt-in", annotations={INJECT: "true"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    row("annotation-false-opts-out", ns_labels={REV: "default"}, annotations={INJECT: "false"}, injected=False, revision=None, code="pod-opt-out", reason="annotation sidecar.istio.io/inject=false"),  # noqa: E501
    row("annotation-true-under-policy-disabled", ns_labels={REV: "default"}, annotations={INJECT: "true"}, config=DISABLED, injected=True, revision="default", code="pod-opt-in"),  # noqa: E501
    row("label-true-beats-annotation-false", ns_labels={REV: "default"}, labels={INJECT: "true"}, annotations={INJECT: "false"}, injected=True, revision="default", code="pod-opt-in", reason="label sidecar.istio.io/inject=true"),  # noqa: E501
    row("label-false-beats-annotation-true", ns_labels={REV: "default"}, labels={INJECT: "false"}, annotations={INJECT: "true"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    # --- only exactly "true"/"false" count; anything else falls to the default ---------------
    row("label-True-is-not-true", ns_labels={REV: "default"}, labels={INJECT: "True"}, config=DISABLED, injected=False, revision=None, code="policy-disabled"),  # noqa: E501
    row("label-False-is-not-false", ns_labels={REV: "default"}, labels={INJECT: "False"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("label-yes-falls-to-default", ns_labels={REV: "default"}, labels={INJECT: "yes"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("annotation-no-falls-to-default", ns_labels={REV: "default"}, annotations={INJECT: "no"}, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    # --- hostNetwork ---------------------------------------------------------------------------
    row("host-network", ns_labels={REV: "default"}, host_network=True, injected=False, revision=None, code="host-network"),  # noqa: E501
    row("host-network-beats-opt-in", labels={INJECT: "true"}, host_network=True, injected=False, revision=None, code="host-network"),  # noqa: E501
    # --- injector policy and selectors ---------------------------------------------------------
    row("policy-disabled", ns_labels={REV: "default"}, config=DISABLED, injected=False, revision=None, code="policy-disabled"),  # noqa: E501
    row("policy-disabled-label-true", ns_labels={REV: "default"}, labels={INJECT: "true"}, config=DISABLED, injected=True, revision="default", code="pod-opt-in"),  # noqa: E501
    row("never-selector", ns_labels={REV: "default"}, labels={"tier": "db"}, config=NEVER_DB, injected=False, revision=None, code="never-inject-selector", reason="tier In [db]"),  # noqa: E501
    row("never-selector-no-match", ns_labels={REV: "default"}, labels={"tier": "web"}, config=NEVER_DB, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    row("label-true-beats-never-selector", ns_labels={REV: "default"}, labels={"tier": "db", INJECT: "true"}, config=NEVER_DB, injected=True, revision="default", code="pod-opt-in"),  # noqa: E501
    row("always-selector", ns_labels={REV: "default"}, labels={"tier": "web"}, config=ALWAYS_WEB, injected=True, revision="default", code="always-inject-selector"),  # noqa: E501
    row("never-before-always", ns_labels={REV: "default"}, labels={"tier": "web"}, config=NEVER_AND_ALWAYS, injected=False, revision=None, code="never-inject-selector"),  # noqa: E501
    row("empty-always-selector-matches-nothing", ns_labels={REV: "default"}, labels={"tier": "web"}, config=EMPTY_SELECTORS, injected=False, revision=None, code="policy-disabled"),  # noqa: E501
    row("empty-never-selector-matches-nothing", ns_labels={REV: "default"}, config=EMPTY_NEVER, injected=True, revision="default", code="policy-enabled"),  # noqa: E501
    # --- revision tags -------------------------------------------------------------------------
    row("tag-stable", install=TAGS, ns_labels={REV: "stable"}, injected=True, revision="1-20", code="policy-enabled"),  # noqa: E501
    row("tag-prod", install=TAGS, ns_labels={REV: "prod"}, injected=True, revision="1-21", code="policy-enabled"),  # noqa: E501
    row("tag-on-pod", install=TAGS, labels={REV: "prod"}, injected=True, revision="1-21", code="policy-enabled"),  # noqa: E501
    row("revision-name-still-works-with-tags", install=TAGS, ns_labels={REV: "1-21"}, injected=True, revision="1-21", code="policy-enabled"),  # noqa: E501
    row("no-default-without-default-tag", install=TAGS, ns_labels={INJECTION: "enabled"}, injected=False, revision=None, code=NO_WEBHOOK),  # noqa: E501
    row("default-tag-takes-injection-enabled", install=DEFAULT_TAG_ON_CANARY, ns_labels={INJECTION: "enabled"}, injected=True, revision="canary", code="policy-enabled"),  # noqa: E501
    row("default-tag-takes-pod-opt-in", install=DEFAULT_TAG_ON_CANARY, labels={INJECT: "true"}, injected=True, revision="canary", code="pod-opt-in"),  # noqa: E501
    row("default-tag-answers-rev-default", install=DEFAULT_TAG_ON_CANARY, ns_labels={REV: "default"}, injected=True, revision="canary", code="policy-enabled"),  # noqa: E501
    row("two-configurations-conflict", install=CONFLICTING, ns_labels={INJECTION: "enabled"}, injected=True, revision="default", code="policy-enabled", conflict=True, reason="more than one webhook configuration"),  # noqa: E501
    # --- kube-inject: policy enabled, no selectors, no namespace rules ---------------------------
    row("manual-plain", manual=True, injected=True, revision=None, code="manual"),
    row("manual-label-false", manual=True, labels={INJECT: "false"}, injected=False, revision=None, code="pod-opt-out"),  # noqa: E501
    row("manual-annotation-false", manual=True, annotations={INJECT: "false"}, injected=False, revision=None, code="pod-opt-out"),  # noqa: E501
    row("manual-annotation-true", manual=True, annotations={INJECT: "true"}, injected=True, revision=None, code="pod-opt-in"),  # noqa: E501
    row("manual-host-network", manual=True, host_network=True, injected=False, revision=None, code="host-network"),  # noqa: E501
    row("manual-kube-system", manual=True, namespace="kube-system", injected=True, revision=None, code="manual"),  # noqa: E501
    row("manual-ignores-policy-and-selectors", manual=True, labels={"tier": "db"}, config=InjectorConfig(policy="disabled", never_inject_selector=selectors({"tier": "db"})), injected=True, revision=None, code="manual"),  # noqa: E501
]
# fmt: on


def make_pod(r: Row) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx"}]}
    if r.host_network:
        spec["hostNetwork"] = True
    metadata = {"name": "p", "labels": dict(r.labels), "annotations": dict(r.annotations)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@pytest.mark.parametrize("r", ROWS)
def test_injection_decision(r: Row) -> None:
    pod = make_pod(r)
    if r.manual:
        decision = should_inject(pod, r.namespace, r.config, manual=True)
        assert (decision.inject, decision.code) == (r.injected, r.code), decision.reason
        assert r.reason in decision.reason
        return
    match = match_webhooks(r.install, r.ns_labels, r.labels)
    assert bool(match.conflicts) == r.conflict, match.reason
    if match.entry is None:
        assert (r.injected, r.revision, r.code) == (False, None, NO_WEBHOOK), match.reason
        assert r.reason in match.reason
        return
    assert r.code != NO_WEBHOOK, f"expected no webhook, got {match.reason}"
    decision = should_inject(pod, r.namespace, r.config)
    revision = match.entry.revision if decision.inject else None
    assert (decision.inject, revision, decision.code) == (r.injected, r.revision, r.code), (
        f"{match.reason}; {decision.reason}"
    )
    assert r.reason in f"{match.reason}; {decision.reason}"


def test_table_is_big_enough() -> None:
    assert len(ROWS) >= 40


def test_both_namespace_labels_warn_naming_both() -> None:
    (warning,) = namespace_warnings({INJECTION: "enabled", REV: "canary"})
    assert warning.code == "SM1001"
    assert INJECTION in warning.message and REV in warning.message
    assert namespace_warnings({REV: "canary"}) == []
    assert namespace_warnings({INJECTION: "enabled"}) == []


def test_label_and_annotation_disagreeing_warns() -> None:
    pod = make_pod(Row(True, None, "", labels={INJECT: "true"}, annotations={INJECT: "false"}))
    decision = should_inject(pod, "demo", InjectorConfig())
    assert decision.inject
    assert [w.code for w in decision.warnings] == ["SM1005"]
    assert "annotation" in decision.warnings[0].message and "label" in decision.warnings[0].message


def test_deprecated_annotation_warns() -> None:
    pod = make_pod(Row(True, None, "", annotations={INJECT: "true"}))
    (warning,) = should_inject(pod, "demo", InjectorConfig()).warnings
    assert warning.code == "SM1004" and "deprecated" in warning.message


def test_unrecognised_value_warns() -> None:
    pod = make_pod(Row(True, None, "", labels={INJECT: "yes"}))
    warnings = should_inject(pod, "demo", InjectorConfig()).warnings
    assert [w.code for w in warnings] == ["SM1006"]
    assert 'neither "true" nor "false"' in warnings[0].message


def test_conflicting_configurations_are_named() -> None:
    match = match_webhooks(CONFLICTING, {INJECTION: "enabled"}, {})
    assert {e.configuration for e in match.conflicts} == {
        "istio-sidecar-injector",
        "istio-revision-tag-default",
    }
