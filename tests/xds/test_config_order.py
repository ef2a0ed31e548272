"""Istio's order for conflicting configuration (`xds.config_order`): oldest first by
creationTimestamp, then name, then namespace. Sidecars use the oldest VirtualService for a
host; gateways merge them oldest first; DestinationRules for one host of one namespace merge
into the oldest; ServiceEntries claim a host oldest first; `analyze` names the winner."""

from __future__ import annotations

from typing import Any

import pytest
from test_gateway_listeners import GATEWAY, gateway, listeners_json, server, virtual_hosts
from test_gateway_listeners import snapshot as gateway_snapshot
from test_traffic_generation import HOST, SERVICE, pod

from sidemesh.analyze.traffic import TrafficConfig, traffic_findings
from sidemesh.api.config import MeshConfig
from sidemesh.api.networking import ValidationError, validate
from sidemesh.xds import cluster_policy, routes
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.config_order import oldest_first
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.scoping import Scope

OLD, NEW = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"


def metadata(name: str, created: str | None, namespace: str = "demo") -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        found["creationTimestamp"] = created
    return found


def virtual_service(name: str, created: str | None, *, prefix: str,
                    namespace: str = "demo", **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": metadata(name, created, namespace),
            "spec": {"hosts": [HOST], "http": [{"match": [{"uri": {"prefix": prefix}}],
                                                "route": [{"destination": {"host": HOST}}]}],
                     **spec}}  # fmt: skip


def destination_rule(name: str, created: str | None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": metadata(name, created), "spec": {"host": "reviews", **spec}}  # fmt: skip


def snapshot(*config: dict[str, Any]) -> MeshSnapshot:
    objects = [SERVICE, pod("reviews-v1", "10.0.0.21", "v1"), *config]
    errors: list[str] = []
    snap = build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1,
                          errors=errors)  # fmt: skip
    assert errors == []
    return snap


def sidecar_prefixes(snap: MeshSnapshot) -> list[str]:
    service = snap.services_by_host[HOST]
    found = routes.http_routes(Scope(snap), service, 80)
    assert found is not None
    return [route["match"]["prefix"] for route in found]


# --- VirtualServices ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_created", "b_created", "winner"),
    [
        (OLD, NEW, "/a"),  # `a` older and first by name
        (NEW, OLD, "/b"),  # `b` older though second by name
        (OLD, OLD, "/a"),  # equal times: by name
        (None, OLD, "/a"),  # no timestamp (a file): the oldest
        (OLD, None, "/b"),
    ],
)
def test_sidecars_use_the_oldest_virtual_service_for_a_host(
    a_created: str | None, b_created: str | None, winner: str
) -> None:
    snap = snapshot(virtual_service("a", a_created, prefix="/a"),
                    virtual_service("b", b_created, prefix="/b"))  # fmt: skip
    assert sidecar_prefixes(snap) == [winner]


def test_equal_times_and_names_go_by_namespace() -> None:
    snap = snapshot(virtual_service("same", OLD, prefix="/z", namespace="zeta"),
                    virtual_service("same", OLD, prefix="/d"))  # fmt: skip
    assert [vs.namespace for vs in snap.virtual_services] == ["demo", "zeta"]
    assert sidecar_prefixes(snap) == ["/d"]


@pytest.mark.parametrize(("a_created", "b_created", "order"),
                         [(OLD, NEW, ["/a", "/b"]), (NEW, OLD, ["/b", "/a"])])  # fmt: skip
def test_a_gateway_merges_virtual_services_for_a_host_oldest_first(
    a_created: str, b_created: str, order: list[str]
) -> None:
    def bound(name: str, created: str) -> dict[str, Any]:
        found = virtual_service(name, created, prefix=f"/{name}", namespace="edge",
                                gateways=["gw"])  # fmt: skip
        found["spec"]["hosts"] = ["shop.example.com"]
        return found

    snap = gateway_snapshot(gateway("gw", [server(80, "HTTP", ["shop.example.com"])]),
                            bound("b", b_created), bound("a", a_created))  # fmt: skip
    chain = listeners_json(snap, GATEWAY)["0.0.0.0_8080"]["filter_chains"][0]
    found = virtual_hosts(chain)["shop.example.com"]["routes"]
    assert [route["match"]["prefix"] for route in found] == order


def test_a_bad_creation_timestamp_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"metadata\.creationTimestamp: is not an RFC 3339"):
        validate(virtual_service("a", "yesterday", prefix="/a"))


def test_oldest_first_is_istios_sort() -> None:
    every = [validate(virtual_service(name, created, prefix="/", namespace=namespace))
             for name, created, namespace in [("b", OLD, "x"), ("a", NEW, "x"), ("a", OLD, "y"),
                                              ("a", OLD, "x")]]  # fmt: skip
    assert [(r.name, r.namespace) for r in oldest_first(every)] == [
        ("a", "x"), ("a", "y"), ("b", "x"), ("a", "x")]  # fmt: skip


# --- DestinationRules ---------------------------------------------------------------------------

