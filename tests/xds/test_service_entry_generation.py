"""ServiceEntry → services, listeners and clusters; REGISTRY_ONLY → what unknown hosts meet.
Objects go through the registries' one builder, so `validate` runs as in production."""

from __future__ import annotations

from typing import Any

import pytest
from test_envoy_acks import NODE
from xds_testkit import to_dict

from sidemesh.api.config import MeshConfig
from sidemesh.xds import generate as gen
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER

PROXY = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"}})
HTTP = {"number": 80, "name": "http", "protocol": "HTTP"}
TLS = {"number": 443, "name": "tls", "protocol": "TLS"}


def entry(name: str = "api", namespace: str = "demo", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": ["api.example.com"], "ports": [HTTP], **spec}}  # fmt: skip


def snapshot(*objects: dict[str, Any], mode: str = "ALLOW_ANY",
             errors: list[str] | None = None) -> MeshSnapshot:  # fmt: skip
    mesh = MeshConfig.model_validate({"outboundTrafficPolicy": {"mode": mode}})
    return build_snapshot({object_key(o): o for o in objects}, mesh=mesh, version=1,
                          errors=errors)  # fmt: skip


def generated(mesh: MeshSnapshot) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    resources = gen.generate(mesh, PROXY)
    return ({m.name: to_dict(m) for m in resources.listeners},
            {m.name: to_dict(m) for m in resources.clusters},
            {m.cluster_name: to_dict(m) for m in resources.load_assignments})  # fmt: skip


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return found


def mtls(endpoint: dict[str, Any]) -> bool:
    metadata = (endpoint.get("metadata") or {}).get("filter_metadata") or {}
    return "envoy.transport_socket_match" in metadata


@pytest.mark.parametrize(
    ("resolution", "endpoints", "cluster_type", "eds"),
    [
        ("STATIC", [{"address": "203.0.113.7"}], "EDS", True),
        ("DNS", [{"address": "api-1.example.com"}], "STRICT_DNS", False),
        ("DNS", [], "STRICT_DNS", False),  # the host itself is resolved
        ("DNS_ROUND_ROBIN", [], "LOGICAL_DNS", False),
        ("NONE", [], "ORIGINAL_DST", False),
    ],
)
def test_resolution_decides_the_cluster(
    resolution: str, endpoints: list[dict[str, Any]], cluster_type: str, eds: bool
) -> None:
    _, clusters, assignments = generated(
        snapshot(entry(resolution=resolution, endpoints=endpoints))
    )
    cluster = clusters["outbound|80||api.example.com"]
    assert cluster["type"] == cluster_type
    assert ("outbound|80||api.example.com" in assignments) is eds
    if cluster_type == "ORIGINAL_DST":
        assert cluster["lb_policy"] == "CLUSTER_PROVIDED"
    if cluster_type.endswith("DNS"):
        addresses = [
            e["endpoint"]["address"]["socket_address"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]
        expected = endpoints[0]["address"] if endpoints else "api.example.com"
        assert addresses == [{"address": expected, "port_value": 80}]


def test_a_host_without_address_is_routed_by_name_on_the_ports_wildcard_listener() -> None:
    listeners, _, _ = generated(snapshot(entry(resolution="DNS")))
    config = manager(listeners["0.0.0.0_80"])
    hosts = config["route_config"]["virtual_hosts"]
    assert [(h["name"], h["domains"]) for h in hosts] == [
        ("api.example.com:80", ["api.example.com"]), ("allow_any", ["*"])]  # fmt: skip
    assert hosts[0]["routes"][0]["route"]["cluster"] == "outbound|80||api.example.com"
    assert hosts[1]["routes"][0]["route"]["cluster"] == "PassthroughCluster"
    assert config["strip_any_host_port"] is True


def test_registry_only_blocks_unknown_hosts_on_both_listeners() -> None:
    listeners, _, _ = generated(snapshot(entry(resolution="DNS"), mode="REGISTRY_ONLY"))
    fallback = manager(listeners["0.0.0.0_80"])["route_config"]["virtual_hosts"][-1]
    assert fallback["name"] == "block_all"
    assert fallback["routes"][0]["direct_response"]["status"] == 502
    capture = listeners["virtualOutbound"]
    assert capture["default_filter_chain"]["name"] == "BlackHoleCluster"


def test_allow_any_passes_unknown_hosts_through() -> None:
    listeners, _, _ = generated(snapshot(entry(resolution="DNS")))
    assert listeners["virtualOutbound"]["default_filter_chain"]["name"] == "PassthroughCluster"


def test_an_address_gives_the_host_its_own_listener_and_a_tcp_port_a_tcp_proxy() -> None:
    mesh = snapshot(
        entry("vip", hosts=["db.example.com"], addresses=["192.0.2.10"], ports=[TLS],
              resolution="STATIC", endpoints=[{"address": "192.0.2.11"}]),
        entry("tcp", hosts=["mq.example.com"], ports=[{"number": 5672, "name": "tcp-amqp"}],
              resolution="DNS"),
    )  # fmt: skip
    listeners, _, assignments = generated(mesh)
    own = listeners["192.0.2.10_443"]["filter_chains"][0]["filters"][0]
    assert own["typed_config"]["cluster"] == "outbound|443||db.example.com"
    wildcard = listeners["0.0.0.0_5672"]["filter_chains"][0]["filters"][0]
    assert wildcard["name"] == "envoy.filters.network.tcp_proxy"
    assert wildcard["typed_config"]["cluster"] == "outbound|5672||mq.example.com"
    endpoint = assignments["outbound|443||db.example.com"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"]["address"] == "192.0.2.11"
    assert not mtls(endpoint)  # external: plaintext unless a DestinationRule says TLS


def test_mesh_internal_endpoints_with_a_sidecar_get_mtls_and_their_ports() -> None:
    mesh = snapshot(entry(
        hosts=["vm.demo.internal"], location="MESH_INTERNAL", resolution="STATIC",
        endpoints=[{"address": "10.9.0.5", "ports": {"http": 8080}, "serviceAccount": "vm",
                    "labels": {"security.istio.io/tlsMode": "istio"}},
                   {"address": "10.9.0.6"}],
    ))  # fmt: skip
    _, clusters, assignments = generated(mesh)
    found = {
        e["endpoint"]["address"]["socket_address"]["address"]: (
            e["endpoint"]["address"]["socket_address"]["port_value"],
            mtls(e),
        )
        for e in assignments["outbound|80||vm.demo.internal"]["endpoints"][0]["lb_endpoints"]
    }
    assert found == {"10.9.0.5": (8080, True), "10.9.0.6": (80, False)}  # fmt: skip
    tls = clusters["outbound|80||vm.demo.internal"]["transport_socket_matches"][0]
    sans = tls["transport_socket"]["typed_config"]["common_tls_context"][
        "combined_validation_context"
    ]["default_validation_context"]["match_typed_subject_alt_names"]
    assert [s["matcher"]["exact"] for s in sans] == ["spiffe://cluster.local/ns/demo/sa/vm"]


def test_a_virtual_service_routes_a_service_entry_host() -> None:
    route = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "api", "namespace": "demo"},
             "spec": {"hosts": ["api.example.com"], "http": [
                 {"name": "slow", "timeout": "3s",
                  "route": [{"destination": {"host": "api.example.com"}}]}]}}  # fmt: skip
    listeners, _, _ = generated(snapshot(entry(resolution="DNS"), route))
    host = manager(listeners["0.0.0.0_80"])["route_config"]["virtual_hosts"][0]
    assert [r["name"] for r in host["routes"]] == ["slow"]
    assert host["routes"][0]["route"]["timeout"] == "3s"


def test_a_kubernetes_service_keeps_its_host_and_a_second_entry_for_a_host_is_ignored() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}]},
    }
    errors: list[str] = []
    mesh = snapshot(service, entry("a", resolution="DNS"), entry("b", resolution="NONE"),
                    entry("c", hosts=["web.demo.svc.cluster.local"], resolution="DNS"),
                    errors=errors)  # fmt: skip
    by_host = {s.hostname: s for s in mesh.services}
    assert by_host["api.example.com"].resolution == "DNS"  # `a` came first
    assert by_host["web.demo.svc.cluster.local"].resolution == "EDS"
    assert sorted(errors) == [
        "ServiceEntry demo/b: host 'api.example.com' is already defined; this entry's is ignored",
        "ServiceEntry demo/c: host 'web.demo.svc.cluster.local' is already defined; "
        "this entry's is ignored",
    ]


