"""A Sidecar's egress scope also shows the services the routes of the VirtualServices it
imports send traffic to (Istio's `SidecarScope` rule, `scoping_destinations`): one truth table
of what a proxy in `shop` with a Sidecar sees, then the clusters the generators build from it.
Objects go through the registries' one builder (so `validate` runs)."""

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
from sidemesh.xds.resource_names import TYPE_CLUSTER
from sidemesh.xds.scoping import Scope, view_of
from sidemesh.xds.scoping_destinations import hosts_overlap

REVIEWS = "reviews.shop.svc.cluster.local"
REVIEWS_V2 = "reviews-v2.other.svc.cluster.local"
LEDGER = "ledger.bank.svc.cluster.local"
API = "api.example.com"


def proxy(namespace: str) -> ProxyInfo:
    return parse_node(f"sidecar~10.1.0.1~p.{namespace}~{namespace}.svc.cluster.local",
                      {"NAMESPACE": namespace, "LABELS": {"app": "p"}})  # fmt: skip


def service(name: str, namespace: str, vip: str, *ports: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": vip,
                     "ports": [{"name": f"http-{p}", "port": p} for p in ports]}}  # fmt: skip


SERVICES = [
    service("productpage", "shop", "10.96.0.1", 80),
    service("reviews", "shop", "10.96.0.2", 9080),
    service("reviews-v2", "other", "10.96.0.3", 9080, 9090),
    service("ledger", "bank", "10.96.0.4", 80),
]
SHOP = {"shop/productpage.shop.svc.cluster.local": (80,), f"shop/{REVIEWS}": (9080,)}


