"""A VirtualService's destination that a Sidecar's egress hosts do not import is reached through
that VirtualService only: it gets a cluster and endpoints (`Scope.services`) but no listener of
its own (`Scope.listener_services`), so an app cannot call it directly by address, under
REGISTRY_ONLY least of all. A truth table of both sets for a proxy in `shop`, then what the
reference generator and the cache build from them."""

from __future__ import annotations

from typing import Any

import pytest
from test_scoping_vs_destinations import (
    API,
    REVIEWS,
    REVIEWS_V2,
    SERVICES,
    SHOP,
    entry,
    hosts,
    istio,
    proxy,
    routes_to,
    sidecar,
    to,
)

from sidemesh.api.config import MeshConfig
from sidemesh.xds import generate as gen
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot, Service
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_LISTENER
from sidemesh.xds.scoping import Scope, view_of

Seen = dict[str, tuple[int, ...]]
V2 = f"other/{REVIEWS_V2}"
PRODUCTPAGE = "shop/productpage.shop.svc.cluster.local"


def snapshot(*config: dict[str, Any], mode: str = "ALLOW_ANY") -> MeshSnapshot:
    errors: list[str] = []
    objects = [*SERVICES, *config]
    mesh = MeshConfig.model_validate({"outboundTrafficPolicy": {"mode": mode}})
    found = build_snapshot({object_key(o): o for o in objects}, mesh=mesh, version=1,
                           errors=errors)  # fmt: skip
    assert errors == []
    return found


def ports(services: tuple[Service, ...]) -> Seen:
    return {f"{s.namespace}/{s.hostname}": tuple(p.port for p in s.ports) for s in services}


# name, configuration, services (clusters), listener services
CASES: list[tuple[str, list[dict[str, Any]], Seen, Seen]] = [
    ("no-routes-every-seen-service-gets-listeners",
     [sidecar(hosts("./*"))], SHOP, SHOP),
    ("a-routed-destination-gets-a-cluster-only",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080))], {**SHOP, V2: (9080,)}, SHOP),
    ("a-destination-without-a-port-clusters-on-every-port-listeners-on-none",
     [sidecar(hosts("./*")), routes_to(to(REVIEWS_V2))], {**SHOP, V2: (9080, 9090)}, SHOP),
    ("a-destination-the-egress-hosts-import-on-another-port-gets-that-ports-listener",
     [sidecar(hosts(V2, port=9090), hosts("./*")), routes_to(to(REVIEWS_V2, 9080))],
     {**SHOP, V2: (9080, 9090)}, {**SHOP, V2: (9090,)}),
    ("a-destination-the-egress-hosts-import-gets-listeners-as-before",
     [sidecar(hosts("./*", V2)), routes_to(to(REVIEWS_V2, 9080))],
     {**SHOP, V2: (9080, 9090)}, {**SHOP, V2: (9080, 9090)}),
    ("a-service-entry-destination-gets-no-wildcard-listener-host",
     [sidecar(hosts("./*")), routes_to(to(API)), entry("alpha")],
     {**SHOP, f"alpha/{API}": (443,)}, SHOP),
    ("the-virtual-services-own-host-keeps-its-listener",
     [sidecar(hosts(f"./{REVIEWS}")), routes_to(to(REVIEWS_V2, 9080))],
     {f"shop/{REVIEWS}": (9080,), V2: (9080,)}, {f"shop/{REVIEWS}": (9080,)}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "clusters", "listeners"), [pytest.param(c, s, x, id=i) for i, c, s, x in CASES]
)
def test_which_services_get_clusters_and_which_get_listeners(
    config: list[dict[str, Any]], clusters: Seen, listeners: Seen
) -> None:
    mesh = snapshot(*config)
    scope = Scope(mesh, view_of(mesh, proxy("shop")))
    assert ports(scope.services) == clusters
    assert ports(scope.listener_services) == listeners
    # Without a Sidecar a proxy sees, and gets listeners for, everything.
    unscoped = Scope(mesh, view_of(mesh, proxy("bank")))
    assert unscoped.listener_services == unscoped.services


@pytest.mark.parametrize("mode", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_the_destination_has_a_cluster_and_no_listener(mode: str) -> None:
    to_api = istio("VirtualService", "productpage", "shop", hosts=["productpage"],
                   http=[{"route": [{"destination": to(API)}]}])  # fmt: skip
    mesh = snapshot(sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080)), to_api,
                    entry("alpha"), mode=mode)  # fmt: skip
    who = proxy("shop")
    reference = gen.generate(mesh, who)
    clusters = {c.name for c in reference.clusters}
    listeners = {m.name for m in reference.listeners}
    assert {f"outbound|9080||{REVIEWS_V2}", f"outbound|443||{API}"} <= clusters
    assert "10.96.0.2_9080" in listeners and "10.96.0.1_80" in listeners  # the VS hosts
    assert "10.96.0.3_9080" not in listeners  # reviews-v2 by address: not a listener
    assert "0.0.0.0_443" not in listeners  # api.example.com by name: no wildcard host either
    # The cache assembles the same listeners and clusters.
    cached = ResourceCache(mesh).resources_for(who)
    assert set(cached[TYPE_LISTENER].resources) == listeners
    assert set(cached[TYPE_CLUSTER].resources) == clusters
