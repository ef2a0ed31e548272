"""Mirror, consistentHash and DestinationRule `tls` → Envoy routes and clusters (objects through
the registries' one builder, so `validate` runs as in production)."""

from __future__ import annotations

from typing import Any

import pytest
from test_traffic_generation import (
    HOST,
    SUBSETS,
    V1,
    V2,
    destination_rule,
    resources,
    routes,
    snapshot,
    to,
    virtual_service,
)

DEFAULT = f"outbound|80||{HOST}"


def test_mirror_copies_a_share_of_requests_to_another_cluster() -> None:
    mesh = snapshot(virtual_service({"name": "shadow", "route": [to("v1")], "mirror": {
        "host": "reviews", "subset": "v2"}, "mirrorPercentage": {"value": 12.5}}),
        destination_rule(subsets=SUBSETS))  # fmt: skip
    action = routes(mesh)[0]["route"]
    assert action["cluster"] == V1
    assert action["request_mirror_policies"] == [{
        "cluster": V2, "trace_sampled": False,
        "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
    }]  # fmt: skip


def test_mirror_without_a_percentage_mirrors_everything() -> None:
    mesh = snapshot(virtual_service({"route": [to("v1")], "mirror": {"host": "reviews"}}),
                    destination_rule(subsets=SUBSETS))  # fmt: skip
    policy = routes(mesh)[0]["route"]["request_mirror_policies"][0]
    assert policy["cluster"] == DEFAULT
    assert policy["runtime_fraction"]["default_value"]["numerator"] == 1_000_000


@pytest.mark.parametrize(
    ("key", "policy"),
    [
        ({"httpHeaderName": "x-user"}, {"header": {"header_name": "x-user"}}),
        ({"httpCookie": {"name": "session", "ttl": "60s", "path": "/"}},
         {"cookie": {"name": "session", "ttl": "60s", "path": "/"}}),
        ({"useSourceIp": True}, {"connection_properties": {"source_ip": True}}),
        ({"httpQueryParameterName": "user"}, {"query_parameter": {"name": "user"}}),
    ],
)  # fmt: skip
def test_consistent_hash_keys_become_route_hash_policies(
    key: dict[str, Any], policy: dict[str, Any]
) -> None:
    rule = destination_rule(trafficPolicy={"loadBalancer": {"consistentHash": key}})
    mesh = snapshot(rule)  # no VirtualService: the default route carries the hash policy
    assert routes(mesh)[0]["route"]["hash_policy"] == [policy]
    _, clusters, _ = resources(mesh)
    assert clusters[DEFAULT]["lb_policy"] == "RING_HASH"
    with_routes = snapshot(rule, virtual_service({"name": "all", "route": [{
        "destination": {"host": "reviews"}}]}))  # fmt: skip
    assert routes(with_routes)[0]["route"]["hash_policy"] == [policy]


def test_ring_size_maglev_and_a_subsets_own_hash() -> None:
    mesh = snapshot(
        virtual_service({"name": "split", "route": [to("v1", 50), to("v2", 50)]}),
        destination_rule(
            trafficPolicy={"loadBalancer": {"consistentHash": {
                "httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 2048}}}},
            subsets=[SUBSETS[0], {**SUBSETS[1], "trafficPolicy": {"loadBalancer": {
                "consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}}}}}],
        ),
    )  # fmt: skip
    _, clusters, _ = resources(mesh)
    assert clusters[V1]["lb_policy"] == "RING_HASH"
    assert clusters[V1]["ring_hash_lb_config"] == {"minimum_ring_size": "2048"}
    assert clusters[V2]["lb_policy"] == "MAGLEV"
    assert clusters[V2]["maglev_lb_config"] == {"table_size": "65537"}
    # two destinations hashing on different keys: no single hash policy fits the route
    assert "hash_policy" not in routes(mesh)[0]["route"]


def transport(mesh_cluster: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    matches = [m["name"] for m in mesh_cluster.get("transport_socket_matches") or []]
    socket = mesh_cluster.get("transport_socket")
    return matches, None if socket is None else socket["typed_config"]


def test_without_tls_settings_auto_mtls_decides_per_endpoint() -> None:
    _, clusters, _ = resources(snapshot(destination_rule(subsets=SUBSETS)))
    assert transport(clusters[DEFAULT]) == (["tlsMode-istio", "tlsMode-disabled"], None)


def test_tls_disable_turns_auto_mtls_off() -> None:
    rule = destination_rule(trafficPolicy={"tls": {"mode": "DISABLE"}})
    _, clusters, _ = resources(snapshot(rule))
    assert transport(clusters[DEFAULT]) == ([], None)


def test_tls_istio_mutual_uses_mesh_certificates_for_every_endpoint() -> None:
    rule = destination_rule(trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL",
                                                   "sni": "reviews.custom"}})  # fmt: skip
    _, clusters, _ = resources(snapshot(rule))
    matches, context = transport(clusters[DEFAULT])
    assert matches == [] and context is not None
    assert context["sni"] == "reviews.custom"
    secrets = context["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert [s["name"] for s in secrets] == ["default"]


def test_tls_simple_and_mutual_originate_tls_with_the_rules_files() -> None:
    rule = destination_rule(trafficPolicy={
        "tls": {"mode": "SIMPLE", "caCertificates": "/etc/certs/ca.pem"},
        "portLevelSettings": [{"port": {"number": 80}, "tls": {
            "mode": "MUTUAL", "caCertificates": "/etc/certs/ca.pem",
            "clientCertificate": "/etc/certs/client.pem", "privateKey": "/etc/certs/key.pem",
            "subjectAltNames": ["reviews.example.com"], "sni": "reviews.example.com"}}],
    })  # fmt: skip
    _, clusters, _ = resources(snapshot(rule))
    _, context = transport(clusters[DEFAULT])  # the port's settings win
    assert context == {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext",
        "sni": "reviews.example.com",
        "common_tls_context": {
            "validation_context": {
                "trusted_ca": {"filename": "/etc/certs/ca.pem"},
                "match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": "reviews.example.com"}}],
            },
            "tls_certificates": [{"certificate_chain": {"filename": "/etc/certs/client.pem"},
                                  "private_key": {"filename": "/etc/certs/key.pem"}}],
        },
    }  # fmt: skip


def test_tls_simple_without_sni_names_the_host() -> None:
    rule = destination_rule(trafficPolicy={"tls": {"mode": "SIMPLE"}})
    _, clusters, _ = resources(snapshot(rule))
    _, context = transport(clusters[DEFAULT])
    assert context is not None and context["sni"] == HOST
    assert "validation_context" not in context.get("common_tls_context", {})