def istio(kind: str, name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def sidecar(*egress: dict[str, Any]) -> dict[str, Any]:
    return istio("Sidecar", "default", "shop", egress=list(egress))


def hosts(*names: str, port: int | None = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"hosts": list(names)}
    if port is not None:
        listener["port"] = {"number": port, "protocol": "HTTP", "name": f"http-{port}"}
    return listener


def to(host: str, port: int | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if port is not None:
        destination["port"] = {"number": port}
    return destination


def routes_to(*destinations: dict[str, Any], namespace: str = "shop", host: str = "reviews",
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A VirtualService for `host` whose one HTTP route sends traffic to `destinations`."""
    http = {"route": [{"destination": d} for d in destinations], **extra.pop("http", {})}
    return istio("VirtualService", "reviews", namespace, hosts=[host], http=[http], **extra)


def entry(namespace: str, **extra: Any) -> dict[str, Any]:
    return istio("ServiceEntry", "api", namespace, hosts=[API], resolution="DNS",
                 ports=[{"number": 443, "name": "tls", "protocol": "TLS"}], **extra)  # fmt: skip


def snapshot(*config: dict[str, Any]) -> MeshSnapshot:
    objects = [*SERVICES, *config]
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1)


def seen(mesh: MeshSnapshot, who: ProxyInfo) -> dict[str, tuple[int, ...]]:
    scope = Scope(mesh, view_of(mesh, who))
    return {f"{s.namespace}/{s.hostname}": tuple(p.port for p in s.ports) for s in scope.services}


ROUTED_V2 = {**SHOP, f"other/{REVIEWS_V2}": (9080,)}

CASES: list[tuple[str, list[dict[str, Any]], dict[str, tuple[int, ...]]]] = [
    ("only-the-egress-hosts-without-routes", [sidecar(hosts("./*"))], SHOP),
    ("a-destination-on-the-port-its-route-names",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080))], ROUTED_V2),
    ("a-destination-without-a-port-on-every-port",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2))],
     {**SHOP, f"other/{REVIEWS_V2}": (9080, 9090)}),
    ("a-mirror-counts",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS), http={"mirror": to(REVIEWS_V2, 9080)})],
     ROUTED_V2),
    ("tcp-and-tls-routes-count",
     [sidecar(hosts("./*")), istio("VirtualService", "reviews", "shop", hosts=["reviews"],
                                   tcp=[{"route": [{"destination": to(REVIEWS_V2, 9080)}]}],
                                   tls=[{"match": [{"sniHosts": ["reviews"]}],
                                         "route": [{"destination": to(LEDGER)}]}])],
     {**ROUTED_V2, f"bank/{LEDGER}": (80,)}),
    ("a-virtual-service-the-egress-hosts-do-not-import-adds-nothing",
     [sidecar(hosts("./productpage.shop.svc.cluster.local")), routes_to(to(REVIEWS_V2))],
     {"shop/productpage.shop.svc.cluster.local": (80,)}),
    ("an-egress-host-imports-virtual-services-of-its-namespace-only",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2), namespace="bank", host=REVIEWS)], SHOP),
    ("another-namespaces-virtual-service-imported-by-name",
     [sidecar(hosts("./*", f"bank/{REVIEWS}")),
      routes_to(to(REVIEWS_V2, 9080), namespace="bank", host=REVIEWS)], ROUTED_V2),
    ("the-any-namespace-host-imports-it-too",
     [sidecar(hosts(f"*/{REVIEWS}")),
      routes_to(to(REVIEWS_V2, 9080), namespace="bank", host=REVIEWS)],
     {f"shop/{REVIEWS}": (9080,), f"other/{REVIEWS_V2}": (9080,)}),
    ("a-wildcard-virtual-service-host-overlapping-an-egress-host",
     [sidecar(hosts(f"./{REVIEWS}")), routes_to(to(REVIEWS_V2, 9080), host="*.svc.cluster.local")],
     {f"shop/{REVIEWS}": (9080,), f"other/{REVIEWS_V2}": (9080,)}),
    ("a-short-destination-name-means-the-virtual-services-namespace",
     [sidecar(hosts("./*", f"other/{REVIEWS}")),
      routes_to(to("reviews-v2", 9080), namespace="other", host=REVIEWS)], ROUTED_V2),
    ("a-virtual-service-not-exported-here-adds-nothing",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2), exportTo=["bank"])], SHOP),
    ("a-virtual-service-bound-to-gateways-only-adds-nothing",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2), gateways=["istio-system/ingress"])],
     SHOP),
    ("a-route-for-another-source-namespace-adds-nothing",
     [sidecar(hosts("./*")),
      routes_to(to(REVIEWS_V2), http={"match": [{"sourceNamespace": "bank"}]})], SHOP),
    ("a-route-for-this-source-namespace-counts",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080), http={
         "match": [{"sourceNamespace": "bank"}, {"sourceNamespace": "shop"}]})], ROUTED_V2),
    ("a-listener-with-a-port-shows-the-destination-on-that-port-only",
     [sidecar(hosts("./*", port=9090)), routes_to(to(REVIEWS_V2, 9080))],
     {f"other/{REVIEWS_V2}": (9090,)}),
    ("the-listener-without-a-port-leaves-ports-another-listener-decides",
     [sidecar(hosts("./productpage.shop.svc.cluster.local", port=9090), hosts("./*")),
      routes_to(to(REVIEWS_V2))], ROUTED_V2),
    ("a-service-entry-destination",
     [sidecar(hosts("./*")), routes_to(to(API)), entry("alpha")],
     {**SHOP, f"alpha/{API}": (443,)}),
    ("a-destination-not-exported-here-is-not-seen",
     [sidecar(hosts("./*")), routes_to(to(API)), entry("alpha", exportTo=["."])], SHOP),
    ("an-unknown-destination-adds-nothing",
     [sidecar(hosts("./*")), routes_to(to("nowhere.example.com"))], SHOP),
]  # fmt: skip


@pytest.mark.parametrize(("config", "expected"), [pytest.param(c, e, id=i) for i, c, e in CASES])
def test_what_a_scoped_proxy_sees(
    config: list[dict[str, Any]], expected: dict[str, tuple[int, ...]]
) -> None:
    errors: list[str] = []
    objects = [*SERVICES, *config]
    mesh = build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1,
                          errors=errors)  # fmt: skip
    assert errors == []
    assert seen(mesh, proxy("shop")) == expected
    # A proxy no Sidecar selects sees everything, routed or not.
    assert f"bank/{LEDGER}" in seen(mesh, proxy("bank"))


@pytest.mark.parametrize(
    ("one", "other", "overlap"),
    [("a.example.com", "a.example.com", True), ("a.example.com", "b.example.com", False),
     ("*", "a.example.com", True), ("*.example.com", "a.example.com", True),
     ("a.example.com", "*.example.com", True), ("*.example.com", "*.a.example.com", True),
     ("*.a.example.com", "*.example.com", True), ("*.example.com", "example.com", False),
     ("*.example.com", "*.example.org", False)],
)  # fmt: skip
def test_hosts_overlap_both_ways(one: str, other: str, overlap: bool) -> None:
    assert hosts_overlap(one, other) is overlap


def test_the_routed_destination_gets_its_cluster_and_the_cache_agrees() -> None:
    mesh = snapshot(sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080)))
    who = proxy("shop")
    reference = gen.generate(mesh, who)
    clusters = {c.name for c in reference.clusters if c.name.startswith("outbound|")}
    assert clusters == {"outbound|80||productpage.shop.svc.cluster.local",
                        f"outbound|9080||{REVIEWS}", f"outbound|9080||{REVIEWS_V2}"}  # fmt: skip
    # the route of reviews' listener names a cluster the proxy has
    listener = next(to_dict(m) for m in reference.listeners if m.name == "10.96.0.2_9080")
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [route] = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route["route"]["cluster"] == f"outbound|9080||{REVIEWS_V2}"
    cached = ResourceCache(mesh).resources_for(who)[TYPE_CLUSTER].resources
    assert {c.name: c.SerializeToString() for c in reference.clusters} == {
        name: r.body for name, r in cached.items()}  # fmt: skip
