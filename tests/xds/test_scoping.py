"""Per-proxy views: Sidecar egress scoping, exportTo, DestinationRule workloadSelector and
VirtualService source matches, evaluated for the proxy that asks. Objects go through the
registries' one builder (so `validate` runs); the cache must agree with the reference."""

from __future__ import annotations

from typing import Any

import pytest
from xds_testkit import to_dict

from sidemesh.api.config import MeshConfig
from sidemesh.xds import generate as gen
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo, parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.scoping import GLOBAL_VIEW, ProxyView, view_of

NAMESPACES = ("shop", "bank", "istio-system")


def proxy(namespace: str, ip: str = "10.1.0.1", **labels: str) -> ProxyInfo:
    return parse_node(f"sidecar~{ip}~p.{namespace}~{namespace}.svc.cluster.local",
                      {"NAMESPACE": namespace, "LABELS": labels})  # fmt: skip


def service(name: str, namespace: str, vip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80}]}}  # fmt: skip


SERVICES = [service("web", "shop", "10.96.0.1"), service("cart", "shop", "10.96.0.2"),
            service("ledger", "bank", "10.96.0.3")]  # fmt: skip


def istio(kind: str, name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def snapshot(*config: dict[str, Any], mode: str = "ALLOW_ANY") -> MeshSnapshot:
    mesh = MeshConfig.model_validate({"outboundTrafficPolicy": {"mode": mode}})
    objects = [*SERVICES, *config]
    return build_snapshot({object_key(o): o for o in objects}, mesh=mesh, version=1)


def listener_names(mesh: MeshSnapshot, who: ProxyInfo) -> set[str]:
    return {m.name for m in gen.generate(mesh, who).listeners} - {"virtualOutbound",
                                                                  "virtualInbound"}  # fmt: skip


def cluster_names(mesh: MeshSnapshot, who: ProxyInfo) -> set[str]:
    return {m.name for m in gen.generate(mesh, who).clusters if m.name.startswith("outbound|")}


def route_names(mesh: MeshSnapshot, who: ProxyInfo, listener: str) -> list[str]:
    found = next(to_dict(m) for m in gen.generate(mesh, who).listeners if m.name == listener)
    manager = found["filter_chains"][0]["filters"][0]["typed_config"]
    return [r.get("name", "") for r in manager["route_config"]["virtual_hosts"][0]["routes"]]


def capture_default(mesh: MeshSnapshot, who: ProxyInfo) -> str:
    capture = next(to_dict(m) for m in gen.generate(mesh, who).listeners
                   if m.name == "virtualOutbound")  # fmt: skip
    name: str = capture["default_filter_chain"]["name"]
    return name


WEB, CART, LEDGER = "10.96.0.1_80", "10.96.0.2_80", "10.96.0.3_80"


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["./*"], {WEB, CART}),
        (["*/*"], {WEB, CART, LEDGER}),
        (["bank/*"], {LEDGER}),
        (["./web.shop.svc.cluster.local"], {WEB}),
        (["*/*.bank.svc.cluster.local"], {LEDGER}),
        (["./*", "bank/ledger.bank.svc.cluster.local"], {WEB, CART, LEDGER}),
        (["~/*"], set()),
        (["shop/cart.shop.svc.cluster.local"], {CART}),
    ],
)
def test_sidecar_egress_hosts_decide_what_a_proxy_receives(
    hosts: list[str], expected: set[str]
) -> None:
    mesh = snapshot(istio("Sidecar", "default", "shop", egress=[{"hosts": hosts}]))
    assert listener_names(mesh, proxy("shop")) == expected
    # ... and only in its own namespace: a bank proxy still sees everything.
    assert listener_names(mesh, proxy("bank")) == {WEB, CART, LEDGER}


def test_which_sidecar_applies() -> None:
    mesh = snapshot(
        istio("Sidecar", "everyone", "istio-system", egress=[{"hosts": ["./*"]}]),
        istio("Sidecar", "shop-wide", "shop", egress=[{"hosts": ["bank/*"]}]),
        istio("Sidecar", "web-only", "shop", workloadSelector={"labels": {"app": "web"}},
              egress=[{"hosts": ["*/*"]}]),
    )  # fmt: skip
    # the workload's own > its namespace's > the root namespace's
    assert listener_names(mesh, proxy("shop", app="web")) == {WEB, CART, LEDGER}
    assert listener_names(mesh, proxy("shop", app="cart")) == {LEDGER}
    assert listener_names(mesh, proxy("bank")) == {LEDGER}  # root's "./*" is bank's own


