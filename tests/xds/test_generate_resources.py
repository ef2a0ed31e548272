"""The generator: pure functions of (snapshot, proxy); the cache gives the same resources."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from test_envoy_acks import NODE, mixed_snapshot
from xds_testkit import to_dict

from sidemesh.xds import generate as gen
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.model import PeerAuthentication, port_protocol
from sidemesh.xds.proxy import parse_node

PROXY = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"}})


def by_name(messages: Any) -> dict[str, dict[str, Any]]:
    return {m.name if hasattr(m, "name") and m.name else m.cluster_name: to_dict(m)
            for m in messages}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [("http", None, "HTTP"), ("http-web", None, "HTTP"), ("http2", None, "HTTP2"),
     ("grpc-api", None, "GRPC"), ("grpc-web", None, "HTTP"), ("tcp-db", None, "TCP"),
     ("https", None, "TCP"), ("web", None, "TCP"), ("", None, "TCP"), ("HTTP-X", None, "HTTP"),
     ("tcp", "http", "HTTP"), ("x", "kubernetes.io/h2c", "HTTP2"), ("http", "unknown", "HTTP"),
     ("httpx", None, "TCP")],
)  # fmt: skip
def test_port_protocol_follows_istio(name: str, app_protocol: str | None, expected: str) -> None:
    assert port_protocol(name, app_protocol) == expected


def inbound_chains(snapshot: Any) -> dict[str, dict[str, Any]]:
    resources = gen.generate(snapshot, PROXY)
    inbound = by_name(resources.listeners)[gen.VIRTUAL_INBOUND]
    return {c["name"]: c for c in inbound["filter_chains"]}


def test_permissive_port_has_tls_and_plaintext_chains_strict_port_only_tls() -> None:
    chains = inbound_chains(mixed_snapshot())
    assert set(chains) >= {"inbound|8080||-mtls", "inbound|8080||-plaintext", "inbound|9090||-mtls"}
    assert "inbound|9090||-plaintext" not in chains  # port-level STRICT
    tls = chains["inbound|8080||-mtls"]
    context = tls["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    sds = common["tls_certificate_sds_secret_configs"][0]["sds_config"]["api_config_source"]
    assert sds["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "sds-grpc"
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    manager = tls["filters"][0]["typed_config"]
    assert manager["forward_client_cert_details"] == "APPEND_FORWARD"
    assert manager["set_current_client_cert_details"] == {"uri": True}
    plain = chains["inbound|8080||-plaintext"]["filters"][0]["typed_config"]
    assert plain.get("forward_client_cert_details", "SANITIZE") == "SANITIZE"  # the default


@pytest.mark.parametrize(
    ("mode", "suffixes"),
    [("STRICT", {"-mtls"}), ("DISABLE", {""}), ("PERMISSIVE", {"-mtls", "-plaintext"})],
)
def test_namespace_mode_shapes_inbound_chains(mode: str, suffixes: set[str]) -> None:
    snapshot = replace(
        mixed_snapshot(), peer_authentications=(PeerAuthentication("demo", "default", mode),)
    )  # type: ignore[arg-type]
    chains = inbound_chains(snapshot)
    assert {n.removeprefix("inbound|8080||") for n in chains if "8080" in n} == suffixes


def test_mesh_wide_policy_applies_unless_namespace_overrides() -> None:
    snapshot = replace(
        mixed_snapshot(),
        peer_authentications=(PeerAuthentication("istio-system", "default", "STRICT"),),
    )
    assert snapshot.mtls_mode("demo", {}, None) == "STRICT"
    overridden = replace(
        snapshot,
        peer_authentications=(
            *snapshot.peer_authentications,
            PeerAuthentication("demo", "default", "DISABLE"),
        ),
    )
    assert overridden.mtls_mode("demo", {}, None) == "DISABLE"


def test_capture_listener_is_small_and_each_vip_port_has_its_own_listener() -> None:
    resources = gen.generate(mixed_snapshot(), PROXY)
    listeners = by_name(resources.listeners)
    assert set(listeners) == {"virtualOutbound", "virtualInbound", "10.96.0.10_80",
                              "10.96.0.10_9090", "10.96.0.11_5432", "10.96.0.12_80"}  # fmt: skip
    outbound = listeners[gen.VIRTUAL_OUTBOUND]
    assert outbound["use_original_dst"] is True
    assert outbound["address"]["socket_address"]["port_value"] == 15001
    assert outbound["default_filter_chain"]["name"] == "PassthroughCluster"
    # No per-service chains; only the guard against connections to the capture port itself.
    [guard] = outbound["filter_chains"]
    assert guard["filter_chain_match"] == {"destination_port": 15001}
    assert guard["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"
    assert "transparent" not in outbound
    db = listeners["10.96.0.11_5432"]
    assert db["address"] == {"socket_address": {"address": "10.96.0.11", "port_value": 5432}}
    assert db["bind_to_port"] is False and db["traffic_direction"] == "OUTBOUND"
    assert db["filter_chains"][0]["filters"][0]["name"] == "envoy.filters.network.tcp_proxy"
    assert db["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == (
        "outbound|5432||db.data.svc.cluster.local"
    )
    web = listeners["10.96.0.10_80"]["filter_chains"][0]["filters"][0]["typed_config"]
    # Traffic to the VIP belongs to the service whatever Host it carries.
    [virtual_host] = web["route_config"]["virtual_hosts"]
    assert virtual_host["domains"] == ["*"]
    route = virtual_host["routes"][0]["route"]
    assert route["cluster"] == "outbound|80||web.demo.svc.cluster.local"


def test_tproxy_interception_makes_the_virtual_listeners_transparent() -> None:
    proxy = replace(PROXY, interception_mode="TPROXY")
    listeners = by_name(gen.generate(mixed_snapshot(), proxy).listeners)
    assert listeners[gen.VIRTUAL_OUTBOUND]["transparent"] is True
    assert listeners[gen.VIRTUAL_INBOUND]["transparent"] is True
    assert "transparent" not in listeners["10.96.0.10_80"]


def test_outbound_clusters_and_passthrough() -> None:
    resources = gen.generate(mixed_snapshot(), PROXY)
    clusters = by_name(resources.clusters)
    assert {"PassthroughCluster", "BlackHoleCluster", "inbound|8080||", "inbound|9090||"} <= set(
        clusters
    )
    cluster = clusters["outbound|80||web.demo.svc.cluster.local"]
    assert cluster["eds_cluster_config"]["eds_config"] == {"ads": {}, "resource_api_version": "V3"}
    tls_match = cluster["transport_socket_matches"][0]
    assert tls_match["match"] == {"tlsMode": "istio"}
    sans = tls_match["transport_socket"]["typed_config"]["common_tls_context"][
        "combined_validation_context"
    ]["default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/demo/sa/web"}}
    ]
    grpc_cluster = clusters["outbound|9090||web.demo.svc.cluster.local"]
    assert (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        in grpc_cluster["typed_extension_protocol_options"]
    )


def test_registry_only_sends_unknown_destinations_to_the_blackhole() -> None:
    snapshot = replace(mixed_snapshot(), outbound_policy="REGISTRY_ONLY")
    outbound = by_name(gen.generate(snapshot, PROXY).listeners)[gen.VIRTUAL_OUTBOUND]
    default = outbound["default_filter_chain"]
    assert default["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"


def test_endpoints_carry_tls_mode_only_for_sidecars_not_disabled() -> None:
    assignments = by_name(gen.generate(mixed_snapshot(), PROXY).load_assignments)
    web = assignments["outbound|80||web.demo.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
    assert len(web) == 1  # the not-ready endpoint is left out
    assert web[0]["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {
        "tlsMode": "istio"
    }
    legacy = assignments["outbound|80||old.legacy.svc.cluster.local"]["endpoints"][0]
    assert "metadata" not in legacy["lb_endpoints"][0]
    disabled = replace(
        mixed_snapshot(), peer_authentications=(PeerAuthentication("data", "default", "DISABLE"),)
    )
    db = by_name(gen.generate(disabled, PROXY).load_assignments)[
        "outbound|5432||db.data.svc.cluster.local"
    ]
    assert "metadata" not in db["endpoints"][0]["lb_endpoints"][0]


def test_cache_matches_the_generator_and_shares_between_equal_shapes() -> None:
    snapshot = mixed_snapshot()
    cache = ResourceCache(snapshot)
    cached = cache.resources_for(PROXY)
    direct = gen.generate(snapshot, PROXY)
    parse = {gen.TYPE_LISTENER: listener_pb2.Listener, gen.TYPE_CLUSTER: cluster_pb2.Cluster,
             gen.TYPE_ENDPOINT: endpoint_pb2.ClusterLoadAssignment}  # fmt: skip
    expected = {gen.TYPE_LISTENER: direct.listeners, gen.TYPE_CLUSTER: direct.clusters,
                gen.TYPE_ENDPOINT: direct.load_assignments}  # fmt: skip
    for type_url, typed in cached.items():
        got = by_name(parse[type_url].FromString(r.body) for r in typed.resources.values())
        assert got == by_name(expected[type_url])
    twin = replace(PROXY, node_id=NODE.replace("web-abc", "web-twin"), pod_name="web-twin")
    assert cache.resources_for(twin) is cached  # same shape → same objects, same bytes
    other = parse_node("sidecar~10.0.0.99~x-1.demo~demo.svc.cluster.local", {})
    assert cache.resources_for(other)[gen.TYPE_ENDPOINT] is cached[gen.TYPE_ENDPOINT]
    assert cache.resources_for(other)[gen.TYPE_LISTENER] is not cached[gen.TYPE_LISTENER]


def test_one_service_change_reuses_the_other_services_pieces() -> None:
    snapshot = mixed_snapshot()
    cache = ResourceCache(snapshot)
    before = cache.resources_for(PROXY)
    services = list(snapshot.services)
    services[1] = replace(services[1], vip="10.96.0.99")  # db moves
    cache.set_snapshot(replace(snapshot, version=2, services=tuple(services)))
    after = cache.resources_for(PROXY)
    change = cache.diff(before[gen.TYPE_CLUSTER], after[gen.TYPE_CLUSTER])
    assert change.changed == () and change.removed == ()  # clusters do not depend on the VIP
    old = before[gen.TYPE_CLUSTER].resources["outbound|80||web.demo.svc.cluster.local"]
    new = after[gen.TYPE_CLUSTER].resources["outbound|80||web.demo.svc.cluster.local"]
    assert old is new
    # One listener out, one in; the capture listener and every other service's are untouched.
    listeners = cache.diff(before[gen.TYPE_LISTENER], after[gen.TYPE_LISTENER])
    assert listeners.changed == ("10.96.0.99_5432",)
    assert listeners.removed == ("10.96.0.11_5432",)
    unchanged = "10.96.0.10_80"
    assert (
        before[gen.TYPE_LISTENER].resources[unchanged]
        is (after[gen.TYPE_LISTENER].resources[unchanged])
    )
    # an unchanged set is carried into the new snapshot as the same object (`cache_carry`)
    assert before[gen.TYPE_ENDPOINT] is after[gen.TYPE_ENDPOINT]


def test_state_of_the_world_bytes_are_the_resources_concatenated() -> None:
    cache = ResourceCache(mixed_snapshot())
    listeners = cache.resources_for(PROXY)[gen.TYPE_LISTENER]
    assert listeners.base is not None  # the shared per-service set, encoded once
    response = discovery_pb2.DiscoveryResponse.FromString(listeners.encoded)
    assert sorted(listener_pb2.Listener.FromString(r.value).name
                  for r in response.resources) == sorted(listeners.resources)  # fmt: skip


def test_inbound_passthrough_leaves_from_the_address_capture_lets_through() -> None:
    clusters = by_name(gen.generate(mixed_snapshot(), PROXY).clusters)
    passthrough = clusters["InboundPassthroughCluster"]
    assert passthrough["type"] == "ORIGINAL_DST"
    assert passthrough["upstream_bind_config"]["source_address"]["address"] == "127.0.0.6"
    assert "upstream_bind_config" not in clusters["PassthroughCluster"]
