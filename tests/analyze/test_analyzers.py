"""Analyzers over crafted clusters: each problem fires its code, healthy clusters are silent."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_fixtures import SYSTEM, cluster, namespace, pod, revision, tag

from sidemesh.analyze.analyzers import analyze, restart_hint
from sidemesh.kube.snapshot import ClusterSnapshot

REV = "asm-173-3"


def _healthy() -> list[dict[str, Any]]:
    return [
        *SYSTEM,
        revision(REV),
        namespace("shop", rev=REV),
        pod("shop", "web-1", sidecar=REV, owner=("ReplicaSet", "web-5788d57586")),
        pod("shop", "batch", labels={"sidecar.istio.io/inject": "false"}),  # opted out
        pod("shop", "node-agent", host_network=True),  # never injected
        pod("shop", "done", phase="Succeeded"),  # finished pods are history
        namespace("legacy", injection="disabled"),
        pod("legacy", "old"),
        pod(
            "istio-system",
            "istiod-x",
            labels={"app": "istiod", "istio.io/rev": REV, "sidecar.istio.io/inject": "false"},
        ),
    ]


def _codes(snapshot: ClusterSnapshot, **kwargs: Any) -> list[tuple[str, str]]:
    return [(f.code.code, f.object) for f in analyze(snapshot, **kwargs)]


def test_healthy_cluster_is_silent() -> None:
    assert analyze(cluster(*_healthy())) == []


def test_healthy_cluster_with_tags_and_two_revisions_is_silent() -> None:
    snapshot = cluster(
        *SYSTEM, revision("blue"), revision("green"), tag("prod", "green"),
        revision("default", default_tag_exists=True), tag("default", "blue"),
        namespace("a", rev="prod"), pod("a", "p", sidecar="green"),
        namespace("b", injection="enabled"), pod("b", "p", sidecar="blue"),
        namespace("c", rev="default"), pod("c", "p", sidecar="blue"),
        namespace("d", rev="blue"), pod("d", "p", sidecar="blue"),
    )  # fmt: skip
    assert analyze(snapshot) == []


CASES: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]] = [
    ("namespace without injection labels",
     [namespace("plain"), pod("plain", "x")],
     [("IST0102", "Namespace plain")]),
    ("namespace with both labels",
     [namespace("both", injection="enabled", rev=REV)],
     [("IST0123", "Namespace both")]),
    ("pod missing its proxy in an injected namespace",
     [namespace("late", rev=REV), pod("late", "web-2")],
     [("IST0103", "Pod late/web-2")]),
    ("pod injected by a revision its namespace no longer selects",
     [revision("old"), namespace("moved", rev=REV), pod("moved", "api", sidecar="old")],
     [("SM0001", "Pod moved/api")]),
    ("namespace naming a revision nobody installed",
     [namespace("typo", rev="asm-173-4")],
     [("SM0002", "Namespace typo")]),
    ("webhook pointing at a missing service",
     [revision("gone", service=False)],
     [("IST0139", "MutatingWebhookConfiguration istio-sidecar-injector-gone")]),
    ("tag named like a revision: two webhooks inject one pod",
     [revision("blue"), tag("blue", REV)],
     [("IST0139", "MutatingWebhookConfiguration istio-revision-tag-blue")]),
    ("default revision and default tag both active",
     [revision("default"), tag("default", REV)],
     [("IST0139", "MutatingWebhookConfiguration istio-revision-tag-default")]),
    ("app container running as the proxy uid",
     [pod("shop", "root-ish", sidecar=REV, run_as=1337)],
     [("IST0144", "Pod shop/root-ish")]),
    ("pod-level uid 1337 inherited by the app container",
     [pod("shop", "inherits", sidecar=REV, pod_run_as=1337)],
     [("IST0144", "Pod shop/inherits")]),
    ("uid 1337 in a pod that would be injected if restarted",
     [namespace("late-uid", rev=REV), pod("late-uid", "web", run_as=1337)],
     [("IST0103", "Pod late-uid/web"), ("IST0144", "Pod late-uid/web")]),
    ("the control plane's own pod: opted out, no sidecar, uid 1337",
     [pod("istio-system", "istiod-x", run_as=1337,
          labels={"app": "istiod", "istio.io/rev": REV, "sidecar.istio.io/inject": "false"})],
     []),
    ("an opted-out pod in an injected namespace",
     [namespace("optout", rev=REV),
      pod("optout", "batch", run_as=1337, labels={"sidecar.istio.io/inject": "false"})],
     []),
]  # fmt: skip


@pytest.mark.parametrize(("title", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_problem_fires_its_code(
    title: str, extra: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    found = _codes(cluster(*_healthy(), *extra))
    assert found == expected


def test_every_finding_says_what_to_do() -> None:
    snapshot = cluster(*_healthy(), *(part for _, extra, _ in CASES for part in extra))
    found = analyze(snapshot)
    assert {f.code.code for f in found} == {
        "IST0102", "IST0103", "IST0123", "IST0139", "IST0144", "SM0001", "SM0002"
    }  # fmt: skip
    for f in found:
        assert f.message and f.fix
        assert f.as_dict()["severity"] in ("Error", "Warning", "Info")
    severities = [f.severity.rank for f in found]
    assert severities == sorted(severities)  # most severe first


def test_scope_limits_namespace_findings_but_not_webhook_findings() -> None:
    snapshot = cluster(*_healthy(), namespace("plain"), revision("gone", service=False))
    scoped = _codes(snapshot, namespaces={"shop"})
    assert scoped == [("IST0139", "MutatingWebhookConfiguration istio-sidecar-injector-gone")]


def test_missing_proxy_fix_names_the_owner() -> None:
    late = pod("late", "web-abc12", owner=("ReplicaSet", "web-6d4cf56db6"))
    snapshot = cluster(*_healthy(), namespace("late", rev=REV), late)
    (finding,) = analyze(snapshot)
    assert "kubectl rollout restart deployment/web -n late" in finding.fix


@pytest.mark.parametrize(
    ("owner", "hint"),
    [
        (("ReplicaSet", "api-7f9c"), "kubectl rollout restart deployment/api -n ns"),
        (("StatefulSet", "db"), "kubectl rollout restart statefulset/db -n ns"),
        (("DaemonSet", "agent"), "kubectl rollout restart daemonset/agent -n ns"),
        (None, "kubectl delete pod p -n ns"),
    ],
)
def test_restart_hint(owner: tuple[str, str] | None, hint: str) -> None:
    (p,) = pod("ns", "p", owner=owner)["pods"]
    assert restart_hint(p).startswith(hint)