def test_sidecar_outbound_traffic_policy_overrides_the_mesh() -> None:
    mesh = snapshot(istio("Sidecar", "default", "shop",
                          outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}))  # fmt: skip
    assert capture_default(mesh, proxy("shop")) == "BlackHoleCluster"
    assert capture_default(mesh, proxy("bank")) == "PassthroughCluster"
    relaxed = snapshot(istio("Sidecar", "default", "shop", outboundTrafficPolicy={
        "mode": "ALLOW_ANY"}), mode="REGISTRY_ONLY")  # fmt: skip
    assert capture_default(relaxed, proxy("shop")) == "PassthroughCluster"
    assert capture_default(relaxed, proxy("bank")) == "BlackHoleCluster"


@pytest.mark.parametrize(
    ("export_to", "seen_by"),
    [([], set(NAMESPACES)), (["*"], set(NAMESPACES)), (["."], {"shop"}),
     (["bank"], {"bank"}), (["~"], set())],
)  # fmt: skip
def test_service_entry_export_to(export_to: list[str], seen_by: set[str]) -> None:
    entry = istio("ServiceEntry", "api", "shop", hosts=["api.example.com"], exportTo=export_to,
                  ports=[{"number": 443, "name": "tls", "protocol": "TLS"}],
                  resolution="DNS")  # fmt: skip
    mesh = snapshot(entry)
    for namespace in NAMESPACES:
        seen = "outbound|443||api.example.com" in cluster_names(mesh, proxy(namespace))
        assert seen is (namespace in seen_by), namespace


def test_virtual_service_export_to_and_destination_rule_export_to() -> None:
    route = istio(
        "VirtualService",
        "web",
        "shop",
        hosts=["web"],
        exportTo=["."],
        http=[{"name": "shop-only", "route": [{"destination": {"host": "web"}}]}],
    )
    rule = istio("DestinationRule", "web", "shop", host="web", exportTo=["bank"],
                 subsets=[{"name": "v1", "labels": {"version": "v1"}}])  # fmt: skip
    mesh = snapshot(route, rule)
    assert route_names(mesh, proxy("shop"), WEB) == ["shop-only"]
    assert route_names(mesh, proxy("bank"), WEB) == [""]  # the default route
    assert "outbound|80|v1|web.shop.svc.cluster.local" in cluster_names(mesh, proxy("bank"))
    assert "outbound|80|v1|web.shop.svc.cluster.local" not in cluster_names(mesh, proxy("shop"))


def test_source_labels_and_source_namespace_are_evaluated_for_the_caller() -> None:
    route = istio("VirtualService", "ledger", "bank", hosts=["ledger"], http=[
        {"name": "from-web", "match": [{"sourceLabels": {"app": "web"}}],
         "route": [{"destination": {"host": "ledger"}}]},
        {"name": "from-shop", "match": [{"sourceNamespace": "shop"}],
         "route": [{"destination": {"host": "ledger"}}]},
        {"name": "rest", "route": [{"destination": {"host": "ledger"}}]},
    ])  # fmt: skip
    mesh = snapshot(route)
    assert route_names(mesh, proxy("shop", app="web"), LEDGER) == ["from-web", "from-shop",
                                                                   "rest"]  # fmt: skip
    assert route_names(mesh, proxy("shop", app="cart"), LEDGER) == ["from-shop", "rest"]
    assert route_names(mesh, proxy("bank", app="web"), LEDGER) == ["from-web", "rest"]
    assert route_names(mesh, proxy("bank"), LEDGER) == ["rest"]


