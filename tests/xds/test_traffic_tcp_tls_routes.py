"""VirtualService `tcp:` and `tls:` rules → the filter chains of an opaque TCP service port."""

from __future__ import annotations

from typing import Any

from test_envoy_acks import NODE
from xds_testkit import to_dict

from sidemesh.api.config import MeshConfig
from sidemesh.xds import generate as gen
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node

PROXY = parse_node(NODE, {"NAMESPACE": "demo", "LABELS": {"app": "web"}})
HOST = "db.demo.svc.cluster.local"
SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "demo"},
    "spec": {"clusterIP": "10.96.0.30", "ports": [{"name": "tcp-pg", "port": 5432},
                                                  {"name": "tls", "port": 443}]},
}  # fmt: skip
RULE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "db", "namespace": "demo"},
    "spec": {
        "host": "db",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}


def route(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "demo"},
        "spec": {"hosts": ["db"], **spec},
    }


def to(subset: str, weight: int = 0, port: int | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": "db", "subset": subset}
    if port is not None:
        destination["port"] = {"number": port}
    return {"destination": destination, "weight": weight}


def snapshot(*objects: dict[str, Any]) -> MeshSnapshot:
    every = [SERVICE, RULE, *objects]
    return build_snapshot({object_key(o): o for o in every}, mesh=MeshConfig(), version=1)


def listener(mesh: MeshSnapshot, port: int) -> dict[str, Any]:
    name = f"10.96.0.30_{port}"
    found: dict[str, Any] = next(
        to_dict(m) for m in gen.generate(mesh, PROXY).listeners if m.name == name
    )
    return found


def chains(mesh: MeshSnapshot, port: int) -> list[tuple[list[str], dict[str, Any]]]:
    found = []
    for chain in listener(mesh, port)["filter_chains"]:
        proxy = next(f["typed_config"] for f in chain["filters"]
                     if f["name"] == "envoy.filters.network.tcp_proxy")  # fmt: skip
        names = (chain.get("filter_chain_match") or {}).get("server_names") or []
        target = proxy.get("cluster") or [
            (c["name"], c["weight"]) for c in proxy["weighted_clusters"]["clusters"]
        ]
        found.append((names, target))
    return found


def test_without_a_virtual_service_one_chain_goes_to_the_service() -> None:
    assert chains(snapshot(), 5432) == [([], f"outbound|5432||{HOST}")]


def test_tcp_rule_splits_connections_by_weight() -> None:
    mesh = snapshot(route(tcp=[{"match": [{"port": 5432}],
                                "route": [to("v1", 80), to("v2", 20)]}]))  # fmt: skip
    assert chains(mesh, 5432) == [
        ([], [(f"outbound|5432|v1|{HOST}", 80), (f"outbound|5432|v2|{HOST}", 20)])
    ]
    # the rule's match names port 5432: port 443 keeps its default chain
    assert chains(mesh, 443) == [([], f"outbound|443||{HOST}")]


def test_the_first_tcp_rule_whose_match_holds_wins() -> None:
    mesh = snapshot(route(tcp=[
        {"match": [{"sourceLabels": {"app": "batch"}}], "route": [to("v2")]},
        {"route": [to("v1")]},
    ]))  # fmt: skip
    assert chains(mesh, 5432) == [([], f"outbound|5432|v1|{HOST}")]


def test_tls_rules_route_by_sni_with_the_tls_inspector() -> None:
    mesh = snapshot(route(hosts=["db", "*.db.example"], tls=[
        {"match": [{"port": 443, "sniHosts": ["v1.db.example"]}], "route": [to("v1")]},
        {"match": [{"sniHosts": ["v2.db.example", "v1.db.example"]}],
         "route": [to("v2", 100)]},
    ]))  # fmt: skip
    assert chains(mesh, 443) == [
        (["v1.db.example"], f"outbound|443|v1|{HOST}"),
        (["v2.db.example"], f"outbound|443|v2|{HOST}"),  # a name is taken once, first rule
    ]
    found = listener(mesh, 443)
    assert [f["name"] for f in found["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"]  # fmt: skip


def test_http_ports_ignore_tcp_rules() -> None:
    service = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"name": "http", "port": 80}]}}
    mesh = build_snapshot({object_key(o): o for o in (service, route(tcp=[
        {"route": [to("v1")]}]))}, mesh=MeshConfig(), version=1)  # fmt: skip
    found = listener(mesh, 80)["filter_chains"][0]["filters"][0]
    assert found["name"] == "envoy.filters.network.http_connection_manager"