def test_an_invalid_service_entry_never_reaches_a_proxy() -> None:
    errors: list[str] = []
    mesh = snapshot(entry(resolution="NONE", endpoints=[{"address": "203.0.113.7"}]),
                    errors=errors)  # fmt: skip
    assert mesh.services == ()
    listeners, clusters, _ = generated(mesh)
    assert "0.0.0.0_80" not in listeners and "outbound|80||api.example.com" not in clusters
    assert errors == ["ServiceEntry demo/api: spec.endpoints: no endpoints should be provided "
                      "for resolution type NONE"]  # fmt: skip


def test_the_cache_agrees_with_the_reference() -> None:
    mesh = snapshot(
        entry(resolution="DNS"),
        entry("vip", hosts=["db.example.com"], addresses=["192.0.2.10"], ports=[TLS],
              resolution="STATIC", endpoints=[{"address": "192.0.2.11"}]),
        entry("none", hosts=["*.wiki.example"], resolution="NONE"),
        mode="REGISTRY_ONLY",
    )  # fmt: skip
    reference = gen.generate(mesh, PROXY)
    cached = ResourceCache(mesh).resources_for(PROXY)
    for type_url, messages in ((TYPE_LISTENER, reference.listeners),
                               (TYPE_CLUSTER, reference.clusters)):  # fmt: skip
        assert {m.name: m.SerializeToString() for m in messages} == {
            n: r.body for n, r in cached[type_url].resources.items()}  # fmt: skip
    assert {m.cluster_name: m.SerializeToString() for m in reference.load_assignments} == {
        n: r.body for n, r in cached[TYPE_ENDPOINT].resources.items()}  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "fallback"),
    [("ALLOW_ANY", "PassthroughCluster"), ("REGISTRY_ONLY", "BlackHoleCluster")],
)
def test_tls_hosts_without_address_are_told_apart_by_sni(mode: str, fallback: str) -> None:
    mesh = snapshot(entry(hosts=["api.example.com", "*.cdn.example"], ports=[TLS],
                          resolution="NONE"), mode=mode)  # fmt: skip
    listener, _, _ = generated(mesh)
    found = listener["0.0.0.0_443"]
    assert [f["name"] for f in found["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"]  # fmt: skip
    assert [(c["filter_chain_match"]["server_names"], c["filters"][0]["typed_config"]["cluster"])
            for c in found["filter_chains"]] == [
        (["*.cdn.example"], "outbound|443||*.cdn.example"),
        (["api.example.com"], "outbound|443||api.example.com"),
    ]  # fmt: skip
    # any other TLS on 443 is not sent to these hosts: forwarded or refused, by the policy
    assert found["default_filter_chain"]["filters"][0]["typed_config"]["cluster"] == fallback


def test_a_workload_selector_picks_pods_and_workload_entries_of_its_namespace() -> None:
    def pod(name: str, namespace: str, ip: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app": "vm", "security.istio.io/tlsMode": "istio"},
            },
            "spec": {"serviceAccountName": "vm", "containers": [{}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }

    workload = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": "vm-1", "namespace": "demo"},
                "spec": {"address": "10.9.0.7", "labels": {"app": "vm"},
                         "ports": {"http": 9080}}}  # fmt: skip
    mesh = snapshot(
        entry(hosts=["vm.demo.internal"], location="MESH_INTERNAL", resolution="STATIC",
              workloadSelector={"labels": {"app": "vm"}}),
        pod("vm-pod", "demo", "10.1.0.9"), pod("elsewhere", "other", "10.1.0.10"), workload,
    )  # fmt: skip
    _, _, assignments = generated(mesh)
    found = {
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
            mtls(e),
        )
        for e in assignments["outbound|80||vm.demo.internal"]["endpoints"][0]["lb_endpoints"]
    }
    assert found == {("10.1.0.9", 80, True), ("10.9.0.7", 9080, False)}  # fmt: skip