def test_destination_rule_workload_selector_applies_to_its_own_namespaces_workloads() -> None:
    def rule(name: str, balancer: str, **extra: Any) -> dict[str, Any]:
        return istio(
            "DestinationRule",
            name,
            "shop",
            host="ledger.bank.svc.cluster.local",
            trafficPolicy={"loadBalancer": {"simple": balancer}},
            **extra,
        )

    mesh = snapshot(
        rule("all", "RANDOM"),
        rule("web", "LEAST_REQUEST", workloadSelector={"matchLabels": {"app": "web"}}),
    )

    def balancer(who: ProxyInfo) -> str:
        cluster = next(to_dict(c) for c in gen.generate(mesh, who).clusters
                       if c.name == "outbound|80||ledger.bank.svc.cluster.local")  # fmt: skip
        return str(cluster.get("lb_policy", "ROUND_ROBIN"))

    assert balancer(proxy("shop", app="web")) == "LEAST_REQUEST"
    assert balancer(proxy("shop", app="cart")) == "RANDOM"
    assert balancer(proxy("bank", app="web")) == "RANDOM"


def test_views_only_hold_what_the_snapshot_makes_relevant() -> None:
    plain = snapshot()
    assert view_of(plain, proxy("shop", app="web")) == GLOBAL_VIEW
    scoped = snapshot(istio("Sidecar", "default", "shop", egress=[{"hosts": ["./*"]}]))
    assert view_of(scoped, proxy("shop", app="web", version="v1")) == ProxyView(
        namespace="shop", sidecar="shop/default")  # fmt: skip
    assert view_of(scoped, proxy("bank")) == ProxyView(namespace="bank")


def test_the_cache_agrees_with_the_reference_and_shares_equal_views() -> None:
    mesh = snapshot(
        istio("Sidecar", "default", "shop", egress=[{"hosts": ["./*"]}],
              outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}),
        istio("VirtualService", "ledger", "bank", hosts=["ledger"], http=[
            {"name": "from-web", "match": [{"sourceLabels": {"app": "web"}}],
             "route": [{"destination": {"host": "ledger"}}]}]),
    )  # fmt: skip
    cache = ResourceCache(mesh)
    callers = [
        proxy("shop", "10.1.0.1", app="web"),
        proxy("bank", "10.1.0.2", app="web"),
        proxy("bank", "10.1.0.3", app="cart"),
        proxy("bank", "10.1.0.4", app="cart"),
    ]
    for who in callers:
        reference = gen.generate(mesh, who)
        cached = cache.resources_for(who)
        for type_url, messages in ((TYPE_LISTENER, reference.listeners),
                                   (TYPE_CLUSTER, reference.clusters)):  # fmt: skip
            assert {m.name: m.SerializeToString() for m in messages} == {
                n: r.body for n, r in cached[type_url].resources.items()}, who  # fmt: skip
        assert {m.cluster_name for m in reference.load_assignments} == set(
            cached[TYPE_ENDPOINT].resources)  # fmt: skip
    third, fourth = (cache.resources_for(p) for p in callers[2:])
    assert third[TYPE_CLUSTER].base is fourth[TYPE_CLUSTER].base  # one view, one shared base


def test_a_sidecar_shrinks_what_a_proxy_receives() -> None:
    many = [service(f"s{i}", "bank", f"10.96.1.{i}") for i in range(1, 41)]
    objects = [*SERVICES, *many,
               istio("Sidecar", "default", "shop", egress=[{"hosts": ["./*"]}])]  # fmt: skip
    mesh = build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1)
    cache = ResourceCache(mesh)

    def size(who: ProxyInfo) -> int:
        return sum(len(r.body) for typed in cache.resources_for(who).values()
                   for r in typed.resources.values())  # fmt: skip

    assert size(proxy("shop")) * 5 < size(proxy("bank"))


def test_a_kubernetes_service_exported_by_annotation() -> None:
    private = {**service("vault", "bank", "10.96.0.9"), "metadata": {
        "name": "vault", "namespace": "bank",
        "annotations": {"networking.istio.io/exportTo": "., istio-system"}}}  # fmt: skip
    mesh = snapshot(private)
    for namespace, seen in (("bank", True), ("istio-system", True), ("shop", False)):
        assert ("10.96.0.9_80" in listener_names(mesh, proxy(namespace))) is seen, namespace


def test_a_destination_rule_selects_workloads_with_match_labels_only() -> None:
    errors: list[str] = []
    wrong = istio(
        "DestinationRule", "web", "shop", host="web", workloadSelector={"labels": {"app": "web"}}
    )  # Sidecar's spelling
    build_snapshot({object_key(wrong): wrong}, mesh=MeshConfig(), version=1, errors=errors)
    assert errors == ["DestinationRule shop/web: spec.workloadSelector.labels: unknown field"]
