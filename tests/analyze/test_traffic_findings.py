"""Traffic configuration findings over crafted configuration: each problem fires Istio's code
on the object at fault, healthy configuration is silent, and the findings come out of
`analyze` next to the injection ones."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_fixtures import SYSTEM, cluster, namespace, pod, revision

from sidemesh.analyze.analyzers import analyze
from sidemesh.analyze.traffic import TrafficConfig, canonical, traffic_findings

REV = "asm-173-3"


def service(ns: str, name: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec = {"ports": [{"port": 80}], **({"selector": selector} if selector else {})}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


def vs(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


def dr(ns: str, name: str, host: str, subsets: dict[str, dict[str, str]]) -> dict[str, Any]:
    listed = [{"name": n, "labels": labels} for n, labels in subsets.items()]
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": host, "subsets": listed}}  # fmt: skip


def se(ns: str, name: str, hosts: list[str], resolution: str = "DNS") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": hosts, "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                     "resolution": resolution, "location": "MESH_EXTERNAL"}}  # fmt: skip


def to(host: str, subset: str | None = None, weight: int = 0) -> dict[str, Any]:
    destination = {"host": host, **({"subset": subset} if subset else {})}
    return {"destination": destination, **({"weight": weight} if weight else {})}


SERVICES = (service("shop", "reviews", {"app": "reviews"}), service("shop", "ratings"))
POD_PARTS = (
    pod("shop", "reviews-v1", labels={"app": "reviews", "version": "v1"}),
    pod("shop", "reviews-v2", labels={"app": "reviews", "version": "v2"}),
    pod("shop", "old-v3", labels={"app": "reviews", "version": "v3"}, phase="Succeeded"),
    pod("shop", "stray-v3", labels={"app": "other", "version": "v3"}),
)
PODS = tuple(part["pods"][0] for part in POD_PARTS)
DR = dr("shop", "reviews", "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}})
CANARY = vs("shop", "reviews", {"hosts": ["reviews"], "http": [
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("reviews", "v2")]},
    {"route": [to("reviews", "v1", 90), to("reviews.shop.svc.cluster.local", "v2", 10)],
     "mirror": {"host": "ratings"}},
]})  # fmt: skip
EXTERNAL = vs(
    "shop",
    "payments",
    {
        "hosts": ["api.payments.example"],
        "tls": [
            {
                "match": [{"sniHosts": ["api.payments.example"]}],
                "route": [to("api.payments.example")],
            }
        ],
    },
)


def findings(*objects: dict[str, Any], scope: set[str] | None = None) -> list[tuple[str, str]]:
    kinds = {"VirtualService": [], "DestinationRule": [], "ServiceEntry": [], "Service": []}
    for obj in objects:
        kinds[obj["kind"]].append(obj)
    config = TrafficConfig(
        virtual_services=tuple(kinds["VirtualService"]),
        destination_rules=tuple(kinds["DestinationRule"]),
        service_entries=tuple(kinds["ServiceEntry"]),
        services=(*SERVICES, *kinds["Service"]),
    )
    found = traffic_findings(config, namespaces=scope, pods=PODS, pod_namespaces=None)
    return [(f.code.code, f.object) for f in found]


def test_healthy_configuration_is_silent() -> None:
    assert findings(CANARY, DR, EXTERNAL, se("shop", "payments", ["api.payments.example"])) == []


CASES: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]] = [
    ("route to a subset no DestinationRule defines",
     [vs("shop", "reviews", {"hosts": ["reviews"], "http": [{"route": [to("reviews", "v3")]}]}),
      DR],
     [("IST0101", "VirtualService shop/reviews")]),
    ("route to a subset without any DestinationRule",
     [vs("shop", "reviews", {"hosts": ["reviews"], "http": [{"route": [to("reviews", "v1")]}]})],
     [("IST0101", "VirtualService shop/reviews")]),
    ("route to a host the mesh does not know",
     [vs("shop", "typo", {"hosts": ["reviews"], "http": [{"route": [to("reveiws")]}]})],
     [("IST0101", "VirtualService shop/typo")]),
    ("external host without a ServiceEntry", [EXTERNAL],
     [("IST0101", "VirtualService shop/payments")]),
    ("a wildcard ServiceEntry knows the host",
     [EXTERNAL, se("shop", "all-payments", ["*.payments.example"], "NONE")], []),
    ("a Service of another namespace by its short DNS name",
     [vs("web", "front", {"hosts": ["front"], "http": [{"route": [to("reviews.shop")]}]}),
      service("web", "front")], []),
    ("a short name means the VirtualService's own namespace",
     [vs("web", "front", {"hosts": ["front"], "http": [{"route": [to("reviews")]}]}),
      service("web", "front")],
     [("IST0101", "VirtualService web/front")]),
    ("a DestinationRule of a wildcard host defines the subset",
     [vs("shop", "reviews", {"hosts": ["reviews"], "http": [{"route": [to("reviews", "v1")]}]}),
      dr("shop", "all", "*.shop.svc.cluster.local", {"v1": {"version": "v1"}})], []),
    ("two VirtualServices for one host on the mesh gateway",
     [CANARY, DR, vs("shop", "reviews-2", {"hosts": ["reviews.shop.svc.cluster.local"],
                                           "http": [{"route": [to("reviews", "v1")]}]})],
     [("IST0109", "VirtualService shop/reviews"), ("IST0109", "VirtualService shop/reviews-2")]),
    ("one of them bound to a gateway only: no conflict",
     [CANARY, DR, vs("shop", "edge", {"hosts": ["reviews"], "gateways": ["shop/ingress"],
                                      "http": [{"route": [to("reviews", "v1")]}]})], []),
    ("a rule after a catch-all",
     [vs("shop", "order", {"hosts": ["reviews"], "http": [
         {"route": [to("reviews")]},
         {"match": [{"uri": {"prefix": "/v2"}}], "route": [to("reviews")]}]})],
     [("IST0130", "VirtualService shop/order")]),
    ("a subset no running pod of the service carries",
     [dr("shop", "reviews", "reviews", {"v1": {"version": "v1"}, "v3": {"version": "v3"}})],
     [("IST0173", "DestinationRule shop/reviews")]),
    ("a stored object validation refuses",
     [vs("shop", "broken", {"hosts": ["reviews"], "http": [
         {"route": [to("reviews")], "retries": {"attempts": 2, "retryOn": "sometimes"}}]})],
     [("IST0106", "VirtualService shop/broken")]),
]  # fmt: skip


@pytest.mark.parametrize(("objects", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_problem_fires_its_code(
    objects: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    assert sorted(findings(*objects)) == sorted(expected)


def test_messages_name_the_field_and_the_reference() -> None:
    config = TrafficConfig(
        virtual_services=(
            vs("shop", "r", {"hosts": ["reviews"], "http": [{"route": [to("reviews", "v3")]}]}),
        ),
        destination_rules=(DR,),
        services=SERVICES,
    )
    [finding] = traffic_findings(config, namespaces=None, pods=PODS, pod_namespaces=None)
    assert finding.code.name == "ReferencedResourceNotFound"
    assert finding.message.startswith(
        'Referenced host+subset in destinationrule not found: "reviews+v3" '
        "(spec.http[0].route[0].destination.subset)"
    )
    assert "subset v3" in finding.fix


def test_scope_limits_findings_to_its_namespaces() -> None:
    typo = vs("web", "typo", {"hosts": ["x"], "http": [{"route": [to("nowhere")]}]})
    assert findings(typo, scope={"shop"}) == []
    assert findings(typo, scope={"web"}) == [("IST0101", "VirtualService web/typo")]


def test_subsets_are_only_checked_where_pods_were_loaded() -> None:
    config = TrafficConfig(
        destination_rules=(dr("shop", "reviews", "reviews", {"v9": {"version": "v9"}}),),
        services=SERVICES,
    )
    assert traffic_findings(config, namespaces=None, pods=(), pod_namespaces={"web"}) == []


@pytest.mark.parametrize(
    ("host", "namespace", "expected"),
    [
        ("reviews", "shop", "reviews.shop.svc.cluster.local"),
        ("reviews.shop", "web", "reviews.shop.svc.cluster.local"),
        ("reviews.shop.svc", "web", "reviews.shop.svc.cluster.local"),
        ("reviews.shop.svc.cluster.local", "web", "reviews.shop.svc.cluster.local"),
        ("api.payments.example", "web", "api.payments.example"),
        ("*.shop.svc.cluster.local", "web", "*.shop.svc.cluster.local"),
    ],
)
def test_canonical_hosts(host: str, namespace: str, expected: str) -> None:
    assert canonical(host, namespace) == expected


def test_analyze_reports_traffic_next_to_injection() -> None:
    snapshot = cluster(*SYSTEM, revision(REV), namespace("shop", rev=REV), *POD_PARTS)
    typo = vs("shop", "typo", {"hosts": ["reviews"], "http": [{"route": [to("reveiws")]}]})
    found = analyze(
        snapshot,
        namespaces={"shop"},
        traffic=TrafficConfig(virtual_services=(typo,), services=SERVICES),
    )
    codes = [(f.code.code, f.object) for f in found]
    assert ("IST0101", "VirtualService shop/typo") in codes
    assert any(code == "IST0103" for code, _ in codes)  # the pods have no sidecar
    assert codes[0] == ("IST0101", "VirtualService shop/typo")  # errors first