def test_a_service_entry_port_on_the_proxys_own_ports_gets_no_wildcard_listener() -> None:
    mesh = snapshot(entry(hosts=["api.example.com"], resolution="DNS", ports=[
        {"number": 15001, "name": "http-capture", "protocol": "HTTP"},
        {"number": 15021, "name": "http-health", "protocol": "HTTP"}, HTTP]))  # fmt: skip
    listeners, clusters, _ = generated(mesh)
    assert {n for n in listeners if n.startswith("0.0.0.0_")} == {"0.0.0.0_80"}
    assert "outbound|15001||api.example.com" in clusters  # still reachable through routes


def test_a_wildcard_virtual_service_routes_the_hosts_it_covers() -> None:
    def route(name: str, host: str) -> dict[str, Any]:
        return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "demo"},
                "spec": {"hosts": [host], "http": [{"name": name, "route": [
                    {"destination": {"host": "api.example.com"}}]}]}}  # fmt: skip

    mesh = snapshot(
        entry(hosts=["api.example.com", "www.api.example.com", "other.org"], resolution="DNS"),
        route("broad", "*.example.com"),
        route("narrow", "*.api.example.com"),
    )
    listeners, _, _ = generated(mesh)
    hosts = manager(listeners["0.0.0.0_80"])["route_config"]["virtual_hosts"]
    assert {h["domains"][0]: h["routes"][0].get("name", "") for h in hosts} == {
        "api.example.com": "broad", "www.api.example.com": "narrow", "other.org": "",
        "*": ""}  # fmt: skip
