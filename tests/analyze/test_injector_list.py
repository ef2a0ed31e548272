"""`injector list` over crafted clusters: namespaces, their webhook and revision, pod states."""

from __future__ import annotations

from cluster_fixtures import SYSTEM, cluster, namespace, pod, revision, tag

from sidemesh.analyze.injector_list import injector_list


def test_namespaces_webhooks_revisions_and_pod_states() -> None:
    snapshot = cluster(
        *SYSTEM, revision("blue"), revision("green"), tag("prod", "green"),
        namespace("shop", rev="prod"),
        pod("shop", "fresh", sidecar="green"),
        pod("shop", "stale", sidecar="blue"),
        pod("shop", "bare"),
        pod("shop", "opted-out", labels={"sidecar.istio.io/inject": "false"}),
        namespace("blue-ns", rev="blue"), pod("blue-ns", "a", sidecar="blue"),
        namespace("off", injection="disabled"), pod("off", "leftover", sidecar="blue"),
        namespace("plain"), pod("plain", "x"),
    )  # fmt: skip
    rows = {r.namespace: r for r in injector_list(snapshot)}
    assert set(rows) == {"shop", "blue-ns"}
    shop = rows["shop"]
    assert (shop.webhook, shop.revision, shop.tag) == (
        "istio-revision-tag-prod/rev.namespace.sidecar-injector.istio.io", "green", "prod"
    )  # fmt: skip
    assert {p.name: p.state for p in shop.pods} == {
        "fresh": "up-to-date", "stale": "outdated", "bare": "missing"
    }  # fmt: skip
    assert (shop.count("up-to-date"), shop.count("outdated"), shop.count("missing")) == (1, 1, 1)
    stale = next(p for p in shop.pods if p.name == "stale")
    assert (stale.injected_revision, stale.expected_revision) == ("blue", "green")
    assert rows["blue-ns"].as_dict()["upToDate"] == 1


def test_default_injection_label() -> None:
    snapshot = cluster(*SYSTEM, revision("default"), namespace("legacy", injection="enabled"),
                       pod("legacy", "p", sidecar="default"))  # fmt: skip
    (row,) = injector_list(snapshot)
    assert row.webhook == "istio-sidecar-injector/namespace.sidecar-injector.istio.io"
    assert row.revision == "default" and row.count("up-to-date") == 1


def test_nothing_enabled() -> None:
    assert injector_list(cluster(*SYSTEM, revision("blue"), namespace("plain"))) == []