V1 = {"name": "v1", "labels": {"version": "v1"}}
V2 = {"name": "v2", "labels": {"version": "v2"}}
V1_OTHER = {"name": "v1", "labels": {"version": "other"}}
ROUND_ROBIN = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
LEAST = {"loadBalancer": {"simple": "LEAST_REQUEST"}}


def plans(snap: MeshSnapshot) -> dict[str, str]:
    """Each cluster of reviews:80 (by subset), and its DestinationRule fields."""
    service = snap.services_by_host[HOST]
    return {p.subset: p.fields for p in cluster_policy.cluster_plans(Scope(snap), service, 80)}


@pytest.mark.parametrize(("first_created", "second_created"), [(OLD, NEW), (NEW, OLD)])
def test_destination_rules_for_one_host_merge_into_the_oldest(
    first_created: str, second_created: str
) -> None:
    older, newer = ("first", "second") if first_created == OLD else ("second", "first")
    specs = {
        older: {"trafficPolicy": LEAST, "subsets": [V1]},
        newer: {"trafficPolicy": ROUND_ROBIN, "subsets": [V1_OTHER, V2]},
    }
    snap = snapshot(destination_rule("first", first_created, **specs["first"]),
                    destination_rule("second", second_created, **specs["second"]))  # fmt: skip
    rule = Scope(snap).destination_rule_for(snap.services_by_host[HOST])
    assert rule is not None and rule.name == older
    # The older's policy stays; the newer adds subset v2, its v1 is the older's.
    assert [(s.name, s.labels) for s in rule.spec.subsets] == [
        ("v1", {"version": "v1"}), ("v2", {"version": "v2"})]  # fmt: skip
    assert sorted(plans(snap)) == ["", "v1", "v2"]
    assert all("LEAST_REQUEST" in fields for fields in plans(snap).values())


def test_a_later_rule_gives_its_policy_when_the_oldest_has_none() -> None:
    snap = snapshot(destination_rule("zz-old", OLD, subsets=[V1]),
                    destination_rule("aa-new", NEW, trafficPolicy=LEAST))  # fmt: skip
    rule = Scope(snap).destination_rule_for(snap.services_by_host[HOST])
    assert rule is not None and rule.name == "zz-old"
    assert rule.spec.traffic_policy is not None and [s.name for s in rule.spec.subsets] == ["v1"]


def test_a_rule_with_a_workload_selector_is_not_merged_with_one_without() -> None:
    selecting = destination_rule("selecting", NEW, subsets=[V2],
                                 workloadSelector={"matchLabels": {"app": "other"}})  # fmt: skip
    snap = snapshot(destination_rule("plain", OLD, subsets=[V1]), selecting)
    rule = Scope(snap).destination_rule_for(snap.services_by_host[HOST])
    assert rule is not None and [s.name for s in rule.spec.subsets] == ["v1"]


# --- ServiceEntries -----------------------------------------------------------------------------


@pytest.mark.parametrize(("a_created", "b_created", "port"), [(OLD, NEW, 8001), (NEW, OLD, 8002)])
def test_the_oldest_service_entry_claims_a_host(a_created: str, b_created: str, port: int) -> None:
    def entry(name: str, created: str, number: int) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": metadata(name, created),
            "spec": {
                "hosts": ["api.example.com"],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                "ports": [{"number": number, "name": "http", "protocol": "HTTP"}],
            },
        }

    objects = [entry("a", a_created, 8001), entry("b", b_created, 8002)]
    errors: list[str] = []
    snap = build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1,
                          errors=errors)  # fmt: skip
    assert [p.port for p in snap.services_by_host["api.example.com"].ports] == [port]
    assert len(errors) == 1 and "is already defined" in errors[0]


# --- analyze ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a_created", "b_created", "winner"),
                         [(OLD, NEW, "demo/a"), (NEW, OLD, "demo/b")])  # fmt: skip
def test_analyze_names_the_virtual_service_that_wins(
    a_created: str, b_created: str, winner: str
) -> None:
    config = TrafficConfig(services=(SERVICE,), virtual_services=(
        virtual_service("a", a_created, prefix="/a"), virtual_service("b", b_created, prefix="/b"),
    ))  # fmt: skip
    found = [f for f in traffic_findings(config, namespaces=None, pods=(), pod_namespaces=None)
             if f.code.code == "IST0109"]  # fmt: skip
    assert len(found) == 2
    assert all(f"only the oldest, {winner}, takes effect" in f.message for f in found)
    loser = next(f for f in found if winner not in f.object)
    assert "this one's rules for the host are ignored" in loser.message


def sidecar(name: str, created: str | None, hosts: list[str]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": metadata(name, created),
            "spec": {"egress": [{"hosts": hosts}]}}  # fmt: skip


@pytest.mark.parametrize(("older", "newer"), [("a-first", "z-last"), ("z-last", "a-first")])
def test_of_two_namespace_sidecars_the_oldest_applies(older: str, newer: str) -> None:
    from sidemesh.xds.scoping import select_sidecar

    snap = snapshot(sidecar(newer, NEW, ["./*"]), sidecar(older, OLD, ["istio-system/*"]))
    chosen = select_sidecar(snap.sidecars, "demo", {"app": "reviews"}, snap.root_namespace)
    assert chosen is not None and chosen.name == older
